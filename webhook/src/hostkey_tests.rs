use super::*;
use crate::config::{Config, Platform};
use crate::naming;
use serde_json::json;

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn hub(user: &str, server: &str) -> Pod {
    pod(json!({ "metadata": { "name": "jupyter-x", "labels": {
        "component": "singleuser-server",
        "hub.jupyter.org/username": user,
        "hub.jupyter.org/servername": server,
    }}}))
}

fn cfg(p: Platform) -> HostKeys {
    Config::preset(p).host_keys
}

#[test]
fn jupyterhub_identity_is_user_and_server() {
    let c = cfg(Platform::Jupyterhub);
    let a = secret_ref(&hub("alice", ""), &c).unwrap();
    // Pod name does not matter: a restarted server (new pod) keeps its key.
    let mut again = hub("alice", "");
    again.metadata.name = Some("other-name".into());
    assert_eq!(secret_ref(&again, &c).unwrap(), a);
    assert!(
        a.name.starts_with("session-ssh-hostkey-alice-"),
        "{}",
        a.name
    );
    assert_eq!(
        a.identity.display,
        "hub.jupyter.org/username=alice,hub.jupyter.org/servername="
    );
    let names: Vec<String> = [
        hub("alice", "gpu"),
        hub("bob", ""),
        hub("alice-gpu", ""),
        hub("alice", "-gpu"),
        hub("Alice", "gpu"),
    ]
    .iter()
    .map(|p| secret_ref(p, &c).unwrap().name)
    .collect();
    let mut all = names.clone();
    all.push(a.name.clone());
    let distinct: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "{all:?}");
}

#[test]
fn names_are_valid_and_bounded() {
    let c = cfg(Platform::Jupyterhub);
    for (u, s) in [
        ("a".repeat(63).as_str(), "b".repeat(63).as_str()),
        ("..--__", ""),
        ("UPPER.Case_x", "z"),
        ("", ""),
    ] {
        let n = secret_ref(&hub(u, s), &c).unwrap().name;
        assert!(n.len() <= 63, "{n}");
        assert!(naming::is_dns_label(&n), "{n}");
    }
    assert_eq!(
        secret_ref(&hub("..--__", ""), &c).unwrap().name.len(),
        names::HOST_KEY_SECRET_PREFIX.len() + HASH_LEN
    );
}

#[test]
fn renku_identity_is_user_and_project() {
    let c = cfg(Platform::Renku);
    let p = |user: &str, project: &str| {
        pod(json!({ "metadata": { "labels": {
            "renku.io/safe-username": user, "renku.io/projectName": project,
        }}}))
    };
    let a = secret_ref(&p("u1", "flights"), &c).unwrap();
    assert_eq!(a, secret_ref(&p("u1", "flights"), &c).unwrap());
    assert_ne!(a.name, secret_ref(&p("u1", "other"), &c).unwrap().name);
    assert_ne!(a.name, secret_ref(&p("u2", "flights"), &c).unwrap().name);
    // Missing project label, no owner: no stable identity.
    assert_eq!(
        secret_ref(
            &pod(json!({ "metadata": { "labels": { "renku.io/safe-username": "u1" }}})),
            &c
        ),
        None
    );
}

