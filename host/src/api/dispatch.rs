//! Plugin routes: `/v1/plugins/{plugin}/...` → route match → permission check → one call in
//! a fresh instance → commit its unit of work → the plugin's response. Public routes (a web
//! form) are also served without a token under `/v1/public/{tenant}/{plugin}/...`, rate
//! limited per tenant and client address, to a caller with no permissions.

use super::AppState;
use super::problem::{ApiError, read_body};
use super::{PluginResponse, RequestId};
use crate::calls::{CallPlan, Repeat, Save};
use crate::identity::Principal;
use crate::manifest::RouteError;
use crate::plugins::LoadedPlugin;
use crate::runtime::bindings::exports::keel::platform::handler::{Request as WitRequest, Response as WitResponse};
use crate::runtime::bindings::keel::platform::types::Caller;
use crate::runtime::{CallError, Invocation, Lane};
use crate::storage::{StoreError, UnitOfWorkError, WriteAudit};
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

/// Request headers a plugin never sees.
const HIDDEN_HEADERS: [&str; 4] = ["authorization", "cookie", "proxy-authorization", "x-keel-internal"];
/// Response headers a plugin may not set (the host owns framing and sessions).
const RESERVED_HEADERS: [&str; 7] =
    ["content-length", "transfer-encoding", "connection", "set-cookie", "x-request-id", "upgrade", "keep-alive"];
const MAX_RESPONSE_BYTES: usize = 8 << 20;
const MAX_RESPONSE_HEADERS: usize = 64;

pub async fn dispatch(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    principal: Principal,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let rest = uri.path().strip_prefix("/v1/plugins/").unwrap_or_default();
    let (plugin_id, path) = match rest.split_once('/') {
        Some((id, path)) => (id, format!("/{path}")),
        None => (rest, "/".to_owned()),
    };
    if method == Method::GET && path == "/openapi.json" {
        return plugin_document(&state, &principal, plugin_id).map_err(|e| e.with_request_id(&request_id));
    }
    serve(&state, &request_id, &principal, plugin_id, path, &method, &uri, &headers, body, false).await
}

/// `GET /v1/plugins/{id}/openapi.json`: the department's own OpenAPI document, at the
/// version the caller's tenant runs.
fn plugin_document(state: &AppState, principal: &Principal, plugin_id: &str) -> Result<Response, ApiError> {
    use axum::response::IntoResponse;
    let plugin = state
        .registry
        .for_tenant(&state.tenancy, &principal.tenant, plugin_id)
        .filter(|p| p.record.enabled && state.tenancy.is_enabled(&principal.tenant, &p.record.id))
        .ok_or_else(|| ApiError::not_found("plugin-not-found", format!("no enabled plugin `{plugin_id}`")))?;
    let problem =
        serde_json::to_value(<super::problem::Problem as utoipa::PartialSchema>::schema()).unwrap_or_default();
    Ok(axum::Json(super::plugin_docs::document(&plugin, problem)).into_response())
}

/// The user id a plugin sees on a public route's call without a token; it holds no
/// permissions.
pub const PUBLIC_USER: &str = "public";

/// `/v1/public/{tenant}/{plugin}/...`: a plugin's `public` routes, without a token. An
/// unknown or suspended tenant, a plugin it has not enabled and a route that is not public
/// are all the same 404, so nothing about the tenant shows. Each client address (an IPv6
/// /64) may call a tenant's public routes `public-rate-per-minute` times a minute, and all
/// clients together `public-tenant-rate-per-minute`: limits are keyed only by tenants that
/// exist, so made-up tenants grow nothing.
pub async fn public_dispatch(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let rest = parts.uri.path().strip_prefix("/v1/public/").unwrap_or_default();
    let mut segments = rest.splitn(3, '/');
    let (tenant, plugin_id) = (segments.next().unwrap_or_default(), segments.next().unwrap_or_default());
    let path = format!("/{}", segments.next().unwrap_or_default());
    let not_found = || {
        ApiError::not_found("route-not-found", format!("no public route {path} of `{plugin_id}` here"))
            .with_request_id(&request_id)
    };
    let plugin = state
        .registry
        .for_tenant(&state.tenancy, tenant, plugin_id)
        .filter(|p| p.record.enabled && state.tenancy.is_enabled(tenant, &p.record.id));
    let Some(plugin) = plugin else { return Err(not_found()) };
    match plugin.routes.find(parts.method.as_str(), &path) {
        Ok(m) if plugin.record.manifest.routes[m.index].public => {}
        _ => return Err(not_found()),
    }
    let client = client_address(&parts, &state.trusted_proxies);
    let limited = |wait: std::time::Duration| {
        let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "too many requests; slow down");
        error.retry_after = Some(wait.as_millis().div_ceil(1000).max(1) as u64);
        error.with_request_id(&request_id)
    };
    state.public_limiter.check(&format!("{tenant}|{client}")).map_err(limited)?;
    state.public_tenant_limiter.check(tenant).map_err(limited)?;
    match state.tenancy.get(tenant).await {
        Ok(t) if t.status == crate::tenancy::TenantStatus::Active => {}
        _ => return Err(not_found()),
    }
    tracing::info!(%tenant, plugin = %plugin_id, %client, "public call");
    let principal = Principal {
        token_id: PUBLIC_USER.to_owned(),
        user_id: Some(PUBLIC_USER.to_owned()),
        name: "public".to_owned(),
        role: crate::identity::Role::Member,
        role_name: String::new(),
        tenant: tenant.to_owned(),
    };
    serve(&state, &request_id, &principal, plugin_id, path, &parts.method, &parts.uri, &parts.headers, body, true).await
}

