//! The ledger's durable pull consumer on `GUARANTOR_CMD`. Whatever messages are ready (up to a batch
//! maximum) are applied in one Postgres transaction, each inside its own savepoint; after the commit
//! the replies go out and the messages are acked. A crash before the ack redelivers messages whose
//! effect is already committed: the inbox recognises them and they change nothing. A message that
//! keeps failing goes to `GUARANTOR_DLQ` after `max_deliver` attempts.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use futures::StreamExt;
use guarantor_domain::command::REPLY_TO_HEADER;
use guarantor_domain::{CommandEnvelope, CommandReply};
use guarantor_messaging::{Client, JetStream, COMMAND_STREAM};
use sqlx::{Acquire, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::apply::apply;

/// The durable consumer every ledger replica shares.
pub const CONSUMER: &str = "ledger";

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Most messages applied in one Postgres transaction.
    pub batch_max: usize,
    /// How long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Deliveries before a failing message goes to the DLQ.
    pub max_deliver: i64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            batch_max: 256,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
        }
    }
}

/// Creates the durable consumer if it does not exist yet.
pub async fn durable(js: &JetStream, settings: &ConsumerSettings) -> anyhow::Result<PullConsumer> {
    let stream = js.get_stream(COMMAND_STREAM).await?;
    let consumer = stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.to_owned()),
                description: Some("the ledger: applies commands and deposit observations".to_owned()),
                filter_subject: "guarantor.cmd.>".to_owned(),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                max_deliver: settings.max_deliver,
                max_ack_pending: 8192,
                ..Default::default()
            },
        )
        .await?;
    Ok(consumer)
}

/// Consumes until `shutdown`, finishing the batch in hand before returning.
pub async fn consume(
    pool: PgPool,
    nats: Client,
    js: JetStream,
    settings: ConsumerSettings,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let consumer = durable(&js, &settings).await?;
    let mut batches = consumer.messages().await?.ready_chunks(settings.batch_max);
    loop {
        let batch = tokio::select! {
            () = shutdown.cancelled() => break,
            batch = batches.next() => match batch {
                Some(batch) => batch,
                // The server ended the consumer's message stream: stop so a supervisor restarts us.
                None => anyhow::bail!("the {CONSUMER} consumer's message stream ended"),
            },
        };
        let messages: Vec<Message> = batch
            .into_iter()
            .filter_map(|message| {
                message
                    .map_err(|err| tracing::warn!(error = %err, "consumer error; continuing"))
                    .ok()
            })
            .collect();
        if messages.is_empty() {
            continue;
        }
        let span = tracing::info_span!("ledger_batch", size = messages.len());
        process_batch(&pool, &nats, &js, &settings, messages, &shutdown)
            .instrument(span)
            .await;
        wake.notify_one();
    }
    tracing::info!("ledger consumer drained");
    Ok(())
}

/// A message and what it carries.
struct Incoming {
    message: Message,
    envelope: CommandEnvelope,
}

fn header(message: &Message, name: &str) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(name))
        .map(|value| value.as_str().to_owned())
}

async fn process_batch(
    pool: &PgPool,
    nats: &Client,
    js: &JetStream,
    settings: &ConsumerSettings,
    messages: Vec<Message>,
    shutdown: &CancellationToken,
) {
    let mut incoming = Vec::with_capacity(messages.len());
    for message in messages {
        match serde_json::from_slice::<CommandEnvelope>(&message.payload) {
            Ok(envelope) => incoming.push(Incoming { message, envelope }),
            Err(err) => dead_letter(js, &message, &format!("not a command: {err}")).await,
        }
    }
    let Some(outcomes) = apply_until_postgres_answers(pool, &incoming, shutdown).await else {
        // Shutting down while Postgres is away: the messages are redelivered after the ack wait.
        return;
    };
    for (item, outcome) in incoming.iter().zip(outcomes) {
        match outcome {
            Ok(reply) => {
                send_reply(nats, &item.message, &reply).await;
                ack(&item.message, AckKind::Ack).await;
            }
            Err(err) => retry_or_dead_letter(js, settings, &item.message, &format!("{err:#}")).await,
        }
    }
}

