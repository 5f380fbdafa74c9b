//! init-sshd's SFTP server on raw client bytes: `sftp::serve` (the function the
//! `subsystem sftp` channel runs) reads length-framed packets, russh-sftp decodes them, and
//! init-sshd's handler carries them out on the real filesystem in a fresh home directory.
//!
//! Properties: no panic and no hang; every complete request frame within the size limit gets
//! exactly one well-formed reply, in order; a decoded request's reply carries its id.
//!
//! The handler really opens, writes, renames and removes what the bytes name, anywhere, so
//! this target refuses to run unless the root filesystem is read-only: `scripts/fuzz.sh`
//! runs it in a bubblewrap sandbox (`/` bound read-only, a private tmpfs `/tmp` for the
//! homes, only the corpus and artifact directories writable).
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use init_sshd::serve::channel::sftp;
use libfuzzer_sys::fuzz_target;
use russh_sftp::protocol::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// init-sshd's `max_client_packet_len`.
const MAX_PACKET: u32 = 512 * 1024;
const SSH_FXP_INIT: u8 = 1;
const SSH_FXP_VERSION: u8 = 2;
const SSH_FXP_OPEN: u8 = 3;
const SSH_FXP_SYMLINK: u8 = 20;
const SSH_FXP_EXTENDED: u8 = 200;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        assert!(
            root_read_only(),
            "sftp_request acts on the real filesystem: run it in scripts/fuzz.sh's sandbox \
             (bwrap --ro-bind / /), never bare"
        );
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

fn root_read_only() -> bool {
    // SAFETY: statvfs writes only into the zeroed struct we own; the path is a C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c"/".as_ptr(), &mut st) };
    rc == 0 && st.f_flag & libc::ST_RDONLY != 0
}

/// The request frames a client's bytes hold: (type, id, decodes as a request).
fn frames(mut data: &[u8]) -> Vec<(u8, u32, bool)> {
    let mut out = Vec::new();
    while let Some((len, rest)) = data.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len);
        data = rest;
        if len > MAX_PACKET {
            continue; // refused without a reply; the next 4 bytes are read as a length
        }
        let Some((body, rest)) = data.split_at_checked(len as usize) else {
            break;
        };
        data = rest;
        let kind = body.first().copied().unwrap_or(0);
        let decodes = Packet::try_from(&mut Bytes::copy_from_slice(body)).is_ok();
        out.push((kind, id(body), decodes));
    }
    out
}

fn id(body: &[u8]) -> u32 {
    body.get(1..5)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

fn replies(mut data: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Some((len, rest)) = data.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        let (body, rest) = rest.split_at_checked(len).expect("a reply is cut short");
        out.push(Bytes::copy_from_slice(body));
        data = rest;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let rt = runtime();
    let home = tempfile::tempdir().expect("home");
    std::fs::write(home.path().join("file.txt"), b"hello\n").expect("seed file");
    std::fs::create_dir(home.path().join("dir")).expect("seed dir");
    let out = rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        sftp::serve(server, home.path().to_path_buf(), 0).await;
        let (mut rd, mut wr) = tokio::io::split(&mut client);
        let send = async {
            let _ = wr.write_all(data).await;
            let _ = wr.shutdown().await;
        };
        let mut out = Vec::new();
        let recv = rd.read_to_end(&mut out);
        let ((), got) = tokio::join!(send, recv);
        got.expect("reading replies");
        out
    });
    let asked = frames(data);
    let got = replies(&out);
    assert_eq!(got.len(), asked.len(), "one reply per request frame");
    for ((kind, req_id, decodes), mut reply) in asked.into_iter().zip(got) {
        let rkind = reply.first().copied().unwrap_or(0);
        let rid = id(&reply);
        assert!(
            Packet::try_from(&mut reply).is_ok(),
            "reply does not decode"
        );
        let request = matches!(kind, SSH_FXP_OPEN..=SSH_FXP_SYMLINK | SSH_FXP_EXTENDED);
        if decodes && kind == SSH_FXP_INIT {
            assert_eq!(rkind, SSH_FXP_VERSION, "INIT gets VERSION");
        } else if decodes && request {
            assert_eq!(rid, req_id, "reply to request type {kind} carries its id");
        }
    }
});