/// Checks a request against its route's declared contract before any plugin runs: path
/// parameters and query by their schemas (read as their declared types), then the body as
/// JSON against `input`. A refusal names every field at fault (`field`, and `errors` with
/// each one's place and reason), so a form can show them beside their boxes.
///
/// JSON Schema counts `3.0` as the integer 3, so a body the schema admits may carry one;
/// such a body is passed on re-encoded with `3`, so the plugin's integer fields read what
/// the schema promised (`Some(body)`).
fn check_contract(
    contract: &crate::manifest::schema::RouteContract,
    params: &[(String, String)],
    query: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<Vec<u8>>, ApiError> {
    let mut normalized = None;
    use crate::manifest::schema::Violation;
    let mut violations: Vec<(&str, Violation)> = Vec::new();
    for (place, schema, pairs) in [("path", &contract.params, params), ("query", &contract.query, query)] {
        let Some(schema) = schema else { continue };
        match schema.read_parameters(pairs) {
            Ok(value) => {
                let size = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
                violations.extend(schema.check(&value, size).into_iter().map(|v| (place, v)));
            }
            Err(v) => violations.push((place, v)),
        }
    }
    if let Some(schema) = &contract.input {
        let content_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if let Some(given) = content_type {
            let essence = given.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    format!("this route takes application/json, not {essence}"),
                ));
            }
        }
        if body.is_empty() {
            violations.push(("body", Violation { field: String::new(), message: "a JSON body is required".into() }));
        } else {
            let value: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request("malformed-json", format!("request body is not valid JSON: {e}")))?;
            violations.extend(schema.check(&value, body.len()).into_iter().map(|v| ("body", v)));
            let mut value = value;
            if violations.is_empty() && crate::manifest::schema::integral_floats_to_integers(&mut value) {
                normalized = Some(serde_json::to_vec(&value).unwrap_or_else(|_| body.to_vec()));
            }
        }
    }
    let Some((first_place, first)) = violations.first() else { return Ok(normalized) };
    let named = |place: &str, v: &Violation| if v.field.is_empty() { place.to_owned() } else { v.field.clone() };
    let detail = format!("`{}` {}", named(first_place, first), first.message);
    let mut error = ApiError::unprocessable("invalid-field", detail);
    let mut extensions = serde_json::Map::new();
    if !first.field.is_empty() {
        extensions.insert("field".into(), first.field.clone().into());
    }
    let errors = violations
        .iter()
        .map(|(place, v)| serde_json::json!({ "in": place, "field": v.field, "message": v.message }))
        .collect();
    extensions.insert("errors".into(), serde_json::Value::Array(errors));
    error.extensions = Some(extensions);
    Err(error)
}

