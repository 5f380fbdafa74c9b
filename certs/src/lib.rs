//! CA and serving certificates.
