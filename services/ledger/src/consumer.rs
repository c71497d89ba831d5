//! The ledger's durable pull consumer on `GUARANTOR_CMD`, shared by every ledger process. Messages
//! are routed to a few workers by the key they lock (the deal; the customer of a new deal; the user
//! of an adjustment or upsert), each worker on its own Postgres connection applying whatever it has
//! in hand as one batch through the [engine](crate::engine). After the commit the replies go out and
//! the messages are acked.
//!
//! No command is abandoned: the server-side `max_deliver` is unlimited and the ledger keeps the count
//! itself. Transient failures (Postgres away, deadlocks, cancelled statements) keep the batch in hand
//! with progress acks, so they cost nothing. A deterministic failure is narrowed down by splitting
//! the batch until the one command that causes it stands alone; a command that fails (or crashes the
//! process) on `max_attempts` attempts goes to `GUARANTOR_DLQ` with a terminal `failed` verdict.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use guarantor_domain::command::{done_subject, LISTENER_HEADER};
use guarantor_domain::{Command, CommandEnvelope, CommandReply};
use guarantor_messaging::{Client, JetStream, COMMAND_STREAM};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::engine::{self, Incoming};
use crate::error::EngineError;

/// The durable consumer every ledger replica shares.
pub const CONSUMER: &str = "ledger";

/// Set on a message re-driven from the DLQ: a stored `failed` verdict is applied anew.
pub const REDRIVE_HEADER: &str = "Guarantor-Redrive";

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Most commands applied in one Postgres transaction.
    pub batch_max: usize,
    /// How long JetStream waits for an ack (or a progress ack) before redelivering.
    pub ack_wait: Duration,
    /// Workers in this process, each with its own connection.
    pub workers: usize,
    /// Attempts at a command without a verdict before it is dead-lettered.
    pub max_attempts: i32,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            batch_max: 256,
            ack_wait: Duration::from_secs(30),
            workers: 2,
            max_attempts: 3,
        }
    }
}

/// Creates the durable consumer, or updates it when its settings differ from `settings`.
pub async fn durable(js: &JetStream, settings: &ConsumerSettings) -> anyhow::Result<PullConsumer> {
    let stream = js.get_stream(COMMAND_STREAM).await?;
    let config = pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        description: Some("the ledger: applies commands and deposit observations".to_owned()),
        filter_subject: "guarantor.cmd.>".to_owned(),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        // Unlimited: the ledger counts attempts itself, so deliveries spent by an outage or a crash
        // never make JetStream give up on a command silently.
        max_deliver: -1,
        max_ack_pending: 8192,
        ..Default::default()
    };
    let mut consumer = stream.create_consumer(config.clone()).await?;
    let info = consumer.info().await?;
    if info.config.ack_wait != config.ack_wait || info.config.max_deliver != config.max_deliver {
        anyhow::bail!(
            "the {CONSUMER} consumer kept ack_wait {:?} / max_deliver {} instead of {:?} / {}",
            info.config.ack_wait,
            info.config.max_deliver,
            config.ack_wait,
            config.max_deliver
        );
    }
    Ok(consumer)
}

/// A message and what it carries.
struct Item {
    message: Message,
    incoming: Incoming,
    delivered: i64,
}

fn header(message: &Message, name: &str) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(name))
        .map(|value| value.as_str().to_owned())
}

/// The key a command locks first; commands with one key go to one worker, in stream order.
fn shard_key(envelope: &CommandEnvelope) -> u64 {
    let mut hasher = DefaultHasher::new();
    match &envelope.command {
        Command::ActOnDeal { deal_id, .. } => ("deal", deal_id.get()).hash(&mut hasher),
        Command::CreateDeal(new) => ("user", new.customer_id.get()).hash(&mut hasher),
        Command::AdjustBalance { user_id, .. } => ("user", user_id.get()).hash(&mut hasher),
        Command::CreatePayment(new) => ("user", new.user_id.get()).hash(&mut hasher),
        Command::ObserveDeposit(seen) => ("payment", seen.payment_id.get()).hash(&mut hasher),
        Command::ExpirePayment { payment_id } => ("payment", payment_id.get()).hash(&mut hasher),
        Command::UpsertUser { external_id, .. } => {
            ("external", envelope.tenant_id.get(), external_id).hash(&mut hasher)
        }
    }
    hasher.finish()
}

/// What the workers share.
struct Shared {
    pool: PgPool,
    nats: Client,
    js: JetStream,
    settings: ConsumerSettings,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
}

