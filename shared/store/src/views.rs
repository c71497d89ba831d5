//! Read models: users, deals and balances as the API shows them. The ledger answers commands with them
//! and the ingress serves reads with them, so a write's reply and a later read look the same.

use chrono::{DateTime, Utc};
use guarantor_domain::{format_wire, Currency, DealId, DealStatus, PaymentId, PaymentStatus, TenantId, UserId};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UserView {
    #[schema(value_type = i64, example = 1)]
    pub id: UserId,
    /// The platform's own id of the user (a string, even when it was sent as a number).
    pub external_id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Also read back from the JSON Postgres builds of a row (the ledger's batch reads disputes so).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DisputeView {
    #[schema(value_type = i64)]
    pub opened_by: UserId,
    pub title: String,
    pub description: String,
    pub opened_at: DateTime<Utc>,
    /// `customer` or `performer` once an arbiter decided.
    pub resolution: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DealView {
    #[schema(value_type = i64, example = 42)]
    pub deal_id: DealId,
    pub title: String,
    pub description: String,
    /// Decimal string with the currency's scale.
    #[schema(example = "12.500000")]
    pub amount: String,
    pub currency: Currency,
    #[schema(value_type = i64)]
    pub customer_id: UserId,
    #[schema(value_type = i64)]
    pub performer_id: UserId,
    pub status: DealStatus,
    pub deadline_at: Option<DateTime<Utc>>,
    pub funded_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub dispute: Option<DisputeView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BalanceView {
    pub currency: Currency,
    /// Available: what the user can spend on new deals.
    #[schema(example = "0.000000")]
    pub balance: String,
    /// In escrow, in funded deals where the user is the customer.
    #[schema(example = "0.000000")]
    pub held: String,
}

struct DealRow {
    id: DealId,
    title: String,
    description: String,
    amount: Decimal,
    currency: Currency,
    customer_id: UserId,
    performer_id: UserId,
    status: DealStatus,
    deadline_at: Option<DateTime<Utc>>,
    funded_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    opened_by: Option<UserId>,
    dispute_title: Option<String>,
    dispute_description: Option<String>,
    opened_at: Option<DateTime<Utc>>,
    resolution: Option<String>,
    resolved_at: Option<DateTime<Utc>>,
}

impl From<DealRow> for DealView {
    fn from(row: DealRow) -> Self {
        let dispute = match (row.opened_by, row.dispute_title, row.opened_at) {
            (Some(opened_by), Some(title), Some(opened_at)) => Some(DisputeView {
                opened_by,
                title,
                description: row.dispute_description.unwrap_or_default(),
                opened_at,
                resolution: row.resolution,
                resolved_at: row.resolved_at,
            }),
            _ => None,
        };
        DealView {
            deal_id: row.id,
            title: row.title,
            description: row.description,
            amount: format_wire(row.amount, row.currency),
            currency: row.currency,
            customer_id: row.customer_id,
            performer_id: row.performer_id,
            status: row.status,
            deadline_at: row.deadline_at,
            funded_at: row.funded_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            dispute,
        }
    }
}

pub async fn user(db: impl PgExecutor<'_>, tenant: TenantId, id: UserId) -> sqlx::Result<Option<UserView>> {
    sqlx::query_as!(
        UserView,
        r#"SELECT id AS "id: UserId", external_id, name, created_at, updated_at
           FROM users WHERE id = $1 AND tenant_id = $2"#,
        id.get(),
        tenant.get()
    )
    .fetch_optional(db)
    .await
}

pub async fn deal(db: impl PgExecutor<'_>, tenant: TenantId, id: DealId) -> sqlx::Result<Option<DealView>> {
    let one = DealFilter {
        status: None,
        user_id: None,
        before: None,
        limit: 1,
    };
    Ok(select_deals(db, tenant, Some(id), one).await?.pop())
}

/// Which deals a list shows: newest first, strictly older than `before` when paging.
#[derive(Debug, Clone, Copy)]
pub struct DealFilter {
    pub status: Option<DealStatus>,
    /// Deals where this user is the customer or the performer.
    pub user_id: Option<UserId>,
    pub before: Option<DealId>,
    pub limit: i64,
}

pub async fn deals(db: impl PgExecutor<'_>, tenant: TenantId, filter: DealFilter) -> sqlx::Result<Vec<DealView>> {
    select_deals(db, tenant, None, filter).await
}

/// Deals of `tenant` (only deal `id`, when given) as `filter` chooses them.
async fn select_deals(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: Option<DealId>,
    filter: DealFilter,
) -> sqlx::Result<Vec<DealView>> {
    let rows = sqlx::query_as!(
        DealRow,
        r#"SELECT d.id AS "id: DealId", d.title, d.description, d.amount, d.currency AS "currency: Currency",
                  d.customer_id AS "customer_id: UserId", d.performer_id AS "performer_id: UserId",
                  d.status AS "status: DealStatus", d.deadline_at, d.funded_at, d.created_at, d.updated_at,
                  s.opened_by AS "opened_by?: UserId", s.title AS "dispute_title?",
                  s.description AS "dispute_description?", s.opened_at AS "opened_at?",
                  s.resolution AS "resolution?", s.resolved_at AS "resolved_at?"
           FROM deals d LEFT JOIN disputes s ON s.deal_id = d.id
           WHERE d.tenant_id = $1
             AND ($2::text IS NULL OR d.status = $2)
             AND ($3::bigint IS NULL OR d.customer_id = $3 OR d.performer_id = $3)
             AND ($4::bigint IS NULL OR d.id < $4)
             AND ($6::bigint IS NULL OR d.id = $6)
           ORDER BY d.id DESC
           LIMIT $5"#,
        tenant.get(),
        filter.status.map(DealStatus::as_str),
        filter.user_id.map(UserId::get),
        filter.before.map(DealId::get),
        filter.limit,
        id.map(DealId::get)
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(DealView::from).collect())
}

/// One row per supported currency, zero where the user has no account yet.
pub async fn balances(db: impl PgExecutor<'_>, user: UserId) -> sqlx::Result<Vec<BalanceView>> {
    let currencies: Vec<&str> = Currency::ALL.iter().map(|c| c.code()).collect();
    let rows = sqlx::query!(
        r#"SELECT c.currency AS "currency!: Currency", COALESCE(a.balance, 0) AS "balance!",
                  COALESCE(a.held, 0) AS "held!"
           FROM unnest($2::text[]) WITH ORDINALITY AS c(currency, n)
           LEFT JOIN accounts a ON a.kind = 'user_available' AND a.user_id = $1 AND a.currency = c.currency
           ORDER BY c.n"#,
        user.get(),
        &currencies as &[&str]
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| BalanceView {
            currency: row.currency,
            balance: format_wire(row.balance, row.currency),
            held: format_wire(row.held, row.currency),
        })
        .collect())
}

/// Where and how to pay a payment.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct GatewayData {
    /// The payment's own deposit address.
    #[schema(example = "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH")]
    pub address: String,
    #[schema(example = "tron")]
    pub network: String,
    /// The TRC-20 contract to pay in; transfers of any other token are never credited.
    #[schema(example = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t")]
    pub token_contract: String,
    /// What the payment asks for.
    #[schema(example = "12.500000")]
    pub amount: String,
}

/// A credited deposit: one TRC-20 transfer to the payment's address.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DepositView {
    pub txid: String,
    pub log_index: u32,
    #[schema(example = "12.500000")]
    pub amount: String,
    pub block_number: u64,
    /// Mined after the payment's `expires_at` (credited all the same).
    pub late: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    #[schema(value_type = i64, example = 7)]
    pub payment_id: PaymentId,
    #[schema(value_type = i64)]
    pub user_id: UserId,
    pub gateway_id: i64,
    #[schema(example = "12.500000")]
    pub amount: String,
    pub currency: Currency,
    pub status: PaymentStatus,
    /// Everything credited so far; above `amount` when the payment was overpaid.
    #[schema(example = "0.000000")]
    pub received: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub gateway_data: GatewayData,
    /// Oldest first.
    pub deposits: Vec<DepositView>,
}

