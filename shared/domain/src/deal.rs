//! The deal state machine as one table: `(status, action, actor) → (status, money movement)`. The
//! ledger's handlers decide with [`decide`], the OpenAPI document and the README render [`RULES`], and
//! a test walks every cell of status × action × actor against the product contract.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum DealStatus {
    Created,
    DenyPerformer,
    WaitingForPayment,
    ConfirmPerformer,
    Confirmed,
    Dispute,
    Close,
    ArbCloseCustomer,
    ArbClosePerformer,
    Cancelled,
}

impl DealStatus {
    pub const ALL: [DealStatus; 10] = [
        DealStatus::Created,
        DealStatus::DenyPerformer,
        DealStatus::WaitingForPayment,
        DealStatus::ConfirmPerformer,
        DealStatus::Confirmed,
        DealStatus::Dispute,
        DealStatus::Close,
        DealStatus::ArbCloseCustomer,
        DealStatus::ArbClosePerformer,
        DealStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DealStatus::Created => "created",
            DealStatus::DenyPerformer => "deny_performer",
            DealStatus::WaitingForPayment => "waiting_for_payment",
            DealStatus::ConfirmPerformer => "confirm_performer",
            DealStatus::Confirmed => "confirmed",
            DealStatus::Dispute => "dispute",
            DealStatus::Close => "close",
            DealStatus::ArbCloseCustomer => "arb_close_customer",
            DealStatus::ArbClosePerformer => "arb_close_performer",
            DealStatus::Cancelled => "cancelled",
        }
    }

    /// The customer's money is in the deal's escrow.
    pub fn is_funded(self) -> bool {
        match self {
            DealStatus::ConfirmPerformer | DealStatus::Confirmed | DealStatus::Dispute => true,
            DealStatus::Created
            | DealStatus::DenyPerformer
            | DealStatus::WaitingForPayment
            | DealStatus::Close
            | DealStatus::ArbCloseCustomer
            | DealStatus::ArbClosePerformer
            | DealStatus::Cancelled => false,
        }
    }

    pub fn is_final(self) -> bool {
        match self {
            DealStatus::DenyPerformer
            | DealStatus::Close
            | DealStatus::ArbCloseCustomer
            | DealStatus::ArbClosePerformer
            | DealStatus::Cancelled => true,
            DealStatus::Created
            | DealStatus::WaitingForPayment
            | DealStatus::ConfirmPerformer
            | DealStatus::Confirmed
            | DealStatus::Dispute => false,
        }
    }
}

impl fmt::Display for DealStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What someone asks a deal to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DealAction {
    Deny,
    Confirm,
    /// A waiting deal is funded by a later credit to the customer (never requested over HTTP).
    Fund,
    Cancel,
    Dispute,
    Close,
    ClosePerformer,
    CloseCustomer,
}

impl DealAction {
    pub const ALL: [DealAction; 8] = [
        DealAction::Deny,
        DealAction::Confirm,
        DealAction::Fund,
        DealAction::Cancel,
        DealAction::Dispute,
        DealAction::Close,
        DealAction::ClosePerformer,
        DealAction::CloseCustomer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DealAction::Deny => "deny",
            DealAction::Confirm => "confirm",
            DealAction::Fund => "fund",
            DealAction::Cancel => "cancel",
            DealAction::Dispute => "dispute",
            DealAction::Close => "close",
            DealAction::ClosePerformer => "close_performer",
            DealAction::CloseCustomer => "close_customer",
        }
    }
}

/// Who acts on a deal: one of its parties (named by `Acting-User`), an arbiter key, or the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    Customer,
    Performer,
    Arbiter,
    System,
}

impl Actor {
    pub const ALL: [Actor; 4] = [Actor::Customer, Actor::Performer, Actor::Arbiter, Actor::System];

    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Customer => "customer",
            Actor::Performer => "performer",
            Actor::Arbiter => "arbiter",
            Actor::System => "system",
        }
    }
}

/// The money movement of a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Money {
    None,
    /// Customer available → deal escrow.
    Hold,
    /// Deal escrow → performer available.
    Release,
    /// Deal escrow → customer available.
    Refund,
}

