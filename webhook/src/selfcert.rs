//! Self-managed certificate mode: the webhook makes its own CA and serving certificate,
//! keeps them in one Secret shared by all replicas, writes them where the TLS loader
//! reads them, and patches the caBundle of its own MutatingWebhookConfiguration.
//!
//! Replicas agree through the Secret: creation is create-or-reuse (the loser of a create
//! race reads the winner's), renewal is a replace with the observed resourceVersion (the
//! loser of that race also re-reads). The caBundle carries the new and the previous CA
//! during a rotation, so replicas still serving the old certificate stay trusted until
//! they pick up the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use json_patch::{AddOperation, Patch, PatchOperation, TestOperation, jsonptr::PointerBuf};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PatchParams, PostParams};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use session_ssh_certs::{Ca, ServerCertSpec, TlsBundle};
use session_ssh_contract::names::TLS_NAMES;
use tracing::{info, warn};

/// Errors of self-managed mode.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags missing or malformed.
    #[error("self-managed TLS: {0}")]
    Args(String),
    /// The Kubernetes API refused or failed.
    #[error("self-managed TLS: Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Certificate generation failed.
    #[error("self-managed TLS: {0}")]
    Certs(#[from] session_ssh_certs::ca::Error),
    /// Writing the certificate files failed.
    #[error("self-managed TLS: writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Gave up after repeated conflicts or API errors at startup.
    #[error("self-managed TLS: no usable certificate after {0} attempts")]
    GaveUp(u32),
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

const CA_KEY: &str = "ca.crt";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";

/// Self-managed certificate flags (flattened into `serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct SelfTlsArgs {
    /// Make and rotate the serving certificate ourselves (stored in --tls-secret, CA
    /// published to --webhook-config). Without it the files come from elsewhere
    /// (cert-manager, a mounted Secret).
    #[arg(long, env = "SESSION_SSH_SELF_MANAGED_TLS")]
    pub self_managed_tls: bool,
    /// The TLS Secret, as NAMESPACE/NAME (type kubernetes.io/tls, with ca.crt).
    #[arg(long, env = "SESSION_SSH_TLS_SECRET", value_name = "NS/NAME")]
    pub tls_secret: Option<String>,
    /// The MutatingWebhookConfiguration whose caBundle (every webhook in it) we keep current.
    #[arg(long, env = "SESSION_SSH_WEBHOOK_CONFIG", value_name = "NAME")]
    pub webhook_config: Option<String>,
    /// The Service the apiserver calls, as NAME.NAMESPACE (the certificate's names).
    #[arg(long, env = "SESSION_SSH_SERVICE", value_name = "NAME.NS")]
    pub service: Option<String>,
    /// Renew when the certificate (or CA) expires within this many days.
    #[arg(long, env = "SESSION_SSH_TLS_RENEW_DAYS", default_value_t = 30)]
    pub renew_before_days: u64,
    /// How often the Secret and the caBundle are re-checked, in seconds.
    #[arg(long, env = "SESSION_SSH_TLS_CHECK_SECONDS", default_value_t = 60)]
    pub check_seconds: u64,
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Secret namespace.
    pub secret_ns: String,
    /// Secret name.
    pub secret_name: String,
    /// MutatingWebhookConfiguration name.
    pub webhook_config: String,
    /// The certificate to issue.
    pub spec: ServerCertSpec,
    /// Renewal window.
    pub renew_before: Duration,
    /// Re-check period.
    pub every: Duration,
}

