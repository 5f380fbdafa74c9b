//! Real cert-manager against a test control plane: its controller and cainjector, built from
//! the cert-manager Go module by `tests/certmanager/build.sh`, run as host processes with the
//! admin kubeconfig, and the CRDs from the same module zip. cert-manager's own admission
//! webhook is not run: it only validates and defaults cert-manager objects, which the
//! CRDs' schemas and the controllers' defaults cover for what the overlay uses.
//!
//! The binaries are in `$SESSION_SSH_CERTMANAGER` (a directory with `controller`,
//! `cainjector` and `crds/`), or `tests/certmanager/bin`, built on first use.
//!
//! No kubelet runs: [`SecretVolume`] does what it does for a Secret volume, writing the
//! Secret's keys into a directory with its atomic `..data` symlink swap on every change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use serde::Deserialize;

use super::{ControlPlane, wait_for};
use crate::reaper::{self, Proc};

/// The directory with `controller`, `cainjector` and `crds/`.
pub fn bin_dir() -> Result<PathBuf> {
    let dir = crate::gobuilt::binary("SESSION_SSH_CERTMANAGER", "certmanager", "bin")?;
    for want in ["controller", "cainjector", "crds"] {
        if !dir.join(want).exists() {
            bail!(
                "no cert-manager {want} in {} (run tests/certmanager/build.sh, or set SESSION_SSH_CERTMANAGER)",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// cert-manager's controller and cainjector, running; dropping this stops them.
#[derive(Debug)]
pub struct CertManager {
    controller: Proc,
    cainjector: Proc,
    logs: [PathBuf; 2],
}

impl CertManager {
    /// Installs cert-manager's CRDs and starts its controller and cainjector; they watch
    /// every namespace, keep ClusterIssuer Secrets in `cluster_resource_namespace` and
    /// log into `work`.
    pub async fn start(
        cp: &ControlPlane,
        work: &Path,
        cluster_resource_namespace: &str,
    ) -> Result<CertManager> {
        let dir = bin_dir()?;
        install_crds(&cp.client().await?, &dir.join("crds")).await?;
        let kubeconfig = cp.kubeconfig().display().to_string();
        let logs = [work.join("cert-manager.log"), work.join("cainjector.log")];
        let controller = spawn(
            &dir.join("controller"),
            &[
                "--kubeconfig",
                &kubeconfig,
                "--cluster-resource-namespace",
                cluster_resource_namespace,
            ],
            &logs[0],
        )?;
        let cainjector = spawn(
            &dir.join("cainjector"),
            &["--kubeconfig", &kubeconfig],
            &logs[1],
        )?;
        Ok(CertManager {
            controller,
            cainjector,
            logs,
        })
    }

    /// Fails with the logs when either process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let exited = [
            ("controller", self.controller.try_wait()?),
            ("cainjector", self.cainjector.try_wait()?),
        ];
        for (name, status) in exited {
            if let Some(status) = status {
                bail!(
                    "cert-manager {name} exited ({status}):\n{}",
                    self.log_tail()
                );
            }
        }
        Ok(())
    }

    /// The last lines of both logs.
    pub fn log_tail(&self) -> String {
        self.logs
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- {}\n{}",
                    p.display(),
                    lines[lines.len().saturating_sub(30)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        for p in [&mut self.controller, &mut self.cainjector] {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn spawn(bin: &Path, args: &[&str], log: &Path) -> Result<Proc> {
    let out = std::fs::File::create(log).with_context(|| log.display().to_string())?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    reaper::spawn(&mut cmd).with_context(|| format!("spawn {}", bin.display()))
}

/// Applies every CRD in `dir` and waits until the apiserver serves each.
pub async fn install_crds(client: &kube::Client, dir: &Path) -> Result<()> {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no CRD files in {}", dir.display());
    }
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc)?;
            if value.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition = serde_yaml::from_value(value)
                .with_context(|| format!("{}: not a CRD", file.display()))?;
            super::crds::apply_crd(&crds, &crd).await;
        }
    }
    Ok(())
}

/// A Secret volume kept in sync with its Secret while this lives (kubelet's job).
#[derive(Debug)]
pub struct SecretVolume {
    task: tokio::task::JoinHandle<()>,
}

impl SecretVolume {
    /// Waits until Secret `ns/name` has every key in `keys`, writes it into `dir`, and then
    /// rewrites `dir` whenever the Secret changes.
    pub async fn mount(
        client: &kube::Client,
        ns: &str,
        name: &str,
        keys: &[&str],
        dir: &Path,
        timeout: Duration,
    ) -> Result<SecretVolume> {
        let api = Api::<Secret>::namespaced(client.clone(), ns);
        let secret = wait_for(
            &format!("Secret {ns}/{name} with {keys:?}"),
            timeout,
            || async {
                let s = api.get_opt(name).await?;
                let complete = s.as_ref().and_then(|s| s.data.as_ref()).is_some_and(|d| {
                    keys.iter()
                        .all(|k| d.get(*k).is_some_and(|v| !v.0.is_empty()))
                });
                Ok(s.filter(|_| complete))
            },
        )
        .await?;
        let mut version = secret.metadata.resource_version.clone();
        write_atomic(dir, &data_of(&secret))?;
        let dir = dir.to_owned();
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Ok(Some(s)) = api.get_opt(&name).await else {
                    continue;
                };
                if s.metadata.resource_version != version {
                    if let Err(e) = write_atomic(&dir, &data_of(&s)) {
                        eprintln!("secret volume {}: {e:#}", dir.display());
                        continue;
                    }
                    version = s.metadata.resource_version;
                }
            }
        });
        Ok(SecretVolume { task })
    }
}

impl Drop for SecretVolume {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn data_of(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// kubelet's atomic writer: the files go into a fresh `..<stamp>` directory, `..data` is
/// switched to it by rename, and each key is a symlink through `..data`, so a reader sees
/// either the old set of files or the new one.
fn write_atomic(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let stamp = format!("..{nanos}");
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh)?;
    for (key, bytes) in files {
        if key.contains('/') || key.starts_with("..") {
            bail!("Secret key {key:?} is not a file name");
        }
        std::fs::write(fresh.join(key), bytes)?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    for key in files.keys() {
        let link = dir.join(key);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(key), &link)?;
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}
