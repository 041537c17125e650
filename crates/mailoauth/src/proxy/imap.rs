//! The IMAP proxy's client side: a tiny pre-authentication IMAP server that
//! accepts `LOGIN` (atoms, quoted strings, literals `{n}` and `{n+}`) and
//! `AUTHENTICATE PLAIN` (SASL-IR or continuation), checks the local password,
//! logs in upstream with the account's token, and then relays bytes untouched.
//!
//! Must not: let any command other than CAPABILITY, NOOP, LOGOUT, LOGIN and
//! AUTHENTICATE PLAIN reach anything before login; accept literals larger than
//! [`MAX_LITERAL`]; echo credentials anywhere.

use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use super::{Context, LOGIN_TIMEOUT, relay, reply};
use crate::config::Service;

/// Longest literal a client may send before login (user names, passwords).
pub const MAX_LITERAL: usize = 8 * 1024;
/// A client must log in within this time.
const CAPS: &str = "IMAP4rev1 AUTH=PLAIN SASL-IR LITERAL+";

type Client = BufReader<TcpStream>;

async fn read_line(c: &mut Client) -> std::io::Result<Option<String>> {
    let mut s = String::new();
    let n = (&mut *c)
        .take(MAX_LITERAL as u64 + 1024)
        .read_line(&mut s)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(s.trim_end_matches(['\r', '\n']).to_owned()))
}

/// One parsed command: tag, name, arguments (strings, literals resolved).
struct Command {
    tag: String,
    name: String,
    args: Vec<Zeroizing<String>>,
}

