//! The explicit russh server configuration: limits and algorithm lists.
//!
//! Everything is spelled out instead of relying on russh defaults, because
//! the defaults change between releases and some are wrong for us (no
//! TCP_NODELAY, no keepalive, no AES-GCM, SHA-1 RSA signatures accepted).

use std::borrow::Cow;
use std::time::Duration;

use russh::keys::{Algorithm, Certificate, EcdsaCurve, HashAlg, PrivateKey};
use russh::server::Config;
use russh::{MethodKind, MethodSet, Preferred, cipher, compression, kex, mac};

/// Tunables of the server, with OpenSSH-like defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Delay before every authentication rejection (hides which keys exist).
    pub auth_rejection_time: Duration,
    /// Signed auth attempts per connection (OpenSSH MaxAuthTries is 6).
    pub max_auth_attempts: usize,
    /// Close a connection with no traffic at all for this long (None: never).
    pub idle_timeout: Option<Duration>,
    /// Send a keepalive after this much silence from the client (None: never).
    pub keepalive_interval: Option<Duration>,
    /// Unanswered keepalives before the connection is dropped.
    pub keepalive_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            auth_rejection_time: Duration::from_millis(300),
            max_auth_attempts: 6,
            idle_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 4,
        }
    }
}

/// Key exchange: hybrid post-quantum first, curve25519, plus the
/// ext-info and strict-kex (Terrapin, CVE-2023-48795) markers.
const KEX: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::EXTENSION_SUPPORT_AS_SERVER,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];

/// AEAD ciphers first; AES-GCM is the fastest with AES-NI. CTR only with the
/// ETM MACs below. No CBC.
const CIPHERS: &[cipher::Name] = &[
    cipher::CHACHA20_POLY1305,
    cipher::AES_128_GCM,
    cipher::AES_256_GCM,
    cipher::AES_256_CTR,
    cipher::AES_128_CTR,
];

/// Encrypt-then-MAC only, no SHA-1.
const MACS: &[mac::Name] = &[mac::HMAC_SHA256_ETM, mac::HMAC_SHA512_ETM];

/// Host key and user key signature algorithms. This list is also what russh
/// announces as `server-sig-algs`, so leaving out `ssh-rsa` (SHA-1) makes
/// clients sign RSA keys with SHA-2.
const KEY_ALGS: &[Algorithm] = &[
    Algorithm::Ed25519,
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP256,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP384,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP521,
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha512),
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha256),
    },
];

/// Is this user-key signature algorithm acceptable? (No SHA-1, no DSA.)
pub fn user_key_algorithm_allowed(alg: &Algorithm) -> bool {
    KEY_ALGS.contains(alg) || matches!(alg, Algorithm::SkEd25519 | Algorithm::SkEcdsaSha2NistP256)
}

/// Build the russh configuration around the host key and its certificates (presented
/// only to clients that ask for a certificate algorithm).
pub fn build(host_key: PrivateKey, limits: &Limits, certificates: Vec<Certificate>) -> Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    Config {
        server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-init-sshd")),
        methods,
        auth_rejection_time: limits.auth_rejection_time,
        // The client's first "none" probe is not a guess; answer at once.
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        certificates,
        limits: russh::Limits::default(),
        // 2 MiB window and 32 KiB packets, like OpenSSH.
        window_size: 2 * 1024 * 1024,
        maximum_packet_size: 32 * 1024,
        channel_buffer_size: 100,
        event_buffer_size: 64,
        preferred: Preferred {
            kex: Cow::Borrowed(KEX),
            key: Cow::Borrowed(KEY_ALGS),
            host_key_certificates: Cow::Borrowed(&[]),
            cipher: Cow::Borrowed(CIPHERS),
            mac: Cow::Borrowed(MACS),
            compression: Cow::Borrowed(&[compression::NONE]),
        },
        max_auth_attempts: limits.max_auth_attempts,
        inactivity_timeout: limits.idle_timeout,
        keepalive_interval: limits.keepalive_interval,
        keepalive_max: limits.keepalive_max,
        nodelay: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_sha1_rsa_for_users() {
        assert!(!user_key_algorithm_allowed(&Algorithm::Rsa { hash: None }));
        assert!(user_key_algorithm_allowed(&Algorithm::Rsa {
            hash: Some(HashAlg::Sha256)
        }));
        assert!(user_key_algorithm_allowed(&Algorithm::Ed25519));
        assert!(!user_key_algorithm_allowed(&Algorithm::Dsa));
    }

    #[test]
    fn no_cbc_no_sha1_mac() {
        for c in CIPHERS {
            assert!(!c.as_ref().contains("cbc"), "{}", c.as_ref());
        }
        for m in MACS {
            assert!(m.as_ref().contains("etm") && !m.as_ref().contains("sha1"));
        }
        assert!(KEX.contains(&kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER));
        assert!(CIPHERS.contains(&cipher::AES_128_GCM));
    }
}
