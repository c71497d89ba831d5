//! The dead-letter queue: messages the ledger could not process, kept in `GUARANTOR_DLQ` with their
//! error. Operators list them and, once the cause is fixed, re-drive them to the subject they came
//! from, where the same idempotent handlers apply them at most once.

use std::time::{Duration, Instant};

use async_nats::jetstream::stream::Stream;
use async_nats::HeaderMap;
use bytes::Bytes;
use guarantor_domain::{CommandEnvelope, CommandId};
use guarantor_messaging::{JetStream, DLQ_STREAM};
use serde::Serialize;
use sqlx::PgPool;

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Its sequence in `GUARANTOR_DLQ` (what `dlq redrive --id` takes).
    pub sequence: u64,
    pub subject: String,
    pub original_subject: Option<String>,
    /// Its sequence in the stream it came from.
    pub original_sequence: Option<String>,
    /// How many times JetStream had delivered it when it was dead-lettered.
    pub deliveries: Option<u64>,
    /// The command's id, when the message is a command.
    pub command_id: Option<CommandId>,
    pub error: Option<String>,
    pub stored_at: String,
    pub size: usize,
}

/// What became of a re-driven message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redriven {
    /// The ledger gave it a verdict: `applied` or `refused`.
    Decided(String),
    /// It was dead-lettered again, as DLQ message `sequence`, with this error.
    FailedAgain { sequence: u64, error: String },
    /// No verdict within the wait (no ledger running?); it waits in the command stream.
    Undecided,
}

/// A header of a dead letter, as text.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|value| value.as_str().to_owned())
}

async fn stream(js: &JetStream) -> anyhow::Result<Stream> {
    Ok(js.get_stream(DLQ_STREAM).await?)
}

/// Every message in the DLQ, oldest first.
pub async fn list(js: &JetStream) -> anyhow::Result<Vec<DeadLetter>> {
    let mut stream = stream(js).await?;
    let state = stream.info().await?.state.clone();
    let mut letters = Vec::new();
    if state.messages == 0 {
        return Ok(letters);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        // Sequences of re-driven (deleted) messages are gaps.
        let Ok(message) = stream.get_raw_message(sequence).await else {
            continue;
        };
        letters.push(DeadLetter {
            sequence,
            subject: message.subject.to_string(),
            original_subject: header(&message.headers, "Guarantor-Original-Subject"),
            original_sequence: header(&message.headers, "Guarantor-Original-Sequence"),
            deliveries: header(&message.headers, "Guarantor-Deliveries").and_then(|value| value.parse().ok()),
            command_id: serde_json::from_slice::<CommandEnvelope>(&message.payload)
                .ok()
                .map(|envelope| envelope.id),
            error: header(&message.headers, "Guarantor-Error"),
            stored_at: message.time.to_string(),
            size: message.payload.len(),
        });
    }
    Ok(letters)
}

/// Publishes DLQ message `sequence` back to its original subject and removes it from the DLQ.
pub async fn redrive(js: &JetStream, sequence: u64) -> anyhow::Result<String> {
    let stream = stream(js).await?;
    let message = stream.get_raw_message(sequence).await?;
    let original = header(&message.headers, "Guarantor-Original-Subject")
        .ok_or_else(|| anyhow::anyhow!("DLQ message {sequence} does not name its original subject"))?;
    let mut headers = guarantor_messaging::headers(&redrive_id(sequence), None);
    for (name, values) in message.headers.iter() {
        let name: &str = name.as_ref();
        if let (Some(kept), Some(value)) = (name.strip_prefix("Guarantor-Original-"), values.first()) {
            if kept != "Nats-Msg-Id" && !["Subject", "Stream", "Sequence"].contains(&kept) {
                headers.insert(kept, value.as_str());
            }
        }
    }
    headers.insert(crate::consumer::REDRIVE_HEADER, "true");
    js.publish_with_headers(original.clone(), headers, Bytes::from(message.payload.to_vec()))
        .await?
        .await?;
    stream.delete_message(sequence).await?;
    Ok(original)
}

/// The message id a re-driven DLQ message is published under; a dead letter of it names it.
fn redrive_id(sequence: u64) -> String {
    format!("redrive:{DLQ_STREAM}:{sequence}")
}

/// Waits up to `wait` for the verdict of the re-driven `letter`: the command's stored outcome once it
/// is no longer `failed`, or a new dead letter of the re-driven message.
pub async fn follow(js: &JetStream, pool: &PgPool, letter: &DeadLetter, wait: Duration) -> anyhow::Result<Redriven> {
    let deadline = Instant::now() + wait;
    let republished = redrive_id(letter.sequence);
    loop {
        if let Some(id) = letter.command_id {
            let mut db = pool.acquire().await?;
            if let Some(outcome) = crate::engine::stored_outcome(&mut db, id).await? {
                if outcome != "failed" {
                    return Ok(Redriven::Decided(outcome));
                }
            }
        }
        let mut stream = stream(js).await?;
        let last = stream.info().await?.state.last_sequence;
        for sequence in (letter.sequence + 1..=last).rev() {
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            if header(&message.headers, "Guarantor-Original-Nats-Msg-Id").as_deref() == Some(republished.as_str()) {
                return Ok(Redriven::FailedAgain {
                    sequence,
                    error: header(&message.headers, "Guarantor-Error").unwrap_or_default(),
                });
            }
        }
        if Instant::now() >= deadline {
            return Ok(Redriven::Undecided);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
