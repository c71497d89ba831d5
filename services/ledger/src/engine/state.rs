//! The batch in memory: the rows a batch locked, and the commands applied to them in stream order by
//! plain Rust. A handler checks everything before it changes anything, so a refusal leaves the state
//! as it found it and needs no savepoint. What changed is collected as effects for the set-based
//! writes; invariants are asserted on the way (a breach is a deterministic failure, never a refusal).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use chrono::{DateTime, Utc};
use guarantor_domain::deal::{decide, Money, Outcome, Refusal};
use guarantor_domain::payment::USDT_TRC20_GATEWAY_ID;
use guarantor_domain::{
    format_wire, Actor, Amount, Command, CommandEnvelope, CommandId, Currency, DealAction, DealId, DealStatus,
    DepositObservation, DisputeOpening, ErrorCode, NewDeal, NewPayment, PaymentId, PaymentStatus, Rejection, Role,
    TenantId, UserId,
};
use guarantor_store::views::{DealView, DisputeView, PaymentRow, UserView};
use rust_decimal::Decimal;
use serde_json::{json, Value};

pub type AccountId = i64;

/// A deal row as the batch holds it (locked, or created by the batch).
#[derive(Debug, Clone)]
pub struct Deal {
    pub id: DealId,
    pub tenant_id: TenantId,
    pub customer_id: UserId,
    pub performer_id: UserId,
    pub title: String,
    pub description: String,
    pub amount: Decimal,
    pub currency: Currency,
    pub status: DealStatus,
    pub deadline_at: Option<DateTime<Utc>>,
    pub funded_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub dispute: Option<DisputeView>,
    pub escrow: AccountId,
}

impl Deal {
    pub fn view(&self) -> DealView {
        DealView {
            deal_id: self.id,
            title: self.title.clone(),
            description: self.description.clone(),
            amount: format_wire(self.amount, self.currency),
            currency: self.currency,
            customer_id: self.customer_id,
            performer_id: self.performer_id,
            status: self.status,
            deadline_at: self.deadline_at,
            funded_at: self.funded_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            dispute: self.dispute.clone(),
        }
    }
}

/// A user the batch upserted: the row after the batch's statement, and whether it existed before.
#[derive(Debug, Clone)]
pub struct Upserted {
    pub id: UserId,
    pub created_at: DateTime<Utc>,
    pub existed: bool,
}

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

/// The accounts where money enters or leaves the books, one per currency; their balances run
/// negative by design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum External {
    /// The counterpart of operators' audited corrections.
    OperatorAdjustments,
    /// The counterpart of every credited deposit (coins that arrived on chain).
    DepositsReceived,
}

impl External {
    pub fn kind(self) -> &'static str {
        match self {
            External::OperatorAdjustments => "operator_adjustments",
            External::DepositsReceived => "deposits_received",
        }
    }

    pub fn parse(kind: &str) -> Option<External> {
        [External::OperatorAdjustments, External::DepositsReceived]
            .into_iter()
            .find(|external| external.kind() == kind)
    }
}

/// Who an account belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    User(UserId),
    External(External),
}

/// A payment the batch created, with the HD index of its address.
#[derive(Debug, Clone, Copy)]
pub struct CreatedPayment {
    pub id: PaymentId,
    pub hd_index: u32,
}

/// A deposit the batch credits.
#[derive(Debug, Clone)]
pub struct NewDeposit {
    pub payment_id: PaymentId,
    pub txid: String,
    pub log_index: u32,
    pub amount: Decimal,
    pub block_number: u64,
    pub block_time: DateTime<Utc>,
    pub late: bool,
    /// Index of its transfer in the batch's transfers.
    pub transfer: usize,
    pub command: CommandId,
}

#[derive(Debug, Clone)]
pub struct TransferDraft {
    pub debit: AccountId,
    pub credit: AccountId,
    pub amount: Decimal,
    pub currency: Currency,
    pub kind: TransferKind,
    pub deal_id: Option<DealId>,
    pub command: CommandId,
    pub reason: Option<String>,
}

/// JSON that still needs the id of one of the batch's transfers (allocated after the batch ran).
#[derive(Debug, Clone)]
pub struct Draft {
    pub value: Value,
    pub transfer: Option<usize>,
}

impl Draft {
    fn plain(value: Value) -> Self {
        Self { value, transfer: None }
    }
}

#[derive(Debug, Clone)]
pub struct EventDraft {
    pub tenant_id: TenantId,
    pub aggregate: &'static str,
    pub aggregate_id: i64,
    pub name: &'static str,
    pub data: Draft,
}

