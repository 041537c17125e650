//! Connecting a mailbox: connect links, the consent page, the provider's
//! callback.
//!
//! Owns: the person-facing journey — an application asks for a link, the
//! person opens it, sees what will be granted, goes to the provider (PKCE,
//! `state`, `login_hint`), comes back to `/oauth/callback`, and the service
//! checks that the signed-in user is the expected one before it stores
//! anything. Links are random 256-bit secrets kept as digests (unforgeable,
//! single-use, expiring after [`LINK_TTL`]); the PKCE state is sealed in the
//! database, so any node may receive the callback. Pages are plain semantic
//! HTML that works without JavaScript. Must not: show a token, a code or a
//! secret on a page or in a log.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use mailoauth::flows::authcode::{self, Pending, Redirect};
use mailoauth::{Error, config::FlowKind};

use crate::api::App;
use crate::db::{ConnectLink, Mailbox};
use crate::keys::digest;

/// How long a connect link works.
pub const LINK_TTL: Duration = Duration::from_secs(30 * 60);
/// How long the person may take at the provider.
const SIGN_IN_TTL: Duration = Duration::from_secs(15 * 60);

/// `POST /v1/connect-links`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLink {
    /// The connector (a `[serve.connectors.NAME]` with the auth-code flow).
    /// Without it, discovery picks it from `email` (as `mailoauth add EMAIL`
    /// decides a provider, tenant and cloud), and the answer says why.
    connector: Option<String>,
    /// The address that must sign in (another account is refused).
    email: String,
    /// Where the success page sends the person back to (http or https, at most 2048 bytes).
    return_url: Option<String>,
    /// The application's own reference for the mailbox (at most 256 bytes).
    reference: Option<String>,
}

impl NewLink {
    /// A fresh re-consent link for mailbox `m`, with its reference (the admin
    /// page's button: made on purpose, shown once, unlike [`reconnect_link`]'s
    /// shared one).
    pub fn reconsent(m: &Mailbox) -> NewLink {
        NewLink {
            connector: Some(m.connector.clone()),
            email: m.email.clone(),
            return_url: None,
            reference: m.reference.clone(),
        }
    }
}

/// A link made: its URL, the stored link, and the discovery that picked its
/// connector (when the request named none).
pub struct Created {
    /// The URL to give the person.
    pub url: String,
    /// The stored link.
    pub link: ConnectLink,
    /// Discovery's decision, when it chose the connector.
    pub discovery: Option<mailoauth::discover::Decision>,
}

/// Make a connect link.
pub async fn create_link(app: &App, n: NewLink) -> Result<Created, Error> {
    mailoauth::mail::wire::address("email", &n.email)?;
    if let Some(u) = &n.return_url {
        let ok = url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
        if !ok || u.len() > 2048 {
            return Err(Error::Usage(
                "`return_url` must be an http(s) URL of at most 2048 bytes".into(),
            ));
        }
    }
    if n.reference.as_ref().is_some_and(|r| r.len() > 256) {
        return Err(Error::Usage("`reference` is over 256 bytes".into()));
    }
    let (connector, discovery) = match &n.connector {
        Some(c) => (c.clone(), None),
        None => {
            let (c, d) = crate::discovery::connector_for(&app.settings, &n.email).await?;
            (c, Some(d))
        }
    };
    let account = app.settings.account(&connector, &n.email)?;
    if account.flow != FlowKind::AuthCode {
        return Err(Error::Usage(format!(
            "connector `{connector}` uses the {} flow: connect links are for people signing in (auth-code)",
            account.flow.as_str()
        )));
    }
    let (url, link) = store_link(app, connector, n, None).await?;
    Ok(Created {
        url,
        link,
        discovery,
    })
}

async fn store_link(
    app: &App,
    connector: String,
    n: NewLink,
    mailbox_id: Option<String>,
) -> Result<(String, ConnectLink), Error> {
    let secret = mailoauth::random::token(32);
    let now = mailoauth::clock::now();
    let link = ConnectLink {
        id: format!("lnk_{}", mailoauth::random::token(9)),
        digest: digest(&secret),
        connector,
        email: n.email,
        return_url: n.return_url,
        reference: n.reference,
        mailbox_id,
        expires_at: now + LINK_TTL.as_secs() as i64,
        used_at: None,
    };
    app.db.add_link(&link, now).await?;
    Ok((format!("{}/connect/{secret}", app.settings.base_url), link))
}

/// Re-consent links this node handed out, by mailbox: (URL, expiry). Kept in
/// memory only (the database has digests), so every failing request of a
/// mailbox does not make a new link row.
#[derive(Default)]
pub struct Reconnects(std::sync::Mutex<std::collections::HashMap<String, (String, i64)>>);

