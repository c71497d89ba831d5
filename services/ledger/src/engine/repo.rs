//! The engine's SQL: a constant number of set-based statements per batch, whatever its size. Locks
//! are taken in one global order — command ids (advisory), users (upsert), deals by id, accounts by
//! id, and last the hot rows (event sequences, then external accounts) — so batches of different
//! workers and processes can wait for each other but never deadlock.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use guarantor_domain::{CommandId, Currency, DealId, DealStatus, TenantId, UserId, Verdict};
use guarantor_store::views::DisputeView;
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::state::{AccountId, Deal, TransferDraft};

/// The advisory-lock key of a command id. Two ids sharing a key only wait for each other.
pub fn lock_key(id: CommandId) -> i64 {
    let bytes = id.as_uuid().as_u128();
    let folded = (bytes >> 64) as u64 ^ bytes as u64;
    i64::from_ne_bytes(folded.to_ne_bytes())
}

/// Takes the batch's command-id locks (sorted), so a redelivery racing its first delivery in another
/// transaction waits for it and then finds its verdict.
pub async fn lock_commands(db: &mut PgConnection, keys: &[i64]) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k")
        .bind(keys)
        .execute(db)
        .await?;
    Ok(())
}

/// A verdict already in the inbox.
#[derive(Debug, Clone)]
pub struct Stored {
    pub fingerprint: String,
    pub verdict: Verdict,
}

