use super::*;
use crate::config::Platform;
use crate::naming;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{Value, json};
use session_ssh_contract::names::{
    CONTAINER, INIT_CONTAINER, INJECT, PORT_SSH, PORT_SSH_TLS, VOLUME,
};

/// Builder fixtures: pods as the platforms make them, reduced to what matters here.
fn pod(v: Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn jupyterhub(user: &str) -> Pod {
    pod(json!({
        "metadata": {
            "name": format!("jupyter-{user}"),
            "labels": { "component": "singleuser-server", "hub.jupyter.org/username": user },
            "annotations": { "hub.jupyter.org/username": user },
        },
        "spec": {
            "securityContext": { "fsGroup": 100 },
            "containers": [{
                "name": "notebook", "image": "quay.io/jupyter/base-notebook:latest",
                "ports": [{ "name": "notebook-port", "containerPort": 8888 }],
                "securityContext": { "runAsUser": 1000, "runAsGroup": 100 },
                "volumeMounts": [{ "name": "volume-alice", "mountPath": "/home/jovyan" }],
            }],
            "initContainers": [{ "name": "block-cloud-metadata", "image": "alpine" }],
            "volumes": [{ "name": "volume-alice", "persistentVolumeClaim": { "claimName": "claim-alice" } }],
        },
    }))
}

fn cfg(p: Platform) -> Config {
    Config::preset(p)
}

fn apply(p: &Pod, m: &Mutation) -> Pod {
    let mut doc = serde_json::to_value(p).unwrap();
    json_patch::patch(&mut doc, &m.patch().0).unwrap();
    serde_json::from_value(doc).unwrap()
}

fn expect_patch(m: &Mutation) -> &Patch {
    match m {
        Mutation::Patch { patch, .. } => patch,
        Mutation::Skip {
            reason, warnings, ..
        } => panic!("skipped: {reason:?} {warnings:?}"),
    }
}

fn reason(m: &Mutation) -> SkipReason {
    match m {
        Mutation::Skip { reason, .. } => *reason,
        Mutation::Patch { .. } => panic!("not skipped"),
    }
}

fn init(p: &Pod) -> &Container {
    p.spec
        .as_ref()
        .unwrap()
        .init_containers
        .as_ref()
        .unwrap()
        .last()
        .unwrap()
}

fn ann<'a>(p: &'a Pod, k: &str) -> Option<&'a str> {
    p.metadata.annotations.as_ref()?.get(k).map(String::as_str)
}

#[test]
fn jupyterhub_pod_gets_ssh() {
    let original = jupyterhub("alice");
    let m = mutate(&original, &cfg(Platform::Jupyterhub));
    expect_patch(&m);
    let p = apply(&original, &m);
    let spec = p.spec.as_ref().unwrap();

    let ic = init(&p);
    assert_eq!(ic.name, INIT_CONTAINER);
    assert_eq!(
        spec.init_containers.as_ref().unwrap()[0].name,
        "block-cloud-metadata"
    );
    assert_eq!(
        ic.command.as_ref().unwrap(),
        &[
            "/init-sshd",
            "install",
            "--dir",
            "/opt/session-ssh",
            "--session-uid",
            "1000",
            "--keys",
            "/home/jovyan/.ssh/authorized_keys",
            "--keys-dir",
            "/session-ssh-keys/user",
        ]
    );
    let sc = ic.security_context.as_ref().unwrap();
    assert_eq!((sc.run_as_user, sc.run_as_group), (Some(1000), Some(100)));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
        &["ALL"]
    );
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    // The home volume is visible read-only at the same path.
    let home = ic
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "volume-alice")
        .unwrap();
    assert_eq!(
        (home.mount_path.as_str(), home.read_only),
        ("/home/jovyan", Some(true))
    );

    let vols: Vec<_> = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(vols, ["volume-alice", VOLUME, "session-ssh-user-keys"]);
    let secret = spec.volumes.as_ref().unwrap()[2].secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("ssh-keys-alice"));
    assert_eq!(secret.optional, Some(true));

    let c = &spec.containers[0];
    let ports: Vec<_> = c
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports[1..],
        [
            (PORT_SSH.to_owned(), 2222),
            (PORT_SSH_TLS.to_owned(), 2443),
            (names::PORT_METRICS.to_owned(), 9122)
        ]
    );
    assert!(
        c.volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.name == VOLUME && m.mount_path == "/opt/session-ssh")
    );
    let hook = c.lifecycle.as_ref().unwrap().post_start.as_ref().unwrap();
    assert_eq!(
        hook.exec.as_ref().unwrap().command.as_ref().unwrap(),
        &[
            "/opt/session-ssh/bin/init-sshd",
            "start",
            "--dir",
            "/opt/session-ssh",
            "--audit-log",
            "/proc/1/fd/1",
            "--metrics-listen",
            "0.0.0.0:9122"
        ]
    );
    assert_eq!(ann(&p, STATUS), Some("injected"));
    assert_eq!(ann(&p, CONTAINER), Some("notebook"));
    assert_eq!(
        p.metadata.labels.as_ref().unwrap().get(SESSION_ID),
        Some(&naming::session_id_for_name("jupyter-alice"))
    );

    // Idempotent: a second pass changes nothing.
    let again = mutate(&p, &cfg(Platform::Jupyterhub));
    assert_eq!(reason(&again), SkipReason::AlreadyInjected);
    assert!(again.patch().0.is_empty());
}