/// The result of one command.
#[derive(Debug, Clone)]
pub enum Step {
    Applied(Option<Draft>),
    Refused(Rejection),
}

/// A breach of the engine's own invariants: a bug, handled as a deterministic failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken(pub String);

/// An account a batch may move money on, with its balance as the batch sees it.
#[derive(Debug, Clone)]
pub struct Account {
    pub balance: Decimal,
    /// Negative balances are allowed (external accounts, where money enters the books).
    pub external: bool,
}

/// Everything a batch read, and everything it changed.
#[derive(Debug, Default)]
pub struct BatchState {
    pub now: DateTime<Utc>,
    pub tenant_of_user: HashMap<UserId, TenantId>,
    pub deals: BTreeMap<DealId, Deal>,
    pub available: HashMap<(UserId, Currency), AccountId>,
    pub accounts: BTreeMap<AccountId, Account>,
    /// Held per customer and currency: the escrow of their funded deals.
    pub held: HashMap<(UserId, Currency), Decimal>,
    /// Waiting deals per customer and currency, oldest first (complete for every user whose
    /// balance can rise in this batch).
    pub waiting: HashMap<(UserId, Currency), BTreeSet<DealId>>,
    pub external: HashMap<(External, Currency), AccountId>,
    /// Accounts that do not exist yet, with reserved ids: opened by the batch's writes only if money
    /// moved on them (so a refused command opens nothing).
    pub unopened: BTreeMap<AccountId, (Owner, Currency)>,
    /// The payments observed or expired by the batch, locked.
    pub payments: BTreeMap<PaymentId, PaymentRow>,
    /// (txid, log index) already credited, before or by this batch.
    pub credited: HashSet<(String, u32)>,
    /// Ids reserved for the payments this batch creates.
    pub fresh_payments: VecDeque<PaymentId>,
    /// Ids reserved for the deals (and their escrow accounts) this batch creates.
    pub fresh_ids: VecDeque<(DealId, AccountId)>,
    pub upserted: HashMap<(TenantId, String), Upserted>,
    /// Upserted users already answered in this batch (a second upsert of one user is an update).
    pub upserted_seen: BTreeSet<UserId>,
    // Effects.
    pub created_deals: Vec<DealId>,
    pub changed_deals: BTreeSet<DealId>,
    pub opened_disputes: Vec<DealId>,
    pub resolved_disputes: Vec<DealId>,
    pub created_payments: Vec<CreatedPayment>,
    pub changed_payments: BTreeSet<PaymentId>,
    pub deposits: Vec<NewDeposit>,
    pub transfers: Vec<TransferDraft>,
    pub events: Vec<EventDraft>,
    /// Net balance change per account.
    pub deltas: BTreeMap<AccountId, Decimal>,
    /// Net change of `held` per available account (the customer's, on every hold and pay-out).
    pub held_deltas: BTreeMap<AccountId, Decimal>,
}

fn not_found_user(field: Option<&str>, user: UserId) -> Rejection {
    let details = match field {
        Some(field) => json!({ "field": field, "user_id": user }),
        None => json!({ "user_id": user }),
    };
    Rejection::new(ErrorCode::UserNotFound, "user not found").with_details(details)
}

fn to_value<T: serde::Serialize>(value: &T) -> Result<Value, Broken> {
    serde_json::to_value(value).map_err(|err| Broken(format!("a view did not serialise: {err}")))
}