/// Who is calling, for the public limiter: the connection's address, or behind a trusted
/// proxy the last `X-Forwarded-For` hop that is not one; an IPv6 address by its /64 (what
/// one client usually holds). Without connection info (an in-process server) every caller
/// shares one bucket.
fn client_address(parts: &axum::http::request::Parts, trusted: &[std::net::IpAddr]) -> String {
    use std::net::IpAddr;
    let Some(peer) = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() else {
        return "unknown".to_owned();
    };
    let mut ip = peer.0.ip().to_canonical();
    if trusted.contains(&ip) {
        let forwarded = parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let hops: Vec<IpAddr> =
            forwarded.flat_map(|v| v.split(',')).filter_map(|h| h.trim().parse::<IpAddr>().ok()).collect();
        if let Some(hop) = hops.iter().rev().map(|h| h.to_canonical()).find(|h| !trusted.contains(h)) {
            ip = hop;
        }
    }
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    state: &AppState,
    request_id: &str,
    principal: &Principal,
    plugin_id: &str,
    path: String,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    public: bool,
) -> Result<Response, ApiError> {
    let err = |e: ApiError| e.with_plugin(plugin_id).with_request_id(request_id);
    let plugin = state
        .registry
        .for_tenant(&state.tenancy, &principal.tenant, plugin_id)
        .filter(|p| p.record.enabled && state.tenancy.is_enabled(&principal.tenant, &p.record.id))
        .ok_or_else(|| err(ApiError::not_found("plugin-not-found", format!("no enabled plugin `{plugin_id}`"))))?;
    let matched = plugin.routes.find(method.as_str(), &path).map_err(|e| match e {
        RouteError::NotFound => {
            err(ApiError::not_found("route-not-found", format!("plugin `{plugin_id}` has no route {path}")))
        }
        RouteError::MethodNotAllowed { ref allowed, .. } => {
            let mut api = err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", e.to_string()));
            api.allow = Some(allowed.clone());
            api
        }
    })?;
    let route = &plugin.record.manifest.routes[matched.index];
    if public && !route.public {
        return Err(err(ApiError::not_found(
            "route-not-found",
            format!("no public route {path} of `{plugin_id}` here"),
        )));
    }
    if !route.public && !state.tenancy.allows(principal, &route.permission) {
        let permission = &route.permission;
        return Err(err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("this route needs `{permission}`"))));
    }
    let limit = if public { state.limits.max_public_body_bytes } else { state.limits.max_body_bytes };
    let body = read_body(body, limit).await.map_err(err)?;
    let query = match uri.query() {
        None => Vec::new(),
        Some(q) => form_urlencoded::parse(q.as_bytes()).into_owned().collect(),
    };
    let mut body = body.to_vec();
    if let Some(contract) = plugin.contracts.get(matched.index)
        && let Some(normalized) = check_contract(contract, &matched.params, &query, headers, &body).map_err(err)?
    {
        body = normalized;
    }
    let request = WitRequest {
        request_id: request_id.to_owned(),
        method: method.as_str().to_owned(),
        path,
        route: matched.pattern,
        params: matched.params,
        query,
        headers: headers
            .iter()
            .filter(|(name, _)| !HIDDEN_HEADERS.contains(&name.as_str()))
            .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
            .collect(),
        body,
    };
    let caller = caller_of(state, &plugin, principal);
    let started = Instant::now();
    let result = call(state, &plugin, principal, request_id, caller, request).await;
    let outcome = match &result {
        Ok(r) if r.status().is_client_error() => "client_error",
        Ok(r) if r.status().is_server_error() => "server_error",
        Ok(_) => "ok",
        Err((_, kind)) => kind,
    };
    state.metrics.record_call(plugin_id, outcome, started.elapsed());
    tracing::info!(plugin = %plugin_id, tenant = %principal.tenant, %request_id, outcome,
        elapsed_us = started.elapsed().as_micros() as u64, "plugin call");
    result.map_err(|(e, _)| err(e))
}

/// Who a plugin sees calling: the principal, with the plugin's permissions it holds.
pub(super) fn caller_of(state: &AppState, plugin: &LoadedPlugin, principal: &Principal) -> Caller {
    Caller {
        tenant: principal.tenant.clone(),
        user_id: principal.user_id.clone().unwrap_or_else(|| principal.token_id.clone()),
        display_name: principal.name.clone(),
        permissions: plugin
            .record
            .manifest
            .permissions
            .keys()
            .filter(|p| state.tenancy.allows(principal, p))
            .cloned()
            .collect(),
    }
}

/// Whether the database answers at once (a quarter of a second; PostgreSQL is asked over
/// connections of its own, so a pool that calls hold does not count as away). An embedded
/// database (SQLite) is part of this process and cannot be away: it is not asked, so a
/// plugin's own timeout never waits on a ping behind other calls' reads.
async fn database_answers(state: &AppState) -> bool {
    if state.database.kind() != "postgres" {
        return true;
    }
    matches!(tokio::time::timeout(std::time::Duration::from_millis(250), state.database.ping()).await, Ok(Ok(())))
}

