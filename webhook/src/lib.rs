//! session-ssh-webhook: mutating admission webhook, offline `inject`, config presets.

pub mod cli;
pub mod config;
pub mod inject;
pub mod keys;
pub mod naming;
pub mod patch;
