//! init-sshd: a static SSH server for session pods (`install`, `start`, `serve`).

pub mod cli;
pub mod hostkey;
pub mod info;
pub mod install;
pub mod logfile;
pub mod serve;
pub mod start;
pub mod tlscert;
pub mod user;
