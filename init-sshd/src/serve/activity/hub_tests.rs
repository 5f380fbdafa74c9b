#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpListener;

use super::*;
use crate::serve::activity::{Counts, Marks, report};

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

fn target(url: &str) -> Target {
    Target::from_env(env(&[
        (URL_VAR, url),
        (TOKEN_VAR, "secret-token"),
        (SERVER_VAR, "gpu"),
    ]))
    .unwrap()
}

#[test]
fn body_is_what_singleuser_sends() {
    let v: serde_json::Value = serde_json::from_str(&body("", 1_700_000_000)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "servers": {"": {"last_activity": "2023-11-14T22:13:20Z"}},
            "last_activity": "2023-11-14T22:13:20Z",
        })
    );
    let named: serde_json::Value = serde_json::from_str(&body("gpu", 0)).unwrap();
    assert_eq!(
        named["servers"]["gpu"]["last_activity"],
        "1970-01-01T00:00:00Z"
    );
}

#[test]
fn iso8601_utc() {
    for (t, want) in [
        (0, "1970-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (1_709_164_800, "2024-02-29T00:00:00Z"),
        (1_798_521_536, "2026-12-29T05:18:56Z"),
        (4_102_444_800, "2100-01-01T00:00:00Z"),
        (253_402_300_799, "9999-12-31T23:59:59Z"),
    ] {
        assert_eq!(iso8601(t), want, "{t}");
    }
}

#[test]
fn urls() {
    let ok = |u: &str| split_url(u).unwrap();
    assert_eq!(
        ok("http://hub:8081/hub/api/users/alice/activity"),
        (
            "hub:8081".into(),
            "hub".into(),
            8081,
            "/hub/api/users/alice/activity".into()
        )
    );
    assert_eq!(
        ok("HTTP://10.0.0.1"),
        ("10.0.0.1".into(), "10.0.0.1".into(), 80, "/".into())
    );
    assert_eq!(ok("http://[::1]:8081/a").1, "::1");
    assert_eq!(ok("http://[::1]:8081/a").2, 8081);
    assert_eq!(split_url("https://hub/x"), Err(Off::Https(URL_VAR)));
    for bad in [
        "hub:8081/x",
        "ftp://hub/x",
        "http:///x",
        "http://u@hub/x",
        "http://hub:port/x",
        "http://[::1/x",
    ] {
        assert_eq!(split_url(bad), Err(Off::BadUrl(URL_VAR)), "{bad}");
    }
}

#[test]
fn off_without_url_or_token_or_with_line_breaks() {
    let url = "http://hub:8081/hub/api/users/a/activity";
    assert_eq!(
        Target::from_env(env(&[(TOKEN_VAR, "t")])).unwrap_err(),
        Off::Missing(URL_VAR)
    );
    assert_eq!(
        Target::from_env(env(&[(URL_VAR, url), (TOKEN_VAR, "")])).unwrap_err(),
        Off::Missing(TOKEN_VAR)
    );
    assert_eq!(
        Target::from_env(env(&[(URL_VAR, url), (TOKEN_VAR, "t\r\nX-Evil: 1")])).unwrap_err(),
        Off::Control(TOKEN_VAR)
    );
    let t = Target::from_env(env(&[(URL_VAR, url), (TOKEN_VAR, "t")])).unwrap();
    assert_eq!(
        t.server, "",
        "the default server without JUPYTERHUB_SERVER_NAME"
    );
    assert!(!format!("{t:?}").contains("\"t\""), "no token in Debug");
}

#[test]
fn request_head() {
    let t = target("http://hub:8081/hub/api/users/alice/activity");
    let req = t.request(0);
    let (head, body) = req.split_once("\r\n\r\n").unwrap();
    let lines: Vec<&str> = head.split("\r\n").collect();
    assert_eq!(lines[0], "POST /hub/api/users/alice/activity HTTP/1.1");
    for want in [
        "Host: hub:8081",
        "Authorization: token secret-token",
        "Content-Type: application/json",
        "Connection: close",
    ] {
        assert!(lines.contains(&want), "{want} in {head}");
    }
    assert!(lines.contains(&format!("Content-Length: {}", body.len()).as_str()));
    assert_eq!(body, super::body("gpu", 0));
}

#[test]
fn status_lines() {
    assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n").unwrap(), Some(200));
    assert_eq!(status_of(b"HTTP/1.0 403 Forbidden\r\n").unwrap(), Some(403));
    assert_eq!(status_of(b"HTTP/1.1 20").unwrap(), None);
    assert!(status_of(b"SSH-2.0-x\r\n").is_err());
    assert!(status_of(b"HTTP/1.1 2000 OK\r\n").is_err());
}

/// A fake hub: answers every request with one fixed answer, counts them, keeps the last.
struct FakeHub {
    url: String,
    count: Arc<AtomicUsize>,
    last: Arc<std::sync::Mutex<String>>,
}

impl FakeHub {
    async fn start(answer: &'static str) -> FakeHub {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/hub/api/users/alice/activity",
            l.local_addr().unwrap()
        );
        let count = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(std::sync::Mutex::new(String::new()));
        let (c, s) = (count.clone(), last.clone());
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 8192];
                let mut got = 0;
                // The request is small and its body ends the JSON object.
                while got < buf.len() {
                    let n = sock.read(&mut buf[got..]).await.unwrap();
                    got += n;
                    if n == 0 || buf[..got].ends_with(b"}") {
                        break;
                    }
                }
                *s.lock().unwrap() = String::from_utf8_lossy(&buf[..got]).into_owned();
                c.fetch_add(1, Ordering::SeqCst);
                let _ = sock.write_all(answer.as_bytes()).await;
            }
        });
        FakeHub { url, count, last }
    }

    fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