pub async fn stored(db: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<BTreeMap<Uuid, Stored>> {
    let rows: Vec<(Uuid, String, String, Option<Value>)> =
        sqlx::query_as("SELECT id, fingerprint, outcome, body FROM commands WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(db)
            .await?;
    rows.into_iter()
        .map(|(id, fingerprint, outcome, body)| {
            let verdict = Verdict::from_stored(&outcome, body).map_err(|err| sqlx::Error::Decode(err.into()))?;
            Ok((id, Stored { fingerprint, verdict }))
        })
        .collect()
}

/// The parties and currency of deals (immutable, so read without a lock to plan the locks).
pub async fn deal_parties(db: &mut PgConnection, ids: &[i64]) -> sqlx::Result<Vec<(DealId, UserId, UserId, Currency)>> {
    sqlx::query_as("SELECT id, customer_id, performer_id, currency FROM deals WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(db)
        .await
}

pub async fn tenants_of(db: &mut PgConnection, users: &[i64]) -> sqlx::Result<Vec<(UserId, TenantId)>> {
    sqlx::query_as("SELECT id, tenant_id FROM users WHERE id = ANY($1)")
        .bind(users)
        .fetch_all(db)
        .await
}

/// One upsert per (tenant, external id), sorted; returns the rows and whether each existed before.
pub async fn upsert_users(
    db: &mut PgConnection,
    rows: &[(TenantId, String, String)],
) -> sqlx::Result<Vec<(TenantId, String, UserId, DateTime<Utc>, bool)>> {
    let tenants: Vec<i64> = rows.iter().map(|row| row.0.get()).collect();
    let external: Vec<&str> = rows.iter().map(|row| row.1.as_str()).collect();
    let names: Vec<&str> = rows.iter().map(|row| row.2.as_str()).collect();
    sqlx::query_as(
        "INSERT INTO users (tenant_id, external_id, name)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(tenant_id, external_id, name)
         ORDER BY 1, 2
         ON CONFLICT (tenant_id, external_id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()
         RETURNING tenant_id, external_id, id, created_at, (xmax <> 0) AS existed",
    )
    .bind(tenants)
    .bind(external)
    .bind(names)
    .fetch_all(db)
    .await
}

#[derive(sqlx::FromRow)]
struct DealRow {
    id: DealId,
    tenant_id: TenantId,
    customer_id: UserId,
    performer_id: UserId,
    title: String,
    description: String,
    amount: Decimal,
    currency: Currency,
    status: DealStatus,
    deadline_at: Option<DateTime<Utc>>,
    funded_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    escrow: AccountId,
}

#[derive(sqlx::FromRow)]
struct DisputeRow {
    deal_id: DealId,
    opened_by: UserId,
    title: String,
    description: String,
    opened_at: DateTime<Utc>,
    resolution: Option<String>,
    resolved_at: Option<DateTime<Utc>>,
}

/// Locks, in id order, the deals the batch acts on and every waiting deal of the users whose balance
/// may rise. Disputes are read afterwards, in a statement of their own, so they are as fresh as the
/// locked rows.
pub async fn lock_deals(db: &mut PgConnection, ids: &[i64], rising: &[i64]) -> sqlx::Result<Vec<Deal>> {
    let rows: Vec<DealRow> = sqlx::query_as(
        "SELECT d.id, d.tenant_id, d.customer_id, d.performer_id, d.title, d.description, d.amount, d.currency,
                d.status, d.deadline_at, d.funded_at, d.created_at, d.updated_at, e.id AS escrow
         FROM deals d JOIN accounts e ON e.kind = 'deal_escrow' AND e.deal_id = d.id
         WHERE d.id = ANY($1) OR (d.status = 'waiting_for_payment' AND d.customer_id = ANY($2))
         ORDER BY d.id
         FOR UPDATE OF d",
    )
    .bind(ids)
    .bind(rising)
    .fetch_all(&mut *db)
    .await?;
    let deal_ids: Vec<i64> = rows.iter().map(|row| row.id.get()).collect();
    let disputes: Vec<DisputeRow> = sqlx::query_as(
        "SELECT deal_id, opened_by, title, description, opened_at, resolution, resolved_at
         FROM disputes WHERE deal_id = ANY($1)",
    )
    .bind(&deal_ids)
    .fetch_all(&mut *db)
    .await?;
    let mut disputes: BTreeMap<DealId, DisputeView> = disputes
        .into_iter()
        .map(|row| {
            (
                row.deal_id,
                DisputeView {
                    opened_by: row.opened_by,
                    title: row.title,
                    description: row.description,
                    opened_at: row.opened_at,
                    resolution: row.resolution,
                    resolved_at: row.resolved_at,
                },
            )
        })
        .collect();
    Ok(rows
        .into_iter()
        .map(|row| Deal {
            dispute: disputes.remove(&row.id),
            id: row.id,
            tenant_id: row.tenant_id,
            customer_id: row.customer_id,
            performer_id: row.performer_id,
            title: row.title,
            description: row.description,
            amount: row.amount,
            currency: row.currency,
            status: row.status,
            deadline_at: row.deadline_at,
            funded_at: row.funded_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            escrow: row.escrow,
        })
        .collect())
}

/// The waiting deals of `customers` as of now (a fresh snapshot), to check that the locked set is
/// complete.
pub async fn waiting_of(db: &mut PgConnection, customers: &[i64]) -> sqlx::Result<Vec<DealId>> {
    sqlx::query_scalar("SELECT id FROM deals WHERE status = 'waiting_for_payment' AND customer_id = ANY($1)")
        .bind(customers)
        .fetch_all(db)
        .await
}

fn split_keys(keys: &[(UserId, Currency)]) -> (Vec<i64>, Vec<&'static str>) {
    keys.iter()
        .map(|(user, currency)| (user.get(), currency.code()))
        .unzip()
}

/// A locked account row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub id: AccountId,
    pub user_id: Option<UserId>,
    pub currency: Currency,
    pub balance: Decimal,
}

/// Locks, in id order, the available accounts of `keys` and the escrow accounts of `deals`.
pub async fn lock_accounts(
    db: &mut PgConnection,
    keys: &[(UserId, Currency)],
    deals: &[i64],
) -> sqlx::Result<Vec<AccountRow>> {
    let (users, currencies) = split_keys(keys);
    sqlx::query_as(
        "SELECT id, user_id, currency, balance FROM accounts
         WHERE (kind = 'user_available' AND (user_id, currency) IN (SELECT * FROM unnest($1::bigint[], $2::text[])))
            OR (kind = 'deal_escrow' AND deal_id = ANY($3))
         ORDER BY id
         FOR UPDATE",
    )
    .bind(users)
    .bind(currencies)
    .bind(deals)
    .fetch_all(db)
    .await
}

/// What `customers` hold in the escrow of their funded deals (read under their account locks, which
/// every change of it takes).
pub async fn held(db: &mut PgConnection, customers: &[i64]) -> sqlx::Result<Vec<(UserId, Currency, Decimal)>> {
    sqlx::query_as(
        "SELECT d.customer_id, d.currency, sum(e.balance)
         FROM deals d JOIN accounts e ON e.kind = 'deal_escrow' AND e.deal_id = d.id
         WHERE d.customer_id = ANY($1) AND d.status IN ('confirm_performer', 'confirmed', 'dispute')
         GROUP BY 1, 2",
    )
    .bind(customers)
    .fetch_all(db)
    .await
}

/// The operator-adjustments account of each currency that has one. Not locked: it is only ever
/// changed by a delta in the batch's last statement.
pub async fn operator_accounts(
    db: &mut PgConnection,
    currencies: &[&'static str],
) -> sqlx::Result<Vec<(Currency, AccountId)>> {
    sqlx::query_as("SELECT currency, id FROM accounts WHERE kind = 'operator_adjustments' AND currency = ANY($1)")
        .bind(currencies)
        .fetch_all(db)
        .await
}

/// An account the batch opens because money moved on it for the first time.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub id: AccountId,
    pub user_id: Option<UserId>,
    pub currency: Currency,
    pub balance: Decimal,
}

/// Opens accounts with their first balance; returns how many were opened. Fewer than asked means
/// another transaction opened one of them first (the batch is then planned again).
pub async fn open_accounts(db: &mut PgConnection, accounts: &[NewAccount]) -> sqlx::Result<usize> {
    if accounts.is_empty() {
        return Ok(0);
    }
    let opened = sqlx::query(
        "INSERT INTO accounts (id, kind, currency, user_id, balance)
         OVERRIDING SYSTEM VALUE
         SELECT id, CASE WHEN user_id IS NULL THEN 'operator_adjustments' ELSE 'user_available' END,
                currency, user_id, balance
         FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::numeric[]) AS a(id, currency, user_id, balance)
         ORDER BY user_id, currency
         ON CONFLICT DO NOTHING",
    )
    .bind(accounts.iter().map(|a| a.id).collect::<Vec<_>>())
    .bind(accounts.iter().map(|a| a.currency.code()).collect::<Vec<_>>())
    .bind(accounts.iter().map(|a| a.user_id.map(UserId::get)).collect::<Vec<_>>())
    .bind(accounts.iter().map(|a| a.balance).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(usize::try_from(opened.rows_affected()).unwrap_or(usize::MAX))
}

/// Ids the batch reserves before it runs.
#[derive(Debug)]
pub struct Reserved {
    pub now: DateTime<Utc>,
    pub deals: Vec<i64>,
    /// One escrow account per new deal, then one per account the batch may open.
    pub accounts: Vec<i64>,
}

/// The transaction's timestamp, `deals` fresh deal ids, and `deals + accounts` fresh account ids.
pub async fn reserve(db: &mut PgConnection, deals: usize, accounts: usize) -> sqlx::Result<Reserved> {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let (now, deals, accounts) = sqlx::query_as(
        "SELECT now(),
                ARRAY(SELECT nextval(pg_get_serial_sequence('deals', 'id')) FROM generate_series(1, $1)),
                ARRAY(SELECT nextval(pg_get_serial_sequence('accounts', 'id')) FROM generate_series(1, $2))",
    )
    .bind(count(deals))
    .bind(count(deals + accounts))
    .fetch_one(db)
    .await?;
    Ok(Reserved { now, deals, accounts })
}

pub async fn reserve_transfers(db: &mut PgConnection, count: usize) -> sqlx::Result<Vec<i64>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "SELECT ARRAY(SELECT nextval(pg_get_serial_sequence('transfers', 'id')) FROM generate_series(1, $1))",
    )
    .bind(i64::try_from(count).unwrap_or(i64::MAX))
    .fetch_one(db)
    .await?;
    ids.sort_unstable();
    Ok(ids)
}

pub async fn insert_deals(db: &mut PgConnection, deals: &[&Deal]) -> sqlx::Result<()> {
    if deals.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Deal) -> i64| deals.iter().map(|deal| f(deal)).collect::<Vec<i64>>();
    sqlx::query(
        "INSERT INTO deals (id, tenant_id, customer_id, performer_id, title, description, amount, currency, status,
                            deadline_at, funded_at, created_at, updated_at)
         OVERRIDING SYSTEM VALUE
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::text[],
                              $7::numeric[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[],
                              $12::timestamptz[], $13::timestamptz[])",
    )
    .bind(column(|deal| deal.id.get()))
    .bind(column(|deal| deal.tenant_id.get()))
    .bind(column(|deal| deal.customer_id.get()))
    .bind(column(|deal| deal.performer_id.get()))
    .bind(deals.iter().map(|deal| deal.title.as_str()).collect::<Vec<_>>())
    .bind(deals.iter().map(|deal| deal.description.as_str()).collect::<Vec<_>>())
    .bind(deals.iter().map(|deal| deal.amount).collect::<Vec<_>>())
    .bind(deals.iter().map(|deal| deal.currency.code()).collect::<Vec<_>>())
    .bind(deals.iter().map(|deal| deal.status.as_str()).collect::<Vec<_>>())
    .bind(deals.iter().map(|deal| deal.deadline_at).collect::<Vec<_>>())
    .bind(deals.iter().map(|deal| deal.funded_at).collect::<Vec<_>>())
    .bind(deals.iter().map(|deal| deal.created_at).collect::<Vec<_>>())
    .bind(deals.iter().map(|deal| deal.updated_at).collect::<Vec<_>>())
    .execute(&mut *db)
    .await?;
    sqlx::query(
        "INSERT INTO accounts (id, kind, currency, deal_id)
         OVERRIDING SYSTEM VALUE
         SELECT id, 'deal_escrow', currency, deal_id FROM unnest($1::bigint[], $2::text[], $3::bigint[])
             AS e(id, currency, deal_id)",
    )
    .bind(column(|deal| deal.escrow))
    .bind(deals.iter().map(|deal| deal.currency.code()).collect::<Vec<_>>())
    .bind(column(|deal| deal.id.get()))
    .execute(db)
    .await?;
    Ok(())
}

