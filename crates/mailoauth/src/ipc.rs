//! The daemon's request/response protocol, and its blocking client.
//!
//! Owns: the socket path, the versioned message format (one JSON line each way
//! per connection), and a client that gives up fast so `mailoauth token` falls
//! back to working alone. Must not: pull in an async runtime (the client runs on
//! the cached-token path).
//!
//! The types are [`Request`] (with its [`Op`]) and [`Reply`]; on the wire they are
//! flat JSON objects, unchanged since version 1 so that a `mailoauth` of one build
//! and a daemon of another keep understanding each other:
//! `{"v":1,"op":"token","config":PATH,"account":NAME,"resource":R|null,
//! "sasl":"xoauth2"|"oauthbearer"|null}`, `{"v":1,"op":"forget","config":PATH,
//! "account":NAME}` (tokens changed behind the daemon's back: login, logout,
//! refresh), `{"v":1,"op":"ping","config":PATH}`. Replies:
//! `{"v":1,"ok":true,"value":…}` or `{"v":1,"ok":false,"error":TEXT}`. The flat
//! wire structs are private; only the typed values cross this module's border.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::paths;
use crate::sasl::Mechanism;

/// Protocol version.
pub const VERSION: u32 = 1;

/// Longest request or reply line either side reads: a token is a few KB.
pub const MAX_MESSAGE: u64 = 64 * 1024;

/// `$XDG_RUNTIME_DIR/mailoauth/daemon.sock`.
pub fn socket_path() -> PathBuf {
    paths::runtime_dir().join("daemon.sock")
}

/// What a client asks the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A fresh access token (or a ready SASL initial response).
    Token {
        /// Account name.
        account: String,
        /// Another resource of the same login (`None` = mail).
        resource: Option<String>,
        /// Answer with this mechanism's base64 initial response instead of the token.
        sasl: Option<Mechanism>,
    },
    /// Drop what the daemon holds for the account (its tokens changed on disk).
    Forget {
        /// Account name.
        account: String,
    },
    /// Are you there, and do you serve this config?
    Ping,
}

/// A request: an [`Op`] about the config file the client uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The config file as [`config_key`] spells it; the daemon answers only for its own.
    pub config: String,
    /// What is asked.
    pub op: Op,
}

impl Request {
    /// A request of `op` for the config at `config`.
    pub fn new(config: &Path, op: Op) -> Request {
        Request {
            config: config_key(config),
            op,
        }
    }

    /// The wire form (one line, no newline).
    pub fn to_line(&self) -> Vec<u8> {
        let (op, account, resource, sasl) = match &self.op {
            Op::Token {
                account,
                resource,
                sasl,
            } => (
                "token",
                Some(account.as_str()),
                resource.as_deref(),
                sasl.map(Mechanism::name),
            ),
            Op::Forget { account } => ("forget", Some(account.as_str()), None, None),
            Op::Ping => ("ping", None, None, None),
        };
        let wire = WireRequest {
            v: VERSION,
            op: op.to_owned(),
            config: self.config.clone(),
            account: account.map(str::to_owned),
            resource: resource.map(str::to_owned),
            sasl: sasl.map(str::to_owned),
        };
        serde_json::to_vec(&wire).expect("a request always serialises")
    }

    /// Parse a request line; the error is what the daemon answers.
    pub fn from_line(line: &str) -> Result<Request, String> {
        let w: WireRequest =
            serde_json::from_str(line).map_err(|_| "malformed request".to_owned())?;
        if w.v != VERSION {
            return Err(format!(
                "protocol version {} not supported (daemon speaks {VERSION})",
                w.v
            ));
        }
        let account = || w.account.clone().ok_or_else(|| "no account".to_owned());
        let op = match w.op.as_str() {
            "token" => Op::Token {
                account: account()?,
                resource: w.resource.clone(),
                sasl: match w.sasl.as_deref() {
                    None => None,
                    Some(m) => Some(
                        Mechanism::from_name(m)
                            .ok_or_else(|| format!("unknown SASL mechanism `{m}`"))?,
                    ),
                },
            },
            "forget" => Op::Forget {
                account: account()?,
            },
            "ping" => Op::Ping,
            other => return Err(format!("unknown op `{other}`")),
        };
        Ok(Request {
            config: w.config,
            op,
        })
    }
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Done: a token, a SASL string, `pong`, `forgotten`.
    Value(String),
    /// Not done, and why (the client then works alone).
    Error(String),
}

impl Reply {
    /// The wire form (one line, no newline).
    pub fn to_line(&self) -> Vec<u8> {
        let wire = match self {
            Reply::Value(v) => WireReply {
                v: VERSION,
                ok: true,
                value: Some(v.clone()),
                error: None,
            },
            Reply::Error(e) => WireReply {
                v: VERSION,
                ok: false,
                value: None,
                error: Some(e.clone()),
            },
        };
        serde_json::to_vec(&wire).expect("a reply always serialises")
    }