#[tokio::test]
async fn posts_and_reads_the_answer() {
    let hub = FakeHub::start(OK).await;
    target(&hub.url).post(1_700_000_000).await.unwrap();
    assert_eq!(hub.requests(), 1);
    let req = hub.last.lock().unwrap().clone();
    assert!(req.starts_with("POST /hub/api/users/alice/activity HTTP/1.1\r\n"));
    assert!(req.ends_with(&body("gpu", 1_700_000_000)));

    let refusing = FakeHub::start(
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 30\r\n\r\n{\"message\": \"not your server\"}",
    )
    .await;
    let err = target(&refusing.url).post(0).await.unwrap_err();
    assert!(
        matches!(&err, Error::Status { status: 403, body } if body.contains("not your server")),
        "{err}"
    );
}

/// The reporter on `marks` under `rule`, every 50 ms, against `hub`.
fn reporter(hub: &FakeHub, marks: &'static Marks, rule: Counts) -> tokio::task::JoinHandle<()> {
    let interval = Duration::from_millis(50);
    tokio::spawn(report::run(target(&hub.url), marks, rule, interval))
}

fn new_marks() -> &'static Marks {
    Box::leak(Box::new(Marks::new()))
}

const SETTLE: Duration = Duration::from_millis(300);

#[tokio::test]
async fn reports_once_per_activity_and_never_when_idle() {
    let hub = FakeHub::start(OK).await;
    let marks = new_marks();
    let task = reporter(&hub, marks, Counts::Traffic);
    tokio::time::sleep(SETTLE).await;
    assert_eq!(hub.requests(), 0, "no activity, no report");
    Marks::mark(&marks.to_client);
    tokio::time::sleep(SETTLE).await;
    assert_eq!(hub.requests(), 1, "one report for the activity");
    tokio::time::sleep(SETTLE).await;
    assert_eq!(hub.requests(), 1, "and no more while idle");
    task.abort();
}

#[tokio::test]
async fn output_alone_is_not_reported_under_input() {
    let hub = FakeHub::start(OK).await;
    let marks = new_marks();
    let task = reporter(&hub, marks, Counts::Input);
    Marks::mark(&marks.to_client);
    tokio::time::sleep(SETTLE).await;
    assert_eq!(hub.requests(), 0);
    Marks::mark(&marks.from_client);
    tokio::time::sleep(SETTLE).await;
    assert_eq!(hub.requests(), 1);
    task.abort();
}

#[tokio::test]
async fn a_failing_hub_is_retried_with_backoff() {
    let hub = FakeHub::start("HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n").await;
    let marks = new_marks();
    Marks::mark(&marks.from_client);
    let task = reporter(&hub, marks, Counts::Traffic);
    // Attempts at 50, 150, 350, 750 ms (waits 50, 100, 200, 400): 4 in 1 s, not 20.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let n = hub.requests();
    assert!((2..=5).contains(&n), "{n} attempts");
    task.abort();
}
