//! The contract between the cluster side (the webhook, later the gateway) and the in-pod side
//! (init-sshd). Every name one side writes and the other reads is defined here once:
//!
//! - [`names`]: annotations, labels, volumes, containers, ports, and the files in the shared
//!   directory;
//! - [`argv`]: the `install` and `start` command lines the webhook writes into the pod spec,
//!   and the flag names init-sshd parses them with;
//! - [`wildcard`]: the `*`/`?` matcher both sides use for key-file globs;
//! - `pod` (feature `k8s`): small readers over a Pod ("is it injected", "does it mount this
//!   Secret");
//! - `login` (feature `k8s`): the SSH login names that lead to a session, per platform (the
//!   gateway routes by them, the webhook writes them into the connection information);
//! - `keys` (feature `keys`): authorized_keys lines, their options and user certificates,
//!   and the decision what a key may do (init-sshd now, the gateway next);
//! - `algorithms` (feature `ssh`): the SSH algorithms every endpoint of ours offers;
//! - `grace` (features `ssh` and `net`): the login grace time of a russh server session;
//! - `metrics` (feature `metrics`): Prometheus text and the `/metrics` responder of both SSH
//!   servers;
//! - `tcp` (feature `net`): the socket wrapper both SSH servers accept connections with;
//! - `startups` (feature `net`): the table of connections not yet logged in, where a new
//!   one evicts the oldest.
//!
//! No dependency beyond the optional ones per feature: init-sshd links it into a static
//! binary that must stay small.

#[cfg(feature = "ssh")]
pub mod algorithms;
pub mod argv;
pub mod civil;
#[cfg(all(feature = "ssh", feature = "net"))]
pub mod grace;
#[cfg(feature = "keys")]
pub mod keys;
#[cfg(feature = "k8s")]
pub mod login;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod names;
#[cfg(feature = "k8s")]
pub mod pod;
#[cfg(feature = "net")]
pub mod startups;
#[cfg(feature = "net")]
pub mod tcp;
pub mod wildcard;
