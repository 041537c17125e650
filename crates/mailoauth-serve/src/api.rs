//! The HTTP API: routes, API-key checks, JSON errors with the diagnosis.
//!
//! Owns: mapping requests to the token service and the database, the scope
//! and mailbox checks of every route, body limits, and the error shape
//! (`{error, message, fix}` with 401/403/404/424/503). Must not: hold tokens
//! itself or put a token or key into a log line or an error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use mailoauth::{Error, sasl};

use crate::db::{AuditEntry, Db, Mailbox};
use crate::keys::{Caller, KeyTable};
use crate::tokens::Tokens;

/// Requests carry small JSON bodies; anything larger is refused unread.
const MAX_BODY: usize = 64 * 1024;

/// Everything a request handler reaches.
pub struct App {
    /// The settings.
    pub settings: Arc<crate::settings::Settings>,
    /// The database.
    pub db: Db,
    /// The token service.
    pub tokens: Tokens,
    /// The API keys.
    pub keys: KeyTable,
    /// Audit entries on their way to the database (written in batches).
    pub audit: mpsc::Sender<AuditEntry>,
    /// The node's counters for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// This node among its peers (live-node count, heartbeat).
    pub cluster: crate::cluster::Cluster,
    /// Clients turned away after too many refused credentials.
    pub guard: crate::guard::Guard,
    /// Re-consent links this node handed out.
    pub reconnects: crate::connect::Reconnects,
    /// Wakes the watchers' beat when a mailbox was connected (watch it now,
    /// not at the next beat).
    pub watch: tokio::sync::Notify,
}

/// The service's routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/mailboxes", get(list_mailboxes).post(add_mailbox))
        .route(
            "/v1/mailboxes/{id}",
            get(get_mailbox).delete(delete_mailbox),
        )
        .route("/v1/mailboxes/{id}/token", get(token))
        .route(
            "/v1/mailboxes/{id}/messages",
            axum::routing::post(crate::mail_api::send_message)
                .layer(DefaultBodyLimit::max(app.settings.largest_send_body())),
        )
        .route(
            "/v1/mailboxes/{id}/outbox/{msg}",
            get(crate::mail_api::outbox_state),
        )
        .route(
            "/v1/mailboxes/{id}/folders/{folder}/messages/{uid}",
            get(crate::mail_api::read_message),
        )
        .route("/v1/audit", get(audit))
        .route("/v1/connect-links", axum::routing::post(connect_link))
        .route(
            "/connect/{secret}",
            get(crate::connect::show).post(crate::connect::start),
        )
        .route("/oauth/callback", get(crate::connect::callback))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/v1/openapi.json", get(crate::openapi::document))
        .merge(crate::admin::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            crate::guard::layer,
        ))
        .with_state(app)
}

/// An API error: status, stable code, message, and what to do.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    pub(crate) message: String,
    fix: Option<String>,
    /// Seconds for `Retry-After` on a 503 (default 5).
    retry_after: Option<i64>,
    /// A re-consent link, for `login_required`.
    reconnect_url: Option<String>,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            fix: None,
            retry_after: None,
            reconnect_url: None,
        }
    }

    pub(crate) fn fix(mut self, fix: impl Into<String>) -> ApiError {
        self.fix = Some(fix.into());
        self
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let message = e.to_string();
        let fix = crate::render::fix(&e);
        let mut a = match &e {
            Error::LoginRequired { .. } => {
                ApiError::new(StatusCode::FAILED_DEPENDENCY, "login_required", message)
            }
            Error::Unreachable { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            Error::Usage(_) | Error::Config { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
            }
            Error::OAuth { .. } | Error::UserMismatch { .. } => {
                ApiError::new(StatusCode::FAILED_DEPENDENCY, "provider_refused", message)
            }
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
        };
        if let Some(cause) = e.cause() {
            a.message.push_str(&format!(" (cause: {cause})"));
        }
        a.fix = fix;
        a
    }
}

