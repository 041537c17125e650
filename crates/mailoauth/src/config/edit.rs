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
    let new_text = doc.to_string();
    let c = Config::parse(&new_text, path)?;
    providers::resolve(&c, name)?;
    Ok(new_text)
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
