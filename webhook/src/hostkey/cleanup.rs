//! Deletes host-key Secrets no session has mounted for `hostKeys.deleteUnusedAfterSeconds`.
//!
//! "Last used" lives in memory (the webhook may not write Secrets it does not own the
//! data of, and needs no extra verb): a Secret counts as used at its creation, at this
//! process's start and whenever a pod mounts it. A restart therefore only delays
//! deletion, never hastens it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use kube::{Client, ResourceExt};
use tracing::{debug, info, warn};

use session_ssh_contract::names::{self, SESSION_ID};
use session_ssh_contract::pod::secret_volumes;

use crate::config::Config;

/// Start the sweeper when the config asks for one; it never ends the server.
pub fn spawn(config: Arc<Config>, client: Client) -> Option<tokio::task::JoinHandle<()>> {
    let ttl = Duration::from_secs(config.host_keys.delete_unused_after_seconds?);
    if !config.host_keys.enabled {
        return None;
    }
    // Often enough to be near the TTL, rarely enough to cost nothing.
    let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    info!(
        ttl_s = ttl.as_secs(),
        every_s = every.as_secs(),
        "host-key cleanup started"
    );
    Some(tokio::spawn(async move {
        let mut sweeper = Sweeper {
            client,
            ttl,
            started: SystemTime::now(),
            last_used: BTreeMap::new(),
            namespaces: BTreeSet::new(),
        };
        loop {
            tokio::time::sleep(every).await;
            sweeper.sweep().await;
        }
    }))
}

struct Sweeper {
    client: Client,
    ttl: Duration,
    started: SystemTime,
    /// (namespace, Secret uid) → when a pod last mounted it.
    last_used: BTreeMap<(String, String), SystemTime>,
    /// Namespaces where sessions were seen (swept when a cluster-wide list is forbidden).
    namespaces: BTreeSet<String>,
}

impl Sweeper {
    async fn sweep(&mut self) {
        let now = SystemTime::now();
        let Some(mounted) = self.mounted().await else {
            return;
        };
        let mut seen = BTreeSet::new();
        for s in self.host_key_secrets().await {
            let (Some(ns), Some(uid)) = (s.namespace(), s.uid()) else {
                continue;
            };
            let name = s.name_any();
            let key = (ns.clone(), uid.clone());
            seen.insert(key.clone());
            if mounted.contains(&(ns.clone(), name.clone())) {
                self.last_used.insert(key, now);
                continue;
            }
            let created = s
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| SystemTime::from(t.0))
                .unwrap_or(now);
            let last = self
                .last_used
                .get(&key)
                .copied()
                .unwrap_or(created)
                .max(self.started)
                .max(created);
            let unused = now.duration_since(last).unwrap_or_default();
            if unused >= self.ttl && self.delete(&ns, &name, &uid, unused).await {
                self.last_used.remove(&key);
            }
        }
        // Forget Secrets that are gone.
        self.last_used.retain(|k, _| seen.contains(k));
    }

    /// (namespace, Secret name) of every Secret a session pod has as a volume; None when
    /// pods cannot be listed (then nothing may be deleted).
    async fn mounted(&mut self) -> Option<BTreeSet<(String, String)>> {
        let pods = match Api::<Pod>::all(self.client.clone())
            .list(&ListParams::default().labels(SESSION_ID))
            .await
        {
            Ok(l) => l.items,
            Err(err) => {
                warn!(error = %err, "host-key cleanup: cannot list pods; skipped");
                return None;
            }
        };
        let mut mounted = BTreeSet::new();
        for p in &pods {
            let Some(ns) = p.namespace() else { continue };
            self.namespaces.insert(ns.clone());
            for name in secret_volumes(p) {
                mounted.insert((ns.clone(), name.to_owned()));
            }
        }
        Some(mounted)
    }

    /// Every host-key Secret: cluster-wide when allowed, else per namespace seen (host-key
    /// rights are bound per session namespace; examples/kubeflow binds them cluster-wide).
    async fn host_key_secrets(&self) -> Vec<Secret> {
        let lp = ListParams::default().labels(&format!("{}=true", names::HOST_KEY));
        if let Ok(l) = Api::<Secret>::all(self.client.clone()).list(&lp).await {
            return l.items;
        }
        let mut all = Vec::new();
        for ns in &self.namespaces {
            match Api::<Secret>::namespaced(self.client.clone(), ns)
                .list(&lp)
                .await
            {
                Ok(l) => all.extend(l.items),
                Err(err) => debug!(%ns, error = %err, "host-key Secrets not listable"),
            }
        }
        all
    }

    /// Delete one unused Secret; the uid precondition never deletes one re-made since the
    /// list. True when it is gone.
    async fn delete(&self, ns: &str, name: &str, uid: &str, unused: Duration) -> bool {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match Api::<Secret>::namespaced(self.client.clone(), ns)
            .delete(name, &dp)
            .await
        {
            Ok(_) => {
                info!(%ns, secret = %name, unused_s = unused.as_secs(), "unused host-key Secret deleted");
                true
            }
            Err(err) => {
                warn!(%ns, secret = %name, error = %err, "unused host-key Secret not deleted");
                false
            }
        }
    }
}
