//! Every injected session pod, by login name, kept from watches (never an apiserver call
//! per connection). [`Index::lookup`] says where a name leads, or why nowhere.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use russh::keys::PublicKey;
use session_ssh_contract::names;

use crate::route::{self, Preset};

/// A session the gateway can connect to.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    /// The session id: the only principal its passports name.
    pub principal: String,
    /// init-sshd's plain SSH address (pod IP and the `session-ssh` port).
    pub addr: Option<SocketAddr>,
    /// Ready condition true.
    pub ready: bool,
    /// The host key the controller published (pinned).
    pub host_key: Option<PublicKey>,
    /// JupyterHub: the hub user and server name, for hub-token logins.
    pub hub: Option<(String, String)>,
}

impl Target {
    /// `namespace/pod`, for logs.
    pub fn display(&self) -> String {
        format!("{}/{}", self.namespace, self.pod)
    }

    /// The target of an injected pod (None: not ours, or no session id yet).
    pub fn of(pod: &Pod) -> Option<Target> {
        let meta = &pod.metadata;
        let principal = meta.labels.as_ref()?.get(names::SESSION_ID)?.clone();
        let port = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(names::PORT_SSH))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .unwrap_or(names::DEFAULT_SSH_PORT);
        let status = pod.status.as_ref();
        let ip = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let host_key = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(names::HOST_PUBLIC_KEY))
            .and_then(|line| PublicKey::from_openssh(line.trim()).ok());
        Some(Target {
            namespace: meta.namespace.clone().unwrap_or_default(),
            pod: meta.name.clone().unwrap_or_default(),
            principal,
            addr: ip.map(|ip| SocketAddr::new(ip, port)),
            ready,
            host_key,
            hub: route::hub_server(pod),
        })
    }
}

/// Where a login name leads.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// One ready session.
    Session(Target),
    /// No session has this name (or the name is malformed).
    Unknown,
    /// The session exists but is not ready, has no address or no published host key.
    NotReady(Target, &'static str),
    /// More than one session claims the name: refused, never a random pick.
    Ambiguous(Vec<String>),
}

#[derive(Default)]
struct Inner {
    /// uid -> (watch number, names, target)
    pods: HashMap<String, (usize, Vec<String>, Target)>,
    by_name: HashMap<String, BTreeSet<String>>,
    /// Pods of a watch that is relisting, swapped in at its InitDone.
    relisting: HashMap<usize, Vec<Pod>>,
}

/// The index, shared by every connection.
#[derive(Clone)]
pub struct Index {
    preset: Preset,
    inner: Arc<RwLock<Inner>>,
}

impl Index {
    pub fn new(preset: Preset) -> Index {
        Index {
            preset,
            inner: Arc::default(),
        }
    }

    pub fn preset(&self) -> Preset {
        self.preset
    }

    /// Where `login` leads now.
    pub fn lookup(&self, login: &str) -> Route {
        let Some(name) = route::normalize(login, self.preset) else {
            return Route::Unknown;
        };
        let Ok(inner) = self.inner.read() else {
            return Route::Unknown;
        };
        let uids = match inner.by_name.get(&name) {
            Some(u) if !u.is_empty() => u,
            _ => return Route::Unknown,
        };
        let targets: Vec<&Target> = uids
            .iter()
            .filter_map(|u| inner.pods.get(u))
            .map(|p| &p.2)
            .collect();
        match targets.as_slice() {
            [t] if !t.ready => Route::NotReady((*t).clone(), "not ready"),
            [t] if t.addr.is_none() => Route::NotReady((*t).clone(), "no pod IP"),
            [t] if t.host_key.is_none() => Route::NotReady((*t).clone(), "no published host key"),
            [t] => Route::Session((*t).clone()),
            [] => Route::Unknown,
            many => {
                crate::metrics::get()
                    .ambiguous_names
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Route::Ambiguous(many.iter().map(|t| t.display()).collect())
            }
        }
    }

    /// Number of indexed pods.
    pub fn len(&self) -> usize {
        self.inner.read().map(|i| i.pods.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Apply one watch event of watch number `watch`.
    pub fn apply(&self, watch: usize, event: Event<Pod>) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        match event {
            Event::Apply(pod) => inner.upsert(watch, &pod, self.preset),
            Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    inner.remove(uid);
                }
            }
            Event::Init => {
                inner.relisting.insert(watch, Vec::new());
            }
            Event::InitApply(pod) => inner.relisting.entry(watch).or_default().push(pod),
            Event::InitDone => {
                let fresh = inner.relisting.remove(&watch).unwrap_or_default();
                let stale: Vec<String> = inner
                    .pods
                    .iter()
                    .filter(|(_, p)| p.0 == watch)
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in stale {
                    inner.remove(&uid);
                }
                for pod in &fresh {
                    inner.upsert(watch, pod, self.preset);
                }
                crate::metrics::get()
                    .synced
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Watch the session pods of `namespaces` (all when empty) forever, with back-off.
    pub async fn run(self, client: kube::Client, namespaces: Vec<String>) {
        let apis: Vec<Api<Pod>> = if namespaces.is_empty() {
            vec![Api::all(client)]
        } else {
            namespaces
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect()
        };
        let watches = apis.into_iter().enumerate().map(|(n, api)| {
            let index = self.clone();
            async move {
                let cfg = watcher::Config::default().labels(names::SESSION_ID);
                let mut events = watcher::watcher(api, cfg).default_backoff().boxed();
                while let Some(ev) = events.next().await {
                    match ev {
                        Ok(ev) => index.apply(n, ev),
                        Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                    }
                }
            }
        });
        futures::future::join_all(watches).await;
        tracing::error!("pod watches ended");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Inner {
    fn upsert(&mut self, watch: usize, pod: &Pod, preset: Preset) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        self.remove(&uid);
        let Some(target) = Target::of(pod) else {
            return;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return;
        }
        let names = route::names(pod, preset);
        for n in &names {
            self.by_name
                .entry(n.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.pods.insert(uid, (watch, names, target));
    }

    fn remove(&mut self, uid: &str) {
        if let Some((_, names, _)) = self.pods.remove(uid) {
            for n in names {
                if let Some(set) = self.by_name.get_mut(&n) {
                    set.remove(uid);
                    if set.is_empty() {
                        self.by_name.remove(&n);
                    }
                }
            }
        }
    }
}