/// A payment's view as events carry it: without the list of deposits (each event names its own).
fn event_view(view: &Value) -> Value {
    let mut data = view.clone();
    if let Some(fields) = data.as_object_mut() {
        fields.remove("deposits");
    }
    data
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

fn refusal(action: DealAction, refusal: Refusal) -> Rejection {
    match refusal {
        Refusal::WrongActor { allowed } => {
            let allowed: Vec<&str> = allowed.iter().map(|actor| actor.as_str()).collect();
            Rejection::new(
                ErrorCode::WrongParty,
                format!("only the {} may {}", allowed.join(" or "), action.as_str()),
            )
            .with_details(json!({ "allowed": allowed }))
        }
        Refusal::InvalidTransition { current } => Rejection::new(
            ErrorCode::InvalidTransition,
            format!("cannot {} a deal in status {current}", action.as_str()),
        )
        .with_details(json!({ "status": current, "action": action })),
    }
}

/// Who is acting: the arbiter key, or the deal's party named by `Acting-User`.
fn actor_of(role: Role, deal: &Deal, acting_user: Option<UserId>) -> Result<Actor, Rejection> {
    match (role, acting_user) {
        (Role::Arbiter, _) => Ok(Actor::Arbiter),
        (Role::Platform, Some(user)) if user == deal.customer_id => Ok(Actor::Customer),
        (Role::Platform, Some(user)) if user == deal.performer_id => Ok(Actor::Performer),
        (Role::Platform, Some(user)) => Err(Rejection::new(
            ErrorCode::NotAParty,
            "the acting user is not a party of this deal",
        )
        .with_details(json!({ "acting_user": user }))),
        (Role::Platform, None) => Err(Rejection::new(ErrorCode::Forbidden, "this action needs an arbiter key")),
        (Role::Admin, _) => Err(Rejection::new(
            ErrorCode::Forbidden,
            "deal actions need a platform or arbiter key",
        )),
    }
}

impl BatchState {
    /// Applies one command to the state.
    pub fn apply(&mut self, env: &CommandEnvelope) -> Result<Step, Broken> {
        match &env.command {
            Command::UpsertUser { external_id, name } => self.upsert(env, external_id, name),
            Command::CreateDeal(new) => self.create(env, new),
            Command::ActOnDeal {
                deal_id,
                action,
                acting_user,
                dispute,
            } => self.act(env, *deal_id, *action, *acting_user, dispute.as_ref()),
            Command::AdjustBalance {
                user_id,
                currency,
                amount,
                reason,
            } => self.adjust(env, *user_id, *currency, *amount, reason),
            Command::CreatePayment(new) => self.create_payment(env, new),
            Command::ObserveDeposit(observation) => self.credit_deposit(env, observation),
            Command::ExpirePayment { payment_id } => self.expire(env, *payment_id),
        }
    }

    fn upsert(&mut self, env: &CommandEnvelope, external_id: &str, name: &str) -> Result<Step, Broken> {
        let row = self
            .upserted
            .get(&(env.tenant_id, external_id.to_owned()))
            .cloned()
            .ok_or_else(|| Broken(format!("user {external_id:?} was not upserted by the batch")))?;
        let created = !row.existed && !self.upserted_seen.contains(&row.id);
        self.upserted_seen.insert(row.id);
        let user = UserView {
            id: row.id,
            external_id: external_id.to_owned(),
            name: name.to_owned(),
            created_at: row.created_at,
            updated_at: self.now,
        };
        let view = to_value(&user)?;
        let mut data = view.clone();
        data["created"] = json!(created);
        self.emit(env.tenant_id, "user", row.id.get(), "upserted", Draft::plain(data));
        Ok(Step::Applied(Some(Draft::plain(view))))
    }

    fn user_in_tenant(&self, user: UserId, tenant: TenantId) -> bool {
        self.tenant_of_user.get(&user) == Some(&tenant)
    }

    fn create(&mut self, env: &CommandEnvelope, new: &NewDeal) -> Result<Step, Broken> {
        if new.customer_id == new.performer_id {
            return Ok(Step::Refused(Rejection::new(
                ErrorCode::SameCustomerAndPerformer,
                "the customer and the performer must differ",
            )));
        }
        if let Err(err) = Amount::from_stored(new.amount, new.currency) {
            return Ok(Step::Refused(Rejection::new(ErrorCode::InvalidAmount, err.to_string())));
        }
        for (field, user) in [("customer_id", new.customer_id), ("performer_id", new.performer_id)] {
            if !self.user_in_tenant(user, env.tenant_id) {
                return Ok(Step::Refused(not_found_user(Some(field), user)));
            }
        }
        let (id, escrow) = self
            .fresh_ids
            .pop_front()
            .ok_or_else(|| Broken("the batch reserved too few deal ids".into()))?;
        let deal = Deal {
            id,
            tenant_id: env.tenant_id,
            customer_id: new.customer_id,
            performer_id: new.performer_id,
            title: new.title.clone(),
            description: new.description.clone(),
            amount: new.amount,
            currency: new.currency,
            status: DealStatus::Created,
            deadline_at: new.deadline_at,
            funded_at: None,
            created_at: self.now,
            updated_at: self.now,
            dispute: None,
            escrow,
        };
        self.accounts.insert(
            escrow,
            Account {
                balance: Decimal::ZERO,
                external: false,
            },
        );
        let view = to_value(&deal.view())?;
        self.deals.insert(id, deal);
        self.created_deals.push(id);
        self.emit(env.tenant_id, "deal", id.get(), "created", Draft::plain(view.clone()));
        Ok(Step::Applied(Some(Draft::plain(view))))
    }

    fn act(
        &mut self,
        env: &CommandEnvelope,
        id: DealId,
        action: DealAction,
        acting_user: Option<UserId>,
        dispute: Option<&DisputeOpening>,
    ) -> Result<Step, Broken> {
        let Some(deal) = self.deals.get(&id).filter(|deal| deal.tenant_id == env.tenant_id) else {
            return Ok(Step::Refused(
                Rejection::new(ErrorCode::DealNotFound, "deal not found").with_details(json!({ "deal_id": id })),
            ));
        };
        let deal = deal.clone();
        let actor = match actor_of(env.role, &deal, acting_user) {
            Ok(actor) => actor,
            Err(rejection) => return Ok(Step::Refused(rejection)),
        };
        let outcome = match decide(deal.status, action, actor) {
            Ok(outcome) => outcome,
            Err(r) => return Ok(Step::Refused(refusal(action, r))),
        };
        let opening = match (action, dispute, acting_user) {
            (DealAction::Dispute, None, _) => {
                return Ok(Step::Refused(Rejection::new(
                    ErrorCode::ValidationFailed,
                    "a dispute needs a title",
                )))
            }
            (DealAction::Dispute, Some(_), None) => {
                return Ok(Step::Refused(Rejection::new(
                    ErrorCode::MissingActingUser,
                    "Acting-User is required",
                )))
            }
            (DealAction::Dispute, Some(opening), Some(user)) => Some((opening, user)),
            _ => None,
        };
        // Everything is checked: from here on the command applies.
        let mut name = event_name(action);
        let (to, money) = match outcome {
            Outcome::HoldIfCovered { funded, waiting } => {
                if self.available_balance(deal.customer_id, deal.currency)? >= deal.amount {
                    (funded, Money::Hold)
                } else {
                    name = "waiting_for_payment";
                    (waiting, Money::None)
                }
            }
            Outcome::To(to, money) => (to, money),
        };
        let previous = deal.status;
        self.set_status(id, to)?;
        let mut changes = json!({ "previous_status": previous, "action": action });
        if let Some((opening, user)) = opening {
            let now = self.now;
            self.opened_disputes.push(id);
            self.deal_mut(id)?.dispute = Some(DisputeView {
                opened_by: user,
                title: opening.title.clone(),
                description: opening.description.clone(),
                opened_at: now,
                resolution: None,
                resolved_at: None,
            });
        }
        if matches!(action, DealAction::ClosePerformer | DealAction::CloseCustomer) {
            let resolution = if action == DealAction::CloseCustomer {
                "customer"
            } else {
                "performer"
            };
            let now = self.now;
            let dispute = self
                .deal_mut(id)?
                .dispute
                .as_mut()
                .ok_or_else(|| Broken(format!("deal {id} is resolved without a dispute")))?;
            dispute.resolution = Some(resolution.to_owned());
            dispute.resolved_at = Some(now);
            self.resolved_disputes.push(id);
            changes["resolution"] = json!(resolution);
        }
        // The money moves after the status, so the balance events see the deal as it now is.
        let credited = match money {
            Money::None => None,
            Money::Hold => {
                self.hold(env, &deal)?;
                None
            }
            Money::Release => {
                self.pay_out(env, &deal, deal.performer_id, TransferKind::Release)?;
                Some(deal.performer_id)
            }
            Money::Refund => {
                self.pay_out(env, &deal, deal.customer_id, TransferKind::Refund)?;
                Some(deal.customer_id)
            }
        };
        let key = (deal.customer_id, deal.currency);
        if to == DealStatus::WaitingForPayment {
            self.waiting.entry(key).or_default().insert(id);
        } else if let Some(ids) = self.waiting.get_mut(&key) {
            ids.remove(&id);
        }
        let view = to_value(&self.deal(id)?.view())?;
        let mut data = view.clone();
        if let (Some(data), Value::Object(changes)) = (data.as_object_mut(), changes) {
            data.extend(changes);
        }
        self.emit(deal.tenant_id, "deal", id.get(), name, Draft::plain(data));
        // Money that reached a user's available balance funds that user's waiting deals.
        if let Some(user) = credited {
            self.fund_waiting(env, user, deal.currency)?;
        }
        if action == DealAction::Deny {
            return Ok(Step::Applied(None));
        }
        Ok(Step::Applied(Some(Draft::plain(view))))
    }

    fn adjust(
        &mut self,
        env: &CommandEnvelope,
        user_id: UserId,
        currency: Currency,
        amount: Decimal,
        reason: &str,
    ) -> Result<Step, Broken> {
        if env.role != Role::Admin {
            return Ok(Step::Refused(Rejection::new(
                ErrorCode::Forbidden,
                "balance adjustments need an admin key",
            )));
        }
        if amount.is_zero() || amount.scale() > currency.decimals() {
            return Ok(Step::Refused(Rejection::new(
                ErrorCode::InvalidAmount,
                "the adjustment must be non-zero with the currency's decimals",
            )));
        }
        if !self.user_in_tenant(user_id, env.tenant_id) {
            return Ok(Step::Refused(not_found_user(None, user_id)));
        }
        let available = self.available_account(user_id, currency)?;
        if amount.is_sign_negative() && self.balance(available)? < -amount {
            return Ok(Step::Refused(Rejection::new(
                ErrorCode::InsufficientFunds,
                "the available balance does not cover this amount",
            )));
        }
        let operator = self.external_account(External::OperatorAdjustments, currency)?;
        let (from, to) = if amount.is_sign_positive() {
            (operator, available)
        } else {
            (available, operator)
        };
        let transfer = self.transfer(TransferDraft {
            debit: from,
            credit: to,
            amount: amount.abs(),
            currency,
            kind: TransferKind::Adjustment,
            deal_id: None,
            command: env.id,
            reason: Some(reason.to_owned()),
        })?;
        self.balance_changed(user_id, currency, amount, transfer, Cause::Reason(reason))?;
        let balance = self.balance(available)?;
        let reply = Draft {
            value: json!({
                "user_id": user_id,
                "currency": currency,
                "amount": format_wire(amount, currency),
                "kind": TransferKind::Adjustment.as_str(),
                "reason": reason,
                "balance": format_wire(balance, currency),
                "created_at": self.now,
            }),
            transfer: Some(transfer),
        };
        if amount.is_sign_positive() {
            self.fund_waiting(env, user_id, currency)?;
        }
        Ok(Step::Applied(Some(reply)))
    }

    fn create_payment(&mut self, env: &CommandEnvelope, new: &NewPayment) -> Result<Step, Broken> {
        if env.role != Role::Platform {
            return Ok(Step::Refused(Rejection::new(
                ErrorCode::Forbidden,
                "payments are created with a platform key",
            )));
        }
        if new.gateway_id != USDT_TRC20_GATEWAY_ID {
            return Ok(Step::Refused(
                Rejection::new(ErrorCode::ValidationFailed, "unknown payment gateway")
                    .with_details(json!({ "field": "gateway_id" })),
            ));
        }
        if let Err(err) = Amount::from_stored(new.amount, new.currency) {
            return Ok(Step::Refused(Rejection::new(ErrorCode::InvalidAmount, err.to_string())));
        }
        if !self.user_in_tenant(new.user_id, env.tenant_id) {
            return Ok(Step::Refused(not_found_user(Some("user_id"), new.user_id)));
        }
        let id = self
            .fresh_payments
            .pop_front()
            .ok_or_else(|| Broken("the batch reserved too few payment ids".into()))?;
        let payment = PaymentRow {
            id,
            tenant_id: env.tenant_id,
            user_id: new.user_id,
            gateway_id: new.gateway_id,
            amount: new.amount,
            currency: new.currency,
            received: Decimal::ZERO,
            status: PaymentStatus::Waiting,
            address: new.address.clone(),
            token_contract: new.token_contract.clone(),
            expires_at: new.expires_at,
            created_at: self.now,
            updated_at: self.now,
        };
        let view = to_value(&payment.view(Vec::new()))?;
        self.payments.insert(id, payment);
        self.created_payments.push(CreatedPayment {
            id,
            hd_index: new.hd_index,
        });
        self.emit(
            env.tenant_id,
            "payment",
            id.get(),
            "created",
            Draft::plain(event_view(&view)),
        );
        Ok(Step::Applied(Some(Draft::plain(view))))
    }

    /// Credits one observed transfer to the payment's user, moves the payment's status, and funds
    /// the user's waiting deals.
    fn credit_deposit(&mut self, env: &CommandEnvelope, seen: &DepositObservation) -> Result<Step, Broken> {
        if env.role != Role::Admin {
            return Ok(Step::Refused(Rejection::new(
                ErrorCode::Forbidden,
                "deposits are observed by the scanner",
            )));
        }
        let Some(payment) = self
            .payments
            .get(&seen.payment_id)
            .filter(|payment| payment.tenant_id == env.tenant_id)
            .cloned()
        else {
            return Ok(Step::Refused(
                Rejection::new(ErrorCode::PaymentNotFound, "payment not found")
                    .with_details(json!({ "payment_id": seen.payment_id })),
            ));
        };
        let rejected = |message: &str| {
            Ok(Step::Refused(
                Rejection::new(ErrorCode::DepositRejected, message).with_details(json!({
                    "payment_id": seen.payment_id, "txid": seen.txid, "log_index": seen.log_index,
                })),
            ))
        };
        if seen.address != payment.address {
            return rejected("the transfer is not to the payment's address");
        }
        if seen.token_contract != payment.token_contract {
            return rejected("the transfer is not of the payment's token");
        }
        if seen.txid.len() != 64 || !seen.txid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return rejected("a txid is 64 lowercase hex digits");
        }
        if seen.amount <= Decimal::ZERO || seen.amount.scale() > payment.currency.decimals() {
            return Ok(Step::Refused(Rejection::new(
                ErrorCode::InvalidAmount,
                "a deposit is positive with at most the currency's decimals",
            )));
        }
        let key = (seen.txid.clone(), seen.log_index);
        if self.credited.contains(&key) {
            return rejected("this transfer was credited already");
        }
        // Everything is checked: from here on the deposit is credited.
        let (user, currency) = (payment.user_id, payment.currency);
        let available = self.available_account(user, currency)?;
        let inflow = self.external_account(External::DepositsReceived, currency)?;
        let transfer = self.transfer(TransferDraft {
            debit: inflow,
            credit: available,
            amount: seen.amount,
            currency,
            kind: TransferKind::Deposit,
            deal_id: None,
            command: env.id,
            reason: None,
        })?;
        self.credited.insert(key);
        let late = seen.block_time > payment.expires_at;
        self.deposits.push(NewDeposit {
            payment_id: payment.id,
            txid: seen.txid.clone(),
            log_index: seen.log_index,
            amount: seen.amount,
            block_number: seen.block_number,
            block_time: seen.block_time,
            late,
            transfer,
            command: env.id,
        });
        let received = payment.received + seen.amount;
        let previous = payment.status;
        let status = previous.after_deposit(received, payment.amount, late);
        let now = self.now;
        let row = self
            .payments
            .get_mut(&payment.id)
            .ok_or_else(|| Broken(format!("payment {} is not held by the batch", payment.id)))?;
        row.received = received;
        row.status = status;
        row.updated_at = now;
        let after = row.clone();
        self.changed_payments.insert(payment.id);
        let deposit = json!({
            "txid": seen.txid,
            "log_index": seen.log_index,
            "amount": format_wire(seen.amount, currency),
            "block_number": seen.block_number,
            "late": late,
        });
        let view = to_value(&after.view(Vec::new()))?;
        let mut data = event_view(&view);
        data["previous_status"] = json!(previous);
        data["deposit"] = deposit.clone();
        data["overpaid"] = json!(received > payment.amount);
        self.emit(
            payment.tenant_id,
            "payment",
            payment.id.get(),
            "received",
            Draft::plain(data.clone()),
        );
        if status != previous {
            match status {
                PaymentStatus::Success => self.emit(
                    payment.tenant_id,
                    "payment",
                    payment.id.get(),
                    "succeeded",
                    Draft::plain(data),
                ),
                PaymentStatus::Expired => self.emit(
                    payment.tenant_id,
                    "payment",
                    payment.id.get(),
                    "expired",
                    Draft::plain(data),
                ),
                PaymentStatus::Waiting | PaymentStatus::Partial => {}
            }
        }
        self.balance_changed(user, currency, seen.amount, transfer, Cause::Payment(payment.id))?;
        self.fund_waiting(env, user, currency)?;
        Ok(Step::Applied(Some(Draft {
            value: json!({ "payment_id": payment.id, "status": status, "deposit": deposit }),
            transfer: None,
        })))
    }

    fn expire(&mut self, env: &CommandEnvelope, id: PaymentId) -> Result<Step, Broken> {
        if env.role != Role::Admin {
            return Ok(Step::Refused(Rejection::new(
                ErrorCode::Forbidden,
                "payments are expired by the scanner",
            )));
        }
        let now = self.now;
        let Some(row) = self
            .payments
            .get_mut(&id)
            .filter(|payment| payment.tenant_id == env.tenant_id)
        else {
            return Ok(Step::Refused(
                Rejection::new(ErrorCode::PaymentNotFound, "payment not found")
                    .with_details(json!({ "payment_id": id })),
            ));
        };
        if row.status != PaymentStatus::Waiting || now < row.expires_at {
            return Ok(Step::Refused(
                Rejection::new(
                    ErrorCode::PaymentNotExpirable,
                    "only a waiting payment past its deadline expires",
                )
                .with_details(json!({ "payment_id": id, "status": row.status, "expires_at": row.expires_at })),
            ));
        }
        row.status = PaymentStatus::Expired;
        row.updated_at = now;
        let (tenant, view) = (row.tenant_id, to_value(&row.view(Vec::new()))?);
        self.changed_payments.insert(id);
        let mut data = event_view(&view);
        data["previous_status"] = json!(PaymentStatus::Waiting);
        self.emit(tenant, "payment", id.get(), "expired", Draft::plain(data));
        Ok(Step::Applied(Some(Draft::plain(view))))
    }

    /// Funds `customer`'s waiting deals in `currency`, oldest first, while the available balance
    /// covers them.
    fn fund_waiting(&mut self, env: &CommandEnvelope, customer: UserId, currency: Currency) -> Result<(), Broken> {
        let to = match decide(DealStatus::WaitingForPayment, DealAction::Fund, Actor::System) {
            Ok(Outcome::To(to, Money::Hold)) => to,
            other => {
                return Err(Broken(format!(
                    "the state machine must fund a waiting deal with a hold, not {other:?}"
                )))
            }
        };
        let waiting: Vec<DealId> = self
            .waiting
            .get(&(customer, currency))
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        for id in waiting {
            let deal = self.deal(id)?.clone();
            if deal.status != DealStatus::WaitingForPayment {
                return Err(Broken(format!("deal {id} is listed as waiting but is {}", deal.status)));
            }
            if self.available_balance(customer, currency)? < deal.amount {
                break;
            }
            self.set_status(id, to)?;
            self.hold(env, &deal)?;
            if let Some(ids) = self.waiting.get_mut(&(customer, currency)) {
                ids.remove(&id);
            }
            let mut data = to_value(&self.deal(id)?.view())?;
            data["previous_status"] = json!(DealStatus::WaitingForPayment);
            data["action"] = json!(DealAction::Fund);
            self.emit(deal.tenant_id, "deal", id.get(), "funded", Draft::plain(data));
        }
        Ok(())
    }

    /// Customer available → deal escrow.
    fn hold(&mut self, env: &CommandEnvelope, deal: &Deal) -> Result<(), Broken> {
        let from = self.available_account(deal.customer_id, deal.currency)?;
        let transfer = self.transfer(TransferDraft {
            debit: from,
            credit: deal.escrow,
            amount: deal.amount,
            currency: deal.currency,
            kind: TransferKind::Hold,
            deal_id: Some(deal.id),
            command: env.id,
            reason: None,
        })?;
        *self.held.entry((deal.customer_id, deal.currency)).or_default() += deal.amount;
        *self.held_deltas.entry(from).or_default() += deal.amount;
        self.balance_changed(
            deal.customer_id,
            deal.currency,
            -deal.amount,
            transfer,
            Cause::Deal(deal.id),
        )
    }

    /// Deal escrow → `to`'s available balance (release to the performer, refund to the customer).
    fn pay_out(&mut self, env: &CommandEnvelope, deal: &Deal, to: UserId, kind: TransferKind) -> Result<(), Broken> {
        let credit = self.available_account(to, deal.currency)?;
        let transfer = self.transfer(TransferDraft {
            debit: deal.escrow,
            credit,
            amount: deal.amount,
            currency: deal.currency,
            kind,
            deal_id: Some(deal.id),
            command: env.id,
            reason: None,
        })?;
        let holder = self.available_account(deal.customer_id, deal.currency)?;
        let held = self.held.entry((deal.customer_id, deal.currency)).or_default();
        *held -= deal.amount;
        if held.is_sign_negative() {
            return Err(Broken(format!(
                "customer {} would hold less than nothing",
                deal.customer_id
            )));
        }
        *self.held_deltas.entry(holder).or_default() -= deal.amount;
        self.balance_changed(to, deal.currency, deal.amount, transfer, Cause::Deal(deal.id))?;
        if to != deal.customer_id {
            // The customer's `held` went down by the released amount.
            self.balance_changed(
                deal.customer_id,
                deal.currency,
                Decimal::ZERO,
                transfer,
                Cause::Deal(deal.id),
            )?;
        }
        Ok(())
    }

    fn transfer(&mut self, draft: TransferDraft) -> Result<usize, Broken> {
        if draft.amount <= Decimal::ZERO || draft.debit == draft.credit {
            return Err(Broken(format!("malformed transfer {draft:?}")));
        }
        for (account, delta) in [(draft.debit, -draft.amount), (draft.credit, draft.amount)] {
            let row = self
                .accounts
                .get_mut(&account)
                .ok_or_else(|| Broken(format!("account {account} is not held by the batch")))?;
            row.balance += delta;
            if !row.external && row.balance.is_sign_negative() {
                return Err(Broken(format!("account {account} would go negative")));
            }
            *self.deltas.entry(account).or_default() += delta;
        }
        self.transfers.push(draft);
        Ok(self.transfers.len() - 1)
    }

    fn balance_changed(
        &mut self,
        user: UserId,
        currency: Currency,
        available_delta: Decimal,
        transfer: usize,
        cause: Cause<'_>,
    ) -> Result<(), Broken> {
        let (deal_id, payment_id, reason) = match cause {
            Cause::Deal(deal) => (Some(deal), None, None),
            Cause::Payment(payment) => (None, Some(payment), None),
            Cause::Reason(reason) => (None, None, Some(reason)),
        };
        let tenant = *self
            .tenant_of_user
            .get(&user)
            .ok_or_else(|| Broken(format!("user {user} is not known to the batch")))?;
        let balance = self.available_balance(user, currency)?;
        let held = self.held.get(&(user, currency)).copied().unwrap_or_default();
        let kind = self.transfers[transfer].kind;
        let data = json!({
            "user_id": user,
            "currency": currency,
            "balance": format_wire(balance, currency),
            "held": format_wire(held, currency),
            "change": format_wire(available_delta, currency),
            "kind": kind.as_str(),
            "deal_id": deal_id,
            "payment_id": payment_id,
            "reason": reason,
        });
        self.emit(
            tenant,
            "user",
            user.get(),
            "balance_changed",
            Draft {
                value: data,
                transfer: Some(transfer),
            },
        );
        Ok(())
    }

    fn emit(&mut self, tenant_id: TenantId, aggregate: &'static str, id: i64, name: &'static str, data: Draft) {
        self.events.push(EventDraft {
            tenant_id,
            aggregate,
            aggregate_id: id,
            name,
            data,
        });
    }

    fn set_status(&mut self, id: DealId, to: DealStatus) -> Result<(), Broken> {
        let now = self.now;
        let deal = self.deal_mut(id)?;
        deal.status = to;
        deal.updated_at = now;
        if to.is_funded() && deal.funded_at.is_none() {
            deal.funded_at = Some(now);
        }
        self.changed_deals.insert(id);
        Ok(())
    }

    fn deal(&self, id: DealId) -> Result<&Deal, Broken> {
        self.deals
            .get(&id)
            .ok_or_else(|| Broken(format!("deal {id} is not held by the batch")))
    }

    fn deal_mut(&mut self, id: DealId) -> Result<&mut Deal, Broken> {
        self.deals
            .get_mut(&id)
            .ok_or_else(|| Broken(format!("deal {id} is not held by the batch")))
    }

    fn available_account(&self, user: UserId, currency: Currency) -> Result<AccountId, Broken> {
        self.available.get(&(user, currency)).copied().ok_or_else(|| {
            Broken(format!(
                "the available account of user {user} in {currency} is not locked"
            ))
        })
    }

    fn balance(&self, account: AccountId) -> Result<Decimal, Broken> {
        self.accounts
            .get(&account)
            .map(|row| row.balance)
            .ok_or_else(|| Broken(format!("account {account} is not held by the batch")))
    }

    fn available_balance(&self, user: UserId, currency: Currency) -> Result<Decimal, Broken> {
        self.balance(self.available_account(user, currency)?)
    }

    fn external_account(&self, external: External, currency: Currency) -> Result<AccountId, Broken> {
        self.external
            .get(&(external, currency))
            .copied()
            .ok_or_else(|| Broken(format!("no {} account for {currency}", external.kind())))
    }
}

/// Why a user's balance changed, for the `user.balance_changed` event.
#[derive(Debug, Clone, Copy)]
enum Cause<'a> {
    Deal(DealId),
    Payment(PaymentId),
    Reason(&'a str),
}
