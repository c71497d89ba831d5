//! NATS JetStream access shared by the services. Streams are defined in `nats/streams.json` and applied
//! idempotently; every publish carries `Nats-Msg-Id` (so JetStream drops re-publishes) and, when there is
//! one, the request id of the HTTP request that caused it.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use guarantor_config::{ExposeSecret, SecretString};
use guarantor_telemetry::REQUEST_ID_HEADER;

pub use async_nats::jetstream::Context as JetStream;
pub use async_nats::Client;

/// Stream names, as defined in `nats/streams.json`.
pub const COMMAND_STREAM: &str = "GUARANTOR_CMD";
pub const EVENT_STREAM: &str = "GUARANTOR_EVT";
pub const DLQ_STREAM: &str = "GUARANTOR_DLQ";

const STREAM_DEFINITIONS: &str = include_str!("../../../nats/streams.json");

/// What failed, so callers can tell a down server from a refused definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagingErrorKind {
    Connect,
    Definition,
    ApplyStream,
    Publish,
}

#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct MessagingError {
    pub kind: MessagingErrorKind,
    pub message: String,
}

impl MessagingError {
    fn new(kind: MessagingErrorKind, err: impl std::fmt::Display) -> Self {
        Self {
            kind,
            message: err.to_string(),
        }
    }
}

/// Connects to NATS, naming the connection after the service so `nats server report connections`
/// shows who is who.
pub async fn connect(url: &SecretString, service: &str) -> Result<Client, MessagingError> {
    async_nats::ConnectOptions::new()
        .name(format!("guarantor-{service}"))
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(url.expose_secret())
        .await
        .map_err(|err| MessagingError::new(MessagingErrorKind::Connect, err))
}

/// Connects without retrying the first connection, for checks that must answer quickly.
pub async fn connect_once(url: &SecretString, service: &str) -> Result<Client, MessagingError> {
    async_nats::ConnectOptions::new()
        .name(format!("guarantor-{service}"))
        .connection_timeout(Duration::from_secs(3))
        .connect(url.expose_secret())
        .await
        .map_err(|err| MessagingError::new(MessagingErrorKind::Connect, err))
}

pub fn jetstream(client: &Client) -> JetStream {
    jetstream::new(client.clone())
}

/// One stream of `nats/streams.json`; what it leaves out is the same for every stream.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamDefinition {
    name: String,
    description: String,
    subjects: Vec<String>,
    max_age_secs: u64,
    duplicate_window_secs: u64,
    num_replicas: usize,
}

impl From<StreamDefinition> for stream::Config {
    fn from(definition: StreamDefinition) -> Self {
        stream::Config {
            name: definition.name,
            description: Some(definition.description),
            subjects: definition.subjects,
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            max_age: Duration::from_secs(definition.max_age_secs),
            duplicate_window: Duration::from_secs(definition.duplicate_window_secs),
            num_replicas: definition.num_replicas,
            ..Default::default()
        }
    }
}

/// The stream definitions shipped in `nats/streams.json`.
pub fn stream_definitions() -> Result<Vec<stream::Config>, MessagingError> {
    let definitions: Vec<StreamDefinition> = serde_json::from_str(STREAM_DEFINITIONS)
        .map_err(|err| MessagingError::new(MessagingErrorKind::Definition, err))?;
    Ok(definitions.into_iter().map(stream::Config::from).collect())
}

/// Creates each stream that is missing and updates each existing one to its definition.
/// Returns the names of the streams applied.
pub async fn apply_streams(js: &JetStream) -> Result<Vec<String>, MessagingError> {
    let mut applied = Vec::new();
    for definition in stream_definitions()? {
        let exists = js.get_stream(&definition.name).await.is_ok();
        if exists {
            js.update_stream(&definition).await
        } else {
            js.create_stream(definition.clone())
                .await
                .map(|stream| stream.cached_info().clone())
        }
        .map_err(|err| MessagingError::new(MessagingErrorKind::ApplyStream, format!("{}: {err}", definition.name)))?;
        applied.push(definition.name);
    }
    Ok(applied)
}

/// Headers every publish carries: the message id JetStream deduplicates on, and the request id.
pub fn headers(msg_id: &str, request_id: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    if let Some(request_id) = request_id {
        headers.insert(REQUEST_ID_HEADER, request_id);
    }
    headers
}

/// Publishes to a stream and waits for JetStream to store it. The returned ack says whether the
/// message was a duplicate of one already stored under the same id.
pub async fn publish(
    js: &JetStream,
    subject: String,
    msg_id: &str,
    request_id: Option<&str>,
    payload: Bytes,
) -> Result<jetstream::publish::PublishAck, MessagingError> {
    let pending: PublishAckFuture = js
        .publish_with_headers(subject, headers(msg_id, request_id), payload)
        .await
        .map_err(|err| MessagingError::new(MessagingErrorKind::Publish, err))?;
    pending
        .await
        .map_err(|err| MessagingError::new(MessagingErrorKind::Publish, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_stream_definitions_parse_and_cover_every_stream() {
        let names: Vec<String> = stream_definitions().unwrap().into_iter().map(|d| d.name).collect();
        assert_eq!(names, [COMMAND_STREAM, EVENT_STREAM, DLQ_STREAM]);
    }
}