#[test]
fn selection_and_opt_in_out() {
    let jh = cfg(Platform::Jupyterhub);
    let mut p = jupyterhub("alice");
    p.metadata.labels.as_mut().unwrap().remove("component");
    assert_eq!(reason(&mutate(&p, &jh)), SkipReason::NotSelected);
    p.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(INJECT.into(), "true".into());
    expect_patch(&mutate(&p, &jh));

    let mut q = jupyterhub("bob");
    q.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(INJECT.into(), "false".into());
    let m = mutate(&q, &jh);
    assert_eq!(reason(&m), SkipReason::OptedOut);
    assert!(m.patch().0.is_empty() && m.warnings().is_empty());
    // The annotation wins over the label.
    q.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(INJECT.into(), "true".into());
    expect_patch(&mutate(&q, &jh));

    // generic requires opt-in; a bad value is a warning and counts as unset.
    let g = cfg(Platform::Generic);
    let mut r = jupyterhub("carol");
    assert_eq!(reason(&mutate(&r, &g)), SkipReason::NotSelected);
    r.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(INJECT.into(), "yes".into());
    let m = mutate(&r, &g);
    assert_eq!(reason(&m), SkipReason::NotSelected);
}

#[test]
fn bare_pod_gets_parent_objects_created() {
    let p = pod(json!({
        "metadata": { "generateName": "session-" },
        "spec": { "containers": [{ "name": "main", "image": "busybox" }] },
    }));
    let mut c = cfg(Platform::Generic);
    c.selector.require_opt_in = false;
    let m = mutate(&p, &c);
    let ops = serde_json::to_value(expect_patch(&m)).unwrap();
    let paths: Vec<_> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "/metadata/annotations",
            "/metadata/labels",
            "/spec/volumes",
            "/spec/initContainers",
            "/spec/containers/0/volumeMounts",
            "/spec/containers/0/ports",
            "/spec/containers/0/lifecycle",
        ]
    );
    let out = apply(&p, &m);
    let id = out
        .metadata
        .labels
        .as_ref()
        .unwrap()
        .get(SESSION_ID)
        .unwrap();
    assert!(naming::is_label_value(id) && id.len() == 16);
    // No UID stated anywhere: the image's non-root user.
    let sc = init(&out).security_context.as_ref().unwrap();
    assert_eq!((sc.run_as_user, sc.run_as_group), (None, None));
    // generateName pods get distinct ids.
    let other = apply(&p, &mutate(&p, &c));
    assert_ne!(out.metadata.labels, other.metadata.labels);
}

#[test]
fn json_pointer_escapes_slash_and_tilde() {
    assert_eq!(
        pointer(&["metadata", "annotations", "a/b~c"]).as_str(),
        "/metadata/annotations/a~1b~0c"
    );
    let ops = serde_json::to_string(&expect_patch(&mutate(
        &jupyterhub("a"),
        &cfg(Platform::Jupyterhub),
    )))
    .unwrap();
    assert!(
        ops.contains("/metadata/annotations/session-ssh.io~1status"),
        "{ops}"
    );
    assert!(
        ops.contains("/metadata/labels/session-ssh.io~1session-id"),
        "{ops}"
    );
}

