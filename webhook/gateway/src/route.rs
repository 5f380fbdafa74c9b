//! The gateway's presets: the login names of each platform (defined once, in the contract's
//! `login`, which the webhook also writes into each session's connection information) and
//! the hint a client sees before it logs in.

use clap::ValueEnum;
use k8s_openapi::api::core::v1::Pod;
use session_ssh_contract::login::{self, Platform};

pub use session_ssh_contract::login::{MAX_LOGIN, SERVER_SEPARATOR, hub_server};

/// Platform presets (the webhook's `platform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    Jupyterhub,
    Renku,
    Kubeflow,
    Generic,
}

impl Preset {
    fn platform(self) -> Platform {
        match self {
            Preset::Jupyterhub => Platform::Jupyterhub,
            Preset::Renku => Platform::Renku,
            Preset::Kubeflow => Platform::Kubeflow,
            Preset::Generic => Platform::Generic,
        }
    }

    /// The hint every client sees before it logs in.
    pub fn hint(self) -> &'static str {
        match self {
            Preset::Jupyterhub => {
                "Log in as your hub user name (or <user>+<server> for a named server), with a key your session accepts. If you are refused, check that your server is running on the hub's home page."
            }
            Preset::Renku => {
                "Log in as your session's name, with a key your session accepts. If you are refused, check that the session is running in Renku."
            }
            Preset::Kubeflow => {
                "Log in as <notebook>.<namespace>, with a key your notebook accepts. If you are refused, check that the notebook is running."
            }
            Preset::Generic => {
                "Log in as <pod>.<namespace>, with a key your session accepts. If you are refused, check that the session is running."
            }
        }
    }
}

/// The login names that reach this pod.
pub fn names(pod: &Pod, preset: Preset) -> Vec<String> {
    login::names(pod, preset.platform())
}

/// The canonical form of a login name, or None for one that names nothing.
pub fn normalize(login: &str, preset: Preset) -> Option<String> {
    login::normalize(login, preset.platform())
}
