//! The second half of the mutation: a [`Plan`] made into JSON patch operations, in a fixed
//! order (golden files depend on it). No decisions here.

use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{Value, json};
use session_ssh_contract::argv;
use session_ssh_contract::names::{
    self, CONTAINER, INIT_CONTAINER, PORT_SSH, PORT_SSH_TLS, REASON, SESSION_ID, STATUS, VOLUME,
};

use super::decide::Plan;
use super::ops::{MetaOps, add, append_all};
use crate::config::Config;

/// Every operation of an injection: metadata, volumes, the init container (last, so it
/// runs after the platform's own git clone), then the session container.
pub(super) fn injection(meta: &mut MetaOps, cfg: &Config, plan: &Plan<'_>) -> Vec<PatchOperation> {
    let spec = plan.spec;
    let mut ops = Vec::new();
    meta.annotation(STATUS, names::STATUS_INJECTED);
    // A pod skipped on an earlier pass (reinvocation after another webhook fixed the
    // conflict) must not keep the old reason.
    meta.remove_annotation(REASON);
    meta.annotation(CONTAINER, &plan.session.name);
    if let Some(v) = &plan.session_id {
        meta.label(SESSION_ID, v);
    }
    if let Some(s) = &plan.metrics {
        super::scrape::annotate(meta, s);
    }
    ops.append(&mut meta.ops);
    append_all(
        &mut ops,
        &["spec", "volumes"],
        spec.volumes.is_some(),
        volumes(cfg, plan),
    );
    append_all(
        &mut ops,
        &["spec", "initContainers"],
        spec.init_containers.is_some(),
        vec![init_container(spec, cfg, plan)],
    );
    session_container(&mut ops, cfg, plan);
    ops
}

/// The shared emptyDir, the key sources, the host-key Secret and the certificate file.
fn volumes(cfg: &Config, plan: &Plan<'_>) -> Vec<Value> {
    let mut empty_dir = json!({});
    if let Some(limit) = &cfg.volume_size_limit {
        empty_dir["sizeLimit"] = json!(limit);
    }
    let mut volumes = vec![json!({ "name": VOLUME, "emptyDir": empty_dir })];
    volumes.extend(plan.keys.volumes.iter().cloned());
    // Optional, so a missing Secret only means install generates a key. Default mode: the
    // init container's UID varies.
    if let Some(r) = &plan.host_key {
        volumes.push(json!({
            "name": names::HOST_KEY_VOLUME,
            "secret": { "secretName": r.name, "optional": true },
        }));
    }
    // The controller's certificate annotation reaches serve as a file the kubelet keeps
    // current (a subPath mount would never be refreshed).
    if plan.host_cert {
        volumes.push(json!({
            "name": names::HOST_CERT_VOLUME,
            "downwardAPI": { "items": [{
                "path": names::file::HOST_CERT,
                "fieldRef": { "fieldPath": format!("metadata.annotations['{}']", names::HOST_CERTIFICATE) },
            }]},
        }));
    }
    volumes
}

/// The session container: mount, ports, postStart (an existing `lifecycle` keeps its
/// preStop: `add` on an existing member replaces only postStart).
fn session_container(ops: &mut Vec<PatchOperation>, cfg: &Config, plan: &Plan<'_>) {
    let session = plan.session;
    let c = plan.index.to_string();
    let base = ["spec", "containers", c.as_str()];
    let mut mounts = vec![json!({ "name": VOLUME, "mountPath": cfg.mount_path })];
    mounts.extend(plan.keys.session_mounts.iter().cloned());
    if plan.host_cert {
        mounts.push(json!({
            "name": names::HOST_CERT_VOLUME,
            "mountPath": names::host_cert_dir_in(&cfg.mount_path),
            "readOnly": true,
        }));
    }
    append_all(
        ops,
        &[&base[..], &["volumeMounts"]].concat(),
        session.volume_mounts.is_some(),
        mounts,
    );
    let mut ports =
        vec![json!({ "name": PORT_SSH, "containerPort": cfg.ports.ssh, "protocol": "TCP" })];
    if let Some(tls) = cfg.ports.ssh_tls {
        ports.push(json!({ "name": PORT_SSH_TLS, "containerPort": tls, "protocol": "TCP" }));
    }
    ports.extend(plan.metrics.as_ref().map(super::scrape::container_port));
    append_all(
        ops,
        &[&base[..], &["ports"]].concat(),
        session.ports.is_some(),
        ports,
    );
    let hook = json!({ "exec": { "command": post_start_command(session, cfg, plan) } });
    if session.lifecycle.is_some() {
        ops.push(add(
            &[&base[..], &["lifecycle", "postStart"]].concat(),
            hook,
        ));
    } else {
        ops.push(add(
            &[&base[..], &["lifecycle"]].concat(),
            json!({ "postStart": hook }),
        ));
    }
}

