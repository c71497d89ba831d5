//! The engine's SQL: a constant number of set-based statements per batch, whatever its size. Locks
//! are taken in one global order — command ids (advisory), users (upsert), deals by id, accounts by
//! id, and last the hot rows (event sequences, then external accounts) — so batches of different
//! workers and processes can wait for each other but never deadlock.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use guarantor_domain::{CommandId, Currency, DealId, DealStatus, PaymentId, PaymentStatus, TenantId, UserId, Verdict};
use guarantor_store::views::{DisputeView, PaymentRow};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::state::{AccountId, Deal, External, NewDeposit, Owner, TransferDraft};

/// The advisory-lock key of a command id. Two ids sharing a key only wait for each other.
pub fn lock_key(id: CommandId) -> i64 {
    let bytes = id.as_uuid().as_u128();
    let folded = (bytes >> 64) as u64 ^ bytes as u64;
    i64::from_ne_bytes(folded.to_ne_bytes())
}

/// A verdict already in the inbox.
#[derive(Debug, Clone)]
pub struct Stored {
    pub fingerprint: String,
    pub verdict: Verdict,
}

/// Begins the batch's transaction and takes its command-id locks (sorted) in the same round trip,
/// so a redelivery racing its first delivery in another transaction waits for it and then finds its
/// verdict. Inside the batch every statement runs on a generic plan made with sequential scans
/// disabled: they are all lookups by key or by a partial index, so the plan made once per connection
/// uses the indexes whatever the tables' sizes were then, and planning (which cost more than executing
/// for most of them under custom plans) happens once instead of per batch.
pub async fn begin_claimed<'c>(db: &'c mut PgConnection, keys: &[i64]) -> sqlx::Result<Transaction<'c, Postgres>> {
    let keys: Vec<String> = keys.iter().map(i64::to_string).collect();
    // The keys are integers formatted here, never text from a message.
    db.begin_with(format!(
        "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off; \
         SELECT pg_advisory_xact_lock(k) FROM unnest('{{{}}}'::bigint[]) AS k",
        keys.join(",")
    ))
    .await
}

/// What a batch needs to know before it locks anything.
#[derive(Debug, Default)]
pub struct Planned {
    pub stored: BTreeMap<Uuid, Stored>,
    /// Parties and currency of the deals acted on (immutable, so read without a lock).
    pub parties: Vec<(DealId, UserId, UserId, Currency)>,
    /// Tenants of the users named, and of the parties of the deals acted on.
    pub tenants: Vec<(UserId, TenantId)>,
}

struct PlanRow {
    kind: String,
    command_id: Option<Uuid>,
    fingerprint: Option<String>,
    outcome: Option<String>,
    body: Option<Value>,
    id: Option<i64>,
    a: Option<i64>,
    b: Option<i64>,
    currency: Option<Currency>,
}

/// The stored verdicts of `ids`, the parties of the deals `acted`, and the tenants of `users` and of
/// those parties, in one statement.
pub async fn plan(db: &mut PgConnection, ids: &[Uuid], acted: &[i64], users: &[i64]) -> sqlx::Result<Planned> {
    let rows = sqlx::query_as!(
        PlanRow,
        r#"SELECT 'stored' AS "kind!", c.id AS "command_id?", c.fingerprint AS "fingerprint?",
                  c.outcome AS "outcome?", c.body AS "body?",
                  NULL::bigint AS "id?", NULL::bigint AS "a?", NULL::bigint AS "b?",
                  NULL::text AS "currency?: Currency"
           FROM commands c WHERE c.id = ANY($1)
           UNION ALL
           SELECT 'deal', NULL, NULL, NULL, NULL, d.id, d.customer_id, d.performer_id, d.currency
           FROM deals d WHERE d.id = ANY($2)
           UNION ALL
           SELECT 'user', NULL, NULL, NULL, NULL, u.id, u.tenant_id, NULL, NULL
           FROM users u
           WHERE u.id IN (SELECT unnest($3::bigint[])
                          UNION SELECT customer_id FROM deals WHERE id = ANY($2)
                          UNION SELECT performer_id FROM deals WHERE id = ANY($2))"#,
        ids,
        acted,
        users,
    )
    .fetch_all(db)
    .await?;
    let mut planned = Planned::default();
    let id = |value: Option<i64>| value.ok_or_else(|| missing("plan"));
    for row in rows {
        match row.kind.as_str() {
            "stored" => {
                let (command, fingerprint, outcome) = match (row.command_id, row.fingerprint, row.outcome) {
                    (Some(command), Some(fingerprint), Some(outcome)) => (command, fingerprint, outcome),
                    _ => return Err(missing("stored verdict")),
                };
                let verdict =
                    Verdict::from_stored(&outcome, row.body).map_err(|err| sqlx::Error::Decode(err.into()))?;
                planned.stored.insert(command, Stored { fingerprint, verdict });
            }
            "deal" => planned.parties.push((
                DealId::new(id(row.id)?).map_err(|err| sqlx::Error::Decode(err.into()))?,
                UserId::new(id(row.a)?).map_err(|err| sqlx::Error::Decode(err.into()))?,
                UserId::new(id(row.b)?).map_err(|err| sqlx::Error::Decode(err.into()))?,
                row.currency.ok_or_else(|| missing("deal"))?,
            )),
            "user" => planned.tenants.push((
                UserId::new(id(row.id)?).map_err(|err| sqlx::Error::Decode(err.into()))?,
                TenantId::new(id(row.a)?).map_err(|err| sqlx::Error::Decode(err.into()))?,
            )),
            other => return Err(sqlx::Error::Decode(format!("unknown plan row {other}").into())),
        }
    }
    Ok(planned)
}