#[test]
fn existing_exec_hook_is_chained() {
    let mut p = jupyterhub("alice");
    p.spec.as_mut().unwrap().containers[0].lifecycle = Some(serde_json::from_value(json!({
        "postStart": { "exec": { "command": ["sh", "-c", "gitpuller https://x/repo main work"] } },
        "preStop": { "exec": { "command": ["sh", "-c", "sync"] } },
    })).unwrap());
    let out = apply(&p, &mutate(&p, &cfg(Platform::Jupyterhub)));
    let l = out.spec.as_ref().unwrap().containers[0]
        .lifecycle
        .as_ref()
        .unwrap();
    assert_eq!(
        l.post_start
            .as_ref()
            .unwrap()
            .exec
            .as_ref()
            .unwrap()
            .command
            .as_ref()
            .unwrap(),
        &[
            "/opt/session-ssh/bin/init-sshd",
            "start",
            "--dir",
            "/opt/session-ssh",
            "--audit-log",
            "/proc/1/fd/1",
            "--metrics-listen",
            "0.0.0.0:9122",
            "--",
            "sh",
            "-c",
            "gitpuller https://x/repo main work"
        ]
    );
    assert!(l.pre_stop.is_some());
}

#[test]
fn unsafe_pods_are_skipped_with_reason_once() {
    let jh = cfg(Platform::Jupyterhub);
    type Edit = Box<dyn Fn(&mut PodSpec)>;
    let cases: Vec<(SkipReason, Edit)> = vec![
        (
            SkipReason::UnsupportedPostStart,
            Box::new(|s: &mut PodSpec| {
                s.containers[0].lifecycle = Some(
                    serde_json::from_value(
                        json!({"postStart": {"httpGet": {"port": 8888, "path": "/"}}}),
                    )
                    .unwrap(),
                );
            }),
        ),
        (
            SkipReason::UnsupportedPostStart,
            Box::new(|s: &mut PodSpec| {
                s.containers[0].lifecycle = Some(
                    serde_json::from_value(json!({"postStart": {"sleep": {"seconds": 1}}}))
                        .unwrap(),
                );
            }),
        ),
        (
            SkipReason::PortTaken,
            Box::new(|s: &mut PodSpec| {
                s.init_containers.as_mut().unwrap()[0].ports = Some(vec![
                    serde_json::from_value(json!({"containerPort": 2222})).unwrap(),
                ]);
            }),
        ),
        (
            SkipReason::PortTaken,
            Box::new(|s: &mut PodSpec| {
                s.containers[0].ports = Some(vec![
                    serde_json::from_value(json!({"containerPort": 2443})).unwrap(),
                ]);
            }),
        ),
        (
            SkipReason::NameCollision,
            Box::new(|s: &mut PodSpec| {
                s.volumes.as_mut().unwrap().push(
                    serde_json::from_value(json!({"name": "session-ssh", "emptyDir": {}})).unwrap(),
                );
            }),
        ),
        (
            SkipReason::NameCollision,
            Box::new(|s: &mut PodSpec| {
                s.containers[0].volume_mounts.as_mut().unwrap().push(
                    serde_json::from_value(
                        json!({"name": "volume-alice", "mountPath": "/opt/session-ssh/"}),
                    )
                    .unwrap(),
                );
            }),
        ),
        (
            SkipReason::WindowsPod,
            Box::new(|s: &mut PodSpec| {
                s.os = Some(serde_json::from_value(json!({"name": "windows"})).unwrap());
            }),
        ),
        (
            SkipReason::HostNetwork,
            Box::new(|s: &mut PodSpec| s.host_network = Some(true)),
        ),
        (
            SkipReason::NoSessionContainer,
            Box::new(|s: &mut PodSpec| s.containers.clear()),
        ),
    ];
    for (want, edit) in cases {
        let mut p = jupyterhub("alice");
        edit(p.spec.as_mut().unwrap());
        let m = mutate(&p, &jh);
        assert_eq!(reason(&m), want);
        assert!(want.is_unsafe());
        assert_eq!(m.warnings().len(), 1, "{:?}", m.warnings());
        assert!(m.warnings()[0].contains(want.as_str()));
        let out = apply(&p, &m);
        assert_eq!(ann(&out, STATUS), Some("skipped"));
        assert!(ann(&out, REASON).unwrap().starts_with(want.as_str()));
        assert_eq!(out.spec, p.spec, "a skipped pod's spec is untouched");
        let again = mutate(&out, &jh);
        assert_eq!(reason(&again), want);
        assert!(again.patch().0.is_empty(), "second pass must be a no-op");
    }
}