/// A failed token request: a mailbox waiting for its owner gets a re-consent
/// link with its 424 (one per mailbox and node, reused while it works); a
/// provider this node is backing off from gets the time left as Retry-After.
async fn token_error(app: &App, m: &Mailbox, e: Error) -> ApiError {
    let login = matches!(e, Error::LoginRequired { .. });
    let mut a = ApiError::from(e);
    if login && m.kind == "delegated" {
        match crate::connect::reconnect_link(app, m).await {
            Ok(url) => a.reconnect_url = Some(url),
            Err(e) => log::warn!("mailbox {}: no re-consent link: {e}", m.id),
        }
    }
    a.retry_after = app.tokens.cooling_for(&m.id);
    a
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "message": self.message, "fix": self.fix});
        if let Some(u) = &self.reconnect_url {
            body["reconnect_url"] = json!(u);
        }
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            let secs = self.retry_after.unwrap_or(5).clamp(1, 3600);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// A body that could not be read as the route's JSON: 413 when it was over
/// [`MAX_BODY`] (axum reports that as a buffering failure), else its status.
fn body_error(e: axum::extract::rejection::JsonRejection) -> ApiError {
    let text = e.body_text();
    if text.contains("length limit") {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is over {MAX_BODY} bytes"),
        );
    }
    ApiError::new(e.status(), "bad_request", text)
}

/// The key of the request, checked for `scope`.
pub(crate) async fn caller(app: &App, headers: &HeaderMap, scope: &str) -> ApiResult<Caller> {
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "no API key").fix(
                "send `Authorization: Bearer <key>` (make one with `mailoauth-serve keys create`)",
            )
        })?;
    let who = app.keys.check(secret).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown or revoked API key",
        )
    })?;
    if !who.has(scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this API key lacks the `{scope}` scope"),
        )
        .fix(format!("create a key with `--scope {scope}`")));
    }
    Ok(who)
}

/// The mailbox `id`, if the caller may see it (else 404: a key limited to other
/// mailboxes learns nothing about this one).
pub(crate) async fn mailbox(app: &App, who: &Caller, id: &str) -> ApiResult<Mailbox> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no mailbox `{id}`"),
        )
    };
    if id.len() > 64 || !who.may_use(id) {
        return Err(not_found());
    }
    app.db.mailbox(id).await?.ok_or_else(not_found)
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "The node and its database answer", body = String, content_type = "text/plain"),
        (status = 503, description = "The database or the provider does not answer (see Retry-After)", body = crate::openapi::ErrorBody)
    )
)]
async fn healthz(State(app): State<Arc<App>>) -> ApiResult<&'static str> {
    app.db.ping().await?;
    Ok("ok\n")
}

#[utoipa::path(
    get,
    path = "/v1/mailboxes",
    tag = "mailboxes",
    security(("api_key" = ["accounts:read"])),
    responses(
        (status = 200, description = "The mailboxes the key may see", body = crate::openapi::MailboxList),
        (status = 401, description = "No API key, or an unknown one", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key lacks the scope, or is limited to other mailboxes", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or the provider does not answer (see Retry-After)", body = crate::openapi::ErrorBody)
    )
)]
async fn list_mailboxes(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let who = caller(&app, &headers, "accounts:read").await?;
    let all: Vec<Mailbox> = app
        .db
        .mailboxes()
        .await?
        .into_iter()
        .filter(|m| who.may_use(&m.id))
        .collect();
    Ok(Json(json!({ "mailboxes": all })))
}

