//! The TRON devnet: a java-tron-compatible node for development and tests. Issue #4 builds the chain;
//! until then it holds its place in `guarantor up` and stops cleanly on shutdown.

use tokio_util::sync::CancellationToken;

pub async fn run(shutdown: CancellationToken) {
    tracing::info!("devnet: chain not built yet (issue #4)");
    shutdown.cancelled().await;
}
