//! The IMAP proxy's client side: a tiny pre-authentication IMAP server that
//! accepts `LOGIN` (atoms, quoted strings, literals `{n}` and `{n+}`) and
//! `AUTHENTICATE PLAIN` (SASL-IR or continuation), and STARTTLS when the
//! listener has TLS. After login the client sees the server's capabilities
//! (less its AUTH= mechanisms) and talks to the server itself.
//!
//! Must not: let any command other than CAPABILITY, NOOP, LOGOUT, STARTTLS,
//! LOGIN and AUTHENTICATE PLAIN be answered before login; accept more before
//! login than the limits below (literal size and count, command size, all
//! input); echo credentials anywhere.

use std::io;

use zeroize::Zeroizing;

use super::session::{Conn, Dialect, Login, Step, sasl_plain, too_much};
use super::trace::{self, Dir};
use super::upstream::Upstream;
use mailoauth::config::Service;

/// Longest literal a client may send before login (user names, passwords).
pub const MAX_LITERAL: usize = 8 * 1024;
/// Literals in one command before login: LOGIN needs two (user, password).
pub const MAX_LITERALS: usize = 2;
/// Longest command line before login.
const MAX_LINE: usize = 8 * 1024;
/// Longest command before login, lines and literals together: a LOGIN with
/// two literals of the largest size and short lines around them.
pub const MAX_COMMAND: usize = MAX_LITERALS * MAX_LITERAL + 1024;
/// All a client may send before login: a few commands (CAPABILITY, STARTTLS,
/// a failed LOGIN or three); a client past this is not logging in.
pub const MAX_INPUT: usize = 64 * 1024;

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
/// synchronising ones) as arguments. A literal over [`MAX_LITERAL`], more than
/// [`MAX_LITERALS`] of them or a command over [`MAX_COMMAND`] is an
/// `InvalidData` error: the announced bytes would follow at once, so the
/// session must end. Traced from the parse: tag and command name, the rest
/// redacted.
async fn read_command(c: &mut Conn) -> io::Result<Parsed> {
    let Some(mut line) = c.line(MAX_LINE).await? else {
        return Ok(Parsed::Closed);
    };
    let mut tokens: Vec<Zeroizing<String>> = Vec::new();
    let (mut literals, mut size) = (0, line.len());
    let mut first = true;
    loop {
        let (mut toks, literal) = match tokenize(&line) {
            Ok(x) => x,
            Err(why) => {
                // Unparsable: which word is what is unknown, so none is shown.
                trace::command(&[], true);
                let tag = if first { first_word(&line) } else { "*".into() };
                return Ok(Parsed::Bad(tag, why));
            }
        };
        tokens.append(&mut toks);
        if first {
            trace_head(&tokens, literal.is_some());
            first = false;
        } else {
            trace::line(Dir::FromClient, &line, true);
        }
        let Some((n, sync)) = literal else { break };
        literals += 1;
        size += n;
        if n > MAX_LITERAL {
            return Err(too_much(&format!(
                "literal of {n} bytes before login (at most {MAX_LITERAL})"
            )));
        }
        if literals > MAX_LITERALS {
            return Err(too_much(&format!(
                "more than {MAX_LITERALS} literals in one command before login"
            )));
        }
        if size > MAX_COMMAND {
            return Err(too_much(&format!(
                "command of over {MAX_COMMAND} bytes before login"
            )));
        }
        if sync {
            c.reply("+ go ahead").await?;
        }
        let buf = c.literal(n).await?;
        tokens.push(Zeroizing::new(String::from_utf8_lossy(&buf).into_owned()));
        // The command goes on after the literal.
        match c.line(MAX_LINE).await? {
            Some(next) => line = next,
            None => return Ok(Parsed::Closed),
        }
        size += line.len();
        if size > MAX_COMMAND {
            return Err(too_much(&format!(
                "command of over {MAX_COMMAND} bytes before login"
            )));
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

/// Trace a command's first line from its tokens: tag and command name (and
/// the mechanism of AUTHENTICATE), never an argument; a first line without a
/// command name is not shown at all.
fn trace_head(tokens: &[Zeroizing<String>], literal: bool) {
    let [tag, name, args @ ..] = tokens else {
        trace::command(&[], !tokens.is_empty() || literal);
        return;
    };
    // Tags are the client's own counters (a001); command names only when
    // they are commands, for a confused client may send its password there.
    const KNOWN: [&str; 12] = [
        "CAPABILITY",
        "NOOP",
        "LOGOUT",
        "STARTTLS",
        "LOGIN",
        "AUTHENTICATE",
        "ID",
        "ENABLE",
        "SELECT",
        "EXAMINE",
        "LIST",
        "STATUS",
    ];
    let Some(name) = trace::verb(name, &KNOWN) else {
        return trace::command(&[tag], true);
    };
    let mech = match (name, args.first()) {
        ("AUTHENTICATE", Some(m)) => trace::mechanism(m),
        _ => None,
    };
    let shown_args = usize::from(mech.is_some());
    let more = args.len() > shown_args || literal;
    trace::command(&[tag, name, mech.unwrap_or("")], more);
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
    const MAX_INPUT: usize = MAX_INPUT;

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
                            c.secret_line(MAX_LINE).await?.unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose client sent `input` and then waits (never closes),
    /// with the input budget the session sets.
    async fn conn(input: Vec<u8>) -> Conn {
        super::super::session::flooded(input, <Imap as Dialect>::MAX_INPUT).await
    }

    /// The error `f` ends with; a session still waiting for input fails the test.
    async fn within_a_second<T>(f: impl std::future::Future<Output = io::Result<T>>) -> io::Error {
        match tokio::time::timeout(std::time::Duration::from_secs(1), f).await {
            Ok(r) => r.err().expect("the session went on"),
            Err(_) => panic!("still reading: not cut off"),
        }
    }

    fn literal_login(literals: usize) -> Vec<u8> {
        let mut v = b"z1 LOGIN".to_vec();
        for _ in 0..literals {
            v.extend_from_slice(format!(" {{{MAX_LITERAL}+}}\r\n").as_bytes());
            v.extend(std::iter::repeat_n(b'x', MAX_LITERAL));
        }
        v.extend_from_slice(b"\r\n");
        v
    }

    #[tokio::test]
    async fn a_login_with_two_largest_literals_is_still_a_login() {
        let mut c = conn(literal_login(MAX_LITERALS)).await;
        let Parsed::Command(cmd) = read_command(&mut c).await.unwrap() else {
            panic!("not a command")
        };
        assert_eq!((cmd.name.as_str(), cmd.args.len()), ("LOGIN", 2));
    }

    #[tokio::test]
    async fn a_third_literal_in_one_command_ends_the_session() {
        let mut c = conn(literal_login(MAX_LITERALS + 1)).await;
        let e = read_command(&mut c).await.err().expect("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("literals"), "{e}");
    }

    #[tokio::test]
    async fn endless_small_commands_before_login_end_the_session() {
        let noops = b"a NOOP\r\n".repeat(MAX_INPUT / 8 + 100);
        let mut c = conn(noops).await;
        let e = within_a_second(Imap.next(&mut c, false)).await;
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("too much input"), "{e}");
    }

    #[tokio::test]
    async fn endless_failed_commands_before_login_end_the_session() {
        // Parse errors are answered and the loop goes on: the budget still ends it.
        let bad = b"a LOGIN \"open\r\n";
        let mut c = conn(bad.repeat(MAX_INPUT / bad.len() + 1)).await;
        let e = within_a_second(Imap.next(&mut c, false)).await;
        assert!(e.to_string().contains("too much input"), "{e}");
    }
}