#[utoipa::path(
    get,
    path = "/v1/mailboxes/{id}",
    tag = "mailboxes",
    security(("api_key" = ["accounts:read"])),
    params(("id" = String, Path, description = "The mailbox id (`mbx_…`)")),
    responses(
        (status = 200, description = "The mailbox", body = crate::db::Mailbox),
        (status = 401, description = "No API key, or an unknown one", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key lacks the scope, or is limited to other mailboxes", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such mailbox (or the key may not see it)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or the provider does not answer (see Retry-After)", body = crate::openapi::ErrorBody)
    )
)]
async fn get_mailbox(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Mailbox>> {
    let who = caller(&app, &headers, "accounts:read").await?;
    Ok(Json(mailbox(&app, &who, &id).await?))
}

/// `POST /v1/mailboxes`: an app-only mailbox (client credentials).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewMailbox {
    /// The connector (a `[serve.connectors.NAME]` with the client-credentials flow).
    connector: String,
    /// The mailbox address.
    email: String,
    /// The application's own reference (at most 256 bytes).
    reference: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/mailboxes",
    tag = "mailboxes",
    security(("api_key" = ["accounts:write"])),
    request_body = NewMailbox,
    responses(
        (status = 201, description = "Added and signed in: its first token is stored", body = crate::db::Mailbox),
        (status = 400, description = "Bad input: the message names the parameter", body = crate::openapi::ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key lacks the scope, or is limited to other mailboxes", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = crate::openapi::ErrorBody),
        (status = 424, description = "The provider refused: `login_required` needs a re-consent link", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or the provider does not answer (see Retry-After)", body = crate::openapi::ErrorBody)
    )
)]
async fn add_mailbox(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<NewMailbox>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Mailbox>)> {
    let who = caller(&app, &headers, "accounts:write").await?;
    if !who.may_use("") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a key limited to some mailboxes cannot add mailboxes",
        ));
    }
    let Json(n) = body.map_err(body_error)?;
    mailoauth::mail::wire::address("email", &n.email)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    if n.reference.as_ref().is_some_and(|r| r.len() > 256) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "`reference` is over 256 bytes",
        ));
    }
    let now = mailoauth::clock::now();
    let m = Mailbox::new(n.connector, n.email, "app", n.reference, now);
    let account = app.tokens.account(&m)?;
    if account.flow != mailoauth::config::FlowKind::ClientCredentials {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "connector `{}` signs people in ({} flow): its mailboxes are connected through a connect link, \
                 not added by an administrator",
                m.connector,
                account.flow.as_str()
            ),
        ));
    }
    app.db.add_mailbox(&m).await?;
    if let Err(e) = app.tokens.login_app(&m).await {
        // Nothing was stored for it: the row goes, so a retry starts clean.
        let _ = app.db.delete_mailbox(&m.id).await;
        return Err(e.into());
    }
    app.watch.notify_one();
    let m = app.db.mailbox(&m.id).await?.unwrap_or(m);
    Ok((StatusCode::CREATED, Json(m)))
}

