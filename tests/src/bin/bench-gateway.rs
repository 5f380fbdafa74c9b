//! Benchmark, not a test: the same session reached directly and through the SSH gateway,
//! in one run, with the real OpenSSH client (a real apiserver, the webhook, one injected
//! session in the pod sandbox, one gateway). Prints numbers and ratios:
//!
//! - connect + auth + `true`, median of BENCH_LATENCY_N (30);
//! - BENCH_MIB (1024) MiB upload and download through `ssh host cat`/`head`;
//! - SFTP put and get of BENCH_SFTP_MIB (256) MiB;
//! - `-W` (what `-L` carries) of BENCH_MIB MiB to a sink on the laptop side;
//! - the gateway's RSS with 0, 100 and BENCH_IDLE (1000) idle proxied connections
//!   (russh clients, logged in: both legs open).
//!
//! Run: `scripts/bench-gateway.sh` (builds what it needs).

// A panic with a message is this benchmark's failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use session_ssh_tests::cluster::webhook::{Platform, Tls, WebhookCluster};
use session_ssh_tests::cluster::{self};
use session_ssh_tests::gateway::{self, Gateway, GatewayKeys};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Seconds `sh -c script` takes; panics when it fails.
fn timed_sh(script: &str) -> f64 {
    let t = Instant::now();
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

fn quote(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Accept;
impl russh::client::Handler for Accept {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// `n` logged-in russh connections through the gateway, 32 at a time; returns them and the
/// number that failed.
async fn idle_connections(
    port: u16,
    key: &Path,
    n: usize,
) -> (Vec<russh::client::Handle<Accept>>, usize) {
    let key = Arc::new(russh::keys::load_secret_key(key, None).unwrap());
    let config = Arc::new(russh::client::Config {
        nodelay: true,
        ..Default::default()
    });
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (key, config, sem) = (key.clone(), config.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.ok()?;
            let mut h = russh::client::connect(config, ("127.0.0.1", port), Accept)
                .await
                .ok()?;
            let auth = h
                .authenticate_publickey("alice", PrivateKeyWithHashAlg::new(key, None))
                .await
                .ok()?;
            auth.success().then_some(h)
        }));
    }
    let mut ok = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await.ok().flatten() {
            Some(h) => ok.push(h),
            None => failed += 1,
        }
    }
    (ok, failed)
}

