//! One channel relayed between the user's side and the session's side.
//!
//! Flow control is end to end with no buffer of our own: we take a message from one side
//! only after the previous one was accepted by the other side's window (the patched russh
//! grants window to a peer only as we take its data), so a slow reader on either end slows
//! only its own channel.

use russh::server;
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, client};

/// Bytes moved, for the channel's log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub to_session: u64,
    pub to_user: u64,
}

/// Relay until both directions have ended; closing either side closes the other.
/// `exit` carries the user's connection for exit signals (session channels only).
pub async fn relay(
    user: Channel<server::Msg>,
    session: Channel<client::Msg>,
    exit: Option<server::Handle>,
) -> Moved {
    let user_id = user.id();
    let (user_rx, user_tx) = user.split();
    let (sess_rx, sess_tx) = session.split();
    let (to_session, to_user) = tokio::join!(
        to_session(user_rx, sess_tx),
        to_user(sess_rx, user_tx, exit.map(|h| (h, user_id)))
    );
    Moved {
        to_session,
        to_user,
    }
}

/// The user's data and requests to the session; returns the data bytes.
async fn to_session(mut rx: ChannelReadHalf, tx: ChannelWriteHalf<client::Msg>) -> u64 {
    let mut n = 0u64;
    while let Some(msg) = rx.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                n += data.len() as u64;
                tx.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                n += data.len() as u64;
                tx.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => tx.eof().await,
            ChannelMsg::Close => break,
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                tx.window_change(col_width, row_height, pix_width, pix_height)
                    .await
            }
            ChannelMsg::Signal { signal } => tx.signal(signal).await,
            // Requests before the shell started were answered by the handler.
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = tx.close().await;
    n
}

/// The session's data, exit status and signal to the user; returns the data bytes.
async fn to_user(
    mut rx: ChannelReadHalf,
    tx: ChannelWriteHalf<server::Msg>,
    exit: Option<(server::Handle, ChannelId)>,
) -> u64 {
    let mut n = 0u64;
    while let Some(msg) = rx.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                n += data.len() as u64;
                tx.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                n += data.len() as u64;
                tx.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => tx.eof().await,
            ChannelMsg::Close => break,
            ChannelMsg::ExitStatus { exit_status } => tx.exit_status(exit_status).await,
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => match &exit {
                Some((h, id)) => h
                    .exit_signal_request(*id, signal_name, core_dumped, error_message, lang_tag)
                    .await
                    .map_err(|_| russh::Error::SendError),
                None => Ok(()),
            },
            _ => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
    let _ = tx.close().await;
    n
}
