//! The ledger: the only writer of balances and deal states. It consumes commands from
//! `GUARANTOR_CMD`, applies each at most once in Postgres together with its inbox row and its outbox
//! events, replies to the waiting ingress, and relays the outbox to `GUARANTOR_EVT`.

pub mod consumer;
pub mod dlq;
pub mod engine;
pub mod error;
pub mod gauges;
pub mod outbox;
pub mod reconcile;
pub mod replay;

use std::sync::Arc;

use guarantor_messaging::Client;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use consumer::ConsumerSettings;

/// Runs the consumer and the outbox relay until `shutdown`, then drains both.
pub async fn run(
    pool: PgPool,
    nats: Client,
    settings: ConsumerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let js = guarantor_messaging::jetstream(&nats);
    let wake = Arc::new(Notify::new());
    let relay = tokio::spawn(outbox::relay(pool.clone(), js.clone(), wake.clone(), shutdown.clone()));
    let gauges = tokio::spawn(gauges::report(pool.clone(), js.clone(), shutdown.clone()));
    let consumed = consumer::consume(pool, nats, js, settings, wake, shutdown.clone()).await;
    shutdown.cancel();
    relay.await?;
    gauges.await?;
    consumed
}