/// Consumes until `shutdown`, finishing the batches in hand before returning.
pub async fn consume(
    pool: PgPool,
    nats: Client,
    js: JetStream,
    settings: ConsumerSettings,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let consumer = durable(&js, &settings).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(settings.batch_max)
        .messages()
        .await?;
    let workers = settings.workers.max(1);
    let shared = Arc::new(Shared {
        pool,
        nats,
        js,
        settings,
        wake,
        shutdown: shutdown.clone(),
    });
    let mut senders = Vec::with_capacity(workers);
    let mut tasks = Vec::with_capacity(workers);
    for index in 0..workers {
        let (sender, receiver) = mpsc::channel(shared.settings.batch_max.max(1));
        senders.push(sender);
        tasks.push(tokio::spawn(
            work(shared.clone(), receiver).instrument(tracing::info_span!("ledger_worker", worker = index)),
        ));
    }
    let ended = loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            message = messages.next() => match message {
                Some(Ok(message)) => message,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "consumer error; continuing");
                    continue;
                }
                // The server ended the consumer's message stream: stop so a supervisor restarts us.
                None => break Err(anyhow::anyhow!("the {CONSUMER} consumer's message stream ended")),
            },
        };
        let envelope = match serde_json::from_slice::<CommandEnvelope>(&message.payload) {
            Ok(envelope) => envelope,
            Err(err) => {
                dead_letter(&shared.js, &message, &format!("not a command: {err}")).await;
                continue;
            }
        };
        let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
        let item = Item {
            incoming: Incoming {
                redrive: header(&message, REDRIVE_HEADER).is_some(),
                envelope,
            },
            message,
            delivered,
        };
        let worker = usize::try_from(shard_key(&item.incoming.envelope) % workers as u64).unwrap_or(0);
        if senders[worker].send(item).await.is_err() {
            break Err(anyhow::anyhow!("ledger worker {worker} stopped"));
        }
    };
    drop(senders);
    for task in tasks {
        task.await?;
    }
    tracing::info!("ledger consumer drained");
    ended
}

/// One worker: takes what is in hand (up to the batch maximum) and applies it.
async fn work(shared: Arc<Shared>, mut receiver: mpsc::Receiver<Item>) {
    let mut connection: Option<PoolConnection<Postgres>> = None;
    while let Some(first) = receiver.recv().await {
        let mut items = vec![first];
        while items.len() < shared.settings.batch_max {
            match receiver.try_recv() {
                Ok(item) => items.push(item),
                Err(_) => break,
            }
        }
        // A redelivered message ended its earlier delivery without a verdict (a crash, an expired
        // ack, a failure): it is tried alone, so it cannot take a batch of valid commands with it.
        let (suspects, fresh): (Vec<Item>, Vec<Item>) = items.into_iter().partition(|item| item.delivered > 1);
        let span = tracing::info_span!("ledger_batch", size = fresh.len());
        process(&shared, &mut connection, fresh).instrument(span).await;
        for item in suspects {
            attempt_alone(&shared, &mut connection, item).await;
        }
        shared.wake.notify_one();
    }
}

/// Applies `items` as one batch; a deterministic failure splits the batch in halves until the
/// failing command is alone.
fn process<'a>(
    shared: &'a Shared,
    connection: &'a mut Option<PoolConnection<Postgres>>,
    items: Vec<Item>,
) -> BoxFuture<'a, ()> {
    async move {
        if items.is_empty() {
            return;
        }
        match apply_in_hand(shared, connection, &items).await {
            Some(Ok(replies)) => finish(shared, &items, &replies).await,
            Some(Err(error)) if items.len() > 1 => {
                tracing::warn!(
                    error,
                    size = items.len(),
                    "batch failed; splitting it to find the command"
                );
                let mut first = items;
                let second = first.split_off(first.len() / 2);
                process(shared, connection, first).await;
                process(shared, connection, second).await;
            }
            Some(Err(error)) => {
                let mut items = items;
                if let Some(item) = items.pop() {
                    failed_attempt(shared, connection, item, 0, &error).await;
                }
            }
            // Shutting down while Postgres is away: the messages are redelivered after the ack wait.
            None => {}
        }
    }
    .boxed()
}

/// Counts an attempt at `item`'s command (see [`engine::count_attempt`]).
async fn count_attempt(
    shared: &Shared,
    connection: &mut Option<PoolConnection<Postgres>>,
    item: &Item,
) -> Option<Result<(i32, bool), String>> {
    let id = item.incoming.envelope.id;
    until_postgres_answers(shared, connection, std::slice::from_ref(item), |db| {
        async move { engine::count_attempt(db, id).await.map_err(EngineError::from) }.boxed()
    })
    .await
}

