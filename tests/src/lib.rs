//! Shared harness for the end-to-end tests: locating the built binaries,
//! running real peers (OpenSSH client, init-sshd, kube-apiserver) in temp dirs.

pub mod cluster;
pub mod gateway;
pub mod gobuilt;
pub mod hub;
pub mod injected;
pub mod podrun;
pub mod reaper;
pub mod sni;
pub mod sshd;

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;

/// The workspace root (tests run with the crate dir as cwd).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// `preferred` if it is free on 127.0.0.1, else a free port the kernel picks.
pub fn free_port(preferred: u16) -> u16 {
    if preferred != 0 && TcpListener::bind((Ipv4Addr::LOCALHOST, preferred)).is_ok() {
        return preferred;
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(preferred)
}