impl SelfTlsArgs {
    /// Check the flags and turn them into [`Settings`].
    pub fn settings(&self) -> Result<Settings> {
        let need = |v: &Option<String>, flag: &str| {
            v.clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Error::Args(format!("{flag} is required with --self-managed-tls")))
        };
        let secret = need(&self.tls_secret, "--tls-secret")?;
        let (secret_ns, secret_name) = secret
            .split_once('/')
            .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| {
                Error::Args(format!("--tls-secret {secret:?}: expected NAMESPACE/NAME"))
            })?;
        // A window as long as the certificate's life would renew on every check.
        let validity_days = session_ssh_certs::SERVER_VALIDITY.as_secs() / 86_400;
        if self.renew_before_days >= validity_days {
            return Err(Error::Args(format!(
                "--renew-before-days {} must be shorter than the certificate's {validity_days} days",
                self.renew_before_days
            )));
        }
        let service = need(&self.service, "--service")?;
        let (svc, svc_ns) = service
            .split_once('.')
            .filter(|(s, ns)| !s.is_empty() && !ns.is_empty() && !ns.contains('.'))
            .ok_or_else(|| {
                Error::Args(format!("--service {service:?}: expected NAME.NAMESPACE"))
            })?;
        Ok(Settings {
            secret_ns: secret_ns.to_owned(),
            secret_name: secret_name.to_owned(),
            webhook_config: need(&self.webhook_config, "--webhook-config")?,
            spec: ServerCertSpec::for_service(svc, svc_ns),
            renew_before: Duration::from_secs(self.renew_before_days.saturating_mul(86_400)),
            every: Duration::from_secs(self.check_seconds.max(1)),
        })
    }
}

/// What to do with the Secret as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// It holds a usable certificate: use it.
    Use(TlsBundle),
    /// It does not exist: create it.
    Create,
    /// It exists but is unusable or due: replace it (with this resourceVersion as precondition).
    Renew {
        /// Precondition for the replace.
        resource_version: Option<String>,
        /// The CA(s) to keep trusting during the rotation (still-valid current CA).
        keep_ca_pem: Option<String>,
        /// Why (for the log).
        why: String,
    },
}

/// Decide from the Secret alone (pure: no API, no clock beyond `now`).
pub fn plan(secret: Option<&Secret>, s: &Settings, now: SystemTime) -> Plan {
    let Some(secret) = secret else {
        return Plan::Create;
    };
    let resource_version = secret.metadata.resource_version.clone();
    let data = secret.data.clone().unwrap_or_default();
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .filter(|t| !t.trim().is_empty())
    };
    let ca_pem = text(CA_KEY);
    let still_valid = |pem: &Option<String>| {
        pem.as_deref().is_some_and(|p| {
            matches!(
                session_ssh_certs::expires_within(p, Duration::ZERO, now),
                Ok(false)
            )
        })
    };
    let keep_ca_pem = ca_pem
        .as_deref()
        .and_then(first_pem_cert)
        .filter(|p| still_valid(&Some(p.clone())));
    let renew = |why: String| Plan::Renew {
        resource_version: resource_version.clone(),
        keep_ca_pem: keep_ca_pem.clone(),
        why,
    };
    let (Some(ca_pem), Some(cert_pem), Some(key_pem)) =
        (ca_pem.clone(), text(CERT_KEY), text(KEY_KEY))
    else {
        return renew("the Secret lacks ca.crt, tls.crt or tls.key".into());
    };
    let names = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TLS_NAMES))
        .cloned()
        .unwrap_or_default();
    if names != s.spec.dns_names.join(",") {
        return renew(format!(
            "certificate names {names:?} differ from the Service's"
        ));
    }
    for (what, pem) in [("certificate", &cert_pem), ("CA", &ca_pem)] {
        match session_ssh_certs::expires_within(pem, s.renew_before, now) {
            Ok(false) => {}
            Ok(true) => return renew(format!("the {what} expires within the renewal window")),
            Err(e) => return renew(format!("the {what} is unreadable: {e}")),
        }
    }
    if let Err(why) = key_matches(&cert_pem, &key_pem) {
        return renew(why);
    }
    Plan::Use(TlsBundle {
        ca_pem,
        cert_pem,
        key_pem,
    })
}

