//! Background work as admins see it: a tenant's jobs (with every attempt), schedules and
//! event log; retrying, cancelling, running a schedule now and replaying events. Everything
//! is per tenant and needs a principal that administers the tenant.

use super::auth::AdminPrincipal;
use super::auth::TenantAdmin;
use super::body::JsonBody;
use super::problem::{ApiError, Problem};
use super::{AppState, RequestId};
use crate::audit::AdminAction;
use crate::jobs::store::{EventRecord, JobFilter, JobRecord, JobRun, JobStoreError, ScheduleRecord};
use crate::jobs::{JobKind, JobStatus};
use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(show_job))
        .routes(routes!(retry_job))
        .routes(routes!(cancel_job))
        .routes(routes!(list_schedules))
        .routes(routes!(run_schedule))
        .routes(routes!(list_events))
        .routes(routes!(replay_events))
        .routes(routes!(advance_clock))
}

impl From<JobStoreError> for ApiError {
    fn from(e: JobStoreError) -> Self {
        match e {
            JobStoreError::NotFound(_) => ApiError::not_found("job-not-found", e.to_string()),
            JobStoreError::TaskNotFound(_) => ApiError::not_found("task-not-found", e.to_string()),
            JobStoreError::WrongState { .. } => ApiError::conflict("job-state-conflict", e.to_string()),
            JobStoreError::Database(d) => d.into(),
            JobStoreError::Store(crate::storage::StoreError::Unavailable(m)) => {
                crate::backend::BackendError::Unavailable(m).into()
            }
            JobStoreError::Store(_) => {
                tracing::error!(error = %e, "job store failure");
                ApiError::internal("job store failure")
            }
        }
    }
}

pub(super) fn limit_of(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::unprocessable("invalid-limit", "`limit` must be 1 to 1000"));
    }
    Ok(limit)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    /// Only this plugin's jobs.
    plugin: Option<String>,
    /// queued, running, done, dead or cancelled.
    #[param(pattern = "^(queued|running|done|dead|cancelled)$")]
    status: Option<String>,
    /// job, schedule or event.
    #[param(pattern = "^(job|schedule|event)$")]
    kind: Option<String>,
    /// 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` of the previous page (422 `invalid-cursor` for one this API did not give).
    cursor: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    /// Newest first.
    pub items: Vec<JobRecord>,
    /// Pass as `cursor` for the next page; absent at the end.
    pub next: Option<String>,
}

/// A cursor of a newest-first list: the last item's (created_at, id).
pub(super) fn encode_cursor(created_at: i64, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{created_at}:{id}"))
}

/// The position a newest-first list's cursor stands for (422 `invalid-cursor` if it is none).
pub(super) fn decode_cursor(cursor: Option<&str>) -> Result<Option<(i64, String)>, ApiError> {
    let Some(cursor) = cursor else { return Ok(None) };
    let parse = || {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
        let (at, id) = std::str::from_utf8(&bytes).ok()?.split_once(':')?;
        Some((at.parse().ok()?, id.to_owned()))
    };
    parse().map(Some).ok_or_else(|| ApiError::unprocessable("invalid-cursor", "`cursor` is not a cursor from this API"))
}

/// A tenant's jobs, schedule runs and event deliveries, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/jobs", tag = "jobs",
    params(("tenant" = String, Path), JobQuery),
    responses((status = 200, body = JobPage), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_jobs(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path(tenant): Path<String>,
    Query(q): Query<JobQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let status = match &q.status {
        None => None,
        Some(name) => Some(JobStatus::parse(name).ok_or_else(|| {
            ApiError::unprocessable("invalid-status", format!("`status` must be one of {}", JobStatus::names()))
        })?),
    };
    let kind = match &q.kind {
        None => None,
        Some(k) => Some(
            JobKind::parse(k)
                .ok_or_else(|| ApiError::unprocessable("invalid-kind", "`kind` must be job, schedule or event"))?,
        ),
    };
    let before = decode_cursor(q.cursor.as_deref())?;
    let limit = limit_of(q.limit)?;
    let filter = JobFilter { plugin: q.plugin.clone(), status, kind, before, limit };
    let items = state.jobs.list(&tenant, &filter).await?;
    let next =
        (items.len() == limit as usize).then(|| items.last().map(|j| encode_cursor(j.created_at, &j.id))).flatten();
    Ok(Json(JobPage { items, next }))
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct JobDetail {
    pub job: JobRecord,
    /// Every attempt, oldest first.
    pub runs: Vec<JobRun>,
}

/// One job with its attempts.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/jobs/{id}", tag = "jobs",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = JobDetail), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn show_job(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<JobDetail>, ApiError> {
    let (job, runs) = state.jobs.get(&tenant, &id).await?;
    Ok(Json(JobDetail { job, runs }))
}

/// Puts a dead-lettered or cancelled job back in the queue, with a fresh set of attempts.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/jobs/{id}/retry", tag = "jobs",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = JobRecord), (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn retry_job(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<JobRecord>, ApiError> {
    let job = state.jobs.retry(&tenant, &id, state.clock.now_ms()).await?;
    state.jobs_wake.notify_one();
    admin.record(&state, "job.retry", Some(&job.plugin), json!({ "job": id })).await;
    Ok(Json(job))
}

