//! authorized_keys: parsing (fail closed, line by line) and the authorization decision for
//! plain public keys and OpenSSH user certificates.
//!
//! Semantics follow OpenSSH's `sshd(8)` AUTHORIZED_KEYS FILE FORMAT; where this server is
//! stricter it says so next to the code (e.g. no hostname matching without DNS, no SHA-1
//! signatures, RSA below 2048 bits refused, certificates must name a principal).

mod addr;
mod options;
pub mod passport;

use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ssh_key::certificate::CertType;
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, Certificate, HashAlg, PublicKey};

use self::options::Options;

/// Largest authorized_keys file we read: far above any real file, small enough that a
/// glob hitting a huge file cannot exhaust the pod's memory.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Smallest RSA modulus accepted (bits).
const MIN_RSA_BITS: u32 = 2048;

/// Errors of this module: only reading a whole file can fail; bad lines are [`Refused`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// A line that was not accepted, with where it came from and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub source: String,
    pub line: usize,
    pub reason: String,
}

/// A `permitopen="host:port"` grant; `*` as host or port means any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermitOpen {
    pub host: String,
    pub port: Option<u16>,
}

impl PermitOpen {
    /// Parse `host:port`, `[v6addr]:port`, with `*` allowed for either part (OpenSSH does no
    /// pattern matching beyond that, and neither do we).
    pub fn parse(text: &str) -> std::result::Result<PermitOpen, String> {
        let bad = || format!("permitopen {text:?} is not host:port");
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
            (h, p)
        } else {
            let (h, p) = text.rsplit_once(':').ok_or_else(bad)?;
            if h.contains(':') {
                return Err(bad());
            }
            (h, p)
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad());
        }
        let port = match port {
            "*" => None,
            p => Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?),
        };
        Ok(PermitOpen {
            host: host.to_string(),
            port,
        })
    }

    /// True when a direct-tcpip request to `host:port` is covered by this grant.
    /// Host names compare case-insensitively (DNS names are); no other normalisation.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        (self.host == "*" || self.host.eq_ignore_ascii_case(host))
            && self.port.is_none_or(|p| p == port)
    }
}

/// What an accepted login may do. The server enforces every field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub pty: bool,
    /// Covers direct-tcpip, tcpip-forward and the streamlocal variants (as OpenSSH does).
    pub port_forwarding: bool,
    pub agent_forwarding: bool,
    pub x11_forwarding: bool,
    /// Forced command (`command=` or the certificate's `force-command`): run instead of
    /// whatever the client asked for, with the request in SSH_ORIGINAL_COMMAND.
    pub command: Option<String>,
    /// Restricts direct-tcpip targets; empty means any (subject to `port_forwarding`).
    pub permitopen: Vec<PermitOpen>,
    /// SHA256 fingerprint of the user's key (the certified key for a certificate).
    pub fingerprint: String,
    /// `file:line` of the authorized_keys entry that granted access.
    pub source: String,
}

impl Permissions {
    /// True when local forwarding to `host:port` is allowed.
    pub fn may_open(&self, host: &str, port: u16) -> bool {
        self.port_forwarding
            && (self.permitopen.is_empty() || self.permitopen.iter().any(|p| p.allows(host, port)))
    }
}

/// The outcome of an authorization check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept(Permissions),
    /// Reason for the log (never sent to the client).
    Reject(String),
}

/// One accepted authorized_keys line.
#[derive(Debug, Clone)]
pub struct Entry {
    key: KeyData,
    opts: Options,
    source: String,
    line: usize,
    text: String,
    fingerprint: String,
    comment: String,
}

impl Entry {
    /// Where the line came from (file path or a label).
    pub fn source(&self) -> &str {
        &self.source
    }
    /// 1-based line number in the source.
    pub fn line(&self) -> usize {
        self.line
    }
    /// The line as written, trimmed: what install writes to the merged file.
    pub fn text(&self) -> &str {
        &self.text
    }
    /// `SHA256:...` fingerprint of the key.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    /// Key algorithm as written in the line (`ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`).
    pub fn key_type(&self) -> String {
        self.key.algorithm().as_str().to_string()
    }
    /// The comment after the key, possibly empty.
    pub fn comment(&self) -> &str {
        &self.comment
    }
    /// The key itself (identity for de-duplication).
    pub fn key(&self) -> &KeyData {
        &self.key
    }
    /// True for `cert-authority` lines.
    pub fn is_cert_authority(&self) -> bool {
        self.opts.cert_authority
    }