/// A command whose earlier delivery ended without a verdict: counted, then applied alone (or, past
/// the attempt budget, dead-lettered without being applied again).
async fn attempt_alone(shared: &Shared, connection: &mut Option<PoolConnection<Postgres>>, item: Item) {
    let id = item.incoming.envelope.id;
    let (attempts, has_verdict) = match count_attempt(shared, connection, &item).await {
        Some(Ok(counted)) => counted,
        Some(Err(error)) => {
            tracing::error!(error, %id, "cannot count an attempt; retrying later");
            nak(&item.message, item.delivered).await;
            return;
        }
        None => return,
    };
    if attempts > shared.settings.max_attempts && !has_verdict {
        let error = format!(
            "{} deliveries ended without a verdict (crashes or expired acks)",
            attempts - 1
        );
        give_up(shared, connection, item, &error).await;
        return;
    }
    match apply_in_hand(shared, connection, std::slice::from_ref(&item)).await {
        Some(Ok(replies)) => finish(shared, std::slice::from_ref(&item), &replies).await,
        Some(Err(error)) => failed_attempt(shared, connection, item, attempts, &error).await,
        None => {}
    }
}

/// A single command failed deterministically on attempt `attempts` (0: not counted yet).
async fn failed_attempt(
    shared: &Shared,
    connection: &mut Option<PoolConnection<Postgres>>,
    item: Item,
    attempts: i32,
    error: &str,
) {
    let id = item.incoming.envelope.id;
    let attempts = if attempts == 0 {
        match count_attempt(shared, connection, &item).await {
            Some(Ok((attempts, _))) => attempts,
            Some(Err(_)) | None => 0,
        }
    } else {
        attempts
    };
    let error_text = error.to_owned();
    let _ = until_postgres_answers(shared, connection, std::slice::from_ref(&item), |db| {
        let error = error_text.clone();
        async move {
            engine::record_attempt_error(db, id, &error)
                .await
                .map_err(EngineError::from)
        }
        .boxed()
    })
    .await;
    if attempts >= shared.settings.max_attempts {
        give_up(shared, connection, item, error).await;
    } else {
        tracing::warn!(%id, attempts, error, "command failed; it will be tried again alone");
        nak(&item.message, item.delivered).await;
    }
}

/// Dead-letters a command with a terminal `failed` verdict that its client can read.
async fn give_up(shared: &Shared, connection: &mut Option<PoolConnection<Postgres>>, item: Item, error: &str) {
    let envelope = item.incoming.envelope.clone();
    let error_text = error.to_owned();
    let recorded = until_postgres_answers(shared, connection, std::slice::from_ref(&item), |db| {
        let (envelope, error) = (envelope.clone(), error_text.clone());
        async move { engine::record_failure(db, &envelope, &error).await }.boxed()
    })
    .await;
    match recorded {
        Some(Ok(verdict)) if dead_letter(&shared.js, &item.message, error).await => {
            metrics::counter!(
                "guarantor_commands_applied_total",
                "kind" => item.incoming.envelope.command.kind(),
                "outcome" => verdict.kind()
            )
            .increment(1);
            let reply = CommandReply {
                command_id: item.incoming.envelope.id,
                fingerprint: item.incoming.envelope.fingerprint.clone(),
                verdict,
            };
            send_reply(&shared.nats, &item.message, &reply).await;
        }
        Some(Ok(_)) => {}
        Some(Err(err)) => {
            tracing::error!(error = %err, "cannot record the failure; retrying later");
            nak(&item.message, item.delivered).await;
        }
        None => {}
    }
}

/// Applies the items' commands, retrying transient failures with the messages kept in hand.
/// `Some(Err)` is a deterministic failure; `None` means shutdown came first.
async fn apply_in_hand(
    shared: &Shared,
    connection: &mut Option<PoolConnection<Postgres>>,
    items: &[Item],
) -> Option<Result<Vec<CommandReply>, String>> {
    // Shared, so that a retry after a transient failure does not copy the batch again.
    let batch: Arc<[Incoming]> = items.iter().map(|item| item.incoming.clone()).collect();
    until_postgres_answers(shared, connection, items, |db| {
        let batch = batch.clone();
        async move { engine::apply_batch(db, &batch).await }.boxed()
    })
    .await
}

