//! Human and JSON output of the reporting commands (`status`, `inspect`, `login`,
//! `logout`). JSON goes to stdout as one document; text goes to stdout too, since
//! it is the command's result.

use serde::Serialize;
use serde_json::{Value, json};

use mailoauth::broker::{LoginOutcome, LogoutOutcome};
use mailoauth::clock::now;
use mailoauth::jwt;
use mailoauth::{Broker, Error, status};

use super::print_stdout;

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
pub fn login(json_out: bool, name: &str, o: &LoginOutcome) -> Result<(), Error> {
    if json_out {
        return print_stdout(
            &json!({"account": name, "user": o.user, "store": o.store, "set_aside": o.set_aside})
                .to_string(),
        );
    }
    let who = o
        .user
        .as_deref()
        .map(|u| format!(" as {u}"))
        .unwrap_or_default();
    eprintln!("mailoauth: signed in{who}; tokens stored in {}", o.store);
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
        fix: None,
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
    let warnings = mailoauth::diagnose::preflight(b.account(), resource, &claims);
    let pick = |ks: &[&str]| {
        ks.iter()
            .find_map(|k| claims.get(*k).cloned())
            .unwrap_or(Value::Null)
    };
    let summary = json!({
        "jwt": true,
        "audience": pick(&["aud"]),
        "scopes": pick(&["scp", "scope"]),
        "roles": pick(&["roles"]),
        "user": jwt::user(&claims),
        "tenant": pick(&["tid"]),
        "app": pick(&["appid", "azp", "client_id"]),
        "issuer": pick(&["iss"]),
        "expires_at": pick(&["exp"]),
        "warnings": warnings,
    });
    if json_out {
        return print_stdout(&serde_json::to_string_pretty(&summary).expect("serialises"));
    }
    let mut out = String::new();
    for (label, k) in [
        ("audience", "audience"),
        ("scopes", "scopes"),
        ("roles", "roles"),
        ("user", "user"),
        ("tenant", "tenant"),
        ("app", "app"),
        ("issuer", "issuer"),
    ] {
        match &summary[k] {
            Value::Null => {}
            Value::String(s) => out.push_str(&format!("{label:<9} {s}\n")),
            v => out.push_str(&format!("{label:<9} {v}\n")),
        }
    }
    if let Some(exp) = summary["expires_at"].as_i64() {
        let left = exp - now();
        out.push_str(&format!(
            "{:<9} {exp} ({})\n",
            "expires",
            if left > 0 {
                format!("in {}", human_duration(left))
            } else {
                human_duration(left)
            }
        ));
    }
    for w in &warnings {
        out.push_str(&format!("warning:  {w}\n"));
    }
    if warnings.is_empty() {
        out.push_str("ok:       audience, scopes and user match the account\n");
    }
    print_stdout(out.trim_end())
}

/// Print `check` results; returns the exit code (0, 5 refused, 4 unreachable, 1 other).
pub fn check(
    json_out: bool,
    b: &Broker,
    preflight: &[String],
    reports: &[mailoauth::mail::Report],
) -> Result<i32, Error> {
    use mailoauth::error::exit;
    use mailoauth::mail::Failure;
    let a = b.account();
    let proto = |r: &mailoauth::mail::Report| match r.service {
        mailoauth::config::Service::Imap => "imap",
        mailoauth::config::Service::Pop => "pop",
        mailoauth::config::Service::Smtp => "smtp",
    };
    let mut code = exit::OK;
    let mut rows = Vec::new();
    let mut text = String::new();
    for w in preflight {
        text.push_str(&format!("pre-flight: {w}\n"));
    }
    for r in reports {
        let p = proto(r);
        let ms = r.elapsed.as_millis();
        match &r.result {
            Ok(s) => {
                text.push_str(&format!(
                    "{p:<5} ok    {}  {}, {}  {ms} ms\n",
                    r.server,
                    s.mechanism.name().to_uppercase(),
                    s.detail
                ));
                rows.push(json!({"protocol": p, "ok": true, "server": r.server, "mechanism": s.mechanism.name(), "detail": s.detail, "ms": ms}));
            }
            Err(f) => {
                let (c, diag) = match f {
                    Failure::Refused {
                        reply, challenge, ..
                    } => (
                        exit::AUTH_REFUSED,
                        mailoauth::diagnose::wire_reply(a, p, reply, challenge.as_deref()),
                    ),
                    Failure::Unreachable(_) => (exit::UNREACHABLE, None),
                    _ => (exit::ERROR, None),
                };
                // Refusal outranks unreachability outranks the rest.
                code = match (code, c) {
                    (exit::AUTH_REFUSED, _) | (_, exit::AUTH_REFUSED) => exit::AUTH_REFUSED,
                    (exit::UNREACHABLE, _) | (_, exit::UNREACHABLE) => exit::UNREACHABLE,
                    _ => exit::ERROR,
                };
                text.push_str(&format!("{p:<5} FAIL  {}  {f}  {ms} ms\n", r.server));
                if let Some(d) = &diag {
                    text.push_str(&format!(
                        "      cause: {}\n      fix:   {}\n",
                        d.cause, d.fix
                    ));
                }
                rows.push(json!({"protocol": p, "ok": false, "server": r.server, "error": f.to_string(),
                    "cause": diag.as_ref().map(|d| d.cause.clone()), "fix": diag.as_ref().map(|d| d.fix.clone()), "ms": ms}));
            }
        }
    }
    let app_only = code != exit::OK && !a.has_refresh_tokens();
    if app_only {
        text.push_str(&mailoauth::diagnose::app_only_checklist(a));
        text.push('\n');
    }
    if json_out {
        let doc = json!({"account": a.name, "preflight": preflight, "results": rows, "exit_code": code,
            "app_only_checklist": app_only.then(|| mailoauth::diagnose::app_only_checklist(a))});
        print_stdout(&serde_json::to_string_pretty(&doc).expect("serialises"))?;
    } else {
        print_stdout(text.trim_end())?;
    }
    Ok(code)
}
