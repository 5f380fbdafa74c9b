//! Tests of the russh flow-control patch (patches/russh-0.65.1-flow-control.patch):
//! a real russh server and a real russh client over TCP on 127.0.0.1.
//!
//! Against unpatched russh 0.65.1 both tests fail by timeout: a stalled
//! consumer blocks the whole connection loop, so the second channel never
//! answers and the `cat`-with-slow-reader shape deadlocks (russh #392).

// The harness is included here rather than exported from the crate's lib
// (which other helpers own); everything in it is used by these tests.
#[path = "../src/flow.rs"]
mod flow;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flow::{FlowClient, FlowServer, Payload, WINDOW};
use russh::ChannelMsg;
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

/// (a) a channel whose consumer reads nothing holds at most the window,
/// (b) another channel of the same connection still round-trips,
/// (c) once the consumer reads, all data arrives in order (sha256),
/// (d) EOF and CLOSE arrive after all data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_channel_is_bounded_and_others_keep_flowing() {
    let mut server = FlowServer::start().await.unwrap();
    let client = FlowClient::connect(server.addr).await.unwrap();
    let payload = Arc::new(Payload::new(256 * MIB));
    let expected = payload.sha256();

    let held = client.exec("hold").await.unwrap();
    let (_held_read, held_write) = held.split();
    let pushed = Arc::new(AtomicU64::new(0));
    let rss_before = flow::rss_bytes().unwrap();
    let pusher = {
        let (payload, pushed) = (payload.clone(), pushed.clone());
        tokio::spawn(async move {
            flow::push(&held_write, &payload, &pushed).await?;
            // Sent right behind the data: must reach the consumer after it.
            held_write.eof().await?;
            held_write.close().await?;
            anyhow::Ok(())
        })
    };

    // (a) The client can only push what the server's window allows, and the
    // server buffers no more than the client pushed.
    let stalled = flow::settle(&pushed, Duration::from_secs(1), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        stalled <= u64::from(WINDOW),
        "client pushed {stalled} bytes into an unread channel, window is {WINDOW}"
    );
    assert!(
        stalled >= u64::from(WINDOW) / 2,
        "only {stalled} bytes flowed before the stall; the window was not used"
    );
    let rss_stalled = flow::rss_bytes().unwrap();
    assert!(
        rss_stalled.saturating_sub(rss_before) < 32 * MIB,
        "RSS grew by {} bytes while the channel was stalled",
        rss_stalled.saturating_sub(rss_before)
    );

    // (b) A second channel on the same connection round-trips 1 MiB.
    let echoed = tokio::time::timeout(Duration::from_secs(20), async {
        let small = Payload::new(MIB);
        let channel = client.exec("echo").await?;
        let (mut read, write) = channel.split();
        let sent = Arc::new(AtomicU64::new(0));
        flow::push(&write, &small, &sent).await?;
        write.eof().await?;
        let mut hash = Sha256::new();
        while let Some(msg) = read.wait().await {
            match msg {
                ChannelMsg::Data { data } => hash.update(&data),
                ChannelMsg::Eof | ChannelMsg::Close => break,
                _ => {}
            }
        }
        anyhow::Ok((flow::hex(&hash.finalize()), small.sha256()))
    })
    .await
    .expect("second channel of the connection is stuck behind the stalled one")
    .unwrap();
    assert_eq!(echoed.0, echoed.1, "second channel echoed different bytes");
    assert_eq!(
        pushed.load(Ordering::SeqCst),
        stalled,
        "the held channel moved although nobody read it"
    );

    // (c) Release the consumer: everything arrives, in order.
    server.release();
    tokio::time::timeout(Duration::from_secs(120), pusher)
        .await
        .expect("upload did not finish after the consumer started reading")
        .unwrap()
        .unwrap();
    let report = loop {
        let r = server.report(Duration::from_secs(60)).await.unwrap();
        if r.command == "hold" {
            break r;
        }
    };
    assert_eq!(
        report.bytes, payload.total,
        "bytes received by the consumer"
    );
    assert_eq!(report.sha256, expected, "data corrupted or reordered");
    // (d) EOF and CLOSE were queued behind the data and came after all of it.
    assert_eq!(report.eof_after, Some(payload.total), "EOF position");
    assert_eq!(report.close_after, Some(payload.total), "CLOSE position");
    assert!(!report.out_of_order, "data or EOF after CLOSE: {report:?}");
}