/// One upsert per (tenant, external id), sorted; returns the rows and whether each existed before.
pub async fn upsert_users(
    db: &mut PgConnection,
    rows: &[(TenantId, String, String)],
) -> sqlx::Result<Vec<(TenantId, String, UserId, DateTime<Utc>, bool)>> {
    let tenants: Vec<i64> = rows.iter().map(|row| row.0.get()).collect();
    let external: Vec<String> = rows.iter().map(|row| row.1.clone()).collect();
    let names: Vec<String> = rows.iter().map(|row| row.2.clone()).collect();
    let upserted = sqlx::query!(
        r#"INSERT INTO users (tenant_id, external_id, name)
           SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(tenant_id, external_id, name)
           ORDER BY 1, 2
           ON CONFLICT (tenant_id, external_id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()
           RETURNING tenant_id AS "tenant_id: TenantId", external_id, id AS "id: UserId", created_at,
                     (xmax <> 0) AS "existed!""#,
        &tenants,
        &external,
        &names,
    )
    .fetch_all(db)
    .await?;
    Ok(upserted
        .into_iter()
        .map(|row| (row.tenant_id, row.external_id, row.id, row.created_at, row.existed))
        .collect())
}

struct LockedRow {
    kind: String,
    id: Option<i64>,
    tenant_id: Option<TenantId>,
    customer_id: Option<UserId>,
    performer_id: Option<UserId>,
    title: Option<String>,
    description: Option<String>,
    amount: Option<Decimal>,
    currency: Option<Currency>,
    status: Option<DealStatus>,
    deadline_at: Option<DateTime<Utc>>,
    funded_at: Option<DateTime<Utc>>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    escrow: Option<AccountId>,
    user_id: Option<UserId>,
    balance: Option<Decimal>,
    held: Option<Decimal>,
}

fn split_keys(keys: &[(UserId, Currency)]) -> (Vec<i64>, Vec<&'static str>) {
    keys.iter()
        .map(|(user, currency)| (user.get(), currency.code()))
        .unzip()
}

/// A locked account row.
#[derive(Debug, Clone)]
pub struct AccountRow {
    pub id: AccountId,
    pub user_id: Option<UserId>,
    pub currency: Currency,
    pub balance: Decimal,
    /// What the user holds in the escrow of their funded deals (zero on an escrow account).
    pub held: Decimal,
}

/// The rows a batch holds locked.
#[derive(Debug, Default)]
pub struct Locked {
    /// In id order.
    pub deals: Vec<Deal>,
    pub accounts: Vec<AccountRow>,
}

fn missing(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("a {what} row without its columns").into())
}