/// The `session-ssh-install` container.
fn init_container(spec: &PodSpec, cfg: &Config, plan: &Plan<'_>) -> Value {
    let ic = &cfg.init_container;
    let (session_uid, session_gid) = session_identity(spec, plan.session);
    let command = argv::Install {
        binary: ic.binary.clone(),
        dir: cfg.mount_path.clone(),
        // install writes the host key 0600 at once when it runs as this UID; otherwise it
        // hands the key off and `start` (as the session user) makes it private.
        session_uid,
        host_key_dir: plan
            .host_key
            .as_ref()
            .map(|_| names::HOST_KEY_MOUNT.to_owned()),
        keys: plan.keys.files.clone(),
        keys_dirs: plan.keys.dirs.clone(),
    }
    .argv();
    let mut mounts = vec![json!({ "name": VOLUME, "mountPath": cfg.mount_path })];
    mounts.extend(plan.keys.mounts.iter().cloned());
    if plan.host_key.is_some() {
        mounts.push(
            json!({ "name": names::HOST_KEY_VOLUME, "mountPath": names::HOST_KEY_MOUNT, "readOnly": true }),
        );
    }
    // Run as the session's user when the spec says who that is, so files in the shared
    // volume (host key 0600) belong to it. Root is never copied: the installer needs none.
    let uid = session_uid.filter(|u| *u != 0).or(ic.run_as_user);
    let gid = session_gid.or(ic.run_as_group);
    json!({
        "name": INIT_CONTAINER,
        "image": ic.image,
        "imagePullPolicy": ic.image_pull_policy.as_str(),
        "command": command,
        "resources": resources(cfg),
        "securityContext": security_context(uid, gid),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })
}

/// The UID and GID the session container runs as, when the spec states them (root
/// included): the container's securityContext, else the pod's.
fn session_identity(spec: &PodSpec, session: &Container) -> (Option<i64>, Option<i64>) {
    let csc = session.security_context.as_ref();
    let psc = spec.security_context.as_ref();
    let uid = csc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|s| s.run_as_user));
    let gid = csc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|s| s.run_as_group));
    (uid, gid)
}

/// Least privilege: non-root, no escalation, no capabilities, read-only root.
fn security_context(uid: Option<i64>, gid: Option<i64>) -> Value {
    let mut sc = json!({
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    });
    if let Some(u) = uid {
        sc["runAsUser"] = json!(u);
    }
    if let Some(g) = gid {
        sc["runAsGroup"] = json!(g);
    }
    sc
}

fn resources(cfg: &Config) -> Value {
    let ic = &cfg.init_container;
    let mut resources = json!({});
    for (kind, q) in [
        ("requests", &ic.resources.requests),
        ("limits", &ic.resources.limits),
    ] {
        let mut m = serde_json::Map::new();
        if let Some(cpu) = &q.cpu {
            m.insert("cpu".into(), json!(cpu));
        }
        if let Some(mem) = &q.memory {
            m.insert("memory".into(), json!(mem));
        }
        if !m.is_empty() {
            resources[kind] = Value::Object(m);
        }
    }
    resources
}

/// `init-sshd start`, chaining an existing exec hook after `--`. With a gateway CA the
/// session id is the principal its certificates must name (a pod from a workload template
/// has none yet, so it gets no gateway logins). `info` goes to the information file.
fn post_start_command(session: &Container, cfg: &Config, plan: &Plan) -> Vec<String> {
    let original_hook = session
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
        .and_then(|p| p.exec.as_ref())
        .and_then(|e| e.command.as_ref())
        .filter(|c| !c.is_empty())
        .cloned()
        .unwrap_or_default();
    argv::Start {
        dir: cfg.mount_path.clone(),
        listen: argv::listen_all(cfg.ports.ssh),
        tls_listen: argv::tls_listen_all(cfg.ports.ssh_tls),
        info: plan.info.as_ref().clone(),
        gateway: cfg
            .gateway
            .user_ca_public_key
            .as_ref()
            .zip(plan.session_id.as_deref())
            .map(|(ca, id)| (ca.trim().to_owned(), id.to_owned())),
        gateway_hub_user: plan.hub_user.clone(),
        audit_log: Some(argv::CONTAINER_LOG.to_owned()),
        metrics_listen: Some(argv::metrics_listen_all(plan.metrics.map(|s| s.port))),
        serve: cfg.server.serve_args(),
        original_hook,
    }
    .argv()
}
