//! The SSH algorithms every SSH endpoint of ours offers and accepts (init-sshd, and the
//! gateway on both of its legs): spelled out instead of russh's defaults, which change
//! between releases and include what we refuse (SHA-1 RSA signatures, no AES-GCM).

use std::borrow::Cow;

use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
use russh::{Preferred, cipher, compression, kex, mac};

/// Key exchange: hybrid post-quantum first, curve25519, plus the
/// ext-info and strict-kex (Terrapin, CVE-2023-48795) markers.
const KEX: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::EXTENSION_SUPPORT_AS_SERVER,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];

/// The same key exchanges with the client-side markers (the gateway's leg to a session).
const KEX_CLIENT: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::EXTENSION_SUPPORT_AS_CLIENT,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
];

/// AEAD ciphers first. CTR only with the ETM MACs below. No CBC. (A server's order
/// does not matter: the client's first choice that both offer wins.)
const CIPHERS: &[cipher::Name] = &[
    cipher::CHACHA20_POLY1305,
    cipher::AES_128_GCM,
    cipher::AES_256_GCM,
    cipher::AES_256_CTR,
    cipher::AES_128_CTR,
];

/// The same, AES-GCM first: with AES and carry-less multiply instructions, ring's AES-GCM
/// costs a fraction of its ChaCha20-Poly1305 (profiled in the gateway: Poly1305 and ChaCha20
/// took two thirds of its CPU when both legs used them).
const CIPHERS_AES_FIRST: &[cipher::Name] = &[
    cipher::AES_128_GCM,
    cipher::AES_256_GCM,
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_CTR,
    cipher::AES_128_CTR,
];

/// Whether this CPU runs AES-GCM in hardware.
fn aes_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

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

/// The negotiation lists of a russh server config.
pub fn preferred() -> Preferred {
    Preferred {
        kex: Cow::Borrowed(KEX),
        cipher: Cow::Borrowed(CIPHERS),
        ..preferred_client()
    }
}

/// The negotiation lists of a russh client config (the gateway's leg to a session, where
/// the gateway's order decides the cipher).
pub fn preferred_client() -> Preferred {
    Preferred {
        kex: Cow::Borrowed(KEX_CLIENT),
        key: Cow::Borrowed(KEY_ALGS),
        host_key_certificates: Cow::Borrowed(&[]),
        cipher: Cow::Borrowed(if aes_in_hardware() {
            CIPHERS_AES_FIRST
        } else {
            CIPHERS
        }),
        mac: Cow::Borrowed(MACS),
        compression: Cow::Borrowed(&[compression::NONE]),
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
        assert!(KEX_CLIENT.contains(&kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT));
        assert!(CIPHERS.contains(&cipher::AES_128_GCM));
        // The same set in both orders.
        let mut a: Vec<&str> = CIPHERS.iter().map(|c| c.as_ref()).collect();
        let mut b: Vec<&str> = CIPHERS_AES_FIRST.iter().map(|c| c.as_ref()).collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
    }
}