/// A re-consent link for mailbox `m`: this node's earlier one while it has
/// more than 5 minutes left, else a new one.
pub async fn reconnect_link(app: &App, m: &Mailbox) -> Result<String, Error> {
    let now = mailoauth::clock::now();
    if let Some((url, until)) = app.reconnects.0.lock().unwrap().get(&m.id)
        && *until > now + 300
    {
        return Ok(url.clone());
    }
    let n = NewLink::reconsent(m);
    let (url, link) = store_link(app, m.connector.clone(), n, Some(m.id.clone())).await?;
    let mut all = app.reconnects.0.lock().unwrap();
    // Bounded by the mailboxes; expired entries go when a new one is made.
    all.retain(|_, (_, until)| *until > now);
    all.insert(m.id.clone(), (url.clone(), link.expires_at));
    Ok(url)
}

/// The link a secret opens, or the page that says why it does not.
async fn open_link(app: &App, secret: &str) -> Result<ConnectLink, Response> {
    let link = if secret.len() <= 64 {
        app.db
            .link(&digest(secret))
            .await
            .map_err(|e| fail_page(&e))?
    } else {
        None
    };
    let link = link.ok_or_else(|| {
        page(
            StatusCode::NOT_FOUND,
            "This link does not work",
            "<p>This connect link is not one this service made. Ask the application for a new link.</p>",
        )
    })?;
    if link.used_at.is_some() {
        return Err(page(
            StatusCode::GONE,
            "This link was used already",
            "<p>Each connect link works once, and this one has connected its mailbox. \
             If you need to connect again, ask the application for a new link.</p>",
        ));
    }
    if mailoauth::clock::now() > link.expires_at {
        return Err(page(
            StatusCode::GONE,
            "This link has expired",
            &format!(
                "<p>Connect links work for {} minutes. Ask the application for a new link.</p>",
                LINK_TTL.as_secs() / 60
            ),
        ));
    }
    Ok(link)
}

/// `GET /connect/{secret}`: what will be granted, and one button.
pub async fn show(State(app): State<Arc<App>>, Path(secret): Path<String>) -> Response {
    let link = match open_link(&app, &secret).await {
        Ok(l) => l,
        Err(page) => return page,
    };
    let account = match app.settings.account(&link.connector, &link.email) {
        Ok(a) => a,
        Err(e) => return fail_page(&e),
    };
    let scopes: String = account
        .scopes(None)
        .unwrap_or_default()
        .iter()
        .map(|s| format!("<li><code>{}</code></li>", esc(s)))
        .collect();
    page(
        StatusCode::OK,
        "Connect your mailbox",
        &format!(
            "<p>An application asks to use the mailbox <strong>{email}</strong> while you are away: \
             to read and send mail as you, until you disconnect it.</p>\
             <h2>What you grant</h2><ul>{scopes}</ul>\
             <p>You will sign in at {provider}. Sign in as <strong>{email}</strong>: \
             another account is refused.</p>\
             <form method=\"post\"><button type=\"submit\">Continue to {provider}</button></form>",
            email = esc(&link.email),
            provider = esc(account.provider.as_str()),
        ),
    )
}

/// `POST /connect/{secret}`: begin the sign-in at the provider.
pub async fn start(State(app): State<Arc<App>>, Path(secret): Path<String>) -> Response {
    let link = match open_link(&app, &secret).await {
        Ok(l) => l,
        Err(page) => return page,
    };
    match begin(&app, &link).await {
        Ok(url) => (StatusCode::SEE_OTHER, [(header::LOCATION, url)]).into_response(),
        Err(e) => fail_page(&e),
    }
}

async fn begin(app: &App, link: &ConnectLink) -> Result<String, Error> {
    let account = app.settings.account(&link.connector, &link.email)?;
    let redirect = format!("{}/oauth/callback", app.settings.base_url);
    let expires = mailoauth::clock::now() + SIGN_IN_TTL.as_secs() as i64;
    let (url, pending) = authcode::begin(&account, &redirect, expires)?;
    let json = zeroize::Zeroizing::new(serde_json::to_vec(&pending).expect("pending serialises"));
    let key = app.tokens.keys().current();
    let sealed = key.seal(&sign_in_aad(&pending.state), &json);
    app.db
        .add_sign_in(&pending.state, &link.id, key.id(), &sealed, expires)
        .await?;
    Ok(url)
}

use crate::keyops::sign_in_aad;