/// Cancels a job that is waiting to run (first attempt or a retry).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/jobs/{id}/cancel", tag = "jobs",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = JobRecord), (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn cancel_job(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<JobRecord>, ApiError> {
    let job = state.jobs.cancel(&tenant, &id, state.clock.now_ms()).await?;
    admin.record(&state, "job.cancel", Some(&job.plugin), json!({ "job": id })).await;
    Ok(Json(job))
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub items: Vec<ScheduleRecord>,
}

/// The tenant's schedules (one per enabled plugin's declared schedule) with their next and
/// last run.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/schedules", tag = "jobs",
    params(("tenant" = String, Path)), responses((status = 200, body = ScheduleList)), security(("bearer" = [])))]
async fn list_schedules(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path(tenant): Path<String>,
) -> Result<Json<ScheduleList>, ApiError> {
    let items = state
        .jobs
        .list_schedules(&tenant)
        .await?
        .into_iter()
        .filter(|s| state.tenancy.is_enabled(&tenant, &s.plugin))
        .filter(|s| {
            // Only what the tenant's version declares (a schedule an earlier version had stays
            // stored, but is not run).
            let plugin = state.registry.for_tenant(&state.tenancy, &tenant, &s.plugin);
            plugin.is_some_and(|p| p.record.manifest.schedules.iter().any(|d| d.name == s.name))
        })
        .collect();
    Ok(Json(ScheduleList { items }))
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct QueuedJob {
    pub job_id: String,
}

/// Runs one of a plugin's declared schedules now, outside its timetable.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/plugins/{plugin}/schedules/{name}/run", tag = "jobs",
    params(("tenant" = String, Path), ("plugin" = String, Path), ("name" = String, Path)),
    responses((status = 202, body = QueuedJob), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn run_schedule(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((tenant, plugin_id, name)): Path<(String, String, String)>,
) -> Result<(StatusCode, Json<QueuedJob>), ApiError> {
    let plugin = state
        .registry
        .for_tenant(&state.tenancy, &tenant, &plugin_id)
        .filter(|p| state.tenancy.is_enabled(&tenant, &p.record.id))
        .ok_or_else(|| {
            ApiError::not_found("plugin-not-found", format!("no plugin `{plugin_id}` enabled for `{tenant}`"))
        })?;
    if !plugin.record.manifest.schedules.iter().any(|s| s.name == name) {
        return Err(ApiError::not_found(
            "schedule-not-found",
            format!("plugin `{plugin_id}` declares no schedule `{name}`"),
        ));
    }
    let job_id = state.runner.run_schedule_now(&tenant, &plugin, &name).await?;
    admin.record(&state, "schedule.run", Some(&plugin_id), json!({ "schedule": name, "job": job_id })).await;
    Ok((StatusCode::ACCEPTED, Json(QueuedJob { job_id })))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Only events after this position (the `next_after` of the previous page).
    #[serde(default)]
    after: i64,
    /// Only this topic.
    topic: Option<String>,
    /// 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// Oldest first.
    pub items: Vec<EventRecord>,
    pub next_after: Option<i64>,
}

/// The tenant's event log.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/events", tag = "jobs",
    params(("tenant" = String, Path), EventQuery), responses((status = 200, body = EventPage)), security(("bearer" = [])))]
