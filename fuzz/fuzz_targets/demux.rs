//! The gateway's TLS-or-SSH decision on a connection's first bytes (`tls::classify`, what
//! `tls::sniff` peeks), and what a TLS client's bytes then meet: a server session of the
//! gateway's own acceptor (`tls::acceptor`, from a PEM certificate and key like the one
//! mounted in the cluster) parsing the ClientHello. No panic on any bytes; the decision
//! depends on the first byte alone; a connection that TLS refuses stays refused.
#![no_main]

use std::io::Cursor;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rustls::ServerConfig;
use session_ssh_gateway::tls::{self, Wire};

/// The acceptor's TLS config, made once from a fresh certificate written as the gateway
/// reads it (PEM files).
fn config() -> Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let key = rcgen::KeyPair::generate().expect("key");
            let params =
                rcgen::CertificateParams::new(vec!["ssh.example.org".to_owned()]).expect("params");
            let cert = params.self_signed(&key).expect("certificate");
            let (c, k) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
            std::fs::write(&c, cert.pem()).expect("write cert");
            std::fs::write(&k, key.serialize_pem()).expect("write key");
            tls::acceptor(&c, &k).expect("acceptor").config().clone()
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let wire = tls::classify(data);
    assert_eq!(
        wire,
        tls::classify(&data[..data.len().min(1)]),
        "one byte decides"
    );
    if wire == Wire::Ssh {
        return; // The SSH side is russh's version exchange, fuzzed upstream.
    }
    let mut conn = rustls::ServerConnection::new(config()).expect("server session");
    let mut rd = Cursor::new(data);
    // Feed it as a socket would, record by record, until it is consumed or refused.
    for _ in 0..64 {
        match conn.read_tls(&mut rd) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if conn.process_new_packets().is_err() {
            assert!(
                conn.process_new_packets().is_err(),
                "a refused handshake stays refused"
            );
            break;
        }
        let _ = conn.server_name();
    }
});
