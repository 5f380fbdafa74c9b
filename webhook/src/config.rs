//! The webhook's configuration: one YAML file (a ConfigMap in the cluster).
//!
//! Loading works in two steps so that every default is a real, visible value: the `platform`
//! field picks a preset (`Config::preset`), the user's file is deep-merged over that preset,
//! and the merged document is deserialized with `deny_unknown_fields` everywhere. Errors name
//! the file, the field path (`keys.files[0]`; an empty key as `""`) and the reason.
//! `check-config` prints the merged result: every field with its effective value.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

/// Everything that can go wrong while loading a config file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML at all (the message carries line and column).
    #[error("{file}: not valid YAML: {source}")]
    Yaml {
        file: String,
        #[source]
        source: serde_yaml::Error,
    },
    /// A field is unknown, has the wrong type or an invalid value.
    #[error("{file}: field `{path}`: {reason}")]
    Field {
        file: String,
        path: String,
        reason: String,
    },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// The session platform whose pods are mutated; picks the defaults of every other field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Zero to JupyterHub / KubeSpawner pods (`component=singleuser-server`, container `notebook`).
    Jupyterhub,
    /// Renku sessions run by Amalthea (container `jupyter-server`, repo cloned into the workspace).
    Renku,
    /// Kubeflow Notebooks (label `notebook-name`, container named after the notebook).
    Kubeflow,
    /// Any pod that opts in with `session-ssh.io/inject: "true"`.
    #[default]
    Generic,
}

impl Platform {
    /// The same platform in the contract's login names (what the gateway routes by).
    pub fn login(self) -> session_ssh_contract::login::Platform {
        use session_ssh_contract::login::Platform as L;
        match self {
            Platform::Jupyterhub => L::Jupyterhub,
            Platform::Renku => L::Renku,
            Platform::Kubeflow => L::Kubeflow,
            Platform::Generic => L::Generic,
        }
    }

    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Jupyterhub => "jupyterhub",
            Platform::Renku => "renku",
            Platform::Kubeflow => "kubeflow",
            Platform::Generic => "generic",
        }
    }
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Platform preset: `jupyterhub`, `renku`, `kubeflow` or `generic` (default `generic`).
    /// Every other field defaults to the preset's value and can be overridden.
    #[serde(default)]
    pub platform: Platform,
    /// Which pods are mutated. The per-pod annotation or label `session-ssh.io/inject`
    /// (`"true"`/`"false"`, annotation wins) overrides the selector in both directions.
    pub selector: Selector,
    /// How the session container (the one users get a shell in) is found.
    pub session_container: SessionContainer,
    /// The `session-ssh-install` init container.
    pub init_container: InitContainer,
    /// Where the shared `session-ssh` emptyDir is mounted, in the init and the session container.
    /// Default `/opt/session-ssh`.
    pub mount_path: String,
    /// Optional `sizeLimit` of the `session-ssh` emptyDir (a Kubernetes quantity, e.g. `256Mi`).
    /// Default null (no limit): exceeding a limit evicts the whole session pod.
    pub volume_size_limit: Option<String>,
    /// The connection information file `init-sshd start` writes in the user's home (a plain
    /// file name), or `off` for none. Default null: `ssh-connect.txt`.
    pub info_file: Option<String>,
    /// Container ports added to the session container.
    pub ports: Ports,
    /// Where authorized keys come from.
    pub keys: Keys,
    /// How the controller in `serve` makes each injected session reachable.
    pub ingress: Ingress,
    /// Stable per-session host keys (a Secret per session identity).
    pub host_keys: HostKeys,
    /// The SSH gateway sessions accept logins from (off by default).
    pub gateway: Gateway,
    /// The session SSH server's limits (null: init-sshd's defaults).
    pub server: Server,
}