/// Locks, in one statement and in the global order, first the deals the batch acts on and every
/// waiting deal of the users whose balance may rise (by id), then the available accounts of `keys`
/// and the escrow accounts of those deals (by id): the accounts' scan starts from the deals' ids, so
/// the deals are locked before any account whatever order Postgres runs the branches in. Each deal's
/// escrow is looked up by the deal's id: the plan is generic (made once per connection, whatever the
/// tables held then), and with a join the planner could start from the escrow accounts and visit
/// every one of them (a deal without one fails the batch). The deals' disputes are read by
/// [`prepare`], a later statement, so they are as fresh as the locked rows.
pub async fn lock(
    db: &mut PgConnection,
    deal_ids: &[i64],
    rising: &[i64],
    keys: &[(UserId, Currency)],
) -> sqlx::Result<Locked> {
    let (users, currencies) = split_keys(keys);
    let rows = sqlx::query_as!(
        LockedRow,
        r#"WITH d AS MATERIALIZED (
               SELECT d.id, d.tenant_id, d.customer_id, d.performer_id, d.title, d.description, d.amount,
                      d.currency, d.status, d.deadline_at, d.funded_at, d.created_at, d.updated_at,
                      (SELECT e.id FROM accounts e WHERE e.kind = 'deal_escrow' AND e.deal_id = d.id) AS escrow
               FROM deals d
               WHERE d.id = ANY(ARRAY(SELECT unnest($1::bigint[])
                                      UNION SELECT w.id FROM deals w
                                            WHERE w.waiting AND w.customer_id = ANY($2)))
                 AND (d.id = ANY($1) OR d.waiting)
               ORDER BY d.id
               FOR UPDATE),
           a AS MATERIALIZED (
               SELECT id, user_id, currency, balance, held FROM accounts
               WHERE (kind = 'user_available' AND user_id = ANY($3) AND currency = ANY($4))
                  OR (kind = 'deal_escrow' AND deal_id = ANY(ARRAY(SELECT id FROM d)))
               ORDER BY id
               FOR UPDATE)
           SELECT 'deal' AS "kind!", id AS "id?", tenant_id AS "tenant_id?: TenantId",
                  customer_id AS "customer_id?: UserId", performer_id AS "performer_id?: UserId",
                  title AS "title?", description AS "description?", amount AS "amount?",
                  currency AS "currency?: Currency", status AS "status?: DealStatus",
                  deadline_at AS "deadline_at?", funded_at AS "funded_at?", created_at AS "created_at?",
                  updated_at AS "updated_at?", escrow AS "escrow?", NULL::bigint AS "user_id?: UserId",
                  NULL::numeric AS "balance?", NULL::numeric AS "held?"
           FROM (SELECT * FROM d ORDER BY id) AS ordered
           UNION ALL
           SELECT 'account', id, NULL, NULL, NULL, NULL, NULL, NULL, currency, NULL, NULL, NULL, NULL, NULL,
                  NULL, user_id, balance, held
           FROM a"#,
        deal_ids,
        rising,
        &users,
        &currencies as &[&str],
    )
    .fetch_all(db)
    .await?;
    let mut locked = Locked::default();
    for row in rows {
        match row.kind.as_str() {
            "deal" => locked.deals.push(Deal {
                dispute: None,
                id: DealId::new(row.id.ok_or_else(|| missing("deal"))?)
                    .map_err(|err| sqlx::Error::Decode(err.into()))?,
                tenant_id: row.tenant_id.ok_or_else(|| missing("deal"))?,
                customer_id: row.customer_id.ok_or_else(|| missing("deal"))?,
                performer_id: row.performer_id.ok_or_else(|| missing("deal"))?,
                title: row.title.ok_or_else(|| missing("deal"))?,
                description: row.description.ok_or_else(|| missing("deal"))?,
                amount: row.amount.ok_or_else(|| missing("deal"))?,
                currency: row.currency.ok_or_else(|| missing("deal"))?,
                status: row.status.ok_or_else(|| missing("deal"))?,
                deadline_at: row.deadline_at,
                funded_at: row.funded_at,
                created_at: row.created_at.ok_or_else(|| missing("deal"))?,
                updated_at: row.updated_at.ok_or_else(|| missing("deal"))?,
                // A deal without its escrow account is a broken row: the batch fails, nothing moves.
                escrow: row.escrow.ok_or_else(|| missing("deal escrow"))?,
            }),
            "account" => locked.accounts.push(AccountRow {
                id: row.id.ok_or_else(|| missing("account"))?,
                user_id: row.user_id,
                currency: row.currency.ok_or_else(|| missing("account"))?,
                balance: row.balance.ok_or_else(|| missing("account"))?,
                held: row.held.ok_or_else(|| missing("account"))?,
            }),
            other => return Err(sqlx::Error::Decode(format!("unknown locked row {other}").into())),
        }
    }
    Ok(locked)
}

/// Locks, in id order, the payments a batch observes or expires, and finds which of the observed
/// transfers (txid, log index) are credited already.
pub async fn lock_payments(
    db: &mut PgConnection,
    ids: &[i64],
    observed: &[(&str, u32)],
) -> sqlx::Result<(Vec<PaymentRow>, HashSet<(String, u32)>)> {
    let rows = sqlx::query_as!(
        PaymentRow,
        r#"SELECT id AS "id: PaymentId", tenant_id AS "tenant_id: TenantId", user_id AS "user_id: UserId",
                  gateway_id, amount, currency AS "currency: Currency", received, status AS "status: PaymentStatus",
                  address, token_contract, expires_at, created_at, updated_at
           FROM payments WHERE id = ANY($1)
           ORDER BY id
           FOR UPDATE"#,
        ids,
    )
    .fetch_all(&mut *db)
    .await?;
    let txids: Vec<&str> = observed.iter().map(|(txid, _)| *txid).collect();
    let indexes: Vec<i32> = observed
        .iter()
        .map(|(_, index)| i32::try_from(*index).unwrap_or(i32::MAX))
        .collect();
    let credited = sqlx::query!(
        r#"SELECT d.txid, d.log_index FROM deposits d
           JOIN unnest($1::text[], $2::integer[]) AS o(txid, log_index)
             ON d.txid = o.txid AND d.log_index = o.log_index"#,
        &txids as &[&str],
        &indexes,
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|row| {
        u32::try_from(row.log_index)
            .map(|index| (row.txid, index))
            .map_err(|err| sqlx::Error::Decode(err.into()))
    })
    .collect::<sqlx::Result<HashSet<_>>>()?;
    Ok((rows, credited))
}

/// An account the batch opens because money moved on it for the first time.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub id: AccountId,
    pub owner: Owner,
    pub currency: Currency,
    pub balance: Decimal,
    pub held: Decimal,
}