pub async fn update_deals(db: &mut PgConnection, deals: &[&Deal]) -> sqlx::Result<()> {
    if deals.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE deals d SET status = u.status, funded_at = u.funded_at, updated_at = u.updated_at
         FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS u(id, status, funded_at, updated_at)
         WHERE d.id = u.id",
    )
    .bind(deals.iter().map(|deal| deal.id.get()).collect::<Vec<_>>())
    .bind(deals.iter().map(|deal| deal.status.as_str()).collect::<Vec<_>>())
    .bind(deals.iter().map(|deal| deal.funded_at).collect::<Vec<_>>())
    .bind(deals.iter().map(|deal| deal.updated_at).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

/// Inserts opened disputes (with their resolution, if the batch also resolved them).
pub async fn insert_disputes(db: &mut PgConnection, disputes: &[(DealId, &DisputeView)]) -> sqlx::Result<()> {
    if disputes.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO disputes (deal_id, opened_by, title, description, opened_at, resolution, resolved_at)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
                              $7::timestamptz[])",
    )
    .bind(disputes.iter().map(|(id, _)| id.get()).collect::<Vec<_>>())
    .bind(disputes.iter().map(|(_, d)| d.opened_by.get()).collect::<Vec<_>>())
    .bind(disputes.iter().map(|(_, d)| d.title.as_str()).collect::<Vec<_>>())
    .bind(disputes.iter().map(|(_, d)| d.description.as_str()).collect::<Vec<_>>())
    .bind(disputes.iter().map(|(_, d)| d.opened_at).collect::<Vec<_>>())
    .bind(
        disputes
            .iter()
            .map(|(_, d)| d.resolution.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(disputes.iter().map(|(_, d)| d.resolved_at).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

pub async fn resolve_disputes(db: &mut PgConnection, disputes: &[(DealId, &DisputeView)]) -> sqlx::Result<()> {
    if disputes.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE disputes s SET resolution = u.resolution, resolved_at = u.resolved_at
         FROM unnest($1::bigint[], $2::text[], $3::timestamptz[]) AS u(deal_id, resolution, resolved_at)
         WHERE s.deal_id = u.deal_id",
    )
    .bind(disputes.iter().map(|(id, _)| id.get()).collect::<Vec<_>>())
    .bind(
        disputes
            .iter()
            .map(|(_, d)| d.resolution.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(disputes.iter().map(|(_, d)| d.resolved_at).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

pub async fn insert_transfers(
    db: &mut PgConnection,
    transfers: &[TransferDraft],
    ids: &[i64],
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    if transfers.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount, currency, kind, deal_id, command_id,
                                reason, created_at)
         OVERRIDING SYSTEM VALUE
         SELECT id, debit, credit, amount, currency, kind, deal_id, command_id, reason, $10
         FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::numeric[], $5::text[], $6::text[], $7::bigint[],
                     $8::uuid[], $9::text[])
             AS t(id, debit, credit, amount, currency, kind, deal_id, command_id, reason)",
    )
    .bind(ids)
    .bind(transfers.iter().map(|t| t.debit).collect::<Vec<_>>())
    .bind(transfers.iter().map(|t| t.credit).collect::<Vec<_>>())
    .bind(transfers.iter().map(|t| t.amount).collect::<Vec<_>>())
    .bind(transfers.iter().map(|t| t.currency.code()).collect::<Vec<_>>())
    .bind(transfers.iter().map(|t| t.kind.as_str()).collect::<Vec<_>>())
    .bind(transfers.iter().map(|t| t.deal_id.map(DealId::get)).collect::<Vec<_>>())
    .bind(transfers.iter().map(|t| t.command.as_uuid()).collect::<Vec<_>>())
    .bind(transfers.iter().map(|t| t.reason.as_deref()).collect::<Vec<_>>())
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Adds each account's net change to its balance; the database refuses a user or escrow balance
/// below zero (`balance_not_negative`), which the engine has already ruled out.
pub async fn apply_deltas(db: &mut PgConnection, deltas: &[(AccountId, Decimal)]) -> sqlx::Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE accounts a SET balance = a.balance + u.delta
         FROM unnest($1::bigint[], $2::numeric[]) AS u(id, delta) WHERE a.id = u.id",
    )
    .bind(deltas.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(deltas.iter().map(|(_, delta)| *delta).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

/// Advances the sequences of the aggregates the batch emits events for (sorted) and returns the
/// last sequence of each after the batch.
pub async fn advance_sequences(
    db: &mut PgConnection,
    counts: &BTreeMap<(&'static str, i64), i64>,
) -> sqlx::Result<BTreeMap<(String, i64), i64>> {
    if counts.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "INSERT INTO event_sequences (aggregate, aggregate_id, last)
         SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) ORDER BY 1, 2
         ON CONFLICT (aggregate, aggregate_id) DO UPDATE SET last = event_sequences.last + EXCLUDED.last
         RETURNING aggregate, aggregate_id, last",
    )
    .bind(counts.keys().map(|(aggregate, _)| *aggregate).collect::<Vec<_>>())
    .bind(counts.keys().map(|(_, id)| *id).collect::<Vec<_>>())
    .bind(counts.values().copied().collect::<Vec<_>>())
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(aggregate, id, last)| ((aggregate, id), last))
        .collect())
}

/// An event ready for the outbox.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub event_id: Uuid,
    pub subject: String,
    pub payload: Value,
}

pub async fn insert_outbox(db: &mut PgConnection, rows: &[OutboxRow]) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO outbox (event_id, subject, payload)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[])",
    )
    .bind(rows.iter().map(|row| row.event_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.subject.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.payload.clone()).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

/// An inbox row: the command's verdict, written in the transaction of its effect.
#[derive(Debug, Clone)]
pub struct Answer {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub kind: &'static str,
    pub fingerprint: String,
    pub verdict: Verdict,
}

/// Writes verdicts; a `failed` verdict is replaced when its command is re-driven and applied.
pub async fn insert_answers(db: &mut PgConnection, answers: &[Answer]) -> sqlx::Result<()> {
    if answers.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO commands (id, tenant_id, kind, fingerprint, outcome, body)
         SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::jsonb[])
         ON CONFLICT (id) DO UPDATE
             SET kind = EXCLUDED.kind, fingerprint = EXCLUDED.fingerprint, outcome = EXCLUDED.outcome,
                 body = EXCLUDED.body, applied_at = now()
             WHERE commands.outcome = 'failed'",
    )
    .bind(answers.iter().map(|a| a.id).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.tenant_id.get()).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.kind).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.fingerprint.as_str()).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.verdict.kind()).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.verdict.body()).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

