//! The proxy: password-only mail clients reach OAuth-only servers.
//!
//! Owns: per-account local listeners (hosted by the daemon's runtime), the local
//! password check (constant time; tokens are never keyed to it), and the split
//! mini-redis style: `upstream` speaks to the real server (TLS, XOAUTH2),
//! `imap` intercepts the client's login, and after that bytes are relayed
//! untouched with `copy_bidirectional` (bounded buffers: backpressure for free).
//! Must not: relay anything before the client has authenticated, or log a
//! password, token or SASL payload.
//!
//! Status: IMAP (LOGIN with quoted strings and literals, AUTHENTICATE PLAIN) over
//! a plain loopback listener. POP3, SMTP and local TLS are not built yet.

pub mod imap;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use zeroize::Zeroizing;

use crate::providers::{Account, is_loopback_host};
use crate::{Client, Error};

/// Where an account's IMAP proxy listens, if it has one.
pub fn imap_listen(account_cfg: &crate::config::AccountConfig) -> Option<&str> {
    account_cfg.proxy.as_ref().and_then(|p| p.imap.as_deref())
}

/// Constant-time equality (for equal lengths; the length itself is not secret).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What one listener needs.
pub struct Context {
    /// The account.
    pub account: Account,
    /// The config (for the broker).
    pub client: Arc<Client>,
    /// The local password clients must present.
    pub password: Zeroizing<String>,
}

/// Bind every configured proxy listener and serve it on the current runtime.
/// Errors (bad address, port in use, no password) are returned before anything is served.
pub async fn start(client: Arc<Client>) -> Result<Vec<tokio::task::JoinHandle<()>>, Error> {
    let mut tasks = Vec::new();
    for (name, cfg) in &client.config().accounts {
        let Some(addr) = imap_listen(cfg) else {
            continue;
        };
        let err = |m: String| client.config().error_at(name, Some("proxy"), m);
        let sa: SocketAddr = addr
            .parse()
            .map_err(|_| err(format!("proxy imap = \"{addr}\" is not HOST:PORT")))?;
        if !is_loopback_host(&sa.ip().to_string()) {
            return Err(err(format!(
                "proxy imap = \"{addr}\": only loopback addresses for now (local TLS is not built yet)"
            )));
        }
        let password = cfg
            .proxy
            .as_ref()
            .and_then(|p| p.password.as_ref())
            .ok_or_else(|| {
                err("the proxy needs `password = …` (what local clients must send)".into())
            })?
            .resolve("proxy password")?;
        let account = client.account(name)?;
        let listener = TcpListener::bind(sa)
            .await
            .map_err(|e| Error::io(format!("proxy: cannot listen on {sa}"), e))?;
        log::warn!("proxy: IMAP for `{name}` on {sa}");
        let ctx = Arc::new(Context {
            account,
            client: client.clone(),
            password,
        });
        tasks.push(tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let ctx = ctx.clone();
                        tokio::spawn(async move {
                            if let Err(e) = imap::serve(ctx, stream).await {
                                log::info!("proxy {peer}: {e}");
                            }
                        });
                    }
                    Err(e) => log::warn!("proxy accept: {e}"),
                }
            }
        }));
    }
    Ok(tasks)
}
