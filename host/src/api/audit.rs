//! Reading the audit log. There are no routes to change it.

use super::AppState;
use super::auth::AdminPrincipal;
use super::auth::TenantAdmin;
use super::problem::ApiError;
use crate::audit::AuditEntry;
use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(tenant_audit)).routes(routes!(platform_audit))
}

/// Which way a page of the log runs.
#[derive(Deserialize, ToSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuditOrder {
    /// From the first entry on, paged with `after`.
    #[default]
    Oldest,
    /// From the latest entry back, paged with `before`.
    Newest,
}

/// A page of one tenant's log.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// `oldest` first (the default) or `newest` first.
    #[param(inline)]
    order: Option<AuditOrder>,
    /// Oldest first: only entries after this id (the `next_after` of the previous page).
    #[serde(default)]
    after: i64,
    /// Newest first: only entries before this id (the `next_before` of the previous page).
    before: Option<i64>,
    /// 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only this action, e.g. `document.put`.
    action: Option<String>,
}

/// A page of the platform's log, or of one tenant's.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PlatformAuditQuery {
    /// `oldest` first (the default) or `newest` first.
    #[param(inline)]
    order: Option<AuditOrder>,
    /// Oldest first: only entries after this id (the `next_after` of the previous page).
    #[serde(default)]
    after: i64,
    /// Newest first: only entries before this id (the `next_before` of the previous page).
    before: Option<i64>,
    /// 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only this action, e.g. `document.put`.
    action: Option<String>,
    /// Only this tenant's entries.
    tenant: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Oldest first: pass as `after` for the next page; absent at the end.
    pub next_after: Option<i64>,
    /// Newest first: pass as `before` for the next (older) page; absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

async fn page(state: &AppState, tenant: Option<&str>, q: &AuditQuery) -> Result<Json<AuditPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::unprocessable("invalid-limit", "`limit` must be 1 to 1000"));
    }
    let order = q.order.unwrap_or_default();
    match order {
        AuditOrder::Oldest if q.before.is_some() => {
            return Err(ApiError::unprocessable(
                "invalid-cursor",
                "`before` pages the log newest first: add `order=newest`",
            ));
        }
        AuditOrder::Newest if q.after != 0 => {
            return Err(ApiError::unprocessable(
                "invalid-cursor",
                "`after` pages the log oldest first; newest first takes `before`",
            ));
        }
        _ => {}
    }
    let action = q.action.as_deref();
    let items = match order {
        AuditOrder::Oldest => state.audit.query(tenant, action, q.after, limit).await,
        AuditOrder::Newest => state.audit.query_newest(tenant, action, q.before, limit).await,
    }
    .map_err(|e| {
        tracing::error!(error = %e, "audit query failed");
        ApiError::internal("audit query failed")
    })?;
    let last = (items.len() == limit as usize).then(|| items.last().map(|e| e.id)).flatten();
    let (next_after, next_before) = match order {
        AuditOrder::Oldest => (last, None),
        AuditOrder::Newest => (None, last),
    };
    Ok(Json(AuditPage { items, next_after, next_before }))
}

/// This tenant's audit log: admin actions and every plugin storage write, oldest first
/// (or newest first with `order=newest`).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/audit", tag = "tenants",
    params(("tenant" = String, Path), AuditQuery), responses((status = 200, body = AuditPage)), security(("bearer" = [])))]
async fn tenant_audit(
    State(state): State<AppState>,
    _admin: TenantAdmin,
    Path(tenant): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    page(&state, Some(&tenant), &q).await
}

/// The whole audit log, or one tenant's with `tenant=`.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "tenants",
    params(PlatformAuditQuery), responses((status = 200, body = AuditPage)), security(("bearer" = [])))]
async fn platform_audit(
    State(state): State<AppState>,
    _admin: AdminPrincipal,
    Query(q): Query<PlatformAuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let PlatformAuditQuery { order, after, before, limit, action, tenant } = q;
    page(&state, tenant.as_deref(), &AuditQuery { order, after, before, limit, action }).await
}
