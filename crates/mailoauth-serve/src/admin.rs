//! The admin page: the mailboxes with their state and last error, a
//! re-consent link for each delegated one, and the administrator's steps for
//! each app-only connector.
//!
//! Owns: signing in with an API key of the `admin` scope (unlimited to
//! mailboxes), the page sessions, and the pages under `/admin`. The key is
//! checked once and dropped: the browser holds only a random 256-bit session
//! id in an `HttpOnly; SameSite=Strict; Path=/admin` cookie, the database
//! keeps its digest for [`SESSION_TTL`] (so any node behind a load balancer
//! serves it), and every page checks that the session's key is not revoked.
//! Every POST must come from the service's own origin (`Origin`, else
//! `Sec-Fetch-Site`), on top of the SameSite cookie. Pages are plain semantic
//! HTML (headings, labels, a table with a caption and header scopes) that work
//! without JavaScript, under a CSP that allows no script at all. Admin steps
//! come from the core's catalog ([`mailoauth::diagnose::app_only_checklist`]),
//! filled in with each mailbox. Must not: show or log an API key or a token,
//! or store the key.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use mailoauth::config::FlowKind;
use mailoauth::diagnose::{app_only_checklist, is_exchange};
use mailoauth::remedy::Remedy;
use mailoauth::text::printable;

use crate::api::App;
use crate::connect::{self, esc};
use crate::db::Mailbox;
use crate::keys::digest;

/// How long a sign-in lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions the service keeps at most (each needs an admin key; a bound anyway).
const MAX_SESSIONS: i64 = 1000;
/// Mailboxes per page of the table.
const PER_PAGE: usize = 200;
/// App-only mailboxes whose steps are shown per connector.
const MAX_STEPS: usize = 50;
/// The session cookie.
const COOKIE: &str = "mailoauth_admin";
/// Where a connector's steps name the mailbox before any is added.
const SOME_MAILBOX: &str = "<mailbox address>";

/// Admin sessions in the database: any node serves them, and a key revoked
/// anywhere ends its sessions on its next request (the lookup joins the key).
mod sessions {
    use super::*;

    /// A new session for the key `key_id`: its id (for the cookie), or `None`
    /// when the service holds too many.
    pub async fn open(app: &App, key_id: &str) -> Result<Option<String>, mailoauth::Error> {
        let now = mailoauth::clock::now();
        if app.db.admin_session_count(now).await? >= MAX_SESSIONS {
            return Ok(None);
        }
        let id = mailoauth::random::token(32);
        let until = now + SESSION_TTL.as_secs() as i64;
        app.db
            .add_admin_session(&digest(&id), key_id, until)
            .await?;
        Ok(Some(id))
    }

    /// The key id of the live session `id` whose key is still live.
    pub async fn get(app: &App, id: &str) -> Option<String> {
        match app
            .db
            .admin_session(&digest(id), mailoauth::clock::now())
            .await
        {
            Ok(k) => k,
            Err(e) => {
                log::warn!("admin: session not checked: {e}");
                None
            }
        }
    }

    /// End the session `id`.
    pub async fn close(app: &App, id: &str) {
        if let Err(e) = app.db.end_admin_session(&digest(id)).await {
            log::warn!("admin: session not ended: {e}");
        }
    }
}

/// The admin routes (merged into the service's router).
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/admin", get(show))
        .route("/admin/sign-in", post(sign_in))
        .route("/admin/sign-out", post(sign_out))
        .route("/admin/mailboxes/{id}/reconsent", post(reconsent))
}

/// The session id the request's cookie carries.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .find_map(|c| c.strip_prefix(COOKIE)?.strip_prefix('='))
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// The signed-in key's id, if the cookie names a live session.
async fn session(app: &App, headers: &HeaderMap) -> Option<String> {
    sessions::get(app, cookie(headers)?).await
}