#[test]
fn session_container_choice() {
    let kf = cfg(Platform::Kubeflow);
    let p = pod(json!({
        "metadata": { "name": "nb-0", "labels": { "notebook-name": "nb", "statefulset": "nb" } },
        "spec": { "containers": [
            { "name": "istio-proxy", "image": "istio/proxyv2" },
            { "name": "nb", "image": "kubeflownotebookswg/jupyter-scipy" },
        ] },
    }));
    let out = apply(&p, &mutate(&p, &kf));
    assert_eq!(ann(&out, CONTAINER), Some("nb"));
    assert!(out.spec.as_ref().unwrap().containers[1].lifecycle.is_some());
    assert!(out.spec.as_ref().unwrap().containers[0].lifecycle.is_none());
    // Key file outside any volume: warning, source dropped, pod still injected.
    let m = mutate(&p, &kf);
    assert!(
        m.warnings().iter().any(|w| w.contains("on no volume")),
        "{:?}",
        m.warnings()
    );
    assert!(
        !init(&out)
            .command
            .as_ref()
            .unwrap()
            .contains(&"--keys".to_owned())
    );

    let mut strict = kf.clone();
    strict.session_container.fallback_to_first = false;
    let mut q = p.clone();
    q.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("notebook-name".into(), "other".into());
    assert_eq!(reason(&mutate(&q, &strict)), SkipReason::NoSessionContainer);
}

#[test]
fn renku_glob_mounts_workspace_read_only_at_same_path() {
    let p = pod(json!({
        "metadata": { "name": "renku-abc-0", "labels": { "component": "singleuser-server", "renku.io/safe-username": "u" } },
        "spec": {
            "initContainers": [{ "name": "git-clone", "image": "renku/git-clone" }],
            "containers": [{ "name": "jupyter-server", "image": "renku/py", "volumeMounts": [
                { "name": "workspace", "mountPath": "/home/jovyan/work" },
                { "name": "jupyter-config", "mountPath": "/home/jovyan/work/.jupyter_config" },
                { "name": "project-data", "mountPath": "/home/jovyan/work/data-project" },
                { "name": "jupyter-server-secrets", "mountPath": "/etc/jupyter_server_secrets", "readOnly": true },
            ] }],
            "volumes": [
                { "name": "workspace", "emptyDir": {} },
                { "name": "project-data", "emptyDir": {} },
                { "name": "jupyter-config", "emptyDir": {} },
                { "name": "jupyter-server-secrets", "secret": { "secretName": "s" } },
            ],
        },
    }));
    let out = apply(&p, &mutate(&p, &cfg(Platform::Renku)));
    let inits = out.spec.as_ref().unwrap().init_containers.as_ref().unwrap();
    assert_eq!(
        inits.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["git-clone", INIT_CONTAINER]
    );
    let mounts: Vec<_> = init(&out)
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| (m.name.as_str(), m.mount_path.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            (VOLUME, "/opt/session-ssh", None),
            ("workspace", "/home/jovyan/work", Some(true)),
            // A volume where a repo could be; the hidden config dir cannot match `*`.
            ("project-data", "/home/jovyan/work/data-project", Some(true)),
        ]
    );
    let cmd = init(&out).command.clone().unwrap();
    assert_eq!(
        cmd[4..],
        [
            "--keys".to_owned(),
            "/home/jovyan/work/*/.ssh/authorized_keys".to_owned()
        ]
    );
    // No UID stated in this pod: the image's non-root user.
    assert_eq!(
        init(&out).security_context.as_ref().unwrap().run_as_user,
        None
    );
}

#[test]
fn annotation_and_extra_secret_sources() {
    let mut c = cfg(Platform::Jupyterhub);
    c.keys.extra_secrets = vec!["team-keys".into()];
    let mut p = jupyterhub("alice");
    p.metadata.annotations.as_mut().unwrap().insert(
        "session-ssh.io/authorized-keys".into(),
        "ssh-ed25519 AAAA x".into(),
    );
    p.metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("hub.jupyter.org/username");
    let m = mutate(&p, &c);
    assert!(
        m.warnings()
            .iter()
            .any(|w| w.contains("hub.jupyter.org/username")),
        "{:?}",
        m.warnings()
    );
    let out = apply(&p, &m);
    let vols = out.spec.as_ref().unwrap().volumes.as_ref().unwrap();
    let dapi = vols
        .iter()
        .find(|v| v.name == "session-ssh-annotation-keys")
        .unwrap();
    let item = &dapi.downward_api.as_ref().unwrap().items.as_ref().unwrap()[0];
    assert_eq!(
        item.field_ref.as_ref().unwrap().field_path,
        "metadata.annotations['session-ssh.io/authorized-keys']"
    );
    assert!(vols.iter().any(|v| v.name == "session-ssh-secret-0"));
    assert!(!vols.iter().any(|v| v.name == "session-ssh-user-keys"));
    let cmd = init(&out).command.clone().unwrap();
    assert!(
        cmd.ends_with(&[
            "--keys-dir".into(),
            "/session-ssh-keys/annotation".into(),
            "--keys-dir".into(),
            "/session-ssh-keys/secret-0".into(),
        ]),
        "{cmd:?}"
    );
}

