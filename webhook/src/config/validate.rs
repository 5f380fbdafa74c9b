//! Config checks serde cannot express, in a fixed order: the first problem is reported as
//! (field path, reason), and `Config::load` turns it into an error naming the file.

use super::{Config, IngressMode};
use crate::naming;

/// (field path, reason) of a problem.
type Check = std::result::Result<(), (String, String)>;

fn err(path: &str, reason: String) -> Check {
    Err((path.to_owned(), reason))
}

/// Every check, in the order the first problem is reported.
pub(super) fn validate(cfg: &Config) -> Check {
    init_container_and_ports(cfg)?;
    quantities(cfg)?;
    keys(cfg)?;
    ingress(cfg)?;
    label_keys(&cfg.selector.has_labels, "selector.hasLabels")?;
    host_keys(cfg)?;
    gateway(cfg)?;
    server(cfg)?;
    for k in cfg.selector.match_labels.keys() {
        if !naming::is_qualified_name(k) {
            return err(
                &format!("selector.matchLabels.{k}"),
                format!("`{k}` is not a valid label key"),
            );
        }
    }
    Ok(())
}

fn init_container_and_ports(cfg: &Config) -> Check {
    if cfg.init_container.image.trim().is_empty() {
        return err("initContainer.image", "must not be empty".into());
    }
    if !is_clean_absolute(&cfg.init_container.binary) {
        return err(
            "initContainer.binary",
            "must be an absolute path without `..`".into(),
        );
    }
    if !is_clean_absolute(&cfg.mount_path) || cfg.mount_path == "/" {
        return err(
            "mountPath",
            "must be an absolute path other than `/`, without `..`".into(),
        );
    }
    if let Some(f) = &cfg.info_file
        && (f.is_empty() || f.contains('/') || f == "." || f == "..")
    {
        return err("infoFile", "must be a file name (no `/`) or `off`".into());
    }
    if cfg.ports.ssh == 0 {
        return err("ports.ssh", "must be 1-65535".into());
    }
    if cfg.ports.ssh_tls == Some(0) || cfg.ports.ssh_tls == Some(cfg.ports.ssh) {
        return err(
            "ports.sshTls",
            "must be 1-65535 and differ from ports.ssh".into(),
        );
    }
    if let Some(m) = cfg.ports.metrics
        && (m == 0 || m == cfg.ports.ssh || Some(m) == cfg.ports.ssh_tls)
    {
        return err(
            "ports.metrics",
            "must be 1-65535 and differ from ports.ssh and ports.sshTls".into(),
        );
    }
    Ok(())
}

fn quantities(cfg: &Config) -> Check {
    let r = &cfg.init_container.resources;
    let q = [
        ("initContainer.resources.requests.cpu", &r.requests.cpu),
        (
            "initContainer.resources.requests.memory",
            &r.requests.memory,
        ),
        ("initContainer.resources.limits.cpu", &r.limits.cpu),
        ("initContainer.resources.limits.memory", &r.limits.memory),
        ("volumeSizeLimit", &cfg.volume_size_limit),
    ];
    for (path, value) in q {
        if let Some(v) = value
            && !is_quantity(v)
        {
            return err(path, format!("`{v}` is not a Kubernetes quantity"));
        }
    }
    // Floors that keep a config from stopping sessions (the first law): below them the
    // install container is OOM-killed (and blocks the pod in Init), or the binary does not
    // fit and the postStart exec of a missing file kills the session container.
    for (path, value) in [
        ("initContainer.resources.limits.memory", &r.limits.memory),
        ("volumeSizeLimit", &cfg.volume_size_limit),
    ] {
        if let Some(v) = value
            && quantity_bytes(v).is_some_and(|b| b < FLOOR_BYTES)
        {
            return err(
                path,
                format!(
                    "`{v}` is below 32Mi: install could not copy the server (10 MB) and the session would not start"
                ),
            );
        }
    }
    Ok(())
}

/// The smallest install memory limit and `session-ssh` volume that sessions survive.
const FLOOR_BYTES: f64 = 32.0 * 1024.0 * 1024.0;

/// A quantity in bytes (only for quantities [`is_quantity`] accepts).
fn quantity_bytes(s: &str) -> Option<f64> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(end);
    let k: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    num.parse::<f64>().ok().map(|n| n * k)
}

fn keys(cfg: &Config) -> Check {
    for (i, f) in cfg.keys.files.iter().enumerate() {
        if !is_clean_absolute(f) {
            return err(
                &format!("keys.files[{i}]"),
                "must be an absolute path without `..`".into(),
            );
        }
    }
    if let Some(t) = &cfg.keys.user_secret
        && let Err(r) = naming::check_template(t)
    {
        return err("keys.userSecret", r);
    }
    if let Some(a) = &cfg.keys.annotation
        && !naming::is_qualified_name(a)
    {
        return err(
            "keys.annotation",
            format!("`{a}` is not a valid annotation key"),
        );
    }
    for (i, s) in cfg.keys.extra_secrets.iter().enumerate() {
        if !naming::is_dns_subdomain(s) {
            return err(
                &format!("keys.extraSecrets[{i}]"),
                format!("`{s}` is not a valid Secret name"),
            );
        }
    }
    Ok(())
}