/// `GET /oauth/callback`.
#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /oauth/callback`: exchange the code, check the user, store, say so.
pub async fn callback(
    State(app): State<Arc<App>>,
    _headers: HeaderMap,
    q: Result<Query<Callback>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return page(
            StatusCode::BAD_REQUEST,
            "This sign-in did not work",
            "<p>The provider's answer was malformed. Start again from the application's link.</p>",
        );
    };
    let Some(state) = q.state.filter(|s| s.len() <= 128) else {
        return unknown_sign_in();
    };
    let taken = match app.db.take_sign_in(&state).await {
        Ok(t) => t,
        Err(e) => return fail_page(&e),
    };
    let Some((link_id, key_id, sealed, _)) = taken else {
        return unknown_sign_in();
    };
    let pending: Option<Pending> = app
        .tokens
        .keys()
        .find(&key_id)
        .await
        .ok()
        .flatten()
        .and_then(|k| k.open(&sign_in_aad(&state), &sealed))
        .and_then(|plain| serde_json::from_slice(&plain).ok());
    let (Some(pending), Ok(Some(link))) = (pending, app.db.link(&link_id).await) else {
        return unknown_sign_in();
    };
    if let Some(error) = q.error {
        let why = q.error_description.unwrap_or_default();
        return page(
            StatusCode::BAD_REQUEST,
            "The provider did not grant access",
            &format!(
                "<p>The provider answered <code>{}</code>: {}</p><p>Nothing was stored. You can \
                 start again from the application's link while it is valid.</p>",
                esc(&printable(&error)),
                esc(&printable(&why))
            ),
        );
    }
    let Some(code) = q.code.filter(|c| c.len() <= 4096) else {
        return unknown_sign_in();
    };
    match finish(&app, &link, pending, code, state).await {
        Ok(m) => {
            let back = link
                .return_url
                .as_deref()
                .map(|u| format!("<p><a href=\"{}\">Back to the application</a></p>", esc(u)))
                .unwrap_or_default();
            page(
                StatusCode::OK,
                "Mailbox connected",
                &format!(
                    "<p>The mailbox <strong>{}</strong> is connected. You can close this page.</p>{back}",
                    esc(&m.email)
                ),
            )
        }
        Err(e) => fail_page(&e),
    }
}

async fn finish(
    app: &App,
    link: &ConnectLink,
    pending: Pending,
    code: String,
    state: String,
) -> Result<Mailbox, Error> {
    let account = app.settings.account(&link.connector, &link.email)?;
    let transport = app.tokens.transport();
    let acct = account.clone();
    let resp = tokio::task::spawn_blocking(move || {
        authcode::finish(
            &acct,
            &pending,
            Redirect::Code {
                code: &code,
                state: &state,
            },
            transport.as_ref(),
            mailoauth::clock::now(),
        )
    })
    .await
    .map_err(|e| Error::Flow(format!("sign-in task failed: {e}")))??;
    // The signed-in user must be the expected one before anything is stored
    // (the `535 5.7.3` / SendAsDenied root cause is a mailbox that is not the user's).
    if let Some(got) = mailoauth::broker::signed_in_user(&resp)
        && !got.eq_ignore_ascii_case(&link.email)
    {
        return Err(Error::UserMismatch {
            account: link.connector.clone(),
            expected: link.email.clone(),
            got,
        });
    }
    let now = mailoauth::clock::now();
    let (m, created) = match app
        .db
        .mailbox_by_email(&link.connector, &link.email)
        .await?
    {
        Some(m) => (m, false),
        None => {
            let m = Mailbox::new(
                link.connector.clone(),
                link.email.clone(),
                "delegated",
                link.reference.clone(),
                now,
            );
            app.db.add_mailbox(&m).await?;
            (m, true)
        }
    };
    if let Err(e) = app.tokens.store_sign_in(&m, account, resp).await {
        if created {
            let _ = app.db.delete_mailbox(&m.id).await;
        }
        return Err(e);
    }
    app.db.use_link(&link.id, &m.id, now).await?;
    app.tokens.forget(&m.id);
    app.watch.notify_one();
    Ok(app.db.mailbox(&m.id).await?.unwrap_or(m))
}

fn unknown_sign_in() -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "This sign-in is not known",
        "<p>This answer from the provider does not belong to a sign-in in progress: it was used \
         already, it expired, or it was not started here. Start again from the application's link.</p>",
    )
}

fn fail_page(e: &Error) -> Response {
    let (status, title) = match e {
        Error::UserMismatch { .. } => (StatusCode::FORBIDDEN, "You signed in as another user"),
        Error::Unreachable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "Please try again shortly"),
        _ => (StatusCode::BAD_REQUEST, "This sign-in did not work"),
    };
    let fix = match e {
        Error::UserMismatch { expected, .. } => format!(
            "<p>Sign out at the provider, then open the application's link again and sign in as \
             <strong>{}</strong>. Nothing was stored.</p>",
            esc(expected)
        ),
        _ => "<p>Nothing was stored. Start again from the application's link.</p>".into(),
    };
    log::warn!("connect: {e}");
    page(
        status,
        title,
        &format!("<p>{}</p>{fix}", esc(&printable(&e.to_string()))),
    )
}

/// A whole page: semantic HTML, no script, no external resources.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;\
         margin:2rem auto;padding:0 1rem;line-height:1.5}}button{{font-size:1rem;padding:.5rem 1rem}}\
         </style></head><body><main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    );
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
    h.insert(header::REFERRER_POLICY, "no-referrer".parse().unwrap());
    h.insert(header::X_FRAME_OPTIONS, "DENY".parse().unwrap());
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https: http:"
            .parse()
            .unwrap(),
    );
    r
}

/// Provider text without control characters (terminal escapes, bidi overrides).
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control()
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)
            {
                ' '
            } else {
                c
            }
        })
        .take(1000)
        .collect()
}

/// HTML-escape text.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
