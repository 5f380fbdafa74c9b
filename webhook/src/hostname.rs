//! Session host names: `ingress.hostTemplate` parsed, checked at config load and rendered
//! for a pod, and any value made a DNS label. Pure; a leaf (only `naming` below it), so the
//! config, the host CA and the routes can all use it.

use std::collections::BTreeMap;

use crate::naming::{is_dns_label, is_dns_subdomain, is_qualified_name, short_hash};

/// Why a host template cannot be rendered for a pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The pod lacks a label the template refers to.
    #[error("pod has no label `{0}`")]
    MissingLabel(String),
    /// The rendered host is not a valid DNS name.
    #[error("`{0}` is not a valid DNS name")]
    InvalidHost(String),
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Hex digits of the hash suffix added to altered names.
const HASH_LEN: usize = 8;

/// DNS-1035 label (Service names): a DNS-1123 label that starts with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns_label(s) && s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
}

/// Lowercase, every character outside `[a-z0-9-]` becomes `-`.
pub(crate) fn lower_dashes(s: &str) -> String {
    s.chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `clean` cut so that `-` + hash fits in 63, then the hash of the original appended.
pub(crate) fn with_hash(clean: &str, original: &str) -> String {
    let keep = 63 - 1 - HASH_LEN;
    let mut head: String = clean.chars().take(keep).collect();
    while head.ends_with('-') {
        head.pop();
    }
    let hash = short_hash(original, HASH_LEN);
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// One DNS label (DNS-1123) from an arbitrary value: kept when already valid, else
/// sanitized and suffixed with the hash of the value (also for an empty value).
pub fn dns_label(value: &str) -> String {
    if is_dns_label(value) {
        return value.to_owned();
    }
    let clean = lower_dashes(value);
    with_hash(clean.trim_start_matches('-'), value)
}

/// A piece of a host template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Literal(&'a str),
    Pod,
    Namespace,
    SessionId,
    Label(&'a str),
}

fn parse_template(t: &str) -> std::result::Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!("unmatched `}}` in `{t}`"));
        }
        if open > 0 {
            out.push(Piece::Literal(&rest[..open]));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in `{t}`"))?;
        let name = &after[..close];
        out.push(match name {
            "pod" => Piece::Pod,
            "namespace" => Piece::Namespace,
            "session-id" => Piece::SessionId,
            _ => match name.strip_prefix("label:") {
                Some(key) if is_qualified_name(key) => Piece::Label(key),
                _ => {
                    return Err(format!(
                        "`{{{name}}}` is not one of {{pod}}, {{namespace}}, {{session-id}}, {{label:KEY}}"
                    ));
                }
            },
        });
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Literal(rest));
    }
    Ok(out)
}

/// Validate `ingress.hostTemplate` at config load: known placeholders, literal text of
/// lowercase letters, digits, `-` and `.`, at least one placeholder (one host per session).
pub fn check_host_template(t: &str) -> std::result::Result<(), String> {
    let pieces = parse_template(t)?;
    for p in &pieces {
        if let Piece::Literal(s) = p
            && !s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
        {
            return Err(format!(
                "`{s}`: literal text may hold only a-z, 0-9, `-` and `.`"
            ));
        }
    }
    if pieces.iter().all(|p| matches!(p, Piece::Literal(_))) {
        return Err("needs a placeholder, else every session gets the same host".to_owned());
    }
    Ok(())
}

/// The literal text after the template's last placeholder (`.ssh.example.org` of
/// `{pod}.{namespace}.ssh.example.org`): what every rendered host ends with.
pub fn template_tail(t: &str) -> Option<String> {
    let pieces = parse_template(t).ok()?;
    let last = pieces
        .iter()
        .rposition(|p| !matches!(p, Piece::Literal(_)))?;
    let tail: String = pieces[last + 1..]
        .iter()
        .filter_map(|p| match p {
            Piece::Literal(s) => Some(*s),
            _ => None,
        })
        .collect();
    (!tail.is_empty()).then_some(tail)
}

/// One DNS label of a host being rendered.
#[derive(Default)]
struct LabelBuf {
    text: String,
    /// Raw values of the placeholders in this label.
    values: Vec<String>,
    /// Two placeholders follow each other without literal text between them.
    adjacent: bool,
    /// The last piece was a placeholder.
    after_placeholder: bool,
    /// Some sanitized value contains `-` (so a `-` separator does not split uniquely).
    dashed: bool,
}

impl LabelBuf {
    fn placeholder(&mut self, raw: &str) {
        let v = dns_label(raw);
        self.adjacent |= self.after_placeholder;
        self.dashed |= v.contains('-');
        self.text.push_str(&v);
        self.values.push(raw.to_owned());
        self.after_placeholder = true;
    }

    fn literal(&mut self, s: &str) {
        self.text.push_str(s);
        self.after_placeholder &= s.is_empty();
    }

    /// The finished label. Two values in one label (`{user}-{server}`) could be split in
    /// more than one way when a value holds `-` or nothing separates them
    /// (`a-b`+`c` = `a`+`b-c`): such a label gets the hash of the raw values, so distinct
    /// sessions never share a host. Too long labels are cut with a hash too.
    fn finish(self) -> String {
        let ambiguous = self.values.len() > 1 && (self.adjacent || self.dashed);
        if ambiguous {
            with_hash(&self.text, &self.values.join("\0"))
        } else if self.text.len() > 63 {
            with_hash(&self.text, &self.text)
        } else {
            self.text
        }
    }
}

/// Render the session's hostname. Every placeholder value becomes a DNS label of its own
/// ([`dns_label`]); see [`LabelBuf::finish`] for labels that join several values.
pub fn render_host(
    template: &str,
    pod: &str,
    namespace: &str,
    session_id: &str,
    labels: &BTreeMap<String, String>,
) -> Result<String> {
    let mut done: Vec<String> = Vec::new();
    let mut cur = LabelBuf::default();
    // An invalid template was refused at config load; render what parses.
    for piece in parse_template(template).unwrap_or_default() {
        match piece {
            Piece::Literal(s) => {
                let mut parts = s.split('.');
                cur.literal(parts.next().unwrap_or_default());
                for part in parts {
                    done.push(std::mem::take(&mut cur).finish());
                    cur.literal(part);
                }
            }
            Piece::Pod => cur.placeholder(pod),
            Piece::Namespace => cur.placeholder(namespace),
            Piece::SessionId => cur.placeholder(session_id),
            Piece::Label(key) => {
                let v = labels
                    .get(key)
                    .ok_or_else(|| Error::MissingLabel(key.to_owned()))?;
                cur.placeholder(v);
            }
        }
    }
    done.push(cur.finish());
    let host = done.join(".");
    if is_dns_subdomain(&host) {
        Ok(host)
    } else {
        Err(Error::InvalidHost(host))
    }
}
