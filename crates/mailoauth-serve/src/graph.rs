//! Microsoft Graph `sendMail`: the send path when SMTP AUTH is off for the
//! mailbox or tenant (`535 5.7.139`) or the connector says `send_via = "graph"`.
//!
//! Owns: the one request (the MIME message, base64, as `text/plain` to
//! `/me/sendMail` for a signed-in user or `/users/{address}/sendMail` for an
//! app-only mailbox), which answers are transient (429, 5xx, no answer; with
//! their `Retry-After`) and which are the mailbox's problem, and Graph's error
//! codes in plain words. Must not: obtain tokens (the sender hands one in) or
//! follow redirects (a token must not travel to another host).

use std::time::Duration;

use base64::Engine;

/// One request's whole time: Graph answers a 35 MB upload well within it.
const TIMEOUT: Duration = Duration::from_secs(120);
/// Graph's error bodies are small; more is not read.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// How a Graph send failed.
#[derive(Debug)]
pub enum GraphFailure {
    /// Try again (after `retry_after` seconds when Graph said).
    Transient {
        /// What happened.
        error: String,
        /// Graph's `Retry-After`, seconds.
        retry_after: Option<i64>,
    },
    /// Will not work until someone changes something.
    Permanent {
        /// What Graph said.
        error: String,
        /// What to change.
        fix: String,
    },
}

/// The agent for Graph: no redirects, statuses as values, bounded time.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(concat!("mailoauth-serve/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// The sendMail URL: `/me` for delegated mailboxes, `/users/{address}` for
/// app-only ones (an app token has no "me").
pub fn send_url(base: &str, app_only: bool, address: &str) -> String {
    if app_only {
        let user: String = url::form_urlencoded::byte_serialize(address.as_bytes()).collect();
        format!("{base}/v1.0/users/{user}/sendMail")
    } else {
        format!("{base}/v1.0/me/sendMail")
    }
}

/// Send `mime` (the whole RFC 5322 message) with `token`.
pub fn send(agent: &ureq::Agent, url: &str, token: &str, mime: &[u8]) -> Result<(), GraphFailure> {
    let body = base64::engine::general_purpose::STANDARD.encode(mime);
    let resp = agent
        .post(url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "text/plain")
        .send(body.as_bytes())
        .map_err(|e| GraphFailure::Transient {
            error: format!("Graph did not answer: {e}"),
            retry_after: None,
        })?;
    let status = resp.status().as_u16();
    if status == 202 || status == 200 {
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let text = resp
        .into_body()
        .with_config()
        .limit(MAX_ERROR_BODY)
        .read_to_string()
        .unwrap_or_default();
    let (code, message) = error_of(&text);
    let error = format!(
        "Graph sendMail answered {status} {code}: {}",
        mailoauth::text::printable(&message)
    );
    if status == 429 || status >= 500 {
        return Err(GraphFailure::Transient { error, retry_after });
    }
    Err(GraphFailure::Permanent {
        fix: fix_for(status, &code),
        error,
    })
}

/// Graph's `{"error": {"code", "message"}}`.
fn error_of(body: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let s = |k: &str| v["error"][k].as_str().unwrap_or_default().to_owned();
    let code = s("code");
    let message = s("message");
    if code.is_empty() {
        ("(no error code)".into(), body.chars().take(200).collect())
    } else {
        (code, message)
    }
}

fn fix_for(status: u16, code: &str) -> String {
    match code {
        "ErrorSendAsDenied" => "the mailbox has no SendAs rights on the From address: send as the \
             mailbox, or grant them (`Add-RecipientPermission -Identity FROM -Trustee MAILBOX \
             -AccessRights SendAs`)"
            .into(),
        "MailboxNotEnabledForRESTAPI" | "ResourceNotFound" => "the mailbox is not in Exchange \
             Online (on-premises or unlicensed): send through SMTP (`send_via = \"smtp\"`) or \
             license the mailbox"
            .into(),
        "ErrorAccessDenied" | "Authorization_RequestDenied" | "AccessDenied" => "the token \
             lacks the right to send: grant the connector's app `Mail.Send` (delegated, or \
             application for app-only mailboxes) with admin consent, then reconnect the mailbox"
            .into(),
        "ErrorMessageSizeExceeded" => "the message is over the mailbox's send limit: send a \
             smaller one"
            .into(),
        _ if status == 401 => "Graph refused the token: the connector's `resources.graph` \
             scopes must include Mail.Send (Microsoft: https://graph.microsoft.com/.default with \
             Mail.Send consented); reconnect the mailbox after consent"
            .into(),
        _ => "see Graph's message above; the request itself was well formed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_error_codes() {
        assert_eq!(
            send_url("https://graph.microsoft.com", true, "a+b@x.com"),
            "https://graph.microsoft.com/v1.0/users/a%2Bb%40x.com/sendMail"
        );
        assert_eq!(
            send_url("https://graph.microsoft.us", false, "a@x.com"),
            "https://graph.microsoft.us/v1.0/me/sendMail"
        );
        let (c, m) = error_of(r#"{"error":{"code":"ErrorSendAsDenied","message":"no"}}"#);
        assert_eq!((c.as_str(), m.as_str()), ("ErrorSendAsDenied", "no"));
        assert!(fix_for(403, &c).contains("Add-RecipientPermission"));
        assert_eq!(error_of("<html>").0, "(no error code)");
    }
}
