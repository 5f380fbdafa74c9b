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
//! Throughput is measured per CPU placement, BENCH_MODES (`shared,pinned`): `shared` lets
//! every process use both cores (the gateway competes with the client and the session
//! server, which on a 2-core machine caps the ratio near 0.5 when all are CPU-bound);
//! `pinned` puts the gateway alone on CPU 1 and everything else on CPU 0, direct included,
//! as when the gateway has a node of its own. Each row also gives the gateway's CPU seconds
//! per GiB relayed (the figure for sizing it).
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

/// The shell command of a transfer, for a set of ssh options.
type Script = Box<dyn Fn(&[String]) -> String>;

/// One bulk transfer.
struct Transfer {
    name: String,
    mib: u64,
    run: Script,
}

/// `sftp -b` running `cmd`, from ssh options (sftp spells the port `-P`).
fn sftp_script(o: &[String], cmd: &str) -> String {
    let mut args: Vec<String> = Vec::new();
    let mut it = o.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-p" => args.extend(["-P".to_owned(), it.next().unwrap().clone()]),
            _ => args.push(a.clone()),
        }
    }
    let target = args.pop().unwrap();
    format!("echo '{cmd}' | sftp -b - {} {}", quote(&args), target)
}

/// Where the processes run while throughput is measured.
#[derive(Clone, Copy)]
enum Placement {
    /// Every process on every CPU: client, gateway and session server compete for cores.
    Shared,
    /// The gateway alone on CPU 1; this benchmark, the ssh/sftp clients it starts, the
    /// session's server and the control plane on CPU 0 (for direct too). Shows whether the
    /// gateway itself is the bottleneck, as on a node of its own.
    Pinned,
}

impl Placement {
    fn describe(self) -> &'static str {
        match self {
            Placement::Shared => {
                "shared: client, gateway and session server on the same 2 cores (the gateway competes for CPU)"
            }
            Placement::Pinned => {
                "pinned: gateway alone on CPU 1; client and session server on CPU 0 (direct: client and server on CPU 0)"
            }
        }
    }

    /// Sets the CPU affinity of this process and every process it started (taskset -a: all
    /// threads; processes started later inherit it).
    fn apply(self, gateway: u32) {
        let all = format!("0-{}", cpus() - 1);
        let (rest, gw) = match self {
            Placement::Shared => (all.as_str(), all.as_str()),
            Placement::Pinned => ("0", "1"),
        };
        let me = std::process::id();
        for pid in std::iter::once(me).chain(descendants(me)) {
            let cpus = if pid == gateway { gw } else { rest };
            // A process that ended meanwhile is fine to miss.
            let _ = Command::new("taskset")
                .args(["-a", "-p", "-c", cpus, &pid.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// (pid, parent pid) of every process, from /proc/*/stat.
fn processes() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // The command name may hold spaces: fields start after its closing parenthesis.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
        if let Some(ppid) = ppid {
            out.push((pid, ppid));
        }
    }
    out
}

fn descendants(root: u32) -> Vec<u32> {
    let all = processes();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

/// User + system CPU seconds `pid` used so far (/proc/PID/stat; Linux counts in 1/100 s).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fields.iter().sum::<u64>() as f64 / 100.0
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

    // Throughput, once per CPU placement (see `Placement`).
    let file = work.path().join("sftp-payload");
    let st = Command::new("head")
        .args(["-c", &(sftp_mib * 1024 * 1024).to_string(), "/dev/urandom"])
        .stdout(std::fs::File::create(&file).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    // -W (a forwarded TCP connection) goes into a sink on this side.
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sport = sink.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in sink.incoming().flatten() {
            let mut s = s;
            let mut buf = vec![0u8; 1 << 16];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    let bytes = mib * 1024 * 1024;
    let transfers: Vec<Transfer> = vec![
        Transfer {
            name: format!("upload {mib} MiB"),
            mib,
            run: Box::new(move |o| {
                format!(
                    "head -c {bytes} /dev/zero | ssh {} 'cat > /dev/null'",
                    quote(o)
                )
            }),
        },
        Transfer {
            name: format!("download {mib} MiB"),
            mib,
            run: Box::new(move |o| {
                format!("ssh {} 'head -c {bytes} /dev/zero' > /dev/null", quote(o))
            }),
        },
        Transfer {
            name: format!("sftp put {sftp_mib} MiB"),
            mib: sftp_mib,
            run: Box::new({
                let cmd = format!("put {} /tmp/bench-sftp", file.display());
                move |o| sftp_script(o, &cmd)
            }),
        },
        Transfer {
            name: format!("sftp get {sftp_mib} MiB"),
            mib: sftp_mib,
            run: Box::new({
                let cmd = format!("get /tmp/bench-sftp {}", work.path().join("back").display());
                move |o| sftp_script(o, &cmd)
            }),
        },
        Transfer {
            name: format!("forwarded TCP (-W) {mib} MiB"),
            mib,
            run: Box::new(move |o| {
                let mut opts = o.to_vec();
                let target = opts.pop().unwrap();
                format!(
                    "head -c {bytes} /dev/zero | ssh {} -W 127.0.0.1:{sport} {target}",
                    quote(&opts)
                )
            }),
        },
    ];
    let gw_pid = gw.pid();
    let modes = std::env::var("BENCH_MODES").unwrap_or_else(|_| "shared,pinned".into());
    for mode in modes.split(',') {
        let placement = match mode {
            "shared" => Placement::Shared,
            "pinned" if cpus() >= 2 => Placement::Pinned,
            "pinned" => {
                println!("\npinned: skipped, needs 2 CPUs");
                continue;
            }
            other => panic!("BENCH_MODES: unknown mode {other}"),
        };
        placement.apply(gw_pid);
        println!("\nthroughput, {}", placement.describe());
        println!(
            "{:<36} {:>10} {:>10} {:>6} {:>16}",
            "MiB/s", "direct", "gateway", "ratio", "gateway CPU s/GiB"
        );
        for t in &transfers {
            let d = t.mib as f64 / timed_sh(&(t.run)(&direct));
            let cpu0 = cpu_secs(gw_pid);
            let g = t.mib as f64 / timed_sh(&(t.run)(&via));
            let per_gib = (cpu_secs(gw_pid) - cpu0) * 1024.0 / t.mib as f64;
            println!(
                "{:<36} {d:>10.1} {g:>10.1} {:>6.2} {per_gib:>16.2}",
                t.name,
                g / d
            );
        }
    }
    Placement::Shared.apply(gw_pid);

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
