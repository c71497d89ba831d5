//! Domain events, written to the transactional outbox in the same transaction as the change they
//! describe. Subject `guarantor.evt.<aggregate>.<id>.<event>`; envelope `{"id", "type",
//! "schema_version", "occurred_at", "tenant_id", "data"}` (see `asyncapi.yaml`).

use chrono::Utc;
use guarantor_domain::{format_wire, Currency, DealId, TenantId, UserId};
use guarantor_store::views::{self, DealView};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgConnection;

use crate::accounts::TransferKind;

pub const SCHEMA_VERSION: u32 = 1;

/// Writes one event to the outbox.
pub async fn emit(
    db: &mut PgConnection,
    tenant_id: TenantId,
    aggregate: &'static str,
    aggregate_id: i64,
    name: &'static str,
    data: Value,
) -> sqlx::Result<()> {
    let id = uuid::Uuid::now_v7();
    let payload = json!({
        "id": id,
        "type": format!("{aggregate}.{name}"),
        "schema_version": SCHEMA_VERSION,
        "occurred_at": Utc::now(),
        "tenant_id": tenant_id,
        "data": data,
    });
    sqlx::query("INSERT INTO outbox (event_id, subject, payload) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(format!("guarantor.evt.{aggregate}.{aggregate_id}.{name}"))
        .bind(payload)
        .execute(db)
        .await?;
    Ok(())
}

/// A deal event: the deal after the change, plus what changed.
pub async fn deal_event(
    db: &mut PgConnection,
    deal: &DealView,
    tenant_id: TenantId,
    name: &'static str,
    changes: Value,
) -> sqlx::Result<()> {
    let mut data = serde_json::to_value(deal).map_err(|err| sqlx::Error::Encode(err.into()))?;
    if let (Some(data), Value::Object(changes)) = (data.as_object_mut(), changes) {
        data.extend(changes);
    }
    emit(db, tenant_id, "deal", deal.deal_id.get(), name, data).await
}

/// Why a user's balance changed.
#[derive(Debug, Clone)]
pub struct BalanceChange {
    pub user_id: UserId,
    pub currency: Currency,
    /// Signed change of the available balance (zero when only `held` changed).
    pub available_delta: Decimal,
    pub kind: TransferKind,
    pub transfer_id: i64,
    pub deal_id: Option<DealId>,
    pub reason: Option<String>,
}

/// `user.balance_changed` with the user's balances after the change.
pub async fn balance_changed(db: &mut PgConnection, change: BalanceChange) -> sqlx::Result<()> {
    let tenant_id: TenantId = sqlx::query_scalar("SELECT tenant_id FROM users WHERE id = $1")
        .bind(change.user_id)
        .fetch_one(&mut *db)
        .await?;
    let balance = views::balances(&mut *db, change.user_id)
        .await?
        .into_iter()
        .find(|row| row.currency == change.currency)
        .ok_or(sqlx::Error::RowNotFound)?;
    let data = json!({
        "user_id": change.user_id,
        "currency": change.currency,
        "balance": balance.balance,
        "held": balance.held,
        "change": format_wire(change.available_delta, change.currency),
        "kind": change.kind.as_str(),
        "transfer_id": change.transfer_id,
        "deal_id": change.deal_id,
        "reason": change.reason,
    });
    emit(db, tenant_id, "user", change.user_id.get(), "balance_changed", data).await
}