impl Money {
    pub fn as_str(self) -> &'static str {
        match self {
            Money::None => "—",
            Money::Hold => "hold: customer available → deal escrow",
            Money::Release => "release: escrow → performer available",
            Money::Refund => "refund: escrow → customer available",
        }
    }
}

/// Where a transition leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    To(DealStatus, Money),
    /// Hold and go to `funded` if the customer's available balance covers the amount, else go to
    /// `waiting` without moving money.
    HoldIfCovered {
        funded: DealStatus,
        waiting: DealStatus,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub from: DealStatus,
    pub action: DealAction,
    pub actor: Actor,
    pub outcome: Outcome,
}

const fn rule(from: DealStatus, action: DealAction, actor: Actor, outcome: Outcome) -> Rule {
    Rule {
        from,
        action,
        actor,
        outcome,
    }
}

use DealAction as A;
use DealStatus as S;

/// Every allowed transition. Anything not listed is refused.
pub const RULES: &[Rule] = &[
    rule(
        S::Created,
        A::Deny,
        Actor::Performer,
        Outcome::To(S::DenyPerformer, Money::None),
    ),
    rule(
        S::Created,
        A::Confirm,
        Actor::Performer,
        Outcome::HoldIfCovered {
            funded: S::ConfirmPerformer,
            waiting: S::WaitingForPayment,
        },
    ),
    rule(
        S::WaitingForPayment,
        A::Fund,
        Actor::System,
        Outcome::To(S::Confirmed, Money::Hold),
    ),
    rule(
        S::Created,
        A::Cancel,
        Actor::Customer,
        Outcome::To(S::Cancelled, Money::None),
    ),
    rule(
        S::WaitingForPayment,
        A::Cancel,
        Actor::Customer,
        Outcome::To(S::Cancelled, Money::None),
    ),
    rule(
        S::ConfirmPerformer,
        A::Dispute,
        Actor::Customer,
        Outcome::To(S::Dispute, Money::None),
    ),
    rule(
        S::ConfirmPerformer,
        A::Dispute,
        Actor::Performer,
        Outcome::To(S::Dispute, Money::None),
    ),
    rule(
        S::Confirmed,
        A::Dispute,
        Actor::Customer,
        Outcome::To(S::Dispute, Money::None),
    ),
    rule(
        S::Confirmed,
        A::Dispute,
        Actor::Performer,
        Outcome::To(S::Dispute, Money::None),
    ),
    rule(
        S::ConfirmPerformer,
        A::Close,
        Actor::Customer,
        Outcome::To(S::Close, Money::Release),
    ),
    rule(
        S::Confirmed,
        A::Close,
        Actor::Customer,
        Outcome::To(S::Close, Money::Release),
    ),
    rule(
        S::Dispute,
        A::ClosePerformer,
        Actor::Arbiter,
        Outcome::To(S::ArbClosePerformer, Money::Release),
    ),
    rule(
        S::Dispute,
        A::CloseCustomer,
        Actor::Arbiter,
        Outcome::To(S::ArbCloseCustomer, Money::Refund),
    ),
];

/// Why a transition is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This actor may never take this action (403).
    WrongActor { allowed: &'static [Actor] },
    /// This action is not possible in the deal's current status (409).
    InvalidTransition { current: DealStatus },
}

/// The actors that may take an action in some status.
pub fn actors_of(action: DealAction) -> &'static [Actor] {
    match action {
        DealAction::Deny | DealAction::Confirm => &[Actor::Performer],
        DealAction::Fund => &[Actor::System],
        DealAction::Cancel | DealAction::Close => &[Actor::Customer],
        DealAction::Dispute => &[Actor::Customer, Actor::Performer],
        DealAction::ClosePerformer | DealAction::CloseCustomer => &[Actor::Arbiter],
    }
}

/// Decides a transition: first whether the actor may take the action at all, then whether the
/// action is possible from the current status.
pub fn decide(status: DealStatus, action: DealAction, actor: Actor) -> Result<Outcome, Refusal> {
    let allowed = actors_of(action);
    if !allowed.contains(&actor) {
        return Err(Refusal::WrongActor { allowed });
    }
    RULES
        .iter()
        .find(|r| r.from == status && r.action == action && r.actor == actor)
        .map(|r| r.outcome)
        .ok_or(Refusal::InvalidTransition { current: status })
}