#[test]
fn generic_uses_configured_label_else_controller_owner() {
    let owned = |kind: &str, name: &str, controller: bool| {
        pod(
            json!({ "metadata": { "name": format!("{name}-0"), "ownerReferences": [
                { "apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u", "controller": controller }
            ]}}),
        )
    };
    let mut c = cfg(Platform::Generic);
    let sts = secret_ref(&owned("StatefulSet", "dev", true), &c).unwrap();
    assert_eq!(sts.identity.display, "owner:StatefulSet/dev,pod:dev-0");
    assert!(sts.name.starts_with("session-ssh-hostkey-dev-0-"));
    assert_eq!(
        sts,
        secret_ref(&owned("StatefulSet", "dev", true), &c).unwrap()
    );
    assert_ne!(
        sts.name,
        secret_ref(&owned("ReplicaSet", "dev", true), &c)
            .unwrap()
            .name
    );
    // Two replicas of one owner never share a key.
    let mut second = owned("StatefulSet", "dev", true);
    second.metadata.name = Some("dev-1".into());
    assert_ne!(sts.name, secret_ref(&second, &c).unwrap().name);
    // A generateName pod (ReplicaSet, Job replicas) has no stable name: no identity.
    let mut generated = owned("ReplicaSet", "dev", true);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("dev-".into());
    assert_eq!(secret_ref(&generated, &c), None);
    // Not a controller: no identity. Bare pod: none either.
    assert_eq!(secret_ref(&owned("StatefulSet", "dev", false), &c), None);
    assert_eq!(
        secret_ref(&pod(json!({"metadata": {"name": "p"}})), &c),
        None
    );

    c.identity_labels = vec!["example.org/session".into()];
    let labelled = pod(json!({ "metadata": { "labels": { "example.org/session": "s1" }}}));
    let r = secret_ref(&labelled, &c).unwrap();
    assert_eq!(r.identity.display, "example.org/session=s1");
    c.owner_fallback = false;
    assert_eq!(secret_ref(&owned("StatefulSet", "dev", true), &c), None);
    c.enabled = false;
    assert_eq!(secret_ref(&labelled, &c), None);
}

#[test]
fn secret_holds_a_fresh_openssh_ed25519_key() {
    let c = cfg(Platform::Jupyterhub);
    let r = secret_ref(&hub("alice", ""), &c).unwrap();
    let a = secret(&r, "ns1").unwrap();
    let b = secret(&r, "ns1").unwrap();
    assert_eq!(a.metadata.name.as_deref(), Some(r.name.as_str()));
    assert_eq!(a.type_.as_deref(), Some("Opaque"));
    let key = |s: &Secret| s.data.as_ref().unwrap()[names::file::HOST_KEY].0.clone();
    assert_ne!(key(&a), key(&b), "every Secret gets its own key");
    let text = String::from_utf8(key(&a)).unwrap();
    let parsed = PrivateKey::from_openssh(&text).unwrap();
    assert_eq!(parsed.algorithm(), ssh_key::Algorithm::Ed25519);
    let public = &a.metadata.annotations.as_ref().unwrap()[names::HOST_KEY_PUBLIC];
    assert_eq!(*public, parsed.public_key().to_openssh().unwrap());
    let labels = a.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[names::HOST_KEY], "true");
    assert!(naming::is_label_value(&labels[names::HOST_KEY_IDENTITY]));
}

#[test]
fn known_hosts_lines() {
    let (_, public) = generate().unwrap();
    let blob = public.split_whitespace().nth(1).unwrap();
    assert_eq!(
        known_hosts_line("a.ns.svc", 22, &format!("{public} comment here")).unwrap(),
        format!("a.ns.svc ssh-ed25519 {blob}")
    );
    assert_eq!(
        known_hosts_line("10.0.0.1", 30022, &public).unwrap(),
        format!("[10.0.0.1]:30022 ssh-ed25519 {blob}")
    );
    assert_eq!(
        known_hosts_line_sni("alice.ssh.example.org", &public).unwrap(),
        format!("alice.ssh.example.org,[alice.ssh.example.org]:443 ssh-ed25519 {blob}")
    );
    assert_eq!(known_hosts_line("h", 22, "ssh-ed25519 notbase64"), None);
    assert_eq!(known_hosts_line("h", 22, ""), None);
}

#[test]
fn config_section_defaults_and_errors() {
    let c = Config::from_yaml("platform: renku\n", "t.yaml").unwrap();
    assert!(c.host_keys.enabled);
    assert_eq!(c.host_keys.delete_unused_after_seconds, Some(2_592_000));
    let e = Config::from_yaml("hostKeys:\n  deleteUnusedAfterSeconds: 0\n", "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("hostKeys.deleteUnusedAfterSeconds"), "{e}");
    let e = Config::from_yaml("hostKeys:\n  identityLabels: ['bad key']\n", "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("hostKeys.identityLabels[0]"), "{e}");
    let e = Config::from_yaml("hostKeys:\n  identityLabel: x\n", "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("identityLabel"), "{e}");
    let c = Config::from_yaml("hostKeys:\n  deleteUnusedAfterSeconds: null\n", "t.yaml").unwrap();
    assert_eq!(c.host_keys.delete_unused_after_seconds, None);
}
