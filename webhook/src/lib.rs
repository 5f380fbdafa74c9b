//! session-ssh-webhook: mutating admission webhook, offline `inject`, config presets.

pub mod admission;
pub mod cli;
pub mod config;
pub mod controller;
pub mod hostca;
pub mod hostkey;
pub mod hostname;
pub mod inject;
pub mod keys;
pub mod metrics;
pub mod naming;
pub mod patch;
pub mod prepull;
pub mod routes;
pub mod selfcert;
pub mod serve;
pub mod tls;
