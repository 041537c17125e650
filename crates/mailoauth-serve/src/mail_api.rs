//! The mail routes: `POST /v1/mailboxes/{id}/messages`,
//! `GET /v1/mailboxes/{id}/outbox/{msg}` and
//! `GET /v1/mailboxes/{id}/folders/{folder}/messages/{uid}`.
//!
//! Owns: the HTTP side of sending — scope `mail:send`, the `Idempotency-Key`
//! (a retry gets the first answer, the same key with another request a 409),
//! the body limit (the connector's `max_message_size`; the route's reading
//! limit is the largest connector's, in base64), and the 202 once the message
//! is durable in the outbox; reading one message (scope `mail:read`) streamed
//! from IMAP through a bounded channel, its status decided before the first
//! byte. Must not: build or check messages (`outbox`), send them (`sender`),
//! or speak IMAP (the core's `mail::read` does).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::{ApiError, ApiResult, App, caller, mailbox};
use crate::db::{MessageState, NewMessage};
use crate::outbox::{self, JsonMessage, Refusal};

/// Longest `Idempotency-Key` kept.
const MAX_KEY: usize = 255;

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        match r {
            Refusal::Bad(m) => bad(m),
            Refusal::TooLarge(m) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
            Refusal::SendAs(m, fix) => {
                ApiError::new(StatusCode::FORBIDDEN, "send_as_denied", m).fix(fix)
            }
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY && k.bytes().all(|b| (33..=126).contains(&b)))
        .ok_or_else(|| {
            bad(format!(
                "`Idempotency-Key` must be 1 to {MAX_KEY} printable ASCII characters (a UUID is usual)"
            ))
        })?;
    Ok(Some(k.to_owned()))
}

/// The answer for a message that exists: 202 when just accepted, 200 for a
/// retry of the same request, 409 for another request under the same key.
fn answer(status: StatusCode, s: &MessageState) -> Response {
    let location = format!("/v1/mailboxes/{}/outbox/{}", s.mailbox, s.id);
    let mut r = (status, Json(s)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn replay(existing: &MessageState, digest: &str) -> ApiResult<Response> {
    if existing.digest != digest {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "the Idempotency-Key was used for another message ({}) of this mailbox",
                existing.id
            ),
        )
        .fix("use a new key for a new message; resend the same request to retry it"));
    }
    let mut r = answer(StatusCode::OK, existing);
    r.headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(r)
}

#[utoipa::path(
    post,
    path = "/v1/mailboxes/{id}/messages",
    tag = "mail",
    security(("api_key" = ["mail:send"])),
    params(
        ("id" = String, Path, description = "The mailbox id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key and request answer with the first message instead of a second one")
    ),
    request_body(
        description = "A raw RFC 5322 message (`message/rfc822`: recipients from To/Cc/Bcc, Bcc removed) or JSON (from is the mailbox)",
        content(
            (JsonMessage = "application/json"),
            (String = "message/rfc822")
        )
    ),
    responses(
        (status = 202, description = "Durable in the outbox; sent by whichever node claims it", body = MessageState),
        (status = 200, description = "A retry: the message this key was first used for", body = MessageState),
        (status = 400, description = "Bad input: the message names the problem", body = crate::openapi::ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key lacks `mail:send`, or the From is not the mailbox (`send_as_denied`)", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such mailbox (for this key)", body = crate::openapi::ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for another message", body = crate::openapi::ErrorBody),
        (status = 413, description = "Over the connector's max_message_size (default 35 MB)", body = crate::openapi::ErrorBody),
        (status = 415, description = "Neither message/rfc822 nor application/json", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database does not answer (see Retry-After)", body = crate::openapi::ErrorBody)
    )
)]
pub(crate) async fn send_message(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let who = caller(&app, &headers, "mail:send").await?;
    let m = mailbox(&app, &who, &id).await?;
    let opts = app.settings.mail(&m.connector)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the request body is over what any connector accepts (max_message_size {} bytes here)",
                    opts.max_message_size
                ),
            )
        } else {
            bad(e.body_text())
        }
    })?;
    let key = idempotency_key(&headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let digest = outbox::digest(&content_type, &body);
    if let Some(k) = &key
        && let Some(existing) = app.db.message_by_key(&m.id, k).await?
    {
        return replay(&existing, &digest);
    }
    let account = app.tokens.account(&m)?;
    let msg_id = format!("msg_{}", mailoauth::random::token(16));
    let prepared = match content_type.as_str() {
        "message/rfc822" => outbox::raw(&account, &body, &opts)?,
        "application/json" => {
            let j: JsonMessage = serde_json::from_slice(&body)
                .map_err(|e| bad(format!("the JSON message is not valid: {e}")))?;
            let domain = m.email.rsplit('@').next().unwrap_or("mailoauth.invalid");
            outbox::json(&account, &j, &format!("{msg_id}@{domain}"), &opts)?
        }
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "Content-Type `{}`: send `message/rfc822` (a raw message) or `application/json`",
                    mailoauth::mail::wire::shown(other)
                ),
            ));
        }
    };
    let new = NewMessage {
        id: msg_id.clone(),
        mailbox: m.id.clone(),
        idempotency_key: key,
        digest: digest.clone(),
        envelope_from: prepared.from,
        recipients: prepared.recipients,
        data: prepared.data,
    };
    if let Some(existing) = app.db.add_message(&new, mailoauth::clock::now()).await? {
        return replay(&existing, &digest);
    }
    let state = app.db.message(&m.id, &msg_id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the accepted message is not in the outbox",
        )
    })?;
    Ok(answer(StatusCode::ACCEPTED, &state))
}

