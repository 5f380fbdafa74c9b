//! The gateway's per-connection user certificate ("passport"): what the SSH gateway vouches
//! for when it connects to a session's init-sshd on a user's behalf, and the check init-sshd
//! makes before it applies that user's own authorized_keys entry.
//!
//! The gateway proves nothing to the session about keys it holds: it proves that the client
//! holds the private key of `user_key` (it verified the signature), from `client`. The
//! certificate is signed by the gateway's user CA, certifies a key the gateway made for this
//! one connection (its private half never leaves the gateway), names the session as its only
//! principal and lives [`MAX_LIFETIME_SECS`] at most. The session then decides exactly as for
//! a direct login from `client` with `user_key`.

use std::net::IpAddr;
use std::time::SystemTime;

use ssh_key::certificate::{Builder, CertType};
use ssh_key::{Certificate, HashAlg, PrivateKey, PublicKey};

use super::unix_seconds;

/// Critical option: SHA256 fingerprint of the key the client proved it holds.
pub const OPT_USER_KEY: &str = "user-key@session-ssh.io";
/// Critical option: the client's IP address as the gateway saw it.
pub const OPT_CLIENT: &str = "client-address@session-ssh.io";
/// Critical option: the hub user who logged in with a hub API token (no key).
pub const OPT_HUB_USER: &str = "hub-user@session-ssh.io";
/// Longest validity a session accepts (and the gateway mints), clock skew included.
pub const MAX_LIFETIME_SECS: u64 = 300;
/// How far back the gateway dates a certificate, for clocks slightly behind its own.
pub const BACKDATE_SECS: u64 = 60;
/// Extensions of a passport: the session's authorized_keys entry restricts further.
const EXTENSIONS: [&str; 4] = [
    "permit-pty",
    "permit-port-forwarding",
    "permit-agent-forwarding",
    "permit-X11-forwarding",
];

/// Who the gateway vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// The client proved it holds the key with this SHA256 fingerprint (`SHA256:...`).
    Key(String),
    /// The client logged in with a hub API token owned by this hub user.
    HubUser(String),
}

/// What a verified passport says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouched {
    pub holder: Holder,
    /// The real client address, for `from=`.
    pub client: IpAddr,
    /// The certificate's key id (the gateway's connection id), for the log.
    pub key_id: String,
}

/// Signs a passport for `subject` (the gateway's key for this connection).
pub fn mint(
    ca: &PrivateKey,
    subject: &PublicKey,
    principal: &str,
    vouched: &Vouched,
    nonce: [u8; 32],
    now: SystemTime,
) -> Result<Certificate, ssh_key::Error> {
    let now = unix_seconds(now);
    let after = now.saturating_sub(BACKDATE_SECS);
    let mut b = Builder::new(
        nonce.to_vec(),
        subject.key_data().clone(),
        after,
        after + MAX_LIFETIME_SECS,
    )?;
    b.cert_type(CertType::User)?;
    b.key_id(vouched.key_id.clone())?;
    b.valid_principal(principal)?;
    match &vouched.holder {
        Holder::Key(fp) => b.critical_option(OPT_USER_KEY, fp.clone())?,
        Holder::HubUser(u) => b.critical_option(OPT_HUB_USER, u.clone())?,
    };
    b.critical_option(OPT_CLIENT, vouched.client.to_string())?;
    for e in EXTENSIONS {
        b.extension(e, "")?;
    }
    b.sign(ca)
}

/// Whether `cert` is a passport at all (signed by the configured gateway CA): only then is
/// [`verify`] the check that applies; any other certificate goes the usual way.
pub fn is_from(cert: &Certificate, ca: &PublicKey) -> bool {
    cert.signature_key() == ca.key_data()
}

/// init-sshd's check: signed by `ca`, a user certificate valid now for at most
/// [`MAX_LIFETIME_SECS`], naming exactly `principal`, with the options above and no other.
pub fn verify(
    cert: &Certificate,
    ca: &PublicKey,
    principal: &str,
    now: SystemTime,
) -> Result<Vouched, String> {
    let now = unix_seconds(now);
    if cert.cert_type() != CertType::User {
        return Err("gateway certificate: not a user certificate".into());
    }
    let ca_fp = ca.fingerprint(HashAlg::Sha256);
    if !is_from(cert, ca) || cert.validate_at(now, [&ca_fp]).is_err() {
        return Err(format!(
            "gateway certificate: bad signature or not valid now (valid {}..{}, now {now})",
            cert.valid_after(),
            cert.valid_before()
        ));
    }
    if cert.valid_before().saturating_sub(cert.valid_after()) > MAX_LIFETIME_SECS {
        return Err("gateway certificate: lifetime too long".into());
    }
    if cert.valid_principals() != [principal.to_owned()] {
        return Err(format!(
            "gateway certificate: principals {:?}, this session is {principal:?}",
            cert.valid_principals()
        ));
    }
    let (mut key, mut hub, mut client) = (None, None, None);
    for (name, value) in cert.critical_options().iter() {
        match name.as_str() {
            OPT_USER_KEY => key = Some(value.clone()),
            OPT_HUB_USER => hub = Some(value.clone()),
            OPT_CLIENT => client = value.parse::<IpAddr>().ok(),
            other => return Err(format!("gateway certificate: unknown option {other:?}")),
        }
    }
    let holder = match (key, hub) {
        (Some(fp), None) if fp.starts_with("SHA256:") => Holder::Key(fp),
        (None, Some(u)) if !u.is_empty() => Holder::HubUser(u),
        _ => return Err("gateway certificate: needs exactly one holder option".into()),
    };
    let client = client.ok_or("gateway certificate: no valid client address")?;
    Ok(Vouched {
        holder,
        client,
        key_id: cert.key_id().to_owned(),
    })
}
