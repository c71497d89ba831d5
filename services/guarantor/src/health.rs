//! Each service's own operations endpoints on `GUARANTOR_OPS_ADDR`: `/healthz` (the process is up),
//! `/readyz` (its own dependencies answer: Postgres and NATS, and the TRON node for the parts that
//! read the chain) and `/metrics` (Prometheus), so a ledger, scanner or sweeper running alone can be
//! watched like the ingress.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use guarantor_tron::client::NodeClient;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What a part's readiness depends on.
#[derive(Clone, Debug)]
pub struct Dependencies {
    pub pool: guarantor_store::PgPool,
    pub nats: guarantor_messaging::Client,
    /// The node, for the parts that read the chain (a client that does not retry).
    pub node: Option<NodeClient>,
}

impl Dependencies {
    /// The dependencies that do not answer.
    async fn down(&self) -> Vec<&'static str> {
        let node = async {
            match &self.node {
                Some(node) => matches!(
                    tokio::time::timeout(CHECK_TIMEOUT, node.now_block(false)).await,
                    Ok(Ok(_))
                ),
                None => true,
            }
        };
        let (postgres, nats, node) = tokio::join!(
            guarantor_store::ping(&self.pool),
            tokio::time::timeout(CHECK_TIMEOUT, self.nats.flush()),
            node,
        );
        [
            ("postgres", postgres),
            ("nats", matches!(nats, Ok(Ok(())))),
            ("tron_node", node),
        ]
        .into_iter()
        .filter(|(_, up)| !up)
        .map(|(name, _)| name)
        .collect()
    }
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(dependencies): State<Dependencies>) -> impl IntoResponse {
    let down = dependencies.down().await;
    if down.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        let message = format!("not ready: {} unreachable", down.join(", "));
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(guarantor_domain::error_body(
                "unavailable",
                &message,
                json!({ "down": down }),
            )),
        )
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        guarantor_ingress::metrics_handle().render(),
    )
}

/// Serves the operations endpoints on `addr` until `shutdown`.
pub async fn serve(addr: SocketAddr, dependencies: Dependencies, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on GUARANTOR_OPS_ADDR {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "operations endpoints listening");
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(dependencies);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
