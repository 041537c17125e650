//! The flows' steps against a scripted transport: no listener, no network, no
//! terminal. (Test-only use of `broker::memory`; the flows themselves never import
//! the broker.)

use super::authcode::{self, Pending, Redirect};
use super::device::{self, DeviceAuthorization, Poll};
use crate::broker::memory::{ScriptedTransport, oauth_error, token_json};
use crate::config::Config;
use crate::error::Error;
use crate::providers::Account;

const T0: i64 = 1_700_000_000;

fn account(flow: &str) -> Account {
    let c = Config::parse(
        &format!(
            "[accounts.a]\nprovider = \"custom\"\nuser = \"u@x\"\nclient_id = \"c\"\nscopes = [\"s\"]\n\
             authorize_url = \"https://x/a\"\ntoken_url = \"https://x/t\"\ndevice_url = \"https://x/d\"\n\
             flow = \"{flow}\"\nclient_secret = \"sec\"\n"
        ),
        std::path::Path::new("/c"),
    )
    .unwrap();
    crate::providers::resolve(&c, "a").unwrap()
}

fn query(url: &str, key: &str) -> String {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

#[test]
fn authcode_begin_and_finish_on_another_node_via_serialised_pending() {
    let a = account("auth-code");
    let redirect = "https://app.example/oauth/callback";
    let (url, pending) = authcode::begin(&a, redirect, T0 + 600).unwrap();
    assert_eq!(query(&url, "state"), pending.state);
    assert_eq!(query(&url, "redirect_uri"), redirect);
    assert_eq!(query(&url, "code_challenge_method"), "S256");
    assert!(!format!("{pending:?}").contains(&pending.verifier));

    // The callback reaches another node: only the serialised Pending travels.
    let json = serde_json::to_string(&pending).unwrap();
    let there: Pending = serde_json::from_str(&json).unwrap();
    assert_eq!(there, pending);

    let t = ScriptedTransport::replies(vec![Ok(token_json("at", 3600, Some("rt")))]);
    let callback = format!("{redirect}?code=C0DE&state={}", there.state);
    let resp = authcode::finish(&a, &there, Redirect::Url(&callback), &t, T0 + 10).unwrap();
    assert_eq!(resp.access_token, "at");
    let seen = &t.requests()[0];
    assert_eq!(seen.grant_type.as_deref(), Some("authorization_code"));
    assert!(seen.params.contains(&"code_verifier"));
    assert!(seen.params.contains(&"redirect_uri"));
}

#[test]
fn authcode_finish_refuses_wrong_state_wrong_path_and_late_callbacks() {
    let a = account("auth-code");
    let redirect = "https://app.example/cb";
    let (_, p) = authcode::begin(&a, redirect, T0 + 600).unwrap();
    let t = ScriptedTransport::replies(vec![]);
    let wrong_state = format!("{redirect}?code=x&state=forged");
    let wrong_path = format!("https://app.example/other?code=x&state={}", p.state);
    let on_time = format!("{redirect}?code=x&state={}", p.state);
    for (input, now) in [
        (Redirect::Url(&wrong_state), T0),
        (Redirect::Url(&wrong_path), T0),
        (
            Redirect::Code {
                code: "x",
                state: "forged",
            },
            T0,
        ),
        (Redirect::Url(&on_time), T0 + 601),
    ] {
        assert!(matches!(
            authcode::finish(&a, &p, input, &t, now),
            Err(Error::Flow(_) | Error::SignInTimedOut { .. })
        ));
    }
    assert_eq!(t.calls(), 0, "nothing refused reaches the token endpoint");
    let denied = format!("{redirect}?error=access_denied&state={}", p.state);
    assert!(authcode::finish(&a, &p, Redirect::Url(&denied), &t, T0).is_err());
    assert_eq!(t.calls(), 0);
}

#[test]
fn device_poll_pending_slow_down_done() {
    let a = account("device");
    let mut start = serde_json::Map::new();
    for (k, v) in [
        ("device_code", "DEV-secret"),
        ("user_code", "ABCD-EFGH"),
        ("verification_url", "https://x/device"),
    ] {
        start.insert(k.into(), v.into());
    }
    start.insert("expires_in".into(), 600.into());
    start.insert("interval".into(), "3".into());
    let t = ScriptedTransport::replies(vec![
        Ok(start),
        Err(oauth_error("authorization_pending")),
        Err(oauth_error("slow_down")),
        Ok(token_json("at", 3600, Some("rt"))),
    ]);
    let auth = device::start(&a, &t, T0).unwrap();
    assert_eq!(auth.verification_uri, "https://x/device");
    assert_eq!((auth.interval, auth.expires_at), (3, T0 + 600));
    assert!(!format!("{auth:?}").contains("DEV-secret"));

    let json = serde_json::to_string(&auth).unwrap();
    let mut auth: DeviceAuthorization = serde_json::from_str(&json).unwrap();
    assert!(matches!(device::poll(&a, &auth, &t), Poll::Pending));
    assert!(matches!(device::poll(&a, &auth, &t), Poll::SlowDown));
    auth.slow_down();
    assert_eq!(auth.interval, 8);
    let Poll::Done(resp) = device::poll(&a, &auth, &t) else {
        panic!("expected Done")
    };
    assert_eq!(resp.access_token, "at");
    assert_eq!(
        t.requests()[1].grant_type.as_deref(),
        Some("urn:ietf:params:oauth:grant-type:device_code")
    );
}

#[test]
fn device_poll_declined_is_failed() {
    let a = account("device");
    let auth = DeviceAuthorization {
        device_code: "d".into(),
        user_code: "u".into(),
        verification_uri: "https://x/device".into(),
        verification_uri_complete: None,
        expires_at: T0 + 600,
        interval: 5,
    };
    let t = ScriptedTransport::replies(vec![Err(oauth_error("access_denied"))]);
    assert!(matches!(
        device::poll(&a, &auth, &t),
        Poll::Failed(Error::Flow(_))
    ));
}
