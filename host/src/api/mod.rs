//! The HTTP surface: the admin API under `/v1/admin`, plugin routes under `/v1/plugins`,
//! operations endpoints (`/healthz`, `/readyz`, `/metrics`, `/v1/openapi.json`), and the
//! web console under `/console` ([`crate::console`]).
//!
//! Request path: request id → authentication (the `Principal` extractor, the one place
//! identity is established) → admin handler, or plugin dispatch (route match → permission
//! check → runtime call → commit).

mod admin;
mod audit;
mod auth;
mod body;
pub mod dispatch;
mod imports;
mod jobs;
mod keys;
mod openapi;
mod ops;
pub mod plugin_docs;
mod portability;
pub mod problem;
mod quotas;
pub mod rate_limit;
mod settings;
mod tasks;
mod tenants;
mod users;

/// Response types clients decode ([`crate::client`]).
pub use jobs::{EventPage, JobDetail, JobPage, QueuedJob, Replayed, ScheduleList};
pub use tasks::TaskPage;
pub use tenants::TenantList;

use crate::clock::Clock;
use crate::identity::TokenStore;
use crate::metrics::Metrics;
use crate::plugins::PluginRegistry;
use crate::runtime::Runtime;
use crate::storage::{DocumentStore, StorageLimits};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use problem::ApiError;
use std::sync::Arc;
use tracing::Instrument;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

/// Limits on what callers may send.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    pub request_timeout: std::time::Duration,
    pub max_body_bytes: usize,
    /// Of a public route (no token).
    pub max_public_body_bytes: usize,
    pub max_artifact_bytes: usize,
    /// Largest import file and most rows.
    pub max_import_bytes: usize,
    pub max_import_rows: usize,
    pub storage: StorageLimits,
    /// What plugin responses may carry.
    pub plugin_responses: dispatch::ResponsePolicy,
}

/// Everything handlers share.
#[derive(Clone)]
pub struct AppState {
    pub registry: Arc<PluginRegistry>,
    pub runtime: Arc<Runtime>,
    pub store: Arc<dyn DocumentStore>,
    pub tokens: TokenStore,
    pub tenancy: Arc<crate::tenancy::TenantStore>,
    pub audit: crate::audit::AuditLog,
    pub users: crate::users::UserStore,
    /// Each tenant's plugin settings.
    pub settings: crate::settings::SettingsStore,
    pub metrics: Arc<Metrics>,
    pub rate_limiter: Arc<rate_limit::RateLimiter>,
    /// For public routes, per tenant and client address, and per tenant.
    pub public_limiter: Arc<rate_limit::RateLimiter>,
    pub public_tenant_limiter: Arc<rate_limit::RateLimiter>,
    pub trusted_proxies: Arc<Vec<std::net::IpAddr>>,
    /// The database as a whole (readiness, shutdown).
    pub database: Arc<dyn crate::backend::Database>,
    pub clock: Arc<Clock>,
    pub limits: ApiLimits,
    pub jobs: crate::jobs::store::JobStore,
    /// Wakes the background worker when a commit added work or the clock moved.
    pub jobs_wake: Arc<tokio::sync::Notify>,
    pub runner: Arc<crate::jobs::runner::JobRunner>,
    /// Links department interfaces between plugins.
    pub departments: Arc<crate::departments::Departments>,
    /// Whether `POST /v1/admin/clock/advance` is served (tests and demos only).
    pub clock_control: bool,
    /// One plugin call, whoever starts it: context, commit, repeats.
    pub calls: Arc<crate::calls::Calls>,
    /// One bulk import at a time per tenant.
    pub import_lanes: Arc<crate::calls::Lanes>,
}

/// Marks a response as the plugin's own, which the host passes through as it is.
#[derive(Debug, Clone, Copy)]
pub struct PluginResponse;

/// The request's id: from a well-formed incoming `x-request-id`, or fresh.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

