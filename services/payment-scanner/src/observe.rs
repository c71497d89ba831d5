//! What the scanner tells the ledger: deposit observations and payment expiries, as commands on
//! `GUARANTOR_CMD`. Their ids are derived from what they are about (`deposit:<txid>:<log_index>`,
//! `expire:<payment_id>`), so every scanner process, every cycle and every replay issues the same
//! command: JetStream drops the duplicates within its window, the ledger's inbox after it.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use guarantor_domain::payment::deposit_key;
use guarantor_domain::{Command, CommandEnvelope, CommandId, DepositObservation, PaymentId, Role, TenantId};
use guarantor_messaging::JetStream;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

/// Namespace of the ids of the scanner's commands.
const SCANNER_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6775_6172_616e_746f_7273_6361_6e6e_6572);

/// A payment a transfer was sent to.
#[derive(Debug, Clone)]
pub struct Watched {
    pub payment_id: PaymentId,
    pub tenant_id: TenantId,
    pub address: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("a node reply cannot be credited: {0}")]
    Malformed(String),
    #[error("cannot publish to GUARANTOR_CMD: {0}")]
    Publish(#[from] guarantor_messaging::MessagingError),
    #[error("cannot encode a command: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The observation of one solidified transfer of the token to a payment's address.
fn observation(
    payment: &Watched,
    token: &guarantor_tron::TronAddress,
    transfer: &guarantor_tron::solid::SolidTransfer,
) -> Result<DepositObservation, ObserveError> {
    let units = i64::try_from(transfer.amount).map_err(|_| {
        ObserveError::Malformed(format!("{}: amount {} is out of range", transfer.txid, transfer.amount))
    })?;
    let block_time = DateTime::<Utc>::from_timestamp_millis(transfer.block_time_ms)
        .ok_or_else(|| ObserveError::Malformed(format!("{}: bad block time", transfer.txid)))?;
    Ok(DepositObservation {
        payment_id: payment.payment_id,
        address: transfer.to.to_base58(),
        token_contract: token.to_base58(),
        txid: transfer.txid.clone(),
        log_index: transfer.log_index,
        amount: Decimal::new(units, guarantor_domain::Currency::Usdt.decimals()),
        block_number: transfer.block_number,
        block_time,
    })
}

fn envelope(key: &str, tenant_id: TenantId, command: Command) -> Result<CommandEnvelope, ObserveError> {
    let fingerprint = hex::encode(Sha256::digest(serde_json::to_vec(&command)?));
    Ok(CommandEnvelope {
        id: CommandId::from_uuid(uuid::Uuid::new_v5(&SCANNER_NAMESPACE, key.as_bytes())),
        tenant_id,
        // The scanner acts for the operator; no HTTP route issues these commands.
        role: Role::Admin,
        fingerprint,
        issued_at: Utc::now(),
        command,
    })
}

async fn publish(js: &JetStream, key: &str, envelope: &CommandEnvelope) -> Result<(), ObserveError> {
    let payload = Bytes::from(serde_json::to_vec(envelope)?);
    guarantor_messaging::publish(js, envelope.subject(), key, None, payload).await?;
    Ok(())
}

/// Publishes the observation of `transfer` to `payment`'s address, found by `detector`, and waits
/// until JetStream stored it.
pub async fn publish_deposit(
    js: &JetStream,
    detector: &'static str,
    payment: &Watched,
    token: &guarantor_tron::TronAddress,
    transfer: &guarantor_tron::solid::SolidTransfer,
) -> Result<(), ObserveError> {
    let observation = observation(payment, token, transfer)?;
    tracing::info!(
        detector,
        payment_id = %payment.payment_id,
        txid = %observation.txid,
        log_index = observation.log_index,
        amount = %observation.amount,
        block = observation.block_number,
        "deposit observed"
    );
    let key = deposit_key(&observation.txid, observation.log_index);
    let envelope = envelope(&key, payment.tenant_id, Command::ObserveDeposit(observation))?;
    publish(js, &key, &envelope).await
}

/// Asks the ledger to expire a waiting payment whose deadline the scanner has read past.
pub async fn publish_expiry(js: &JetStream, tenant_id: TenantId, payment_id: PaymentId) -> Result<(), ObserveError> {
    let key = format!("expire:{payment_id}");
    let envelope = envelope(&key, tenant_id, Command::ExpirePayment { payment_id })?;
    publish(js, &key, &envelope).await
}
