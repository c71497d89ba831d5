//! Payments: a deposit address waiting for a user's money, and how deposits move its status.
//!
//! Whatever arrives is credited, under-, over- and late payments included; the status only says how
//! the money compares with what the payment asked for, and by when.

use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{Currency, PaymentId, UserId};

/// The id of the USDT TRC-20 gateway, the only one so far.
pub const USDT_TRC20_GATEWAY_ID: i64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Nothing arrived yet.
    Waiting,
    /// Something arrived, less than the amount.
    Partial,
    /// At least the amount arrived.
    Success,
    /// Nothing arrived by `expires_at`.
    Expired,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Waiting => "waiting",
            PaymentStatus::Partial => "partial",
            PaymentStatus::Success => "success",
            PaymentStatus::Expired => "expired",
        }
    }

    /// The status after a deposit was credited: `received` is the total including it, `late` says it
    /// was mined after `expires_at`. A payment that had nothing by its deadline expires (and stays
    /// expired for late coins); one mined in time counts, even if the expiry was recorded first.
    pub fn after_deposit(self, received: Decimal, amount: Decimal, late: bool) -> PaymentStatus {
        let by_amount = if received >= amount {
            PaymentStatus::Success
        } else {
            PaymentStatus::Partial
        };
        match self {
            PaymentStatus::Waiting | PaymentStatus::Expired if late => PaymentStatus::Expired,
            PaymentStatus::Success => PaymentStatus::Success,
            PaymentStatus::Waiting | PaymentStatus::Partial | PaymentStatus::Expired => by_amount,
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payment as the ingress asks for it: the address is derived and its HD index allocated before
/// the command is published, so the ledger needs no key material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewPayment {
    pub user_id: UserId,
    pub gateway_id: i64,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: Currency,
    pub hd_index: u32,
    /// Base58 TRON address at `m/44'/195'/0'/0/{hd_index}`.
    pub address: String,
    /// Base58 TRC-20 contract the payment must be made in.
    pub token_contract: String,
    pub expires_at: DateTime<Utc>,
}

/// One confirmed TRC-20 transfer to a payment's address, read from solidified chain state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositObservation {
    pub payment_id: PaymentId,
    /// Base58 recipient, as decoded from the Transfer log.
    pub address: String,
    /// Base58 contract that emitted the Transfer log.
    pub token_contract: String,
    /// 64 lowercase hex digits.
    pub txid: String,
    pub log_index: u32,
    /// In the currency's units (USDT: 6 decimals), never zero.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub block_number: u64,
    pub block_time: DateTime<Utc>,
}

impl DepositObservation {
    /// The `Nats-Msg-Id` of the observation: one per (txid, log index), whoever observes it.
    pub fn message_id(&self) -> String {
        deposit_key(&self.txid, self.log_index)
    }
}

/// `deposit:<txid>:<log_index>`.
pub fn deposit_key(txid: &str, log_index: u32) -> String {
    format!("deposit:{txid}:{log_index}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentStatus::*;

    fn d(units: i64) -> Decimal {
        Decimal::new(units, 0)
    }

    #[test]
    fn deposits_move_the_status_by_amount_and_deadline() {
        let cases = [
            (Waiting, 5, false, Partial),
            (Waiting, 10, false, Success),
            (Waiting, 12, false, Success),
            (Partial, 7, false, Partial),
            (Partial, 10, false, Success),
            (Success, 15, false, Success),
            (Success, 15, true, Success),
            // Nothing by the deadline: the payment expired, late coins do not revive it.
            (Waiting, 10, true, Expired),
            (Expired, 10, true, Expired),
            // Mined in time, observed after the expiry was recorded: it counts.
            (Expired, 10, false, Success),
            (Expired, 3, false, Partial),
            // Something came in time: late coins complete it.
            (Partial, 10, true, Success),
            (Partial, 8, true, Partial),
        ];
        for (from, received, late, to) in cases {
            assert_eq!(
                from.after_deposit(d(received), d(10), late),
                to,
                "{from} +{received} late={late}"
            );
        }
    }

    #[test]
    fn the_message_id_names_the_transfer() {
        assert_eq!(
            deposit_key(&"ab".repeat(32), 3),
            format!("deposit:{}:3", "ab".repeat(32))
        );
    }
}
