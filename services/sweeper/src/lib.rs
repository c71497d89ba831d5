//! The sweeper: moves USDT from deposit addresses to the main wallet, at least once and idempotently.
//! Sweeps are a later issue; until then it holds its place in `guarantor up` and stops cleanly.

use tokio_util::sync::CancellationToken;

pub async fn run(shutdown: CancellationToken) {
    tracing::info!("sweeper: no deposits to sweep yet (sweeper issue)");
    shutdown.cancelled().await;
}