#[tokio::main]
async fn main() {
    let nlat = env_u64("BENCH_LATENCY_N", 30) as usize;
    let mib = env_u64("BENCH_MIB", 1024);
    let sftp_mib = env_u64("BENCH_SFTP_MIB", 256);
    let nidle = env_u64("BENCH_IDLE", 1000) as usize;

    let mut wc = WebhookCluster::start(Platform::Jupyterhub, Tls::Url)
        .await
        .unwrap();
    let ns = wc.session_namespaces[0].clone();
    let probe = cluster::hub_pod("jupyter-probe", "probe", "").unwrap();
    wc.wait_active(&ns, &probe).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let keys = GatewayKeys::generate(work.path()).unwrap();
    // The session must take every proxied connection: raise its caps for the idle test.
    let limits = [
        ("INIT_SSHD_MAX_CONNECTIONS", "3000"),
        ("INIT_SSHD_MAX_STARTUPS", "200"),
    ];
    let session = gateway::start_session_env(
        &mut wc,
        &ns,
        work.path(),
        "alice",
        "",
        &keys.user_ca_public,
        &limits,
    )
    .await
    .unwrap();
    let kubeconfig = gateway::gateway_kubeconfig(&wc, work.path()).await.unwrap();
    let gw = Gateway::start(
        &keys,
        &kubeconfig,
        "jupyterhub",
        &[&ns],
        work.path(),
        &[
            ("GATEWAY_MAX_STARTUPS", "256"),
            ("GATEWAY_MAX_FAILURES_PER_MINUTE", "100000"),
        ],
    )
    .unwrap();
    let known = work.path().join("known_hosts");
    Gateway::known_hosts(&keys, gw.port, &known).unwrap();
    // The sandbox's own key is not in alice's Secret: use hers, as the user would.
    let sandbox_key = session.run.key.display().to_string();
    let direct: Vec<String> = session
        .run
        .ssh_opts()
        .into_iter()
        .map(|o| {
            if o == sandbox_key {
                session.key.display().to_string()
            } else {
                o
            }
        })
        .chain(["jovyan@127.0.0.1".to_owned()])
        .collect();
    let via = [
        gateway::ssh_opts(&session.key, &known, gw.port),
        vec!["alice@127.0.0.1".into()],
    ]
    .concat();
    // Wait for the gateway's index.
    for _ in 0..100 {
        if Command::new("ssh")
            .args(&via)
            .arg("true")
            .status()
            .unwrap()
            .success()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    println!(
        "session-ssh gateway benchmark: direct = OpenSSH client -> init-sshd; gateway = client -> gateway -> init-sshd"
    );
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "metric", "direct", "gateway", "ratio"
    );
    let row = |name: &str, d: f64, g: f64, unit: &str| {
        println!(
            "{:<44} {:>9.1} {unit:<2} {:>9.1} {unit:<2} {:>8.2}",
            name,
            d,
            g,
            g / d
        );
    };
    // Connect + auth + true.
    let lat = |opts: &[String]| {
        median(
            (0..nlat)
                .map(|_| timed_sh(&format!("ssh {} true", quote(opts))) * 1000.0)
                .collect(),
        )
    };
    let (ld, lg) = (lat(&direct), lat(&via));
    row("connect+auth+true, median ms", ld, lg, "ms");
    println!(
        "{:<44} {:>12} {:>9.1} ms",
        "  added by the gateway",
        "",
        lg - ld
    );

    // Refusals: an unknown name and a key the session refuses must look alike (time too).
    let other = work.path().join("other_key");
    gateway::keygen(&other, "not alice's").unwrap();
    let refused = |user: &str, key: &Path| {
        let mut opts = gateway::ssh_opts(key, &known, gw.port);
        opts.push(format!("{user}@127.0.0.1"));
        median(
            (0..nlat.min(15))
                .map(|_| {
                    let t = Instant::now();
                    let _ = Command::new("ssh").args(&opts).arg("true").output();
                    t.elapsed().as_secs_f64() * 1000.0
                })
                .collect(),
        )
    };
    let (unknown, badkey) = (refused("nobody", &session.key), refused("alice", &other));
    println!(
        "{:<44} {:>9.1} ms {:>9.1} ms  (unknown name / refused key, medians)",
        "refusal time through the gateway", unknown, badkey
    );

    let bytes = mib * 1024 * 1024;
    let up = |o: &[String]| {
        mib as f64
            / timed_sh(&format!(
                "head -c {bytes} /dev/zero | ssh {} 'cat > /dev/null'",
                quote(o)
            ))
    };
    let down = |o: &[String]| {
        mib as f64
            / timed_sh(&format!(
                "ssh {} 'head -c {bytes} /dev/zero' > /dev/null",
                quote(o)
            ))
    };
    row(
        &format!("upload {mib} MiB, MiB/s"),
        up(&direct),
        up(&via),
        "",
    );
    row(
        &format!("download {mib} MiB, MiB/s"),
        down(&direct),
        down(&via),
        "",
    );

    // SFTP put and get.
    let file = work.path().join("sftp-payload");
    let st = Command::new("head")
        .args(["-c", &(sftp_mib * 1024 * 1024).to_string(), "/dev/urandom"])
        .stdout(std::fs::File::create(&file).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let sftp = |o: &[String], cmd: &str| {
        let mut args: Vec<String> = Vec::new();
        let mut it = o.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "-p" => args.extend(["-P".to_owned(), it.next().unwrap().clone()]),
                _ => args.push(a.clone()),
            }
        }
        let target = args.pop().unwrap();
        sftp_mib as f64
            / timed_sh(&format!(
                "echo '{cmd}' | sftp -b - {} {}",
                quote(&args),
                target
            ))
    };
    let put = format!("put {} /tmp/bench-sftp", file.display());
    let get = format!("get /tmp/bench-sftp {}", work.path().join("back").display());
    row(
        &format!("sftp put {sftp_mib} MiB, MiB/s"),
        sftp(&direct, &put),
        sftp(&via, &put),
        "",
    );
    row(
        &format!("sftp get {sftp_mib} MiB, MiB/s"),
        sftp(&direct, &get),
        sftp(&via, &get),
        "",
    );

    // -W (a forwarded TCP connection) into a sink on this side.
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sport = sink.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in sink.incoming().flatten() {
            let mut s = s;
            let mut buf = vec![0u8; 1 << 16];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    let fwd = |o: &[String]| {
        let mut opts = o.to_vec();
        let target = opts.pop().unwrap();
        mib as f64
            / timed_sh(&format!(
                "head -c {bytes} /dev/zero | ssh {} -W 127.0.0.1:{sport} {target}",
                quote(&opts)
            ))
    };
    row(
        &format!("forwarded TCP (-W) {mib} MiB, MiB/s"),
        fwd(&direct),
        fwd(&via),
        "",
    );

    // The gateway's memory with idle proxied connections.
    let pid = gw.pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r0 = rss_kib(pid);
    let (c100, f100) = idle_connections(gw.port, &session.key, 100).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r100 = rss_kib(pid);
    let (cn, fnn) = idle_connections(gw.port, &session.key, nidle.saturating_sub(100)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rn = rss_kib(pid);
    let open = c100.len() + cn.len();
    println!(
        "gateway RSS: {r0} KiB idle, {r100} KiB with 100 connections, {rn} KiB with {open} ({} failed of {nidle})",
        f100 + fnn
    );
    if open > 0 {
        println!(
            "  per idle proxied connection (both legs): {:.1} KiB",
            (rn.saturating_sub(r0)) as f64 / open as f64
        );
    }
    drop(c100);
    drop(cn);
}
