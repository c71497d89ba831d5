//! Deal commands. Each transition locks the deal row, asks the state machine table
//! ([`guarantor_domain::deal::decide`]) and moves the money in the same transaction, so concurrent
//! actions on one deal serialise and exactly one of two conflicting actions wins.

use guarantor_domain::deal::{decide, Money, Outcome, Refusal};
use guarantor_domain::{
    Actor, Amount, CommandEnvelope, Currency, DealAction, DealId, DealStatus, DisputeOpening, NewDeal, Role, TenantId,
    UserId,
};
use guarantor_store::views::{self, DealView};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use sqlx::PgConnection;

use crate::accounts::{self, TransferKind, TransferRefs};
use crate::events::{self, BalanceChange};
use crate::rejection::{HandlerError, HandlerResult, Rejection};

fn to_json(view: &DealView) -> Result<Value, sqlx::Error> {
    serde_json::to_value(view).map_err(|err| sqlx::Error::Encode(err.into()))
}

async fn view(db: &mut PgConnection, tenant: TenantId, id: DealId) -> sqlx::Result<DealView> {
    views::deal(db, tenant, id).await?.ok_or(sqlx::Error::RowNotFound)
}

pub async fn create(
    db: &mut PgConnection,
    env: &CommandEnvelope,
    new: &NewDeal,
) -> HandlerResult<(u16, Option<Value>)> {
    if new.customer_id == new.performer_id {
        return Err(Rejection::new(
            422,
            "same_customer_and_performer",
            "the customer and the performer must differ",
        )
        .into());
    }
    Amount::from_stored(new.amount, new.currency)
        .map_err(|err| Rejection::new(422, "invalid_amount", err.to_string()))?;
    for (field, user) in [("customer_id", new.customer_id), ("performer_id", new.performer_id)] {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND tenant_id = $2)")
            .bind(user)
            .bind(env.tenant_id)
            .fetch_one(&mut *db)
            .await?;
        if !exists {
            return Err(Rejection::not_found("user", "user_not_found")
                .with_details(json!({ "field": field, "user_id": user }))
                .into());
        }
    }
    let id: DealId = sqlx::query_scalar(
        "INSERT INTO deals (tenant_id, customer_id, performer_id, title, description, amount, currency, status, deadline_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'created', $8) RETURNING id",
    )
    .bind(env.tenant_id)
    .bind(new.customer_id)
    .bind(new.performer_id)
    .bind(&new.title)
    .bind(&new.description)
    .bind(new.amount)
    .bind(new.currency)
    .bind(new.deadline_at)
    .fetch_one(&mut *db)
    .await?;
    accounts::open_escrow(db, id, new.currency).await?;
    let deal = view(db, env.tenant_id, id).await?;
    events::deal_event(db, &deal, env.tenant_id, "created", json!({})).await?;
    Ok((200, Some(to_json(&deal)?)))
}

/// The deal's row as a transition needs it, locked until the transaction ends.
#[derive(sqlx::FromRow)]
struct LockedDeal {
    tenant_id: TenantId,
    customer_id: UserId,
    performer_id: UserId,
    status: DealStatus,
    amount: Decimal,
    currency: Currency,
}

async fn lock(db: &mut PgConnection, tenant: TenantId, id: DealId) -> HandlerResult<LockedDeal> {
    sqlx::query_as(
        "SELECT tenant_id, customer_id, performer_id, status, amount, currency FROM deals
         WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(&mut *db)
    .await?
    .ok_or_else(|| {
        Rejection::not_found("deal", "deal_not_found")
            .with_details(json!({ "deal_id": id }))
            .into()
    })
}

/// Who is acting: the arbiter key, or the deal's party named by `Acting-User`.
fn actor_of(env: &CommandEnvelope, deal: &LockedDeal, acting_user: Option<UserId>) -> Result<Actor, Rejection> {
    match (env.role, acting_user) {
        (Role::Arbiter, _) => Ok(Actor::Arbiter),
        (Role::Platform, Some(user)) if user == deal.customer_id => Ok(Actor::Customer),
        (Role::Platform, Some(user)) if user == deal.performer_id => Ok(Actor::Performer),
        (Role::Platform, Some(user)) => Err(Rejection::forbidden(
            "not_a_party",
            "the acting user is not a party of this deal",
        )
        .with_details(json!({ "acting_user": user }))),
        (Role::Platform, None) => Err(Rejection::forbidden("forbidden", "this action needs an arbiter key")),
        (Role::Admin, _) => Err(Rejection::forbidden(
            "forbidden",
            "deal actions need a platform or arbiter key",
        )),
    }
}

fn refusal(action: DealAction, refusal: Refusal) -> Rejection {
    match refusal {
        Refusal::WrongActor { allowed } => {
            let allowed: Vec<&str> = allowed.iter().map(|actor| actor.as_str()).collect();
            Rejection::forbidden(
                "wrong_party",
                format!("only the {} may {}", allowed.join(" or "), action.as_str()),
            )
            .with_details(json!({ "allowed": allowed }))
        }
        Refusal::InvalidTransition { current } => Rejection::conflict(
            "invalid_transition",
            format!("cannot {} a deal in status {current}", action.as_str()),
        )
        .with_details(json!({ "status": current, "action": action })),
    }
}

fn event_name(action: DealAction) -> &'static str {
    match action {
        DealAction::Deny => "denied",
        DealAction::Confirm => "confirmed",
        DealAction::Fund => "funded",
        DealAction::Cancel => "cancelled",
        DealAction::Dispute => "disputed",
        DealAction::Close => "closed",
        DealAction::ClosePerformer | DealAction::CloseCustomer => "resolved",
    }
}