    fn label(&self) -> String {
        format!("{}:{}", self.source, self.line)
    }

    /// Checks every certificate and plain key share: expiry-time and from=.
    fn check_common(&self, peer: Option<IpAddr>, now: u64) -> std::result::Result<(), String> {
        if let Some(expiry) = self.opts.expiry
            && now > expiry
        {
            return Err(format!("{}: expiry-time passed", self.label()));
        }
        if let Some(from) = &self.opts.from {
            match peer {
                None => return Err(format!("{}: from= set, peer unknown", self.label())),
                Some(ip) if !from.allows(ip) => {
                    return Err(format!("{}: peer {ip} not allowed by from=", self.label()));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn permissions(&self, fingerprint: String) -> Permissions {
        Permissions {
            pty: self.opts.pty,
            port_forwarding: self.opts.port_forwarding,
            agent_forwarding: self.opts.agent_forwarding,
            x11_forwarding: self.opts.x11_forwarding,
            command: self.opts.command.clone(),
            permitopen: self.opts.permitopen.clone(),
            fingerprint,
            source: self.label(),
        }
    }
}

/// A parsed authorized_keys file (or the merge of several).
#[derive(Debug, Clone, Default)]
pub struct AuthorizedKeys {
    entries: Vec<Entry>,
}

fn unix_seconds(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Reads a file of at most [`MAX_FILE_BYTES`] as (lossy) UTF-8.
pub fn read_capped(path: &Path) -> Result<String> {
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Accepts only key types this server verifies with modern signatures.
fn check_key(key: &KeyData) -> std::result::Result<(), String> {
    match key {
        KeyData::Ed25519(_)
        | KeyData::Ecdsa(_)
        | KeyData::SkEd25519(_)
        | KeyData::SkEcdsaSha2NistP256(_) => Ok(()),
        KeyData::Rsa(rsa) => {
            let bits = rsa.key_size();
            if bits < MIN_RSA_BITS {
                Err(format!("RSA key of {bits} bits (minimum {MIN_RSA_BITS})"))
            } else {
                Ok(())
            }
        }
        KeyData::Dsa(_) => Err("ssh-dss keys are not accepted".to_string()),
        _ => Err("unsupported key type".to_string()),
    }
}

/// Parses `keytype base64 [comment]`.
fn parse_key(rest: &str) -> std::result::Result<(KeyData, String), String> {
    let mut parts = rest.splitn(3, [' ', '\t']);
    let kind = parts.next().unwrap_or_default();
    let blob = parts.next().unwrap_or_default().trim();
    let comment = parts.next().unwrap_or_default().trim().to_string();
    if kind.contains("-cert-v01@openssh.com") {
        return Err("a certificate cannot be listed; add its CA with cert-authority".to_string());
    }
    if blob.is_empty() {
        return Err(format!("no key data after {kind:?}"));
    }
    let key = PublicKey::from_openssh(&format!("{kind} {blob}"))
        .map_err(|e| format!("bad {kind:?} key: {e}"))?;
    let data = key.key_data().clone();
    check_key(&data)?;
    Ok((data, comment))
}

/// Whether a token names a key type (so the line has no options).
fn is_key_type(token: &str) -> bool {
    token.starts_with("ssh-")
        || token.starts_with("ecdsa-sha2-")
        || token.starts_with("sk-")
        || Algorithm::new(token).is_ok()
}

impl AuthorizedKeys {
    /// Parse text; bad lines are returned as Refused (never an error for the whole file).
    pub fn parse(text: &str, source: &str) -> (AuthorizedKeys, Vec<Refused>) {
        let mut keys = AuthorizedKeys::default();
        let mut refused = Vec::new();
        // Files saved by Windows editors may start with a BOM and use CRLF (lines() strips \r).
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match Self::parse_line(line) {
                Ok((key, opts, comment)) => keys.entries.push(Entry {
                    fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
                    key,
                    opts,
                    source: source.to_string(),
                    line: i + 1,
                    text: line.to_string(),
                    comment,
                }),
                Err(reason) => refused.push(Refused {
                    source: source.to_string(),
                    line: i + 1,
                    reason,
                }),
            }
        }
        (keys, refused)
    }

    fn parse_line(line: &str) -> std::result::Result<(KeyData, Options, String), String> {
        let first = line.split([' ', '\t']).next().unwrap_or_default();
        let (opts, rest) = if is_key_type(first) {
            (Options::default(), line)
        } else {
            // Say "not a key" for garbage rather than blaming an "option" that is none.
            let not_a_key = || "not a key line: no known key type".to_string();
            let (raw, rest) = options::split(line).map_err(|e| {
                if line.split([' ', '\t']).any(is_key_type) {
                    e
                } else {
                    not_a_key()
                }
            })?;
            if !is_key_type(rest.split([' ', '\t']).next().unwrap_or_default()) {
                return Err(not_a_key());
            }
            (options::interpret(&raw)?, rest)
        };
        let (key, comment) = parse_key(rest)?;
        Ok((key, opts, comment))
    }

    /// Read and parse a file; refused lines are logged (the file as a whole still loads).
    pub fn load(path: &Path) -> Result<AuthorizedKeys> {
        let text = read_capped(path)?;
        let source = path.display().to_string();
        let (keys, refused) = Self::parse(&text, &source);
        for r in &refused {
            tracing::warn!(source = %r.source, line = r.line, reason = %r.reason, "authorized_keys line refused");
        }
        tracing::debug!(path = %source, entries = keys.entries.len(), refused = refused.len(), "authorized_keys loaded");
        Ok(keys)
    }

    /// The accepted lines in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Plain public key offered by a client.
    pub fn authorize_key(
        &self,
        key: &PublicKey,
        peer: Option<IpAddr>,
        now: SystemTime,
    ) -> Decision {
        self.authorize_plain(|e| e.key == *key.key_data(), peer, now)
    }

    /// A login the gateway vouches for (a verified [`passport`]): the entry of the key the
    /// client proved it holds decides, with `from=` checked against the real client.
    pub fn authorize_vouched(
        &self,
        fingerprint: &str,
        client: IpAddr,
        now: SystemTime,
    ) -> Decision {
        self.authorize_plain(|e| e.fingerprint == fingerprint, Some(client), now)
    }

    /// The first plain-key entry that `matches` and whose options allow this login.
    fn authorize_plain(
        &self,
        matches: impl Fn(&Entry) -> bool,
        peer: Option<IpAddr>,
        now: SystemTime,
    ) -> Decision {
        let now = unix_seconds(now);
        let mut reason = None;
        for e in self
            .entries
            .iter()
            .filter(|e| !e.opts.cert_authority && matches(e))
        {
            // Like OpenSSH, a later line with the same key may still grant access.
            match e.check_common(peer, now) {
                Ok(()) => return Decision::Accept(e.permissions(e.fingerprint.clone())),
                Err(r) => {
                    reason.get_or_insert(r);
                }
            }
        }
        Decision::Reject(reason.unwrap_or_else(|| "key not in authorized_keys".to_string()))
    }

    /// OpenSSH user certificate: signature + validity checked against cert-authority entries,
    /// principals= or user name. `user` is the user name the client asked for.
    pub fn authorize_cert(
        &self,
        cert: &Certificate,
        user: &str,
        peer: Option<IpAddr>,
        now: SystemTime,
    ) -> Decision {
        let now = unix_seconds(now);
        if cert.cert_type() != CertType::User {
            return Decision::Reject("not a user certificate".to_string());
        }
        if let Err(r) = check_key(cert.public_key()) {
            return Decision::Reject(format!("certified key: {r}"));
        }
        // SHA-1 RSA signatures (`ssh-rsa`) are refused; ssh-key would verify them.
        if matches!(
            cert.signature().algorithm(),
            Algorithm::Rsa { hash: None } | Algorithm::Dsa
        ) {
            return Decision::Reject("certificate signed with SHA-1".to_string());
        }
        let ca = cert.signature_key();
        let mut reason = None;
        for e in self
            .entries
            .iter()
            .filter(|e| e.opts.cert_authority && e.key == *ca)
        {
            match check_cert(e, cert, user, peer, now) {
                Ok(perms) => return Decision::Accept(perms),
                Err(r) => {
                    reason.get_or_insert(r);
                }
            }
        }
        Decision::Reject(
            reason.unwrap_or_else(|| "certificate CA not in authorized_keys".to_string()),
        )
    }
}

fn check_cert(
    e: &Entry,
    cert: &Certificate,
    user: &str,
    peer: Option<IpAddr>,
    now: u64,
) -> std::result::Result<Permissions, String> {
    let label = e.label();
    let ca_fp = cert.signature_key().fingerprint(HashAlg::Sha256);
    if cert.validate_at(now, [&ca_fp]).is_err() {
        return Err(if now < cert.valid_after() || now >= cert.valid_before() {
            format!(
                "{label}: certificate not valid now (valid {}..{})",
                cert.valid_after(),
                cert.valid_before()
            )
        } else {
            format!("{label}: certificate signature invalid")
        });
    }
    // Stricter than OpenSSH: a certificate without principals ("valid for anyone") is
    // refused, since this server accepts any user name.
    let principals = cert.valid_principals();
    let ok = match &e.opts.principals {
        Some(allowed) => principals.iter().any(|p| allowed.contains(p)),
        None => principals.iter().any(|p| p == user),
    };
    if !ok {
        return Err(format!(
            "{label}: certificate principals {principals:?} do not match {}",
            e.opts
                .principals
                .as_ref()
                .map_or_else(|| format!("user {user:?}"), |p| format!("principals={p:?}"))
        ));
    }
    let mut forced = None;
    for (name, value) in cert.critical_options().iter() {
        match name.as_str() {
            "force-command" => forced = Some(value.clone()),
            "source-address" => {
                let nets = addr::parse_cidr_list(value).map_err(|r| format!("{label}: {r}"))?;
                let allowed = peer.is_some_and(|ip| nets.iter().any(|n| n.contains(ip)));
                if !allowed {
                    return Err(format!(
                        "{label}: peer {peer:?} not in certificate source-address"
                    ));
                }
            }
            other => {
                return Err(format!("{label}: unsupported critical option {other:?}"));
            }
        }
    }
    e.check_common(peer, now)?;
    let mut perms = e.permissions(cert.public_key().fingerprint(HashAlg::Sha256).to_string());
    // Two forced commands are only acceptable when they agree (OpenSSH sshauthopt_merge).
    match (&perms.command, forced) {
        (Some(a), Some(b)) if *a != b => {
            return Err(format!(
                "{label}: command= and certificate force-command differ"
            ));
        }
        (None, Some(b)) => perms.command = Some(b),
        _ => {}
    }
    // Certificate permissions come from its extensions; the result is the stricter of both.
    let ext = cert.extensions();
    perms.pty &= ext.contains_key("permit-pty");
    perms.port_forwarding &= ext.contains_key("permit-port-forwarding");
    perms.agent_forwarding &= ext.contains_key("permit-agent-forwarding");
    perms.x11_forwarding &= ext.contains_key("permit-X11-forwarding");
    Ok(perms)
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.source, self.line, self.reason)
    }
}

/// A host certificate (OpenSSH `-cert.pub` text) that a server holding `host_key` may
/// present at `now` (unix seconds), or why not. The signature is the client's to check (it
/// trusts the CA, the server need not know it): this only keeps a wrong file from being
/// presented (init-sshd's `--host-cert`, the gateway's).
pub fn host_certificate(
    text: &str,
    host_key: &PublicKey,
    now: u64,
) -> std::result::Result<Certificate, String> {
    let cert =
        Certificate::from_openssh(text.trim()).map_err(|e| format!("not a certificate: {e}"))?;
    if cert.cert_type() != CertType::Host {
        return Err("a user certificate, not a host certificate".into());
    }
    if cert.public_key() != host_key.key_data() {
        return Err("certifies another key than this server's host key".into());
    }
    if cert.valid_before() <= now {
        return Err("expired".into());
    }
    Ok(cert)
}

#[cfg(test)]
mod tests;
