//! The set-based batch engine. One transaction per batch with a constant number of statements:
//! claim the commands (a racing redelivery waits, then answers the stored verdict), lock every row
//! the batch can touch in one global order, run the state machine over the rows in memory in stream
//! order, then write the effects with one call of `ledger_write` and commit. Replies go out only
//! after the commit (the consumer's job).

mod repo;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;

use chrono::Utc;
use guarantor_domain::{
    Command, CommandEnvelope, CommandId, CommandReply, Currency, DealAction, DealId, ErrorCode, PaymentId, Rejection,
    TenantId, UserId, Verdict,
};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgConnection;

pub use repo::{count_attempt, record_attempt_error, stored_outcome, Answer};
use state::{Account, BatchState, Draft, External, Owner, Step, Upserted};

use crate::error::EngineError;

/// The version of the event envelope (`schema_version`).
pub const SCHEMA_VERSION: u32 = 1;

/// How often a batch is re-planned when a deal became waiting between planning and locking.
const PLAN_ROUNDS: usize = 4;

/// A command as the engine receives it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub envelope: CommandEnvelope,
    /// Re-driven from the DLQ by an operator: a stored `failed` verdict is applied anew.
    pub redrive: bool,
}

/// Applies `batch` in one transaction and returns one reply per command, in order.
pub async fn apply_batch(db: &mut PgConnection, batch: &[Incoming]) -> Result<Vec<CommandReply>, EngineError> {
    let mut keys: Vec<i64> = batch.iter().map(|item| repo::lock_key(item.envelope.id)).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut extra = Vec::new();
    for _ in 0..PLAN_ROUNDS {
        let mut tx = repo::begin_claimed(db, &keys).await?;
        match run(&mut tx, batch, &extra).await? {
            Ran::Done(replies) => {
                tx.commit().await?;
                return Ok(replies);
            }
            Ran::Replan(missed) => {
                tx.rollback().await?;
                extra.extend(missed);
            }
        }
    }
    Err(EngineError::Transient(
        "waiting deals kept changing while the batch was planned".into(),
    ))
}

/// Writes the terminal `failed` verdict of a command that is being dead-lettered.
pub async fn record_failure(
    db: &mut PgConnection,
    envelope: &CommandEnvelope,
    error: &str,
) -> Result<Verdict, EngineError> {
    let verdict = Verdict::Failed {
        rejection: Rejection::new(
            ErrorCode::CommandFailed,
            "the ledger could not apply this command; it was set aside for an operator",
        )
        .with_details(json!({ "command_id": envelope.id })),
    };
    tracing::error!(command_id = %envelope.id, error, "command failed for good; dead-lettered");
    repo::record_failure(
        db,
        &Answer {
            id: envelope.id.as_uuid(),
            tenant_id: envelope.tenant_id,
            kind: envelope.command.kind(),
            fingerprint: envelope.fingerprint.clone(),
            verdict: verdict.clone(),
        },
    )
    .await?;
    Ok(verdict)
}

enum Ran {
    Done(Vec<CommandReply>),
    /// These waiting deals were not in the locked set: lock them too and start again.
    Replan(Vec<i64>),
}

/// What to do with one message of the batch.
enum Plan {
    /// Answered from the inbox (or refused as a reused key) without applying anything.
    Answer(Verdict),
    /// Applied by this batch.
    Fresh,
    /// The same command id as an earlier message of this batch.
    SameAs(usize),
}

fn key_reused() -> Verdict {
    Verdict::refused(Rejection::new(
        ErrorCode::IdempotencyKeyReused,
        "this Idempotency-Key was used with another request",
    ))
}

/// What the batch's commands name, found before anything is read.
#[derive(Default)]
struct Reach {
    deals: BTreeSet<i64>,
    users: BTreeSet<i64>,
    payments: BTreeSet<i64>,
}

