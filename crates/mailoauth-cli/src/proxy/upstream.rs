//! The proxy's side towards the real server: TCP, implicit TLS or STARTTLS
//! (certificate always verified, with the client's TLS hints), and the tokio
//! driver of the library's [`proto::Login`] machine — the same login `check`
//! runs, so PREAUTH, lower-case capabilities and error challenges behave alike.
//!
//! Owns: producing an authenticated upstream stream, and [`UpstreamError`],
//! whose one-line text (with the catalog's cause and fix) the client and the
//! daemon log get. Must not: send anything the client typed (the client's
//! credentials never leave this machine), parse the login replies itself, or
//! trace a SASL payload.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Stream;
use super::trace::{self, Dir};
use mailoauth::config::{Service, TlsMode};
use mailoauth::diagnose::Diagnosis;
use mailoauth::mail::Failure;
use mailoauth::proto::{self, Credentials, Step};
use mailoauth::providers::{Account, Server};
use mailoauth::tls::{self, TlsFailure};

/// An authenticated upstream connection.
pub struct Upstream {
    /// The stream (with any bytes already buffered).
    pub io: BufReader<Box<dyn Stream>>,
    /// Capabilities after login.
    pub caps: Vec<String>,
}

/// Why there is no upstream session. Its `Display` is one line without CR/LF,
/// fit for the client's refusal reply and the log; it never contains a token.
#[derive(Debug)]
pub enum UpstreamError {
    /// The account configures no server for the protocol.
    NoServer {
        /// The account.
        account: String,
        /// The protocol.
        service: Service,
    },
    /// The token source gave no token.
    NoToken {
        /// The account.
        account: String,
        /// What the broker said.
        why: String,
    },
    /// The server did not finish the login in time.
    Timeout {
        /// `host:port`.
        server: String,
    },
    /// The connection or login failed, with the catalog's diagnosis if it has one.
    Login {
        /// What went wrong, verbatim.
        failure: Failure,
        /// Cause and fix from the catalog.
        diagnosis: Option<Diagnosis>,
    },
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            UpstreamError::NoServer { account, service } => {
                format!("account `{account}` has no {} server", service.name())
            }
            UpstreamError::NoToken { account, why } => {
                format!("mailoauth has no token ({why}): run `mailoauth login {account}`")
            }
            UpstreamError::Timeout { server } => {
                format!("upstream login failed: {server} did not answer in time")
            }
            UpstreamError::Login { failure, diagnosis } => match diagnosis {
                Some(d) => format!(
                    "upstream login failed: {failure}; cause: {}; fix: {}",
                    d.cause,
                    crate::cli::render::line(&d.remedy)
                ),
                None => format!("upstream login failed: {failure}"),
            },
        };
        f.write_str(&one_line(&text))
    }
}

