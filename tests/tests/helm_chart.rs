//! The Helm chart (manifests/helm/session-ssh), tested with a real `helm` built from its
//! Go module at a pinned version (tests/helm/build.sh, or `$SESSION_SSH_HELM`):
//! - `helm lint` and `helm template` with the values of every example; each rendering
//!   passes scripts/validate_manifests.py (kubernetes-validate strict against the
//!   Kubernetes schemas, the cross-object policy checks, `check-config` of the webhook's
//!   config) and equals `kustomize build` of the kustomization it mirrors object by object,
//!   after normalising only what must differ (see [`normalise`]). The kustomize manifests
//!   are the source of truth; this comparison is what keeps the chart from drifting.
//! - `helm install`, a pod injected through the installed MutatingWebhookConfiguration
//!   (the webhook runs on the host with the chart's ServiceAccount, config and args; the
//!   control plane routes the chart's Service to it), `helm upgrade`, a second injected
//!   pod with the upgraded config, `helm uninstall`: nothing of the chart is left but what
//!   it documents it keeps.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::{Discovery, Scope, verbs};
use serde_json::Value;
use session_ssh_tests::cluster::webhook::{self, NAMESPACE, WebhookCluster, is_injected};
use session_ssh_tests::cluster::{self, ControlPlane, create_namespace, wait_for};
use session_ssh_tests::repo_root;

const CHART: &str = "manifests/helm/session-ssh";
const RELEASE: &str = "session-ssh";
const K8S_VERSION: &str = "1.35";
const WAIT: Duration = Duration::from_secs(60);
/// Labels only the chart sets; checked on every chart object, then left out of comparisons.
const HELM_LABELS: [&str; 2] = ["app.kubernetes.io/instance", "helm.sh/chart"];
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const HOST_KEY_LABEL: &str = "session-ssh.io/host-key=true";

/// Each kustomization (what `kubectl apply -k` installs) and the chart values that install
/// the same: one values file per example under the chart, the local node's in tests/helm.
const CASES: &[(&str, Option<&str>)] = &[
    ("manifests", None),
    (
        "manifests/overlays/cert-manager",
        Some("manifests/helm/session-ssh/examples/cert-manager.yaml"),
    ),
    (
        "manifests/examples/jupyterhub",
        Some("manifests/helm/session-ssh/examples/jupyterhub.yaml"),
    ),
    (
        "manifests/examples/jupyterhub-gateway",
        Some("manifests/helm/session-ssh/examples/jupyterhub-gateway.yaml"),
    ),
    (
        "manifests/examples/renku",
        Some("manifests/helm/session-ssh/examples/renku.yaml"),
    ),
    (
        "manifests/examples/kubeflow",
        Some("manifests/helm/session-ssh/examples/kubeflow.yaml"),
    ),
    (
        "manifests/overlays/local-node",
        Some("tests/helm/local-node.yaml"),
    ),
];

/// The helm binary: `$SESSION_SSH_HELM`, else tests/helm/bin/helm (built once per process;
/// build.sh keeps a binary of the pinned version).
fn helm_bin() -> Result<PathBuf> {
    session_ssh_tests::gobuilt::binary("SESSION_SSH_HELM", "helm", "bin/helm")
}

/// helm with its config, cache and data in a directory of its own (no user repositories
/// or plugins), run from the repository root.
struct Helm {
    bin: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    fn new() -> Result<Helm> {
        Ok(Helm {
            bin: helm_bin()?,
            home: tempfile::Builder::new()
                .prefix("session-ssh-helm-")
                .tempdir()?,
        })
    }

    fn output(&self, args: &[&str]) -> Result<Output> {
        let home = self.home.path();
        Command::new(&self.bin)
            .args(args)
            .current_dir(repo_root())
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("KUBECONFIG")
            .output()
            .with_context(|| format!("run {}", self.bin.display()))
    }

    /// stdout of a helm command that must succeed.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "helm {}: {}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `helm template` of the chart with `values` (and `extra` flags), as objects.
    fn template(&self, values: Option<&str>, extra: &[&str]) -> Result<Vec<Value>> {
        let mut args = vec!["template", RELEASE, CHART, "--namespace", NAMESPACE];
        if let Some(v) = values {
            args.extend(["--values", v]);
        }
        args.extend(extra);
        parse_docs(&self.run(&args)?)
    }

