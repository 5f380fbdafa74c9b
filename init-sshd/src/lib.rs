//! init-sshd: a static SSH server for session pods (`install`, `start`, `serve`).

pub mod keys;