/// The statuses an action is possible from, for documentation.
pub fn statuses_for(action: DealAction) -> Vec<DealStatus> {
    let mut from: Vec<DealStatus> = RULES.iter().filter(|r| r.action == action).map(|r| r.from).collect();
    from.dedup();
    from
}

/// The table as Markdown, for the README and the OpenAPI document.
pub fn markdown_table() -> String {
    let mut out = String::from("| from | action | actor | to | money |\n|---|---|---|---|---|\n");
    for r in RULES {
        let (to, money) = match r.outcome {
            Outcome::To(to, money) => (format!("`{to}`"), money.as_str()),
            Outcome::HoldIfCovered { funded, waiting } => (
                format!("`{funded}` if the customer's available balance covers the amount, else `{waiting}`"),
                "hold (only when covered)",
            ),
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            r.from,
            r.action.as_str(),
            r.actor.as_str(),
            to,
            money
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product contract's table (SPEC section 4), written out independently of [`RULES`].
    fn contract(status: DealStatus, action: DealAction, actor: Actor) -> Option<Outcome> {
        use Actor::{Arbiter, Customer, Performer, System};
        let to = |s, m| Some(Outcome::To(s, m));
        match (status, action, actor) {
            (S::Created, A::Deny, Performer) => to(S::DenyPerformer, Money::None),
            (S::Created, A::Confirm, Performer) => Some(Outcome::HoldIfCovered {
                funded: S::ConfirmPerformer,
                waiting: S::WaitingForPayment,
            }),
            (S::WaitingForPayment, A::Fund, System) => to(S::Confirmed, Money::Hold),
            (S::Created | S::WaitingForPayment, A::Cancel, Customer) => to(S::Cancelled, Money::None),
            (S::ConfirmPerformer | S::Confirmed, A::Dispute, Customer | Performer) => to(S::Dispute, Money::None),
            (S::ConfirmPerformer | S::Confirmed, A::Close, Customer) => to(S::Close, Money::Release),
            (S::Dispute, A::ClosePerformer, Arbiter) => to(S::ArbClosePerformer, Money::Release),
            (S::Dispute, A::CloseCustomer, Arbiter) => to(S::ArbCloseCustomer, Money::Refund),
            _ => None,
        }
    }

    #[test]
    fn every_cell_of_status_action_actor_matches_the_contract() {
        let mut allowed_cells = 0;
        for status in DealStatus::ALL {
            for action in DealAction::ALL {
                for actor in Actor::ALL {
                    let decided = decide(status, action, actor);
                    match contract(status, action, actor) {
                        Some(outcome) => {
                            allowed_cells += 1;
                            assert_eq!(decided, Ok(outcome), "{status} {action:?} {actor:?}");
                        }
                        None => match decided {
                            Err(Refusal::WrongActor { allowed }) => {
                                assert!(!allowed.contains(&actor));
                                assert!(DealStatus::ALL.iter().all(|s| contract(*s, action, actor).is_none()));
                            }
                            Err(Refusal::InvalidTransition { current }) => {
                                assert_eq!(current, status);
                                assert!(DealStatus::ALL.iter().any(|s| contract(*s, action, actor).is_some()));
                            }
                            Ok(outcome) => {
                                panic!("{status} {action:?} {actor:?} allowed as {outcome:?}")
                            }
                        },
                    }
                }
            }
        }
        assert_eq!(allowed_cells, RULES.len());
    }

    #[test]
    fn final_statuses_allow_nothing_and_funded_ones_hold_money() {
        for status in DealStatus::ALL.into_iter().filter(|s| s.is_final()) {
            assert!(RULES.iter().all(|r| r.from != status), "{status} is final");
        }
        for r in RULES {
            if let Outcome::To(to, money) = r.outcome {
                let enters_funding = !r.from.is_funded() && to.is_funded();
                let leaves_funding = r.from.is_funded() && !to.is_funded();
                assert_eq!(enters_funding, money == Money::Hold, "{r:?}");
                assert_eq!(leaves_funding, matches!(money, Money::Release | Money::Refund), "{r:?}");
            }
        }
    }

    #[test]
    fn statuses_serialize_as_their_wire_names() {
        for status in DealStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }

    #[test]
    fn the_markdown_table_has_a_row_per_rule() {
        assert_eq!(markdown_table().lines().count(), RULES.len() + 2);
    }
}