#[utoipa::path(
    get,
    path = "/v1/mailboxes/{id}/outbox/{msg}",
    tag = "mail",
    security(("api_key" = ["mail:send"])),
    params(
        ("id" = String, Path, description = "The mailbox id"),
        ("msg" = String, Path, description = "The message id from the 202")
    ),
    responses(
        (status = 200, description = "queued (with the last transient error), sent (with the server's answer) or failed (with cause and fix)", body = MessageState),
        (status = 401, description = "No API key, or an unknown one", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key lacks `mail:send`", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such mailbox or message", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database does not answer (see Retry-After)", body = crate::openapi::ErrorBody)
    )
)]
pub(crate) async fn outbox_state(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, msg)): Path<(String, String)>,
) -> ApiResult<Response> {
    let who = caller(&app, &headers, "mail:send").await?;
    let m = mailbox(&app, &who, &id).await?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no message `{}` in this mailbox's outbox",
                mailoauth::mail::wire::shown(&msg)
            ),
        )
    };
    if msg.len() > 64 {
        return Err(not_found());
    }
    let s = app.db.message(&m.id, &msg).await?.ok_or_else(not_found)?;
    Ok(answer(StatusCode::OK, &s))
}

/// A response body fed by the blocking IMAP reader through a bounded channel:
/// the message is never held whole, and a slow client slows the reader.
struct Channel(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Channel {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|c| c.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Writes into the channel from the blocking thread; a gone client is a
/// broken pipe, which ends the IMAP copy.
struct ChannelWriter(tokio::sync::mpsc::Sender<Bytes>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the reader says before the body: its size, or why there is none.
enum Head {
    Size(u64),
    Missing(StatusCode, String),
    Failed(mailoauth::mail::Failure),
}

#[utoipa::path(
    get,
    path = "/v1/mailboxes/{id}/folders/{folder}/messages/{uid}",
    tag = "mail",
    security(("api_key" = ["mail:read"])),
    params(
        ("id" = String, Path, description = "The mailbox id"),
        ("folder" = String, Path, description = "The IMAP folder, percent-encoded (`/` as %2F), e.g. INBOX or Archive%2F2026"),
        ("uid" = u32, Path, description = "The message's UID in the folder (as `message.new` reports it)")
    ),
    responses(
        (status = 200, description = "The raw RFC 5322 message, streamed as the server sends it", content_type = "message/rfc822"),
        (status = 400, description = "Bad input: the message names the parameter", body = crate::openapi::ErrorBody),
        (status = 401, description = "No API key, or an unknown one", body = crate::openapi::ErrorBody),
        (status = 403, description = "The key lacks `mail:read`", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such mailbox, folder or UID", body = crate::openapi::ErrorBody),
        (status = 424, description = "The mailbox's sign-in is gone, or the mail server refused the login (with the diagnosis)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The database, the provider or the mail server does not answer (see Retry-After)", body = crate::openapi::ErrorBody)
    )
)]
pub(crate) async fn read_message(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, folder, uid)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    use mailoauth::mail::read::{self, Read};
    let who = caller(&app, &headers, "mail:read").await?;
    let m = mailbox(&app, &who, &id).await?;
    mailoauth::mail::wire::folder("folder", &folder).map_err(|e| bad(e.to_string()))?;
    let uid: u32 = uid
        .parse()
        .ok()
        .filter(|u| *u > 0)
        .ok_or_else(|| bad("the UID must be a number from 1 to 4294967295"))?;
    let account = app.tokens.account(&m)?;
    let Some(server) =
        mailoauth::mail::server_for(&account, mailoauth::config::Service::Imap).cloned()
    else {
        return Err(bad(format!(
            "connector `{}` names no IMAP server: give it `imap = {{ host = …, port = 993, tls = \"implicit\" }}`",
            m.connector
        )));
    };
    let token = app.tokens.token(&m, None).await?.token.token;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let (head_tx, head_rx) = tokio::sync::oneshot::channel::<Head>();
    tokio::task::spawn_blocking(move || {
        let mut head_tx = Some(head_tx);
        let mut on_size = |n: u64| {
            if let Some(h) = head_tx.take() {
                let _ = h.send(Head::Size(n));
            }
        };
        let r = read::message(
            &account,
            &server,
            &token,
            &folder,
            uid,
            std::time::Duration::from_secs(60),
            &mut on_size,
            &mut ChannelWriter(tx),
        );
        let head = match r {
            Ok(Read::Copied(_)) => return,
            Ok(Read::NoSuchMessage) => Head::Missing(
                StatusCode::NOT_FOUND,
                format!("folder `{folder}` has no message with UID {uid}"),
            ),
            Ok(Read::NoSuchFolder(why)) => Head::Missing(
                StatusCode::NOT_FOUND,
                format!("the server cannot open folder `{folder}`: {why}"),
            ),
            Err(f) => Head::Failed(f),
        };
        match head_tx.take() {
            Some(h) => {
                let _ = h.send(head);
            }
            // Failed after the first byte: the client sees a cut-off body
            // (its length is short of Content-Length).
            None => log::warn!("mailbox {}: reading UID {uid} broke off", m.id),
        }
    });
    match head_rx.await {
        Ok(Head::Size(n)) => {
            let mut r = Response::new(axum::body::Body::new(Channel(rx)));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("message/rfc822"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(r)
        }
        Ok(Head::Missing(status, message)) => Err(ApiError::new(status, "not_found", message)),
        Ok(Head::Failed(f)) => Err(imap_failure(&app, &id, f).await),
        Err(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the message reader ended without an answer",
        )),
    }
}

/// A failed IMAP read: unreachable or temporary is 503; a refusal is 424 with
/// the catalog's diagnosis.
async fn imap_failure(app: &App, id: &str, f: mailoauth::mail::Failure) -> ApiError {
    use mailoauth::mail::Failure;
    let diagnosis = match app.db.mailbox(id).await {
        Ok(Some(m)) => app
            .tokens
            .account(&m)
            .ok()
            .and_then(|a| mailoauth::mail::diagnose(&a, mailoauth::config::Service::Imap, &f)),
        _ => None,
    };
    let (status, code) = match &f {
        Failure::Unreachable(_) | Failure::Temporary { .. } | Failure::Protocol(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        Failure::Refused { .. } | Failure::Tls(_) => {
            (StatusCode::FAILED_DEPENDENCY, "mail_server_refused")
        }
    };
    let mut message = format!("the IMAP server: {f}");
    let mut e = ApiError::new(status, code, String::new());
    if let Some(d) = diagnosis {
        message.push_str(&format!("; cause: {}", d.cause));
        e = e.fix(crate::render::fix_of(&d.remedy));
    }
    e.message = message;
    e
}
