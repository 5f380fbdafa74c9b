//! Hub-token login (JupyterHub preset, optional): a user with no SSH key types a hub API
//! token as the password. The hub says who owns the token and what it may do; the gateway
//! lets the owner into their own server only, and the session checks the owner again.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, HOST, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

/// Longest password looked at (hub tokens are 32 hex characters).
pub const MAX_TOKEN: usize = 256;
/// Largest hub answer read (a user model with its servers).
const MAX_BODY: usize = 256 * 1024;

/// Why the hub could not answer (a refused token is not an error: `Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--hub-api-url {url:?}: {why}")]
    Url { url: String, why: &'static str },
    #[error("hub API: {0}")]
    Http(String),
    #[error("hub API: no answer in {0:?}")]
    Timeout(Duration),
    #[error("hub API: HTTP status {0}")]
    Status(StatusCode),
    #[error("hub API: unexpected answer: {0}")]
    Body(#[from] serde_json::Error),
}

/// The hub's REST API, e.g. `http://hub:8081/hub/api` (Zero to JupyterHub's hub Service).
#[derive(Debug, Clone)]
pub struct HubApi {
    authority: String,
    base: String,
    timeout: Duration,
}

/// A token's owner as the hub describes it (`GET /user`).
#[derive(Debug, Clone, Deserialize)]
pub struct Owner {
    pub name: String,
    /// `user` or `service`.
    #[serde(default)]
    pub kind: String,
    /// The token's scopes, expanded by the hub.
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl HubApi {
    /// Checks the URL at start-up: plain `http://host[:port]/path` only.
    pub fn new(url: &str, timeout: Duration) -> Result<HubApi, Error> {
        let bad = |why| Error::Url {
            url: url.to_owned(),
            why,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported; use the hub's in-cluster http Service (Zero to JupyterHub: http://hub:8081/hub/api)",
                ));
            }
            _ => return Err(bad("needs http://host:port/hub/api")),
        }
        let host = uri.host().filter(|h| !h.is_empty()).ok_or(bad("no host"))?;
        if uri.query().is_some() {
            return Err(bad("no query string allowed"));
        }
        Ok(HubApi {
            authority: format!("{host}:{}", uri.port_u16().unwrap_or(80)),
            base: uri.path().trim_end_matches('/').to_owned(),
            timeout,
        })
    }

    /// Who owns `token`; None when the hub does not accept it (or it is not a token).
    pub async fn owner(&self, token: &str) -> Result<Option<Owner>, Error> {
        if token.is_empty() || token.len() > MAX_TOKEN || token.contains(char::is_whitespace) {
            return Ok(None);
        }
        let Ok(auth) = HeaderValue::from_str(&format!("token {token}")) else {
            return Ok(None);
        };
        tokio::time::timeout(self.timeout, self.ask(auth))
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
    }

    async fn ask(&self, auth: HeaderValue) -> Result<Option<Owner>, Error> {
        let http = |e: &dyn std::fmt::Display| Error::Http(e.to_string());
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| http(&e))?;
        let _ = tcp.set_nodelay(true);
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| http(&e))?;
        // Ends when the answer has been read and `send` is dropped.
        tokio::spawn(conn);
        let req = Request::get(format!("{}/user", self.base))
            .header(HOST, &self.authority)
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| http(&e))?;
        let resp = send.send_request(req).await.map_err(|e| http(&e))?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Ok(None),
            s => return Err(Error::Status(s)),
        }
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| http(&*e))?
            .to_bytes();
        Ok(Some(serde_json::from_slice(&body)?))
    }
}

impl Owner {
    /// Whether this owner may use `user`'s server `server` ("" is the default server): the
    /// owner is that hub user, and the token's scopes grant access to the server, as the
    /// single-user server itself checks them.
    pub fn may_access(&self, user: &str, server: &str) -> bool {
        let wanted = [
            "access:servers".to_owned(),
            format!("access:servers!user={user}"),
            format!("access:servers!server={user}/{server}"),
        ];
        self.kind == "user" && self.name == user && self.scopes.iter().any(|s| wanted.contains(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str, kind: &str, scopes: &[&str]) -> Owner {
        Owner {
            name: name.into(),
            kind: kind.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn only_the_owner_with_an_access_scope() {
        let own = owner(
            "alice@x.org",
            "user",
            &[
                "access:servers!user=alice@x.org",
                "read:users!user=alice@x.org",
            ],
        );
        assert!(own.may_access("alice@x.org", ""));
        assert!(own.may_access("alice@x.org", "lab"));
        assert!(!own.may_access("bob", ""), "another user's server");
        let one = owner("alice", "user", &["access:servers!server=alice/lab"]);
        assert!(one.may_access("alice", "lab"));
        assert!(
            !one.may_access("alice", ""),
            "another server of the same user"
        );
        // A token without access scopes (e.g. read-only), or an admin's token for someone
        // else's server: refused; so is a service.
        assert!(!owner("alice", "user", &["read:users!user=alice"]).may_access("alice", ""));
        assert!(!owner("admin", "user", &["access:servers"]).may_access("alice", ""));
        assert!(!owner("alice", "service", &["access:servers"]).may_access("alice", ""));
        // Prefix tricks do not match.
        assert!(!owner("alice", "user", &["access:servers!user=alice2"]).may_access("alice", ""));
    }

    #[test]
    fn urls() {
        let t = Duration::from_secs(1);
        let h = HubApi::new("http://hub:8081/hub/api/", t).unwrap();
        assert_eq!(
            (h.authority.as_str(), h.base.as_str()),
            ("hub:8081", "/hub/api")
        );
        assert_eq!(
            HubApi::new("http://10.0.0.5/hub/api", t).unwrap().authority,
            "10.0.0.5:80"
        );
        for bad in [
            "https://hub/hub/api",
            "hub:8081",
            "ftp://x/",
            "http:///x",
            "http://h/a?b=c",
        ] {
            assert!(HubApi::new(bad, t).is_err(), "{bad}");
        }
    }
}
