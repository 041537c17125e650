//! Editing the config file without destroying it: set keys of one account,
//! keeping every comment, blank line and key order the user wrote.
//!
//! Owns: turning "these keys of account NAME" into new file text, refusing to
//! edit a file it cannot parse (rewriting it could lose the user's text), and
//! checking that the result is a valid account. Must not: write files or ask
//! questions (the front ends do; `add` and onboarding both use this).

use std::path::Path;

use toml_edit::{DocumentMut, InlineTable, Item, Table, value};

use super::Config;
use crate::error::{Error, Result};
use crate::providers;

/// A value to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string.
    Str(String),
    /// A list of strings.
    List(Vec<String>),
    /// An integer.
    Int(i64),
    /// An inline table, e.g. `imap = { host = "…", port = 993, tls = "implicit" }`.
    Table(Vec<(&'static str, Value)>),
    /// A secret source as an inline table: `{ env = "VAR" }` or `{ command = "…" }`.
    Source {
        /// `env` or `command`.
        kind: &'static str,
        /// The variable or the command.
        value: String,
    },
}

/// The file text `text` (of the config at `path`, for error messages) with the
/// keys `values` of account `name` set, creating the account when missing.
/// The result parses and resolves as an account, or nothing is returned.
pub fn set_account_keys(
    text: &str,
    path: &Path,
    name: &str,
    values: &[(&str, Value)],
) -> Result<String> {
    let new_text = set_keys_unchecked(text, path, name, values)?;
    let c = Config::parse(&new_text, path)?;
    providers::resolve(&c, name)?;
    Ok(new_text)
}

/// A key to set with the comment written above it (onboarding names each
/// value's source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Noted {
    /// The key.
    pub key: &'static str,
    /// Its value.
    pub value: Value,
    /// One comment line (without `#`), or empty.
    pub note: String,
}

/// Like [`set_account_keys`], for an account written as a whole: each key
/// gets its comment, `header` lines go above the account's table, and the
/// result must resolve except for a missing `client_id` (onboarding writes
/// the account before an app is registered; every command then says how to
/// add one).
pub fn set_account_keys_noted(
    text: &str,
    path: &Path,
    name: &str,
    header: &[String],
    values: &[Noted],
) -> Result<String> {
    let plain: Vec<(&str, Value)> = values.iter().map(|n| (n.key, n.value.clone())).collect();
    let bare = set_keys_unchecked(text, path, name, &plain)?;
    let mut doc: DocumentMut = bare
        .parse()
        .map_err(|e: toml_edit::TomlError| Error::Config {
            path: path.to_owned(),
            line: None,
            message: e.message().to_owned(),
        })?;
    if let Some(t) = doc["accounts"][name].as_table_mut() {
        let comment = |lines: &mut dyn Iterator<Item = &str>| -> String {
            lines
                .map(|l| format!("# {}\n", l.replace(['\n', '\r'], " ")))
                .collect()
        };
        if !header.is_empty() {
            let mut lines = header.iter().map(String::as_str);
            t.decor_mut()
                .set_prefix(format!("\n{}", comment(&mut lines)));
        }
        for n in values.iter().filter(|n| !n.note.is_empty()) {
            if let Some(mut k) = t.key_mut(n.key) {
                let mut one = std::iter::once(n.note.as_str());
                k.leaf_decor_mut().set_prefix(comment(&mut one));
            }
        }
    }
    let new_text = doc.to_string();
    let mut c = Config::parse(&new_text, path)?;
    if let Some(a) = c.accounts.get_mut(name)
        && a.client_id.is_none()
    {
        a.client_id = Some("(not registered yet)".into());
    }
    providers::resolve(&c, name)?;
    Ok(new_text)
}