/// The answer to a plugin call that did not complete.
pub(super) fn call_failure(e: &CallError) -> ApiError {
    match e {
        CallError::Timeout(_) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "plugin-timeout", e.to_string()),
        CallError::MemoryLimit { .. } => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "plugin-memory-limit", e.to_string())
        }
        CallError::Trap(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "plugin-trapped", e.to_string()),
        CallError::Instantiate(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "plugin-instantiate-failed", e.to_string())
        }
        // The caller's own share is full: slow down (429). The platform is full: 503.
        CallError::Refused(refusal) if refusal.is_own_share() => {
            let mut api = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "concurrency-limit", e.to_string());
            api.retry_after = Some(1);
            api
        }
        CallError::Refused(_) => {
            let mut api = ApiError::unavailable("capacity-exhausted", e.to_string());
            api.retry_after = Some(1);
            api
        }
    }
}

/// Runs the call, again from the start when its commit loses a race (see
/// [`Calls::repeating`](crate::calls::Calls::repeating)); a repeat runs the version the
/// tenant runs then, since the race may have been with its upgrade.
async fn call(
    state: &AppState,
    plugin: &Arc<LoadedPlugin>,
    principal: &Principal,
    request_id: &str,
    caller: Caller,
    request: WitRequest,
) -> Result<Response, (ApiError, &'static str)> {
    // Whether a lost race may run again is decided per run: one that reached another
    // department answers `conflict_final` (that department's writes are committed).
    let repeatable = true;
    let id = &plugin.record.id;
    let attempt = |n: u32| {
        let plugin = match n {
            1 => plugin.clone(),
            _ => state
                .registry
                .for_tenant(&state.tenancy, &principal.tenant, id)
                .filter(|p| p.record.enabled)
                .unwrap_or_else(|| plugin.clone()),
        };
        let (caller, request) = (caller.clone(), request.clone());
        async move { attempt_call(state, &plugin, principal, request_id, caller, request).await }
    };
    // No repeat starts that could not finish before the request times out.
    let spare = state.limits.request_timeout.saturating_sub(plugin.timeout);
    let repeat = Repeat { repeatable, until: Some(std::time::Instant::now() + spare) };
    state.calls.repeating(&principal.tenant, id, repeat, attempt, |(_, kind)| *kind == "conflict").await
}

async fn attempt_call(
    state: &AppState,
    plugin: &Arc<LoadedPlugin>,
    principal: &Principal,
    request_id: &str,
    caller: Caller,
    request: WitRequest,
) -> Result<Response, (ApiError, &'static str)> {
    let id = &plugin.record.id;
    let plan = CallPlan {
        plugin,
        tenant: &principal.tenant,
        request_id,
        lane: Lane::Request,
        chain: 0,
        depth: 0,
        task: None,
        permissions: Vec::new(),
        // Only plugins that import department interfaces need the linker; a public call
        // (nobody signed in) calls no other department: its calls answer `unavailable`.
        interop: (plugin.record.manifest.calls_departments() && principal.token_id != PUBLIC_USER)
            .then(|| state.departments.for_caller(Some(principal))),
        limits: None,
    };
    let context = state.calls.context(plan).await.map_err(|e| {
        tracing::error!(plugin = %id, error = %e, "reading the plugin's settings failed");
        (
            ApiError::unavailable("settings-unavailable", "the plugin's settings cannot be read now"),
            "settings_unavailable",
        )
    })?;
    let outcome = match state.runtime.call(&plugin.pre, Invocation { caller, request, context }).await {
        Ok(outcome) => outcome,
        // A call that ran out of time while the database was away waited for the database,
        // not on its own work: that is the platform's 503, to be retried.
        Err(e @ CallError::Timeout(_)) if !database_answers(state).await => {
            tracing::warn!(plugin = %id, %request_id, error = %e, "plugin call timed out while the database was away");
            return Err((
                ApiError::unavailable("storage-unavailable", "storage is unavailable; nothing was saved"),
                "commit_failed",
            ));
        }
        Err(e) => {
            tracing::warn!(plugin = %id, %request_id, error = %e, "plugin call failed");
            if let CallError::Refused(refusal) = &e {
                state.metrics.record_refusal(id, refusal.reason());
            }
            return Err((call_failure(&e), e.kind()));
        }
    };
    let response = to_http(outcome.response, &state.limits.plugin_responses, id).map_err(|detail| {
        tracing::warn!(plugin = %id, %request_id, %detail, "plugin returned a malformed response");
        (ApiError::new(StatusCode::BAD_GATEWAY, "plugin-bad-response", detail), "bad_response")
    })?;
    // Only a successful answer commits: an error response, like a trap, discards the writes.
    // An error answered on data that changed while the call ran is a lost race too: run
    // again, it answers from what is there now.
    let succeeded = response.status().is_success() || response.status().is_redirection();
    // An error the plugin answered because the database was away (whatever it made of
    // that) is the platform's 503, to be retried.
    if !succeeded && let Some(reason) = outcome.uow.storage_unavailable() {
        tracing::warn!(plugin = %id, %request_id, %reason, "storage unavailable during the call");
        // Departments it called committed their own work when they returned: say so, so a
        // client does not take the retry as free of effects.
        let detail = if outcome.called_departments {
            "storage is unavailable; this call's writes were not saved, but departments it called may have saved theirs"
        } else {
            "storage is unavailable; nothing was saved"
        };
        return Err((ApiError::unavailable("storage-unavailable", detail), "commit_failed"));
    }
    let lost = if outcome.called_departments { "conflict_final" } else { "conflict" };
    if !succeeded && !outcome.uow.reads_current().await.unwrap_or(true) {
        return Err((
            ApiError::conflict(
                "write-conflict",
                "the call answered an error on data that changed while it ran; nothing was saved, retry the request",
            ),
            lost,
        ));
    }
    if succeeded {
        let audit = WriteAudit {
            actor: principal.token_id.clone(),
            actor_name: principal.name.clone(),
            request_id: request_id.to_owned(),
        };
        state.calls.commit(plugin, outcome.uow, outcome.outbox, Save::new(request_id, 0, audit)).await.map_err(
            |e| match commit_failure(state, &principal.tenant, id, request_id, &e, "request") {
                (error, "conflict") => (error, lost),
                other => other,
            },
        )?;
    }
    Ok(response)
}