#[utoipa::path(
    delete,
    path = "/v1/mailboxes/{id}",
    tag = "mailboxes",
    security(("api_key" = ["accounts:write"])),
    params(("id" = String, Path, description = "The mailbox id (`mbx_…`)")),
    responses(
        (status = 204, description = "Deleted with its tokens"),
        (status = 401, description = "No API key, or an unknown one", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key lacks the scope, or is limited to other mailboxes", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such mailbox (or the key may not see it)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or the provider does not answer (see Retry-After)", body = crate::openapi::ErrorBody)
    )
)]
async fn delete_mailbox(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let who = caller(&app, &headers, "accounts:write").await?;
    let m = mailbox(&app, &who, &id).await?;
    app.db.delete_mailbox(&m.id).await?;
    app.tokens.forget(&m.id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct TokenQuery {
    /// `mail` (IMAP, POP, SMTP; the default) or `graph`.
    resource: Option<String>,
    /// Also return the SASL initial response: `xoauth2` or `oauthbearer`.
    sasl: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/mailboxes/{id}/token",
    tag = "tokens",
    security(("api_key" = ["token:read"])),
    params(("id" = String, Path, description = "The mailbox id (`mbx_…`)"), TokenQuery),
    responses(
        (status = 200, description = "A fresh access token (from memory when it is; else refreshed once across all nodes)", body = crate::openapi::TokenAnswer),
        (status = 400, description = "Bad input: the message names the parameter", body = crate::openapi::ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key lacks the scope, or is limited to other mailboxes", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such mailbox (or the key may not see it)", body = crate::openapi::ErrorBody),
        (status = 424, description = "The provider refused: `login_required` needs a re-consent link", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or the provider does not answer (see Retry-After)", body = crate::openapi::ErrorBody)
    )
)]
async fn token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let started = std::time::Instant::now();
    let who = caller(&app, &headers, "token:read").await?;
    let Query(q) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let resource = match q.resource.as_deref() {
        None | Some("mail") => None,
        Some("graph") => Some("graph"),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "unknown resource `{}`; use `mail` or `graph`",
                    other.escape_debug()
                ),
            ));
        }
    };
    let mech = match q.sasl.as_deref() {
        None => None,
        Some(name) => Some(sasl::Mechanism::from_name(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "unknown SASL mechanism `{}`; use `xoauth2` or `oauthbearer`",
                    name.escape_debug()
                ),
            )
        })?),
    };
    // The hot path: memory only (the key's mailbox limits are checked first).
    let cached = if id.len() <= 64 && who.may_use(&id) {
        app.tokens.cached(&id, resource)
    } else {
        None
    };
    use crate::metrics::TokenSource;
    let (served, from) = match cached {
        Some(s) => (s, TokenSource::Memory),
        None => {
            let m = mailbox(&app, &who, &id).await?;
            let got = tokio::time::timeout(Duration::from_secs(60), app.tokens.token(&m, resource))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Unreachable {
                        what: "the provider".into(),
                        detail: "no token within 60 s".into(),
                    })
                });
            match got {
                Ok(s) => (s, TokenSource::Refresh),
                Err(e) => return Err(token_error(&app, &m, e).await),
            }
        }
    };
    app.metrics.token_served(from, started.elapsed());
    // Off the hot path: a full queue drops the entry rather than slow the answer.
    if app
        .audit
        .try_send(AuditEntry {
            at: mailoauth::clock::now(),
            key_id: who.key_id.clone(),
            mailbox: id.clone(),
            action: "token".into(),
            count: 1,
        })
        .is_err()
    {
        log::warn!("audit queue full: a token hand-out of {id} was not logged");
    }
    let sasl_value =
        mech.map(|mech| sasl::initial_response(mech, &served.account, None, &served.token.token));
    let mut body = json!({
        "access_token": served.token.token,
        "expires_at": served.token.expires_at,
        "user": served.user,
    });
    if let Some(s) = sasl_value {
        body["sasl"] = json!(s);
    }
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[utoipa::path(
    post,
    path = "/v1/connect-links",
    tag = "mailboxes",
    security(("api_key" = ["accounts:write"])),
    request_body = crate::connect::NewLink,
    responses(
        (status = 201, description = "A single-use connect link, valid for 30 minutes", body = crate::openapi::CreatedLink),
        (status = 400, description = "Bad input: the message names the parameter", body = crate::openapi::ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key lacks the scope, or is limited to other mailboxes", body = crate::openapi::ErrorBody),
        (status = 413, description = "The body is over 64 KiB", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or the provider does not answer (see Retry-After)", body = crate::openapi::ErrorBody)
    )
)]
async fn connect_link(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<crate::connect::NewLink>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    caller(&app, &headers, "accounts:write").await?;
    let Json(n) = body.map_err(body_error)?;
    let made = crate::connect::create_link(&app, n).await?;
    let link = &made.link;
    let mut body = json!({"id": link.id, "url": made.url, "expires_at": link.expires_at, "connector": link.connector});
    if let Some(d) = &made.discovery {
        body["discovery"] = d.to_json();
    }
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// How many of the newest entries (1 to 10000; default 100).
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "operations",
    security(("api_key" = ["admin"])),
    params(AuditQuery),
    responses(
        (status = 200, description = "Token hand-outs, newest first (written within a second of each)", body = crate::openapi::AuditList),
        (status = 400, description = "Bad input: the message names the parameter", body = crate::openapi::ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key lacks the scope, or is limited to other mailboxes", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database or the provider does not answer (see Retry-After)", body = crate::openapi::ErrorBody)
    )
)]
async fn audit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    caller(&app, &headers, "admin").await?;
    let Query(q) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let entries = app
        .db
        .audit(q.limit.unwrap_or(100).clamp(1, 10_000))
        .await?;
    let out: Vec<_> = entries
        .iter()
        .map(|e| json!({"at": e.at, "key": e.key_id, "mailbox": e.mailbox, "action": e.action, "count": e.count}))
        .collect();
    Ok(Json(json!({ "entries": out })))
}

