//! The payment scanner: finds the confirmed USDT transfers to deposit addresses on TRON and
//! publishes one deposit observation per transfer (`Nats-Msg-Id = deposit:<txid>:<log_index>`);
//! the ledger credits each once. Every `GUARANTOR_SCAN_INTERVAL_SECS` (jittered) the block follower
//! reads the new solidified blocks; every `GUARANTOR_BALANCE_CHECK_INTERVAL_SECS` the balance check
//! compares each watched address's solidified balance with what was credited, and catches what the
//! follower missed. Several scanner processes may run: a lease per detector in Postgres lets one
//! work at a time, the others stand by. A node outage only delays detection: nothing is credited
//! without solidified evidence, and the cursor waits where it was.

pub mod balance;
pub mod follower;
pub mod lease;
pub mod observe;

use std::time::{Duration, Instant};

use guarantor_messaging::JetStream;
use guarantor_tron::solid::SolidReader;
use rand::Rng;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use balance::{BalanceCheck, Check};
pub use follower::{Cycle, Follower};

#[derive(Debug, Clone)]
pub struct ScannerSettings {
    /// Between block follower cycles (`GUARANTOR_SCAN_INTERVAL_SECS`).
    pub interval: Duration,
    /// Between balance checks (`GUARANTOR_BALANCE_CHECK_INTERVAL_SECS`).
    pub balance_interval: Duration,
    /// How long a done or expired payment stays watched by the balance check
    /// (`GUARANTOR_PAYMENT_GRACE_SECS`); the block follower watches every address, always.
    pub grace: Duration,
}

/// Runs the scanner (the block follower and the balance check) until `shutdown`, then gives up its
/// leases.
pub async fn run(
    pool: PgPool,
    js: JetStream,
    reader: SolidReader,
    settings: ScannerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // A holder that stops renewing loses a lease after a few intervals.
    let lease_ttl = |interval: Duration| (interval * 3).max(Duration::from_secs(30));
    let follower = Follower::new(pool.clone(), js.clone(), reader.clone(), lease_ttl(settings.interval));
    let check = BalanceCheck::new(
        pool.clone(),
        js,
        reader.counted_apart(),
        lease_ttl(settings.balance_interval),
        settings.grace,
    );
    tracing::info!(
        interval = ?settings.interval,
        balance_interval = ?settings.balance_interval,
        token = %follower.reader.token(),
        "scanner started"
    );
    if !token_checked(&follower.reader, &shutdown).await? {
        return Ok(());
    }
    let follow = every(settings.interval, &shutdown, || async {
        let started = Instant::now();
        match follower.cycle().await {
            Ok(Some(cycle)) => {
                let seconds = started.elapsed().as_secs_f64();
                metrics::gauge!("guarantor_scanner_cycle_requests", "detector" => "block_follower")
                    .set(cycle.requests as f64);
                metrics::histogram!("guarantor_scanner_cycle_seconds", "detector" => "block_follower").record(seconds);
                metrics::gauge!("guarantor_scanner_lag_blocks").set(cycle.lag_blocks as f64);
                tracing::info!(
                    blocks = cycle.blocks,
                    transfers = cycle.transfers,
                    deposits = cycle.deposits,
                    expiries = cycle.expiries,
                    requests = cycle.requests,
                    lag_blocks = cycle.lag_blocks,
                    seconds,
                    "block follower cycle"
                );
            }
            Ok(None) => tracing::debug!("another scanner holds the block follower's lease"),
            Err(err) => tracing::error!(error = %err, "block follower cycle failed; the next one tries again"),
        }
    });
    let balances = every(settings.balance_interval, &shutdown, || async {
        let started = Instant::now();
        match check.cycle().await {
            Ok(Some(done)) => {
                let seconds = started.elapsed().as_secs_f64();
                metrics::gauge!("guarantor_scanner_cycle_requests", "detector" => "balance_check")
                    .set(done.requests as f64);
                metrics::histogram!("guarantor_scanner_cycle_seconds", "detector" => "balance_check").record(seconds);
                tracing::info!(
                    addresses = done.addresses,
                    unaccounted = done.unaccounted,
                    deposits = done.deposits,
                    requests = done.requests,
                    seconds,
                    "balance check"
                );
            }
            Ok(None) => tracing::debug!("another scanner holds the balance check's lease"),
            Err(err) => tracing::error!(error = %err, "balance check failed; the next one tries again"),
        }
    });
    tokio::join!(follow, balances);
    for lease in [&follower.lease, &check.lease] {
        if let Err(err) = lease.release(&pool).await {
            tracing::warn!(error = %err, lease = lease.name, "could not release a scanner lease; it expires on its own");
        }
    }
    Ok(())
}

/// Checks, before anything is credited, that the configured token has the currency's decimals (an
/// amount in another scale would be credited wrongly); waits for the node while it is unreachable.
/// False when shutdown came first.
async fn token_checked(reader: &SolidReader, shutdown: &CancellationToken) -> anyhow::Result<bool> {
    let expected = u64::from(guarantor_domain::Currency::Usdt.decimals());
    loop {
        let answer = tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            answer = reader.token_decimals() => answer,
        };
        match answer {
            Ok(decimals) if decimals == expected => return Ok(true),
            Ok(decimals) => anyhow::bail!(
                "the token {} has {decimals} decimals, not USDT's {expected}: check GUARANTOR_TRON_USDT_CONTRACT",
                reader.token()
            ),
            Err(err) if err.is_transient() => {
                tracing::warn!(error = %err, "cannot read the token's decimals yet; retrying");
            }
            Err(err) => anyhow::bail!(
                "cannot read the decimals of the token {}: {err}: check GUARANTOR_TRON_USDT_CONTRACT",
                reader.token()
            ),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Runs `work` now and then every `interval` (jittered by ±10 %) until `shutdown`.
async fn every<F, Fut>(interval: Duration, shutdown: &CancellationToken, work: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = work() => {}
        }
        let pause = interval.mul_f64(rand::thread_rng().gen_range(0.9..1.1));
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
