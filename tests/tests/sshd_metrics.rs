//! init-sshd e2e: the Prometheus metrics (`serve --metrics-listen`, issue 17 item 4), scraped
//! before and after real work with the OpenSSH client: a command, an SFTP upload of a known
//! size, a `-L` forward, a login with an unknown key. Every counter must move by what that
//! work is; the page is parsed strictly (every line a sample or `# HELP`/`# TYPE`).

// Helpers outside #[test] fns panic with a message on failure, like the tests.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use session_ssh_tests::sshd::net::{free_port, http_get, http_server, wait_port};
use session_ssh_tests::sshd::run::{run, write_random_file};
use session_ssh_tests::sshd::{Bg, Builder, Sshd, T, keygen};

const UPLOAD: u64 = 3 * 1024 * 1024 + 17;

/// `GET path` on the metrics port: (status line, body).
fn get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP head");
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// One scrape: `name{labels}` → value.
struct Scrape(BTreeMap<String, f64>);

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// `k="v",k2="v2"` with plain values (ours need no escapes).
fn labels_ok(s: &str) -> bool {
    s.split(',').all(|kv| {
        kv.split_once('=').is_some_and(|(k, v)| {
            is_name(k) && v.len() >= 2 && v.starts_with('"') && v.ends_with('"') && {
                let inner = &v[1..v.len() - 1];
                !inner.contains(['"', '\\', '\n'])
            }
        })
    })
}

/// The text format, strictly: a sample belongs to a family declared by `# TYPE` before it.
fn parse(body: &str) -> Scrape {
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    assert!(body.ends_with('\n'), "page must end with a newline");
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(is_name(name) && !help.is_empty(), "bad HELP line {line:?}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(is_name(name), "bad TYPE line {line:?}");
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "bad TYPE {line:?}"
            );
            assert!(
                typed.insert(name.into(), kind.into()).is_none(),
                "family typed twice: {line:?}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample: series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("labels end with }");
                assert!(labels_ok(inner), "bad labels in {line:?}");
                name
            }
            None => series,
        };
        assert!(is_name(name), "bad metric name in {line:?}");
        assert!(
            typed.contains_key(name),
            "sample before its # TYPE: {line:?}"
        );
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "series twice: {line:?}"
        );
    }
    Scrape(samples)
}

impl Scrape {
    fn v(&self, series: &str) -> f64 {
        *self
            .0
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in {:?}", self.0.keys()))
    }
}

fn scrape(port: u16) -> Scrape {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    parse(&body)
}

fn with_metrics() -> (Sshd, u16) {
    let mport = free_port();
    let s = Builder::new()
        .image_env("INIT_SSHD_METRICS_LISTEN", &format!("127.0.0.1:{mport}"))
        .start();
    assert!(
        wait_port(mport, Duration::from_secs(15)),
        "no metrics listener on {mport}\n{}",
        s.logs()
    );
    (s, mport)
}

const ACCEPTED_PK: &str = r#"session_ssh_sshd_logins_total{outcome="accepted",method="publickey"}"#;
const REFUSED_PK: &str = r#"session_ssh_sshd_logins_total{outcome="refused",method="publickey"}"#;
const UNKNOWN_KEY: &str = r#"session_ssh_sshd_auth_failures_total{reason="unknown_key"}"#;
const FROM_CLIENT: &str = r#"session_ssh_sshd_bytes_total{direction="from_client"}"#;
const TO_CLIENT: &str = r#"session_ssh_sshd_bytes_total{direction="to_client"}"#;
const OPEN: &str = "session_ssh_sshd_connections_open";
const TOTAL: &str = "session_ssh_sshd_connections_total";

