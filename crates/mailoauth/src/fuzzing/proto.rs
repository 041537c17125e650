//! The login machines fed a server's lines without any I/O (fast enough for
//! millions of runs), then the reply readers the sessions use after login.
//!
//! Input: one byte of flags (bit 0: the connection must use STARTTLS), then
//! the server's lines.

use std::borrow::Cow;

use super::{TOKEN, account, assert_no_secret, lines, secrets};
use crate::config::Service;
use crate::proto::{Authenticated, Credentials, Lines, Login, Step, imap, pop, smtp};

/// IMAP: the login, then tagged responses (`m2`, `m3`, …) of whatever follows.
pub fn imap_login(data: &[u8]) {
    let Some((_, mut rest)) = login(Service::Imap, data) else {
        return;
    };
    let mut n = 2;
    let mut r = imap::Response::new(&format!("m{n}"));
    for l in rest.by_ref() {
        let text = text(l);
        match r.feed(&text) {
            Ok(None) => {}
            Ok(Some(status)) => {
                // The status is what follows the tag, nothing else.
                assert_eq!(format!("m{n} {status}"), text);
                let untagged = r.untagged();
                let _ = imap::capabilities(&untagged, &status);
                n += 1;
                r = imap::Response::new(&format!("m{n}"));
            }
            Err(_) => return,
        }
    }
}

/// POP3: the login, then status lines and dot-terminated multi-line replies.
pub fn pop_login(data: &[u8]) {
    let Some((_, rest)) = login(Service::Pop, data) else {
        return;
    };
    let mut multi: Option<Lines> = None;
    for l in rest {
        let text = text(l);
        match multi.as_mut() {
            None if pop::is_ok(&text) => multi = Some(Lines::default()),
            None => {}
            Some(ls) => match pop::unstuff(&text) {
                None => {
                    // The terminator ends the reply and is not part of it.
                    assert_eq!(text, ".");
                    multi = None;
                }
                Some(x) => {
                    assert!(
                        x.len() + 1 >= text.len(),
                        "unstuffing removes one dot at most"
                    );
                    if ls.push(x).is_err() {
                        return;
                    }
                }
            },
        }
    }
}

/// SMTP: the login, then (possibly multi-line) replies.
pub fn smtp_login(data: &[u8]) {
    let Some((_, rest)) = login(Service::Smtp, data) else {
        return;
    };
    let mut r = smtp::Reply::default();
    for l in rest {
        let text = text(l);
        match r.feed(&text) {
            Ok(None) => assert_eq!(text.as_bytes().get(3), Some(&b'-')),
            Ok(Some((code, got))) => {
                let last = got.last().expect("a complete reply has a line");
                assert_eq!(last.as_str(), text);
                assert_eq!(last[..3].parse::<u16>().ok(), Some(code));
                assert!(
                    got.iter()
                        .all(|g| g.as_bytes()[..3].iter().all(u8::is_ascii_digit))
                );
            }
            Err(_) => return,
        }
    }
}

/// A line as the drivers hand it over: CRLF stripped, decoded leniently.
fn text(raw: &[u8]) -> Cow<'_, str> {
    let body = raw.strip_suffix(b"\n").unwrap_or(raw);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    String::from_utf8_lossy(body)
}

/// Every line we send is one line: CRLF at the end and nowhere else, so no
/// server text can smuggle a command into it.
fn assert_one_line(b: &[u8]) {
    let body = b.strip_suffix(b"\r\n").expect("a sent line ends in CRLF");
    assert!(
        !body.contains(&b'\r') && !body.contains(&b'\n'),
        "a sent line holds a line break: {:?}",
        String::from_utf8_lossy(b)
    );
}

/// Drive the login of `service` over the lines of `data`; the outcome when it
/// got one, and the lines left over.
fn login(service: Service, data: &[u8]) -> Option<(Authenticated, impl Iterator<Item = &[u8]>)> {
    let (flags, data) = data.split_first()?;
    let account = account(1);
    let server = crate::mail::server_for(&account, service).expect("all three servers");
    let secrets = secrets(&account, service, data);
    let mut m = Login::new(
        service,
        flags & 1 == 1,
        Credentials::new(&account, server, TOKEN),
    );
    let mut input = lines(data);
    let (mut steps, mut fed) = (0usize, 0usize);
    loop {
        steps += 1;
        assert!(
            steps <= 8 * (fed + 4),
            "the machine goes on without reading"
        );
        match m.next() {
            Step::Send(b) => {
                assert_one_line(&b);
                assert_no_secret("a plain line", &String::from_utf8_lossy(&b), &secrets);
            }
            Step::SendSecret(b) => assert_one_line(&b),
            Step::StartTls => assert!(flags & 1 == 1, "STARTTLS on a connection without it"),
            Step::NeedLine => {
                m.feed_line(input.next()?);
                fed += 1;
            }
            Step::Done(a) => return Some((a, input)),
            Step::Failed(f) => {
                assert_no_secret("a login failure", &f.to_string(), &secrets);
                if let Some(d) = crate::mail::diagnose(&account, service, &f) {
                    assert_no_secret("a diagnosis", &format!("{d:?}"), &secrets);
                }
                return None;
            }
        }
    }
}
