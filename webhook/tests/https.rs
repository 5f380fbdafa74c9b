//! Real HTTPS: the server on 127.0.0.1:0 with certificates from session-ssh-certs, a real
//! rustls client trusting the generated CA, HTTP/1.1 and HTTP/2, certificate rotation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use session_ssh_certs::{Ca, ServerCertSpec};
use session_ssh_webhook::admission::AppState;
use session_ssh_webhook::config::{Config, Platform};
use session_ssh_webhook::serve::Server;
use session_ssh_webhook::tls::CertReloader;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

struct Running {
    addr: SocketAddr,
    metrics: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path) -> Running {
    start_with_drain(dir, Duration::ZERO).await
}

async fn start_with_drain(dir: &Path, drain: Duration) -> Running {
    let state = AppState::new(Config::preset(Platform::Jupyterhub));
    let reloader = CertReloader::new(
        &dir.join("tls.crt"),
        &dir.join("tls.key"),
        state.metrics.clone(),
    );
    reloader.load().unwrap();
    // Kept alive by the runtime for the test's duration.
    let _watch = reloader.spawn_watch(Duration::from_millis(50));
    let any = "127.0.0.1:0".parse().unwrap();
    let server = Server::bind(any, any, state, reloader).await.unwrap();
    let addr = server.local_addr().unwrap();
    let metrics = server.metrics_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(
        async move {
            let _ = rx.await;
        },
        drain,
    ));
    Running {
        addr,
        metrics,
        stop: Some(tx),
        task,
    }
}

async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[u8],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await
}

fn peer_cert(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn review_body() -> Vec<u8> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jupyterhub-alice.pod.yaml"
    ))
    .unwrap();
    let pod: Value = serde_yaml::from_str(&text).unwrap();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3f1c6a1e-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "jhub",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:jhub:hub"},
            "object": pod,
            "dryRun": false
        }
    }))
    .unwrap()
}

fn mutate_request() -> Request<Body> {
    Request::post("/mutate")
        .header("content-type", "application/json")
        .header("host", "127.0.0.1")
        .body(Body::from(review_body()))
        .unwrap()
}

async fn check_response(res: hyper::Response<hyper::body::Incoming>) {
    assert_eq!(res.status(), 200);
    let bytes = axum::body::to_bytes(Body::new(res.into_body()), usize::MAX)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["response"]["uid"], "3f1c6a1e-0000-4000-8000-000000000001");
    assert_eq!(v["response"]["allowed"], true);
    assert_eq!(v["response"]["patchType"], "JSONPatch");
}

type H2 = hyper::client::conn::http2::SendRequest<Body>;

async fn h2(tls: TlsStream<TcpStream>) -> H2 {
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

async fn plain_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "127.0.0.1")
        .body(Body::empty())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = axum::body::to_bytes(Body::new(res.into_body()), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_http1_http2_metrics_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate().unwrap();
    let first = ca.issue_bundle(&ServerCertSpec::localhost()).unwrap();
    first.write_pem_files(dir.path()).unwrap();
    let mut srv = start(dir.path()).await;

    // HTTP/1.1 over TLS.
    let tls = connect(srv.addr, ca.cert_pem(), b"http/1.1").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    h1.ready().await.unwrap();
    check_response(h1.send_request(mutate_request()).await.unwrap()).await;
    // Keep-alive: a second request on the same connection.
    h1.ready().await.unwrap();
    check_response(h1.send_request(mutate_request()).await.unwrap()).await;

    // HTTP/2 over TLS; this connection stays open across the rotation.
    let tls = connect(srv.addr, ca.cert_pem(), b"h2").await.unwrap();
    let old_cert = peer_cert(&tls);
    let mut long_lived = h2(tls).await;
    check_response(long_lived.send_request(mutate_request()).await.unwrap()).await;

    // A client that trusts another CA is refused.
    let stranger = Ca::generate().unwrap();
    assert!(connect(srv.addr, stranger.cert_pem(), b"h2").await.is_err());

    // Rotate to a certificate from a new CA, the way a renewal writes the files.
    let ca2 = Ca::generate().unwrap();
    let second = ca2.issue_bundle(&ServerCertSpec::localhost()).unwrap();
    second.write_pem_files(dir.path()).unwrap();
    let mut new_cert = None;
    for _ in 0..100 {
        if let Ok(tls) = connect(srv.addr, ca2.cert_pem(), b"h2").await {
            new_cert = Some(peer_cert(&tls));
            let mut fresh = h2(tls).await;
            check_response(fresh.send_request(mutate_request()).await.unwrap()).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_cert = new_cert.expect("new handshakes see the rotated certificate");
    assert_ne!(new_cert, old_cert);
    assert_eq!(
        new_cert.as_ref(),
        rustls_pemfile::certs(&mut second.cert_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .as_ref()
    );
    // The old CA no longer verifies new handshakes...
    assert!(connect(srv.addr, ca.cert_pem(), b"h2").await.is_err());
    // ...but the connection established before the rotation keeps working.
    check_response(long_lived.send_request(mutate_request()).await.unwrap()).await;
    h1.ready().await.unwrap();
    check_response(h1.send_request(mutate_request()).await.unwrap()).await;

    // Health and metrics on the plain-HTTP port.
    assert_eq!(plain_get(srv.metrics, "/healthz").await.0, 200);
    assert_eq!(plain_get(srv.metrics, "/readyz").await.0, 200);
    let (status, text) = plain_get(srv.metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.contains(
            "session_ssh_admission_requests_total{outcome=\"injected\",reason=\"injected\"} 6\n"
        ),
        "{text}"
    );
    assert!(text.contains("session_ssh_tls_reloads_total 2\n"), "{text}");
    assert!(text.contains("session_ssh_build_info{version=\""), "{text}");
    assert_eq!(plain_get(srv.metrics, "/nope").await.0, 404);

    // Graceful shutdown: the server returns, open connections are told to go away.
    srv.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), &mut srv.task)
        .await
        .expect("server stops")
        .unwrap();
    assert!(TcpStream::connect(srv.addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_not_ready_then_drains() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate().unwrap();
    ca.issue_bundle(&ServerCertSpec::localhost())
        .unwrap()
        .write_pem_files(dir.path())
        .unwrap();
    let mut srv = start_with_drain(dir.path(), Duration::from_millis(1500)).await;
    let tls = connect(srv.addr, ca.cert_pem(), b"h2").await.unwrap();
    let mut conn = h2(tls).await;
    assert_eq!(plain_get(srv.metrics, "/readyz").await.0, 200);

    srv.stop.take().unwrap().send(()).unwrap();
    // During the drain delay: not ready, but admission requests are still answered.
    let mut saw_not_ready = false;
    for _ in 0..20 {
        if plain_get(srv.metrics, "/readyz").await.0 == 503 {
            saw_not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(saw_not_ready, "readyz never turned 503");
    check_response(conn.send_request(mutate_request()).await.unwrap()).await;
    let fresh = connect(srv.addr, ca.cert_pem(), b"h2").await.unwrap();
    let mut fresh = h2(fresh).await;
    check_response(fresh.send_request(mutate_request()).await.unwrap()).await;
    // Then the server stops by itself.
    tokio::time::timeout(Duration::from_secs(15), &mut srv.task)
        .await
        .expect("server stops after the drain")
        .unwrap();
}
