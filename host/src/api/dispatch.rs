//! Plugin routes: `/v1/plugins/{plugin}/...` → route match → permission check → one call in
//! a fresh instance → commit its unit of work → the plugin's response.

use super::AppState;
use super::problem::{ApiError, read_body};
use super::{PluginResponse, RequestId};
use crate::identity::Principal;
use crate::jobs::Background;
use crate::jobs::runner::route_outbox;
use crate::manifest::RouteError;
use crate::plugins::LoadedPlugin;
use crate::runtime::bindings::exports::keel::platform::handler::{Request as WitRequest, Response as WitResponse};
use crate::runtime::bindings::keel::platform::types::Caller;
use crate::runtime::{CallContext, CallError, CallLabels, Invocation};
use crate::storage::{Scope, StoreError, UnitOfWork, UnitOfWorkError, WriteAudit};
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
    let err = |e: ApiError| e.with_plugin(plugin_id).with_request_id(&request_id);
    let plugin = state
        .registry
        .get(plugin_id)
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
    let permission = &plugin.record.manifest.routes[matched.index].permission;
    if !state.tenancy.allows(&principal, permission) {
        return Err(err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("this route needs `{permission}`"))));
    }
    let body = read_body(body, state.limits.max_body_bytes).await.map_err(err)?;
    let query = match uri.query() {
        None => Vec::new(),
        Some(q) => form_urlencoded::parse(q.as_bytes()).into_owned().collect(),
    };
    let request = WitRequest {
        request_id: request_id.clone(),
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
        body: body.to_vec(),
    };
    let caller = caller_of(&state, &plugin, &principal);
    let started = Instant::now();
    let result = call(&state, &plugin, &principal, &request_id, caller, request).await;
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

/// Attempts a call gets before a race lost at commit is answered 409 `write-conflict`.
pub const MAX_CALL_ATTEMPTS: u32 = 5;

/// One lane per (tenant, plugin) for calls being repeated after a lost race: repeats run one
/// at a time, so contenders that all lost to one winner do not keep losing to each other.
#[derive(Debug, Default)]
pub struct RetryLanes {
    lanes: std::sync::Mutex<std::collections::HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>>,
}

impl RetryLanes {
    pub async fn enter(&self, tenant: &str, plugin: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lane = {
            let mut lanes = self.lanes.lock().expect("retry lanes lock");
            // Lanes nobody holds or waits for are dropped, so the map stays as small as the contention.
            lanes.retain(|_, lane| Arc::strong_count(lane) > 1);
            lanes.entry((tenant.to_owned(), plugin.to_owned())).or_default().clone()
        };
        lane.lock_owned().await
    }

    /// The lane of (`tenant`, `what`) if nobody holds it now.
    pub fn try_enter(&self, tenant: &str, what: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let mut lanes = self.lanes.lock().expect("retry lanes lock");
        lanes.retain(|_, lane| Arc::strong_count(lane) > 1);
        lanes.entry((tenant.to_owned(), what.to_owned())).or_default().clone().try_lock_owned().ok()
    }
}

