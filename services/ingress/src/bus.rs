//! The command bus: publishes a command to `GUARANTOR_CMD` (durable once JetStream acks it) and waits
//! for the ledger's verdict on this process's done subjects (`guarantor.done.<listener>.*`). The
//! message id is the command id and the request's fingerprint: a retry of the same request is
//! deduplicated by JetStream, a reused `Idempotency-Key` with another request reaches the ledger,
//! which refuses it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use guarantor_domain::command::{done_by_anyone, listener_subject, LISTENER_HEADER};
use guarantor_domain::{CommandEnvelope, CommandId, CommandReply, Verdict};
use guarantor_messaging::{Client, JetStream};
use tokio::sync::oneshot;

/// Waiting requests by command id and fingerprint.
type Waiters = Arc<Mutex<HashMap<(CommandId, String), oneshot::Sender<CommandReply>>>>;

/// How long JetStream may take to store a command before the request answers 503.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// How a submission ended.
#[derive(Debug)]
pub enum Submitted {
    /// The ledger decided and replied in time.
    Done(Verdict),
    /// Stored in JetStream; the ledger has not replied yet.
    Pending,
    /// JetStream already held a command with this id (a retry): its reply went to the first sender.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
#[error("the command could not be stored: {0}")]
pub struct BusError(String);

#[derive(Clone, Debug)]
pub struct CommandBus {
    js: JetStream,
    nats: Client,
    /// This process's token in the done subjects of the commands it issues.
    listener: String,
    waiters: Waiters,
    timeout: Duration,
}

impl CommandBus {
    /// Subscribes to the verdicts of the commands this process issues and returns the bus.
    pub async fn start(nats: Client, timeout: Duration) -> Result<Self, BusError> {
        let listener = uuid::Uuid::new_v4().simple().to_string();
        let mut replies = nats
            .subscribe(listener_subject(&listener))
            .await
            .map_err(|err| BusError(err.to_string()))?;
        let waiters: Waiters = Arc::default();
        let routed = waiters.clone();
        tokio::spawn(async move {
            while let Some(message) = replies.next().await {
                let Ok(reply) = serde_json::from_slice::<CommandReply>(&message.payload) else {
                    tracing::warn!("malformed reply ignored");
                    continue;
                };
                let waiter = routed
                    .lock()
                    .ok()
                    .and_then(|mut waiters| waiters.remove(&(reply.command_id, reply.fingerprint.clone())));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(reply);
                }
            }
        });
        Ok(Self {
            js: guarantor_messaging::jetstream(&nats),
            nats,
            listener,
            waiters,
            timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Publishes `envelope` and waits (up to the timeout) for the ledger's reply.
    pub async fn submit(&self, envelope: &CommandEnvelope, request_id: Option<&str>) -> Result<Submitted, BusError> {
        let (sender, receiver) = oneshot::channel();
        let key = (envelope.id, envelope.fingerprint.clone());
        self.register(key.clone(), Some(sender));
        let outcome = self.publish_and_wait(envelope, request_id, receiver).await;
        self.register(key, None);
        outcome
    }

    fn register(&self, key: (CommandId, String), sender: Option<oneshot::Sender<CommandReply>>) {
        if let Ok(mut waiters) = self.waiters.lock() {
            match sender {
                Some(sender) => waiters.insert(key, sender),
                None => waiters.remove(&key),
            };
        }
    }

    /// Subscribes to the verdicts the ledger announces for command `id` (for a request whose command
    /// another request submitted first).
    pub async fn watch(&self, id: CommandId) -> Result<async_nats::Subscriber, BusError> {
        let subscriber = self
            .nats
            .subscribe(done_by_anyone(id))
            .await
            .map_err(|err| BusError(err.to_string()))?;
        // The subscription must be in place before the caller looks for a stored verdict.
        self.nats.flush().await.map_err(|err| BusError(err.to_string()))?;
        Ok(subscriber)
    }

    async fn publish_and_wait(
        &self,
        envelope: &CommandEnvelope,
        request_id: Option<&str>,
        receiver: oneshot::Receiver<CommandReply>,
    ) -> Result<Submitted, BusError> {
        let payload = serde_json::to_vec(envelope).map_err(|err| BusError(err.to_string()))?;
        let message_id = format!("{}:{}", envelope.id, envelope.fingerprint);
        let mut headers = guarantor_messaging::headers(&message_id, request_id);
        headers.insert(LISTENER_HEADER, self.listener.as_str());
        let stored = tokio::time::timeout(STORE_TIMEOUT, async {
            self.js
                .publish_with_headers(envelope.subject(), headers, Bytes::from(payload))
                .await
                .map_err(|err| BusError(err.to_string()))?
                .await
                .map_err(|err| BusError(err.to_string()))
        })
        .await
        .map_err(|_| BusError("JetStream did not acknowledge in time".to_owned()))??;
        if stored.duplicate {
            return Ok(Submitted::Duplicate);
        }
        match tokio::time::timeout(self.timeout, receiver).await {
            Ok(Ok(reply)) => Ok(Submitted::Done(reply.verdict)),
            Ok(Err(_)) | Err(_) => Ok(Submitted::Pending),
        }
    }
}