    /// Parse a reply line; `None` for anything this version does not understand.
    pub fn from_line(line: &str) -> Option<Reply> {
        let w: WireReply = serde_json::from_str(line).ok()?;
        if w.v != VERSION {
            return None;
        }
        match (w.ok, w.value, w.error) {
            (true, Some(v), _) => Some(Reply::Value(v)),
            (false, _, e) => Some(Reply::Error(e.unwrap_or_default())),
            (true, None, _) => None,
        }
    }
}

/// Version 1 request as it travels.
#[derive(Serialize, Deserialize)]
struct WireRequest {
    v: u32,
    op: String,
    config: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sasl: Option<String>,
}

/// Version 1 reply as it travels.
#[derive(Serialize, Deserialize)]
struct WireReply {
    v: u32,
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The config path as both sides compare it.
pub fn config_key(config: &Path) -> String {
    std::fs::canonicalize(config)
        .unwrap_or_else(|_| config.to_owned())
        .to_string_lossy()
        .into_owned()
}

/// Send one request to the daemon. `None` when no daemon answers (not running,
/// stale socket, too slow, another version): the caller works alone.
pub fn call(req: &Request) -> Option<Reply> {
    call_at(&socket_path(), req, Duration::from_secs(5))
}

/// [`call`] on an explicit socket with a timeout for the whole exchange.
pub fn call_at(socket: &Path, req: &Request, timeout: Duration) -> Option<Reply> {
    // A missing socket fails here in one syscall: the no-daemon case costs ~nothing.
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let mut line = req.to_line();
    line.push(b'\n');
    stream.write_all(&line).ok()?;
    let mut reply = String::new();
    BufReader::new(stream)
        .take(MAX_MESSAGE)
        .read_line(&mut reply)
        .ok()?;
    Reply::from_line(&reply)
}

/// A token from a running daemon serving the config at `config`, or `None`
/// (no daemon, or it could not answer): the caller then asks the broker itself.
pub fn daemon_token(
    config: &Path,
    account: &str,
    resource: Option<&str>,
    sasl: Option<Mechanism>,
) -> Option<String> {
    let req = Request::new(
        config,
        Op::Token {
            account: account.to_owned(),
            resource: resource.map(str::to_owned),
            sasl,
        },
    );
    match call(&req)? {
        Reply::Value(v) => Some(v),
        Reply::Error(_) => None,
    }
}

/// Tell a running daemon that the account's tokens changed behind its back.
pub fn daemon_forget(config: &Path, account: &str) {
    let _ = call(&Request::new(
        config,
        Op::Forget {
            account: account.to_owned(),
        },
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_the_version_1_wire_format() {
        let r = Request {
            config: "/c.toml".into(),
            op: Op::Token {
                account: "work".into(),
                resource: None,
                sasl: Some(Mechanism::Xoauth2),
            },
        };
        let line = String::from_utf8(r.to_line()).unwrap();
        assert_eq!(
            line,
            r#"{"v":1,"op":"token","config":"/c.toml","account":"work","sasl":"xoauth2"}"#
        );
        assert_eq!(Request::from_line(&line).unwrap(), r);
        // What a version-1 client of the earlier build sent.
        let old =
            r#"{"v":1,"op":"forget","config":"/c.toml","account":"a","resource":null,"sasl":null}"#;
        assert_eq!(
            Request::from_line(old).unwrap().op,
            Op::Forget {
                account: "a".into()
            }
        );
        let ping = Request::new(Path::new("/nonexistent/c.toml"), Op::Ping);
        assert_eq!(
            Request::from_line(std::str::from_utf8(&ping.to_line()).unwrap()).unwrap(),
            ping
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let e = |l: &str| Request::from_line(l).unwrap_err();
        assert_eq!(e("{not json"), "malformed request");
        assert!(e(r#"{"v":2,"op":"ping","config":"c"}"#).contains("version 2"));
        assert_eq!(e(r#"{"v":1,"op":"fly","config":"c"}"#), "unknown op `fly`");
        assert_eq!(e(r#"{"v":1,"op":"token","config":"c"}"#), "no account");
        assert!(
            e(r#"{"v":1,"op":"token","config":"c","account":"a","sasl":"plain"}"#)
                .contains("`plain`")
        );
    }

    #[test]
    fn replies_round_trip_and_other_versions_are_ignored() {
        for r in [Reply::Value("tok".into()), Reply::Error("no".into())] {
            let line = String::from_utf8(r.to_line()).unwrap();
            assert_eq!(Reply::from_line(&line), Some(r));
        }
        assert_eq!(
            String::from_utf8(Reply::Value("pong".into()).to_line()).unwrap(),
            r#"{"v":1,"ok":true,"value":"pong"}"#
        );
        assert_eq!(Reply::from_line(r#"{"v":2,"ok":true,"value":"x"}"#), None);
        assert_eq!(Reply::from_line(r#"{"v":1,"ok":true}"#), None);
    }
}
