//! The dead-letter queue: messages the ledger could not process, kept in `GUARANTOR_DLQ` with their
//! error. Operators list them and, once the cause is fixed, re-drive them to the subject they came
//! from, where the same idempotent handlers apply them at most once.

use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use guarantor_messaging::{JetStream, DLQ_STREAM};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub sequence: u64,
    pub subject: String,
    pub original_subject: Option<String>,
    pub original_sequence: Option<String>,
    pub error: Option<String>,
    pub stored_at: String,
    pub size: usize,
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
        let header = |name: &str| message.headers.get(name).map(|value| value.as_str().to_owned());
        letters.push(DeadLetter {
            sequence,
            subject: message.subject.to_string(),
            original_subject: header("Guarantor-Original-Subject"),
            original_sequence: header("Guarantor-Original-Sequence"),
            error: header("Guarantor-Error"),
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
    let original = message
        .headers
        .get("Guarantor-Original-Subject")
        .map(|value| value.as_str().to_owned())
        .ok_or_else(|| anyhow::anyhow!("DLQ message {sequence} does not name its original subject"))?;
    let mut headers = guarantor_messaging::headers(&format!("redrive:{DLQ_STREAM}:{sequence}"), None);
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