/// The answer to a call whose writes could not be saved (nothing was): a lost race is 409
/// `write-conflict` (kind `conflict`, which a repeat may cure); `what` is what to retry.
pub(super) fn commit_failure(
    state: &AppState,
    tenant: &str,
    plugin: &str,
    request_id: &str,
    e: &UnitOfWorkError,
    what: &str,
) -> (ApiError, &'static str) {
    match e {
        e if e.is_lost_race() => {
            (ApiError::conflict("write-conflict", format!("{e}; nothing was saved, retry the {what}")), "conflict")
        }
        UnitOfWorkError::ReadSetTooLarge { .. } => {
            (ApiError::unprocessable("read-set-too-large", format!("{e}; nothing was saved")), "invalid_call")
        }
        UnitOfWorkError::SearchAndWrite => {
            (ApiError::unprocessable("searched-then-wrote", format!("{e}; nothing was saved")), "invalid_call")
        }
        UnitOfWorkError::Store(StoreError::Unavailable(_)) => {
            (ApiError::unavailable("storage-unavailable", "storage is unavailable; nothing was saved"), "commit_failed")
        }
        UnitOfWorkError::Store(StoreError::QuotaExceeded(q)) => {
            state.metrics.record_quota_refusal(tenant, plugin);
            (
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "quota-exceeded", format!("{q}; nothing was saved")),
                "quota_exceeded",
            )
        }
        UnitOfWorkError::Store(StoreError::OutcomeUnknown(_)) => (
            ApiError::unavailable(
                "commit-outcome-unknown",
                format!("{e}; check whether they were before repeating the {what}"),
            ),
            "commit_failed",
        ),
        UnitOfWorkError::Store(StoreError::Saturated { .. }) => {
            (ApiError::unavailable("capacity-exhausted", format!("{e}; nothing was saved")), "storage_busy")
        }
        UnitOfWorkError::Store(StoreError::Busy { .. }) => {
            let mut api =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "storage-busy", format!("{e}; nothing was saved"));
            api.retry_after = Some(1);
            (api, "storage_busy")
        }
        UnitOfWorkError::Store(StoreError::TooManyJobs { .. }) => {
            let mut api =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too-many-jobs", format!("{e}; nothing was saved"));
            api.retry_after = Some(5);
            (api, "too_many_jobs")
        }
        other => {
            tracing::error!(%plugin, %request_id, error = %other, "commit failed");
            (ApiError::internal("saving the plugin's writes failed; nothing was saved"), "commit_failed")
        }
    }
}