    /// The objects of the installed release, as `helm get manifest` reports them.
    fn manifest(&self, kubeconfig: &str) -> Result<Vec<Value>> {
        parse_docs(&self.run(&[
            "get",
            "manifest",
            RELEASE,
            "--namespace",
            NAMESPACE,
            "--kubeconfig",
            kubeconfig,
        ])?)
    }
}

fn parse_docs(text: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            objects.push(v);
        }
    }
    Ok(objects)
}

/// `kustomize build DIR` with the kustomize the other tests use (the control plane's).
fn kustomize(dir: &str) -> Result<Vec<Value>> {
    let (program, args) = webhook::kustomize_command()?;
    let out = Command::new(&program)
        .args(&args)
        .arg(dir)
        .current_dir(repo_root())
        .output()
        .with_context(|| format!("run {program}"))?;
    if !out.status.success() {
        bail!(
            "kustomize build {dir}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_docs(&String::from_utf8(out.stdout)?)
}

fn key(o: &Value) -> String {
    let md = &o["metadata"];
    format!(
        "{} {}/{}",
        o["kind"].as_str().unwrap_or("?"),
        md["namespace"].as_str().unwrap_or(""),
        md["name"].as_str().unwrap_or("?")
    )
}

/// The objects by kind/namespace/name with what must differ between the chart and
/// kustomize taken out, and nothing else:
/// - kustomize's Namespace: Helm keeps its release record in the release namespace, so
///   the chart cannot create it (the admin does, with these labels: values.yaml; the
///   install test below makes it from this very object);
/// - the ConfigMap's hash suffix (`session-ssh-config-<hash>`: both hash the content,
///   differently), in its name and where the Deployment mounts it;
/// - the ConfigMap's config.yaml is compared as YAML data (kustomize copies the commented
///   file, the chart writes the values with toYaml);
/// - labels: `app.kubernetes.io/managed-by` (kustomize / Helm), and the chart's
///   `app.kubernetes.io/instance` and `helm.sh/chart`, which must be on every chart object.
fn normalise(objects: &[Value], chart: bool) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for o in objects {
        if o["kind"] == "Namespace" && !chart {
            continue;
        }
        let mut o = o.clone();
        let labels = &mut o["metadata"]["labels"];
        if let Some(map) = labels.as_object_mut() {
            let want = if chart { "Helm" } else { "kustomize" };
            if map.get(MANAGED_BY).and_then(Value::as_str) != Some(want) {
                bail!("{}: label {MANAGED_BY} is not {want}", key(&o));
            }
            map.remove(MANAGED_BY);
            for l in HELM_LABELS {
                if chart && map.remove(l).is_none() {
                    bail!("{}: no label {l}", key(&o));
                }
            }
        } else {
            bail!("{}: no labels", key(&o));
        }
        if o["kind"] == "ConfigMap" {
            o["metadata"]["name"] = strip_hash(&o["metadata"]["name"])?;
            let text = o["data"]["config.yaml"].as_str().unwrap_or_default();
            o["data"]["config.yaml"] = serde_yaml::from_str(text)?;
        }
        if o["kind"] == "Deployment" {
            for v in o["spec"]["template"]["spec"]["volumes"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                if v["configMap"]["name"].is_string() {
                    v["configMap"]["name"] = strip_hash(&v["configMap"]["name"])?;
                }
            }
        }
        if out.insert(key(&o), o.clone()).is_some() {
            bail!("{} rendered twice", key(&o));
        }
    }
    Ok(out)
}

fn strip_hash(name: &Value) -> Result<Value> {
    let n = name.as_str().unwrap_or_default();
    match n.strip_prefix("session-ssh-config-") {
        Some(hash) if !hash.is_empty() && !hash.contains('-') => Ok("session-ssh-config".into()),
        _ => bail!("ConfigMap name {n:?} is not session-ssh-config-<hash>"),
    }
}

/// Every difference between the chart's objects and kustomize's, one line each.
fn compare(chart: &[Value], kustomized: &[Value]) -> Result<Vec<String>> {
    let (c, k) = (normalise(chart, true)?, normalise(kustomized, false)?);
    let mut diffs = Vec::new();
    for name in k.keys().filter(|n| !c.contains_key(*n)) {
        diffs.push(format!("{name}: only in kustomize"));
    }
    for (name, obj) in &c {
        match k.get(name) {
            None => diffs.push(format!("{name}: only in the chart")),
            Some(other) => diff_values(name, obj, other, &mut diffs),
        }
    }
    Ok(diffs)
}

fn diff_values(path: &str, chart: &Value, kustomized: &Value, out: &mut Vec<String>) {
    match (chart, kustomized) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let (x, y) = (
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                );
                diff_values(&format!("{path}.{k}"), x, y, out);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_values(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a != b => out.push(format!("{path}: chart {a}, kustomize {b}")),
        _ => {}
    }
}

/// scripts/validate_manifests.py on a rendering: strict schemas, policy, check-config.
fn validate(name: &str, objects: &[Value], dir: &Path) -> Result<()> {
    let file = dir.join(format!("{}.yaml", name.replace('/', "_")));
    let text: Vec<String> = objects
        .iter()
        .map(serde_yaml::to_string)
        .collect::<std::result::Result<_, _>>()?;
    std::fs::write(&file, text.join("---\n"))?;
    let python = std::env::var_os("SESSION_SSH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    let out = Command::new(&python)
        .arg(repo_root().join("scripts/validate_manifests.py"))
        .args([
            "--k8s-version",
            K8S_VERSION,
            "--name",
            name,
            "--check-config",
        ])
        .arg(webhook::webhook_bin()?)
        .arg(&file)
        .output()
        .with_context(|| {
            format!(
                "run {} (scripts/setup.sh --tests makes it)",
                python.display()
            )
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    if !out.status.success() || !stdout.contains(", 0 errors") {
        bail!(
            "{name}: validate_manifests.py failed\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[test]
fn chart_lints_validates_and_renders_what_kustomize_renders() {
    let helm = Helm::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (kustomization, values) in CASES {
        let name = format!("helm/{kustomization}");
        let result = (|| -> Result<usize> {
            let mut lint = vec!["lint", CHART, "--strict", "--namespace", NAMESPACE];
            if let Some(v) = values {
                lint.extend(["--values", v]);
            }
            helm.run(&lint)?;
            let chart = helm.template(*values, &[])?;
            validate(&name, &chart, dir.path())?;
            let diffs = compare(&chart, &kustomize(kustomization)?)?;
            if !diffs.is_empty() {
                bail!("differs from kustomize:\n  {}", diffs.join("\n  "));
            }
            Ok(chart.len())
        })();
        match result {
            Ok(n) => println!("{name}: lint, schemas + policy, {n} objects equal to kustomize"),
            Err(e) => failures.push(format!("{name}: {e:#}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The comparison finds a changed field and an extra object, and the chart refuses an
/// unknown TLS mode with a clear message.
#[test]
fn comparison_and_chart_catch_what_they_must() {
    let helm = Helm::new().unwrap();
    let values = "manifests/helm/session-ssh/examples/jupyterhub.yaml";
    let kustomized = kustomize("manifests/examples/jupyterhub").unwrap();
    let changed = helm
        .template(
            Some(values),
            &[
                "--set",
                "webhook.replicas=3",
                "--set",
                "sessionNamespaces={jhub,extra}",
            ],
        )
        .unwrap();
    let diffs = compare(&changed, &kustomized).unwrap();
    let found = |s: &str| diffs.iter().any(|d| d.contains(s));
    assert!(
        found("Deployment session-ssh/session-ssh-webhook.spec.replicas: chart 3, kustomize 2"),
        "{diffs:#?}"
    );
    assert!(
        found("RoleBinding extra/session-ssh-webhook-host-keys: only in the chart"),
        "{diffs:#?}"
    );
    assert!(
        found("NetworkPolicy extra/session-ssh-sessions: only in the chart"),
        "{diffs:#?}"
    );
    assert_eq!(diffs.len(), 3, "{diffs:#?}");

    // The objects around the config follow it: the host CA Secret the webhook may read
    // and the ports the sessions' policy fences.
    let derived = helm
        .template(
            Some(values),
            &[
                "--set",
                "config.hostKeys.ca.secretName=my-ca",
                "--set",
                "config.ports.sshTls=3000",
            ],
        )
        .unwrap();
    let find = |kind: &str, name: &str| {
        derived
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap()
            .clone()
    };
    let ca = find("Role", "session-ssh-webhook-host-ca");
    assert_eq!(
        ca["rules"][0]["resourceNames"],
        serde_json::json!(["my-ca"])
    );
    let fence = find("NetworkPolicy", "session-ssh-sessions");
    assert_eq!(
        fence["spec"]["ingress"][0]["ports"][1],
        serde_json::json!({"protocol": "TCP", "port": 2223, "endPort": 2999})
    );
    assert_eq!(fence["spec"]["ingress"][2]["ports"][0]["port"], 3000);

    let out = helm
        .output(&["template", RELEASE, CHART, "--set", "tls.mode=self-signed"])
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tls.mode must be self-managed or cert-manager, not \"self-signed\""),
        "{err}"
    );
}

/// A pod of the real KubeSpawner fixture in `ns`, created once the apiserver calls the
/// webhook there; it must come back injected with the config's init image.
async fn injected_pod(wc: &WebhookCluster, ns: &str, user: &str, image: &str) -> Result<()> {
    let pod = cluster::hub_pod(&format!("jupyter-{user}"), user, "")?;
    wc.wait_active(ns, &pod).await?;
    let pods = Api::<Pod>::namespaced(wc.client().await?, ns);
    let created = pods.create(&PostParams::default(), &pod).await?;
    if !is_injected(&created) {
        bail!(
            "pod {ns}/jupyter-{user} not injected:\n{}",
            wc.webhook_log()
        );
    }
    let init = created
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref());
    let install = init
        .into_iter()
        .flatten()
        .find(|c| c.name == "session-ssh-install")
        .ok_or_else(|| anyhow!("no install container"))?;
    if install.image.as_deref() != Some(image) {
        bail!("install image {:?}, want {image}", install.image);
    }
    // Its host-key Secret, made with the chart's RoleBinding in that namespace.
    let secrets = Api::<Secret>::namespaced(wc.client().await?, ns);
    wait_for("host-key Secret", WAIT, || async {
        let list = secrets
            .list(&ListParams::default().labels(HOST_KEY_LABEL))
            .await?;
        Ok((!list.items.is_empty()).then_some(()))
    })
    .await
}

/// Every object of `objects` as stored by the apiserver (`Some`) or gone (`None`).
async fn stored(client: &kube::Client, objects: &[Value]) -> Result<Vec<(String, bool)>> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for o in objects {
        let api_version = o["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk =
            kube::api::GroupVersionKind::gvk(group, version, o["kind"].as_str().unwrap_or(""));
        let (ar, caps) = discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| anyhow!("{}: unknown kind", key(o)))?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                &ar,
            ),
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        out.push((key(o), api.get_opt(name).await?.is_some()));
    }
    Ok(out)
}

/// Objects of any listable kind, in any namespace, labelled as the release's.
async fn labelled_leftovers(client: &kube::Client) -> Result<Vec<String>> {
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut left = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            for o in api
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
            {
                let ns = o.metadata.namespace.unwrap_or_default();
                left.push(format!(
                    "{} {ns}/{}",
                    ar.kind,
                    o.metadata.name.unwrap_or_default()
                ));
            }
        }
    }
    // helm's own release records (owner=helm), which uninstall removes too.
    let records = Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default().labels(&format!("owner=helm,name={RELEASE}")))
        .await?;
    left.extend(
        records
            .items
            .into_iter()
            .map(|s| format!("helm record {:?}", s.metadata.name)),
    );
    Ok(left)
}

async fn ca_bundle(client: &kube::Client) -> Result<Option<String>> {
    let mwc = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(webhook::WEBHOOK_CONFIG)
        .await?;
    let hooks = mwc.webhooks.unwrap_or_default();
    Ok(hooks
        .first()
        .and_then(|w| w.client_config.ca_bundle.as_ref())
        .map(|b| String::from_utf8_lossy(&b.0).into_owned()))
}

fn config_map_name(objects: &[Value]) -> Result<String> {
    objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .and_then(|o| o["metadata"]["name"].as_str())
        .map(String::from)
        .ok_or_else(|| anyhow!("no ConfigMap in the release"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_inject_upgrade_uninstall() {
    let helm = Helm::new().unwrap();
    let cp = ControlPlane::start().unwrap();
    let client = cp.client().await.unwrap();
    let kc = cp.kubeconfig().display().to_string();
    // The release namespace as manifests/base/namespace.yaml makes it (Pod Security
    // restricted), and two session namespaces.
    let ns = kustomize("manifests")
        .unwrap()
        .into_iter()
        .find(|o| o["kind"] == "Namespace")
        .unwrap();
    let labels: Vec<(String, String)> = ns["metadata"]["labels"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("pod-security."))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let labels: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(labels.len(), 2, "{labels:?}");
    create_namespace(&client, NAMESPACE, &labels).await.unwrap();
    for s in ["jhub", "renku"] {
        create_namespace(&client, s, &[("session-ssh.io/enabled", "true")])
            .await
            .unwrap();
    }

    let values = "manifests/helm/session-ssh/examples/jupyterhub.yaml";
    let base = [
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        kc.as_str(),
        "--values",
        values,
    ];
    let notes = helm
        .run(&[&["install", RELEASE, CHART][..], &base].concat())
        .unwrap();
    assert!(notes.contains("Host keys are kept in: jhub."), "{notes}");
    let installed = helm.manifest(&kc).unwrap();
    let missing: Vec<_> = stored(&client, &installed)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, s)| !s)
        .collect();
    assert!(missing.is_empty(), "not stored after install: {missing:?}");

    let mut wc = WebhookCluster::attach(cp, installed.clone()).await.unwrap();
    injected_pod(&wc, "jhub", "alice", "ghcr.io/session-ssh/init-sshd:0.1.0")
        .await
        .unwrap();
    let bundle = ca_bundle(&client).await.unwrap();
    assert!(bundle.is_some(), "the webhook set no caBundle");

    // Upgrade: another init image (a new ConfigMap) and a second session namespace.
    let image = "ghcr.io/session-ssh/init-sshd:0.1.1";
    let set_image = format!("config.initContainer.image={image}");
    let upgrade = [
        &["upgrade", RELEASE, CHART][..],
        &base,
        &[
            "--set",
            &set_image,
            "--set",
            "sessionNamespaces={jhub,renku}",
        ],
    ]
    .concat();
    helm.run(&upgrade).unwrap();
    let upgraded = helm.manifest(&kc).unwrap();
    let (old_cm, new_cm) = (
        config_map_name(&installed).unwrap(),
        config_map_name(&upgraded).unwrap(),
    );
    assert_ne!(old_cm, new_cm, "a config change must make a new ConfigMap");
    let cms = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE);
    assert!(
        cms.get_opt(&old_cm).await.unwrap().is_none(),
        "old ConfigMap {old_cm} kept"
    );
    assert!(cms.get_opt(&new_cm).await.unwrap().is_some());
    let rb = Api::<RoleBinding>::namespaced(client.clone(), "renku");
    assert!(
        rb.get_opt("session-ssh-webhook-host-keys")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        ca_bundle(&client).await.unwrap(),
        bundle,
        "helm upgrade changed the webhook's caBundle"
    );
    wc.reload_installed(upgraded.clone()).await.unwrap();
    injected_pod(&wc, "renku", "bob", image).await.unwrap();
    assert_eq!(
        wc.forbidden_lines(),
        Vec::<String>::new(),
        "the chart's RBAC refused the webhook"
    );
    wc.stop_webhook();

    helm.run(&[
        "uninstall",
        RELEASE,
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        &kc,
    ])
    .unwrap();
    let all: Vec<Value> = installed.into_iter().chain(upgraded).collect();
    let left = wait_for("uninstall", WAIT, || async {
        let mut left: Vec<String> = stored(&client, &all)
            .await?
            .into_iter()
            .filter(|(_, s)| *s)
            .map(|(k, _)| k)
            .collect();
        left.extend(labelled_leftovers(&client).await?);
        if left.is_empty() {
            return Ok(Some(()));
        }
        bail!("left after uninstall: {left:?}")
    })
    .await;
    left.unwrap();
    // What the chart documents it keeps: host-key Secrets (users' known_hosts trust them)
    // and the self-managed TLS Secret, both made by the webhook, not by the chart.
    for s in ["jhub", "renku"] {
        let keys = Api::<Secret>::namespaced(client.clone(), s)
            .list(&ListParams::default().labels(HOST_KEY_LABEL))
            .await
            .unwrap();
        assert_eq!(keys.items.len(), 1, "host-key Secrets in {s}");
    }
    let tls = Api::<Secret>::namespaced(client.clone(), NAMESPACE);
    assert!(tls.get_opt(webhook::TLS_SECRET).await.unwrap().is_some());
}
