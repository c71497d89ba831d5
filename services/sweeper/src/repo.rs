//! The sweeper's SQL. Every write to a sweep is fenced by its lease (`locked_by`): a process that lost
//! the lease changes nothing.

use chrono::{DateTime, Utc};
use guarantor_domain::{PaymentId, TenantId};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SweepStatus {
    FeeCheck,
    ToppingUp,
    Sending,
    Confirmed,
    Failed,
}

impl SweepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SweepStatus::FeeCheck => "fee_check",
            SweepStatus::ToppingUp => "topping_up",
            SweepStatus::Sending => "sending",
            SweepStatus::Confirmed => "confirmed",
            SweepStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum TxKind {
    TopUp,
    Transfer,
}

impl TxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TxKind::TopUp => "top_up",
            TxKind::Transfer => "transfer",
        }
    }
}

/// A sweep as its holder works on it.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub id: i64,
    pub payment_id: PaymentId,
    pub tenant_id: TenantId,
    pub address: String,
    pub hd_index: i64,
    pub amount: Decimal,
    pub status: SweepStatus,
    pub fee_needed_sun: Option<i64>,
    pub fee_paid_sun: i64,
    pub attempts: i32,
}

/// A stored, signed transaction of a sweep.
#[derive(Debug, Clone)]
pub struct StoredTx {
    pub txid: String,
    pub kind: TxKind,
    pub raw: Vec<u8>,
    pub ref_block: i64,
    pub expiration: DateTime<Utc>,
}

/// Figures for the metrics.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub by_status: Vec<(String, i64)>,
    /// TRX (sun) burned by every sweep so far.
    pub fee_paid_sun: i64,
    /// Credited USDT not yet moved by a confirmed sweep.
    pub unswept: Decimal,
}

pub async fn stats(pool: &PgPool) -> sqlx::Result<Stats> {
    let row = sqlx::query!(
        r#"SELECT
               ARRAY(SELECT x.status FROM unnest(ARRAY['fee_check', 'topping_up', 'sending', 'confirmed', 'failed'])
                         AS x(status) ORDER BY x.status) AS "statuses!",
               ARRAY(SELECT (SELECT count(*) FROM sweeps s WHERE s.status = x.status)
                     FROM unnest(ARRAY['fee_check', 'topping_up', 'sending', 'confirmed', 'failed']) AS x(status)
                     ORDER BY x.status) AS "counts!",
               COALESCE((SELECT sum(fee_paid_sun) FROM sweeps), 0)::bigint AS "fee_paid_sun!",
               COALESCE((SELECT sum(amount) FROM deposits), 0)
                 - COALESCE((SELECT sum(amount) FROM sweeps WHERE status = 'confirmed'), 0) AS "unswept!""#
    )
    .fetch_one(pool)
    .await?;
    Ok(Stats {
        by_status: row.statuses.into_iter().zip(row.counts).collect(),
        fee_paid_sun: row.fee_paid_sun,
        unswept: row.unswept,
    })
}

/// Opens a sweep for every address whose credited, unswept USDT reaches `min_amount` (and that has no
/// failed sweep waiting for an operator). Returns how many were opened.
pub async fn plan(pool: &PgPool, min_amount: Decimal) -> sqlx::Result<u64> {
    let opened = sqlx::query!(
        "INSERT INTO sweeps (payment_id, tenant_id, address, hd_index, amount, status)
         SELECT p.id, p.tenant_id, p.address, p.hd_index, c.credited - COALESCE(s.swept, 0), 'fee_check'
         FROM payments p
         JOIN (SELECT payment_id, sum(amount) AS credited FROM deposits GROUP BY payment_id) c ON c.payment_id = p.id
         LEFT JOIN (SELECT payment_id, sum(amount) AS swept FROM sweeps WHERE status <> 'failed' GROUP BY payment_id) s
             ON s.payment_id = p.id
         WHERE c.credited - COALESCE(s.swept, 0) >= $1
           AND NOT EXISTS (SELECT 1 FROM sweeps f WHERE f.payment_id = p.id AND f.status = 'failed')
         ORDER BY p.id
         ON CONFLICT DO NOTHING",
        min_amount,
    )
    .execute(pool)
    .await?;
    Ok(opened.rows_affected())
}

/// Takes the lease of the next open sweep that is due (or renews this holder's), leaving out the
/// sweeps of `handled` (worked on already in this pass). One at a time, so that each lease starts
/// when the work on its sweep does.
pub async fn claim_next(pool: &PgPool, holder: Uuid, lease_secs: f64, handled: &[i64]) -> sqlx::Result<Option<Sweep>> {
    sqlx::query_as!(
        Sweep,
        r#"UPDATE sweeps s SET locked_by = $1, locked_until = now() + make_interval(secs => $2)
           WHERE s.id = (SELECT id FROM sweeps
                         WHERE status IN ('fee_check', 'topping_up', 'sending') AND next_attempt_at <= now()
                           AND (locked_until IS NULL OR locked_until < now() OR locked_by = $1)
                           AND id <> ALL($3)
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
           RETURNING s.id, s.payment_id AS "payment_id: PaymentId", s.tenant_id AS "tenant_id: TenantId", s.address,
                     s.hd_index, s.amount, s.status AS "status: SweepStatus", s.fee_needed_sun, s.fee_paid_sun,
                     s.attempts"#,
        holder,
        lease_secs,
        handled,
    )
    .fetch_optional(pool)
    .await
}

/// The sweep's transaction of `kind` that is signed and not yet settled, if any.
pub async fn live_tx(pool: &PgPool, sweep: i64, kind: TxKind) -> sqlx::Result<Option<StoredTx>> {
    sqlx::query_as!(
        StoredTx,
        r#"SELECT txid, kind AS "kind: TxKind", raw, ref_block, expiration FROM sweep_transactions
           WHERE sweep_id = $1 AND kind = $2 AND status = 'signed'"#,
        sweep,
        kind.as_str(),
    )
    .fetch_optional(pool)
    .await
}

/// Whether the sweep has a confirmed top-up already.
pub async fn topped_up(pool: &PgPool, sweep: i64) -> sqlx::Result<bool> {
    let found = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM sweep_transactions
                          WHERE sweep_id = $1 AND kind = 'top_up' AND status = 'confirmed') AS "found!""#,
        sweep,
    )
    .fetch_one(pool)
    .await?;
    Ok(found)
}