/// What the host allows of plugin responses.
#[derive(Debug, Clone)]
pub struct ResponsePolicy {
    /// Bytes of header names and values together.
    pub max_header_bytes: usize,
    /// Plugins whose `access-control-*` headers are passed on.
    pub cors_plugins: Vec<String>,
}

/// Set on every plugin response: a plugin's page can never run as a page of the platform's
/// origin (scripts, forms, plugins and same-origin access are off in a sandboxed document),
/// and browsers take the declared content type at its word.
const SANDBOX_HEADERS: [(&str, &str); 3] = [
    ("content-security-policy", "sandbox; default-src 'none'; frame-ancestors 'none'"),
    ("x-content-type-options", "nosniff"),
    ("cross-origin-resource-policy", "same-origin"),
];

/// Checks a plugin's response before it reaches the network.
fn to_http(response: WitResponse, policy: &ResponsePolicy, plugin: &str) -> Result<Response, String> {
    let status = StatusCode::from_u16(response.status)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| format!("status {} is not a valid final HTTP status", response.status))?;
    if response.body.len() > MAX_RESPONSE_BYTES {
        return Err(format!("body of {} bytes exceeds {MAX_RESPONSE_BYTES}", response.body.len()));
    }
    if response.headers.len() > MAX_RESPONSE_HEADERS {
        return Err(format!("{} headers exceed {MAX_RESPONSE_HEADERS}", response.headers.len()));
    }
    let header_bytes: usize = response.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
    if header_bytes > policy.max_header_bytes {
        return Err(format!("{header_bytes} bytes of headers exceed {}", policy.max_header_bytes));
    }
    let cors_allowed = policy.cors_plugins.iter().any(|p| p == plugin);
    let mut http = Response::new(Body::from(response.body));
    *http.status_mut() = status;
    http.extensions_mut().insert(PluginResponse);
    for (name, value) in response.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
        let value = HeaderValue::from_str(&value).map_err(|_| format!("invalid value for header `{name}`"))?;
        if RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(format!("header `{name}` is reserved for the host"));
        }
        // The host's own sandbox headers replace whatever the plugin says.
        if SANDBOX_HEADERS.iter().any(|(n, _)| *n == name.as_str()) {
            continue;
        }
        if name.as_str().starts_with("access-control-") && !cors_allowed {
            continue;
        }
        http.headers_mut().append(name, value);
    }
    for (name, value) in SANDBOX_HEADERS {
        http.headers_mut().insert(name, HeaderValue::from_static(value));
    }
    Ok(http)
}

#[cfg(test)]
mod tests {
    use super::client_address;
    use axum::extract::ConnectInfo;
    use std::net::{IpAddr, SocketAddr};

    fn parts(peer: &str, forwarded: &[&str]) -> axum::http::request::Parts {
        let mut request = axum::http::Request::builder().uri("/v1/public/t/p/x");
        for f in forwarded {
            request = request.header("x-forwarded-for", *f);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        parts.extensions.insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        parts
    }

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_forwards_and_ipv6_counts_by_its_64() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        // From anyone else the header is forged as easily as written: ignored.
        assert_eq!(client_address(&parts("203.0.113.9:5000", &["198.51.100.7"]), &[proxy]), "203.0.113.9");
        // Behind the proxy: the last hop that is not a trusted proxy (the first ones are the
        // client's to write).
        let behind = parts("10.0.0.1:443", &["1.2.3.4, 198.51.100.7", "10.0.0.1"]);
        assert_eq!(client_address(&behind, &[proxy]), "198.51.100.7");
        assert_eq!(client_address(&parts("10.0.0.1:443", &[]), &[proxy]), "10.0.0.1");
        // One client usually holds a whole IPv6 /64; an IPv4-mapped address is IPv4.
        assert_eq!(client_address(&parts("[2001:db8:1:2:aaaa::1]:80", &[]), &[]), "2001:db8:1:2::/64");
        assert_eq!(client_address(&parts("[2001:db8:1:2:bbbb::9]:80", &[]), &[]), "2001:db8:1:2::/64");
        assert_eq!(client_address(&parts("[::ffff:192.0.2.1]:80", &[]), &[]), "192.0.2.1");
        // No connection info (an in-process server): one shared bucket.
        let (bare, ()) = axum::http::Request::builder().body(()).unwrap().into_parts();
        assert_eq!(client_address(&bare, &[]), "unknown");
    }
}
