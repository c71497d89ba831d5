//! Gauges of what waits: the ledger consumer's backlog in JetStream, the outbox rows not yet
//! published, and the dead letters kept. Read every few seconds from the servers themselves, so every
//! ledger replica reports the same figures.

use std::time::Duration;

use guarantor_messaging::{JetStream, COMMAND_STREAM, DLQ_STREAM};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::consumer::CONSUMER;

const EVERY: Duration = Duration::from_secs(5);

/// The figures of one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Commands in the stream the consumer has not delivered yet.
    pub consumer_pending: u64,
    /// Commands delivered and not acknowledged yet (in a batch, or held by a crashed replica).
    pub consumer_ack_pending: u64,
    /// Committed events the relay has not published yet.
    pub outbox_backlog: i64,
    /// Messages in `GUARANTOR_DLQ`.
    pub dlq_messages: u64,
}

/// Reads the figures once.
pub async fn read(pool: &PgPool, js: &JetStream) -> anyhow::Result<Backlog> {
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        js.get_consumer_from_stream(CONSUMER, COMMAND_STREAM).await?;
    let consumer = consumer.info().await?.clone();
    let mut dlq = js.get_stream(DLQ_STREAM).await?;
    let dlq_messages = dlq.info().await?.state.messages;
    let outbox_backlog = sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM outbox"#)
        .fetch_one(pool)
        .await?;
    Ok(Backlog {
        consumer_pending: consumer.num_pending,
        consumer_ack_pending: u64::try_from(consumer.num_ack_pending)?,
        outbox_backlog,
        dlq_messages,
    })
}

/// Reports `guarantor_consumer_pending{consumer}`, `guarantor_consumer_ack_pending{consumer}`,
/// `guarantor_outbox_backlog` and `guarantor_dlq_messages` until `shutdown`.
pub async fn report(pool: PgPool, js: JetStream, shutdown: CancellationToken) {
    // The first reading waits a period, so the consumer exists by then.
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {},
            () = shutdown.cancelled() => return,
        }
        match read(&pool, &js).await {
            Ok(backlog) => {
                metrics::gauge!("guarantor_consumer_pending", "consumer" => CONSUMER)
                    .set(backlog.consumer_pending as f64);
                metrics::gauge!("guarantor_consumer_ack_pending", "consumer" => CONSUMER)
                    .set(backlog.consumer_ack_pending as f64);
                metrics::gauge!("guarantor_outbox_backlog").set(backlog.outbox_backlog as f64);
                metrics::gauge!("guarantor_dlq_messages").set(backlog.dlq_messages as f64);
            }
            Err(err) => tracing::warn!(error = format!("{err:#}"), "cannot read the ledger's backlog gauges"),
        }
    }
}
