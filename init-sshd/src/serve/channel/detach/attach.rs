//! `ssh -t HOST attach [N]`: hand the attaching channel to a detached shell of the same
//! key, or say why not; and the one-line notice a new login shell shows when detached ones
//! exist. Plain text on the channel, so the standard `ssh` client is all a user needs.

use std::sync::Arc;

use russh::Channel;
use russh::server::Msg;

use super::registry::{Claim, Listed};
use super::{Client, Keep};
use crate::serve::channel::exec::pty::WinSize;
use crate::serve::channel::exec::{ChannelIo, ChannelOut, PtyRequest};
use crate::serve::connctx::ConnCtx;

/// `attach` → attach the only one; `attach N` → shell N. Anything else is an ordinary
/// command for the user's shell.
pub fn parse(command: &str) -> Option<Option<u32>> {
    let mut words = command.split_whitespace();
    if words.next()? != "attach" {
        return None;
    }
    match (words.next(), words.next()) {
        (None, _) => Some(None),
        (Some(n), None) => n.parse().ok().map(Some),
        _ => None,
    }
}

fn describe(list: &[Listed]) -> Vec<String> {
    list.iter()
        .map(|s| {
            format!(
                "  {}  {}  detached {} min ago, kept {} more min",
                s.number,
                s.tty,
                s.idle.as_secs() / 60,
                s.left.as_secs().div_ceil(60)
            )
        })
        .collect()
}

/// The line a new terminal login shows when this key has detached shells.
pub fn notice(list: &[Listed]) -> Option<String> {
    let numbers: Vec<String> = list.iter().map(|s| s.number.to_string()).collect();
    match numbers.as_slice() {
        [] => None,
        [n] => Some(format!(
            "session-ssh: shell {n} of this key is detached; reattach with: ssh -t <host> attach\r\n"
        )),
        _ => Some(format!(
            "session-ssh: detached shells of this key: {}; reattach with: ssh -t <host> attach N\r\n",
            numbers.join(", ")
        )),
    }
}

/// Run `attach` on a session channel.
pub fn start(
    channel: Channel<Msg>,
    which: Option<u32>,
    pty: Option<PtyRequest>,
    keep: Keep,
    ctx: ConnCtx,
) {
    let id = channel.id();
    let (read, write) = channel.split();
    let out = ChannelOut {
        id,
        write: Arc::new(write),
        handle: ctx.handle.clone(),
    };
    tokio::spawn(async move {
        let Some(req) = pty else {
            let mut lines = describe(&keep.registry.list(&keep.owner));
            lines.push("session-ssh: attach needs a terminal: ssh -t <host> attach [N]".into());
            return finish(&out, &lines, "\n", 2).await;
        };
        let nl = "\r\n";
        match keep.registry.claim(&keep.owner, which) {
            Claim::Shell(n, handoff) => {
                tracing::info!(conn = ctx.id, shell = n, "attach");
                let size = WinSize {
                    cols: req.cols,
                    rows: req.rows,
                    pix_width: req.pix_width,
                    pix_height: req.pix_height,
                };
                let client = Client {
                    io: ChannelIo { read, out },
                    ctx,
                    size: Some(size),
                };
                if let Err(c) = handoff.send(client) {
                    let msg = format!("session-ssh: shell {n} has just ended");
                    finish(&c.io.out, &[msg], nl, 1).await;
                }
            }
            Claim::None => {
                let msg = "session-ssh: no detached shell for this key".to_owned();
                finish(&out, &[msg], nl, 1).await;
            }
            Claim::Choose(list) => {
                let mut lines = vec!["session-ssh: detached shells of this key:".to_owned()];
                lines.extend(describe(&list));
                lines.push("choose one: ssh -t <host> attach N".into());
                finish(&out, &lines, nl, 2).await;
            }
            Claim::NotFound(n) => {
                let msg = format!("session-ssh: no detached shell {n} for this key");
                finish(&out, &[msg], nl, 1).await;
            }
        }
    });
}

/// Tell the client why nothing was attached, with an exit status, and close the channel.
pub async fn finish(out: &ChannelOut, lines: &[String], nl: &str, code: u32) {
    let mut text = lines.join(nl);
    text.push_str(nl);
    let _ = out.write.data_bytes(bytes::Bytes::from(text)).await;
    let _ = out.write.exit_status(code).await;
    let _ = out.write.eof().await;
    let _ = out.write.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_attach_and_attach_n_are_ours() {
        assert_eq!(parse("attach"), Some(None));
        assert_eq!(parse("  attach   3 "), Some(Some(3)));
        assert_eq!(parse("attach x"), None);
        assert_eq!(parse("attach 1 2"), None);
        assert_eq!(parse("attached"), None);
        assert_eq!(parse("ls attach"), None);
    }

    #[test]
    fn notice_names_the_shells_or_says_nothing() {
        assert_eq!(notice(&[]), None);
        let s = |number| Listed {
            number,
            tty: "/dev/pts/1".into(),
            idle: Duration::from_secs(0),
            left: Duration::from_secs(60),
        };
        assert!(notice(&[s(4)]).unwrap().contains("shell 4 "));
        assert!(notice(&[s(1), s(3)]).unwrap().contains("1, 3; reattach"));
    }
}