/// Runs the call; when its commit loses a race (a document it read or wrote, or a query's
/// results, changed underneath it), runs it again from the start, up to [`MAX_CALL_ATTEMPTS`]
/// times: the repeat reads the winner's writes, so it answers as if the calls had run one
/// after the other. A call of a plugin that calls other departments is not repeated: the
/// providers' writes are committed already.
async fn call(
    state: &AppState,
    plugin: &Arc<LoadedPlugin>,
    principal: &Principal,
    request_id: &str,
    caller: Caller,
    request: WitRequest,
) -> Result<Response, (ApiError, &'static str)> {
    let repeatable = plugin.record.manifest.requires.is_empty();
    let mut attempt = 1;
    let mut plugin = plugin.clone();
    loop {
        let _lane = match attempt {
            1 => None,
            _ => Some(state.retry_lanes.enter(&principal.tenant, &plugin.record.id).await),
        };
        if attempt > 1 {
            // The race may have been with an upgrade: a repeat runs the version now active.
            if let Some(current) = state.registry.get(&plugin.record.id).filter(|p| p.record.enabled) {
                plugin = current;
            }
        }
        match attempt_call(state, &plugin, principal, request_id, caller.clone(), request.clone()).await {
            Err((_, "conflict")) if repeatable && attempt < MAX_CALL_ATTEMPTS => {
                tracing::debug!(plugin = %plugin.record.id, %request_id, attempt, "commit lost a race; running the call again");
                state.metrics.record_repeat(&plugin.record.id);
                attempt += 1;
            }
            other => return other,
        }
    }
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
    let scope = Scope { tenant: principal.tenant.clone(), plugin: id.clone() };
    let uow = UnitOfWork::new(state.store.clone(), scope, plugin.collections.clone(), state.limits.storage.clone());
    let config = state.settings.effective(&principal.tenant, &plugin.record.manifest).await.map_err(|e| {
        tracing::error!(plugin = %id, error = %e, "reading the plugin's settings failed");
        (
            ApiError::unavailable("settings-unavailable", "the plugin's settings cannot be read now"),
            "settings_unavailable",
        )
    })?;
    let labels = Arc::new(CallLabels {
        plugin: id.clone(),
        version: plugin.record.version.clone(),
        tenant: principal.tenant.clone(),
        request_id: request_id.to_owned(),
        permissions: Vec::new(),
        lane: crate::runtime::Lane::Request,
        chain: 0,
    });
    let invocation = Invocation {
        caller,
        request,
        context: CallContext {
            uow,
            labels,
            config,
            memory_cap: plugin.memory_cap,
            timeout: plugin.timeout,
            // Only plugins that import department interfaces need the linker.
            interop: (!plugin.record.manifest.requires.is_empty())
                .then(|| state.departments.for_caller(Some(principal))),
            depth: 0,
            task: None,
        },
    };
    let outcome = state.runtime.call(&plugin.pre, invocation).await.map_err(|e| {
        tracing::warn!(plugin = %id, %request_id, error = %e, "plugin call failed");
        if let CallError::Refused(refusal) = &e {
            state.metrics.record_refusal(id, refusal.reason());
        }
        (call_failure(&e), e.kind())
    })?;
    let response = to_http(outcome.response, &state.limits.plugin_responses, id).map_err(|detail| {
        tracing::warn!(plugin = %id, %request_id, %detail, "plugin returned a malformed response");
        (ApiError::new(StatusCode::BAD_GATEWAY, "plugin-bad-response", detail), "bad_response")
    })?;
    // Only a successful answer commits: an error response, like a trap, discards the writes.
    if response.status().is_success() || response.status().is_redirection() {
        let audit = WriteAudit {
            actor: principal.token_id.clone(),
            actor_name: principal.name.clone(),
            request_id: request_id.to_owned(),
        };
        let now = state.clock.now_ms();
        let background = if outcome.outbox.is_empty() {
            Background::default()
        } else {
            let scope = outcome.uow.scope().clone();
            route_outbox(&state.registry, &state.tenancy, &scope, plugin, outcome.outbox, request_id, now, 0)
        };
        outcome.uow.commit_with(&background, now, &audit).await.map_err(|e| match e {
            UnitOfWorkError::Store(StoreError::Conflict { .. } | StoreError::ReadConflict { .. }) => {
                (ApiError::conflict("write-conflict", format!("{e}; nothing was saved, retry the request")), "conflict")
            }
            UnitOfWorkError::ReadSetTooLarge { .. } => {
                (ApiError::unprocessable("read-set-too-large", format!("{e}; nothing was saved")), "invalid_call")
            }
            UnitOfWorkError::Store(StoreError::Unavailable(_)) => (
                ApiError::unavailable("storage-unavailable", "storage is unavailable; nothing was saved"),
                "commit_failed",
            ),
            UnitOfWorkError::Store(StoreError::QuotaExceeded(ref q)) => {
                state.metrics.record_quota_refusal(&principal.tenant, id);
                (
                    ApiError::new(
                        StatusCode::INSUFFICIENT_STORAGE,
                        "quota-exceeded",
                        format!("{q}; nothing was saved"),
                    ),
                    "quota_exceeded",
                )
            }
            UnitOfWorkError::Store(StoreError::TooManyJobs { .. }) => {
                let mut api =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too-many-jobs", format!("{e}; nothing was saved"));
                api.retry_after = Some(5);
                (api, "too_many_jobs")
            }
            other => {
                tracing::error!(plugin = %id, %request_id, error = %other, "commit failed");
                (ApiError::internal("saving the plugin's writes failed; nothing was saved"), "commit_failed")
            }
        })?;
        if background.adds_work() {
            state.jobs_wake.notify_one();
        }
    }
    Ok(response)
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
