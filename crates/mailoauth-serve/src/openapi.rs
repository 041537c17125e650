//! `GET /v1/openapi.json`: the API's OpenAPI 3.1 document, generated from the
//! handlers.
//!
//! Owns: the document's frame (title, version, the server, the bearer-key
//! security scheme) and the schemas of the JSON bodies the handlers build with
//! `json!` (the error shape above all). The operations themselves come from the
//! `#[utoipa::path]` attribute on each handler in [`crate::api`] and the
//! request types' `ToSchema` derives, so a route is documented where it is
//! written; `tests/operations.rs` fails when the router serves a `/v1` route
//! the document lacks, or a body key the schema does not name. Served without a
//! key: it describes the API, it holds nothing about mailboxes. Must not: hold
//! handler logic.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, ServerBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::api::App;

/// The error body of every API route.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `too_large`, `login_required`, `provider_refused`, `unavailable` or
    /// `internal`.
    pub error: String,
    /// What went wrong, in words (never a token or a key).
    pub message: String,
    /// What to do about it, when there is something to do (else `null`).
    #[schema(required = true)]
    pub fix: Option<String>,
    /// With `login_required` on a delegated mailbox: a re-consent link for its
    /// owner (single use, 30 minutes; the same one for a while, so repeated
    /// failures do not make new links).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconnect_url: Option<String>,
}

/// `GET /v1/mailboxes/{id}/token`.
#[derive(Serialize, ToSchema)]
pub struct TokenAnswer {
    /// The bearer token for IMAP/POP/SMTP (or Graph with `resource=graph`).
    pub access_token: String,
    /// Unix time it expires.
    pub expires_at: i64,
    /// The mailbox address: the SASL user.
    pub user: String,
    /// The SASL initial response, base64, when `sasl` was asked for.
    pub sasl: Option<String>,
}

/// `GET /v1/mailboxes`.
#[derive(Serialize, ToSchema)]
pub struct MailboxList {
    /// The mailboxes the key may see, oldest first.
    pub mailboxes: Vec<crate::db::Mailbox>,
}

/// `POST /v1/connect-links`.
#[derive(Serialize, ToSchema)]
pub struct CreatedLink {
    /// The link's public id.
    pub id: String,
    /// The URL to give the person (single use; shown this once).
    pub url: String,
    /// Unix time it stops working.
    pub expires_at: i64,
    /// The connector the person signs in through (the one asked for, or the
    /// one discovery picked).
    pub connector: String,
    /// When the request named no connector: discovery's decision for the
    /// address (provider, tenant, cloud, each signal and the reason for each value).
    #[schema(value_type = Option<Object>)]
    pub discovery: Option<serde_json::Value>,
}

/// One audit entry.
#[derive(Serialize, ToSchema)]
pub struct AuditItem {
    /// Unix time.
    pub at: i64,
    /// The API key's public id.
    pub key: String,
    /// The mailbox id.
    pub mailbox: String,
    /// What was done (`token`).
    pub action: String,
    /// How many times in that second (hand-outs of one key, mailbox and
    /// action in the same second are one entry).
    pub count: i64,
}

/// `GET /v1/audit`.
#[derive(Serialize, ToSchema)]
pub struct AuditList {
    /// Newest first.
    pub entries: Vec<AuditItem>,
}

/// The name of the security scheme in the document.
pub const KEY_SCHEME: &str = "api_key";

/// The document's frame; the operations are the handlers'.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "mailoauth-serve",
        description = "Fresh OAuth2 tokens for the mailboxes people (or administrators) connected. \
            Every `/v1` route but this document needs `Authorization: Bearer <API key>` with the scope \
            its security requirement names (keys are made with `mailoauth-serve keys create`; \
            `admin` includes every scope). Errors are `{error, message, fix}`."
    ),
    paths(
        crate::api::healthz,
        crate::api::list_mailboxes,
        crate::api::add_mailbox,
        crate::api::get_mailbox,
        crate::api::delete_mailbox,
        crate::api::token,
        crate::api::connect_link,
        crate::api::audit,
        crate::mail_api::send_message,
        crate::mail_api::outbox_state,
        crate::mail_api::read_message,
        document,
        crate::metrics::metrics,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerKey),
    tags(
        (name = "mailboxes", description = "Connected mailboxes"),
        (name = "tokens", description = "Access tokens"),
        (name = "mail", description = "Sending mail from connected mailboxes"),
        (name = "operations", description = "Health, metrics, audit and this document"),
    )
)]
struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            KEY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("mos_…")
                    .description(Some(
                        "An API key from `mailoauth-serve keys create --scope …`; the requirement of \
                         each operation lists the scope it needs.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document for a service reached at `base_url`.
pub fn document_for(base_url: &str) -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.servers = Some(vec![ServerBuilder::new().url(base_url).build()]);
    doc
}

/// `GET /v1/openapi.json`.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    security(()),
    responses((status = 200, description = "This document", content_type = "application/json"))
)]
pub async fn document(State(app): State<Arc<App>>) -> Response {
    // The settings do not change while the process runs: render once.
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| {
        document_for(&app.settings.base_url)
            .to_json()
            .expect("the document serialises")
    });
    let mut r = json.clone().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_openapi_3_1_with_the_error_shape_and_the_key_scheme() {
        let doc = serde_json::to_value(super::document_for("http://127.0.0.1:1")).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let err = &doc["components"]["schemas"]["ErrorBody"];
        assert_eq!(
            err["required"],
            serde_json::json!(["error", "message", "fix"]),
            "{err}"
        );
        assert_eq!(
            doc["components"]["securitySchemes"]["api_key"]["scheme"],
            "bearer"
        );
    }
}