pub async fn act(
    db: &mut PgConnection,
    env: &CommandEnvelope,
    id: DealId,
    action: DealAction,
    acting_user: Option<UserId>,
    dispute: Option<&DisputeOpening>,
) -> HandlerResult<(u16, Option<Value>)> {
    let deal = lock(db, env.tenant_id, id).await?;
    let actor = actor_of(env, &deal, acting_user)?;
    let outcome = decide(deal.status, action, actor).map_err(|r| refusal(action, r))?;
    if action == DealAction::Dispute && dispute.is_none() {
        return Err(Rejection::new(422, "validation_failed", "a dispute needs a title").into());
    }
    let previous = deal.status;
    let mut name = event_name(action);
    let to = match outcome {
        Outcome::HoldIfCovered { funded, waiting } => {
            let available = accounts::user_account(db, deal.customer_id, deal.currency).await?;
            if accounts::locked_balance(db, available).await? >= deal.amount {
                hold(db, env, id, &deal).await?;
                funded
            } else {
                name = "waiting_for_payment";
                waiting
            }
        }
        Outcome::To(to, money) => {
            match money {
                Money::None => {}
                Money::Hold => hold(db, env, id, &deal).await?,
                Money::Release => pay_out(db, env, id, &deal, deal.performer_id, TransferKind::Release).await?,
                Money::Refund => pay_out(db, env, id, &deal, deal.customer_id, TransferKind::Refund).await?,
            }
            to
        }
    };
    set_status(db, id, to).await?;
    let mut changes = json!({ "previous_status": previous, "action": action });
    match (action, dispute) {
        (DealAction::Dispute, Some(opening)) => open_dispute(db, id, acting_user, opening).await?,
        (DealAction::ClosePerformer | DealAction::CloseCustomer, _) => {
            let resolution = if action == DealAction::CloseCustomer {
                "customer"
            } else {
                "performer"
            };
            sqlx::query("UPDATE disputes SET resolution = $2, resolved_at = now() WHERE deal_id = $1")
                .bind(id)
                .bind(resolution)
                .execute(&mut *db)
                .await?;
            changes["resolution"] = json!(resolution);
        }
        _ => {}
    }
    let view = view(db, deal.tenant_id, id).await?;
    events::deal_event(db, &view, deal.tenant_id, name, changes).await?;
    // Money that reached a user's available balance funds that user's waiting deals.
    match outcome {
        Outcome::To(_, Money::Release) => fund_waiting(db, deal.performer_id, deal.currency, env).await?,
        Outcome::To(_, Money::Refund) => fund_waiting(db, deal.customer_id, deal.currency, env).await?,
        Outcome::To(_, Money::None | Money::Hold) | Outcome::HoldIfCovered { .. } => {}
    }
    if action == DealAction::Deny {
        return Ok((200, None));
    }
    Ok((200, Some(to_json(&view)?)))
}

async fn set_status(db: &mut PgConnection, id: DealId, to: DealStatus) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE deals SET status = $2, updated_at = now(),
                funded_at = CASE WHEN $3 AND funded_at IS NULL THEN now() ELSE funded_at END
         WHERE id = $1",
    )
    .bind(id)
    .bind(to)
    .bind(to.is_funded())
    .execute(db)
    .await?;
    Ok(())
}