#[test]
fn session_id_policies() {
    let jh = cfg(Platform::Jupyterhub);
    let mut p = jupyterhub("alice");
    let fixed = apply(&p, &mutate_with(&p, &jh, SessionId::Fixed("abc".into())));
    assert_eq!(
        fixed
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .get(SESSION_ID)
            .unwrap(),
        "abc"
    );
    let omitted = apply(&p, &mutate_with(&p, &jh, SessionId::Omit));
    assert!(
        !omitted
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key(SESSION_ID)
    );
    // A template injected without id: the admitted pod gets only its id.
    let m = mutate(&omitted, &jh);
    let ops = expect_patch(&m);
    assert_eq!(ops.0.len(), 1);
    assert_eq!(
        ops.0[0].path().as_str(),
        "/metadata/labels/session-ssh.io~1session-id"
    );
    // An existing id is kept.
    p.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(SESSION_ID.into(), "mine".into());
    let kept = apply(&p, &mutate(&p, &jh));
    assert_eq!(
        kept.metadata
            .labels
            .as_ref()
            .unwrap()
            .get(SESSION_ID)
            .unwrap(),
        "mine"
    );
}

#[test]
fn root_session_user_is_not_copied_and_fallback_applies() {
    let mut c = cfg(Platform::Jupyterhub);
    let mut p = jupyterhub("alice");
    p.spec.as_mut().unwrap().containers[0].security_context =
        Some(serde_json::from_value(json!({"runAsUser": 0})).unwrap());
    let out = apply(&p, &mutate(&p, &c));
    assert_eq!(
        init(&out).security_context.as_ref().unwrap().run_as_user,
        None
    );
    c.init_container.run_as_user = Some(65532);
    let out = apply(&p, &mutate(&p, &c));
    assert_eq!(
        init(&out).security_context.as_ref().unwrap().run_as_user,
        Some(65532)
    );
    // Pod-level UID is used when the container states none.
    p.spec.as_mut().unwrap().containers[0].security_context = None;
    p.spec.as_mut().unwrap().security_context =
        Some(serde_json::from_value(json!({"runAsUser": 1000770000, "runAsGroup": 0})).unwrap());
    let out = apply(&p, &mutate(&p, &c));
    let sc = init(&out).security_context.as_ref().unwrap();
    assert_eq!(
        (sc.run_as_user, sc.run_as_group),
        (Some(1000770000), Some(0))
    );
}

#[test]
fn non_default_port_is_passed_to_start() {
    let mut c = cfg(Platform::Jupyterhub);
    c.ports.ssh = 2022;
    c.ports.ssh_tls = None;
    let p = jupyterhub("alice");
    let out = apply(&p, &mutate(&p, &c));
    let ct = &out.spec.as_ref().unwrap().containers[0];
    let cmd = ct
        .lifecycle
        .as_ref()
        .unwrap()
        .post_start
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap()
        .command
        .clone()
        .unwrap();
    // sshTls null: no TLS listener at all (issue 17: it used to listen on 2443 anyway).
    assert_eq!(
        cmd[4..],
        [
            "--listen",
            "0.0.0.0:2022",
            "--tls-listen",
            "off",
            "--audit-log",
            "/proc/1/fd/1",
            "--metrics-listen",
            "0.0.0.0:9122"
        ]
    );
    // ssh and the metrics port (sshTls is null).
    assert_eq!(ct.ports.as_ref().unwrap().len(), 2 + 1);
    // A non-default sshTls port: the server listens where the Service points.
    c.ports.ssh_tls = Some(2444);
    let out = apply(&p, &mutate(&p, &c));
    let ct = &out.spec.as_ref().unwrap().containers[0];
    let cmd = &ct.lifecycle.as_ref().unwrap().post_start.as_ref().unwrap();
    let cmd = cmd.exec.as_ref().unwrap().command.as_ref().unwrap();
    assert_eq!(cmd[6..8], ["--tls-listen", "0.0.0.0:2444"]);
    let ports = ct.ports.as_ref().unwrap();
    assert!(
        ports
            .iter()
            .any(|p| p.name.as_deref() == Some(names::PORT_SSH_TLS) && p.container_port == 2444)
    );
}

