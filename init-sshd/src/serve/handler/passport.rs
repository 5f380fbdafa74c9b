//! Logins through the SSH gateway: its per-connection certificate (a passport, see
//! `session_ssh_contract::keys::passport`) is accepted only from the CA the webhook named for
//! this session and only for this session's principal; then the key it vouches for is
//! authorized here exactly as for a direct login from the real client address.

use std::time::SystemTime;

use russh::keys::{Certificate, PublicKey};
use session_ssh_contract::argv::flag;
use session_ssh_contract::keys::passport::{self, Holder};
use session_ssh_contract::keys::{AuthorizedKeys, Decision};

/// The gateway flags of `start` and `serve` (start hands them to serve).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GatewayOpts {
    /// The SSH gateway's user CA, one OpenSSH public key line. Unset: no gateway logins.
    #[arg(long = flag::GATEWAY_CA, env = "INIT_SSHD_GATEWAY_CA", requires = "gateway_principal")]
    pub gateway_ca: Option<String>,
    /// The principal gateway certificates must name: this session's id.
    #[arg(long = flag::GATEWAY_PRINCIPAL, env = "INIT_SSHD_GATEWAY_PRINCIPAL")]
    pub gateway_principal: Option<String>,
}

impl GatewayOpts {
    /// The flags again, for the serve command line `start` builds.
    pub fn args(&self) -> Vec<String> {
        match (&self.gateway_ca, &self.gateway_principal) {
            (Some(ca), Some(p)) => vec![
                session_ssh_contract::argv::long(flag::GATEWAY_CA),
                ca.clone(),
                session_ssh_contract::argv::long(flag::GATEWAY_PRINCIPAL),
                p.clone(),
            ],
            _ => vec![],
        }
    }

    /// The trust these flags set up; a bad CA line is logged and turns gateway logins off
    /// (direct logins keep working).
    pub fn trust(&self) -> Option<Trust> {
        let (line, principal) = (self.gateway_ca.as_ref()?, self.gateway_principal.as_ref()?);
        match PublicKey::from_openssh(line.trim()) {
            Ok(ca) if !principal.is_empty() => {
                tracing::info!(ca = %ca.fingerprint(russh::keys::HashAlg::Sha256), principal, "gateway logins accepted");
                Some(Trust {
                    ca,
                    principal: principal.clone(),
                })
            }
            Ok(_) => {
                tracing::error!("--gateway-principal is empty; gateway logins off");
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "--gateway-ca is not a public key line; gateway logins off");
                None
            }
        }
    }
}

/// Which gateway this session trusts, and as whom.
#[derive(Debug, Clone)]
pub struct Trust {
    ca: PublicKey,
    principal: String,
}

impl Trust {
    /// Whether this certificate claims to come from the gateway (then [`Trust::authorize`]
    /// alone decides; it never falls back to cert-authority lines).
    pub fn issued(&self, cert: &Certificate) -> bool {
        passport::is_from(cert, &self.ca)
    }

    /// The decision for a gateway login, and the passport's key id for the log.
    pub fn authorize(
        &self,
        cert: &Certificate,
        keys: &AuthorizedKeys,
        now: SystemTime,
    ) -> (Decision, String) {
        let v = match passport::verify(cert, &self.ca, &self.principal, now) {
            Ok(v) => v,
            Err(reason) => return (Decision::Reject(reason), String::new()),
        };
        let decision = match &v.holder {
            Holder::Key(fp) => keys.authorize_vouched(fp, v.client, now),
            Holder::HubUser(user) => Decision::Reject(format!(
                "hub token login of {user:?}: not enabled for this session"
            )),
        };
        (decision, format!("{} client={}", v.key_id, v.client))
    }
}