async fn run(db: &mut PgConnection, batch: &[Incoming], extra_waiting: &[i64]) -> Result<Ran, EngineError> {
    // 1. What the commands name, and the verdicts already stored (the command ids are locked by
    //    `begin_claimed`; deal parties never change, so they are read without a lock to plan the locks).
    let mut reach = Reach::default();
    for item in batch {
        let env = &item.envelope;
        match &env.command {
            Command::UpsertUser { .. } => {}
            Command::CreateDeal(new) => {
                reach.users.extend([new.customer_id.get(), new.performer_id.get()]);
            }
            Command::ActOnDeal { deal_id, .. } => {
                reach.deals.insert(deal_id.get());
            }
            Command::AdjustBalance { user_id, .. } => {
                reach.users.insert(user_id.get());
            }
            Command::CreatePayment(new) => {
                reach.users.insert(new.user_id.get());
            }
            Command::ObserveDeposit(observation) => {
                reach.payments.insert(observation.payment_id.get());
            }
            Command::ExpirePayment { payment_id } => {
                reach.payments.insert(payment_id.get());
            }
        }
    }
    let ids: Vec<uuid::Uuid> = batch.iter().map(|item| item.envelope.id.as_uuid()).collect();
    let acted: Vec<i64> = reach.deals.iter().copied().collect();
    let users: Vec<i64> = reach.users.iter().copied().collect();
    let planned = repo::plan(db, &ids, &acted, &users).await?;
    let mut first_of: HashMap<CommandId, usize> = HashMap::new();
    let plans: Vec<Plan> = batch
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let env = &item.envelope;
            if let Some(&first) = first_of.get(&env.id) {
                return if batch[first].envelope.fingerprint == env.fingerprint {
                    Plan::SameAs(first)
                } else {
                    Plan::Answer(key_reused())
                };
            }
            first_of.insert(env.id, index);
            match planned.stored.get(&env.id.as_uuid()) {
                Some(stored) if stored.fingerprint != env.fingerprint => Plan::Answer(key_reused()),
                Some(stored) if matches!(stored.verdict, Verdict::Failed { .. }) && item.redrive => Plan::Fresh,
                Some(stored) => Plan::Answer(stored.verdict.clone()),
                None => Plan::Fresh,
            }
        })
        .collect();
    let fresh: Vec<&CommandEnvelope> = batch
        .iter()
        .zip(&plans)
        .filter(|(_, plan)| matches!(plan, Plan::Fresh))
        .map(|(item, _)| &item.envelope)
        .collect();

    // 2. The payments observed or expired, locked, and which of the observed transfers are credited
    //    already. Then plan the locks: the accounts money may move on, and the users whose balance
    //    may rise.
    let (payments, credited) = if reach.payments.is_empty() {
        (BTreeMap::new(), Default::default())
    } else {
        let payment_ids: Vec<i64> = reach.payments.iter().copied().collect();
        let observed: Vec<(&str, u32)> = fresh
            .iter()
            .filter_map(|env| match &env.command {
                Command::ObserveDeposit(seen) => Some((seen.txid.as_str(), seen.log_index)),
                _ => None,
            })
            .collect();
        let (rows, credited) = repo::lock_payments(db, &payment_ids, &observed).await?;
        (rows.into_iter().map(|row| (row.id, row)).collect(), credited)
    };
    let parties: HashMap<DealId, (UserId, UserId, Currency)> = planned
        .parties
        .iter()
        .map(|(deal, customer, performer, currency)| (*deal, (*customer, *performer, *currency)))
        .collect();
    let mut accounts: BTreeSet<(UserId, Currency)> = BTreeSet::new();
    let mut rising: BTreeSet<i64> = BTreeSet::new();
    let mut upserts: BTreeMap<(i64, String), String> = BTreeMap::new();
    let mut creates = 0;
    let mut payments_created = 0;
    let mut externals: BTreeSet<(External, Currency)> = BTreeSet::new();
    for env in &fresh {
        match &env.command {
            Command::UpsertUser { external_id, name } => {
                upserts.insert((env.tenant_id.get(), external_id.clone()), name.clone());
            }
            Command::CreateDeal(_) => creates += 1,
            Command::AdjustBalance {
                user_id,
                currency,
                amount,
                ..
            } => {
                accounts.insert((*user_id, *currency));
                externals.insert((External::OperatorAdjustments, *currency));
                if amount.is_sign_positive() {
                    rising.insert(user_id.get());
                }
            }
            Command::ActOnDeal { deal_id, action, .. } => {
                let Some(&(customer, performer, currency)) = parties.get(deal_id) else {
                    continue;
                };
                let (moves, rises): (&[UserId], &[UserId]) = match action {
                    DealAction::Confirm | DealAction::Fund => (&[customer], &[]),
                    DealAction::Close | DealAction::ClosePerformer => (&[customer, performer], &[performer]),
                    DealAction::CloseCustomer => (&[customer], &[customer]),
                    DealAction::Deny | DealAction::Cancel | DealAction::Dispute => (&[], &[]),
                };
                accounts.extend(moves.iter().map(|user| (*user, currency)));
                rising.extend(rises.iter().map(|user| user.get()));
            }
            Command::CreatePayment(_) => payments_created += 1,
            Command::ObserveDeposit(seen) => {
                if let Some(payment) = payments.get(&seen.payment_id) {
                    accounts.insert((payment.user_id, payment.currency));
                    externals.insert((External::DepositsReceived, payment.currency));
                    rising.insert(payment.user_id.get());
                }
            }
            Command::ExpirePayment { .. } => {}
        }
    }
    let mut tenant_of_user: HashMap<UserId, TenantId> = planned.tenants.iter().copied().collect();
    tenant_of_user.extend(payments.values().map(|payment| (payment.user_id, payment.tenant_id)));

    // 3. The batch's upserts (sorted by tenant and external id).
    let upsert_rows: Vec<(TenantId, String, String)> = upserts
        .iter()
        .filter_map(|((tenant, external), name)| {
            TenantId::new(*tenant)
                .ok()
                .map(|tenant| (tenant, external.clone(), name.clone()))
        })
        .collect();
    let upserted: HashMap<(TenantId, String), Upserted> = if upsert_rows.is_empty() {
        HashMap::new()
    } else {
        repo::upsert_users(db, &upsert_rows)
            .await?
            .into_iter()
            .map(|(tenant, external, id, created_at, existed)| {
                (
                    (tenant, external),
                    Upserted {
                        id,
                        created_at,
                        existed,
                    },
                )
            })
            .collect()
    };

    // 4. The rows the batch holds, in one statement: deals by id (the acted ones and the waiting deals
    //    of every user whose balance may rise), then accounts by id (the available accounts money may
    //    move on, the escrows of those deals).
    let mut deal_ids = acted.clone();
    deal_ids.extend_from_slice(extra_waiting);
    let rising: Vec<i64> = rising.into_iter().collect();
    let account_keys: Vec<(UserId, Currency)> = accounts
        .iter()
        .filter(|(user, _)| tenant_of_user.contains_key(user))
        .copied()
        .collect();
    let repo::Locked { deals, accounts } = if deal_ids.is_empty() && rising.is_empty() && account_keys.is_empty() {
        repo::Locked::default()
    } else {
        repo::lock(db, &deal_ids, &rising, &account_keys).await?
    };
    let locked_deal_ids: Vec<i64> = deals.iter().map(|deal| deal.id.get()).collect();
    let mut state = BatchState {
        tenant_of_user,
        upserted,
        payments,
        credited,
        ..BatchState::default()
    };
    for row in accounts {
        if let Some(user) = row.user_id {
            state.available.insert((user, row.currency), row.id);
            state.held.insert((user, row.currency), row.held);
        }
        state.accounts.insert(
            row.id,
            Account {
                balance: row.balance,
                external: false,
            },
        );
    }

    // 5. Fresh ids, the locked deals' disputes (read after the locks, so as fresh as the rows), and a
    //    check that no deal became waiting unseen.
    let missing: Vec<(UserId, Currency)> = account_keys
        .iter()
        .filter(|key| !state.available.contains_key(key))
        .copied()
        .collect();
    let waiting_locked = deals
        .iter()
        .filter(|deal| deal.status == guarantor_domain::DealStatus::WaitingForPayment)
        .count();
    let reserve = repo::Reserve {
        deals: creates,
        payments: payments_created,
        accounts: missing.len() + externals.len(),
        // A command moves money once, and funds each waiting deal at most once (those waiting now and
        // those that start waiting in the batch).
        transfers: 2 * fresh.len() + waiting_locked,
    };
    let wanted: Vec<(External, Currency)> = externals.iter().copied().collect();
    let prepared = repo::prepare(db, reserve, &rising, &wanted, &locked_deal_ids).await?;
    let locked: BTreeSet<DealId> = deals.iter().map(|deal| deal.id).collect();
    let missed: Vec<i64> = prepared
        .waiting
        .iter()
        .copied()
        .filter(|id| DealId::new(*id).is_ok_and(|id| !locked.contains(&id)))
        .collect();
    if !missed.is_empty() {
        return Ok(Ran::Replan(missed));
    }
    let mut disputes: HashMap<DealId, _> = prepared.disputes.into_iter().collect();
    for deal in deals {
        if deal.status == guarantor_domain::DealStatus::WaitingForPayment {
            state
                .waiting
                .entry((deal.customer_id, deal.currency))
                .or_default()
                .insert(deal.id);
        }
        let dispute = disputes.remove(&deal.id);
        state.deals.insert(deal.id, state::Deal { dispute, ..deal });
    }
    for (external, currency, id) in &prepared.externals {
        state.external.insert((*external, *currency), *id);
        state.accounts.insert(
            *id,
            Account {
                balance: Decimal::ZERO,
                external: true,
            },
        );
    }
    state.now = prepared.now;
    state.fresh_payments = prepared
        .payments
        .iter()
        .filter_map(|id| PaymentId::new(*id).ok())
        .collect();
    let (escrows, spare) = prepared.accounts.split_at(creates.min(prepared.accounts.len()));
    state.fresh_ids = prepared
        .deals
        .iter()
        .zip(escrows)
        .filter_map(|(deal, escrow)| DealId::new(*deal).ok().map(|deal| (deal, *escrow)))
        .collect();
    // Accounts that do not exist yet get reserved ids; they are opened only if money moves on them.
    let mut spare = spare.iter().copied();
    let unopened_externals: Vec<(External, Currency)> = wanted
        .iter()
        .filter(|key| !state.external.contains_key(key))
        .copied()
        .collect();
    for (owner, currency) in missing
        .iter()
        .map(|(user, currency)| (Owner::User(*user), *currency))
        .chain(
            unopened_externals
                .into_iter()
                .map(|(external, currency)| (Owner::External(external), currency)),
        )
    {
        let id = spare
            .next()
            .ok_or_else(|| EngineError::Deterministic("the batch reserved too few account ids".into()))?;
        match owner {
            Owner::User(user) => state.available.insert((user, currency), id),
            Owner::External(external) => state.external.insert((external, currency), id),
        };
        state.unopened.insert(id, (owner, currency));
        state.accounts.insert(
            id,
            Account {
                balance: Decimal::ZERO,
                external: matches!(owner, Owner::External(_)),
            },
        );
    }
    let external: BTreeSet<i64> = state.external.values().copied().collect();

    // 6. The state machine, in stream order, in memory.
    let steps = {
        let state = &mut state;
        std::panic::catch_unwind(AssertUnwindSafe(move || {
            fresh
                .iter()
                .map(|env| state.apply(env).map(|step| (*env, step)))
                .collect::<Result<Vec<_>, _>>()
        }))
        .map_err(|panic| EngineError::Deterministic(format!("the engine panicked: {}", panic_message(&panic))))?
        .map_err(|broken| EngineError::Deterministic(format!("ledger invariant: {}", broken.0)))?
    };

    // 7. Write the effects: accounts opened for the first time, then everything else in one statement.
    if state.transfers.len() > prepared.transfers.len() {
        return Err(EngineError::Deterministic(format!(
            "{} transfers but {} reserved ids",
            state.transfers.len(),
            prepared.transfers.len()
        )));
    }
    let transfer_ids = &prepared.transfers;
    let render = |draft: Draft| -> Result<Value, EngineError> {
        let mut value = draft.value;
        if let Some(index) = draft.transfer {
            let id = transfer_ids
                .get(index)
                .ok_or_else(|| EngineError::Deterministic("a transfer has no reserved id".into()))?;
            value["transfer_id"] = json!(id);
        }
        Ok(value)
    };
    // An account is opened when money moves on it (or what its user holds changes, which only
    // happens with a transfer on a held account; counted all the same, so no change is dropped).
    let used: BTreeSet<i64> = state
        .transfers
        .iter()
        .flat_map(|t| [t.debit, t.credit])
        .chain(state.held_deltas.keys().copied())
        .collect();
    let opening: Vec<repo::NewAccount> = state
        .unopened
        .iter()
        .filter(|(id, _)| used.contains(id))
        .map(|(id, (owner, currency))| repo::NewAccount {
            id: *id,
            owner: *owner,
            currency: *currency,
            balance: state.deltas.get(id).copied().unwrap_or_default(),
            held: state.held_deltas.get(id).copied().unwrap_or_default(),
        })
        .collect();
    if repo::open_accounts(db, &opening).await? < opening.len() {
        // Another transaction opened one of these accounts since the batch looked: plan again.
        return Ok(Ran::Replan(Vec::new()));
    }
    let created: BTreeSet<DealId> = state.created_deals.iter().copied().collect();
    let inserted: Vec<&state::Deal> = state
        .created_deals
        .iter()
        .filter_map(|id| state.deals.get(id))
        .collect();
    let new_escrows: BTreeSet<i64> = inserted.iter().map(|deal| deal.escrow).collect();
    let opened: BTreeSet<DealId> = state.opened_disputes.iter().copied().collect();
    let dispute_of = |id: &DealId| {
        state
            .deals
            .get(id)
            .and_then(|deal| deal.dispute.as_ref())
            .map(|d| (*id, d))
    };
    let written = |id: &i64| !state.unopened.contains_key(id) && !new_escrows.contains(id);
    let external_deltas: Vec<(i64, Decimal)> = state
        .deltas
        .iter()
        .filter(|(id, delta)| !delta.is_zero() && external.contains(id) && written(id))
        .map(|(id, delta)| (*id, *delta))
        .collect();
    let changed: BTreeSet<i64> = state
        .deltas
        .keys()
        .chain(state.held_deltas.keys())
        .copied()
        .filter(|id| !external.contains(id) && written(id))
        .collect();
    let internal_deltas: Vec<(i64, Decimal, Decimal)> = changed
        .into_iter()
        .map(|id| {
            let delta = state.deltas.get(&id).copied().unwrap_or_default();
            (id, delta, state.held_deltas.get(&id).copied().unwrap_or_default())
        })
        .filter(|(_, delta, held)| !delta.is_zero() || !held.is_zero())
        .collect();
    let mut counts: BTreeMap<(&'static str, i64), i64> = BTreeMap::new();
    for event in &state.events {
        *counts.entry((event.aggregate, event.aggregate_id)).or_default() += 1;
    }
    let mut ordinals: BTreeMap<(&'static str, i64), i64> = BTreeMap::new();
    let occurred_at = Utc::now();
    let events = std::mem::take(&mut state.events);
    let mut outbox = Vec::with_capacity(events.len());
    for event in events {
        let key = (event.aggregate, event.aggregate_id);
        let ordinal = ordinals.entry(key).or_default();
        *ordinal += 1;
        let event_id = uuid::Uuid::now_v7();
        outbox.push(repo::OutboxRow {
            event_id,
            subject: format!(
                "guarantor.evt.{}.{}.{}",
                event.aggregate, event.aggregate_id, event.name
            ),
            payload: serde_json::to_string(&json!({
                "id": event_id,
                "type": format!("{}.{}", event.aggregate, event.name),
                "schema_version": SCHEMA_VERSION,
                "occurred_at": occurred_at,
                "tenant_id": event.tenant_id,
                "data": render(event.data)?,
            }))
            .map_err(|err| EngineError::Deterministic(format!("an event is not serialisable: {err}")))?,
            aggregate: event.aggregate,
            aggregate_id: event.aggregate_id,
            ordinal: *ordinal,
            count: counts.get(&key).copied().unwrap_or(1),
        });
    }
    let mut answers = Vec::with_capacity(steps.len());
    for (env, step) in steps {
        let verdict = match step {
            Step::Applied(body) => Verdict::Applied {
                body: body.map(render).transpose()?,
            },
            Step::Refused(rejection) => Verdict::refused(rejection),
        };
        answers.push(Answer {
            id: env.id.as_uuid(),
            tenant_id: env.tenant_id,
            kind: env.command.kind(),
            fingerprint: env.fingerprint.clone(),
            verdict,
        });
    }
    let writes = repo::Writes {
        now: state.now,
        escrow_balances: inserted
            .iter()
            .map(|deal| state.deltas.get(&deal.escrow).copied().unwrap_or_default())
            .collect(),
        inserted,
        updated: state
            .changed_deals
            .iter()
            .filter(|id| !created.contains(id))
            .filter_map(|id| state.deals.get(id))
            .collect(),
        opened_disputes: opened.iter().filter_map(dispute_of).collect(),
        resolved_disputes: state
            .resolved_disputes
            .iter()
            .filter(|id| !opened.contains(id))
            .filter_map(dispute_of)
            .collect(),
        transfers: transfer_ids.iter().copied().zip(&state.transfers).collect(),
        deltas: internal_deltas,
        sequences: counts
            .iter()
            .map(|((aggregate, id), count)| (*aggregate, *id, *count))
            .collect(),
        outbox,
        answers: &answers,
    };
    repo::write(db, writes).await?;
    if !state.created_payments.is_empty() || !state.changed_payments.is_empty() {
        let created_ids: BTreeSet<PaymentId> = state.created_payments.iter().map(|p| p.id).collect();
        let mut deposits = Vec::with_capacity(state.deposits.len());
        for deposit in &state.deposits {
            let transfer = transfer_ids
                .get(deposit.transfer)
                .ok_or_else(|| EngineError::Deterministic("a deposit's transfer has no reserved id".into()))?;
            deposits.push((deposit, *transfer));
        }
        repo::write_payments(
            db,
            repo::PaymentWrites {
                created: state
                    .created_payments
                    .iter()
                    .filter_map(|created| state.payments.get(&created.id).map(|row| (row, created.hd_index)))
                    .collect(),
                changed: state
                    .changed_payments
                    .iter()
                    .filter(|id| !created_ids.contains(id))
                    .filter_map(|id| state.payments.get(id))
                    .collect(),
                deposits,
            },
        )
        .await?;
    }
    // The hot external rows last: their locks are held only across the commit.
    repo::apply_deltas(db, &external_deltas).await?;

    // The verdicts move from the inbox rows into the replies: written, they are not needed again.
    let mut verdicts: HashMap<CommandId, Verdict> = answers
        .into_iter()
        .map(|answer| (CommandId::from_uuid(answer.id), answer.verdict))
        .collect();
    let mut replies: Vec<CommandReply> = Vec::with_capacity(batch.len());
    for (index, (item, plan)) in batch.iter().zip(plans).enumerate() {
        let verdict = match plan {
            Plan::Answer(verdict) => verdict,
            Plan::Fresh => verdicts
                .remove(&item.envelope.id)
                .ok_or_else(|| EngineError::Deterministic(format!("command {index} has no verdict")))?,
            Plan::SameAs(first) => replies
                .get(first)
                .map(|reply| reply.verdict.clone())
                .ok_or_else(|| EngineError::Deterministic(format!("command {index} repeats an unknown one")))?,
        };
        replies.push(CommandReply {
            command_id: item.envelope.id,
            fingerprint: item.envelope.fingerprint.clone(),
            verdict,
        });
    }
    Ok(Ran::Done(replies))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