/// Whether a POST comes from the service's own pages.
fn same_origin(app: &App, headers: &HeaderMap) -> bool {
    let ours = url::Url::parse(&app.settings.base_url)
        .ok()
        .map(|u| u.origin().ascii_serialization());
    let text = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    match text("origin") {
        // A browser sends `null` under some referrer policies and after
        // redirects: then only its own `Sec-Fetch-Site` (which no page can set) counts.
        Some(origin) if origin != "null" => ours.as_deref() == Some(origin),
        _ => text("sec-fetch-site") == Some("same-origin"),
    }
}

fn set_cookie(app: &App, value: &str, max_age: u64) -> HeaderValue {
    let secure = if app.settings.base_url.starts_with("https:") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/admin; Max-Age={max_age}{secure}"
    ))
    .expect("cookie text is ASCII")
}

/// `GET /admin?page=N`.
#[derive(Deserialize)]
struct Show {
    page: Option<usize>,
}

/// `GET /admin`: the mailboxes when signed in, else the sign-in form.
async fn show(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Result<Query<Show>, QueryRejection>,
) -> Response {
    if session(&app, &headers).await.is_some() {
        let page = q.ok().and_then(|Query(q)| q.page).unwrap_or(1).max(1);
        return dashboard(&app, page).await;
    }
    let mut r = sign_in_page(StatusCode::OK, "Sign in to the admin page", "");
    if cookie(&headers).is_some() {
        // A forged or expired session, or its key was revoked: forget it in the browser too.
        r.headers_mut()
            .insert(header::SET_COOKIE, set_cookie(&app, "", 0));
    }
    r
}

/// The sign-in form.
#[derive(Deserialize)]
struct SignIn {
    key: String,
}