async fn open_dispute(
    db: &mut PgConnection,
    id: DealId,
    opened_by: Option<UserId>,
    opening: &DisputeOpening,
) -> HandlerResult<()> {
    let opened_by = opened_by.ok_or_else(|| Rejection::new(400, "missing_acting_user", "Acting-User is required"))?;
    sqlx::query("INSERT INTO disputes (deal_id, opened_by, title, description) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(opened_by)
        .bind(&opening.title)
        .bind(&opening.description)
        .execute(db)
        .await?;
    Ok(())
}

/// Customer available → deal escrow.
async fn hold(db: &mut PgConnection, env: &CommandEnvelope, id: DealId, deal: &LockedDeal) -> HandlerResult<()> {
    hold_for(db, env, id, deal.customer_id, deal.amount, deal.currency).await
}

async fn hold_for(
    db: &mut PgConnection,
    env: &CommandEnvelope,
    id: DealId,
    customer: UserId,
    amount: Decimal,
    currency: Currency,
) -> HandlerResult<()> {
    let from = accounts::user_account(db, customer, currency).await?;
    let escrow = accounts::escrow_account(db, id).await?;
    let refs = TransferRefs {
        deal_id: Some(id),
        command_id: Some(env.id),
        reason: None,
    };
    let transfer_id = accounts::transfer(db, from, escrow, amount, currency, TransferKind::Hold, &refs).await?;
    events::balance_changed(
        db,
        BalanceChange {
            user_id: customer,
            currency,
            available_delta: -amount,
            kind: TransferKind::Hold,
            transfer_id,
            deal_id: Some(id),
            reason: None,
        },
    )
    .await?;
    Ok(())
}

/// Deal escrow → `to`'s available balance (release to the performer, refund to the customer).
async fn pay_out(
    db: &mut PgConnection,
    env: &CommandEnvelope,
    id: DealId,
    deal: &LockedDeal,
    to: UserId,
    kind: TransferKind,
) -> HandlerResult<()> {
    let escrow = accounts::escrow_account(db, id).await?;
    let available = accounts::user_account(db, to, deal.currency).await?;
    let refs = TransferRefs {
        deal_id: Some(id),
        command_id: Some(env.id),
        reason: None,
    };
    let transfer_id = accounts::transfer(db, escrow, available, deal.amount, deal.currency, kind, &refs).await?;
    let mut change = BalanceChange {
        user_id: to,
        currency: deal.currency,
        available_delta: deal.amount,
        kind,
        transfer_id,
        deal_id: Some(id),
        reason: None,
    };
    events::balance_changed(db, change.clone()).await?;
    if to != deal.customer_id {
        // The customer's `held` went down by the released amount.
        change.user_id = deal.customer_id;
        change.available_delta = Decimal::ZERO;
        events::balance_changed(db, change).await?;
    }
    Ok(())
}

/// Funds `customer`'s deals waiting for payment in `currency`, oldest first, while the available
/// balance covers them. Called whenever that balance rises.
pub async fn fund_waiting(
    db: &mut PgConnection,
    customer: UserId,
    currency: Currency,
    env: &CommandEnvelope,
) -> HandlerResult<()> {
    let waiting: Vec<(DealId, TenantId, Decimal)> = sqlx::query_as(
        "SELECT id, tenant_id, amount FROM deals
         WHERE customer_id = $1 AND currency = $2 AND status = 'waiting_for_payment'
         ORDER BY id FOR UPDATE",
    )
    .bind(customer)
    .bind(currency)
    .fetch_all(&mut *db)
    .await?;
    if waiting.is_empty() {
        return Ok(());
    }
    let to = match decide(DealStatus::WaitingForPayment, DealAction::Fund, Actor::System) {
        Ok(Outcome::To(to, Money::Hold)) => to,
        other => {
            let problem = format!("the state machine must fund a waiting deal with a hold, not {other:?}");
            return Err(HandlerError::Database(sqlx::Error::Protocol(problem)));
        }
    };
    let account = accounts::user_account(db, customer, currency).await?;
    let mut available = accounts::locked_balance(db, account).await?;
    for (id, tenant_id, amount) in waiting {
        if available < amount {
            break;
        }
        hold_for(db, env, id, customer, amount, currency).await?;
        set_status(db, id, to).await?;
        let view = view(db, tenant_id, id).await?;
        events::deal_event(
            db,
            &view,
            tenant_id,
            "funded",
            json!({ "previous_status": DealStatus::WaitingForPayment, "action": DealAction::Fund }),
        )
        .await?;
        available -= amount;
    }
    Ok(())
}
