//! Replay: re-drives stored commands through the same handler the consumer uses. Every command
//! applies at most once, so replaying a whole stream changes nothing; replay exists to recover
//! commands whose effect was lost (e.g. a restored database) and to prove idempotency.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use futures::StreamExt;
use guarantor_domain::{CommandEnvelope, Verdict};
use guarantor_messaging::{JetStream, COMMAND_STREAM};
use sqlx::PgPool;

use crate::engine::{self, Incoming};

/// Where a replay starts.
#[derive(Debug, Clone, Copy)]
pub enum ReplayStart {
    Sequence(u64),
    Time(chrono::DateTime<chrono::Utc>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Messages read from the stream.
    pub read: u64,
    /// Commands without a verdict before the replay, applied by it (or, in a dry run, that would be
    /// decided by it: counted here).
    pub applied: u64,
    /// Commands without a verdict before the replay, refused by it.
    pub refused: u64,
    /// Commands that had a verdict already: the handler answered it again and changed nothing.
    pub already_decided: u64,
    /// Commands the handler failed on (each with its stream sequence and error); the replay goes on.
    pub failed: u64,
    pub errors: Vec<(u64, String)>,
    /// Messages that were not commands (left alone).
    pub skipped: u64,
    /// The last stream sequence read.
    pub last_sequence: u64,
}

/// Replays `GUARANTOR_CMD` from `start` up to `to_sequence` (inclusive; the stream's end when none),
/// optionally only subjects matching `subject`; a `dry_run` only looks up which commands have a
/// verdict.
pub async fn replay(
    pool: &PgPool,
    js: &JetStream,
    start: ReplayStart,
    to_sequence: Option<u64>,
    subject: Option<String>,
    dry_run: bool,
) -> anyhow::Result<ReplayReport> {
    let mut stream = js.get_stream(COMMAND_STREAM).await?;
    let last = stream.info().await?.state.last_sequence;
    let end = to_sequence.map_or(last, |to| to.min(last));
    let mut report = ReplayReport::default();
    if last == 0 {
        return Ok(report);
    }
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: match start {
                ReplayStart::Sequence(sequence) => DeliverPolicy::ByStartSequence {
                    start_sequence: sequence.max(1),
                },
                ReplayStart::Time(time) => DeliverPolicy::ByStartTime {
                    start_time: time::OffsetDateTime::from_unix_timestamp(time.timestamp())?,
                },
            },
            ack_policy: AckPolicy::None,
            filter_subject: subject.unwrap_or_else(|| "guarantor.cmd.>".to_owned()),
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    while let Some(message) = tokio::time::timeout(Duration::from_secs(2), messages.next())
        .await
        .ok()
        .flatten()
    {
        let message = message?;
        let info = message
            .info()
            .map_err(|err| anyhow::anyhow!("malformed JetStream message: {err}"))?;
        let sequence = info.stream_sequence;
        let pending = info.pending;
        if sequence > end {
            break;
        }
        report.read += 1;
        report.last_sequence = sequence;
        match serde_json::from_slice::<CommandEnvelope>(&message.payload) {
            Ok(envelope) => {
                let mut db = pool.acquire().await?;
                let decided = engine::stored_outcome(&mut db, envelope.id).await?.is_some();
                if decided {
                    report.already_decided += 1;
                } else if dry_run {
                    report.applied += 1;
                }
                if !dry_run {
                    let incoming = Incoming {
                        envelope,
                        redrive: false,
                    };
                    match engine::apply_batch(&mut db, &[incoming]).await {
                        Ok(replies) if !decided => {
                            for reply in replies {
                                match reply.verdict {
                                    Verdict::Applied { .. } => report.applied += 1,
                                    Verdict::Refused { .. } => report.refused += 1,
                                    Verdict::Failed { .. } => report.failed += 1,
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(err) => {
                            report.failed += 1;
                            report.errors.push((sequence, err.to_string()));
                        }
                    }
                }
            }
            Err(_) => report.skipped += 1,
        }
        if sequence >= end || pending == 0 {
            break;
        }
    }
    Ok(report)
}