fn channels(kind: &str) -> String {
    format!(r#"session_ssh_sshd_channels_total{{kind="{kind}"}}"#)
}

fn open_channels(m: &Scrape) -> f64 {
    m.0.iter()
        .filter(|(k, _)| k.starts_with("session_ssh_sshd_channels_open{"))
        .map(|(_, v)| v)
        .sum()
}

/// A scrape once no connection and no channel is open (they close asynchronously; ≤ 30 s).
fn settled(mport: u16) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = scrape(mport);
        if (m.v(OPEN) == 0.0 && open_channels(&m) == 0.0) || Instant::now() > deadline {
            return m;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn counters_move_by_the_work_done() {
    let (s, mport) = with_metrics();
    let (status, body) = get(mport, "/healthz");
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );
    assert!(get(mport, "/nope").0.starts_with("HTTP/1.1 404"));
    // The harness's readiness probes may still be queued: a banner on a connection of our own
    // (the listen queue is FIFO) means they were accepted, then wait for all to close.
    let mut probe = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    probe
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut banner = [0u8; 8];
    probe.read_exact(&mut banner).expect("banner");
    assert_eq!(&banner, b"SSH-2.0-");
    drop(probe);
    let before = settled(mport);
    assert_eq!(before.v(OPEN), 0.0);
    assert_eq!(
        before.v(&format!(
            r#"session_ssh_sshd_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );

    // 1. A command.
    assert_eq!(s.exec_ok("echo metrics-hi"), "metrics-hi\n");

    // 2. An SFTP upload of a known size.
    let src = s.root.join("up.bin");
    write_random_file(&src, UPLOAD, 7);
    let batch = s.root.join("batch");
    std::fs::write(&batch, format!("put {} up.bin\n", src.display())).expect("batch");
    let mut c = Command::new("sftp");
    c.args(s.opts()).arg("-b").arg(&batch).arg(s.host());
    s.assert_ok(&run(&mut c, b"", Duration::from_secs(120)));

    // 3. A -L forward, used once; the connection counts as open while it stands.
    let http = http_server("through the forward\n");
    let lport = free_port();
    let mut c = s.ssh();
    c.args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("127.0.0.1:{lport}:127.0.0.1:{}", http.port))
        .arg(s.host());
    let bg = Bg::spawn(&mut c);
    assert!(wait_port(lport, Duration::from_secs(20)), "{}", s.logs());
    let resp = http_get(lport).unwrap_or_else(|e| panic!("GET via -L: {e}\n{}", s.logs()));
    assert!(resp.ends_with("through the forward\n"), "{resp}");
    let during = scrape(mport);
    assert!(during.v(OPEN) >= 1.0, "the -L connection is open");
    bg.stop();

    // 4. A key the server does not know.
    let stranger = keygen(&s.root.join("client"), "stranger", "ed25519");
    let mut c = Command::new("ssh");
    c.args(s.opts_with_key(&stranger.private))
        .env_remove("SSH_AUTH_SOCK")
        .arg(s.host())
        .arg("true");
    let refused = run(&mut c, b"", T);
    assert!(!refused.success(), "an unknown key must be refused");

    let after = settled(mport);
    let diff = |k: &str| after.v(k) - before.v(k);
    let page = get(mport, "/metrics").1;
    assert_eq!(after.v(OPEN), 0.0, "connections still open\n{page}");
    assert_eq!(open_channels(&after), 0.0, "channels still open\n{page}");
    assert_eq!(diff(TOTAL), 4.0, "four connections\n{page}");
    assert_eq!(diff(ACCEPTED_PK), 3.0, "three logins\n{page}");
    assert_eq!(diff(REFUSED_PK), 1.0, "one refused login\n{page}");
    assert_eq!(diff(UNKNOWN_KEY), 1.0, "refused for an unknown key\n{page}");
    assert_eq!(diff(&channels("exec")), 1.0, "{page}");
    assert_eq!(diff(&channels("sftp")), 1.0, "{page}");
    // wait_port's probe of the -L port is forwarded too, then the GET.
    assert_eq!(diff(&channels("direct-tcpip")), 2.0, "{page}");
    assert_eq!(diff(&channels("session")), 2.0, "exec + sftp\n{page}");
    assert_eq!(diff(&channels("shell")), 0.0, "{page}");
    assert!(
        diff(FROM_CLIENT) >= UPLOAD as f64,
        "uploaded {UPLOAD} bytes, counted {}\n{page}",
        diff(FROM_CLIENT)
    );
    let down = ("metrics-hi\n".len() + resp.len()) as f64;
    assert!(diff(TO_CLIENT) >= down, "{page}");
    // Nothing names a user, a key or an address.
    for secret in [s.client.fingerprint(), stranger.fingerprint()] {
        assert!(!page.contains(&secret), "{page}");
    }
    assert!(!page.contains("127.0.0.1") && !page.contains("jovyan"));
}

#[test]
fn a_taken_metrics_port_leaves_ssh_working() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let s = Builder::new()
        .image_env("INIT_SSHD_METRICS_LISTEN", &format!("127.0.0.1:{port}"))
        .start();
    assert_eq!(s.exec_ok("echo still-here"), "still-here\n");
    let logs = s.logs();
    assert!(logs.contains("metrics listener failed"), "{logs}");
}

#[test]
fn strict_parser_refuses_malformed_pages() {
    // The checks above are only as good as the parser: each of these must be refused.
    for bad in [
        "x 1\n",                                          // no # TYPE
        "# TYPE x counter\nx{a=1} 1\n",                   // unquoted label
        "# TYPE x counter\nx one\n",                      // not a number
        "# TYPE x counter\nx 1",                          // no final newline
        "# TYPE x counter\n# TYPE x counter\nx 1\n",      // typed twice
        "# TYPE x summary-ish\nx 1\n",                    // unknown type
        "# TYPE x counter\nx{a=\"1\"} 1\nx{a=\"1\"} 2\n", // series twice
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
    assert_eq!(
        parse("# HELP x X.\n# TYPE x gauge\nx{a=\"b\"} 2\n").v("x{a=\"b\"}"),
        2.0
    );
}
