//! The defaults of each platform (`platform:` in the config file): what a config file that
//! says nothing else gets. Values only, no logic.

use std::collections::BTreeMap;

use session_ssh_contract::names;

use super::{
    Config, GatewayRoute, HostCa, HostKeys, Ingress, IngressMode, InitContainer, Keys, NginxRoute,
    Platform, Ports, PullPolicy, Quantities, Resources, Selector, SessionContainer, TraefikRoute,
};

impl Config {
    /// The defaults of one platform.
    pub fn preset(platform: Platform) -> Config {
        Config {
            platform,
            selector: selector(platform),
            session_container: session_container(platform),
            init_container: init_container(),
            mount_path: names::DEFAULT_DIR.to_owned(),
            volume_size_limit: None,
            info_file: None,
            ports: Ports {
                ssh: names::DEFAULT_SSH_PORT,
                ssh_tls: Some(names::DEFAULT_SSH_TLS_PORT),
                metrics: Some(names::DEFAULT_METRICS_PORT),
            },
            keys: keys(platform),
            ingress: ingress(),
            host_keys: host_keys(platform),
            gateway: Default::default(),
            server: Default::default(),
        }
    }
}

fn selector(platform: Platform) -> Selector {
    let singleuser = BTreeMap::from([("component".to_owned(), "singleuser-server".to_owned())]);
    let (match_labels, has_labels, require_opt_in) = match platform {
        Platform::Jupyterhub => (singleuser, vec![], false),
        Platform::Renku => (singleuser, vec!["renku.io/safe-username".to_owned()], false),
        Platform::Kubeflow => (BTreeMap::new(), vec!["notebook-name".to_owned()], false),
        Platform::Generic => (BTreeMap::new(), vec![], true),
    };
    Selector {
        match_labels,
        has_labels,
        require_opt_in,
    }
}

fn session_container(platform: Platform) -> SessionContainer {
    let (name_from_label, names) = match platform {
        Platform::Jupyterhub => (None, vec!["notebook".to_owned()]),
        Platform::Renku => (None, vec!["jupyter-server".to_owned()]),
        Platform::Kubeflow => (Some("notebook-name".to_owned()), vec![]),
        Platform::Generic => (None, vec![]),
    };
    SessionContainer {
        name_from_label,
        names,
        fallback_to_first: true,
    }
}

fn init_container() -> InitContainer {
    InitContainer {
        image: "ghcr.io/session-ssh/init-sshd:0.1.0".to_owned(),
        image_pull_policy: PullPolicy::IfNotPresent,
        binary: "/init-sshd".to_owned(),
        run_as_user: None,
        run_as_group: None,
        resources: Resources {
            requests: Quantities {
                cpu: Some("10m".to_owned()),
                memory: Some("16Mi".to_owned()),
            },
            limits: Quantities {
                cpu: Some("500m".to_owned()),
                memory: Some("64Mi".to_owned()),
            },
        },
    }
}

fn keys(platform: Platform) -> Keys {
    let files = match platform {
        Platform::Jupyterhub | Platform::Kubeflow => {
            vec!["/home/jovyan/.ssh/authorized_keys".to_owned()]
        }
        Platform::Renku => vec!["/home/jovyan/work/*/.ssh/authorized_keys".to_owned()],
        Platform::Generic => vec![],
    };
    let user_secret = match platform {
        Platform::Jupyterhub => Some("ssh-keys-{hub.jupyter.org/username}".to_owned()),
        _ => None,
    };
    Keys {
        files,
        user_secret,
        annotation: Some(names::AUTHORIZED_KEYS.to_owned()),
        extra_secrets: vec![],
    }
}

fn ingress() -> Ingress {
    Ingress {
        mode: IngressMode::None,
        host_template: None,
        gateway: GatewayRoute {
            parent_refs: vec![],
        },
        traefik: TraefikRoute {
            entry_points: vec!["websecure".to_owned()],
        },
        ingress_nginx: NginxRoute {
            class_name: Some("nginx".to_owned()),
        },
    }
}

fn host_keys(platform: Platform) -> HostKeys {
    let identity_labels: &[&str] = match platform {
        Platform::Jupyterhub => &["hub.jupyter.org/username", "hub.jupyter.org/servername"],
        Platform::Renku => &["renku.io/safe-username", "renku.io/projectName"],
        Platform::Kubeflow => &["notebook-name"],
        Platform::Generic => &[],
    };
    HostKeys {
        enabled: true,
        identity_labels: identity_labels.iter().map(|s| (*s).to_owned()).collect(),
        owner_fallback: true,
        delete_unused_after_seconds: Some(30 * 24 * 3600),
        ca: HostCa {
            secret_name: None,
            namespace: None,
            validity_seconds: 30 * 24 * 3600,
            host_pattern: None,
        },
    }
}
