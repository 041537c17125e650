//! The daemon's request/response protocol, and its blocking client.
//!
//! Owns: the socket path, the versioned message format (one JSON line each way
//! per connection), and a client that gives up fast so `mailoauth token` falls
//! back to working alone. Must not: pull in an async runtime (the client runs on
//! the cached-token path).
//!
//! Version 1 requests: `{"v":1,"op":"token","config":PATH,"account":NAME,
//! "resource":R|null,"sasl":"xoauth2"|"oauthbearer"|null}`, `{"v":1,"op":"forget",
//! "config":PATH,"account":NAME}` (tokens changed behind the daemon's back: login,
//! logout, refresh), `{"v":1,"op":"ping","config":PATH}`. Responses:
//! `{"v":1,"ok":true,"value":…}` or `{"v":1,"ok":false,"error":TEXT}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::paths;

/// Protocol version.
pub const VERSION: u32 = 1;

/// `$XDG_RUNTIME_DIR/mailoauth/daemon.sock`.
pub fn socket_path() -> PathBuf {
    paths::runtime_dir().join("daemon.sock")
}

/// A request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Request {
    /// Protocol version ([`VERSION`]).
    pub v: u32,
    /// `token`, `forget` or `ping`.
    pub op: String,
    /// The config file the client uses; the daemon answers only for its own.
    pub config: String,
    /// Account name (`token`, `forget`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Resource (`token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// SASL mechanism for a ready initial response (`token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<String>,
}

impl Request {
    /// A request of `op` about `account`, for the config at `config`.
    pub fn new(op: &str, config: &Path, account: Option<&str>) -> Request {
        Request {
            v: VERSION,
            op: op.to_owned(),
            config: config_key(config),
            account: account.map(str::to_owned),
            resource: None,
            sasl: None,
        }
    }
}

/// A response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Response {
    /// Protocol version.
    pub v: u32,
    /// Success?
    pub ok: bool,
    /// The answer (a token, a SASL string, "pong").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
pub fn call(req: &Request) -> Option<Response> {
    call_at(&socket_path(), req, Duration::from_secs(5))
}

/// [`call`] on an explicit socket with a timeout for the whole exchange.
pub fn call_at(socket: &Path, req: &Request, timeout: Duration) -> Option<Response> {
    // A missing socket fails here in one syscall: the no-daemon case costs ~nothing.
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let mut line = serde_json::to_vec(req).ok()?;
    line.push(b'\n');
    stream.write_all(&line).ok()?;
    let mut reply = String::new();
    BufReader::new(stream)
        .take(1 << 20)
        .read_line(&mut reply)
        .ok()?;
    let resp: Response = serde_json::from_str(&reply).ok()?;
    (resp.v == VERSION).then_some(resp)
}