/// Most distinct entries a batch holds while the database is down (one per
/// key, mailbox and second: about 10 MB); beyond it the oldest are dropped,
/// counted in the log.
const MAX_PENDING_AUDIT: usize = 100_000;

/// Audit entries not yet written, one per key, mailbox, action and second.
#[derive(Default)]
struct PendingAudit {
    entries: Vec<AuditEntry>,
    index: HashMap<(i64, String, String, String), usize>,
}

impl PendingAudit {
    fn add(&mut self, e: AuditEntry) {
        let k = (e.at, e.key_id.clone(), e.mailbox.clone(), e.action.clone());
        match self.index.get(&k) {
            Some(&i) => self.entries[i].count += e.count,
            None => {
                self.index.insert(k, self.entries.len());
                self.entries.push(e);
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.index.clear();
    }

    /// Keep the newest `keep` entries; the hand-outs dropped.
    fn keep_newest(&mut self, keep: usize) -> i64 {
        let over = self.entries.len().saturating_sub(keep);
        let lost = self.entries.drain(..over).map(|e| e.count).sum();
        let rest = std::mem::take(&mut self.entries);
        self.index.clear();
        for e in rest {
            self.add(e);
        }
        lost
    }

    fn hand_outs(&self) -> i64 {
        self.entries.iter().map(|e| e.count).sum()
    }
}

/// Write audit entries in batches: at most one second after the hand-out (a
/// crash loses at most that second's entries). Hand-outs of the same key,
/// mailbox and action in the same second become one row with their count.
/// While the database is down the batch is kept and written again every
/// second or so, so an outage loses no entry (up to [`MAX_PENDING_AUDIT`]).
pub async fn audit_writer(db: Db, mut rx: mpsc::Receiver<AuditEntry>) {
    let mut batch = PendingAudit::default();
    let mut closed = false;
    let mut failing = false;
    loop {
        if batch.entries.is_empty() {
            match rx.recv().await {
                Some(e) => batch.add(e),
                None => return,
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while !closed && (failing || batch.entries.len() < 1000) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => batch.add(e),
                Ok(None) => closed = true,
                Err(_) => break,
            }
        }
        match db.add_audit(&batch.entries).await {
            Ok(()) => {
                if failing {
                    log::info!("audit: {} pending hand-outs written", batch.hand_outs());
                }
                failing = false;
                batch.clear();
            }
            Err(e) => {
                if !failing {
                    log::warn!("audit entries not written ({e}); keeping them and retrying");
                }
                failing = true;
                let lost = batch.keep_newest(MAX_PENDING_AUDIT);
                if lost > 0 {
                    log::warn!(
                        "audit: {lost} hand-outs dropped, over {MAX_PENDING_AUDIT} entries pending"
                    );
                }
                if closed {
                    log::warn!(
                        "audit: stopping with {} hand-outs not written",
                        batch.hand_outs()
                    );
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if closed && batch.entries.is_empty() {
            return;
        }
    }
}