/// The shape of russh issue #392: the server copies stdin to stdout like
/// `cat` while the client uploads 64 MiB and reads the output slowly. Output
/// waits for the client's window, input for the consumer; the connection loop
/// must keep processing WINDOW_ADJUST meanwhile, or this never completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_with_slow_reader_completes() {
    let mut server = FlowServer::start().await.unwrap();
    let client = FlowClient::connect(server.addr).await.unwrap();
    let payload = Arc::new(Payload::new(64 * MIB));
    let expected = payload.sha256();

    let channel = client.exec("echo").await.unwrap();
    let (mut read, write) = channel.split();
    let pusher = {
        let payload = payload.clone();
        tokio::spawn(async move {
            let pushed = AtomicU64::new(0);
            flow::push(&write, &payload, &pushed).await?;
            write.eof().await?;
            anyhow::Ok(write)
        })
    };
    let (got, bytes) = tokio::time::timeout(Duration::from_secs(120), async {
        let mut hash = Sha256::new();
        let mut bytes = 0u64;
        while let Some(msg) = read.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    bytes += data.len() as u64;
                    hash.update(&data);
                    // A slow reader: ~2 ms per packet (<= 32 KiB).
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                ChannelMsg::Eof | ChannelMsg::Close => break,
                _ => {}
            }
        }
        (flow::hex(&hash.finalize()), bytes)
    })
    .await
    .expect("cat with a slow reader deadlocked (russh #392)");
    assert_eq!(bytes, payload.total);
    assert_eq!(got, expected, "output differs from input");
    let _write = pusher.await.unwrap().unwrap();
    let report = server.report(Duration::from_secs(10)).await.unwrap();
    assert_eq!(report.bytes, payload.total);
    assert_eq!(report.sha256, expected);
}

/// Bulk transfer through one channel both ways, 256 MiB each, with the
/// sha256 checked; prints MB/s (in-process client and server share the CPU).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_upload_and_download_are_intact() {
    let mut server = FlowServer::start().await.unwrap();
    let client = FlowClient::connect(server.addr).await.unwrap();
    let payload = Payload::new(256 * MIB);
    let expected = payload.sha256();

    let started = std::time::Instant::now();
    let channel = client.exec("sink").await.unwrap();
    let (_read, write) = channel.split();
    let pushed = AtomicU64::new(0);
    flow::push(&write, &payload, &pushed).await.unwrap();
    write.eof().await.unwrap();
    let report = server.report(Duration::from_secs(120)).await.unwrap();
    let up = started.elapsed();
    assert_eq!(report.bytes, payload.total);
    assert_eq!(report.sha256, expected);
    assert_eq!(report.eof_after, Some(payload.total));

    let started = std::time::Instant::now();
    let channel = client
        .exec(&format!("source {}", payload.total))
        .await
        .unwrap();
    let (mut read, _write) = channel.split();
    let (got, bytes) = tokio::time::timeout(Duration::from_secs(120), async {
        let mut hash = Sha256::new();
        let mut bytes = 0u64;
        while let Some(msg) = read.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    bytes += data.len() as u64;
                    hash.update(&data);
                }
                ChannelMsg::Eof | ChannelMsg::Close => break,
                _ => {}
            }
        }
        (flow::hex(&hash.finalize()), bytes)
    })
    .await
    .expect("download stalled");
    let down = started.elapsed();
    assert_eq!(bytes, payload.total);
    assert_eq!(got, expected);
    let mb = payload.total as f64 / 1e6;
    println!(
        "upload {:.0} MB/s, download {:.0} MB/s (256 MiB, in-process)",
        mb / up.as_secs_f64(),
        mb / down.as_secs_f64()
    );
}