async fn list_events(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path(tenant): Path<String>,
    Query(q): Query<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let limit = limit_of(q.limit)?;
    let items = state.jobs.list_events(&tenant, q.topic.as_deref(), q.after, limit).await?;
    let next_after = (items.len() == limit as usize).then(|| items.last().map(|e| e.seq)).flatten();
    Ok(Json(EventPage { items, next_after }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// The plugin to deliver to; it must subscribe to the events' topics.
    #[schema(pattern = "^[a-z][a-z0-9-]{0,30}[a-z0-9]$")]
    pub subscriber: String,
    /// First event position (`seq`) of the range, inclusive.
    #[schema(minimum = 1)]
    pub from_seq: i64,
    /// Last event position of the range, inclusive: at least `from_seq`, at most 99,999
    /// after it (422 `invalid-range`).
    #[schema(minimum = 1)]
    pub to_seq: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Replayed {
    /// Deliveries queued.
    pub queued: u64,
}

const MAX_REPLAY_SPAN: i64 = 100_000;

/// Delivers a range of the tenant's events again, to one subscriber (only topics it
/// subscribes to). Each replayed delivery is a new job with the original event id.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/events/replay", tag = "jobs",
    params(("tenant" = String, Path)), request_body = Replay,
    responses((status = 202, body = Replayed), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn replay_events(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path(tenant): Path<String>,
    JsonBody(input): JsonBody<Replay>,
) -> Result<(StatusCode, Json<Replayed>), ApiError> {
    if input.from_seq < 1 || input.to_seq < input.from_seq || input.to_seq - input.from_seq >= MAX_REPLAY_SPAN {
        return Err(ApiError::unprocessable(
            "invalid-range",
            format!("need 1 <= from_seq <= to_seq, spanning at most {MAX_REPLAY_SPAN} events"),
        ));
    }
    let plugin = state
        .registry
        .get(&input.subscriber)
        .filter(|p| state.tenancy.is_enabled(&tenant, &p.record.id))
        .ok_or_else(|| {
            ApiError::not_found("plugin-not-found", format!("no plugin `{}` enabled for `{tenant}`", input.subscriber))
        })?;
    let topics: Vec<String> = plugin.record.manifest.subscriptions.iter().map(|s| s.topic.clone()).collect();
    if topics.is_empty() {
        return Err(ApiError::unprocessable(
            "not-a-subscriber",
            format!("plugin `{}` subscribes to no topics", input.subscriber),
        ));
    }
    let now = state.clock.now_ms();
    let queued = state
        .jobs
        .replay(
            &tenant,
            &input.subscriber,
            &topics,
            (input.from_seq, input.to_seq),
            plugin.record.manifest.retry.max_attempts,
            now,
        )
        .await?;
    state.jobs_wake.notify_one();
    admin
        .record(
            &state,
            "events.replay",
            Some(&input.subscriber),
            json!({ "from_seq": input.from_seq, "to_seq": input.to_seq, "queued": queued }),
        )
        .await;
    Ok((StatusCode::ACCEPTED, Json(Replayed { queued })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockAdvance {
    /// Milliseconds to move forward (at most 366 days at a time).
    #[schema(maximum = 31622400000_u64)]
    pub ms: u64,
}

#[derive(Serialize, ToSchema)]
pub struct ClockNow {
    pub now_ms: i64,
}

/// Moves the host clock forward, for plugins and schedules alike. Only on hosts started with
/// `allow-clock-control` (tests and demos); elsewhere this endpoint does not exist.
#[utoipa::path(post, path = "/v1/admin/clock/advance", tag = "jobs", request_body = ClockAdvance,
    responses((status = 200, body = ClockNow), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn advance_clock(
    State(state): State<AppState>,
    Extension(RequestId(rid)): Extension<RequestId>,
    AdminPrincipal(admin): AdminPrincipal,
    JsonBody(input): JsonBody<ClockAdvance>,
) -> Result<Json<ClockNow>, ApiError> {
    if !state.clock_control {
        return Err(ApiError::not_found("not-found", "no such endpoint"));
    }
    if input.ms > 366 * 24 * 3_600_000u64 {
        return Err(ApiError::unprocessable("invalid-field", "`ms` is at most 366 days"));
    }
    state.clock.advance(input.ms);
    state.jobs_wake.notify_one();
    let action = AdminAction { tenant: None, action: "clock.advance", plugin: None, detail: json!({ "ms": input.ms }) };
    state.audit.admin(&admin, &rid, action).await;
    Ok(Json(ClockNow { now_ms: state.clock.now_ms() }))
}