fn key_matches(cert_pem: &str, key_pem: &str) -> std::result::Result<(), String> {
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .filter_map(|c| c.ok())
        .collect();
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .ok()
        .flatten()
        .ok_or("tls.key holds no private key")?;
    rustls::sign::CertifiedKey::from_der(chain, key, &crate::tls::provider())
        .map(|_| ())
        .map_err(|e| format!("tls.key does not fit tls.crt: {e}"))
}

/// The first CERTIFICATE block of a PEM bundle, re-encoded.
fn first_pem_cert(pem: &str) -> Option<String> {
    let start = pem.find("-----BEGIN CERTIFICATE-----")?;
    let end_marker = "-----END CERTIFICATE-----";
    let end = pem[start..].find(end_marker)? + start + end_marker.len();
    Some(format!("{}\n", &pem[start..end]))
}

/// A fresh CA and certificate; `keep_ca_pem` (the previous CA) is appended to ca.crt so
/// the caBundle trusts both during the rotation.
pub fn issue(s: &Settings, keep_ca_pem: Option<&str>) -> Result<TlsBundle> {
    let ca = Ca::generate()?;
    let mut bundle = ca.issue_bundle(&s.spec)?;
    if let Some(old) = keep_ca_pem {
        bundle.ca_pem.push_str(old);
    }
    Ok(bundle)
}

/// The Secret object for a bundle.
pub fn secret_object(s: &Settings, b: &TlsBundle, resource_version: Option<String>) -> Secret {
    let bytes = |t: &str| ByteString(t.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(s.secret_name.clone()),
            namespace: Some(s.secret_ns.clone()),
            resource_version,
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "session-ssh-webhook".to_owned(),
            )])),
            annotations: Some(BTreeMap::from([(
                TLS_NAMES.to_owned(),
                s.spec.dns_names.join(","),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            (CA_KEY.to_owned(), bytes(&b.ca_pem)),
            (CERT_KEY.to_owned(), bytes(&b.cert_pem)),
            (KEY_KEY.to_owned(), bytes(&b.key_pem)),
        ])),
        ..Secret::default()
    }
}

/// JSON patch setting `caBundle` on every webhook whose value differs; each op is guarded
/// by a `test` of the webhook's name so a concurrent reorder cannot misdirect it.
pub fn ca_bundle_patch(mwc: &MutatingWebhookConfiguration, ca_pem: &str) -> Patch {
    let mut ops = Vec::new();
    for (i, wh) in mwc.webhooks.iter().flatten().enumerate() {
        if wh.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(ca_pem.as_bytes()) {
            continue;
        }
        let idx = i.to_string();
        ops.push(PatchOperation::Test(TestOperation {
            path: pointer(&["webhooks", &idx, "name"]),
            value: Value::String(wh.name.clone()),
        }));
        // `add` on an existing member replaces it, and creates it when absent.
        ops.push(PatchOperation::Add(AddOperation {
            path: pointer(&["webhooks", &idx, "clientConfig", "caBundle"]),
            value: Value::String(session_ssh_certs::ca_bundle(ca_pem)),
        }));
    }
    Patch(ops)
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().map(|t| json_patch::jsonptr::Token::new(*t)))
}