/// Retries the batch's transaction while it fails as a whole (Postgres down, commit refused), with
/// backoff, keeping the messages in hand: an outage must not spend their deliveries and send valid
/// commands to the DLQ. `None` when shutdown comes first.
async fn apply_until_postgres_answers(
    pool: &PgPool,
    incoming: &[Incoming],
    shutdown: &CancellationToken,
) -> Option<Vec<Result<CommandReply, sqlx::Error>>> {
    let mut failures: u32 = 0;
    loop {
        match apply_all(pool, incoming).await {
            Ok(outcomes) => return Some(outcomes),
            Err(err) => {
                failures = failures.saturating_add(1);
                let backoff = Duration::from_millis(200 * 2u64.pow(failures.min(5)));
                tracing::warn!(
                    error = format!("{err:#}"),
                    ?backoff,
                    "batch not applied; Postgres unavailable, retrying"
                );
                // Tell JetStream the messages are still being worked on, so it does not redeliver them.
                for item in incoming {
                    ack(&item.message, AckKind::Progress).await;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {},
                    () = shutdown.cancelled() => return None,
                }
            }
        }
    }
}

/// Applies every command in one transaction; a command that fails is rolled back to its savepoint
/// and reported, the others commit.
async fn apply_all(pool: &PgPool, incoming: &[Incoming]) -> anyhow::Result<Vec<Result<CommandReply, sqlx::Error>>> {
    let mut tx = pool.begin().await?;
    let mut outcomes = Vec::with_capacity(incoming.len());
    for item in incoming {
        let span = tracing::info_span!(
            "command",
            command_id = %item.envelope.id,
            kind = item.envelope.command.kind(),
            tenant_id = item.envelope.tenant_id.get(),
            deal_id = item.envelope.command.deal_id().map(|id| id.get()),
            user_id = item.envelope.command.user_id().map(|id| id.get()),
            request_id = header(&item.message, guarantor_telemetry::REQUEST_ID_HEADER).unwrap_or_default(),
        );
        let mut savepoint = tx.begin().await?;
        match apply(&mut savepoint, &item.envelope).instrument(span).await {
            Ok(reply) => {
                savepoint.commit().await?;
                outcomes.push(Ok(reply));
            }
            Err(err) => {
                savepoint.rollback().await?;
                outcomes.push(Err(err));
            }
        }
    }
    tx.commit().await?;
    Ok(outcomes)
}

async fn send_reply(nats: &Client, message: &Message, reply: &CommandReply) {
    let Some(reply_to) = header(message, REPLY_TO_HEADER) else {
        return;
    };
    match serde_json::to_vec(reply) {
        Ok(payload) => {
            if let Err(err) = nats.publish(reply_to, Bytes::from(payload)).await {
                tracing::warn!(error = %err, "reply not sent; the client can read GET /commands/{{id}}");
            }
        }
        Err(err) => tracing::error!(error = %err, "reply not serialisable"),
    }
}

async fn ack(message: &Message, kind: AckKind) {
    if let Err(err) = message.ack_with(kind).await {
        tracing::warn!(error = %err, "ack failed; the message will be redelivered and recognised");
    }
}

async fn retry_or_dead_letter(js: &JetStream, settings: &ConsumerSettings, message: &Message, error: &str) {
    let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
    if delivered >= settings.max_deliver {
        dead_letter(js, message, error).await;
    } else {
        let backoff = Duration::from_millis(200 * 2u64.pow(u32::try_from(delivered).unwrap_or(5).min(5)));
        tracing::warn!(delivered, ?backoff, error, "command failed; retrying");
        ack(message, AckKind::Nak(Some(backoff))).await;
    }
}

/// Moves a message that cannot be processed to `GUARANTOR_DLQ` with its error, and stops its delivery.
async fn dead_letter(js: &JetStream, message: &Message, error: &str) {
    let sequence = message.info().map(|info| info.stream_sequence).unwrap_or_default();
    tracing::error!(subject = %message.subject, sequence, error, "message moved to the DLQ");
    let mut headers = guarantor_messaging::headers(&format!("dlq:{COMMAND_STREAM}:{sequence}"), None);
    headers.insert("Guarantor-Error", error.replace(['\r', '\n'], " ").as_str());
    headers.insert("Guarantor-Original-Subject", message.subject.as_str());
    headers.insert("Guarantor-Original-Stream", COMMAND_STREAM);
    headers.insert("Guarantor-Original-Sequence", sequence.to_string().as_str());
    if let Some(original) = &message.headers {
        for (name, values) in original.iter() {
            if let Some(value) = values.first() {
                headers.insert(format!("Guarantor-Original-{name}").as_str(), value.as_str());
            }
        }
    }
    let published = js
        .publish_with_headers(
            format!("guarantor.dlq.{}", message.subject),
            headers,
            message.payload.clone(),
        )
        .await;
    match published {
        Ok(ack_future) => match ack_future.await {
            Ok(_) => ack(message, AckKind::Term).await,
            Err(err) => {
                tracing::error!(error = %err, "DLQ publish not acknowledged; message stays pending")
            }
        },
        Err(err) => tracing::error!(error = %err, "DLQ publish failed; message stays pending"),
    }
}