/// `POST /admin/sign-in`.
async fn sign_in(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    form: Result<Form<SignIn>, FormRejection>,
) -> Response {
    if !same_origin(&app, &headers) {
        return cross_origin();
    }
    let Ok(Form(form)) = form else {
        return sign_in_page(
            StatusCode::BAD_REQUEST,
            "This sign-in did not work",
            "<p>The form was not filled in. Paste an API key below.</p>",
        );
    };
    let secret = form.key.trim();
    let who = if secret.is_empty() || secret.len() > 256 {
        None
    } else {
        app.keys.check(secret).await
    };
    let Some(who) = who else {
        log::info!("admin: a sign-in with an unknown or revoked key was refused");
        return sign_in_page(
            StatusCode::UNAUTHORIZED,
            "This key does not open the admin page",
            "<p>It is not a key of this service, or it was revoked. Nothing was set. Paste a key with \
             the <code>admin</code> scope (<code>mailoauth-serve keys create --scope admin</code>).</p>",
        );
    };
    if !who.has("admin") || !who.may_use("") {
        log::info!(
            "admin: key {} was refused: it lacks the admin scope or is limited to some mailboxes",
            who.key_id
        );
        return sign_in_page(
            StatusCode::FORBIDDEN,
            "This key does not open the admin page",
            "<p>The key lacks the <code>admin</code> scope, or it is limited to some mailboxes. \
             Nothing was set. Paste a key made with <code>mailoauth-serve keys create --scope admin</code> \
             and no <code>--mailbox</code>.</p>",
        );
    }
    // A new sign-in replaces the browser's old session (no fixation, no pile-up).
    if let Some(old) = cookie(&headers) {
        sessions::close(&app, old).await;
    }
    let id = match sessions::open(&app, &who.key_id).await {
        Ok(id) => id,
        Err(e) => {
            log::warn!("admin: sign-in of key {} not stored: {e}", who.key_id);
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The admin page cannot sign you in now",
                "<p>The service's database did not answer. Nothing was set. Try again in a minute.</p>",
                false,
            );
        }
    };
    let Some(id) = id else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many admin sessions",
            "<p>The service holds the most admin sessions it keeps. Sign out elsewhere, or wait for \
             sessions to expire, then sign in again.</p>",
            false,
        );
    };
    log::info!("admin: key {} signed in", who.key_id);
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/admin")]).into_response();
    let h = r.headers_mut();
    h.insert(
        header::SET_COOKIE,
        set_cookie(&app, &id, SESSION_TTL.as_secs()),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /admin/sign-out`.
async fn sign_out(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if !same_origin(&app, &headers) {
        return cross_origin();
    }
    if let Some(id) = cookie(&headers) {
        sessions::close(&app, id).await;
    }
    let mut r = page(
        StatusCode::OK,
        "Signed out",
        "<p>The session has ended.</p><p><a href=\"/admin\">Sign in again</a></p>",
        false,
    );
    r.headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&app, "", 0));
    r
}

/// `POST /admin/mailboxes/{id}/reconsent`: a connect link for the mailbox's
/// owner, shown this once.
async fn reconsent(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !same_origin(&app, &headers) {
        return cross_origin();
    }
    let Some(key_id) = session(&app, &headers).await else {
        return sign_in_page(
            StatusCode::UNAUTHORIZED,
            "Sign in to the admin page",
            "<p>Your admin session has ended (or never began). Sign in, then make the link again.</p>",
        );
    };
    let m = if id.len() <= 64 {
        app.db.mailbox(&id).await
    } else {
        Ok(None)
    };
    let m = match m {
        Ok(Some(m)) => m,
        Ok(None) => {
            return page(
                StatusCode::NOT_FOUND,
                "No such mailbox",
                "<p>It was deleted meanwhile, or never existed.</p><p><a href=\"/admin\">Back to the mailboxes</a></p>",
                true,
            );
        }
        Err(e) => return unavailable(&e),
    };
    if m.kind != "delegated" {
        return page(
            StatusCode::BAD_REQUEST,
            "This mailbox has no owner to ask",
            &format!(
                "<p><strong>{}</strong> is an app-only mailbox: nobody consents for it. Follow the admin \
                 steps of its connector instead.</p><p><a href=\"/admin\">Back to the mailboxes</a></p>",
                esc(&m.email)
            ),
            true,
        );
    }
    match connect::create_link(&app, connect::NewLink::reconsent(&m)).await {
        Ok(connect::Created { url, link, .. }) => {
            log::info!(
                "admin: key {key_id} made re-consent link {} for mailbox {}",
                link.id,
                m.id
            );
            page(
                StatusCode::OK,
                "Re-consent link made",
                &format!(
                    "<p>Send this link to the owner of <strong>{email}</strong>. It works once, for {min} \
                     minutes, for a sign-in as {email}; it is shown only this once.</p>\
                     <p><a href=\"{url}\">{url}</a></p>\
                     <p><a href=\"/admin\">Back to the mailboxes</a></p>",
                    email = esc(&m.email),
                    min = connect::LINK_TTL.as_secs() / 60,
                    url = esc(&url),
                ),
                true,
            )
        }
        Err(e) => page(
            StatusCode::BAD_REQUEST,
            "No link was made",
            &format!(
                "<p>{}</p><p><a href=\"/admin\">Back to the mailboxes</a></p>",
                esc(&printable(&e.to_string()))
            ),
            true,
        ),
    }
}

/// The signed-in page: page `page` of the mailboxes, those that need someone
/// first (login required, degraded), then by age.
async fn dashboard(app: &App, page_no: usize) -> Response {
    let mut all = match app.db.mailboxes().await {
        Ok(all) => all,
        Err(e) => return unavailable(&e),
    };
    let urgency = |m: &Mailbox| match m.state.as_str() {
        "login_required" => 0,
        "degraded" => 1,
        "ok" => 3,
        _ => 2,
    };
    // Stable: the database's oldest-first order holds within each state.
    all.sort_by_key(urgency);
    let pages = all.len().div_ceil(PER_PAGE).max(1);
    let page_no = page_no.min(pages);
    let shown = &all[(page_no - 1) * PER_PAGE..(page_no * PER_PAGE).min(all.len())];
    let mut rows = String::new();
    for m in shown {
        let error = m
            .last_error
            .as_deref()
            .map_or("—".to_owned(), |e| esc(&printable(e)));
        let action = if m.kind == "delegated" {
            format!(
                "<form method=\"post\" action=\"/admin/mailboxes/{id}/reconsent\">\
                 <button type=\"submit\" aria-label=\"Make a re-consent link for {email}\">Make a re-consent link</button></form>",
                id = esc(&m.id),
                email = esc(&m.email),
            )
        } else {
            String::new()
        };
        let _ = write!(
            rows,
            "<tr><th scope=\"row\"><code>{id}</code></th><td>{email}</td><td>{connector}</td><td>{kind}</td>\
             <td>{state}</td><td>{refreshed}</td><td>{changed}</td><td class=\"error\">{error}</td>\
             <td>{action}</td></tr>",
            id = esc(&m.id),
            email = esc(&m.email),
            connector = esc(&m.connector),
            kind = esc(&m.kind),
            state = esc(&m.state),
            refreshed = m.refreshed_at.map_or("never".to_owned(), time),
            changed = time(m.updated_at),
        );
    }
    let table = if all.is_empty() {
        "<p>No mailbox is connected yet.</p>".to_owned()
    } else {
        format!(
            "<div class=\"scroll\" role=\"region\" aria-labelledby=\"mailboxes\" tabindex=\"0\">\
             <table><caption id=\"mailboxes\">{n} mailbox{es}{of}: those that need someone first, \
             then oldest first</caption><thead><tr>\
             <th scope=\"col\">Id</th><th scope=\"col\">Email</th><th scope=\"col\">Connector</th>\
             <th scope=\"col\">Kind</th><th scope=\"col\">State</th><th scope=\"col\">Last refresh</th>\
             <th scope=\"col\">Last change</th>\
             <th scope=\"col\">Last error</th><th scope=\"col\">Re-consent</th></tr></thead>\
             <tbody>{rows}</tbody></table></div>{nav}",
            n = all.len(),
            es = if all.len() == 1 { "" } else { "es" },
            of = if pages > 1 {
                format!(", page {page_no} of {pages}")
            } else {
                String::new()
            },
            nav = pager(page_no, pages),
        )
    };
    page(
        StatusCode::OK,
        "Mailboxes",
        &format!(
            "{table}<h2>Admin steps</h2>{steps}",
            steps = admin_steps(app, &all)
        ),
        true,
    )
}

/// Links to the previous and next pages of the table.
fn pager(page_no: usize, pages: usize) -> String {
    if pages <= 1 {
        return String::new();
    }
    let mut links = Vec::new();
    if page_no > 1 {
        links.push(format!(
            "<a href=\"/admin?page={}\" rel=\"prev\">Previous page</a>",
            page_no - 1
        ));
    }
    if page_no < pages {
        links.push(format!(
            "<a href=\"/admin?page={}\" rel=\"next\">Next page</a>",
            page_no + 1
        ));
    }
    format!(
        "<nav aria-label=\"Pages of the mailbox table\"><p>{}</p></nav>",
        links.join(" · ")
    )
}

/// Per app-only connector, the provider's administrator steps from the core's
/// catalog, filled in with each of its mailboxes.
fn admin_steps(app: &App, all: &[Mailbox]) -> String {
    let mut out = String::new();
    for name in app.settings.connectors() {
        let Ok(any) = app.settings.account(name, SOME_MAILBOX) else {
            continue;
        };
        if any.flow != FlowKind::ClientCredentials {
            continue;
        }
        let _ = write!(
            out,
            "<section><h3>Connector {} ({}, client <code>{}</code>)</h3>",
            esc(name),
            esc(any.provider.as_str()),
            esc(&any.client_id)
        );
        if !is_exchange(&any) {
            out.push_str(
                "<p>The catalog has no administrator steps for this provider's app-only clients: grant \
                 the client above access to each mailbox in the provider's own console.</p></section>",
            );
            continue;
        }
        let mine: Vec<&Mailbox> = all
            .iter()
            .filter(|m| m.connector == name && m.kind == "app")
            .collect();
        if mine.is_empty() {
            out.push_str("<p>No mailbox is added yet; for each one:</p>");
            out.push_str(&steps(app_only_checklist(&any)));
        }
        for m in mine.iter().take(MAX_STEPS) {
            if let Ok(account) = app.settings.account(name, &m.email) {
                let _ = write!(out, "<h4>{}</h4>", esc(&m.email));
                out.push_str(&steps(app_only_checklist(&account)));
            }
        }
        if mine.len() > MAX_STEPS {
            let _ = write!(
                out,
                "<p>And {} more mailboxes: the same steps with their addresses.</p>",
                mine.len() - MAX_STEPS
            );
        }
        out.push_str("</section>");
    }
    if out.is_empty() {
        out.push_str(
            "<p>No connector uses client credentials: there are no administrator steps.</p>",
        );
    }
    out
}

/// A remedy's written steps (the CLI's commands in it are not for this page).
fn steps(r: Remedy) -> String {
    r.into_list()
        .into_iter()
        .filter_map(|r| match r {
            Remedy::Steps(s) => Some(format!("<pre>{}</pre>", esc(&s))),
            _ => None,
        })
        .collect()
}

fn sign_in_page(status: StatusCode, title: &str, why: &str) -> Response {
    page(
        status,
        title,
        &format!(
            "{why}<p>Sign in with an API key that has the <code>admin</code> scope. The key is checked \
             and forgotten: the browser keeps a session for {h} hours, never the key.</p>\
             <form method=\"post\" action=\"/admin/sign-in\">\
             <p><label for=\"key\">Admin API key</label><br>\
             <input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"off\" spellcheck=\"false\" \
             required maxlength=\"256\" size=\"56\" autofocus></p>\
             <p><button type=\"submit\">Sign in</button></p></form>",
            h = SESSION_TTL.as_secs() / 3600
        ),
        false,
    )
}

fn cross_origin() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "This form came from another site",
        "<p>Admin forms work only from this service's own pages (the request's origin is not the \
         service's base URL). Open <a href=\"/admin\">the admin page</a> and try again.</p>",
        false,
    )
}

fn unavailable(e: &mailoauth::Error) -> Response {
    log::warn!("admin: {e}");
    let mut r = page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The database does not answer",
        "<p>Try again in a few seconds.</p>",
        false,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

/// A whole page: semantic HTML, no script, no external resources; with a
/// sign-out button when `signed_in`.
fn page(status: StatusCode, title: &str, body: &str, signed_in: bool) -> Response {
    let header = if signed_in {
        "<header><form method=\"post\" action=\"/admin/sign-out\">\
         <button type=\"submit\">Sign out</button></form></header>"
    } else {
        ""
    };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>body{{font-family:system-ui,sans-serif;max-width:80rem;\
         margin:2rem auto;padding:0 1rem;line-height:1.5}}button,input{{font-size:1rem;padding:.4rem .8rem}}\
         table{{border-collapse:collapse;width:100%}}th,td{{border:1px solid #999;padding:.3rem .5rem;\
         text-align:left;vertical-align:top}}caption{{text-align:left;font-weight:bold}}\
         td.error{{min-width:14rem;max-width:28rem;overflow-wrap:anywhere}}\
         .scroll{{overflow-x:auto}}table{{font-size:.95rem}}time,td button{{white-space:nowrap}}pre{{white-space:pre-wrap;background:#f4f4f4;\
         padding:.5rem}}header{{float:right}}:focus{{outline:3px solid #1a5fb4}}</style></head>\
         <body>{header}<main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    );
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Not `no-referrer`: under it a browser sends `Origin: null` with the forms,
    // and the origin check wants the real one. Nothing goes to other sites.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    r
}

/// A `<time>` element for unix time `t`.
fn time(t: i64) -> String {
    let iso = utc(t);
    format!(
        "<time datetime=\"{iso}\">{}</time>",
        iso.replace('T', " ").replace('Z', " UTC")
    )
}

/// Unix time as ISO 8601 UTC (`2026-12-03T16:46:15Z`).
fn utc(t: i64) -> String {
    // Days to civil date (Howard Hinnant's algorithm), proleptic Gregorian.
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_read_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_316_375), "2026-12-03T16:46:15Z");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; mailoauth_adminx=2; mailoauth_admin=abc"),
        );
        assert_eq!(cookie(&h), Some("abc"));
    }
}