/// Runs `work` on the worker's connection until it ends other than transiently, with backoff, and
/// progress acks so JetStream neither redelivers the messages nor counts the outage against them.
async fn until_postgres_answers<T, F>(
    shared: &Shared,
    connection: &mut Option<PoolConnection<Postgres>>,
    items: &[Item],
    work: F,
) -> Option<Result<T, String>>
where
    F: for<'c> Fn(&'c mut sqlx::PgConnection) -> BoxFuture<'c, Result<T, EngineError>>,
{
    let mut failures: u32 = 0;
    loop {
        let outcome = match connection {
            Some(db) => with_progress(items, shared.settings.ack_wait, work(&mut *db)).await,
            None => match shared.pool.acquire().await {
                Ok(db) => {
                    let db = connection.insert(db);
                    with_progress(items, shared.settings.ack_wait, work(&mut *db)).await
                }
                Err(err) => Err(EngineError::from(err)),
            },
        };
        match outcome {
            Ok(value) => return Some(Ok(value)),
            Err(EngineError::Deterministic(error)) => return Some(Err(error)),
            Err(EngineError::Transient(error)) => {
                // The connection may be the broken part: take a fresh one next time.
                *connection = None;
                failures = failures.saturating_add(1);
                let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(5)));
                tracing::warn!(
                    error,
                    ?backoff,
                    size = items.len(),
                    "transient failure; retrying with the batch in hand"
                );
                for item in items {
                    ack(&item.message, AckKind::Progress).await;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {},
                    () = shared.shutdown.cancelled() => return None,
                }
            }
        }
    }
}

/// Runs `work`, telling JetStream every third of the ack wait that the messages are still being
/// worked on (a batch waiting on locks must not be redelivered meanwhile).
async fn with_progress<T>(
    items: &[Item],
    ack_wait: Duration,
    work: impl std::future::Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    let mut work = std::pin::pin!(work);
    let period = (ack_wait / 3).max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            outcome = &mut work => return outcome,
            _ = ticks.tick() => {
                for item in items {
                    ack(&item.message, AckKind::Progress).await;
                }
            }
        }
    }
}

async fn finish(shared: &Shared, items: &[Item], replies: &[CommandReply]) {
    #[allow(clippy::cast_precision_loss, reason = "a batch size is far below 2^52")]
    metrics::histogram!("guarantor_ledger_batch_size").record(items.len() as f64);
    for (item, reply) in items.iter().zip(replies) {
        metrics::counter!(
            "guarantor_commands_applied_total",
            "kind" => item.incoming.envelope.command.kind(),
            "outcome" => reply.verdict.kind()
        )
        .increment(1);
        send_reply(&shared.nats, &item.message, reply).await;
        ack(&item.message, AckKind::Ack).await;
    }
}

/// Announces the verdict once, on the done subject of the ingress that issued the command (which
/// every request waiting on the command also listens to).
async fn send_reply(nats: &Client, message: &Message, reply: &CommandReply) {
    let payload = match serde_json::to_vec(reply) {
        Ok(payload) => Bytes::from(payload),
        Err(err) => {
            tracing::error!(error = %err, "reply not serialisable");
            return;
        }
    };
    let listener = header(message, LISTENER_HEADER);
    if let Err(err) = nats
        .publish(done_subject(listener.as_deref(), reply.command_id), payload)
        .await
    {
        tracing::warn!(error = %err, "reply not sent; the client can read GET /commands/{{id}}");
    }
}

async fn ack(message: &Message, kind: AckKind) {
    if let Err(err) = message.ack_with(kind).await {
        tracing::warn!(error = %err, "ack failed; the message will be redelivered and recognised");
    }
}

async fn nak(message: &Message, delivered: i64) {
    let backoff = Duration::from_millis(200 * 2u64.pow(u32::try_from(delivered).unwrap_or(5).min(5)));
    ack(message, AckKind::Nak(Some(backoff))).await;
}

/// Moves a message that cannot be processed to `GUARANTOR_DLQ` with its error, and stops its
/// delivery. Returns whether the DLQ has it.
async fn dead_letter(js: &JetStream, message: &Message, error: &str) -> bool {
    let (sequence, delivered) = message
        .info()
        .map(|info| (info.stream_sequence, info.delivered))
        .unwrap_or_default();
    tracing::error!(subject = %message.subject, sequence, delivered, error, "message moved to the DLQ");
    let mut headers = guarantor_messaging::headers(&format!("dlq:{COMMAND_STREAM}:{sequence}"), None);
    headers.insert("Guarantor-Error", error.replace(['\r', '\n'], " ").as_str());
    headers.insert("Guarantor-Original-Subject", message.subject.as_str());
    headers.insert("Guarantor-Original-Stream", COMMAND_STREAM);
    headers.insert("Guarantor-Original-Sequence", sequence.to_string().as_str());
    headers.insert("Guarantor-Deliveries", delivered.to_string().as_str());
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
            Ok(_) => {
                ack(message, AckKind::Term).await;
                true
            }
            Err(err) => {
                tracing::error!(error = %err, "DLQ publish not acknowledged; message stays pending");
                false
            }
        },
        Err(err) => {
            tracing::error!(error = %err, "DLQ publish failed; message stays pending");
            false
        }
    }
}