fn ingress(cfg: &Config) -> Check {
    let ing = &cfg.ingress;
    if let Some(t) = &ing.host_template
        && let Err(r) = crate::hostname::check_host_template(t)
    {
        return err("ingress.hostTemplate", r);
    }
    if ing.mode.is_sni() && ing.host_template.is_none() {
        return err(
            "ingress.hostTemplate",
            format!(
                "mode `{}` routes by hostname: set a template",
                ing.mode.as_str()
            ),
        );
    }
    if ing.mode.is_sni() && cfg.ports.ssh_tls.is_none() {
        return err(
            "ports.sshTls",
            format!(
                "ingress.mode `{}` routes SSH inside TLS to this port: it cannot be null",
                ing.mode.as_str()
            ),
        );
    }
    if ing.mode == IngressMode::Gateway && ing.gateway.parent_refs.is_empty() {
        return err(
            "ingress.gateway.parentRefs",
            "mode `gateway` needs at least one Gateway".into(),
        );
    }
    Ok(())
}

fn label_keys(keys: &[String], path: &str) -> Check {
    for (i, k) in keys.iter().enumerate() {
        if !naming::is_qualified_name(k) {
            return err(
                &format!("{path}[{i}]"),
                format!("`{k}` is not a valid label key"),
            );
        }
    }
    Ok(())
}

fn server(cfg: &Config) -> Check {
    let s = &cfg.server;
    for (path, v) in [
        ("server.keepaliveSeconds", s.keepalive_seconds),
        ("server.maxConnections", s.max_connections),
        ("server.maxStartups", s.max_startups),
        ("server.loginGraceSeconds", s.login_grace_seconds),
        ("server.versionTimeoutSeconds", s.version_timeout_seconds),
    ] {
        if v == Some(0) {
            return err(
                path,
                "must be at least 1 (null: init-sshd's default)".into(),
            );
        }
    }
    if let Some(b) = s.detached_buffer_bytes
        && !(4096..=4 << 20).contains(&b)
    {
        return err(
            "server.detachedBufferBytes",
            format!("{b} is outside 4096..4194304"),
        );
    }
    Ok(())
}

fn gateway(cfg: &Config) -> Check {
    let g = &cfg.gateway;
    if let Some(h) = &g.host
        && (h.is_empty()
            || h.len() > 253
            || !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':')))
    {
        return err(
            "gateway.host",
            format!(
                "{h:?} is not a host name or IP address (no scheme, no port: use gateway.port)"
            ),
        );
    }
    if g.port == 0 {
        return err("gateway.port", "must be 1-65535".into());
    }
    if let Some(line) = &g.host_public_key
        && let Err(e) = ssh_key::PublicKey::from_openssh(line.trim())
    {
        return err(
            "gateway.hostPublicKey",
            format!("not an OpenSSH public key line: {e}"),
        );
    }
    let Some(line) = &cfg.gateway.user_ca_public_key else {
        if cfg.gateway.hub_token_login {
            return err(
                "gateway.hubTokenLogin",
                "needs gateway.userCaPublicKey (hub-token logins come through the gateway)".into(),
            );
        }
        return Ok(());
    };
    match ssh_key::PublicKey::from_openssh(line.trim()) {
        Ok(_) => Ok(()),
        Err(e) => err(
            "gateway.userCaPublicKey",
            format!("not an OpenSSH public key line: {e}"),
        ),
    }
}

fn host_keys(cfg: &Config) -> Check {
    if cfg.host_keys.delete_unused_after_seconds == Some(0) {
        return err(
            "hostKeys.deleteUnusedAfterSeconds",
            "must be at least 1 (null keeps Secrets)".into(),
        );
    }
    if let Err((p, r)) = host_ca(cfg) {
        return err(p, r);
    }
    label_keys(&cfg.host_keys.identity_labels, "hostKeys.identityLabels")
}

/// Config checks of `hostKeys.ca`: (field path, reason) of the first problem.
fn host_ca(cfg: &Config) -> std::result::Result<(), (&'static str, String)> {
    let ca = &cfg.host_keys.ca;
    let Some(name) = &ca.secret_name else {
        return Ok(());
    };
    if !naming::is_dns_subdomain(name) {
        return Err((
            "hostKeys.ca.secretName",
            format!("`{name}` is not a valid Secret name"),
        ));
    }
    if let Some(ns) = &ca.namespace
        && !naming::is_dns_label(ns)
    {
        return Err((
            "hostKeys.ca.namespace",
            format!("`{ns}` is not a valid namespace"),
        ));
    }
    if ca.validity_seconds < 3600 {
        return Err((
            "hostKeys.ca.validitySeconds",
            "must be at least 3600 (certificates are renewed on resync)".into(),
        ));
    }
    if !cfg.host_keys.enabled {
        return Err((
            "hostKeys.ca.secretName",
            "needs hostKeys.enabled: a CA certifies the stable per-session host keys".into(),
        ));
    }
    if let Some(p) = &ca.host_pattern {
        let ok = !p.is_empty()
            && p.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'-' | b'.' | b'*' | b'?')
            })
            && p.bytes().any(|b| !matches!(b, b'*' | b'?' | b'.'));
        if !ok {
            return Err((
                "hostKeys.ca.hostPattern",
                format!(
                    "`{p}`: a host pattern of a-z, 0-9, `-`, `.`, `*`, `?` with some literal text"
                ),
            ));
        }
    } else if cfg.host_ca_pattern().is_none() {
        return Err((
            "hostKeys.ca.hostPattern",
            "cannot be derived from ingress.hostTemplate (no literal domain after its last placeholder) or the mode: set it".into(),
        ));
    }
    Ok(())
}

fn is_clean_absolute(p: &str) -> bool {
    p.starts_with('/') && !p.split('/').any(|c| c == "..") && !p.contains('\0')
}

/// Kubernetes quantity syntax: a decimal number with an optional suffix.
pub(super) fn is_quantity(s: &str) -> bool {
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits_end);
    let num_ok = !num.is_empty() && num.matches('.').count() <= 1 && num != ".";
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    );
    num_ok && suffix_ok
}