fn set_keys_unchecked(
    text: &str,
    path: &Path,
    name: &str,
    values: &[(&str, Value)],
) -> Result<String> {
    Config::parse(text, path)?;
    let config_error = |message: String| Error::Config {
        path: path.to_owned(),
        line: None,
        message,
    };
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| config_error(e.message().to_owned()))?;
    let accounts = doc
        .entry("accounts")
        .or_insert(Item::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| config_error("`accounts` is not a table".into()))?;
    accounts.set_implicit(true);
    let t = accounts
        .entry(name)
        .or_insert(Item::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| config_error(format!("accounts.{name} is not a table")))?;
    for (k, v) in values {
        t[*k] = item(v);
    }
    Ok(doc.to_string())
}

fn item(v: &Value) -> Item {
    match v {
        Value::Str(s) => value(s.as_str()),
        Value::Int(i) => value(*i),
        Value::List(l) => {
            let mut a = toml_edit::Array::new();
            l.iter().for_each(|s| a.push(s.as_str()));
            value(a)
        }
        Value::Table(fields) => {
            let mut it = InlineTable::new();
            for (k, v) in fields {
                if let Ok(v) = item(v).into_value() {
                    it.insert(*k, v);
                }
            }
            value(it)
        }
        Value::Source { kind, value: v } => {
            let mut it = InlineTable::new();
            it.insert(*kind, v.as_str().into());
            value(it)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "# my accounts\n[accounts.old]  # keep me\nprovider = \"google\"\nuser = \"o@gmail.com\"\nclient_id = \"x\"\n";

    #[test]
    fn set_keys_keeps_comments_and_other_accounts() {
        let out = set_account_keys(
            BASE,
            Path::new("c.toml"),
            "work",
            &[
                ("provider", Value::Str("microsoft".into())),
                ("user", Value::Str("a@contoso.com".into())),
                ("client_id", Value::Str("id".into())),
                ("services", Value::List(vec!["imap".into()])),
                ("min_validity", Value::Int(120)),
                (
                    "client_secret",
                    Value::Source {
                        kind: "env",
                        value: "S".into(),
                    },
                ),
            ],
        )
        .unwrap();
        assert!(
            out.starts_with("# my accounts\n[accounts.old]  # keep me\n"),
            "{out}"
        );
        assert!(out.contains("client_secret = { env = \"S\" }"), "{out}");
        assert!(out.contains("min_validity = 120"), "{out}");
    }

    #[test]
    fn noted_keys_carry_their_comment_and_may_lack_a_client_id() {
        let out = set_account_keys_noted(
            BASE,
            Path::new("c.toml"),
            "alice-contoso",
            &["discovered from alice@contoso.com".into()],
            &[
                Noted {
                    key: "provider",
                    value: Value::Str("microsoft".into()),
                    note: "MX contoso.mail.protection.outlook.com".into(),
                },
                Noted {
                    key: "user",
                    value: Value::Str("alice@contoso.com".into()),
                    note: String::new(),
                },
                Noted {
                    key: "imap",
                    value: Value::Table(vec![
                        ("host", Value::Str("imap.x.com".into())),
                        ("port", Value::Int(993)),
                    ]),
                    note: "autoconfig".into(),
                },
            ],
        )
        .unwrap();
        assert!(
            out.contains("# discovered from alice@contoso.com\n[accounts.alice-contoso]"),
            "{out}"
        );
        assert!(
            out.contains("# MX contoso.mail.protection.outlook.com\nprovider = \"microsoft\""),
            "{out}"
        );
        assert!(
            out.contains("# autoconfig\nimap = { host = \"imap.x.com\", port = 993 }"),
            "{out}"
        );
        assert!(
            out.starts_with("# my accounts\n[accounts.old]  # keep me\n"),
            "{out}"
        );
    }

    #[test]
    fn an_invalid_result_or_input_is_refused() {
        let bad = set_account_keys(
            BASE,
            Path::new("c.toml"),
            "work",
            &[("provider", Value::Str("nope".into()))],
        );
        assert!(matches!(bad, Err(Error::Config { .. })), "{bad:?}");
        let garbage = set_account_keys("[accounts\n", Path::new("c.toml"), "w", &[]);
        assert!(matches!(garbage, Err(Error::Config { .. })));
    }
}
