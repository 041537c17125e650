//! What a user can do about a failure, as data.
//!
//! Owns: the vocabulary of fixes the library knows — sign in again, inspect the
//! token, add a service, an administrator's steps … — with the account's values
//! filled in. Must not: word a fix for one front end. "Sign in again" is
//! `mailoauth login NAME` to the CLI and a re-consent link to a web page; each
//! front end renders a [`Remedy`] in its own terms.

use serde::Serialize;

use crate::service::Service;

/// Cause and fix of a failure, from the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnosis {
    /// What it means.
    pub cause: String,
    /// What to do.
    pub remedy: Remedy,
    /// True when only a new interactive login helps.
    pub login_required: bool,
}

/// A fix for the user, in the order it should be tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Remedy {
    /// Sign in again interactively (and consent).
    Login {
        /// Account name.
        account: String,
    },
    /// Sign in again, with the sign-in page opened on another device (no
    /// browser could show it here, or it went unnoticed).
    LoginWithoutBrowser {
        /// Account name.
        account: String,
    },
    /// Look at the token's audience, scopes and user.
    Inspect {
        /// Account name.
        account: String,
    },
    /// Renew the token now and try again.
    Refresh {
        /// Account name.
        account: String,
    },
    /// Add the service to the account's `services`, then sign in again.
    AddService {
        /// Account name.
        account: String,
        /// What is missing.
        service: Service,
    },
    /// Add this scope to the account's explicit `scopes`, then sign in again.
    AddScope {
        /// Account name.
        account: String,
        /// The scope, spelled as the account's other scopes are.
        scope: String,
    },
    /// Nothing to change: the failure is temporary at the server; try again later.
    RetryLater,
    /// Create an account first.
    AddAccount,
    /// Use one of the accounts that exist.
    ChooseAccount {
        /// Their names.
        known: Vec<String>,
    },
    /// The network or a proxy is in the way; a still-valid token is served meanwhile.
    CheckNetwork,
    /// Not the user's fault: a bug to report, with the command whose output helps.
    ReportBug {
        /// Account name.
        account: String,
    },
    /// Change one key of the config file (a web front end can offer a form for
    /// it; the CLI names the key).
    SetConfig {
        /// The key's full path, e.g. `accounts.work.ca_file`.
        key: String,
        /// What it should hold, in words (`a PEM file with …`, `localhost`).
        to: String,
    },
    /// Steps in words, with this account's values in them (provider settings,
    /// an administrator's PowerShell lines, the config key to change).
    Steps(String),
    /// Several remedies, to be done in this order.
    All(Vec<Remedy>),
}

impl Remedy {
    /// `first`, then `then`: flattened, so renderers see one list.
    pub fn then(self, then: Remedy) -> Remedy {
        let mut v = self.into_list();
        v.extend(then.into_list());
        Remedy::All(v)
    }

    /// The remedies as a list (one element unless this is [`Remedy::All`]).
    pub fn into_list(self) -> Vec<Remedy> {
        match self {
            Remedy::All(v) => v.into_iter().flat_map(Remedy::into_list).collect(),
            r => vec![r],
        }
    }

    /// The steps as `step` words them, one per line; steps after the first
    /// read "then …" (each front end has its words: a CLI command, a link).
    pub fn lines(&self, step: impl Fn(&Remedy) -> String) -> Vec<String> {
        self.clone()
            .into_list()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let text = step(s);
                if i == 0 { text } else { format!("then {text}") }
            })
            .collect()
    }

    /// The account a step is about, when it names one.
    pub fn account(&self) -> Option<&str> {
        match self {
            Remedy::Login { account }
            | Remedy::LoginWithoutBrowser { account }
            | Remedy::Inspect { account }
            | Remedy::Refresh { account }
            | Remedy::AddService { account, .. }
            | Remedy::AddScope { account, .. }
            | Remedy::ReportBug { account } => Some(account),
            Remedy::All(v) => v.iter().find_map(Remedy::account),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn then_flattens_into_one_ordered_list() {
        let r = Remedy::Steps("grant consent".into())
            .then(Remedy::Login {
                account: "w".into(),
            })
            .then(Remedy::All(vec![Remedy::Inspect {
                account: "w".into(),
            }]));
        assert_eq!(r.clone().into_list().len(), 3);
        assert_eq!(r.account(), Some("w"));
        let json = serde_json::to_string(&Remedy::Login {
            account: "w".into(),
        })
        .unwrap();
        assert_eq!(json, r#"{"kind":"login","account":"w"}"#);
    }
}
