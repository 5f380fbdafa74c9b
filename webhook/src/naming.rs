//! Kubernetes name rules and the names the webhook derives: Secret names from label
//! templates and session ids. Pure functions, no I/O.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// Why a template cannot be rendered for a pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The pod lacks a label the template refers to.
    #[error("pod has no label `{0}`")]
    MissingLabel(String),
    /// The rendered name is empty after sanitizing.
    #[error("template renders to an empty name")]
    Empty,
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// DNS-1123 label: lowercase alphanumerics and `-`, alphanumeric at both ends, at most 63.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 subdomain (the rule for Secret names): dot-separated labels, at most 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// The name part of a label key or the whole of a label value (value may also be empty).
fn is_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && s.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Label or annotation key: optional DNS-subdomain prefix and `/`, then a name part.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(s),
    }
}

/// A valid label value (empty is allowed by Kubernetes).
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_name_part(s)
}

/// Parse a `{label/key}` template into literal and placeholder pieces.
fn pieces(t: &str) -> std::result::Result<Vec<(bool, &str)>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("unmatched `}}` in `{t}`"));
        }
        out.push((false, &rest[..open]));
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in `{t}`"))?;
        let key = &after[..close];
        if !is_qualified_name(key) {
            return Err(format!("`{{{key}}}` is not a label key"));
        }
        out.push((true, key));
        rest = &after[close + 1..];
    }
    out.push((false, rest));
    Ok(out)
}

/// Validate a name template at config load time.
pub fn check_template(t: &str) -> std::result::Result<(), String> {
    let p = pieces(t)?;
    if p.iter()
        .all(|(placeholder, s)| !placeholder && s.is_empty())
    {
        return Err("must not be empty".to_owned());
    }
    Ok(())
}

/// Render a Secret name from a template over pod labels.
///
/// A rendered name that already is a valid Secret name is used as is, so admins can
/// predict it (`ssh-keys-alice`). Anything else (upper case, `_`, too long) is lowered,
/// invalid characters become `-`, and an 8-hex digest of the unsanitized name is appended
/// so two different users can never land on the same Secret.
pub fn render_secret_name(template: &str, labels: &BTreeMap<String, String>) -> Result<String> {
    let mut raw = String::new();
    // An invalid template was refused at config load; render what parses.
    for (placeholder, s) in pieces(template).unwrap_or_default() {
        if placeholder {
            let v = labels
                .get(s)
                .ok_or_else(|| Error::MissingLabel(s.to_owned()))?;
            raw.push_str(v);
        } else {
            raw.push_str(s);
        }
    }
    if is_dns_subdomain(&raw) {
        return Ok(raw);
    }
    let mut clean: String = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    clean.truncate(200);
    let mut labels: Vec<&str> = clean
        .split('.')
        .map(|l| l.trim_matches('-'))
        .filter(|l| !l.is_empty())
        .map(|l| l[..l.len().min(63)].trim_end_matches('-'))
        .collect();
    // The last label also carries `-` and the 8-hex digest.
    let Some(last) = labels.pop() else {
        return Err(Error::Empty);
    };
    let last = last[..last.len().min(54)].trim_end_matches('-');
    labels.push(last);
    Ok(format!("{}-{}", labels.join("."), short_hash(&raw, 8)))
}

/// First `n` hex digits of the SHA-256 of `s`.
pub fn short_hash(s: &str, n: usize) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex.truncate(n);
    hex
}

/// Session id of a pod that has a name: stable for the name, so a reinvoked webhook or
/// a restarted StatefulSet pod gets the same id. 16 hex digits, a valid label value.
pub fn session_id_for_name(name: &str) -> String {
    short_hash(name, 16)
}

/// Session id of a `generateName` pod, whose final name the webhook never sees:
/// 16 hex digits from the process's random hasher keys, the time and a counter.
/// Uniqueness matters (the id selects the pod), secrecy does not.
pub fn random_session_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    let a = h.finish();
    h.write_u64(a);
    format!("{a:016x}{:016x}", h.finish())[..16].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn name_rules() {
        assert!(is_dns_label("session-ssh"));
        assert!(!is_dns_label("Session"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("ssh-keys.alice"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(is_qualified_name("hub.jupyter.org/username"));
        assert!(is_qualified_name("component"));
        assert!(!is_qualified_name("a/b/c"));
        assert!(!is_qualified_name("Bad_Prefix/x"));
        assert!(is_label_value(""));
        assert!(!is_label_value("a b"));
    }

    #[test]
    fn templates() {
        assert!(check_template("ssh-keys-{hub.jupyter.org/username}").is_ok());
        assert!(check_template("x-{open").is_err());
        assert!(check_template("x-}").is_err());
        assert!(check_template("x-{bad key}").is_err());
        assert!(check_template("").is_err());
    }

    #[test]
    fn rendering_keeps_valid_names_and_hashes_sanitized_ones() {
        let t = "ssh-keys-{hub.jupyter.org/username}";
        let l = labels(&[("hub.jupyter.org/username", "alice")]);
        assert_eq!(render_secret_name(t, &l).unwrap(), "ssh-keys-alice");
        let upper =
            render_secret_name(t, &labels(&[("hub.jupyter.org/username", "Alice")])).unwrap();
        let lower_us =
            render_secret_name(t, &labels(&[("hub.jupyter.org/username", "a_lice")])).unwrap();
        assert!(upper.starts_with("ssh-keys-alice-"), "{upper}");
        assert!(is_dns_subdomain(&upper) && is_dns_subdomain(&lower_us));
        assert_ne!(upper, "ssh-keys-alice");
        let long = "x".repeat(300);
        let n = render_secret_name(t, &labels(&[("hub.jupyter.org/username", &long)])).unwrap();
        assert!(is_dns_subdomain(&n), "{n}");
        assert_eq!(
            render_secret_name(t, &labels(&[])),
            Err(Error::MissingLabel("hub.jupyter.org/username".into()))
        );
        assert_eq!(
            render_secret_name("{a}", &labels(&[("a", "__")])),
            Err(Error::Empty)
        );
    }

    #[test]
    fn session_ids() {
        assert_eq!(
            session_id_for_name("jupyter-alice"),
            session_id_for_name("jupyter-alice")
        );
        assert_ne!(
            session_id_for_name("jupyter-alice"),
            session_id_for_name("jupyter-bob")
        );
        let (a, b) = (random_session_id(), random_session_id());
        assert_ne!(a, b);
        assert!(is_label_value(&a) && a.len() == 16);
    }
}