/// Settings of each session's SSH server (`init-sshd serve`); null leaves init-sshd's
/// default. `start` passes them on as `--serve-arg NAME=VALUE`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Server {
    /// Seconds a terminal shell whose client vanished is kept for `ssh -t HOST attach`
    /// (init-sshd default 3600; 0 hangs it up at once, as OpenSSH does).
    pub detached_keep_seconds: Option<u64>,
    /// Detached shells kept at once per session (default 10).
    pub detached_max: Option<u64>,
    /// Output kept per detached shell and replayed on attach, 4096 to 4194304 bytes
    /// (default 65536).
    pub detached_buffer_bytes: Option<u64>,
    /// Close connections without traffic for this long (default 0: never; set: no keepalives).
    pub idle_timeout_seconds: Option<u64>,
    /// Keepalive interval (default 30).
    pub keepalive_seconds: Option<u64>,
    /// Unanswered keepalives that drop the connection (default 4; 0: never).
    pub keepalive_count: Option<u64>,
    /// Concurrent connections (default 64).
    pub max_connections: Option<u64>,
    /// Connections not yet logged in (default 10); a new one beyond it evicts the oldest.
    pub max_startups: Option<u64>,
    /// Seconds a connection may take to log in (default 60).
    pub login_grace_seconds: Option<u64>,
    /// Seconds to the client's SSH version line (default 10; at most the grace time).
    pub version_timeout_seconds: Option<u64>,
    /// Seconds between re-reads of the key sources (default 20; 0: never).
    pub keys_refresh_seconds: Option<u64>,
    /// Seconds between SSH activity reports to JupyterHub (default 60; 0: never).
    pub activity_interval_seconds: Option<u64>,
}

impl Server {
    /// The settings that are set, by serve flag name (`contract::argv::SERVE_SETTINGS`).
    pub fn serve_args(&self) -> Vec<(&'static str, u64)> {
        [
            ("detached-keep-secs", self.detached_keep_seconds),
            ("detached-max", self.detached_max),
            ("detached-buffer-bytes", self.detached_buffer_bytes),
            ("idle-timeout-secs", self.idle_timeout_seconds),
            ("keepalive-secs", self.keepalive_seconds),
            ("keepalive-count", self.keepalive_count),
            ("max-connections", self.max_connections),
            ("max-startups", self.max_startups),
            ("login-grace-secs", self.login_grace_seconds),
            ("version-timeout-secs", self.version_timeout_seconds),
            ("keys-refresh-secs", self.keys_refresh_seconds),
            ("activity-interval-secs", self.activity_interval_seconds),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| (name, v)))
        .collect()
    }
}

/// What sessions need to know of the SSH gateway (`session-ssh-gateway`): its user CA (the
/// gateway connects to a session with a certificate from that CA for one connection; the
/// session still decides by its own authorized_keys; README, "The SSH gateway"), and its
/// address and host key for the connection information users read in their session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Gateway {
    /// The gateway's user CA public key, one OpenSSH line (the public half of the Secret
    /// the gateway signs with). Null (default): sessions accept no gateway logins.
    pub user_ca_public_key: Option<String>,
    /// JupyterHub: let the pod's hub user (annotation, else label `hub.jupyter.org/username`)
    /// log in through the gateway with a hub API token as the password; the gateway asks the
    /// hub who owns the token (its `--hub-api-url`). Default false: keys only.
    #[serde(default)]
    pub hub_token_login: bool,
    /// The gateway's address users connect to (e.g. `ssh.hub.example.org`). Set, each
    /// session's connection information shows `ssh <login name>@<host>` (login names per
    /// `platform`, as the gateway routes them) instead of the per-session address.
    #[serde(default)]
    pub host: Option<String>,
    /// Its port. Default 22.
    #[serde(default = "default_gateway_port")]
    pub port: u16,
    /// The gateway's public host key line, for the connection information's known_hosts
    /// line (null: that line shows the session's own key, which the gateway does not use).
    #[serde(default)]
    pub host_public_key: Option<String>,
}

fn default_gateway_port() -> u16 {
    22
}

impl Default for Gateway {
    fn default() -> Gateway {
        Gateway {
            user_ca_public_key: None,
            hub_token_login: false,
            host: None,
            port: default_gateway_port(),
            host_public_key: None,
        }
    }
}