/// Opens accounts with their first balance; returns how many were opened. Fewer than asked means
/// another transaction opened one of them first (the batch is then planned again).
pub async fn open_accounts(db: &mut PgConnection, accounts: &[NewAccount]) -> sqlx::Result<usize> {
    if accounts.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = accounts.iter().map(|a| a.id).collect();
    let currencies: Vec<&str> = accounts.iter().map(|a| a.currency.code()).collect();
    let (kinds, users): (Vec<&str>, Vec<Option<i64>>) = accounts
        .iter()
        .map(|a| match a.owner {
            Owner::User(user) => ("user_available", Some(user.get())),
            Owner::External(external) => (external.kind(), None),
        })
        .unzip();
    let balances: Vec<Decimal> = accounts.iter().map(|a| a.balance).collect();
    let held: Vec<Decimal> = accounts.iter().map(|a| a.held).collect();
    let opened = sqlx::query!(
        "INSERT INTO accounts (id, kind, currency, user_id, balance, held)
         OVERRIDING SYSTEM VALUE
         SELECT id, kind, currency, user_id, balance, held
         FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::numeric[], $6::numeric[])
             AS a(id, kind, currency, user_id, balance, held)
         ORDER BY kind, user_id, currency
         ON CONFLICT DO NOTHING",
        &ids,
        &kinds as &[&str],
        &currencies as &[&str],
        &users as &[Option<i64>],
        &balances,
        &held,
    )
    .execute(db)
    .await?;
    Ok(usize::try_from(opened.rows_affected()).unwrap_or(usize::MAX))
}

/// Ids the batch reserves, and what it reads once its rows are locked.
#[derive(Debug)]
pub struct Prepared {
    pub now: DateTime<Utc>,
    pub deals: Vec<i64>,
    pub payments: Vec<i64>,
    pub accounts: Vec<i64>,
    pub transfers: Vec<i64>,
    /// Waiting deals of the users whose balance may rise, as of now (to check the locked set).
    pub waiting: Vec<i64>,
    pub externals: Vec<(External, Currency, AccountId)>,
    /// The disputes of the deals locked.
    pub disputes: Vec<(DealId, DisputeView)>,
}

struct PreparedRow {
    now: DateTime<Utc>,
    deals: Vec<i64>,
    payments: Vec<i64>,
    accounts: Vec<i64>,
    transfers: Vec<i64>,
    waiting: Vec<i64>,
    external_kinds: Vec<String>,
    external_currencies: Vec<String>,
    externals: Vec<i64>,
    /// `[deal id, dispute]` pairs as one JSON array: a single sub-plan to start, where seven arrays of
    /// columns cost as much as the rest of the statement.
    disputes: Option<sqlx::types::Json<Vec<(DealId, DisputeView)>>>,
}

/// How many ids of each kind a batch reserves.
#[derive(Debug, Clone, Copy)]
pub struct Reserve {
    pub deals: usize,
    pub payments: usize,
    pub accounts: usize,
    pub transfers: usize,
}

/// The transaction's timestamp, fresh ids (deals; payments; an escrow account per deal, then the
/// accounts the batch may open; transfers), the waiting deals of `rising`, the existing external
/// accounts of `externals` (through their own small index, which the `kind` condition selects) and
/// the disputes of the deals `locked` — in one statement, after the locks, so that it reads what the
/// transactions that held those rows before this batch committed. The ids come from the identity
/// columns' sequences named as literals (resolved once, when the statement is prepared; looking them
/// up with `pg_get_serial_sequence` read the catalog for every id).
pub async fn prepare(
    db: &mut PgConnection,
    reserve: Reserve,
    rising: &[i64],
    externals: &[(External, Currency)],
    locked: &[i64],
) -> sqlx::Result<Prepared> {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let (kinds, currencies): (Vec<&str>, Vec<&str>) = externals
        .iter()
        .map(|(external, currency)| (external.kind(), currency.code()))
        .unzip();
    let row = sqlx::query_as!(
        PreparedRow,
        r#"WITH external AS MATERIALIZED (
               SELECT a.id, a.kind, a.currency FROM accounts a
               JOIN unnest($5::text[], $6::text[]) AS x(kind, currency) ON a.kind = x.kind AND a.currency = x.currency
               WHERE a.kind IN ('deposits_received', 'operator_adjustments'))
           SELECT now() AS "now!",
                  ARRAY(SELECT nextval('deals_id_seq') FROM generate_series(1, $1::bigint)) AS "deals!",
                  ARRAY(SELECT nextval('payments_id_seq') FROM generate_series(1, $7::bigint)) AS "payments!",
                  ARRAY(SELECT nextval('accounts_id_seq') FROM generate_series(1, $2::bigint)) AS "accounts!",
                  ARRAY(SELECT nextval('transfers_id_seq') FROM generate_series(1, $3::bigint)) AS "transfers!",
                  ARRAY(SELECT id FROM deals WHERE waiting AND customer_id = ANY($4)) AS "waiting!",
                  ARRAY(SELECT kind FROM external ORDER BY id) AS "external_kinds!",
                  ARRAY(SELECT currency FROM external ORDER BY id) AS "external_currencies!",
                  ARRAY(SELECT id FROM external ORDER BY id) AS "externals!",
                  (SELECT json_agg(json_build_array(deal_id, json_build_object(
                              'opened_by', opened_by, 'title', title, 'description', description,
                              'opened_at', opened_at, 'resolution', resolution, 'resolved_at', resolved_at)))
                   FROM disputes WHERE deal_id = ANY($8))
                      AS "disputes?: sqlx::types::Json<Vec<(DealId, DisputeView)>>""#,
        count(reserve.deals),
        count(reserve.deals + reserve.accounts),
        count(reserve.transfers),
        rising,
        &kinds as &[&str],
        &currencies as &[&str],
        count(reserve.payments),
        locked,
    )
    .fetch_one(db)
    .await?;
    let currency = |code: &str| {
        code.parse::<Currency>()
            .map_err(|err| sqlx::Error::Decode(err.to_string().into()))
    };
    let mut externals = Vec::with_capacity(row.externals.len());
    for ((kind, code), id) in row
        .external_kinds
        .iter()
        .zip(&row.external_currencies)
        .zip(&row.externals)
    {
        let external = External::parse(kind)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown external account kind {kind}").into()))?;
        externals.push((external, currency(code)?, *id));
    }
    Ok(Prepared {
        now: row.now,
        deals: row.deals,
        payments: row.payments,
        accounts: row.accounts,
        transfers: row.transfers,
        waiting: row.waiting,
        externals,
        disputes: row.disputes.map(|json| json.0).unwrap_or_default(),
    })
}