/// A payment row as the ledger and the reads see it.
#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRow {
    pub id: PaymentId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub gateway_id: i64,
    pub amount: Decimal,
    pub currency: Currency,
    pub received: Decimal,
    pub status: PaymentStatus,
    pub address: String,
    pub token_contract: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PaymentRow {
    pub fn view(&self, deposits: Vec<DepositView>) -> PaymentView {
        PaymentView {
            payment_id: self.id,
            user_id: self.user_id,
            gateway_id: self.gateway_id,
            amount: format_wire(self.amount, self.currency),
            currency: self.currency,
            status: self.status,
            received: format_wire(self.received, self.currency),
            expires_at: self.expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            gateway_data: GatewayData {
                address: self.address.clone(),
                network: "tron".to_owned(),
                token_contract: self.token_contract.clone(),
                amount: format_wire(self.amount, self.currency),
            },
            deposits,
        }
    }
}

/// The payment `id` of `tenant`, with its deposits.
pub async fn payment(
    db: &mut sqlx::PgConnection,
    tenant: TenantId,
    id: PaymentId,
) -> sqlx::Result<Option<PaymentView>> {
    let row = sqlx::query_as!(
        PaymentRow,
        r#"SELECT id AS "id: PaymentId", tenant_id AS "tenant_id: TenantId", user_id AS "user_id: UserId",
                  gateway_id, amount, currency AS "currency: Currency", received, status AS "status: PaymentStatus",
                  address, token_contract, expires_at, created_at, updated_at
           FROM payments WHERE id = $1 AND tenant_id = $2"#,
        id.get(),
        tenant.get()
    )
    .fetch_optional(&mut *db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let deposits = sqlx::query!(
        r#"SELECT txid, log_index, amount, block_number, late FROM deposits WHERE payment_id = $1 ORDER BY id"#,
        id.get()
    )
    .fetch_all(&mut *db)
    .await?
    .into_iter()
    .map(|d| {
        Ok(DepositView {
            txid: d.txid,
            log_index: u32::try_from(d.log_index).map_err(|err| sqlx::Error::Decode(err.into()))?,
            amount: format_wire(d.amount, row.currency),
            block_number: u64::try_from(d.block_number).map_err(|err| sqlx::Error::Decode(err.into()))?,
            late: d.late,
        })
    })
    .collect::<sqlx::Result<Vec<_>>>()?;
    Ok(Some(row.view(deposits)))
}

/// A sweep as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SweepView {
    pub sweep_id: i64,
    pub payment_id: i64,
    pub tenant_id: i64,
    /// The deposit address swept.
    pub address: String,
    #[schema(example = "25.000000")]
    pub amount: String,
    /// `fee_check`, `topping_up`, `sending`, `confirmed` or `failed`.
    pub status: String,
    /// TRX (sun) the transfer needs, as last estimated.
    pub fee_needed_sun: Option<i64>,
    /// TRX (sun) really burned so far, from receipts.
    pub fee_paid_sun: i64,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// The sweep's transactions, oldest first: `{"txid", "kind", "status", "result", "fee_sun"}`.
    #[schema(value_type = Vec<Object>)]
    pub transactions: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Sweeps, newest first, of one status or all.
pub async fn sweeps(db: impl PgExecutor<'_>, status: Option<&str>, limit: i64) -> sqlx::Result<Vec<SweepView>> {
    let rows = sqlx::query!(
        r#"SELECT s.id, s.payment_id, s.tenant_id, s.address, s.amount, s.status, s.fee_needed_sun, s.fee_paid_sun,
                  s.attempts, s.last_error, s.created_at, s.updated_at,
                  COALESCE((SELECT json_agg(json_build_object('txid', t.txid, 'kind', t.kind, 'status', t.status,
                                                              'result', t.result, 'fee_sun', t.fee_sun)
                                            ORDER BY t.created_at)
                            FROM sweep_transactions t WHERE t.sweep_id = s.id), '[]'::json) AS "transactions!"
           FROM sweeps s
           WHERE ($1::text IS NULL OR s.status = $1)
           ORDER BY s.id DESC LIMIT $2"#,
        status,
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| SweepView {
            sweep_id: row.id,
            payment_id: row.payment_id,
            tenant_id: row.tenant_id,
            address: row.address,
            amount: format_wire(row.amount, Currency::Usdt),
            status: row.status,
            fee_needed_sun: row.fee_needed_sun,
            fee_paid_sun: row.fee_paid_sun,
            attempts: row.attempts,
            last_error: row.last_error,
            transactions: row.transactions,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
        .collect())
}

/// Sends a failed sweep back to its fee check, now; false when `id` is not a failed sweep.
pub async fn retry_sweep(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<bool> {
    let retried = sqlx::query!(
        "UPDATE sweeps SET status = 'fee_check', attempts = 0, last_error = NULL, next_attempt_at = now(),
                locked_by = NULL, locked_until = NULL, updated_at = now()
         WHERE id = $1 AND status = 'failed'",
        id,
    )
    .execute(db)
    .await?;
    Ok(retried.rows_affected() == 1)
}