#[test]
fn key_volumes_never_overlap_our_own_mounts() {
    let mut c = cfg(Platform::Jupyterhub);
    c.keys.files = vec!["/opt/*/*".into()];
    let mut p = jupyterhub("alice");
    let mounts = p.spec.as_mut().unwrap().containers[0]
        .volume_mounts
        .as_mut()
        .unwrap();
    mounts.push(
        serde_json::from_value(
            json!({"name": "volume-alice", "mountPath": "/opt/session-ssh/sub", "subPath": "x"}),
        )
        .unwrap(),
    );
    mounts.push(
        serde_json::from_value(
            json!({"name": "volume-alice", "mountPath": "/opt/tools", "subPath": "tools"}),
        )
        .unwrap(),
    );
    let m = mutate(&p, &c);
    assert!(
        m.warnings().iter().any(|w| w.contains("overlaps")),
        "{:?}",
        m.warnings()
    );
    let out = apply(&p, &m);
    let paths: Vec<_> = init(&out)
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(
        paths,
        ["/opt/session-ssh", "/opt/tools", "/session-ssh-keys/user"]
    );
}

#[test]
fn injecting_a_previously_skipped_pod_drops_the_stale_reason() {
    let jh = cfg(Platform::Jupyterhub);
    let mut p = jupyterhub("alice");
    p.spec.as_mut().unwrap().containers[0].ports = Some(vec![
        serde_json::from_value(json!({"containerPort": 2222})).unwrap(),
    ]);
    let skipped = apply(&p, &mutate(&p, &jh));
    assert_eq!(ann(&skipped, STATUS), Some("skipped"));
    // Another webhook removes the conflict; the reinvoked webhook injects.
    let mut fixed = skipped.clone();
    fixed.spec.as_mut().unwrap().containers[0].ports = None;
    let out = apply(&fixed, &mutate(&fixed, &jh));
    assert_eq!(ann(&out, STATUS), Some("injected"));
    assert_eq!(ann(&out, REASON), None);
}

#[test]
fn host_ca_adds_the_certificate_file_to_the_session_container_only() {
    let mut p = jupyterhub("alice");
    // A stable identity, so the pod has a host key to certify.
    p.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("hub.jupyter.org/servername".into(), String::new());
    // Off by default: no certificate volume.
    let out = apply(&p, &mutate(&p, &cfg(Platform::Jupyterhub)));
    let spec = out.spec.as_ref().unwrap();
    assert!(
        !spec
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == names::HOST_CERT_VOLUME)
    );

    let mut c = cfg(Platform::Jupyterhub);
    c.host_keys.ca.secret_name = Some("session-ssh-host-ca".into());
    let out = apply(&p, &mutate(&p, &c));
    let spec = out.spec.as_ref().unwrap();
    let vol = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == names::HOST_CERT_VOLUME)
        .expect("certificate volume");
    let items = vol.downward_api.as_ref().unwrap().items.as_ref().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].path, "ssh_host_ed25519_key-cert.pub");
    assert_eq!(
        items[0].field_ref.as_ref().unwrap().field_path,
        "metadata.annotations['session-ssh.io/host-certificate']"
    );
    let session = &spec.containers[0];
    let mount = session
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == names::HOST_CERT_VOLUME)
        .expect("mounted into the session container");
    // Where `init-sshd serve --dir /opt/session-ssh` looks by default.
    assert_eq!(mount.mount_path, "/opt/session-ssh/host-cert");
    assert_eq!(mount.read_only, Some(true));
    assert!(
        !init(&out)
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == names::HOST_CERT_VOLUME)
    );

    // Without a stable host key there is nothing to certify.
    c.host_keys.enabled = false;
    let out = apply(&p, &mutate(&p, &c));
    assert!(
        !out.spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == names::HOST_CERT_VOLUME)
    );
}

fn post_start(p: &Pod) -> Vec<String> {
    let c = &p.spec.as_ref().unwrap().containers[0];
    let l = c.lifecycle.as_ref().unwrap().post_start.as_ref().unwrap();
    l.exec.as_ref().unwrap().command.clone().unwrap()
}

