//! The IMAP proxy's client side: a tiny pre-authentication IMAP server that
//! accepts `LOGIN` (atoms, quoted strings, literals `{n}` and `{n+}`) and
//! `AUTHENTICATE PLAIN` (SASL-IR or continuation), and STARTTLS when the
//! listener has TLS. After login the client sees the server's capabilities
//! (less its AUTH= mechanisms) and talks to the server itself.
//!
//! Must not: let any command other than CAPABILITY, NOOP, LOGOUT, STARTTLS,
//! LOGIN and AUTHENTICATE PLAIN be answered before login; accept literals larger
//! than [`MAX_LITERAL`]; echo credentials anywhere.

use std::io;

use zeroize::Zeroizing;

use super::session::{Conn, Dialect, Login, Step, sasl_plain};
use super::upstream::Upstream;
use mailoauth::config::Service;

/// Longest literal a client may send before login (user names, passwords).
pub const MAX_LITERAL: usize = 8 * 1024;
/// Longest command line before login.
const MAX_LINE: usize = 8 * 1024;

/// The IMAP dialect (stateless between commands).
#[derive(Default)]
pub(crate) struct Imap;

fn caps(need_tls: bool) -> &'static str {
    if need_tls {
        "IMAP4rev1 STARTTLS LOGINDISABLED"
    } else {
        "IMAP4rev1 AUTH=PLAIN SASL-IR LITERAL+"
    }
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
/// synchronising ones) as arguments. A literal over [`MAX_LITERAL`] is an
/// `InvalidData` error: its bytes would follow at once, so the session must end.
async fn read_command(c: &mut Conn) -> io::Result<Parsed> {
    let Some(mut line) = c.line(MAX_LINE, false).await? else {
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
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("literal of {n} bytes before login (at most {MAX_LITERAL})"),
            ));
        }
        if sync {
            c.reply("+ go ahead").await?;
        }
        let buf = c.literal(n).await?;
        tokens.push(Zeroizing::new(String::from_utf8_lossy(&buf).into_owned()));
        // The command goes on after the literal.
        match c.line(MAX_LINE, false).await? {
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

impl Dialect for Imap {
    const SERVICE: Service = Service::Imap;

    fn greeting(&self, need_tls: bool) -> String {
        format!("* OK [CAPABILITY {}] mailoauth proxy ready", caps(need_tls))
    }

    async fn next(&mut self, c: &mut Conn, need_tls: bool) -> io::Result<Step> {
        loop {
            let cmd = match read_command(c).await? {
                Parsed::Closed => return Ok(Step::Closed),
                Parsed::Bad(tag, why) => {
                    c.reply(&format!("{tag} BAD {why}")).await?;
                    continue;
                }
                Parsed::Command(cmd) => cmd,
            };
            let t = &cmd.tag;
            let login = matches!(cmd.name.as_str(), "LOGIN" | "AUTHENTICATE");
            match cmd.name.as_str() {
                "CAPABILITY" => {
                    c.reply(&format!("* CAPABILITY {}", caps(need_tls))).await?;
                    c.reply(&format!("{t} OK CAPABILITY completed")).await?;
                }
                "NOOP" => c.reply(&format!("{t} OK NOOP completed")).await?,
                "LOGOUT" => {
                    c.reply("* BYE mailoauth proxy closing").await?;
                    c.reply(&format!("{t} OK LOGOUT completed")).await?;
                    return Ok(Step::Closed);
                }
                "STARTTLS" if need_tls => {
                    c.reply(&format!("{t} OK begin TLS negotiation now"))
                        .await?;
                    return Ok(Step::StartTls);
                }
                "STARTTLS" => {
                    c.reply(&format!("{t} BAD STARTTLS is not offered here"))
                        .await?
                }
                _ if login && need_tls => {
                    c.reply(&format!("{t} NO [PRIVACYREQUIRED] STARTTLS first"))
                        .await?
                }
                "LOGIN" if cmd.args.len() == 2 => {
                    let mut args = cmd.args.into_iter();
                    let (user, pass) = (args.next().unwrap(), args.next().unwrap());
                    return Ok(Step::Login(Login {
                        tag: cmd.tag,
                        user: user.to_string(),
                        pass,
                    }));
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
                            c.reply("+ ").await?;
                            c.line(MAX_LINE, true).await?.unwrap_or_default()
                        }
                    };
                    if b64.as_str() == "*" {
                        c.reply(&format!("{t} BAD AUTHENTICATE cancelled")).await?;
                        continue;
                    }
                    match sasl_plain(&b64) {
                        Some((user, pass)) => {
                            return Ok(Step::Login(Login {
                                tag: cmd.tag,
                                user,
                                pass,
                            }));
                        }
                        None => {
                            c.reply(&format!("{t} BAD invalid base64 or PLAIN message"))
                                .await?
                        }
                    }
                }
                "AUTHENTICATE" => {
                    c.reply(&format!("{t} NO only AUTHENTICATE PLAIN here"))
                        .await?
                }
                "LOGIN" => {
                    c.reply(&format!("{t} BAD LOGIN takes user and password"))
                        .await?
                }
                _ => {
                    c.reply(&format!(
                        "{t} BAD log in first (LOGIN or AUTHENTICATE PLAIN)"
                    ))
                    .await?
                }
            }
        }
    }

    fn refused(&self, l: &Login) -> String {
        format!(
            "{} NO [AUTHENTICATIONFAILED] wrong user or proxy password",
            l.tag
        )
    }

    fn unavailable(&self, l: &Login, why: &str) -> String {
        format!("{} NO [UNAVAILABLE] {why}", l.tag)
    }

    fn welcome(&self, l: &Login, up: &Upstream) -> String {
        // The client is logged in: it has no use for the server's mechanisms.
        let caps: Vec<&str> = up
            .caps
            .iter()
            .map(String::as_str)
            .filter(|c| !c.to_ascii_uppercase().starts_with("AUTH="))
            .collect();
        format!(
            "{} OK [CAPABILITY {}] LOGIN completed",
            l.tag,
            caps.join(" ")
        )
    }

    fn bye(&self, why: &str) -> String {
        format!("* BYE {why}")
    }
}
