//! `mailoauth-serve import`: mailboxes whose tokens were obtained elsewhere
//! (a move from another system, or the scale benchmarks' scripted provider),
//! read as JSON lines on stdin so no token is ever on a command line.
//!
//! Owns: reading and checking each line, and storing it as a sign-in would
//! (sealed, under the row's lease, `mailbox.connected` in the outbox). Must
//! not: echo a token in an error — a bad line is named by its number.

use std::io::BufRead;
use std::sync::Arc;

use serde::Deserialize;

use mailoauth::Error;
use mailoauth::oauth::TokenResponse;

use crate::db::{Db, Mailbox};
use crate::ports::DataKeys;
use crate::settings::Settings;
use crate::tokens::Tokens;

/// Longest line read: a token record is a few KiB; anything larger is not one.
const MAX_LINE: usize = 64 * 1024;

/// One line of the import.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    connector: String,
    email: String,
    refresh_token: String,
    /// Without it (and `expires_at`), the refresh token is redeemed at the
    /// provider during the import, paced at `refresh_rate`.
    access_token: Option<String>,
    /// Unix time the access token expires.
    expires_at: Option<i64>,
    /// Unix time it was issued (default: now); with it, the refresher knows
    /// the token's real lifetime.
    obtained_at: Option<i64>,
    reference: Option<String>,
}

/// Import every line of `input`; prints `id<TAB>email` per mailbox on stdout.
/// Stops at the first bad line, naming it; lines before it are stored.
pub async fn run(
    settings: Arc<Settings>,
    db: Db,
    keys: DataKeys,
    input: impl BufRead,
) -> Result<usize, Error> {
    let tokens = Tokens::new(db.clone(), Arc::new(keys), settings.clone());
    let mut n = 0;
    let pace = std::time::Duration::from_secs_f64(1.0 / settings.refresh_rate);
    let mut last_redeem = None;
    for (i, line) in input.split(b'\n').enumerate() {
        let line = line.map_err(|e| Error::io("cannot read the import", e))?;
        let bad = |why: String| {
            Error::Usage(format!(
                "import line {}: {why}; lines before it are stored",
                i + 1
            ))
        };
        if line.len() > MAX_LINE {
            return Err(bad(format!("over {MAX_LINE} bytes")));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let l: Line = serde_json::from_slice(&line)
            // serde's message may quote the input; say only where it failed.
            .map_err(|e| {
                bad(format!(
                    "not an import record (column {}: {:?})",
                    e.column(),
                    e.classify()
                ))
            })?;
        mailoauth::mail::wire::address("email", &l.email).map_err(|e| bad(e.to_string()))?;
        let account = settings
            .account(&l.connector, &l.email)
            .map_err(|e| bad(e.to_string()))?;
        let access = match (l.access_token, l.expires_at) {
            (Some(t), Some(at)) => Some((t, at)),
            (None, None) => None,
            _ => {
                return Err(bad(
                    "give `access_token` and `expires_at` together, or neither (the refresh \
                     token is then redeemed)"
                        .into(),
                ));
            }
        };
        if access.is_none() {
            // One provider request per such line: keep to the configured rate.
            if let Some(wait) =
                last_redeem.and_then(|t: std::time::Instant| pace.checked_sub(t.elapsed()))
            {
                tokio::time::sleep(wait).await;
            }
            last_redeem = Some(std::time::Instant::now());
        }
        let now = mailoauth::clock::now();
        let existing = db.mailbox_by_email(&l.connector, &l.email).await?;
        let created = existing.is_none();
        let m = match existing {
            Some(m) => m,
            None => {
                let kind = if account.has_refresh_tokens() {
                    "delegated"
                } else {
                    "app"
                };
                let m = Mailbox::new(
                    l.connector.clone(),
                    l.email.clone(),
                    kind,
                    l.reference.clone(),
                    now,
                );
                db.add_mailbox(&m).await?;
                m
            }
        };
        let Some((access_token, expires_at)) = access else {
            let rt = zeroize::Zeroizing::new(l.refresh_token);
            if let Err(e) = tokens.adopt(&m, account, rt).await {
                if created {
                    // A mailbox that never held a token is not left behind.
                    let _ = db.delete_mailbox(&m.id).await;
                }
                return Err(bad(format!("the refresh token was not accepted: {e}")));
            }
            println!("{}\t{}", m.id, m.email);
            n += 1;
            continue;
        };
        let resp = TokenResponse {
            access_token,
            expires_in: Some((expires_at - now).max(1)),
            refresh_token: Some(l.refresh_token),
            scope: None,
            id_token: None,
        };
        tokens.store_sign_in(&m, account.clone(), resp).await?;
        if let Some(at) = l.obtained_at.filter(|t| *t <= now) {
            let broker = tokens.broker(&m, account);
            tokio::task::spawn_blocking(move || -> Result<(), Error> {
                let store = broker.store();
                if let Some((mut rec, v)) = store.load()? {
                    for token in rec.access.values_mut() {
                        token.obtained_at = at;
                    }
                    store.save_if(Some(v), &rec)?;
                }
                Ok(())
            })
            .await
            .map_err(|e| Error::Flow(format!("import task failed: {e}")))??;
            tokens.schedule(&m).await?;
        }
        println!("{}\t{}", m.id, m.email);
        n += 1;
    }
    Ok(n)
}
