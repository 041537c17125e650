//! The IMAP login machine against scripted Exchange, Gmail and Dovecot replies.

use base64::Engine as _;

use super::super::script::{creds, run};
use super::super::{Failure, Login};
use super::*;
use crate::config::Service;
use crate::sasl::Mechanism;

const EXCHANGE_GREETING: &str = "* OK The Microsoft Exchange IMAP4 service is ready.";
const EXCHANGE_CAPS: &str = "* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+";
const GMAIL_JSON: &str =
    r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#;

fn login(starttls: bool) -> Login {
    Login::new(Service::Imap, starttls, creds("secret-token"))
}

fn refusal(end: Result<super::super::Authenticated, Failure>) -> (String, Option<String>) {
    match end {
        Err(Failure::Refused {
            reply,
            challenge,
            step,
        }) => {
            assert_eq!(step, "AUTHENTICATE");
            (reply, challenge)
        }
        e => panic!("expected a refusal, got {:?}", e.map(|a| a.caps)),
    }
}

#[test]
fn exchange_sasl_ir_refusal_keeps_the_tagged_reply() {
    let r = run(
        login(false),
        &[
            EXCHANGE_GREETING,
            EXCHANGE_CAPS,
            "c1 OK CAPABILITY completed.",
            "a1 NO AUTHENTICATE failed.",
        ],
    );
    assert_eq!(r.said, ["c1 CAPABILITY", "[secret 94 bytes]"]);
    assert!(r.secrets[0].starts_with("a1 AUTHENTICATE XOAUTH2 "));
    let (reply, challenge) = refusal(r.end);
    assert_eq!(reply, "a1 NO AUTHENTICATE failed.");
    assert_eq!(challenge, None);
}

#[test]
fn gmail_json_challenge_is_answered_empty_and_kept_decoded() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(GMAIL_JSON);
    let r = run(
        login(false),
        &[
            "* OK Gimap ready for requests from 192.0.2.1",
            "* CAPABILITY IMAP4rev1 UNSELECT IDLE SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=OAUTHBEARER",
            "c1 OK Thats all she wrote!",
            &format!("+ {b64}"),
            "a1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)",
        ],
    );
    assert_eq!(
        r.said.last().unwrap(),
        "",
        "XOAUTH2 answers with an empty line"
    );
    let (reply, challenge) = refusal(r.end);
    assert!(reply.contains("AUTHENTICATIONFAILED"));
    assert_eq!(challenge.as_deref(), Some(GMAIL_JSON));
}

#[test]
fn preauth_greeting_needs_no_authenticate() {
    let r = run(
        login(false),
        &[
            "* PREAUTH [CAPABILITY IMAP4rev1] logged in as alice",
            "* CAPABILITY IMAP4rev1 IDLE",
            "c1 OK done",
        ],
    );
    assert_eq!(r.said, ["c1 CAPABILITY"]);
    let a = r.end.unwrap();
    assert_eq!(a.mechanism, None);
    assert_eq!(a.caps, ["IMAP4rev1", "IDLE"]);
}

#[test]
fn preauth_on_a_connection_that_must_use_starttls_is_refused() {
    let r = run(login(true), &["* PREAUTH hello"]);
    assert!(r.said.is_empty());
    assert!(matches!(r.end, Err(Failure::Protocol(m)) if m.contains("unencrypted")));
}

#[test]
fn lowercase_auth_capabilities_are_understood() {
    let r = run(
        login(false),
        &[
            "* ok ready",
            "c1 OK [CAPABILITY imap4rev1 sasl-ir auth=xoauth2] ok",
            "a1 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in",
        ],
    );
    let a = r.end.unwrap();
    assert_eq!(a.mechanism, Some(Mechanism::Xoauth2));
    assert_eq!(
        a.caps,
        ["IMAP4rev1", "IDLE", "MOVE"],
        "caps after login win"
    );
}

#[test]
fn without_sasl_ir_the_payload_follows_the_continuation() {
    let r = run(
        login(false),
        &[
            "* OK ready",
            "* CAPABILITY IMAP4rev1 AUTH=XOAUTH2",
            "c1 OK done",
            "+ ",
            "a1 OK done",
        ],
    );
    assert_eq!(
        r.said[1], "a1 AUTHENTICATE XOAUTH2",
        "no payload on the command"
    );
    assert!(r.said[2].starts_with("[secret"));
    assert_eq!(
        r.end.unwrap().caps,
        ["IMAP4rev1", "AUTH=XOAUTH2"],
        "caps before login kept"
    );
}

#[test]
fn without_sasl_ir_a_refused_authenticate_is_a_refusal() {
    let r = run(
        login(false),
        &[
            "* OK",
            "c1 OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] ok",
            "a1 NO not now",
        ],
    );
    assert_eq!(refusal(r.end).0, "a1 NO not now");
    assert!(r.secrets.is_empty(), "the token was never sent");
}