#[test]
fn sni_host_reaches_the_information_file_and_key_volumes_the_session_container() {
    let mut original = jupyterhub("alice");
    original.metadata.namespace = Some("jhub".into());
    let mut c = cfg(Platform::Jupyterhub);
    c.ingress.mode = crate::config::IngressMode::Traefik;
    c.ingress.host_template = Some("{label:hub.jupyter.org/username}.ssh.example.org".into());
    let p = apply(&original, &mutate(&original, &c));
    let argv = post_start(&p);
    let at = argv.iter().position(|a| a == "--info-host").unwrap();
    assert_eq!(argv[at + 1], "alice.ssh.example.org");
    assert_eq!(argv[at + 2..at + 4], ["--info-port", "443"]);
    // The user's key Secret is re-read by the server: mounted read-only in the session too.
    let mounts = p.spec.as_ref().unwrap().containers[0]
        .volume_mounts
        .clone()
        .unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == "/session-ssh-keys/user" && m.read_only == Some(true))
    );

    // Without an SNI route, admission does not know the address: no --info-host; the
    // admin's `infoFile: off` reaches start.
    c.ingress.mode = crate::config::IngressMode::Nodeport;
    c.info_file = Some("off".into());
    let p = apply(&original, &mutate(&original, &c));
    let argv = post_start(&p);
    assert!(!argv.iter().any(|a| a == "--info-host"));
    let at = argv.iter().position(|a| a == "--info-file").unwrap();
    assert_eq!(argv[at + 1], "off");
}

#[test]
fn gateway_flags_and_hub_token_login_reach_start() {
    let mut original = jupyterhub("alice");
    // KubeSpawner's label may be an escaped form: the annotation is the hub's spelling.
    original
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("hub.jupyter.org/username".into(), "alice@x.org".into());
    let mut c = cfg(Platform::Jupyterhub);
    c.gateway.user_ca_public_key = Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGw gw".into());
    let argv = post_start(&apply(&original, &mutate(&original, &c)));
    let flag = |f: &str| {
        argv.iter()
            .position(|a| a == f)
            .map(|i| argv[i + 1].clone())
    };
    assert!(flag("--gateway-principal").is_some_and(|p| !p.is_empty()));
    assert_eq!(flag("--gateway-hub-user"), None, "off by default");
    c.gateway.hub_token_login = true;
    let argv = post_start(&apply(&original, &mutate(&original, &c)));
    let at = argv.iter().position(|a| a == "--gateway-hub-user").unwrap();
    assert_eq!(argv[at + 1], "alice@x.org");
}

#[test]
fn gateway_address_reaches_the_information_file_with_the_login_name() {
    let mut original = jupyterhub("alice");
    original.metadata.namespace = Some("jhub".into());
    let mut c = cfg(Platform::Jupyterhub);
    c.ingress.mode = crate::config::IngressMode::Traefik;
    c.ingress.host_template = Some("{label:hub.jupyter.org/username}.ssh.example.org".into());
    c.gateway.host = Some("ssh.hub.example.org".into());
    c.gateway.host_public_key = Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGw gw\n".into());
    let argv = post_start(&apply(&original, &mutate(&original, &c)));
    let flag = |f: &str| {
        argv.iter()
            .position(|a| a == f)
            .map(|i| argv[i + 1].as_str())
    };
    // The gateway wins over the SNI route: one address for everyone.
    assert_eq!(flag("--info-host"), Some("ssh.hub.example.org"));
    assert_eq!(flag("--info-port"), Some("22"));
    assert_eq!(flag("--info-user"), Some("alice"));
    assert_eq!(
        flag("--info-host-key"),
        Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGw gw")
    );
    // A named server's login name.
    let mut named = original.clone();
    named
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("hub.jupyter.org/servername".into(), "gpu".into());
    let argv = post_start(&apply(&named, &mutate(&named, &c)));
    let at = argv.iter().position(|a| a == "--info-user").unwrap();
    assert_eq!(argv[at + 1], "alice+gpu");
}

