//! NATS JetStream access shared by the services. Streams are defined in `nats/streams.json` and applied
//! idempotently; every publish carries `Nats-Msg-Id` (so JetStream drops re-publishes) and, when there is
//! one, the request id of the HTTP request that caused it.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use async_nats::{HeaderMap, ServerAddr};
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

/// The servers of `GUARANTOR_NATS_URL`: one URL, or several comma-separated (the members of a
/// cluster; the client also learns the others from the one it reaches). Never echoes the value, which
/// may carry credentials.
pub fn server_addrs(url: &SecretString) -> Result<Vec<ServerAddr>, MessagingError> {
    let servers: Vec<ServerAddr> = url
        .expose_secret()
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .enumerate()
        .map(|(index, part)| {
            part.parse::<ServerAddr>().map_err(|_| {
                MessagingError::new(
                    MessagingErrorKind::Connect,
                    format!("GUARANTOR_NATS_URL: server {} is not a NATS URL", index + 1),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    if servers.is_empty() {
        return Err(MessagingError::new(
            MessagingErrorKind::Connect,
            "GUARANTOR_NATS_URL names no server",
        ));
    }
    Ok(servers)
}

/// Connects to NATS, naming the connection after the service so `nats server report connections`
/// shows who is who. Reconnects for ever, to any server of the cluster.
pub async fn connect(url: &SecretString, service: &str) -> Result<Client, MessagingError> {
    async_nats::ConnectOptions::new()
        .name(format!("guarantor-{service}"))
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(server_addrs(url)?)
        .await
        .map_err(|err| MessagingError::new(MessagingErrorKind::Connect, err))
}

/// Connects without retrying the first connection, for checks that must answer quickly; once
/// connected it reconnects like `connect`.
pub async fn connect_once(url: &SecretString, service: &str) -> Result<Client, MessagingError> {
    async_nats::ConnectOptions::new()
        .name(format!("guarantor-{service}"))
        .connection_timeout(Duration::from_secs(3))
        .max_reconnects(None)
        .connect(server_addrs(url)?)
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
}

impl StreamDefinition {
    fn config(self, replicas: usize) -> stream::Config {
        stream::Config {
            name: self.name,
            description: Some(self.description),
            subjects: self.subjects,
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::Old,
            max_age: Duration::from_secs(self.max_age_secs),
            duplicate_window: Duration::from_secs(self.duplicate_window_secs),
            num_replicas: replicas,
            ..Default::default()
        }
    }
}

/// The stream definitions shipped in `nats/streams.json`, each with `replicas` copies
/// (`GUARANTOR_STREAM_REPLICAS`: 1 on a single server, 3 on a 3-node cluster).
pub fn stream_definitions(replicas: usize) -> Result<Vec<stream::Config>, MessagingError> {
    let definitions: Vec<StreamDefinition> = serde_json::from_str(STREAM_DEFINITIONS)
        .map_err(|err| MessagingError::new(MessagingErrorKind::Definition, err))?;
    Ok(definitions
        .into_iter()
        .map(|definition| definition.config(replicas))
        .collect())
}

/// Creates each stream that is missing and updates each existing one to its definition (its
/// replica count included: JetStream moves a stream from 1 to 3 replicas in place).
/// Returns the names of the streams applied.
pub async fn apply_streams(js: &JetStream, replicas: usize) -> Result<Vec<String>, MessagingError> {
    let mut applied = Vec::new();
    for definition in stream_definitions(replicas)? {
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
        let names: Vec<String> = stream_definitions(1).unwrap().into_iter().map(|d| d.name).collect();
        assert_eq!(names, [COMMAND_STREAM, EVENT_STREAM, DLQ_STREAM]);
    }

    #[test]
    fn several_comma_separated_servers_are_one_cluster() {
        let servers = server_addrs(&"nats://a:4222, nats://b:4223,nats://c:4224".to_owned().into()).unwrap();
        let hosts: Vec<(String, u16)> = servers
            .iter()
            .map(|server| (server.host().to_owned(), server.port()))
            .collect();
        assert_eq!(
            hosts,
            [("a".to_owned(), 4222), ("b".to_owned(), 4223), ("c".to_owned(), 4224)]
        );
    }

    #[test]
    fn a_bad_server_is_named_by_position_without_echoing_the_value() {
        let err = server_addrs(&"nats://user:hunter2@a:4222,http://[oops".to_owned().into()).unwrap_err();
        assert_eq!(err.message, "GUARANTOR_NATS_URL: server 2 is not a NATS URL");
        assert!(server_addrs(&" , ".to_owned().into()).is_err());
    }

    #[test]
    fn every_stream_gets_the_configured_replicas() {
        for replicas in [1, 3] {
            let streams = stream_definitions(replicas).unwrap();
            assert_eq!(streams.len(), 3);
            assert!(streams.iter().all(|stream| stream.num_replicas == replicas));
        }
    }
}
