//! init-sshd: a static SSH server for session pods (`install`, `start`, `serve`).

pub mod agent;
pub mod cli;
pub mod envsnap;
pub mod forward;
pub mod hostkey;
pub mod install;
pub mod keys;
pub mod logfile;
pub mod profile;
pub mod serve;
pub mod server;
pub mod session;
pub mod sftp;
pub mod start;
pub mod tls;
pub mod tlscert;
pub mod user;
