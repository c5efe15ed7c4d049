//! Operations endpoints for load balancers and monitoring.

use super::AppState;
use super::problem::{ApiError, Problem};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers, so requests can be served.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Problem, content_type = "application/problem+json")))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    // Bounded: a database that is away makes new connections wait for it (the pool's
    // acquire timeout); readiness says so sooner.
    let ping = tokio::time::timeout(std::time::Duration::from_secs(1), state.database.ping()).await;
    let failure = match ping {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer within 1 s".to_owned()),
    };
    if let Some(reason) = failure {
        return Err(ApiError::unavailable("database-unavailable", format!("the database does not answer: {reason}")));
    }
    Ok(Json(Health { status: "ready" }))
}

/// Prometheus metrics: per-plugin request counts by outcome, latency histograms, traps,
/// timeouts and memory-cap hits; admission (instances and memory in use, refusals); storage
/// per tenant and plugin, and quota refusals.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.set_admission(state.runtime.admission().snapshot());
    match state.store.all_usage().await {
        Ok(usage) => state.metrics.set_storage(&usage),
        Err(e) => tracing::warn!(error = %e, "storage usage unavailable for metrics"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}
