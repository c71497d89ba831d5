//! The payment scanner: reads watched deposit addresses from solidified TRON state and publishes one
//! deposit observation per transfer. Payments are a later issue; until then it holds its place in
//! `guarantor up` and stops cleanly on shutdown.

use tokio_util::sync::CancellationToken;

pub async fn run(shutdown: CancellationToken) {
    tracing::info!("scanner: no payments to watch yet (payments issue)");
    shutdown.cancelled().await;
}
