//! The certificate authority and the serving certificates it issues.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::der;
use crate::output::TlsBundle;

/// Errors creating or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen refused the parameters or failed to sign.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A DNS name that is not a valid DNS-1123 subdomain.
    #[error("invalid DNS name {0:?} (expected lowercase letters, digits, '-' and '.')")]
    DnsName(String),
    /// A PEM input without the expected block.
    #[error("no {0} block found in PEM input")]
    NoPem(&'static str),
    /// A certificate we could not read.
    #[error(transparent)]
    Der(#[from] der::Error),
    /// The CA certificate and key do not belong together, or the CA was not made here.
    #[error("CA certificate and key do not match: {0}")]
    Mismatch(&'static str),
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Default CA lifetime: long, because rotating a CA means re-patching every caBundle.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Default serving certificate lifetime.
pub const SERVER_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// Default CA common name (a unique suffix is appended).
pub const CA_COMMON_NAME: &str = "session-ssh webhook CA";
/// Backdating of notBefore, so a node whose clock is a little behind still accepts a fresh cert.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// What CA to create.
#[derive(Debug, Clone)]
pub struct CaSpec {
    /// Subject commonName.
    pub common_name: String,
    /// Lifetime from now.
    pub validity: Duration,
}

impl Default for CaSpec {
    fn default() -> Self {
        // A per-CA suffix keeps two CAs (old and new, both in a caBundle during a
        // rotation) distinguishable by subject, so verifiers never try the wrong one.
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        CaSpec {
            common_name: format!("{CA_COMMON_NAME} {stamp:x}"),
            validity: CA_VALIDITY,
        }
    }
}

/// What serving certificate to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertSpec {
    /// Subject commonName (informational; verifiers use the SANs).
    pub common_name: String,
    /// DNS subjectAltNames.
    pub dns_names: Vec<String>,
    /// IP subjectAltNames.
    pub ip_addresses: Vec<IpAddr>,
    /// Lifetime from now.
    pub validity: Duration,
}

impl ServerCertSpec {
    /// The four names a Kubernetes Service `name` in namespace `ns` is reached by.
    pub fn for_service(name: &str, ns: &str) -> Self {
        ServerCertSpec {
            common_name: format!("{name}.{ns}.svc"),
            dns_names: vec![
                name.to_owned(),
                format!("{name}.{ns}"),
                format!("{name}.{ns}.svc"),
                format!("{name}.{ns}.svc.cluster.local"),
            ],
            ip_addresses: Vec::new(),
            validity: SERVER_VALIDITY,
        }
    }

    /// `localhost`, 127.0.0.1 and ::1: what tests that listen on loopback need.
    pub fn localhost() -> Self {
        ServerCertSpec {
            common_name: "localhost".to_owned(),
            dns_names: vec!["localhost".to_owned()],
            ip_addresses: vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
            validity: SERVER_VALIDITY,
        }
    }

    /// Add a DNS subjectAltName.
    pub fn with_dns(mut self, name: impl Into<String>) -> Self {
        self.dns_names.push(name.into());
        self
    }

    /// Add an IP subjectAltName.
    pub fn with_ip(mut self, ip: IpAddr) -> Self {
        self.ip_addresses.push(ip);
        self
    }

    /// Change the lifetime.
    pub fn with_validity(mut self, validity: Duration) -> Self {
        self.validity = validity;
        self
    }
}

/// A serving certificate and its private key.
#[derive(Debug, Clone)]
pub struct ServerCert {
    /// Leaf certificate, PEM.
    pub cert_pem: String,
    /// Leaf certificate, DER.
    pub cert_der: Vec<u8>,
    /// PKCS#8 private key, PEM.
    pub key_pem: String,
}

/// A certificate authority able to issue serving certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// A new CA with the defaults: ECDSA P-256, ten years.
    pub fn generate() -> Result<Ca> {
        Ca::generate_with(&CaSpec::default())
    }

    /// A new CA as described by `spec`.
    pub fn generate_with(spec: &CaSpec) -> Result<Ca> {
        let key = KeyPair::generate()?;
        let mut params = ca_params(&spec.common_name);
        let (not_before, not_after) = window(spec.validity)?;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Load a CA this crate made earlier (from `ca.crt` and `ca.key`).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let cert_der = first_cert_der(cert_pem)?;
        let info = der::cert_info(&cert_der)?;
        let key = KeyPair::from_pem(key_pem)?;
        if info.public_key != key.public_key_raw() {
            return Err(Error::Mismatch("the key is not the certificate's key"));
        }
        let cn = info
            .subject_cn
            .ok_or(Error::Mismatch("CA subject has no commonName"))?;
        // Issued certificates carry our re-encoding of the subject as their issuer;
        // verifiers compare it byte-for-byte with the CA's subject.
        if der::encode_cn_name(&cn) != info.subject_der {
            return Err(Error::Mismatch(
                "CA subject is not a single UTF8String commonName (not made by session-ssh-certs)",
            ));
        }
        Ok(Ca {
            issuer: Issuer::new(ca_params(&cn), key),
            cert_pem: cert_pem.to_owned(),
            cert_der,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The `caBundle` value of a webhook configuration: base64 of the PEM.
    pub fn ca_bundle(&self) -> String {
        crate::output::ca_bundle(&self.cert_pem)
    }

    /// Issue a serving certificate (serverAuth, ECDSA P-256) signed by this CA.
    pub fn issue_server(&self, spec: &ServerCertSpec) -> Result<ServerCert> {
        for name in &spec.dns_names {
            if !valid_dns_name(name) {
                return Err(Error::DnsName(name.clone()));
            }
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.common_name.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = spec
            .dns_names
            .iter()
            .map(|n| Ok(SanType::DnsName(n.clone().try_into()?)))
            .chain(
                spec.ip_addresses
                    .iter()
                    .map(|ip| Ok(SanType::IpAddress(*ip))),
            )
            .collect::<std::result::Result<_, rcgen::Error>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let (not_before, not_after) = window(spec.validity)?;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerCert {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issue a serving certificate and bundle it with this CA's certificate.
    pub fn issue_bundle(&self, spec: &ServerCertSpec) -> Result<TlsBundle> {
        let leaf = self.issue_server(spec)?;
        Ok(TlsBundle {
            ca_pem: self.cert_pem.clone(),
            cert_pem: leaf.cert_pem,
            key_pem: leaf.key_pem,
        })
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// notBefore = now - skew, notAfter = now + validity.
fn window(validity: Duration) -> Result<(time::OffsetDateTime, time::OffsetDateTime)> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::Rcgen(rcgen::Error::Time))?;
    let at = |secs: u64| {
        i64::try_from(secs)
            .ok()
            .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
            .ok_or(Error::Rcgen(rcgen::Error::Time))
    };
    let start = now.saturating_sub(CLOCK_SKEW).as_secs();
    let end = now.saturating_add(validity).as_secs();
    Ok((at(start)?, at(end)?))
}

/// DNS-1123 subdomain (what Service and namespace names produce), max 253 chars.
fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// DER of the first CERTIFICATE block of a PEM text.
pub(crate) fn first_cert_der(pem: &str) -> Result<Vec<u8>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .and_then(|c| c.ok())
        .map(|c| c.to_vec())
        .ok_or(Error::NoPem("CERTIFICATE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_sans() {
        let spec = ServerCertSpec::for_service("session-ssh-webhook", "session-ssh");
        assert_eq!(
            spec.dns_names,
            [
                "session-ssh-webhook",
                "session-ssh-webhook.session-ssh",
                "session-ssh-webhook.session-ssh.svc",
                "session-ssh-webhook.session-ssh.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn dns_name_validation() {
        assert!(valid_dns_name("a.b-c.svc"));
        for bad in ["", "A.b", "a..b", "-a", "a-", "a_b", "*.x", &"a".repeat(64)] {
            assert!(!valid_dns_name(bad), "{bad}");
        }
        let ca = Ca::generate().unwrap();
        let err = ca
            .issue_server(&ServerCertSpec::for_service("Bad_Name", "ns"))
            .unwrap_err();
        assert!(err.to_string().contains("Bad_Name"), "{err}");
    }

    #[test]
    fn validity_windows() {
        let ca = Ca::generate().unwrap();
        let info = der::cert_info(ca.cert_der()).unwrap();
        let now = SystemTime::now();
        let life = info.not_after.duration_since(now).unwrap();
        assert!(life > CA_VALIDITY - Duration::from_secs(60) && life <= CA_VALIDITY);
        assert!(info.not_before < now);
        let cn = info.subject_cn.unwrap();
        assert!(cn.starts_with(CA_COMMON_NAME), "{cn}");
        let other = der::cert_info(Ca::generate().unwrap().cert_der()).unwrap();
        assert_ne!(other.subject_cn.unwrap(), cn);

        let leaf = ca
            .issue_server(&ServerCertSpec::localhost().with_validity(Duration::from_secs(86_400)))
            .unwrap();
        let info = der::cert_info(&leaf.cert_der).unwrap();
        let life = info.not_after.duration_since(now).unwrap();
        assert!(life > Duration::from_secs(86_000) && life <= Duration::from_secs(86_400));
    }

    #[test]
    fn reload_checks_key_and_subject() {
        let a = Ca::generate().unwrap();
        let b = Ca::generate().unwrap();
        let again = Ca::from_pem(a.cert_pem(), &a.key_pem()).unwrap();
        assert_eq!(again.cert_der(), a.cert_der());
        let err = Ca::from_pem(a.cert_pem(), &b.key_pem()).unwrap_err();
        assert!(matches!(err, Error::Mismatch(_)), "{err}");
        assert!(matches!(
            Ca::from_pem("not pem", &a.key_pem()).unwrap_err(),
            Error::NoPem(_)
        ));
        // The leaf's key is not the CA's key.
        let leaf = a.issue_server(&ServerCertSpec::localhost()).unwrap();
        assert!(Ca::from_pem(a.cert_pem(), &leaf.key_pem).is_err());
    }
}
