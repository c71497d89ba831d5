//! Commands: what the ingress asks the ledger to do, as they travel on the `GUARANTOR_CMD` stream, and
//! the replies the ledger sends back (and keeps, for retries and `GET /commands/{id}`).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::payment::{DepositObservation, NewPayment};
use crate::{CommandId, Currency, DealAction, DealId, PaymentId, Role, TenantId, UserId};

/// The subject prefix of every command; the stream `GUARANTOR_CMD` holds `guarantor.cmd.>`.
pub const COMMAND_SUBJECT_PREFIX: &str = "guarantor.cmd";

/// The header naming the issuing ingress's listener token: the ledger announces the verdict on
/// [`done_subject`] with it, which that ingress (and anyone waiting on the command) subscribes to.
pub const LISTENER_HEADER: &str = "Guarantor-Listener";

/// The listener token of a command without a usable [`LISTENER_HEADER`] (one that is not a single
/// subject token of letters, digits, `-` and `_`).
const NO_LISTENER: &str = "none";

/// Where the ledger announces the verdict of command `id`, once: `guarantor.done.<listener>.<id>`.
/// The issuing ingress listens on [`listener_subject`]; a request that waits on a command another
/// request submitted first listens on [`done_by_anyone`].
pub fn done_subject(listener: Option<&str>, id: CommandId) -> String {
    let listener = listener
        .filter(|token| {
            !token.is_empty()
                && token.len() <= 64
                && token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .unwrap_or(NO_LISTENER);
    format!("guarantor.done.{listener}.{id}")
}

/// Every verdict announced for `listener`'s commands.
pub fn listener_subject(listener: &str) -> String {
    format!("guarantor.done.{listener}.*")
}

/// The verdict of command `id`, whoever issued it.
pub fn done_by_anyone(id: CommandId) -> String {
    format!("guarantor.done.*.{id}")
}

/// A command with who issued it. Its id is the ledger's inbox key; `<id>:<fingerprint>` is its
/// `Nats-Msg-Id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    pub id: CommandId,
    pub tenant_id: TenantId,
    pub role: Role,
    /// SHA-256 (hex) of the route, the key's role, the acting user and the canonical request body:
    /// an Idempotency-Key reused with another request is refused.
    pub fingerprint: String,
    pub issued_at: DateTime<Utc>,
    pub command: Command,
}

impl CommandEnvelope {
    pub fn subject(&self) -> String {
        format!("{COMMAND_SUBJECT_PREFIX}.{}", self.command.kind())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    UpsertUser {
        external_id: String,
        name: String,
    },
    CreateDeal(NewDeal),
    ActOnDeal {
        deal_id: DealId,
        action: DealAction,
        /// The party named by `Acting-User`; absent for an arbiter's decision.
        acting_user: Option<UserId>,
        /// Title and description of the dispute, for `dispute` only.
        dispute: Option<DisputeOpening>,
    },
    AdjustBalance {
        user_id: UserId,
        currency: Currency,
        /// Signed: a credit is positive, a debit negative.
        #[serde(with = "rust_decimal::serde::str")]
        amount: Decimal,
        reason: String,
    },
    /// A payment with its freshly derived deposit address.
    CreatePayment(NewPayment),
    /// A confirmed transfer the scanner saw on a payment's address. Issued by the scanner (with the
    /// operator's admin role), never by an HTTP route.
    ObserveDeposit(DepositObservation),
    /// The scanner saw a waiting payment's deadline pass.
    ExpirePayment {
        payment_id: PaymentId,
    },
}

impl Command {
    /// The last part of the command's subject.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::UpsertUser { .. } => "user.upsert",
            Command::CreateDeal(_) => "deal.create",
            Command::ActOnDeal { .. } => "deal.act",
            Command::AdjustBalance { .. } => "balance.adjust",
            Command::CreatePayment(_) => "payment.create",
            Command::ObserveDeposit(_) => "deposit.observe",
            Command::ExpirePayment { .. } => "payment.expire",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewDeal {
    pub title: String,
    pub description: String,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: Currency,
    pub customer_id: UserId,
    pub performer_id: UserId,
    pub deadline_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeOpening {
    pub title: String,
    pub description: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_announced_where_its_issuer_and_any_waiter_listen() {
        let id = CommandId::generate();
        let subject = done_subject(Some("4f2a9c"), id);
        assert_eq!(subject, format!("guarantor.done.4f2a9c.{id}"));
        assert_eq!(listener_subject("4f2a9c"), "guarantor.done.4f2a9c.*");
        assert_eq!(done_by_anyone(id), format!("guarantor.done.*.{id}"));
        // A header that is not one plain token cannot redirect the verdict or widen its subject.
        for bad in [
            None,
            Some(""),
            Some("a.b"),
            Some("*"),
            Some(">"),
            Some("a b"),
            Some(&*"x".repeat(65)),
        ] {
            assert_eq!(done_subject(bad, id), format!("guarantor.done.none.{id}"), "{bad:?}");
        }
    }

    #[test]
    fn an_envelope_survives_the_wire_unchanged() {
        let envelope = CommandEnvelope {
            id: CommandId::generate(),
            tenant_id: TenantId::new(1).unwrap(),
            role: Role::Admin,
            fingerprint: "ab".repeat(32),
            issued_at: Utc::now(),
            command: Command::AdjustBalance {
                user_id: UserId::new(3).unwrap(),
                currency: Currency::Usdt,
                amount: Decimal::new(-1_500_000, 6),
                reason: "correction".into(),
            },
        };
        let wire = serde_json::to_string(&envelope).unwrap();
        assert!(wire.contains("\"-1.500000\""), "amounts travel as strings: {wire}");
        assert_eq!(serde_json::from_str::<CommandEnvelope>(&wire).unwrap(), envelope);
        assert_eq!(envelope.subject(), "guarantor.cmd.balance.adjust");
    }
}
