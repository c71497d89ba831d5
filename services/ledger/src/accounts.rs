//! The double-entry ledger: accounts and append-only transfers. Every balance change is a transfer
//! from one account to another, so the balances of a currency always add up to zero.

use guarantor_domain::{CommandId, Currency, DealId, UserId};
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::rejection::{HandlerError, HandlerResult, Rejection};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, sqlx::Type)]
#[sqlx(transparent)]
pub struct AccountId(i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    Deposit,
    Hold,
    Release,
    Refund,
    Adjustment,
}

impl TransferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Deposit => "deposit",
            TransferKind::Hold => "hold",
            TransferKind::Release => "release",
            TransferKind::Refund => "refund",
            TransferKind::Adjustment => "adjustment",
        }
    }
}

/// Accounts through which money enters or leaves the books; their balances run negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalAccount {
    OperatorAdjustments,
}

impl ExternalAccount {
    fn kind(self) -> &'static str {
        match self {
            ExternalAccount::OperatorAdjustments => "operator_adjustments",
        }
    }
}

/// What a transfer belongs to.
#[derive(Debug, Clone, Default)]
pub struct TransferRefs {
    pub deal_id: Option<DealId>,
    pub command_id: Option<CommandId>,
    pub reason: Option<String>,
}

/// A user's available-balance account in a currency, created on first use.
pub async fn user_account(db: &mut PgConnection, user: UserId, currency: Currency) -> sqlx::Result<AccountId> {
    sqlx::query(
        "INSERT INTO accounts (kind, currency, user_id) VALUES ('user_available', $1, $2)
         ON CONFLICT (user_id, currency) WHERE kind = 'user_available' DO NOTHING",
    )
    .bind(currency)
    .bind(user)
    .execute(&mut *db)
    .await?;
    sqlx::query_scalar("SELECT id FROM accounts WHERE kind = 'user_available' AND user_id = $1 AND currency = $2")
        .bind(user)
        .bind(currency)
        .fetch_one(&mut *db)
        .await
}

/// Opens a deal's escrow account (once, when the deal is created).
pub async fn open_escrow(db: &mut PgConnection, deal: DealId, currency: Currency) -> sqlx::Result<AccountId> {
    sqlx::query_scalar("INSERT INTO accounts (kind, currency, deal_id) VALUES ('deal_escrow', $1, $2) RETURNING id")
        .bind(currency)
        .bind(deal)
        .fetch_one(db)
        .await
}

pub async fn escrow_account(db: &mut PgConnection, deal: DealId) -> sqlx::Result<AccountId> {
    sqlx::query_scalar("SELECT id FROM accounts WHERE kind = 'deal_escrow' AND deal_id = $1")
        .bind(deal)
        .fetch_one(db)
        .await
}

pub async fn external_account(
    db: &mut PgConnection,
    account: ExternalAccount,
    currency: Currency,
) -> sqlx::Result<AccountId> {
    sqlx::query(
        "INSERT INTO accounts (kind, currency) VALUES ($1, $2)
         ON CONFLICT (kind, currency) WHERE kind IN ('deposits_received', 'operator_adjustments') DO NOTHING",
    )
    .bind(account.kind())
    .bind(currency)
    .execute(&mut *db)
    .await?;
    sqlx::query_scalar("SELECT id FROM accounts WHERE kind = $1 AND currency = $2")
        .bind(account.kind())
        .bind(currency)
        .fetch_one(&mut *db)
        .await
}

/// The account's balance, locking the row until the transaction ends.
pub async fn locked_balance(db: &mut PgConnection, account: AccountId) -> sqlx::Result<Decimal> {
    sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(account)
        .fetch_one(db)
        .await
}

/// Moves `amount` from `from` to `to` and records the transfer. A transfer that would drive a user's
/// or an escrow's balance below zero is refused by the database and answered `insufficient_funds`.
pub async fn transfer(
    db: &mut PgConnection,
    from: AccountId,
    to: AccountId,
    amount: Decimal,
    currency: Currency,
    kind: TransferKind,
    refs: &TransferRefs,
) -> HandlerResult<i64> {
    // Rows are updated in id order so that concurrent transfers cannot deadlock on each other.
    let mut changes = [(from, -amount), (to, amount)];
    changes.sort_by_key(|(account, _)| *account);
    for (account, delta) in changes {
        let updated = sqlx::query("UPDATE accounts SET balance = balance + $2 WHERE id = $1")
            .bind(account)
            .bind(delta)
            .execute(&mut *db)
            .await;
        if let Err(err) = updated {
            return Err(match &err {
                sqlx::Error::Database(db_err) if db_err.constraint() == Some("balance_not_negative") => {
                    Rejection::conflict("insufficient_funds", "the available balance does not cover this amount").into()
                }
                _ => HandlerError::Database(err),
            });
        }
    }
    let id = sqlx::query_scalar(
        "INSERT INTO transfers (debit_account_id, credit_account_id, amount, currency, kind, deal_id, command_id, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(from)
    .bind(to)
    .bind(amount)
    .bind(currency)
    .bind(kind.as_str())
    .bind(refs.deal_id)
    .bind(refs.command_id.map(CommandId::as_uuid))
    .bind(refs.reason.as_deref())
    .fetch_one(&mut *db)
    .await?;
    Ok(id)
}