/// Keeps the certificate current in the background (dropping it stops the task).
#[derive(Debug)]
pub struct Keeper {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Get a certificate into the files (retrying for a while), publish the caBundle, then
/// keep checking every `check_seconds`.
pub async fn start(args: &SelfTlsArgs, cert_path: &Path, key_path: &Path) -> Result<Keeper> {
    let s = args.settings()?;
    let client = kube::Client::try_default().await?;
    let files = Files {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
    };
    let mut attempt = 0u32;
    let bundle = loop {
        attempt += 1;
        match ensure_secret(&client, &s).await {
            Ok(b) => break b,
            Err(err) if attempt < 24 => {
                warn!(error = %err, attempt, "self-managed TLS: retrying in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(err) => {
                warn!(error = %err, "self-managed TLS: giving up");
                return Err(Error::GaveUp(attempt));
            }
        }
    };
    files.write(&bundle)?;
    if let Err(err) = ensure_ca_bundle(&client, &s, &bundle.ca_pem).await {
        // The MWC may be applied after us; the periodic check retries.
        warn!(error = %err, webhook_config = %s.webhook_config, "caBundle not patched yet");
    }
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(s.every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match ensure_secret(&client, &s).await {
                Ok(bundle) => {
                    if let Err(err) = files.write(&bundle) {
                        warn!(error = %err, "self-managed TLS: writing files failed");
                    }
                    if let Err(err) = ensure_ca_bundle(&client, &s, &bundle.ca_pem).await {
                        warn!(error = %err, webhook_config = %s.webhook_config, "caBundle patch failed");
                    }
                }
                Err(err) => {
                    warn!(error = %err, "self-managed TLS: check failed; keeping the current certificate")
                }
            }
        }
    });
    Ok(Keeper { task })
}

/// Read the Secret and converge: use, create or renew, resolving races by re-reading.
async fn ensure_secret(client: &kube::Client, s: &Settings) -> Result<TlsBundle> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &s.secret_ns);
    for _ in 0..5 {
        let current = api.get_opt(&s.secret_name).await?;
        match plan(current.as_ref(), s, SystemTime::now()) {
            Plan::Use(bundle) => return Ok(bundle),
            Plan::Create => {
                let bundle = issue(s, None)?;
                match api
                    .create(&PostParams::default(), &secret_object(s, &bundle, None))
                    .await
                {
                    Ok(_) => {
                        info!(secret = %s.secret_name, ns = %s.secret_ns, "self-managed TLS: created CA and certificate");
                        return Ok(bundle);
                    }
                    // Another replica won the race: loop and use theirs.
                    Err(kube::Error::Api(st)) if st.is_already_exists() => {
                        info!(
                            "self-managed TLS: another replica created the Secret first; reusing it"
                        );
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Plan::Renew {
                resource_version,
                keep_ca_pem,
                why,
            } => {
                let bundle = issue(s, keep_ca_pem.as_deref())?;
                let obj = secret_object(s, &bundle, resource_version);
                match api
                    .replace(&s.secret_name, &PostParams::default(), &obj)
                    .await
                {
                    Ok(_) => {
                        info!(secret = %s.secret_name, ns = %s.secret_ns, %why, "self-managed TLS: renewed CA and certificate");
                        return Ok(bundle);
                    }
                    Err(kube::Error::Api(st)) if st.is_conflict() => {
                        info!(
                            "self-managed TLS: another replica renewed the Secret first; reusing it"
                        );
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(Error::GaveUp(5))
}

/// Patch our MutatingWebhookConfiguration's caBundle when it differs.
async fn ensure_ca_bundle(client: &kube::Client, s: &Settings, ca_pem: &str) -> Result<()> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mwc = api.get(&s.webhook_config).await?;
    let patch = ca_bundle_patch(&mwc, ca_pem);
    if patch.0.is_empty() {
        return Ok(());
    }
    api.patch(
        &s.webhook_config,
        &PatchParams::default(),
        &kube::api::Patch::Json::<()>(patch),
    )
    .await?;
    info!(webhook_config = %s.webhook_config, "self-managed TLS: caBundle updated");
    Ok(())
}

/// Where the TLS loader reads.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    /// Write key then certificate (the loader refuses a mismatched pair and retries),
    /// each atomically, and only when changed. ca.crt goes next to tls.crt.
    fn write(&self, b: &TlsBundle) -> Result<()> {
        let ca = self.cert.with_file_name("ca.crt");
        write_if_changed(&self.key, &b.key_pem, 0o600)?;
        write_if_changed(&ca, &b.ca_pem, 0o644)?;
        write_if_changed(&self.cert, &b.cert_pem, 0o644)
    }
}

fn write_if_changed(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    let io = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
#[path = "selfcert_tests.rs"]
mod tests;
