//! Ledger-level tests of funding: a credit to a customer funds their waiting deals oldest first while
//! the balance covers them. The payments issue calls the same function on deposits.

use chrono::Utc;
use guarantor_domain::{
    Command, CommandEnvelope, CommandId, CommandReply, Currency, DealAction, DealId, NewDeal, Role, TenantId, UserId,
    Verdict,
};
use guarantor_ledger::engine::{apply_batch, Incoming};
use guarantor_testkit::TestDb;
use rust_decimal::Decimal;
use serde_json::Value;

struct Ledger {
    db: TestDb,
    tenant: TenantId,
}

impl Ledger {
    async fn new() -> Self {
        let db = TestDb::new().await;
        let tenant = sqlx::query_scalar("INSERT INTO tenants (name) VALUES ('t') RETURNING id")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        Self { db, tenant }
    }

    async fn run(&self, role: Role, command: Command) -> CommandReply {
        let envelope = CommandEnvelope {
            id: CommandId::generate(),
            tenant_id: self.tenant,
            role,
            fingerprint: String::new(),
            issued_at: Utc::now(),
            command,
        };
        let mut db = self.db.pool.acquire().await.unwrap();
        let mut replies = apply_batch(
            &mut db,
            &[Incoming {
                envelope,
                redrive: false,
            }],
        )
        .await
        .unwrap();
        replies.pop().unwrap()
    }

    fn body(reply: &CommandReply) -> &Value {
        match &reply.verdict {
            Verdict::Applied { body: Some(body) } => body,
            other => panic!("not applied with a body: {other:?}"),
        }
    }

    async fn user(&self, name: &str) -> UserId {
        let reply = self
            .run(
                Role::Platform,
                Command::UpsertUser {
                    external_id: name.into(),
                    name: name.into(),
                },
            )
            .await;
        UserId::new(Self::body(&reply)["id"].as_i64().unwrap()).unwrap()
    }

    async fn waiting_deal(&self, customer: UserId, performer: UserId, amount: i64) -> DealId {
        let created = self
            .run(
                Role::Platform,
                Command::CreateDeal(NewDeal {
                    title: "t".into(),
                    description: String::new(),
                    amount: Decimal::from(amount),
                    currency: Currency::Usdt,
                    customer_id: customer,
                    performer_id: performer,
                    deadline_at: None,
                }),
            )
            .await;
        let id = DealId::new(Self::body(&created)["deal_id"].as_i64().unwrap()).unwrap();
        let confirmed = self
            .run(
                Role::Platform,
                Command::ActOnDeal {
                    deal_id: id,
                    action: DealAction::Confirm,
                    acting_user: Some(performer),
                    dispute: None,
                },
            )
            .await;
        assert_eq!(Self::body(&confirmed)["status"], "waiting_for_payment");
        id
    }

    async fn credit(&self, user: UserId, amount: i64) {
        let reply = self
            .run(
                Role::Admin,
                Command::AdjustBalance {
                    user_id: user,
                    currency: Currency::Usdt,
                    amount: Decimal::from(amount),
                    reason: "credit".into(),
                },
            )
            .await;
        assert!(matches!(reply.verdict, Verdict::Applied { .. }), "{reply:?}");
    }

    async fn status(&self, deal: DealId) -> String {
        sqlx::query_scalar("SELECT status FROM deals WHERE id = $1")
            .bind(deal)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_credit_funds_waiting_deals_oldest_first_while_the_balance_covers_them() {
    let ledger = Ledger::new().await;
    let customer = ledger.user("c").await;
    let performer = ledger.user("p").await;
    let first = ledger.waiting_deal(customer, performer, 5).await;
    let second = ledger.waiting_deal(customer, performer, 10).await;
    let third = ledger.waiting_deal(customer, performer, 1).await;

    ledger.credit(customer, 12).await;

    assert_eq!(ledger.status(first).await, "confirmed");
    assert_eq!(
        ledger.status(second).await,
        "waiting_for_payment",
        "7 left does not cover 10"
    );
    assert_eq!(
        ledger.status(third).await,
        "waiting_for_payment",
        "funding stops at the first deal not covered"
    );
    assert!(guarantor_ledger::reconcile::check(&ledger.db.pool)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_credit_in_another_customers_name_funds_nothing_of_this_one() {
    let ledger = Ledger::new().await;
    let customer = ledger.user("c").await;
    let other = ledger.user("o").await;
    let performer = ledger.user("p").await;
    let deal = ledger.waiting_deal(customer, performer, 5).await;

    ledger.credit(other, 50).await;

    assert_eq!(ledger.status(deal).await, "waiting_for_payment");
    assert!(guarantor_ledger::reconcile::check(&ledger.db.pool)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_database_refuses_a_negative_available_balance_even_past_the_code() {
    let ledger = Ledger::new().await;
    let customer = ledger.user("c").await;
    ledger.credit(customer, 1).await;

    let forced = sqlx::query("UPDATE accounts SET balance = -1 WHERE kind = 'user_available' AND user_id = $1")
        .bind(customer)
        .execute(&ledger.db.pool)
        .await;
    let rewritten = sqlx::query("UPDATE transfers SET amount = 2")
        .execute(&ledger.db.pool)
        .await;

    assert!(forced.is_err(), "the balance_not_negative constraint holds");
    assert!(rewritten.is_err(), "transfers are append-only");
}
