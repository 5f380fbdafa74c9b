//! Every name the webhook writes on a pod (or on the objects it makes for one) and that
//! init-sshd, the controller or an admin reads back. A rename is one edit here.

/// Annotation: `injected` or `skipped`.
pub const STATUS: &str = "session-ssh.io/status";
/// [`STATUS`] of a pod that got SSH.
pub const STATUS_INJECTED: &str = "injected";
/// [`STATUS`] of a pod the webhook would have injected but could not.
pub const STATUS_SKIPPED: &str = "skipped";
/// Annotation: why a pod was skipped (`<reason>: <detail>`).
pub const REASON: &str = "session-ssh.io/reason";
/// Annotation: the session container's name.
pub const CONTAINER: &str = "session-ssh.io/container";
/// Label: the session id the controller selects the pod by.
pub const SESSION_ID: &str = "session-ssh.io/session-id";
/// Annotation or label with `"true"`/`"false"`: per-pod opt-in/opt-out.
pub const INJECT: &str = "session-ssh.io/inject";
/// Default annotation whose value is extra authorized_keys lines (a downward-API file).
pub const AUTHORIZED_KEYS: &str = "session-ssh.io/authorized-keys";

/// Pod annotation (controller): the host name users connect to.
pub const SSH_HOST: &str = "session-ssh.io/ssh-host";
/// Pod annotation (controller): the port users connect to.
pub const SSH_PORT: &str = "session-ssh.io/ssh-port";
/// Pod annotation (controller): a ready `~/.ssh/config` block.
pub const SSH_CONFIG: &str = "session-ssh.io/ssh-config";
/// Pod annotation (controller): why the SNI mode's route was not made (e.g. the cluster
/// serves no TLSRoute); absent when the route exists.
pub const ROUTE_ERROR: &str = "session-ssh.io/route-error";
/// Pod annotation (controller): a known_hosts line for the published address.
pub const KNOWN_HOSTS: &str = "session-ssh.io/known-hosts";
/// Pod annotation (controller): the session's host public key, one OpenSSH line (what the
/// gateway pins when it connects to the session).
pub const HOST_PUBLIC_KEY: &str = "session-ssh.io/host-public-key";
/// Pod annotation (controller): the session's host certificate, one OpenSSH line.
pub const HOST_CERTIFICATE: &str = "session-ssh.io/host-certificate";
/// Pod annotation (controller): the `@cert-authority` known_hosts line for all sessions.
pub const CERT_AUTHORITY: &str = "session-ssh.io/cert-authority";

/// Label on every host-key Secret.
pub const HOST_KEY: &str = "session-ssh.io/host-key";
/// Label (hash) and annotation (readable) on a host-key Secret: whose session it keys.
pub const HOST_KEY_IDENTITY: &str = "session-ssh.io/host-key-identity";
/// Annotation on a host-key Secret: the public key line.
pub const HOST_KEY_PUBLIC: &str = "session-ssh.io/host-key-public";
/// Prefix of every host-key Secret name.
pub const HOST_KEY_SECRET_PREFIX: &str = "session-ssh-hostkey-";
/// Annotation on the webhook's TLS Secret: the names its certificate is for.
pub const TLS_NAMES: &str = "session-ssh.io/tls-names";

/// Every container, volume and port name the webhook adds starts with this.
pub const NAME_PREFIX: &str = "session-ssh";
/// The shared emptyDir.
pub const VOLUME: &str = "session-ssh";
/// The session's host-key Secret volume.
pub const HOST_KEY_VOLUME: &str = "session-ssh-host-key";
/// The downward-API volume of [`HOST_CERTIFICATE`].
pub const HOST_CERT_VOLUME: &str = "session-ssh-host-cert";
/// The per-user key Secret volume.
pub const USER_KEYS_VOLUME: &str = "session-ssh-user-keys";
/// The downward-API volume of the keys annotation.
pub const ANNOTATION_KEYS_VOLUME: &str = "session-ssh-annotation-keys";
/// Prefix of the volumes of configured key Secrets (`session-ssh-secret-0`, ...).
pub const SECRET_KEYS_VOLUME_PREFIX: &str = "session-ssh-secret-";
/// The init container.
pub const INIT_CONTAINER: &str = "session-ssh-install";
/// Port name of plain SSH on the session container (IANA service name, at most 15 bytes).
pub const PORT_SSH: &str = "session-ssh";
/// Port name of SSH inside TLS.
pub const PORT_SSH_TLS: &str = "session-ssh-tls";
/// Port name of init-sshd's Prometheus metrics.
pub const PORT_METRICS: &str = "session-ssh-met";

/// Where the shared volume is mounted unless configured otherwise.
pub const DEFAULT_DIR: &str = "/opt/session-ssh";
/// Where the init container sees the host-key Secret (`install --host-key-dir`).
pub const HOST_KEY_MOUNT: &str = "/session-ssh-host-key";
/// Plain SSH port in the pod.
pub const DEFAULT_SSH_PORT: u16 = 2222;
/// SSH-inside-TLS port in the pod.
pub const DEFAULT_SSH_TLS_PORT: u16 = 2443;
/// Prometheus metrics port of init-sshd in the pod.
pub const DEFAULT_METRICS_PORT: u16 = 9122;

/// Files in the shared directory (DIR), relative to it.
pub mod file {
    /// The installed binary (what the postStart hook runs).
    pub const BIN: &str = "bin/init-sshd";
    /// Merged authorized keys.
    pub const AUTHORIZED_KEYS: &str = "authorized_keys";
    /// The host key (private; `.pub` beside it); also its key in the host-key Secret.
    pub const HOST_KEY: &str = "ssh_host_ed25519_key";
    /// Directory of the host certificate (the [`super::HOST_CERT_VOLUME`] mount).
    pub const HOST_CERT_DIR: &str = "host-cert";
    /// The host certificate, in [`HOST_CERT_DIR`].
    pub const HOST_CERT: &str = "ssh_host_ed25519_key-cert.pub";
    /// What install accepted and refused.
    pub const INSTALL_REPORT: &str = "install-report.json";
    /// serve's pid (one server per DIR).
    pub const SERVE_PID: &str = "serve.pid";
    /// start's and serve's log (size-capped).
    pub const LOG: &str = "init-sshd.log";
}

/// `DIR/bin/init-sshd` for a DIR given with or without a trailing `/`.
pub fn bin_in(dir: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), file::BIN)
}

/// `DIR/host-cert`, the host certificate mount in the session container.
pub fn host_cert_dir_in(dir: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), file::HOST_CERT_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_names_carry_the_prefix_and_fit_port_names() {
        for n in [
            VOLUME,
            HOST_KEY_VOLUME,
            HOST_CERT_VOLUME,
            USER_KEYS_VOLUME,
            ANNOTATION_KEYS_VOLUME,
            SECRET_KEYS_VOLUME_PREFIX,
            INIT_CONTAINER,
            PORT_SSH,
            PORT_SSH_TLS,
        ] {
            assert!(n.starts_with(NAME_PREFIX), "{n}");
        }
        assert!(PORT_SSH.len() <= 15 && PORT_SSH_TLS.len() <= 15);
    }

    #[test]
    fn paths_in_dir() {
        assert_eq!(
            bin_in("/opt/session-ssh/"),
            "/opt/session-ssh/bin/init-sshd"
        );
        assert_eq!(host_cert_dir_in("/x"), "/x/host-cert");
    }
}