/// Per-session host keys: admission creates a Secret `session-ssh-hostkey-<identity>-<hash>`
/// in the pod's namespace (not on dryRun) and mounts it `optional: true` into the init
/// container, so a restarted session keeps its host key. Failures only fall back to a
/// fresh key in the pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostKeys {
    /// Default true. False: every pod generates its own key at install.
    pub enabled: bool,
    /// Pod labels that together name the session; all must be present (empty values count).
    /// jupyterhub: `[hub.jupyter.org/username, hub.jupyter.org/servername]`;
    /// renku: `[renku.io/safe-username, renku.io/projectName]`; kubeflow: `[notebook-name]`;
    /// generic: empty.
    pub identity_labels: Vec<String>,
    /// When a label is missing: the pod's controller owner (`Kind/name`, e.g. a
    /// StatefulSet) together with the pod's own name is the identity, so replicas never
    /// share a key. Default true. A pod without either (or with only `generateName`) gets
    /// no Secret.
    pub owner_fallback: bool,
    /// Delete a host-key Secret no pod has mounted for this long (measured by the running
    /// webhook: a restart only delays deletion). Default 2592000 (30 days); null keeps them.
    pub delete_unused_after_seconds: Option<u64>,
    /// Optional host CA that certifies each session's host key for its hostname.
    pub ca: HostCa,
}

/// A host certificate authority (off by default): the controller signs each session's
/// host key for its hostname, so one `@cert-authority` line in a user's known_hosts
/// trusts every session. The CA key is made by the admin; the webhook only reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostCa {
    /// Secret holding the CA's OpenSSH private key under the key `host_ca_key`.
    /// Default null: no CA, no certificates.
    pub secret_name: Option<String>,
    /// Namespace of that Secret. Default null: the webhook's own (env `POD_NAMESPACE`).
    pub namespace: Option<String>,
    /// Lifetime of a host certificate; the controller signs a new one when less than a
    /// third is left. Default 2592000 (30 days).
    pub validity_seconds: u64,
    /// Host pattern of the published `@cert-authority` line, e.g. `*.ssh.example.org`.
    /// Default null: `*` and the literal tail of `ingress.hostTemplate` after its last
    /// placeholder's label, or `*.svc` without a template in mode `none`.
    pub host_pattern: Option<String>,
}

/// How a session is exposed: the Service the controller applies per injected pod, and
/// for the SNI modes a route that passes TLS on port 443 through to its `ssh-tls` port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngressMode {
    /// A ClusterIP Service only (reachable inside the cluster or by `kubectl port-forward`).
    #[default]
    None,
    /// A NodePort Service: every node forwards its allocated port to the session.
    Nodeport,
    /// A LoadBalancer Service per session.
    Loadbalancer,
    /// A Gateway API `TLSRoute` (gateway.networking.k8s.io/v1) on `ingress.gateway.parentRefs`.
    Gateway,
    /// A Traefik `IngressRouteTCP` (traefik.io/v1alpha1) with `HostSNI` and passthrough.
    Traefik,
    /// Legacy: an Ingress with `nginx.ingress.kubernetes.io/ssl-passthrough: "true"`
    /// (ingress-nginx started with `--enable-ssl-passthrough`).
    #[serde(rename = "ingress-nginx")]
    IngressNginx,
}

impl IngressMode {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            IngressMode::None => "none",
            IngressMode::Nodeport => "nodeport",
            IngressMode::Loadbalancer => "loadbalancer",
            IngressMode::Gateway => "gateway",
            IngressMode::Traefik => "traefik",
            IngressMode::IngressNginx => "ingress-nginx",
        }
    }

    /// Whether users reach the session through TLS on 443, routed by SNI.
    pub fn is_sni(self) -> bool {
        matches!(
            self,
            IngressMode::Gateway | IngressMode::Traefik | IngressMode::IngressNginx
        )
    }
}

/// Per-session Service, route and the connection info published on the pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ingress {
    /// `none` (ClusterIP Service), `nodeport` or `loadbalancer` (the Service's type),
    /// or an SNI route: `gateway`, `traefik`, `ingress-nginx`. Default `none`.
    pub mode: IngressMode,
    /// Hostname users connect to, e.g. `{pod}.{namespace}.ssh.example.org` or
    /// `{label:hub.jupyter.org/username}-{label:hub.jupyter.org/servername}.ssh.example.org`;
    /// placeholders `{pod}`, `{namespace}`, `{session-id}`, `{label:KEY}`, each value made a
    /// DNS label (hash suffix when altered; also when values joined in one label could be
    /// read two ways). Required by the SNI modes. Default null: the
    /// mode's own address (the Service's cluster DNS name, the node's IP, the load balancer's).
    pub host_template: Option<String>,
    /// Mode `gateway`.
    pub gateway: GatewayRoute,
    /// Mode `traefik`.
    pub traefik: TraefikRoute,
    /// Mode `ingress-nginx`.
    pub ingress_nginx: NginxRoute,
}

