//! Liveness, readiness and metrics for orchestrators and Prometheus.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use crate::error::{ApiError, ErrorBody};
use crate::AppState;

const READINESS_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Postgres and NATS are reachable.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody))
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let (postgres, nats) = tokio::join!(
        guarantor_store::ping(&state.pool),
        // A round trip, not the client's cached state: a half-open connection is not ready.
        tokio::time::timeout(READINESS_TIMEOUT, state.nats.flush()),
    );
    let nats = matches!(nats, Ok(Ok(())));
    if postgres && nats {
        Ok(Json(Health { status: "ready" }))
    } else {
        let down: Vec<&str> = [("postgres", postgres), ("nats", nats)]
            .into_iter()
            .filter(|(_, up)| !up)
            .map(|(name, _)| name)
            .collect();
        Err(
            ApiError::unavailable(format!("not ready: {} unreachable", down.join(" and ")))
                .with_details(serde_json::json!({ "down": down })),
        )
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