enum Parsed {
    Command(Command),
    Bad(String, &'static str),
    Closed,
}

/// A line's arguments, and the literal it announces: (size, synchronising).
type Tokens = (Vec<Zeroizing<String>>, Option<(usize, bool)>);

/// Split one line into arguments; a trailing `{n}` / `{n+}` announces a literal.
fn tokenize(line: &str) -> Result<Tokens, &'static str> {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            return Ok((out, None));
        }
        if let Some(r) = rest.strip_prefix('"') {
            let mut s = String::new();
            let mut escaped = false;
            let mut end = None;
            for (i, ch) in r.char_indices() {
                match (escaped, ch) {
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i + 1);
                        break;
                    }
                    _ => {
                        s.push(ch);
                        escaped = false;
                    }
                }
            }
            let e = end.ok_or("unterminated quoted string")?;
            out.push(Zeroizing::new(s));
            rest = &r[e..];
        } else if rest.starts_with('{') && rest.ends_with('}') && !rest.contains(' ') {
            let inner = &rest[1..rest.len() - 1];
            let (num, sync) = match inner.strip_suffix('+') {
                Some(n) => (n, false),
                None => (inner, true),
            };
            let n = num.parse::<usize>().map_err(|_| "bad literal")?;
            return Ok((out, Some((n, sync))));
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(Zeroizing::new(rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
}

/// Read a whole command, fetching literals (with a `+` continuation for
/// synchronising ones) as arguments.
async fn read_command(c: &mut Client) -> std::io::Result<Parsed> {
    let Some(mut line) = read_line(c).await? else {
        return Ok(Parsed::Closed);
    };
    let mut tokens: Vec<Zeroizing<String>> = Vec::new();
    loop {
        let (mut toks, literal) = match tokenize(&line) {
            Ok(x) => x,
            Err(why) => return Ok(Parsed::Bad(first_word(&line), why)),
        };
        tokens.append(&mut toks);
        let Some((n, sync)) = literal else { break };
        if n > MAX_LITERAL {
            return Ok(Parsed::Bad(
                first_word(&line),
                "literal too large before login",
            ));
        }
        if sync {
            reply(c, "+ go ahead").await?;
        }
        let mut buf = Zeroizing::new(vec![0u8; n]);
        c.read_exact(&mut buf).await?;
        tokens.push(Zeroizing::new(String::from_utf8_lossy(&buf).into_owned()));
        // The command goes on after the literal.
        match read_line(c).await? {
            Some(next) => line = next,
            None => return Ok(Parsed::Closed),
        }
    }
    if tokens.len() < 2 {
        return Ok(Parsed::Bad(first_word(&line), "expected: TAG COMMAND"));
    }
    let tag = tokens[0].to_string();
    let name = tokens[1].to_ascii_uppercase();
    Ok(Parsed::Command(Command {
        tag,
        name,
        args: tokens.split_off(2),
    }))
}

fn first_word(line: &str) -> String {
    line.split(' ')
        .next()
        .filter(|w| !w.is_empty())
        .unwrap_or("*")
        .to_owned()
}

/// Serve one client connection.
pub async fn serve(ctx: Arc<Context>, stream: TcpStream) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut c = BufReader::new(stream);
    let io = |e: std::io::Error| e.to_string();
    reply(
        &mut c,
        &format!("* OK [CAPABILITY {CAPS}] mailoauth proxy ready"),
    )
    .await
    .map_err(io)?;
    let login = tokio::time::timeout(LOGIN_TIMEOUT, pre_auth(&mut c)).await;
    let Ok(Ok(Some((tag, user, pass)))) = login else {
        return Ok(());
    };
    if !ctx.accepts(&user, &pass).await {
        reply(
            &mut c,
            &format!("{tag} NO [AUTHENTICATIONFAILED] wrong user or proxy password"),
        )
        .await
        .map_err(io)?;
        return Ok(());
    }
    let up = ctx
        .upstream(&mut c, Service::Imap, |why| {
            format!("{tag} NO [UNAVAILABLE] {why}")
        })
        .await?;
    let caps: Vec<&str> = up
        .caps
        .iter()
        .map(String::as_str)
        .filter(|c| !c.to_ascii_uppercase().starts_with("AUTH="))
        .collect();
    reply(
        &mut c,
        &format!("{tag} OK [CAPABILITY {}] LOGIN completed", caps.join(" ")),
    )
    .await
    .map_err(io)?;
    relay(c, up.io).await
}

/// The pre-authentication dialogue; returns (tag, user, password) of a login attempt.
async fn pre_auth(c: &mut Client) -> std::io::Result<Option<(String, String, Zeroizing<String>)>> {
    loop {
        let cmd = match read_command(c).await? {
            Parsed::Closed => return Ok(None),
            Parsed::Bad(tag, why) => {
                reply(c, &format!("{tag} BAD {why}")).await?;
                if why.contains("too large") {
                    return Ok(None);
                }
                continue;
            }
            Parsed::Command(cmd) => cmd,
        };
        let t = &cmd.tag;
        match cmd.name.as_str() {
            "CAPABILITY" => {
                reply(c, &format!("* CAPABILITY {CAPS}")).await?;
                reply(c, &format!("{t} OK CAPABILITY completed")).await?;
            }
            "NOOP" => reply(c, &format!("{t} OK NOOP completed")).await?,
            "LOGOUT" => {
                reply(c, "* BYE mailoauth proxy closing").await?;
                reply(c, &format!("{t} OK LOGOUT completed")).await?;
                return Ok(None);
            }
            "LOGIN" if cmd.args.len() == 2 => {
                return Ok(Some((
                    cmd.tag.clone(),
                    cmd.args[0].to_string(),
                    cmd.args[1].clone(),
                )));
            }
            "AUTHENTICATE"
                if cmd
                    .args
                    .first()
                    .is_some_and(|m| m.eq_ignore_ascii_case("PLAIN")) =>
            {
                let b64 = match cmd.args.get(1) {
                    Some(ir) => ir.clone(),
                    None => {
                        reply(c, "+ ").await?;
                        Zeroizing::new(read_line(c).await?.unwrap_or_default())
                    }
                };
                if b64.as_str() == "*" {
                    reply(c, &format!("{t} BAD AUTHENTICATE cancelled")).await?;
                    continue;
                }
                let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
                    reply(c, &format!("{t} BAD invalid base64")).await?;
                    continue;
                };
                let raw = Zeroizing::new(raw);
                let parts: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
                if parts.len() != 3 {
                    reply(c, &format!("{t} BAD invalid PLAIN message")).await?;
                    continue;
                }
                let user = String::from_utf8_lossy(parts[1]).into_owned();
                let pass = Zeroizing::new(String::from_utf8_lossy(parts[2]).into_owned());
                return Ok(Some((cmd.tag.clone(), user, pass)));
            }
            "STARTTLS" => {
                reply(
                    c,
                    &format!("{t} BAD STARTTLS is not offered on this loopback listener"),
                )
                .await?
            }
            _ => {
                reply(
                    c,
                    &format!("{t} BAD log in first (LOGIN or AUTHENTICATE PLAIN)"),
                )
                .await?
            }
        }
    }
}
