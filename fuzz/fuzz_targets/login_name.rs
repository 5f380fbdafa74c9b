//! Any login name, for every preset: the parser never panics, is idempotent, keeps names
//! within bounds; and a session whose hub user (or pod) carries arbitrary characters is
//! found under exactly the name its preset gives it, and under no other.
#![no_main]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::watcher::Event;
use libfuzzer_sys::fuzz_target;
use session_ssh_gateway::index::{Index, Route};
use session_ssh_gateway::route::{self, Preset};

const PRESETS: [Preset; 4] = [
    Preset::Jupyterhub,
    Preset::Renku,
    Preset::Kubeflow,
    Preset::Generic,
];

fn pod(user: &str, server: &str) -> Pod {
    let annotations = BTreeMap::from([
        ("hub.jupyter.org/username".to_owned(), user.to_owned()),
        ("hub.jupyter.org/servername".to_owned(), server.to_owned()),
        (
            "session-ssh.io/host-public-key".to_owned(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
                .to_owned(),
        ),
    ]);
    let labels = BTreeMap::from([
        (
            "session-ssh.io/session-id".to_owned(),
            "0123456789abcdef".to_owned(),
        ),
        ("notebook-name".to_owned(), user.to_owned()),
    ]);
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{user}-0")),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            annotations: Some(annotations),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(PodSpec::default()),
        status: Some(PodStatus {
            pod_ip: Some("10.0.0.1".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (user, rest) = text.split_once('\u{0}').unwrap_or((&text, ""));
    let (server, login) = rest.split_once('\u{0}').unwrap_or((rest, ""));
    for preset in PRESETS {
        if let Some(n) = route::normalize(login, preset) {
            assert!(!n.is_empty());
            assert_eq!(
                route::normalize(&n, preset).as_deref(),
                Some(n.as_str()),
                "idempotent"
            );
        }
        let p = pod(user, server);
        let names = route::names(&p, preset);
        let index = Index::new(preset);
        index.apply(0, Event::Apply(p));
        for n in &names {
            assert!(
                matches!(index.lookup(n), Route::Session(_)),
                "{preset:?}: the pod's own name {n:?} must reach it"
            );
        }
        // Any other login reaches it only when it normalizes to one of its names.
        if let Route::Session(_) = index.lookup(login) {
            let n = route::normalize(login, preset).expect("a found login normalizes");
            assert!(
                names.contains(&n),
                "{preset:?}: {login:?} reached a pod named {names:?}"
            );
        }
    }
});
