//! The ledger consumer: the only writer of balances and deal states. Issue #3 gives it its commands;
//! until then it holds its place in `guarantor up` and stops cleanly on shutdown.

use tokio_util::sync::CancellationToken;

pub async fn run(shutdown: CancellationToken) {
    tracing::info!("ledger: no command handlers yet (issue #3)");
    shutdown.cancelled().await;
}