/// An event ready for the outbox; its `sequence` is added by the write, from the aggregate's row.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub event_id: Uuid,
    pub subject: String,
    /// The event serialised as a JSON object; the write appends `"sequence"` before its closing brace.
    pub payload: String,
    pub aggregate: &'static str,
    pub aggregate_id: i64,
    /// 1-based place among this batch's events of the aggregate.
    pub ordinal: i64,
    /// This batch's events of the aggregate.
    pub count: i64,
}

/// Everything a batch writes (but external balances).
#[derive(Debug)]
pub struct Writes<'a> {
    pub now: DateTime<Utc>,
    pub inserted: Vec<&'a Deal>,
    /// The escrow balance of each inserted deal after the batch.
    pub escrow_balances: Vec<Decimal>,
    pub updated: Vec<&'a Deal>,
    pub opened_disputes: Vec<(DealId, &'a DisputeView)>,
    pub resolved_disputes: Vec<(DealId, &'a DisputeView)>,
    pub transfers: Vec<(i64, &'a TransferDraft)>,
    /// Net changes of (balance, held) of existing accounts.
    pub deltas: Vec<(AccountId, Decimal, Decimal)>,
    pub sequences: Vec<(&'static str, i64, i64)>,
    pub outbox: Vec<OutboxRow>,
    pub answers: &'a [Answer],
}

/// Writes a batch's effects with one call of `ledger_write` (migrations/0011): one statement per kind
/// of row, each run only when the batch has such rows, planned once per connection with a generic
/// plan and sequential scans off (the batch's transaction sets both), so none is planned again for
/// every batch and each finds its rows through their indexes. New deals and escrows go first, in their
/// final state, so the transfers and disputes that name them find them; only existing rows are
/// updated. Each statement checks its foreign keys as it ends. The event sequences are the only rows
/// another batch may hold: they are taken sorted, and each event's sequence is computed from its
/// aggregate's new last value.
pub async fn write(db: &mut PgConnection, w: Writes<'_>) -> sqlx::Result<()> {
    let ids = |deals: &[&Deal], f: fn(&Deal) -> i64| deals.iter().map(|d| f(d)).collect::<Vec<i64>>();
    let p1 = ids(&w.inserted, |d| d.id.get());
    let p2 = ids(&w.inserted, |d| d.tenant_id.get());
    let p3 = ids(&w.inserted, |d| d.customer_id.get());
    let p4 = ids(&w.inserted, |d| d.performer_id.get());
    let p5 = w.inserted.iter().map(|d| d.title.as_str()).collect::<Vec<_>>();
    let p6 = w.inserted.iter().map(|d| d.description.as_str()).collect::<Vec<_>>();
    let p7 = w.inserted.iter().map(|d| d.amount).collect::<Vec<_>>();
    let p8 = w.inserted.iter().map(|d| d.currency.code()).collect::<Vec<_>>();
    let p9 = w.inserted.iter().map(|d| d.status.as_str()).collect::<Vec<_>>();
    let p10 = w.inserted.iter().map(|d| d.deadline_at).collect::<Vec<_>>();
    let p11 = w.inserted.iter().map(|d| d.funded_at).collect::<Vec<_>>();
    let p12 = w.inserted.iter().map(|d| d.created_at).collect::<Vec<_>>();
    let p13 = w.inserted.iter().map(|d| d.updated_at).collect::<Vec<_>>();
    let p14 = ids(&w.inserted, |d| d.escrow);
    let p15 = &w.escrow_balances;
    let p16 = ids(&w.updated, |d| d.id.get());
    let p17 = w.updated.iter().map(|d| d.status.as_str()).collect::<Vec<_>>();
    let p18 = w.updated.iter().map(|d| d.funded_at).collect::<Vec<_>>();
    let p19 = w.updated.iter().map(|d| d.updated_at).collect::<Vec<_>>();
    let p20 = w.opened_disputes.iter().map(|(id, _)| id.get()).collect::<Vec<_>>();
    let p21 = w
        .opened_disputes
        .iter()
        .map(|(_, d)| d.opened_by.get())
        .collect::<Vec<_>>();
    let p22 = w
        .opened_disputes
        .iter()
        .map(|(_, d)| d.title.as_str())
        .collect::<Vec<_>>();
    let p23 = w
        .opened_disputes
        .iter()
        .map(|(_, d)| d.description.as_str())
        .collect::<Vec<_>>();
    let p24 = w.opened_disputes.iter().map(|(_, d)| d.opened_at).collect::<Vec<_>>();
    let p25 = w
        .opened_disputes
        .iter()
        .map(|(_, d)| d.resolution.as_deref())
        .collect::<Vec<_>>();
    let p26 = w.opened_disputes.iter().map(|(_, d)| d.resolved_at).collect::<Vec<_>>();
    let p27 = w.resolved_disputes.iter().map(|(id, _)| id.get()).collect::<Vec<_>>();
    let p28 = w
        .resolved_disputes
        .iter()
        .map(|(_, d)| d.resolution.as_deref())
        .collect::<Vec<_>>();
    let p29 = w
        .resolved_disputes
        .iter()
        .map(|(_, d)| d.resolved_at)
        .collect::<Vec<_>>();
    let p30 = w.transfers.iter().map(|(id, _)| *id).collect::<Vec<_>>();
    let p31 = w.transfers.iter().map(|(_, t)| t.debit).collect::<Vec<_>>();
    let p32 = w.transfers.iter().map(|(_, t)| t.credit).collect::<Vec<_>>();
    let p33 = w.transfers.iter().map(|(_, t)| t.amount).collect::<Vec<_>>();
    let p34 = w.transfers.iter().map(|(_, t)| t.currency.code()).collect::<Vec<_>>();
    let p35 = w.transfers.iter().map(|(_, t)| t.kind.as_str()).collect::<Vec<_>>();
    let p36 = w
        .transfers
        .iter()
        .map(|(_, t)| t.deal_id.map(DealId::get))
        .collect::<Vec<_>>();
    let p37 = w.transfers.iter().map(|(_, t)| t.command.as_uuid()).collect::<Vec<_>>();
    let p38 = w.transfers.iter().map(|(_, t)| t.reason.as_deref()).collect::<Vec<_>>();
    let p39 = w.now;
    let p40 = w.deltas.iter().map(|(id, _, _)| *id).collect::<Vec<_>>();
    let p41 = w.deltas.iter().map(|(_, delta, _)| *delta).collect::<Vec<_>>();
    let p58 = w.deltas.iter().map(|(_, _, held)| *held).collect::<Vec<_>>();
    let p42 = w
        .sequences
        .iter()
        .map(|(aggregate, _, _)| *aggregate)
        .collect::<Vec<_>>();
    let p43 = w.sequences.iter().map(|(_, id, _)| *id).collect::<Vec<_>>();
    let p44 = w.sequences.iter().map(|(_, _, count)| *count).collect::<Vec<_>>();
    let p45 = w.outbox.iter().map(|e| e.event_id).collect::<Vec<_>>();
    let p48 = w.outbox.iter().map(|e| e.aggregate).collect::<Vec<_>>();
    let p49 = w.outbox.iter().map(|e| e.aggregate_id).collect::<Vec<_>>();
    let p50 = w.outbox.iter().map(|e| e.ordinal).collect::<Vec<_>>();
    let p51 = w.outbox.iter().map(|e| e.count).collect::<Vec<_>>();
    // Subjects and payloads are moved, not copied: the outbox rows are not needed after the write.
    let (p46, p47): (Vec<String>, Vec<String>) = w.outbox.into_iter().map(|e| (e.subject, e.payload)).unzip();
    let p52 = w.answers.iter().map(|a| a.id).collect::<Vec<_>>();
    let p53 = w.answers.iter().map(|a| a.tenant_id.get()).collect::<Vec<_>>();
    let p54 = w.answers.iter().map(|a| a.kind).collect::<Vec<_>>();
    let p55 = w.answers.iter().map(|a| a.fingerprint.as_str()).collect::<Vec<_>>();
    let p56 = w.answers.iter().map(|a| a.verdict.kind()).collect::<Vec<_>>();
    let p57 = w
        .answers
        .iter()
        .map(|a| a.verdict.body_ref().map(sqlx::types::Json))
        .collect::<Vec<_>>();
    sqlx::query_scalar!(
        r#"SELECT ledger_write($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36, $37, $38, $39, $40, $41, $42, $43, $44, $45, $46, $47, $48, $49, $50, $51, $52, $53, $54, $55, $56, $57, $58) AS "written!""#,
        &p1,
        &p2,
        &p3,
        &p4,
        &p5 as &[&str],
        &p6 as &[&str],
        &p7,
        &p8 as &[&str],
        &p9 as &[&str],
        &p10 as &[Option<DateTime<Utc>>],
        &p11 as &[Option<DateTime<Utc>>],
        &p12,
        &p13,
        &p14,
        p15.as_slice(),
        &p16,
        &p17 as &[&str],
        &p18 as &[Option<DateTime<Utc>>],
        &p19,
        &p20,
        &p21,
        &p22 as &[&str],
        &p23 as &[&str],
        &p24,
        &p25 as &[Option<&str>],
        &p26 as &[Option<DateTime<Utc>>],
        &p27,
        &p28 as &[Option<&str>],
        &p29 as &[Option<DateTime<Utc>>],
        &p30,
        &p31,
        &p32,
        &p33,
        &p34 as &[&str],
        &p35 as &[&str],
        &p36 as &[Option<i64>],
        &p37,
        &p38 as &[Option<&str>],
        p39,
        &p40,
        &p41,
        &p42 as &[&str],
        &p43,
        &p44,
        &p45,
        &p46,
        &p47,
        &p48 as &[&str],
        &p49,
        &p50,
        &p51,
        &p52,
        &p53,
        &p54 as &[&str],
        &p55 as &[&str],
        &p56 as &[&str],
        // Encoded as jsonb[] like `Option<Value>`, without copying the results.
        &p57 as _,
        &p58,
    )
    .fetch_one(db)
    .await?;
    Ok(())
}

/// A batch's payment rows and deposits.
#[derive(Debug)]
pub struct PaymentWrites<'a> {
    /// New payments in their final state, with the HD index of each address.
    pub created: Vec<(&'a PaymentRow, u32)>,
    pub changed: Vec<&'a PaymentRow>,
    /// Credited deposits with the id of their transfer (written by `write` before).
    pub deposits: Vec<(&'a NewDeposit, i64)>,
}

/// Inserts the new payments, updates the changed ones (locked by `lock_payments`) and records the
/// credited deposits, in one statement; `deposits (txid, log_index)` is unique, so a transfer
/// credited twice fails the batch instead of paying twice.
pub async fn write_payments(db: &mut PgConnection, w: PaymentWrites<'_>) -> sqlx::Result<()> {
    let new_ids: Vec<i64> = w.created.iter().map(|(p, _)| p.id.get()).collect();
    let new_tenants: Vec<i64> = w.created.iter().map(|(p, _)| p.tenant_id.get()).collect();
    let new_users: Vec<i64> = w.created.iter().map(|(p, _)| p.user_id.get()).collect();
    let new_gateways: Vec<i64> = w.created.iter().map(|(p, _)| p.gateway_id).collect();
    let new_currencies: Vec<&str> = w.created.iter().map(|(p, _)| p.currency.code()).collect();
    let new_amounts: Vec<Decimal> = w.created.iter().map(|(p, _)| p.amount).collect();
    let new_indexes: Vec<i64> = w.created.iter().map(|(_, index)| i64::from(*index)).collect();
    let new_addresses: Vec<&str> = w.created.iter().map(|(p, _)| p.address.as_str()).collect();
    let new_tokens: Vec<&str> = w.created.iter().map(|(p, _)| p.token_contract.as_str()).collect();
    let new_expiries: Vec<DateTime<Utc>> = w.created.iter().map(|(p, _)| p.expires_at).collect();
    let new_created: Vec<DateTime<Utc>> = w.created.iter().map(|(p, _)| p.created_at).collect();
    let changed_ids: Vec<i64> = w.changed.iter().map(|p| p.id.get()).collect();
    let changed_received: Vec<Decimal> = w.changed.iter().map(|p| p.received).collect();
    let changed_status: Vec<&str> = w.changed.iter().map(|p| p.status.as_str()).collect();
    let changed_at: Vec<DateTime<Utc>> = w.changed.iter().map(|p| p.updated_at).collect();
    let d_payments: Vec<i64> = w.deposits.iter().map(|(d, _)| d.payment_id.get()).collect();
    let d_txids: Vec<&str> = w.deposits.iter().map(|(d, _)| d.txid.as_str()).collect();
    let d_indexes: Vec<i32> = w
        .deposits
        .iter()
        .map(|(d, _)| i32::try_from(d.log_index).unwrap_or(i32::MAX))
        .collect();
    let d_amounts: Vec<Decimal> = w.deposits.iter().map(|(d, _)| d.amount).collect();
    let d_blocks: Vec<i64> = w
        .deposits
        .iter()
        .map(|(d, _)| i64::try_from(d.block_number).unwrap_or(i64::MAX))
        .collect();
    let d_times: Vec<DateTime<Utc>> = w.deposits.iter().map(|(d, _)| d.block_time).collect();
    let d_late: Vec<bool> = w.deposits.iter().map(|(d, _)| d.late).collect();
    let d_transfers: Vec<i64> = w.deposits.iter().map(|(_, transfer)| *transfer).collect();
    let d_commands: Vec<Uuid> = w.deposits.iter().map(|(d, _)| d.command.as_uuid()).collect();
    sqlx::query!(
        r#"WITH created AS (
               INSERT INTO payments (id, tenant_id, user_id, gateway_id, currency, amount, received, status,
                                     hd_index, address, token_contract, expires_at, created_at, updated_at)
               OVERRIDING SYSTEM VALUE
               SELECT id, tenant_id, user_id, gateway_id, currency, amount, 0, 'waiting', hd_index, address,
                      token_contract, expires_at, created_at, created_at
               FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[], $6::numeric[],
                           $7::bigint[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[])
                   AS p(id, tenant_id, user_id, gateway_id, currency, amount, hd_index, address, token_contract,
                        expires_at, created_at)),
           changed AS (
               UPDATE payments p SET received = u.received, status = u.status, updated_at = u.updated_at
               FROM unnest($12::bigint[], $13::numeric[], $14::text[], $15::timestamptz[])
                   AS u(id, received, status, updated_at)
               WHERE p.id = u.id),
           credited AS (
               INSERT INTO deposits (payment_id, txid, log_index, amount, block_number, block_time, late,
                                     transfer_id, command_id)
               SELECT * FROM unnest($16::bigint[], $17::text[], $18::integer[], $19::numeric[], $20::bigint[],
                                    $21::timestamptz[], $22::boolean[], $23::bigint[], $24::uuid[]))
           SELECT 1 AS "written!""#,
        &new_ids,
        &new_tenants,
        &new_users,
        &new_gateways,
        &new_currencies as &[&str],
        &new_amounts,
        &new_indexes,
        &new_addresses as &[&str],
        &new_tokens as &[&str],
        &new_expiries,
        &new_created,
        &changed_ids,
        &changed_received,
        &changed_status as &[&str],
        &changed_at,
        &d_payments,
        &d_txids as &[&str],
        &d_indexes,
        &d_amounts,
        &d_blocks,
        &d_times,
        &d_late,
        &d_transfers,
        &d_commands,
    )
    .fetch_one(db)
    .await?;
    Ok(())
}

/// Adds each account's net change to its balance; the database refuses a user or escrow balance
/// below zero (`balance_not_negative`), which the engine has already ruled out.
pub async fn apply_deltas(db: &mut PgConnection, deltas: &[(AccountId, Decimal)]) -> sqlx::Result<()> {
    if deltas.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = deltas.iter().map(|(id, _)| *id).collect();
    let amounts: Vec<Decimal> = deltas.iter().map(|(_, delta)| *delta).collect();
    sqlx::query!(
        "UPDATE accounts a SET balance = a.balance + u.delta
         FROM unnest($1::bigint[], $2::numeric[]) AS u(id, delta) WHERE a.id = u.id",
        &ids,
        &amounts,
    )
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

/// Counts an attempt at a command whose earlier delivery ended without a verdict, in a transaction of
/// its own (so a crash during the attempt still counts). Returns the attempts so far, this one
/// included, and whether the command has a verdict already (then the attempt only answers it).
pub async fn count_attempt(db: &mut PgConnection, id: CommandId) -> sqlx::Result<(i32, bool)> {
    let counted = sqlx::query!(
        r#"WITH counted AS (
               INSERT INTO command_attempts (id, attempts) VALUES ($1, 1)
               ON CONFLICT (id) DO UPDATE SET attempts = command_attempts.attempts + 1, updated_at = now()
               RETURNING attempts)
           SELECT attempts AS "attempts!",
                  EXISTS (SELECT 1 FROM commands WHERE id = $1 AND outcome <> 'failed') AS "has_verdict!"
           FROM counted"#,
        id.as_uuid(),
    )
    .fetch_one(db)
    .await?;
    Ok((counted.attempts, counted.has_verdict))
}

pub async fn record_attempt_error(db: &mut PgConnection, id: CommandId, error: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE command_attempts SET last_error = $2, updated_at = now() WHERE id = $1",
        id.as_uuid(),
        error,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The stored outcome (`applied`, `refused`, `failed`) of a command, if it has a verdict.
pub async fn stored_outcome(db: &mut PgConnection, id: CommandId) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("SELECT outcome FROM commands WHERE id = $1", id.as_uuid())
        .fetch_optional(db)
        .await
}

/// A terminal `failed` verdict for a dead-lettered command (unless a verdict exists already).
pub async fn record_failure(db: &mut PgConnection, answer: &Answer) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO commands (id, tenant_id, kind, fingerprint, outcome, body) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO NOTHING",
        answer.id,
        answer.tenant_id.get(),
        answer.kind,
        answer.fingerprint,
        answer.verdict.kind(),
        answer.verdict.body(),
    )
    .execute(db)
    .await?;
    Ok(())
}