/// Where `TLSRoute`s attach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayRoute {
    /// Gateways (listeners with `protocol: TLS`, `tls.mode: Passthrough`). Default empty;
    /// mode `gateway` needs at least one.
    pub parent_refs: Vec<ParentRef>,
}

/// A Gateway API parentRef.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParentRef {
    /// Gateway name.
    pub name: String,
    /// Gateway namespace. Default null: the session's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Listener name. Default null: every listener that accepts the route.
    #[serde(default)]
    pub section_name: Option<String>,
}

/// Traefik `IngressRouteTCP` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TraefikRoute {
    /// Entry points the route binds to. Default `[websecure]`.
    pub entry_points: Vec<String>,
}

/// ingress-nginx Ingress settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NginxRoute {
    /// `ingressClassName` of the Ingress. Default `nginx`.
    pub class_name: Option<String>,
}

/// Pod selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// Labels a pod must carry with exactly these values. A map in your file replaces the
    /// preset's map. jupyterhub/renku: `component: singleuser-server`; others: empty.
    pub match_labels: BTreeMap<String, String>,
    /// Label keys a pod must carry (any value). renku: `renku.io/safe-username`;
    /// kubeflow: `notebook-name`; others: empty.
    pub has_labels: Vec<String>,
    /// Only mutate pods that opt in with `session-ssh.io/inject: "true"`.
    /// Default true for `generic`, false otherwise.
    pub require_opt_in: bool,
}

/// How the session container is chosen: first `nameFromLabel`, then `names` in order,
/// then (if allowed) the first container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SessionContainer {
    /// A pod label whose value is the session container's name. kubeflow: `notebook-name`;
    /// others: null.
    pub name_from_label: Option<String>,
    /// Container names tried in order. jupyterhub: `[notebook]`; renku: `[jupyter-server]`;
    /// others: empty.
    pub names: Vec<String>,
    /// Use the first container when nothing above matched. Default true.
    pub fallback_to_first: bool,
}