/// `s` as a single reply line: control characters (CR and LF above all, which
/// would let a server inject replies to our client) become spaces; long texts
/// are cut.
fn one_line(s: &str) -> String {
    const MAX: usize = 1000;
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// Connect to the account's server for `service` and log in with `token`, all
/// within `timeout`.
pub async fn login(
    service: Service,
    account: &Account,
    token: &str,
    timeout: Duration,
) -> Result<Upstream, UpstreamError> {
    let server =
        mailoauth::mail::server_for(account, service).ok_or_else(|| UpstreamError::NoServer {
            account: account.name.clone(),
            service,
        })?;
    let creds = Credentials::new(account, server, token);
    match tokio::time::timeout(timeout, drive(service, account, server, creds)).await {
        Err(_) => Err(UpstreamError::Timeout {
            server: format!("{}:{}", server.host, server.port),
        }),
        Ok(Ok(up)) => Ok(up),
        Ok(Err(failure)) => Err(UpstreamError::Login {
            diagnosis: mailoauth::mail::diagnose(account, service, &failure),
            failure,
        }),
    }
}

/// The tokio driver: connect, then do what the machine says.
async fn drive(
    service: Service,
    account: &Account,
    server: &Server,
    creds: Credentials,
) -> Result<Upstream, Failure> {
    // Our resolver, not glibc's NSS; it blocks (UDP with timeouts), so off the runtime.
    let (host, port) = (server.host.clone(), server.port);
    let addrs = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![std::net::SocketAddr::new(ip, port)],
        Err(_) => tokio::task::spawn_blocking(move || mailoauth::dns::resolve(&host, port))
            .await
            .map_err(|e| Failure::Unreachable(e.to_string()))?
            .map_err(|e| Failure::Unreachable(e.to_string()))?,
    };
    let tcp = TcpStream::connect(&addrs[..])
        .await
        .map_err(|e| Failure::Unreachable(format!("{}:{}: {e}", server.host, server.port)))?;
    let _ = tcp.set_nodelay(true);
    let mut io: BufReader<Box<dyn Stream>> = match server.tls {
        TlsMode::Implicit => BufReader::new(tls(Box::new(tcp), account, &server.host).await?),
        _ => BufReader::new(Box::new(tcp)),
    };
    let mut m = proto::Login::new(service, server.tls == TlsMode::Starttls, creds);
    loop {
        match m.next() {
            Step::Send(b) => send(&mut io, &b, false).await?,
            Step::SendSecret(b) => send(&mut io, &b, true).await?,
            Step::StartTls => {
                if !io.buffer().is_empty() {
                    return Err(Failure::Protocol(
                        "the server sent data before the TLS handshake (possible STARTTLS injection); refusing".into(),
                    ));
                }
                io = BufReader::new(tls(io.into_inner(), account, &server.host).await?);
            }
            Step::NeedLine => m.feed_line(&line(&mut io, m.max_line(), &server.host).await?),
            Step::Done(a) => return Ok(Upstream { io, caps: a.caps }),
            Step::Failed(f) => return Err(f),
        }
    }
}

/// Read one line (at most `max` bytes and its CRLF: a longer one is handed on
/// cut, and the machine refuses it).
async fn line(
    io: &mut BufReader<Box<dyn Stream>>,
    max: usize,
    host: &str,
) -> Result<Vec<u8>, Failure> {
    let mut buf = Vec::new();
    let limit = max as u64 + 2;
    let n = (&mut *io)
        .take(limit)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| Failure::Protocol(format!("reading from {host}: {e}")))?;
    if !buf.ends_with(b"\n") && (n as u64) < limit {
        return Err(Failure::Protocol(format!("{host} closed the connection")));
    }
    let shown = String::from_utf8_lossy(&buf);
    trace::line(Dir::FromServer, shown.trim_end_matches(['\r', '\n']), false);
    Ok(buf)
}

/// Write a line; a `secret` one is traced with its command words at most.
async fn send(io: &mut BufReader<Box<dyn Stream>>, b: &[u8], secret: bool) -> Result<(), Failure> {
    let text = String::from_utf8_lossy(b);
    let text = text.trim_end_matches(['\r', '\n']);
    // `AUTH XOAUTH2 <payload>` shows as `AUTH XOAUTH2 [redacted]`; a bare payload by its length.
    let words_only = trace::redact(text).ends_with("[redacted]");
    trace::line(Dir::ToServer, text, secret && !words_only);
    let w = io.get_mut();
    w.write_all(b)
        .await
        .and(w.flush().await)
        .map_err(|e| Failure::Protocol(format!("writing to the server: {e}")))
}

