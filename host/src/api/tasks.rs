//! Tasks as admins see them: long work plugins do in chunks (see `keel:platform/tasks`),
//! with progress, and cancellation between chunks. Per tenant; needs a principal that
//! administers the tenant.

use super::AppState;
use super::auth::TenantAdmin;
use super::jobs::{decode_cursor, encode_cursor, limit_of};
use super::problem::{ApiError, Problem};
use crate::jobs::TaskStatus;
use crate::jobs::store::TaskRecord;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_tasks)).routes(routes!(show_task)).routes(routes!(cancel_task))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// Only this plugin's tasks.
    plugin: Option<String>,
    /// running, done, cancelled or failed.
    #[param(pattern = "^(running|done|cancelled|failed)$")]
    status: Option<String>,
    /// 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` of the previous page (422 `invalid-cursor` for one this API did not give).
    cursor: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct TaskPage {
    /// Newest first.
    pub items: Vec<TaskRecord>,
    /// Pass as `cursor` for the next page; absent at the end.
    pub next: Option<String>,
}

/// A tenant's tasks, newest first, with their progress.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/tasks", tag = "jobs",
    params(("tenant" = String, Path), TaskQuery),
    responses((status = 200, body = TaskPage), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn list_tasks(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path(tenant): Path<String>,
    Query(q): Query<TaskQuery>,
) -> Result<Json<TaskPage>, ApiError> {
    let status = match &q.status {
        None => None,
        Some(name) => Some(TaskStatus::parse(name).ok_or_else(|| {
            ApiError::unprocessable("invalid-status", format!("`status` must be one of {}", TaskStatus::names()))
        })?),
    };
    let limit = limit_of(q.limit)?;
    let before = decode_cursor(q.cursor.as_deref())?;
    let items = state.jobs.tasks(&tenant, q.plugin.as_deref(), status, before, limit).await?;
    let next =
        (items.len() == limit as usize).then(|| items.last().map(|t| encode_cursor(t.created_at, &t.id))).flatten();
    Ok(Json(TaskPage { items, next }))
}

/// One task with its progress.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/tasks/{id}", tag = "jobs",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = TaskRecord), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn show_task(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<TaskRecord>, ApiError> {
    Ok(Json(state.jobs.task(&tenant, &id).await?))
}

/// Cancels a running or failed task: no further chunk runs (one running now still commits).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/tasks/{id}/cancel", tag = "jobs",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = TaskRecord), (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
async fn cancel_task(
    State(state): State<AppState>,
    admin: TenantAdmin,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<TaskRecord>, ApiError> {
    let task = state.jobs.cancel_task(&tenant, &id, state.clock.now_ms()).await?;
    admin.record(&state, "task.cancel", Some(&task.plugin), json!({ "task": id })).await;
    Ok(Json(task))
}