/// Begins a transaction that first checks this holder still has the sweep's lease.
pub async fn fenced<'a>(pool: &'a PgPool, sweep: i64, holder: Uuid) -> sqlx::Result<Option<Transaction<'a, Postgres>>> {
    let mut tx = pool.begin().await?;
    let held = sqlx::query_scalar!(
        r#"SELECT id FROM sweeps WHERE id = $1 AND locked_by = $2 AND locked_until > now() FOR UPDATE"#,
        sweep,
        holder,
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(held.map(|_| tx))
}

/// Stores a signed transaction before it is broadcast (the only way one is ever broadcast).
pub async fn store_tx(tx: &mut Transaction<'_, Postgres>, sweep: i64, stored: &StoredTx) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO sweep_transactions (txid, sweep_id, kind, raw, ref_block, expiration, status)
         VALUES ($1, $2, $3, $4, $5, $6, 'signed')",
        stored.txid,
        sweep,
        stored.kind.as_str(),
        stored.raw,
        stored.ref_block,
        stored.expiration,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Settles a stored transaction: confirmed or failed with its receipt, or expired unmined.
pub async fn settle_tx(
    tx: &mut Transaction<'_, Postgres>,
    txid: &str,
    status: &str,
    result: Option<&str>,
    fee_sun: Option<i64>,
    block: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE sweep_transactions SET status = $2, result = $3, fee_sun = $4, block_number = $5, updated_at = now()
         WHERE txid = $1 AND status = 'signed'",
        txid,
        status,
        result,
        fee_sun,
        block,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks the sweep's confirmed top-up as spent by a failed transfer, so that the next attempt may top
/// up again (still one top-up per attempt).
pub async fn spend_top_up(tx: &mut Transaction<'_, Postgres>, sweep: i64) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE sweep_transactions SET status = 'spent', updated_at = now()
         WHERE sweep_id = $1 AND kind = 'top_up' AND status = 'confirmed'",
        sweep,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves the sweep to `status`, adding `fee_sun` to what it paid.
pub async fn set_status(
    tx: &mut Transaction<'_, Postgres>,
    sweep: i64,
    status: SweepStatus,
    fee_needed_sun: Option<i64>,
    fee_sun: i64,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE sweeps SET status = $2, fee_needed_sun = COALESCE($3, fee_needed_sun),
                fee_paid_sun = fee_paid_sun + $4, last_error = NULL, updated_at = now()
         WHERE id = $1",
        sweep,
        status.as_str(),
        fee_needed_sun,
        fee_sun,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records a failed attempt: retried after `retry_in_secs`, or `failed` for good (for an operator).
pub async fn record_error(
    pool: &PgPool,
    sweep: i64,
    holder: Uuid,
    error: &str,
    retry_in_secs: f64,
    give_up: bool,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE sweeps SET attempts = attempts + 1, last_error = $3,
                next_attempt_at = now() + make_interval(secs => $4),
                status = CASE WHEN $5 THEN 'failed' ELSE status END, updated_at = now()
         WHERE id = $1 AND locked_by = $2",
        sweep,
        holder,
        error,
        retry_in_secs,
        give_up,
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Writes a `sweep.<name>` event to the outbox, in the sweep's transaction, with its sequence.
pub async fn emit(
    tx: &mut Transaction<'_, Postgres>,
    sweep: i64,
    tenant: TenantId,
    name: &str,
    data: Value,
) -> sqlx::Result<()> {
    let id = Uuid::now_v7();
    let payload = serde_json::json!({
        "id": id,
        "type": format!("sweep.{name}"),
        "schema_version": 1,
        "occurred_at": Utc::now(),
        "tenant_id": tenant,
        "data": data,
    });
    sqlx::query!(
        "WITH numbered AS (
             INSERT INTO event_sequences (aggregate, aggregate_id, last) VALUES ('sweep', $1, 1)
             ON CONFLICT (aggregate, aggregate_id) DO UPDATE SET last = event_sequences.last + 1
             RETURNING last)
         INSERT INTO outbox (event_id, subject, payload)
         SELECT $2, $3, ($4::jsonb || jsonb_build_object('sequence', numbered.last))::json FROM numbered",
        sweep,
        id,
        format!("guarantor.evt.sweep.{sweep}.{name}"),
        payload,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