/// Image pull policy of the init container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when the node does not have the image.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The init container that installs `init-sshd` into the shared volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InitContainer {
    /// Image holding the static `init-sshd` binary. Default `ghcr.io/session-ssh/init-sshd:0.1.0`.
    /// Its USER must be numeric and non-root: the container has `runAsNonRoot: true`.
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`. Default `IfNotPresent`.
    pub image_pull_policy: PullPolicy,
    /// Path of the `init-sshd` binary inside that image. Default `/init-sshd`.
    pub binary: String,
    /// UID for the init container when neither the session container nor the pod states a
    /// non-root `runAsUser`. Default null: the image's own non-root user, or the UID the
    /// platform assigns (OpenShift), which is then the session's UID too.
    pub run_as_user: Option<i64>,
    /// GID for the init container when neither the session container nor the pod states
    /// `runAsGroup`. Default null.
    pub run_as_group: Option<i64>,
    /// Requests and limits of the init container. Its requests count only as a floor for the
    /// pod (init containers run before the others), so small values cost nothing.
    pub resources: Resources,
}

/// Requests and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// Default cpu `10m`, memory `16Mi`.
    pub requests: Quantities,
    /// Default cpu `500m`, memory `64Mi`.
    pub limits: Quantities,
}

/// CPU and memory quantities; null leaves the value out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Quantities {
    /// CPU quantity, e.g. `10m`.
    pub cpu: Option<String>,
    /// Memory quantity, e.g. `64Mi`.
    pub memory: Option<String>,
}

/// Ports added to the session container (`session-ssh`, `session-ssh-tls`, `-met`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ports {
    /// Plain SSH port in the pod. Default 2222 (what `init-sshd serve` listens on).
    pub ssh: u16,
    /// SSH inside TLS (SNI routing through an ingress). Default 2443; null: none.
    pub ssh_tls: Option<u16>,
    /// Prometheus /metrics of the SSH server (default 9122; null: off).
    pub metrics: Option<u16>,
}

/// Sources of authorized keys. Every source is optional at run time: a missing file or
/// Secret never blocks a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Keys {
    /// Files or globs as the session container sees them, e.g. a project repo's
    /// `.ssh/authorized_keys`. The volumes holding them are mounted read-only into the init
    /// container at the same paths. jupyterhub/kubeflow: `[/home/jovyan/.ssh/authorized_keys]`;
    /// renku: `[/home/jovyan/work/*/.ssh/authorized_keys]`; generic: empty.
    pub files: Vec<String>,
    /// Template of a per-user Secret name over pod labels, mounted with `optional: true`;
    /// `{label/key}` is replaced by that label's value, the result made a valid Secret name.
    /// jupyterhub: `ssh-keys-{hub.jupyter.org/username}`; others: null.
    pub user_secret: Option<String>,
    /// A pod annotation holding authorized_keys lines, handed to the init container as a
    /// downward-API file. Default `session-ssh.io/authorized-keys`; null disables it.
    pub annotation: Option<String>,
    /// Further Secrets (in the pod's namespace) whose every key holds authorized_keys lines;
    /// mounted with `optional: true`. Default empty.
    pub extra_secrets: Vec<String>,
}

impl Config {
    /// The host pattern of the published line: `hostKeys.ca.hostPattern`, else `*` and the
    /// literal tail of the host template, else `*.svc` for mode `none` (Service DNS names).
    pub fn host_ca_pattern(&self) -> Option<String> {
        if let Some(p) = &self.host_keys.ca.host_pattern {
            return Some(p.clone());
        }
        match &self.ingress.host_template {
            Some(t) => crate::hostname::template_tail(t)
                .filter(|tail| tail.contains('.'))
                .map(|tail| format!("*{tail}")),
            None if self.ingress.mode == IngressMode::None => Some("*.svc".to_owned()),
            None => None,
        }
    }

    /// Read, merge over the platform preset, deserialize strictly and validate.
    pub fn load(path: &Path) -> Result<Config> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            file: file.clone(),
            source,
        })?;
        Config::from_yaml(&text, &file)
    }

    /// Same as [`Config::load`] for text already in memory; `file` names it in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<Config> {
        let field = |path: String, reason: String| Error::Field {
            file: file.to_owned(),
            path,
            reason,
        };
        let user: Value = serde_yaml::from_str(text).map_err(|source| Error::Yaml {
            file: file.to_owned(),
            source,
        })?;
        let user = match user {
            Value::Null => Value::Mapping(Default::default()),
            Value::Mapping(m) => Value::Mapping(m),
            _ => {
                return Err(field(
                    ".".to_owned(),
                    "the config must be a mapping".to_owned(),
                ));
            }
        };
        let platform = match user.get("platform") {
            None => Platform::default(),
            Some(v) => Platform::deserialize(v.clone())
                .map_err(|e| field("platform".to_owned(), e.to_string()))?,
        };
        let mut merged = serde_yaml::to_value(Config::preset(platform))
            .map_err(|e| field(".".to_owned(), e.to_string()))?;
        merge(&mut merged, user, "");
        let cfg: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let path = Some(e.path().to_string()).filter(|p| !p.is_empty());
            let path = path.unwrap_or_else(|| "\"\"".to_owned());
            field(path, e.into_inner().to_string())
        })?;
        validate::validate(&cfg).map_err(|(path, reason)| field(path, reason))?;
        Ok(cfg)
    }

    /// The effective configuration as YAML (every field, defaults included).
    pub fn to_yaml(&self) -> String {
        // Serializing plain structs of strings, numbers and maps cannot fail.
        serde_yaml::to_string(self).unwrap_or_default()
    }
}

/// Maps whose content the user's file replaces as a whole (user data, not struct fields).
const REPLACED_MAPS: &[&str] = &["selector.matchLabels"];

/// Deep-merge `over` into `base`: struct mappings merge key by key, anything else
/// (scalars, sequences, null, and the maps in [`REPLACED_MAPS`]) replaces.
fn merge(base: &mut Value, over: Value, path: &str) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) if !REPLACED_MAPS.contains(&path) => {
            for (k, v) in o {
                let child = match k.as_str() {
                    Some(s) if path.is_empty() => s.to_owned(),
                    Some(s) => format!("{path}.{s}"),
                    None => String::new(),
                };
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v, &child),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, over) => *slot = over,
    }
}

mod preset;
mod validate;

#[cfg(test)]
mod tests;
