//! CA and serving certificates for the session-ssh webhook (rcgen on ring).
//!
//! ```
//! use session_ssh_certs::{Ca, ServerCertSpec};
//! let ca = Ca::generate()?;
//! let bundle = ca.issue_bundle(&ServerCertSpec::for_service("session-ssh-webhook", "session-ssh"))?;
//! assert!(bundle.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
//! let _ca_bundle = bundle.ca_bundle();
//! # Ok::<(), session_ssh_certs::ca::Error>(())
//! ```

pub mod ca;
pub mod der;
pub mod output;

pub use ca::{CA_VALIDITY, Ca, CaSpec, SERVER_VALIDITY, ServerCert, ServerCertSpec};
pub use der::{CertInfo, cert_info};
pub use output::{CA_FILE, CERT_FILE, KEY_FILE, TlsBundle, ca_bundle, expires_within, not_after};
