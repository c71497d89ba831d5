//! The payment scanner: finds the confirmed USDT transfers to deposit addresses on TRON and
//! publishes one deposit observation per transfer (`Nats-Msg-Id = deposit:<txid>:<log_index>`);
//! the ledger credits each once. Every `GUARANTOR_SCAN_INTERVAL_SECS` (jittered) the block follower
//! reads the new solidified blocks. Several scanner processes may run: a lease in Postgres lets one
//! work at a time, the others stand by. A node outage only delays detection: nothing is credited
//! without solidified evidence, and the cursor waits where it was.

pub mod follower;
pub mod lease;
pub mod observe;

use std::time::{Duration, Instant};

use guarantor_messaging::JetStream;
use guarantor_tron::solid::SolidReader;
use rand::Rng;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use follower::{Cycle, Follower};

#[derive(Debug, Clone)]
pub struct ScannerSettings {
    pub interval: Duration,
}

/// Runs the scanner until `shutdown`, then gives up its lease.
pub async fn run(
    pool: PgPool,
    js: JetStream,
    reader: SolidReader,
    settings: ScannerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // A holder that stops renewing loses the lease after a few intervals.
    let ttl = (settings.interval * 3).max(Duration::from_secs(30));
    let follower = Follower::new(pool.clone(), js, reader, ttl);
    tracing::info!(interval = ?settings.interval, token = %follower.reader.token(), "scanner started");
    loop {
        let started = Instant::now();
        match follower.cycle().await {
            Ok(Some(cycle)) => {
                let seconds = started.elapsed().as_secs_f64();
                metrics::gauge!("guarantor_scanner_cycle_requests").set(cycle.requests as f64);
                metrics::histogram!("guarantor_scanner_cycle_seconds").record(seconds);
                metrics::gauge!("guarantor_scanner_lag_blocks").set(cycle.lag_blocks as f64);
                tracing::info!(
                    blocks = cycle.blocks,
                    transfers = cycle.transfers,
                    deposits = cycle.deposits,
                    expiries = cycle.expiries,
                    requests = cycle.requests,
                    lag_blocks = cycle.lag_blocks,
                    seconds,
                    "scanner cycle"
                );
            }
            Ok(None) => tracing::debug!("another scanner holds the lease"),
            Err(err) => tracing::error!(error = %err, "scanner cycle failed; the next one tries again"),
        }
        let pause = settings.interval.mul_f64(rand::thread_rng().gen_range(0.9..1.1));
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    if let Err(err) = follower.lease.release(&pool).await {
        tracing::warn!(error = %err, "could not release the scanner lease; it expires on its own");
    }
    Ok(())
}
