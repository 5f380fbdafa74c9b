//! Logins through the SSH gateway: its per-connection certificate (a passport, see
//! `session_ssh_contract::keys::passport`) is accepted only from the CA the webhook named for
//! this session and only for this session's principal; then the key it vouches for is
//! authorized here exactly as for a direct login from the real client address.

use std::time::SystemTime;

use russh::keys::{Certificate, PublicKey};
use session_ssh_contract::argv::flag;
use session_ssh_contract::keys::passport::{self, Holder};
use session_ssh_contract::keys::{AuthorizedKeys, Decision, Permissions};

/// The gateway flags of `start` and `serve` (start hands them to serve).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GatewayOpts {
    /// The SSH gateway's user CA, one OpenSSH public key line. Unset: no gateway logins.
    #[arg(long = flag::GATEWAY_CA, env = "INIT_SSHD_GATEWAY_CA", requires = "gateway_principal")]
    pub gateway_ca: Option<String>,
    /// The principal gateway certificates must name: this session's id.
    #[arg(long = flag::GATEWAY_PRINCIPAL, env = "INIT_SSHD_GATEWAY_PRINCIPAL")]
    pub gateway_principal: Option<String>,
    /// The hub user whose hub-token logins through the gateway are accepted (the webhook's
    /// `gateway.hubTokenLogin`). Unset: hub-token logins are refused.
    #[arg(long = flag::GATEWAY_HUB_USER, env = "INIT_SSHD_GATEWAY_HUB_USER", requires = "gateway_ca")]
    pub gateway_hub_user: Option<String>,
}

impl GatewayOpts {
    /// The flags again, for the serve command line `start` builds.
    pub fn args(&self) -> Vec<String> {
        use session_ssh_contract::argv::long;
        let (Some(ca), Some(p)) = (&self.gateway_ca, &self.gateway_principal) else {
            return vec![];
        };
        let mut v = vec![
            long(flag::GATEWAY_CA),
            ca.clone(),
            long(flag::GATEWAY_PRINCIPAL),
            p.clone(),
        ];
        if let Some(u) = &self.gateway_hub_user {
            v.extend([long(flag::GATEWAY_HUB_USER), u.clone()]);
        }
        v
    }

    /// The trust these flags set up; a bad CA line is logged and turns gateway logins off
    /// (direct logins keep working).
    pub fn trust(&self) -> Option<Trust> {
        let (line, principal) = (self.gateway_ca.as_ref()?, self.gateway_principal.as_ref()?);
        match PublicKey::from_openssh(line.trim()) {
            Ok(ca) if !principal.is_empty() => {
                let hub_user = self.gateway_hub_user.clone().filter(|u| !u.is_empty());
                tracing::info!(ca = %ca.fingerprint(russh::keys::HashAlg::Sha256), principal, hub_token_login = ?hub_user, "gateway logins accepted");
                Some(Trust {
                    ca,
                    principal: principal.clone(),
                    hub_user,
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
    /// The one hub user whose hub-token logins are accepted (None: none are).
    hub_user: Option<String>,
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
            Holder::HubUser(user) => self.authorize_hub_user(user),
        };
        (decision, format!("{} client={}", v.key_id, v.client))
    }

    /// A hub-token login: the gateway asked the hub that the token's owner is `user` and may
    /// access this server; here the session checks it is the one user it was configured for.
    /// No authorized_keys line applies (there is no key), so the login gets what a key line
    /// with no options gives. The owner id stands in for a key fingerprint (detached shells).
    fn authorize_hub_user(&self, user: &str) -> Decision {
        match &self.hub_user {
            Some(u) if u == user => Decision::Accept(Permissions {
                pty: true,
                port_forwarding: true,
                agent_forwarding: true,
                x11_forwarding: true,
                command: None,
                permitopen: Vec::new(),
                fingerprint: format!("hub-token:{user}"),
                source: "gateway hub-token login".into(),
            }),
            Some(u) => Decision::Reject(format!(
                "hub token login of {user:?}: this session accepts only {u:?}"
            )),
            None => Decision::Reject(format!(
                "hub token login of {user:?}: not enabled for this session"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::PrivateKey;
    use russh::keys::ssh_key::private::Ed25519Keypair;
    use session_ssh_contract::keys::passport::Vouched;

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    fn hub_passport(ca: &PrivateKey, principal: &str, user: &str) -> Certificate {
        let vouched = Vouched {
            holder: Holder::HubUser(user.into()),
            client: "192.0.2.7".parse().unwrap(),
            key_id: "t".into(),
        };
        passport::mint(
            ca,
            key(9).public_key(),
            principal,
            &vouched,
            [1; 32],
            SystemTime::now(),
        )
        .unwrap()
    }

    fn trust(hub_user: Option<&str>) -> Trust {
        GatewayOpts {
            gateway_ca: Some(key(1).public_key().to_openssh().unwrap()),
            gateway_principal: Some("sess-a".into()),
            gateway_hub_user: hub_user.map(str::to_owned),
        }
        .trust()
        .unwrap()
    }

    #[test]
    fn hub_token_logins_only_for_the_configured_user() {
        let keys = AuthorizedKeys::default();
        let now = SystemTime::now();
        let alice = hub_passport(&key(1), "sess-a", "alice@x.org");
        let (d, _) = trust(Some("alice@x.org")).authorize(&alice, &keys, now);
        let Decision::Accept(p) = d else {
            panic!("refused: {d:?}")
        };
        assert_eq!(p.fingerprint, "hub-token:alice@x.org");
        assert!(p.pty && p.port_forwarding && p.command.is_none());
        // Not enabled, another user, another session, another CA: refused.
        for (t, cert) in [
            (trust(None), alice.clone()),
            (trust(Some("bob")), alice.clone()),
            (
                trust(Some("alice@x.org")),
                hub_passport(&key(1), "sess-b", "alice@x.org"),
            ),
            (
                trust(Some("alice@x.org")),
                hub_passport(&key(2), "sess-a", "alice@x.org"),
            ),
        ] {
            let (d, _) = t.authorize(&cert, &keys, now);
            assert!(matches!(d, Decision::Reject(_)), "{d:?}");
        }
    }
}
