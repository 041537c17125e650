//! The proxy: password-only mail clients reach OAuth-only servers.
//!
//! Owns: per-account local listeners (hosted by the daemon's runtime), the local
//! password check (constant time; tokens are never keyed to it), and the split
//! mini-redis style: `upstream` speaks to the real server (TLS, XOAUTH2), `imap`
//! and `pop` intercept the client's login, and after that [`relay`] moves bytes
//! untouched with `copy_bidirectional` (bounded buffers: backpressure for free).
//! Must not: relay anything before the client has authenticated, or log a
//! password, token or SASL payload.
//!
//! Status: IMAP (LOGIN with quoted strings and literals, AUTHENTICATE PLAIN),
//! POP3 (USER/PASS, AUTH PLAIN) and SMTP (AUTH PLAIN/LOGIN) over plain loopback
//! listeners. Local TLS is not built yet.

pub mod imap;
pub mod pop;
pub mod smtp;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use zeroize::Zeroizing;

use crate::providers::{Account, is_loopback_host};
use crate::{Client, Error};

/// A client must log in within this time.
pub(crate) const LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

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

impl Context {
    /// The client's credentials are the account's user and the local password
    /// (compared in constant time; a short delay on failure slows guessing).
    pub async fn accepts(&self, user: &str, pass: &str) -> bool {
        let ok = user.eq_ignore_ascii_case(&self.account.user)
            && same_secret(pass.as_bytes(), self.password.as_bytes());
        if !ok {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        ok
    }

    /// The account's mail token, from the store (refreshed when due).
    pub async fn token(&self) -> Result<Zeroizing<String>, String> {
        let (client, name) = (self.client.clone(), self.account.name.clone());
        tokio::task::spawn_blocking(move || client.broker(&name)?.token(None))
            .await
            .map_err(|e| e.to_string())?
            .map(Zeroizing::new)
            .map_err(|e| e.to_string())
    }
}

/// Write one reply line (CRLF added) to a client.
pub(crate) async fn reply(c: &mut BufReader<TcpStream>, s: &str) -> std::io::Result<()> {
    c.get_mut().write_all(format!("{s}\r\n").as_bytes()).await
}

impl Context {
    /// The client has authenticated locally: fetch the token and log in upstream.
    /// On failure the client gets `refusal(reason)` as its reply and the error is returned.
    pub async fn upstream(
        &self,
        c: &mut BufReader<TcpStream>,
        service: crate::config::Service,
        refusal: impl Fn(&str) -> String,
    ) -> Result<upstream::Upstream, String> {
        let result = match self.token().await {
            Ok(token) => upstream::login(
                service,
                &self.account,
                &token,
                std::time::Duration::from_secs(30),
            )
            .await
            .map_err(|e| format!("upstream login failed: {e}")),
            Err(e) => Err(format!(
                "mailoauth has no token ({e}): run `mailoauth login {}`",
                self.account.name
            )),
        };
        if let Err(e) = &result {
            reply(c, &refusal(e)).await.map_err(|e| e.to_string())?;
        }
        result
    }
}

/// After login: bytes both ways, untouched; anything already buffered goes first.
pub async fn relay(
    client: BufReader<TcpStream>,
    upstream: BufReader<Box<dyn upstream::Stream>>,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let (pending_up, pending_client) = (upstream.buffer().to_vec(), client.buffer().to_vec());
    let (mut c, mut u) = (client.into_inner(), upstream.into_inner());
    c.write_all(&pending_up).await.map_err(io)?;
    u.write_all(&pending_client).await.map_err(io)?;
    tokio::io::copy_bidirectional(&mut c, &mut u)
        .await
        .map_err(io)?;
    Ok(())
}

/// The proxy listeners an account asks for: (protocol, address).
fn listens(cfg: &crate::config::AccountConfig) -> Vec<(&'static str, &str)> {
    let Some(p) = &cfg.proxy else { return vec![] };
    [
        ("imap", p.imap.as_deref()),
        ("pop", p.pop.as_deref()),
        ("smtp", p.smtp.as_deref()),
    ]
    .into_iter()
    .filter_map(|(k, a)| a.map(|a| (k, a)))
    .collect()
}

/// Bind every configured proxy listener and serve it on the current runtime.
/// Errors (bad address, port in use, no password) are returned before anything is served.
pub async fn start(client: Arc<Client>) -> Result<Vec<tokio::task::JoinHandle<()>>, Error> {
    let mut tasks = Vec::new();
    for (name, cfg) in &client.config().accounts {
        for (proto, addr) in listens(cfg) {
            let err = |m: String| client.config().error_at(name, Some("proxy"), m);
            let sa: SocketAddr = addr
                .parse()
                .map_err(|_| err(format!("proxy {proto} = \"{addr}\" is not HOST:PORT")))?;
            if !is_loopback_host(&sa.ip().to_string()) {
                return Err(err(format!(
                    "proxy {proto} = \"{addr}\": only loopback addresses for now (local TLS is not built yet)"
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
            log::warn!("proxy: {proto} for `{name}` on {sa}");
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
                                let r = match proto {
                                    "imap" => imap::serve(ctx, stream).await,
                                    "pop" => pop::serve(ctx, stream).await,
                                    _ => smtp::serve(ctx, stream).await,
                                };
                                if let Err(e) = r {
                                    log::info!("proxy {proto} {peer}: {e}");
                                }
                            });
                        }
                        Err(e) => log::warn!("proxy accept: {e}"),
                    }
                }
            }));
        }
    }
    Ok(tasks)
}