#[derive(OpenApi)]
#[openapi(
    info(title = "Keel admin API", description = "Install and manage department plugins; call them under /v1/plugins/{id}/."),
    modifiers(&BearerAuth),
    components(schemas(problem::Problem)),
    tags((name = "plugins", description = "Installed department plugins"), (name = "tenants", description = "Tenants, their plugins, tokens and grants"), (name = "jobs", description = "Background work: jobs, schedules, events"), (name = "operations", description = "Health, readiness, metrics"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The platform's OpenAPI document: the handlers' annotations, completed with what every
/// request may meet on the way ([`openapi::complete`]).
pub fn openapi() -> serde_json::Value {
    let mut doc = serde_json::to_value(build().1).expect("the OpenAPI document serializes");
    openapi::complete(&mut doc);
    doc
}

fn build() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(admin::routes())
        .merge(keys::routes())
        .merge(tenants::routes())
        .merge(quotas::routes())
        .merge(settings::routes())
        .merge(audit::routes())
        .merge(users::routes())
        .merge(jobs::routes())
        .merge(tasks::routes())
        .merge(imports::routes())
        .merge(portability::routes())
        .merge(ops::routes())
        .split_for_parts()
}

/// The whole HTTP surface: the API, and the web console (which calls the API in process).
pub fn router(state: AppState) -> Router {
    let api = api_router(state.clone());
    let request_timeout = state.limits.request_timeout;
    crate::console::router(state, api.clone())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
        .layer(middleware::from_fn(envelope))
        .merge(api)
}

fn api_router(state: AppState) -> Router {
    let request_timeout = state.limits.request_timeout;
    let (documented, api) = build();
    let mut api = serde_json::to_value(&api).expect("the OpenAPI document serializes");
    openapi::complete(&mut api);
    let api = Arc::new(api);
    documented
        .route(
            "/v1/openapi.json",
            axum::routing::get(move |state: axum::extract::State<AppState>, request: Request| {
                let api = api.clone();
                async move { openapi_document(&state, &api, request).await }
            }),
        )
        .route("/v1/plugins/{plugin}", any(dispatch::dispatch))
        .route("/v1/plugins/{plugin}/{*path}", any(dispatch::dispatch))
        .route("/v1/public/{tenant}/{plugin}/{*path}", any(dispatch::public_dispatch))
        .fallback(|| async { ApiError::not_found("not-found", "no such endpoint") })
        // Bodies are read with explicit limits (and a problem response) by the handlers.
        .layer(DefaultBodyLimit::disable())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout))
        .layer(middleware::from_fn(envelope))
        .with_state(state)
}

/// The platform's document; with a token, plus the routes of every department the caller's
/// tenant has on (at the version the tenant runs).
async fn openapi_document(state: &AppState, api: &serde_json::Value, request: Request) -> Result<Response, ApiError> {
    use axum::extract::FromRequestParts;
    let (mut parts, _) = request.into_parts();
    if !parts.headers.contains_key(header::AUTHORIZATION) {
        return Ok(axum::Json(api).into_response());
    }
    let principal = crate::identity::Principal::from_request_parts(&mut parts, state).await?;
    let mut doc = api.clone();
    let mut serving = state.registry.serving_tenant(&state.tenancy, &principal.tenant);
    serving.sort_by(|a, b| a.record.id.cmp(&b.record.id));
    for plugin in serving {
        plugin_docs::merge(&mut doc, &plugin.record.manifest);
    }
    Ok(axum::Json(doc).into_response())
}

/// Request ids are a per-process random prefix and a counter: unique without a syscall per
/// request.
fn next_request_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut buf = [0u8; 4];
        getrandom::fill(&mut buf).expect("the operating system's random source failed");
        hex::encode(buf)
    });
    format!("req_{prefix}{:08x}", COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// What every request goes through: a request id (a well-formed incoming `x-request-id`, or
/// a fresh one) in a tracing span and on the response, and framework rejections reshaped as
/// problems. One middleware rather than two: this is on every request's path.
async fn envelope(mut request: Request, next: Next) -> Response {
    let incoming = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned);
    let id = incoming.unwrap_or_else(next_request_id);
    request.extensions_mut().insert(RequestId(id.clone()));
    let span =
        tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let response = next.run(request).instrument(span).await;
    let mut response = problem_for_rejections(response).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Framework rejections (a malformed path or query, a wrong content type) come back as
/// plain text; give them the same problem shape as every other error.
async fn problem_for_rejections(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    // Plugin responses pass through untouched: they carry the plugin's own error bodies.
    // So do the console's pages, which are HTML for people.
    let is_page = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if response.extensions().get::<PluginResponse>().is_some() || is_page {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 16 * 1024).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&body).trim().to_owned();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad-request",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body-too-large",
        StatusCode::REQUEST_TIMEOUT => "request-timeout",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid-request",
        s if s.is_server_error() => "internal",
        _ => "request-error",
    };
    let detail = if detail.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { detail };
    ApiError::new(status, code, detail).into_response()
}
