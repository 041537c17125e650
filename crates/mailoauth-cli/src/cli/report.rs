//! Human and JSON output of the reporting commands (`status`, `inspect`, `login`,
//! `logout`). JSON goes to stdout as one document; text goes to stdout too, since
//! it is the command's result.

use serde::Serialize;
use serde_json::{Value, json};

use mailoauth::broker::{LoginOutcome, LogoutOutcome};
use mailoauth::clock::now;
use mailoauth::jwt;
use mailoauth::mail::check::Outcome;
use mailoauth::{Account, Broker, Error, status};

use super::{print_stdout, render};

/// One row of `status`.
#[derive(Serialize)]
pub struct AccountStatus {
    account: String,
    user: String,
    provider: &'static str,
    flow: &'static str,
    store: String,
    /// Per resource: seconds of validity left (negative = expired).
    access_tokens: Vec<Value>,
    has_refresh_token: bool,
    refresh_token_age_seconds: Option<i64>,
    login_at: Option<i64>,
    login_required: Option<String>,
    last_error: Option<String>,
    last_error_at: Option<i64>,
    last_refresh_at: Option<i64>,
    /// Problem reading the store, if any (status still reports the rest).
    store_error: Option<String>,
}

/// Gather the status of one account (never fails on a bad store: it reports it).
pub fn account_status(b: &Broker) -> Result<AccountStatus, Error> {
    let a = b.account();
    let st = status::load(a);
    let (rec, store_error) = match b.record() {
        Ok(r) => (r, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let t = now();
    Ok(AccountStatus {
        account: a.name.clone(),
        user: a.user.clone(),
        provider: a.provider.as_str(),
        flow: a.flow.as_str(),
        store: b.store().describe(),
        access_tokens: rec
            .iter()
            .flat_map(|r| r.access.iter())
            .map(|(k, at)| json!({"resource": k, "expires_at": at.expires_at, "valid_seconds": at.expires_at - t}))
            .collect(),
        has_refresh_token: rec.as_ref().is_some_and(|r| r.refresh_token.is_some()),
        refresh_token_age_seconds: rec.as_ref().filter(|r| r.refresh_token.is_some()).map(|r| t - r.refresh_token_at),
        login_at: rec.as_ref().map(|r| r.login_at),
        login_required: st.login_required,
        last_error: st.last_error,
        last_error_at: st.last_error_at,
        last_refresh_at: st.last_refresh_at,
        store_error,
    })
}

fn human_duration(secs: i64) -> String {
    let s = secs.abs();
    let text = match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
    };
    if secs < 0 {
        format!("{text} ago")
    } else {
        text
    }
}

/// Print `status` rows.
pub fn status(json_out: bool, rows: &[AccountStatus]) -> Result<(), Error> {
    if json_out {
        return print_stdout(
            &serde_json::to_string_pretty(&json!({ "accounts": rows })).expect("serialises"),
        );
    }
    let mut out = String::new();
    for r in rows {
        out.push_str(&format!(
            "{}  {}  ({}, {})\n",
            r.account, r.user, r.provider, r.flow
        ));
        out.push_str(&format!("  store:          {}\n", r.store));
        if r.access_tokens.is_empty() {
            out.push_str("  access token:   none\n");
        }
        for at in &r.access_tokens {
            let left = at["valid_seconds"].as_i64().unwrap_or(0);
            let state = if left > 0 {
                format!("valid for {}", human_duration(left))
            } else {
                format!("expired {}", human_duration(left))
            };
            out.push_str(&format!(
                "  access token:   {} — {state}\n",
                at["resource"].as_str().unwrap_or("?")
            ));
        }
        match r.refresh_token_age_seconds {
            Some(age) => out.push_str(&format!(
                "  refresh token:  received {} ago\n",
                human_duration(age)
            )),
            None if r.flow == "client-credentials" => {
                out.push_str("  refresh token:  none (client credentials)\n")
            }
            None => out.push_str("  refresh token:  none\n"),
        }
        if let Some(l) = &r.login_required {
            out.push_str(&format!(
                "  LOGIN REQUIRED: {l}\n                  run `mailoauth login {}`\n",
                r.account
            ));
        }
        if let (Some(e), Some(at)) = (&r.last_error, r.last_error_at) {
            out.push_str(&format!(
                "  last error:     {e} ({} ago)\n",
                human_duration(now() - at)
            ));
        }
        if let Some(e) = &r.store_error {
            out.push_str(&format!("  store error:    {e}\n"));
        }
    }
    print_stdout(out.trim_end())
}

/// Print a login result.
pub fn login(json_out: bool, name: &str, user: &str, o: &LoginOutcome) -> Result<(), Error> {
    if json_out {
        return print_stdout(
            &json!({"account": name, "user": o.user, "user_verified": o.unverified.is_none(),
                "warning": o.unverified, "store": o.store, "set_aside": o.set_aside})
            .to_string(),
        );
    }
    let who = o
        .user
        .as_deref()
        .map(|u| format!(" as {u}"))
        .unwrap_or_default();
    eprintln!("mailoauth: signed in{who}; tokens stored in {}", o.store);
    if let Some(why) = &o.unverified {
        eprintln!(
            "mailoauth: warning: could not verify that the sign-in was as `{}`: {why}.\n\
             \x20 check it with `mailoauth check {name}`: if the server refuses the token, sign in again as `{}`",
            user, user
        );
    }
    Ok(())
}

/// Print a logout result.
pub fn logout(json_out: bool, name: &str, o: &LogoutOutcome) -> Result<(), Error> {
    let revoked = match &o.revoked {
        None => Value::Null,
        Some(Ok(())) => json!(true),
        Some(Err(e)) => json!(e),
    };
    if json_out {
        return print_stdout(
            &json!({"account": name, "deleted": o.had_tokens, "revoked": revoked}).to_string(),
        );
    }
    match (&o.revoked, o.had_tokens) {
        (_, false) => eprintln!("mailoauth: no tokens were stored for `{name}`"),
        (Some(Ok(())), true) => eprintln!("mailoauth: refresh token revoked; local tokens deleted"),
        (Some(Err(e)), true) => {
            eprintln!("mailoauth: local tokens deleted; revocation failed: {e}")
        }
        (None, true) => eprintln!(
            "mailoauth: local tokens deleted (the provider has no revocation endpoint; \
             revoke the app's sessions in the account's security settings if needed)"
        ),
    }
    Ok(())
}

/// Print `inspect`.
pub fn inspect(json_out: bool, b: &Broker, resource: Option<&str>) -> Result<(), Error> {
    let key = resource.unwrap_or(mailoauth::providers::MAIL_RESOURCE);
    let rec = b.record()?.ok_or_else(|| Error::LoginRequired {
        account: b.account().name.clone(),
        reason: "no token is stored yet".into(),
        remedy: None,
    })?;
    let at = rec.access.get(key).ok_or_else(|| {
        Error::Usage(format!(
            "no `{key}` token is stored yet; run `mailoauth token {} --resource {key}` first",
            b.account().name
        ))
    })?;
    let Some(claims) = jwt::claims(&at.token) else {
        let msg = "the access token is opaque (not a JWT; normal for Microsoft personal accounts): nothing to inspect";
        return if json_out {
            print_stdout(&json!({"jwt": false, "expires_at": at.expires_at}).to_string())
        } else {
            print_stdout(msg)
        };
    };
    let summary = claims_summary(
        &claims,
        mailoauth::diagnose::preflight(b.account(), resource, &claims),
    );
    if json_out {
        return print_stdout(&serde_json::to_string_pretty(&summary).expect("serialises"));
    }
    print_stdout(claims_text(&summary).trim_end())
}

/// The claims that matter, with the pre-flight warnings.
fn claims_summary(claims: &serde_json::Map<String, Value>, warnings: Vec<String>) -> Value {
    let pick = |ks: &[&str]| {
        ks.iter()
            .find_map(|k| claims.get(*k).cloned())
            .unwrap_or(Value::Null)
    };
    json!({
        "jwt": true,
        "audience": pick(&["aud"]),
        "scopes": pick(&["scp", "scope"]),
        "roles": pick(&["roles"]),
        "user": jwt::user(claims),
        "tenant": pick(&["tid"]),
        "app": pick(&["appid", "azp", "client_id"]),
        "issuer": pick(&["iss"]),
        "expires_at": pick(&["exp"]),
        "warnings": warnings,
    })
}

/// [`claims_summary`] for people: one labelled line per claim.
fn claims_text(summary: &Value) -> String {
    let mut out = String::new();
    for k in [
        "audience", "scopes", "roles", "user", "tenant", "app", "issuer",
    ] {
        match &summary[k] {
            Value::Null => {}
            Value::String(s) => out.push_str(&format!("{k:<9} {s}\n")),
            v => out.push_str(&format!("{k:<9} {v}\n")),
        }
    }
    if let Some(exp) = summary["expires_at"].as_i64() {
        let left = exp - now();
        let when = if left > 0 {
            format!("in {}", human_duration(left))
        } else {
            human_duration(left)
        };
        out.push_str(&format!("{:<9} {exp} ({when})\n", "expires"));
    }
    let warnings = summary["warnings"].as_array().cloned().unwrap_or_default();
    for w in &warnings {
        out.push_str(&format!("warning:  {}\n", w.as_str().unwrap_or_default()));
    }
    if warnings.is_empty() {
        out.push_str("ok:       audience, scopes and user match the account\n");
    }
    out
}

/// Print `check` results: one line per protocol, the cause and fix under a failure.
pub fn check(json_out: bool, a: &Account, o: &Outcome) -> Result<(), Error> {
    let mut rows = Vec::new();
    let mut text = String::new();
    for w in &o.preflight {
        text.push_str(&format!("pre-flight: {w}\n"));
    }
    for r in &o.reports {
        let (p, ms) = (r.service.name(), r.elapsed.as_millis());
        match &r.result {
            Ok(s) => {
                let mech = s.mechanism.map(|m| m.name()).unwrap_or("preauth");
                text.push_str(&format!(
                    "{p:<5} ok    {}  {}, {}  {ms} ms\n",
                    r.server,
                    mech.to_uppercase(),
                    s.detail
                ));
                rows.push(json!({"protocol": p, "ok": true, "server": r.server, "mechanism": s.mechanism.map(|m| m.name()), "detail": s.detail, "ms": ms}));
            }
            Err(f) => {
                let diag = o.diagnosis(a, r);
                let fix = diag.as_ref().map(|d| render::line(&d.remedy));
                text.push_str(&format!("{p:<5} FAIL  {}  {f}  {ms} ms\n", r.server));
                if let (Some(d), Some(fix)) = (&diag, &fix) {
                    text.push_str(&format!("      cause: {}\n      fix:   {fix}\n", d.cause));
                }
                rows.push(
                    json!({"protocol": p, "ok": false, "server": r.server, "error": f.to_string(),
                    "cause": diag.as_ref().map(|d| d.cause.clone()), "fix": fix, "ms": ms}),
                );
            }
        }
    }
    let checklist = o.app_only.as_ref().map(|r| render::lines(r).join("\n"));
    if let Some(c) = &checklist {
        text.push_str(c);
        text.push('\n');
    }
    if json_out {
        let doc = json!({"account": a.name, "preflight": o.preflight, "results": rows, "exit_code": o.exit_code(),
            "app_only_checklist": checklist});
        print_stdout(&serde_json::to_string_pretty(&doc).expect("serialises"))
    } else {
        print_stdout(text.trim_end())
    }
}