#[test]
fn server_settings_reach_start_and_are_all_serve_flags() {
    let original = jupyterhub("alice");
    let mut c = cfg(Platform::Jupyterhub);
    c.server = crate::config::Server {
        detached_keep_seconds: Some(600),
        detached_max: Some(3),
        detached_buffer_bytes: Some(8192),
        idle_timeout_seconds: Some(900),
        keepalive_seconds: Some(15),
        keepalive_count: Some(3),
        max_connections: Some(32),
        max_startups: Some(5),
        login_grace_seconds: Some(20),
        version_timeout_seconds: Some(5),
        keys_refresh_seconds: Some(10),
        activity_interval_seconds: Some(120),
    };
    let args = c.server.serve_args();
    assert_eq!(args.len(), 12, "every field is rendered");
    for (name, _) in &args {
        assert!(
            session_ssh_contract::argv::SERVE_SETTINGS.contains(name),
            "{name} is not in the contract"
        );
    }
    let argv = post_start(&apply(&original, &mutate(&original, &c)));
    let given: Vec<&str> = argv
        .windows(2)
        .filter(|w| w[0] == "--serve-arg")
        .map(|w| w[1].as_str())
        .collect();
    assert!(given.contains(&"detached-keep-secs=600"), "{argv:?}");
    assert!(given.contains(&"max-startups=5"), "{argv:?}");
    assert_eq!(given.len(), 12);
    // Unset: nothing passed, init-sshd's defaults hold.
    let argv = post_start(&apply(
        &original,
        &mutate(&original, &cfg(Platform::Jupyterhub)),
    ));
    assert!(!argv.iter().any(|a| a == "--serve-arg"));
}

/// The value after `--metrics-listen` in the start argv.
fn metrics_flag(p: &Pod) -> Option<String> {
    let argv = post_start(p);
    let i = argv.iter().position(|a| a == "--metrics-listen")?;
    argv.get(i + 1).cloned()
}

fn metrics_port(p: &Pod) -> Option<i32> {
    let c = &p.spec.as_ref().unwrap().containers[0];
    c.ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(names::PORT_METRICS))
        .map(|p| p.container_port)
}

#[test]
fn metrics_port_annotations_and_flag() {
    let c = cfg(Platform::Jupyterhub);
    let plain = jupyterhub("alice");
    let out = apply(&plain, &mutate(&plain, &c));
    assert_eq!(metrics_port(&out), Some(9122));
    assert_eq!(metrics_flag(&out).as_deref(), Some("0.0.0.0:9122"));
    assert_eq!(ann(&out, "prometheus.io/scrape"), Some("true"));
    assert_eq!(ann(&out, "prometheus.io/port"), Some("9122"));
    assert_eq!(ann(&out, "prometheus.io/path"), Some("/metrics"));

    // An admin's prometheus.io annotation (even just one) is left alone; the port stays.
    let mut own = jupyterhub("bob");
    own.metadata
        .annotations
        .get_or_insert_default()
        .insert("prometheus.io/scrape".into(), "false".into());
    let out = apply(&own, &mutate(&own, &c));
    assert_eq!(ann(&out, "prometheus.io/scrape"), Some("false"));
    assert_eq!(ann(&out, "prometheus.io/port"), None);
    assert_eq!(ann(&out, "prometheus.io/path"), None);
    assert_eq!(metrics_port(&out), Some(9122));

    // The port declared by another container: SSH without metrics, and a warning.
    let mut taken = jupyterhub("carol");
    taken.spec.as_mut().unwrap().containers.push(
        serde_json::from_value(json!({
            "name": "exporter", "image": "x",
            "ports": [{ "containerPort": 9122 }],
        }))
        .unwrap(),
    );
    let m = mutate(&taken, &c);
    expect_patch(&m);
    assert!(
        m.warnings().iter().any(|w| w.contains("without metrics")),
        "{:?}",
        m.warnings()
    );
    let out = apply(&taken, &m);
    assert_eq!(ann(&out, names::STATUS), Some(names::STATUS_INJECTED));
    assert_eq!(metrics_port(&out), None);
    assert_eq!(metrics_flag(&out).as_deref(), Some("none"));
    assert_eq!(ann(&out, "prometheus.io/scrape"), None);

    // Turned off in the config; another port number reaches start.
    let mut off = c.clone();
    off.ports.metrics = None;
    let out = apply(&plain, &mutate(&plain, &off));
    assert_eq!(metrics_port(&out), None);
    assert_eq!(metrics_flag(&out).as_deref(), Some("none"));
    assert_eq!(ann(&out, "prometheus.io/scrape"), None);
    let mut moved = c;
    moved.ports.metrics = Some(9400);
    let out = apply(&plain, &mutate(&plain, &moved));
    assert_eq!(metrics_port(&out), Some(9400));
    assert_eq!(metrics_flag(&out).as_deref(), Some("0.0.0.0:9400"));
    assert_eq!(ann(&out, "prometheus.io/port"), Some("9400"));
}