/// The TLS client handshake, certificate verified as the client does it.
async fn tls(
    io: Box<dyn Stream>,
    account: &Account,
    host: &str,
) -> Result<Box<dyn Stream>, Failure> {
    let cfg = tls::client_config(account.ca_file.as_deref()).map_err(Failure::Tls)?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| {
        Failure::Tls(TlsFailure::Other(format!(
            "{host} is not a name TLS can check: {e}"
        )))
    })?;
    let s = tokio_rustls::TlsConnector::from(Arc::clone(&cfg))
        .connect(name, io)
        .await
        .map_err(|e| Failure::Tls(tls::handshake_failure(&e)))?;
    Ok(Box::new(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An account whose IMAP server is 127.0.0.1:`port` with `tls`.
    fn account(port: u16, tls: &str) -> Account {
        let text = format!(
            "[accounts.a]\nprovider = \"microsoft\"\nuser = \"alice@contoso.com\"\nclient_id = \"c\"\n\
             imap = {{ host = \"127.0.0.1\", port = {port}, tls = \"{tls}\" }}\n"
        );
        let c = mailoauth::config::Config::parse(&text, std::path::Path::new("/c")).unwrap();
        mailoauth::providers::resolve(&c, "a").unwrap()
    }

    /// A one-connection IMAP server: `greeting`, then for each line read the
    /// next scripted answer, written in one piece.
    async fn scripted(greeting: &'static str, answers: Vec<&'static str>) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut s = BufReader::new(s);
            s.get_mut().write_all(greeting.as_bytes()).await.unwrap();
            for a in answers {
                let mut line = String::new();
                if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                s.get_mut().write_all(a.as_bytes()).await.unwrap();
            }
        });
        port
    }

    async fn imap_login(port: u16, tls: &str) -> Result<Upstream, UpstreamError> {
        login(
            Service::Imap,
            &account(port, tls),
            "tok",
            Duration::from_secs(5),
        )
        .await
    }

    #[tokio::test]
    async fn upstream_preauth_needs_no_authenticate() {
        let port = scripted(
            "* PREAUTH welcome back\r\n",
            vec!["c1 OK [CAPABILITY IMAP4rev1 IDLE] done\r\n"],
        )
        .await;
        let up = imap_login(port, "none").await.unwrap();
        assert_eq!(up.caps, ["IMAP4rev1", "IDLE"]);
    }

    #[tokio::test]
    async fn upstream_understands_lowercase_auth_capabilities() {
        let port = scripted(
            "* OK ready\r\n",
            vec![
                "c1 OK [CAPABILITY imap4rev1 sasl-ir auth=xoauth2] ok\r\n",
                "a1 OK [CAPABILITY IMAP4rev1 MOVE] logged in\r\n",
            ],
        )
        .await;
        let up = imap_login(port, "none").await.unwrap();
        assert_eq!(up.caps, ["IMAP4rev1", "MOVE"]);
    }

    #[tokio::test]
    async fn upstream_refuses_bytes_injected_before_the_tls_handshake() {
        let port = scripted(
            "* OK ready\r\n",
            vec!["s1 OK begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"],
        )
        .await;
        match imap_login(port, "starttls").await {
            Err(UpstreamError::Login {
                failure: Failure::Protocol(m),
                ..
            }) => assert!(m.contains("STARTTLS injection"), "{m}"),
            other => panic!("{:?}", other.map(|u| u.caps)),
        }
    }

    #[tokio::test]
    async fn upstream_keeps_the_decoded_challenge_for_the_diagnosis() {
        let port = scripted(
            "* OK Gimap ready\r\n",
            vec![
                "c1 OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ok\r\n",
                // {"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}
                "+ eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==\r\n",
                "a1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n",
            ],
        )
        .await;
        let e = imap_login(port, "none").await.err().expect("refused");
        let UpstreamError::Login {
            failure: Failure::Refused { challenge, .. },
            diagnosis,
        } = &e
        else {
            panic!("{e}");
        };
        assert!(challenge.as_deref().unwrap().contains("\"status\":\"400\""));
        assert!(diagnosis.is_some(), "the catalog knows Gmail's 400: {e}");
        assert!(e.to_string().contains("fix: "), "{e}");
    }

    #[test]
    fn upstream_errors_are_one_line_with_cause_and_fix() {
        let e = UpstreamError::Login {
            failure: Failure::Refused {
                reply: "a1 NO bad\r\na2 OK injected".into(),
                challenge: None,
                step: "AUTHENTICATE",
            },
            diagnosis: Some(Diagnosis {
                cause: "the cause".into(),
                remedy: mailoauth::remedy::Remedy::Steps("the fix".into()),
                login_required: false,
            }),
        };
        let s = e.to_string();
        assert!(!s.contains('\r') && !s.contains('\n'), "{s}");
        assert!(s.contains("cause: the cause; fix: the fix"), "{s}");
    }
}
