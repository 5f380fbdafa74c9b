//! The README followed literally (issue 17 item 1), in every SNI ingress mode (gateway,
//! traefik, ingress-nginx): the `~/.ssh/config` block of "Connecting through the HTTPS
//! ingress" copied verbatim from README.md (`Host *.ssh.example.org`, its ProxyCommand with
//! `-connect %h:443`), the known_hosts line the controller publishes on the pod copied
//! verbatim, and `StrictHostKeyChecking yes`; then `ssh <the published host>`.
//!
//! The session is a pod stored by the real apiserver after the webhook mutated it, run in
//! the pod sandbox. The user's wildcard DNS record is a private /etc/hosts (bwrap) naming
//! 127.0.0.1, where Debian nginx's ssl_preread plays the ingress on port 443.

// Test support code: a panic with its message is the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use session_ssh_tests::cluster::crds::install_route_crds;
use session_ssh_tests::cluster::{self, wait_for};
use session_ssh_tests::gateway::{
    create_key_secret, create_pod, hub_cluster, keygen, mark_ready, wait_published,
};
use session_ssh_tests::injected::InjectedSession;
use session_ssh_tests::repo_root;
use session_ssh_tests::sni::SniRouter;

const WAIT: Duration = Duration::from_secs(60);

/// The first fenced block after the README line `heading`.
fn readme_block(heading: &str) -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let after = &readme[readme.find(heading).expect("heading in README.md")..];
    let start = after.find("```\n").expect("a block after the heading") + 4;
    let len = after[start..].find("```").expect("the block's end");
    after[start..start + len].to_owned()
}

fn annotation(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(key).cloned()
}

fn init_sshd_bin() -> std::path::PathBuf {
    std::env::var_os("INIT_SSHD_BIN")
        .map(|p| repo_root().join(p))
        .unwrap_or_else(|| repo_root().join("target/debug/init-sshd"))
}

/// `ssh HOST CMD` as the user runs it: only the README's config file, the user's key, the
/// known_hosts file; the host name resolved by `hosts` (a private /etc/hosts).
fn user_ssh(dir: &Path, host: &str, known_hosts: &Path, cmd: &str) -> Output {
    Command::new("bwrap")
        .args(["--dev-bind", "/", "/", "--bind"])
        .arg(dir.join("hosts"))
        .args([
            "/etc/hosts",
            "--die-with-parent",
            "--",
            "timeout",
            "60",
            "ssh",
            "-F",
        ])
        .arg(dir.join("config"))
        .arg("-i")
        .arg(dir.join("id_ed25519"))
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "BatchMode=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg(host)
        .arg(cmd)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn the_readme_block_and_the_published_known_hosts_line_get_in_in_every_sni_mode() {
    let block = readme_block("#### Linux (OpenSSH + OpenSSL)");
    assert!(
        block.starts_with("Host *.ssh.example.org\n") && block.contains("-connect %h:443"),
        "the README's block changed:\n{block}"
    );
    // The JupyterHub example's namespace: it binds the host-key rights there, so the
    // session's host key is stable and published.
    let (mut wc, ns) = hub_cluster().await.unwrap();
    let client = wc.client().await.unwrap();
    install_route_crds(&client).await;
    let host_template = "  hostTemplate: '{label:hub.jupyter.org/username}.ssh.example.org'\n";
    let modes = [
        (
            format!(
                "ingress:\n  mode: gateway\n{host_template}  gateway:\n    parentRefs:\n    - {{name: ssh, namespace: gateways, sectionName: tls}}\n"
            ),
            ("gateway.networking.k8s.io", "v1", "TLSRoute", "tlsroutes"),
        ),
        (
            format!("ingress:\n  mode: traefik\n{host_template}"),
            (
                "traefik.io",
                "v1alpha1",
                "IngressRouteTCP",
                "ingressroutetcps",
            ),
        ),
        (
            format!("ingress:\n  mode: ingress-nginx\n{host_template}"),
            ("networking.k8s.io", "v1", "Ingress", "ingresses"),
        ),
    ];
    wc.set_config_extra(&modes[0].0).await.unwrap();
    // The user's key in their Secret, as the JupyterHub guide says; then their server.
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let key = dir.join("id_ed25519");
    keygen(&key, "alice@laptop").unwrap();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    create_key_secret(&client, &ns, "alice", &public)
        .await
        .unwrap();
    let (original, stored) = create_pod(&client, &ns, "jupyter-alice", "alice")
        .await
        .unwrap();
    let secrets = cluster::mounted_secrets(&client, &ns, &stored)
        .await
        .unwrap();
    let run = dir.join("run");
    std::fs::create_dir(&run).unwrap();
    let session =
        InjectedSession::launch(&original, stored, &init_sshd_bin(), &run, secrets, 0).unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    mark_ready(&pods, "jupyter-alice").await.unwrap();
    wait_published(&pods, "jupyter-alice").await.unwrap();

    // The README's block, verbatim, as ~/.ssh/config.
    std::fs::write(dir.join("config"), &block).unwrap();
    for (ingress, (group, version, kind, plural)) in &modes {
        wc.set_config_extra(ingress).await.unwrap();
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let routes = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ar);
        wait_for(&format!("the {kind}"), WAIT, || {
            let routes = routes.clone();
            async move { Ok(routes.get_opt("jupyter-alice").await?.map(|_| ())) }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", wc.webhook_log()));
        let pod = pods.get("jupyter-alice").await.unwrap();
        let host = annotation(&pod, "session-ssh.io/ssh-host").expect("ssh-host published");
        let line = annotation(&pod, "session-ssh.io/known-hosts").expect("known-hosts published");
        assert_eq!(host, "alice.ssh.example.org");
        // The user's DNS: the wildcard record names the ingress (nginx on 127.0.0.1:443).
        std::fs::write(
            dir.join("hosts"),
            format!("127.0.0.1 localhost\n127.0.0.1 {host}\n"),
        )
        .unwrap();
        let router = SniRouter::start_on(443, &[(&host, session.tls_port)]);
        let known = dir.join("known_hosts");
        std::fs::write(&known, format!("{line}\n")).unwrap();
        let out = user_ssh(dir, &host, &known, "id -u");
        assert!(
            out.status.success() && text(&out.stdout).trim() == "1000",
            "{kind}: ssh {host} with the README's block and the published line:\n{}\n{}\nrouter: {}",
            text(&out.stdout),
            text(&out.stderr),
            router.error_log()
        );
        // The check can fail: the same line with another key in it is refused.
        let other = dir.join("other");
        keygen(&other, "not the session").unwrap();
        let other_key = std::fs::read_to_string(other.with_extension("pub")).unwrap();
        let names = line.split_whitespace().next().unwrap();
        let wrong = dir.join("known_hosts.wrong");
        let blob: Vec<&str> = other_key.split_whitespace().take(2).collect();
        std::fs::write(&wrong, format!("{names} {}\n", blob.join(" "))).unwrap();
        let refused = user_ssh(dir, &host, &wrong, "id -u");
        assert!(
            !refused.status.success()
                && text(&refused.stderr).contains("Host key verification failed"),
            "{kind}: another key in the published line was not refused:\n{}",
            text(&refused.stderr)
        );
        std::fs::remove_file(&other).unwrap();
        std::fs::remove_file(other.with_extension("pub")).unwrap();
        println!("{kind}: ssh {host} with the README's block and the published line: uid 1000");
        drop(router);
    }
}
