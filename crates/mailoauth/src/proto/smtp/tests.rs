//! The SMTP login machine against scripted Exchange, Gmail and Postfix replies.

use base64::Engine as _;

use super::super::script::{creds, run};
use super::super::{Failure, Login};
use super::*;
use crate::config::Service;

const EHLO_MS: &[&str] = &[
    "250-SN4PR0501CA0123.outlook.office365.com Hello [192.0.2.1]",
    "250-SIZE 157286400",
    "250-AUTH LOGIN XOAUTH2",
    "250 SMTPUTF8",
];

fn login(token: &str, starttls: bool) -> Login {
    Login::new(Service::Smtp, starttls, creds(token))
}

fn script<'a>(head: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    let mut v =
        vec!["220 SN4PR0501CA0123.outlook.office365.com Microsoft ESMTP MAIL Service ready"];
    v.extend_from_slice(head);
    v.extend_from_slice(EHLO_MS);
    v.extend_from_slice(tail);
    v
}

fn refusal(end: Result<super::super::Authenticated, Failure>) -> (String, Option<String>) {
    match end {
        Err(Failure::Refused {
            reply, challenge, ..
        }) => (reply, challenge),
        e => panic!("expected a refusal, got {:?}", e.map(|a| a.caps)),
    }
}

#[test]
fn exchange_smtp_client_authentication_disabled_is_kept_verbatim() {
    let big = "t".repeat(2000);
    let r = run(
        login(&big, false),
        &script(
            &[],
            &[
                "334 ",
                "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
            ],
        ),
    );
    let (reply, _) = refusal(r.end);
    assert!(reply.starts_with("535 5.7.139"), "{reply}");
}

#[test]
fn exchange_smtp_535_5_7_3_is_a_refusal() {
    let r = run(
        login("short", false),
        &script(
            &[],
            &["535 5.7.3 Authentication unsuccessful [SN4PR0501CA0123.namprd05.prod.outlook.com]"],
        ),
    );
    assert!(refusal(r.end).0.starts_with("535 5.7.3"));
}

#[test]
fn a_long_token_uses_the_two_step_auth() {
    let token = "x".repeat(2400);
    let r = run(
        login(&token, false),
        &script(&[], &["334 ", "235 2.7.0 Authentication successful"]),
    );
    assert_eq!(
        r.said,
        [
            "EHLO mailoauth.localhost",
            "AUTH XOAUTH2",
            r.said[2].as_str()
        ]
    );
    assert!(r.said[2].starts_with("[secret"));
    assert!(
        !r.secrets[0].contains(' '),
        "the payload goes alone on its line"
    );
    assert!(r.secrets[0].len() > MAX_COMMAND);
    let a = r.end.unwrap();
    assert!(a.caps.contains(&"AUTH LOGIN XOAUTH2".to_owned()));
}

#[test]
fn a_short_token_goes_on_the_auth_line() {
    let r = run(login("short", false), &script(&[], &["235 2.7.0 ok"]));
    assert_eq!(r.said.len(), 2);
    assert!(r.secrets[0].starts_with("AUTH XOAUTH2 "));
    assert!(r.secrets[0].len() + 2 <= MAX_COMMAND);
    assert!(r.end.is_ok());
}

#[test]
fn gmail_334_json_challenge_is_answered_and_kept_decoded() {
    let json = r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#;
    let b64 = base64::engine::general_purpose::STANDARD.encode(json);
    let challenge = format!("334 {b64}");
    let r = run(
        login("short", false),
        &[
            "220 smtp.gmail.com ESMTP a1sm123 - gsmtp",
            "250-smtp.gmail.com at your service",
            "250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH",
            "250 SMTPUTF8",
            &challenge,
            "535-5.7.8 Username and Password not accepted.",
            "535 5.7.8 https://support.google.com/mail/?p=BadCredentials",
        ],
    );
    assert_eq!(r.said.last().unwrap(), "");
    let (reply, got) = refusal(r.end);
    assert!(
        reply.contains("535-5.7.8") && reply.contains(" / 535 5.7.8"),
        "{reply}"
    );
    assert_eq!(got.as_deref(), Some(json));
}

#[test]
fn multi_line_greeting_and_auth_equals_keyword() {
    let r = run(
        login("short", false),
        &[
            "220-mail.example.org ESMTP",
            "220 please be nice",
            "250-mail.example.org",
            "250-AUTH=oauthbearer",
            "250 8BITMIME",
            "235 ok",
        ],
    );
    assert_eq!(r.said[0], "EHLO mailoauth.localhost");
    assert!(r.secrets[0].starts_with("AUTH OAUTHBEARER "));
    assert!(r.end.is_ok());
}

#[test]
fn starttls_then_ehlo_again() {
    let r = run(
        login("short", true),
        &script(
            &["250-x", "250 STARTTLS", "220 2.0.0 go ahead"],
            &["235 ok"],
        ),
    );
    assert_eq!(
        r.said[..4],
        [
            "EHLO mailoauth.localhost",
            "STARTTLS",
            "TLS",
            "EHLO mailoauth.localhost"
        ]
    );
}

#[test]
fn starttls_refused_ends_the_login() {
    let r = run(
        login("short", true),
        &[
            "220 hi",
            "250 x",
            "454 4.7.0 TLS not available due to local problem",
        ],
    );
    assert!(r.secrets.is_empty());
    assert!(matches!(r.end, Err(Failure::Protocol(m)) if m.contains("STARTTLS refused: 454")));
}

#[test]
fn two_step_auth_refused_before_the_payload() {
    let token = "x".repeat(2400);
    let r = run(
        login(&token, false),
        &script(&[], &["504 5.7.4 Unrecognized authentication type"]),
    );
    assert!(r.secrets.is_empty());
    assert!(refusal(r.end).0.starts_with("504"));
}

#[test]
fn garbage_is_not_an_smtp_reply() {
    let r = run(login("t", false), &["* OK IMAP here"]);
    assert!(matches!(r.end, Err(Failure::Protocol(m)) if m.contains("not an SMTP reply")));
}

#[test]
fn overlong_reply_line_is_refused() {
    let mut m = login("t", false);
    m.feed_line(format!("220 {}", "x".repeat(MAX_LINE)).as_bytes());
    assert!(
        matches!(m.next(), super::super::Step::Failed(Failure::Protocol(s)) if s.contains("overlong"))
    );
}

#[test]
fn reply_reader_joins_continuation_lines() {
    let mut r = Reply::default();
    assert!(r.feed("250-a").unwrap().is_none());
    let (code, lines) = r.feed("250 b").unwrap().unwrap();
    assert_eq!((code, lines.len()), (250, 2));
    assert!(r.feed("xyz").is_err());
}
