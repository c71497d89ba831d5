//! The outbox relay: takes a round of committed events out of the outbox and publishes them to
//! `GUARANTOR_EVT` in outbox order, with `Nats-Msg-Id` = event id, in one transaction that commits
//! only once JetStream has acknowledged them all (a failed publish rolls the round back into the
//! outbox). One relay publishes at a time (a Postgres advisory lock), which keeps each aggregate's
//! events in commit order even with several ledger replicas. A crash before the commit re-publishes
//! the same ids, which JetStream drops; so the round is committed without waiting for its WAL flush
//! (a deletion lost in a crash only re-publishes).
//! Under load a round starts at most every [`MIN_ROUND`], so that one round carries the events of
//! many ledger commits instead of one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use guarantor_messaging::JetStream;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Advisory lock key of the relay ("outbox" in ASCII).
const RELAY_LOCK: i64 = 0x6f7574626f78;
const BATCH_MAX: i64 = 512;
const IDLE_POLL: Duration = Duration::from_millis(200);
/// The shortest time between the starts of two rounds that were not full.
const MIN_ROUND: Duration = Duration::from_millis(20);

/// Publishes outbox rows until `shutdown`; `wake` is notified after each ledger commit so that events
/// leave without waiting for the next poll.
pub async fn relay(pool: PgPool, js: JetStream, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut failures: u32 = 0;
    while !shutdown.is_cancelled() {
        let started = tokio::time::Instant::now();
        match publish_pending(&pool, &js).await {
            Ok(published) => {
                failures = 0;
                if published < BATCH_MAX as usize {
                    tokio::select! {
                        () = wake.notified() => {},
                        () = tokio::time::sleep(IDLE_POLL) => {},
                        () = shutdown.cancelled() => {},
                    }
                    tokio::select! {
                        () = tokio::time::sleep_until(started + MIN_ROUND) => {},
                        () = shutdown.cancelled() => {},
                    }
                }
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                tracing::warn!(error = format!("{err:#}"), ?backoff, "outbox relay failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {},
                    () = shutdown.cancelled() => {},
                }
            }
        }
    }
}

/// One round: publishes up to `BATCH_MAX` pending events; returns how many.
pub async fn publish_pending(pool: &PgPool, js: &JetStream) -> anyhow::Result<usize> {
    let mut tx = pool.begin_with("BEGIN; SET LOCAL synchronous_commit = off").await?;
    let leader = sqlx::query_scalar!(r#"SELECT pg_try_advisory_xact_lock($1) AS "leader!""#, RELAY_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !leader {
        return Ok(0);
    }
    // Read and deleted in one statement, inside this transaction: if a publish fails, the rollback
    // puts them back. The payload is the text Postgres keeps: published as it is, never parsed here.
    let mut rows = sqlx::query!(
        r#"DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT $1)
           RETURNING id, event_id, subject, payload::text AS "payload!""#,
        BATCH_MAX
    )
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    rows.sort_unstable_by_key(|row| row.id);
    // Publish in order without waiting for each ack, then wait for all of them.
    let published = rows.len();
    let mut acks = Vec::with_capacity(published);
    for row in rows {
        let headers = guarantor_messaging::headers(&row.event_id.to_string(), None);
        acks.push(
            js.publish_with_headers(row.subject, headers, Bytes::from(row.payload))
                .await?,
        );
    }
    for ack in acks {
        ack.await?;
    }
    tx.commit().await?;
    Ok(published)
}
