//! Operator adjustments: an admin's audited correction of a user's available balance, booked against
//! the operator-adjustments account. A debit never drives a balance below zero; a credit funds the
//! user's waiting deals like any other credit.

use guarantor_domain::{format_wire, CommandEnvelope, Currency, Role, UserId};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgConnection;

use crate::accounts::{self, ExternalAccount, TransferKind, TransferRefs};
use crate::deals;
use crate::events::{self, BalanceChange};
use crate::rejection::{HandlerResult, Rejection};

pub async fn adjust(
    db: &mut PgConnection,
    env: &CommandEnvelope,
    user_id: UserId,
    currency: Currency,
    amount: Decimal,
    reason: &str,
) -> HandlerResult<(u16, Option<Value>)> {
    if env.role != Role::Admin {
        return Err(Rejection::forbidden("forbidden", "balance adjustments need an admin key").into());
    }
    if amount.is_zero() || amount.scale() > currency.decimals() {
        return Err(Rejection::new(
            422,
            "invalid_amount",
            "the adjustment must be non-zero with the currency's decimals",
        )
        .into());
    }
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
        .bind(user_id)
        .fetch_one(&mut *db)
        .await?;
    if !exists {
        return Err(Rejection::not_found("user", "user_not_found")
            .with_details(json!({ "user_id": user_id }))
            .into());
    }
    let operator = accounts::external_account(db, ExternalAccount::OperatorAdjustments, currency).await?;
    let available = accounts::user_account(db, user_id, currency).await?;
    let refs = TransferRefs {
        deal_id: None,
        command_id: Some(env.id),
        reason: Some(reason.to_owned()),
    };
    let (from, to) = if amount.is_sign_positive() {
        (operator, available)
    } else {
        (available, operator)
    };
    let transfer_id = accounts::transfer(db, from, to, amount.abs(), currency, TransferKind::Adjustment, &refs).await?;
    events::balance_changed(
        db,
        BalanceChange {
            user_id,
            currency,
            available_delta: amount,
            kind: TransferKind::Adjustment,
            transfer_id,
            deal_id: None,
            reason: Some(reason.to_owned()),
        },
    )
    .await?;
    if amount.is_sign_positive() {
        deals::fund_waiting(db, user_id, currency, env).await?;
    }
    let (balance, created_at): (Decimal, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT a.balance, t.created_at FROM accounts a, transfers t WHERE a.id = $1 AND t.id = $2")
            .bind(available)
            .bind(transfer_id)
            .fetch_one(&mut *db)
            .await?;
    Ok((
        200,
        Some(json!({
            "transfer_id": transfer_id,
            "user_id": user_id,
            "currency": currency,
            "amount": format_wire(amount, currency),
            "kind": TransferKind::Adjustment.as_str(),
            "reason": reason,
            "balance": format_wire(balance, currency),
            "created_at": created_at,
        })),
    ))
}
