//! JupyterHub's activity endpoint: what `jupyterhub-singleuser` sends
//! (`POST $JUPYTERHUB_ACTIVITY_URL`, `Authorization: token $JUPYTERHUB_API_TOKEN`,
//! `{"servers": {NAME: {"last_activity": T}}, "last_activity": T}`), over a small HTTP/1.1
//! client of our own: the hub is reached inside the cluster over plain http, and a general
//! HTTP client would add more to the static binary than this one request needs.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connect, send and read the status within this.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Most of a response read (status line, headers and an error message).
const RESPONSE_MAX: usize = 4096;
/// Most of an error body put into the log.
const BODY_IN_LOG: usize = 200;

/// Where and as whom activity is reported.
#[derive(Clone)]
pub struct Target {
    /// `host:port` as in the URL (the Host header).
    authority: String,
    host: String,
    port: u16,
    path: String,
    token: String,
    /// `JUPYTERHUB_SERVER_NAME`: "" for the default server.
    server: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Target")
            .field("url", &self.url())
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Why reporting is off.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum Off {
    #[error("no {0} in the session's environment (not a JupyterHub server)")]
    Missing(&'static str),
    #[error("{0} is an https URL; only plain http (the hub inside the cluster) is supported")]
    Https(&'static str),
    #[error("{0} is not an http URL this client can use")]
    BadUrl(&'static str),
    #[error("{0} holds a control character")]
    Control(&'static str),
}

/// Why one report failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {} s", TIMEOUT.as_secs())]
    Timeout,
    #[error("not an HTTP response: {0:?}")]
    BadResponse(String),
    #[error("hub answered {status}: {body}")]
    Status { status: u16, body: String },
}

const URL_VAR: &str = "JUPYTERHUB_ACTIVITY_URL";
const TOKEN_VAR: &str = "JUPYTERHUB_API_TOKEN";
const SERVER_VAR: &str = "JUPYTERHUB_SERVER_NAME";

impl Target {
    /// From the session's environment (`get` reads one variable).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Target, Off> {
        let present = |k: &'static str| get(k).filter(|v| !v.is_empty()).ok_or(Off::Missing(k));
        let url = present(URL_VAR)?;
        let token = present(TOKEN_VAR)?;
        let server = get(SERVER_VAR).unwrap_or_default();
        // Everything here ends up in the request head: no line breaks smuggled in.
        for (k, v) in [(URL_VAR, &url), (TOKEN_VAR, &token), (SERVER_VAR, &server)] {
            if v.chars().any(char::is_control) {
                return Err(Off::Control(k));
            }
        }
        let (authority, host, port, path) = split_url(&url)?;
        Ok(Target {
            authority,
            host,
            port,
            path,
            token,
            server,
        })
    }

    /// The URL reported to, for the log.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }

    /// The request that reports activity at `last` (Unix seconds).
    fn request(&self, last: u64) -> String {
        let body = body(&self.server, last);
        format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: token {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {len}\r\n\
             User-Agent: init-sshd/{version}\r\nConnection: close\r\n\r\n{body}",
            path = self.path,
            host = self.authority,
            token = self.token,
            len = body.len(),
            version = env!("CARGO_PKG_VERSION"),
        )
    }

    /// Report activity at `last` (Unix seconds); Ok on a 2xx answer.
    pub async fn post(&self, last: u64) -> Result<(), Error> {
        let exchange = async {
            let mut s = TcpStream::connect((self.host.as_str(), self.port)).await?;
            s.write_all(self.request(last).as_bytes()).await?;
            read_answer(&mut s).await
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| Error::Timeout)??;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(Error::Status { status, body })
        }
    }
}

/// `http://host[:port][/path]` -> (authority, host, port, path).
fn split_url(url: &str) -> Result<(String, String, u16, String), Off> {
    let bad = Off::BadUrl(URL_VAR);
    let scheme_end = url.find("://").ok_or(Off::BadUrl(URL_VAR))?;
    let scheme = url
        .get(..scheme_end)
        .unwrap_or_default()
        .to_ascii_lowercase();
    if scheme == "https" {
        return Err(Off::Https(URL_VAR));
    }
    if scheme != "http" {
        return Err(bad);
    }
    let rest = url.get(scheme_end + 3..).unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest.get(..i), rest.get(i..)),
        None => (Some(rest), Some("/")),
    };
    let (authority, path) = (authority.unwrap_or_default(), path.unwrap_or("/"));
    if authority.is_empty() || authority.contains('@') {
        return Err(bad);
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        // [::1]:8081
        let (h, tail) = v6.split_once(']').ok_or(Off::BadUrl(URL_VAR))?;
        (h, tail.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| Off::BadUrl(URL_VAR))?,
        None => 80,
    };
    if host.is_empty() {
        return Err(bad);
    }
    Ok((authority.to_owned(), host.to_owned(), port, path.to_owned()))
}

/// The JSON body `jupyterhub-singleuser` sends: the server's and the user's last activity.
pub fn body(server: &str, last: u64) -> String {
    let at = iso8601(last);
    serde_json::json!({
        "servers": { server: { "last_activity": at } },
        "last_activity": at,
    })
    .to_string()
}

/// Unix seconds as ISO 8601 UTC with a `Z`, e.g. `2026-12-06T05:18:56Z`.
pub fn iso8601(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    let (y, m, d) = civil_date(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Days since 1970-01-01 -> (year, month, day) in the proleptic Gregorian calendar.
/// Counts in 400-year eras that start on March 1st, so the leap day ends a year.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // 1970-01-01 is day 719_468 after 0000-03-01.
    let from_epoch0 = days + 719_468;
    let era = from_epoch0 / 146_097;
    let day_of_era = from_epoch0 % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March (0) to February (11), 153 days per five months.
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// Read the answer's status code and, on an error, the start of its body.
async fn read_answer(s: &mut TcpStream) -> Result<(u16, String), Error> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let done = n == 0 || buf.len() >= RESPONSE_MAX;
        if let Some(status) = status_of(&buf)? {
            // A success needs nothing more; an error's message is worth the log.
            if (200..300).contains(&status) || done {
                return Ok((status, error_body(&buf)));
            }
        } else if done {
            return Err(Error::BadResponse(head_text(&buf)));
        }
    }
}

/// The status code once the status line is complete (None: not yet).
fn status_of(buf: &[u8]) -> Result<Option<u16>, Error> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(buf.get(..end).unwrap_or_default()).into_owned();
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") && code.len() == 3 => code
            .parse()
            .map(Some)
            .map_err(|_| Error::BadResponse(line.clone())),
        _ => Err(Error::BadResponse(line)),
    }
}

fn error_body(buf: &[u8]) -> String {
    let body = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .and_then(|i| buf.get(i + 4..))
        .unwrap_or_default();
    head_text(body)
}

fn head_text(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .chars()
        .filter(|c| !c.is_control())
        .take(BODY_IN_LOG)
        .collect()
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