#[test]
fn oauthbearer_when_alone_and_its_challenge_is_answered_with_aq() {
    let r = run(
        login(false),
        &[
            "* OK",
            "c1 OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=OAUTHBEARER] ok",
            "+ eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0=",
            "a1 NO auth failed",
        ],
    );
    assert!(r.secrets[0].starts_with("a1 AUTHENTICATE OAUTHBEARER "));
    assert_eq!(r.said.last().unwrap(), "AQ==");
    let (_, challenge) = refusal(r.end);
    assert_eq!(challenge.as_deref(), Some(r#"{"status":"invalid_token"}"#));
}

#[test]
fn starttls_comes_before_capability() {
    let r = run(
        login(true),
        &[
            "* OK ready",
            "s1 OK Begin TLS negotiation now",
            "c1 OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] ok",
            "a1 OK done",
        ],
    );
    assert_eq!(r.said[..3], ["s1 STARTTLS", "TLS", "c1 CAPABILITY"]);
    assert!(r.end.is_ok());
}

#[test]
fn starttls_refused_ends_the_login_before_any_secret() {
    let r = run(
        login(true),
        &["* OK ready", "s1 BAD STARTTLS not available"],
    );
    assert_eq!(r.said, ["s1 STARTTLS"]);
    assert!(r.secrets.is_empty());
    assert!(matches!(r.end, Err(Failure::Protocol(m)) if m.contains("STARTTLS refused")));
}

#[test]
fn no_bearer_mechanism_is_a_protocol_failure_naming_the_offer() {
    let r = run(
        login(false),
        &["* OK", "c1 OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ok"],
    );
    assert!(matches!(r.end, Err(Failure::Protocol(m)) if m.contains("it offers: PLAIN")));
}

#[test]
fn not_an_imap_greeting_is_refused() {
    let r = run(login(false), &["+OK POP3 ready"]);
    assert!(matches!(r.end, Err(Failure::Protocol(m)) if m.contains("not an IMAP greeting")));
}

#[test]
fn overlong_line_is_refused() {
    let mut m = login(false);
    assert!(matches!(m.next(), super::super::Step::NeedLine));
    m.feed_line(format!("* OK {}\r\n", "x".repeat(MAX_LINE)).as_bytes());
    assert!(
        matches!(m.next(), super::super::Step::Failed(Failure::Protocol(s)) if s.contains("overlong"))
    );
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let mut m = login(false);
    m.feed_line(b"* OK\r\n");
    m.feed_line(b"c1 OK [CAPABILITY SASL-IR AUTH=XOAUTH2] ok\r\n");
    let shown = format!("{m:?}");
    let ir = crate::sasl::xoauth2("alice@contoso.com", "secret-token");
    assert!(
        !shown.contains("secret-token") && !shown.contains(&ir),
        "{shown}"
    );
    // The queued payload is not even dumped as numbers.
    assert!(shown.contains("SendSecret([94 bytes redacted])"), "{shown}");
    let mut steps = String::new();
    for _ in 0..3 {
        steps.push_str(&format!("{:?}", m.next()));
    }
    assert!(
        !steps.contains(&ir) && steps.contains("bytes redacted"),
        "{steps}"
    );
}

#[test]
fn response_collects_untagged_lines_until_the_tag() {
    let mut r = Response::new("m2");
    assert_eq!(r.feed("* 3 EXISTS").unwrap(), None);
    assert_eq!(
        r.feed("m2 OK [READ-WRITE] done").unwrap().as_deref(),
        Some("OK [READ-WRITE] done")
    );
    assert_eq!(r.untagged(), ["* 3 EXISTS"]);
    assert!(is_ok("ok") && !is_ok("NO"));
    assert_eq!(command("m3", "NOOP"), b"m3 NOOP\r\n");
}

#[test]
fn endless_untagged_lines_are_a_diagnosed_error() {
    let mut r = Response::new("m2");
    for _ in 0..crate::proto::MAX_REPLY_LINES {
        assert_eq!(r.feed("* OK").unwrap(), None);
    }
    let e = r.feed("* OK").unwrap_err().to_string();
    assert!(
        e.contains("misbehaving") && e.contains("lines in one reply"),
        "{e}"
    );
    // The login machine too: CAPABILITY answered by untagged lines forever.
    let mut m = crate::proto::Login::new(
        crate::config::Service::Imap,
        false,
        crate::proto::script::creds("t"),
    );
    m.feed_line(b"* OK hi\r\n");
    let mut failed = None;
    for _ in 0..=crate::proto::MAX_REPLY_LINES {
        while let crate::proto::Step::Send(_) = m.next() {}
        m.feed_line(b"* OK more\r\n");
        if let crate::proto::Step::Failed(f) = m.next() {
            failed = Some(f.to_string());
            break;
        }
    }
    assert!(failed.is_some_and(|f| f.contains("misbehaving")));
}
