//! The service's words for the library's errors and remedies.
//!
//! Owns: how a [`Remedy`] reads to an application or an administrator of the
//! service — "sign in again" is a re-consent link here, where the CLI says
//! `mailoauth login NAME`; a config key is one of `[serve.connectors.NAME]`.
//! Must not: decide what the fix is (the library's errors and catalog do).

use mailoauth::Error;
use mailoauth::remedy::Remedy;

/// One remedy step as a sentence.
fn step(r: &Remedy) -> String {
    match r {
        Remedy::Login { .. } | Remedy::LoginWithoutBrowser { .. } => {
            "the mailbox's owner connects it again through a re-consent link \
             (`reconnect_url` of this answer, or POST /v1/connect-links)"
                .into()
        }
        Remedy::Inspect { .. } | Remedy::Refresh { .. } => {
            "retry; if it lasts, connect the mailbox again through a re-consent link".into()
        }
        Remedy::AddService { account, service } => format!(
            "add `{}` to `services` of [serve.connectors.{account}], restart the service, \
             then connect the mailbox again",
            service.name()
        ),
        Remedy::AddScope { account, scope } => format!(
            "add `{scope}` to `scopes` of [serve.connectors.{account}], restart the service, \
             then connect the mailbox again"
        ),
        Remedy::RetryLater => "retry later: nothing needs changing here".into(),
        Remedy::AddAccount | Remedy::ChooseAccount { .. } => {
            "use a connector of [serve.connectors] (`GET /v1/mailboxes` lists the mailboxes)".into()
        }
        Remedy::CheckNetwork => {
            "the provider or the network is down: retry after Retry-After; a still-valid token \
             is served meanwhile"
                .into()
        }
        Remedy::ReportBug { .. } => {
            "this is a mailoauth bug: please report it with the service's log".into()
        }
        Remedy::SetConfig { key, to } => format!(
            "set `{}` in the service's config to {to}",
            key.replacen("accounts.", "serve.connectors.", 1)
        ),
        Remedy::Steps(s) => s.clone(),
        Remedy::All(v) => fix_of(&Remedy::All(v.clone())),
    }
}

/// The remedy's steps in one line; steps after the first read "then …".
pub fn fix_of(r: &Remedy) -> String {
    r.lines(step).join("; ")
}

/// The fix for `e`, when the library knows one.
pub fn fix(e: &Error) -> Option<String> {
    e.remedy().map(|r| fix_of(&r))
}

/// `e` with its cause and fix, as stored in a mailbox's `last_error` and shown
/// on the admin page.
pub fn diagnosis(e: &Error) -> String {
    let mut s = e.to_string();
    if let Some(c) = e.cause() {
        s.push_str(&format!("; cause: {c}"));
    }
    if let Some(f) = fix(e) {
        s.push_str(&format!("; fix: {f}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_again_reads_as_a_re_consent_link_and_config_keys_as_connector_keys() {
        let r = Remedy::Steps("grant admin consent".into()).then(Remedy::Login {
            account: "people".into(),
        });
        let f = fix_of(&r);
        assert!(f.starts_with("grant admin consent; then "), "{f}");
        assert!(
            f.contains("re-consent link") && !f.contains("mailoauth login"),
            "{f}"
        );
        let r = Remedy::SetConfig {
            key: "accounts.people.ca_file".into(),
            to: "a PEM file".into(),
        };
        assert!(fix_of(&r).contains("serve.connectors.people.ca_file"));
    }
}