/// Counts an attempt at a command whose earlier delivery ended without a verdict, in a transaction of
/// its own (so a crash during the attempt still counts). Returns the attempts so far, this one
/// included, and whether the command has a verdict already (then the attempt only answers it).
pub async fn count_attempt(db: &mut PgConnection, id: CommandId) -> sqlx::Result<(i32, bool)> {
    sqlx::query_as(
        "WITH counted AS (
             INSERT INTO command_attempts (id, attempts) VALUES ($1, 1)
             ON CONFLICT (id) DO UPDATE SET attempts = command_attempts.attempts + 1, updated_at = now()
             RETURNING attempts)
         SELECT attempts, EXISTS (SELECT 1 FROM commands WHERE id = $1 AND outcome <> 'failed') FROM counted",
    )
    .bind(id.as_uuid())
    .fetch_one(db)
    .await
}

pub async fn record_attempt_error(db: &mut PgConnection, id: CommandId, error: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE command_attempts SET last_error = $2, updated_at = now() WHERE id = $1")
        .bind(id.as_uuid())
        .bind(error)
        .execute(db)
        .await?;
    Ok(())
}

/// A terminal `failed` verdict for a dead-lettered command (unless a verdict exists already).
pub async fn record_failure(db: &mut PgConnection, answer: &Answer) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO commands (id, tenant_id, kind, fingerprint, outcome, body) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(answer.id)
    .bind(answer.tenant_id)
    .bind(answer.kind)
    .bind(&answer.fingerprint)
    .bind(answer.verdict.kind())
    .bind(answer.verdict.body())
    .execute(db)
    .await?;
    Ok(())
}
