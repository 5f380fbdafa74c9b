//! The kinds of SSH channel the server runs, one module each. The handler
//! (`super::handler`) decides whether a channel may open and hands it here; each worker runs
//! in tasks of its own, so the connection loop never waits on one.
//!
//! - `exec`: a "session" channel in SSH's sense (shell or command, with or without a
//!   terminal); unrelated to the notebook session the pod is;
//! - `sftp`: the `sftp` subsystem;
//! - `forward`: `-L`/`-D` (direct-tcpip), streamlocal, and `-R` listeners;
//! - `agent`: agent forwarding (`-A`);
//! - `detach`: terminal login shells that survive a dropped connection, and `attach`.

pub mod agent;
pub mod detach;
pub mod exec;
pub mod forward;
pub mod sftp;
