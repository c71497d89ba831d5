//! Ledger-level tests of credits and funding: a credit to a customer (an adjustment or a deposit on
//! one of their payments) funds their waiting deals oldest first while the balance covers them; a
//! deposit moves its payment's status and is credited once, whoever observes it how often.

use chrono::{DateTime, Duration, Utc};
use guarantor_domain::NewDeal;
use guarantor_domain::{
    Command, CommandId, CommandReply, Currency, DealAction, DealId, DepositObservation, ErrorCode, NewPayment,
    PaymentId, Role, TenantId, UserId, Verdict,
};
use guarantor_testkit::TestDb;
use rust_decimal::Decimal;
use serde_json::Value;

mod support;

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
        self.run_as(CommandId::generate(), role, command).await
    }

    async fn run_as(&self, id: CommandId, role: Role, command: Command) -> CommandReply {
        let mut db = self.db.pool.acquire().await.unwrap();
        support::apply_one(&mut db, self.tenant, role, id, command).await
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

    /// A payment of `amount` whole USDT for `user`, due at `expires_at`.
    async fn payment(&self, user: UserId, amount: i64, index: u32, expires_at: DateTime<Utc>) -> (PaymentId, String) {
        let address = format!("TAddress{index}");
        let reply = self
            .run(
                Role::Platform,
                Command::CreatePayment(NewPayment {
                    user_id: user,
                    gateway_id: 1,
                    amount: Decimal::from(amount),
                    currency: Currency::Usdt,
                    hd_index: index,
                    address: address.clone(),
                    token_contract: TOKEN.into(),
                    expires_at,
                }),
            )
            .await;
        let body = Self::body(&reply);
        assert_eq!(body["status"], "waiting");
        assert_eq!(body["received"], "0.000000");
        assert_eq!(body["gateway_data"]["address"], address.as_str());
        (PaymentId::new(body["payment_id"].as_i64().unwrap()).unwrap(), address)
    }

    /// The scanner's observation of a transfer of `amount` USDT units (6 decimals) mined at `mined`.
    async fn observe(
        &self,
        payment: PaymentId,
        address: &str,
        txid: &str,
        log_index: u32,
        units: i64,
        mined: DateTime<Utc>,
    ) -> CommandReply {
        let observation = DepositObservation {
            payment_id: payment,
            address: address.into(),
            token_contract: TOKEN.into(),
            txid: txid.into(),
            log_index,
            amount: Decimal::new(units, 6),
            block_number: 100,
            block_time: mined,
        };
        let id = CommandId::from_uuid(uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            observation.message_id().as_bytes(),
        ));
        self.run_as(id, Role::Admin, Command::ObserveDeposit(observation)).await
    }

    async fn payment_row(&self, payment: PaymentId) -> (String, String) {
        sqlx::query_as("SELECT status, received::text FROM payments WHERE id = $1")
            .bind(payment)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    async fn available(&self, user: UserId) -> Decimal {
        sqlx::query_scalar(
            "SELECT COALESCE(sum(balance), 0) FROM accounts WHERE kind = 'user_available' AND user_id = $1",
        )
        .bind(user)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    async fn events(&self, aggregate_prefix: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT payload->>'type' FROM outbox WHERE subject LIKE $1 ORDER BY id")
            .bind(format!("guarantor.evt.{aggregate_prefix}%"))
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }

    async fn assert_books_balance(&self) {
        let violations = guarantor_ledger::reconcile::check(&self.db.pool).await.unwrap();
        assert!(violations.is_empty(), "{violations:?}");
    }

    async fn status(&self, deal: DealId) -> String {
        sqlx::query_scalar("SELECT status FROM deals WHERE id = $1")
            .bind(deal)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

const TOKEN: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";

fn txid(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn refusal(reply: &CommandReply) -> ErrorCode {
    match &reply.verdict {
        Verdict::Refused { rejection } => rejection.code,
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test]
async fn a_deposit_funds_the_older_waiting_deal_it_covers_and_succeeds_the_payment() {
    let ledger = Ledger::new().await;
    let customer = ledger.user("c").await;
    let performer = ledger.user("p").await;
    let older = ledger.waiting_deal(customer, performer, 5).await;
    let newer = ledger.waiting_deal(customer, performer, 10).await;
    let (payment, address) = ledger.payment(customer, 5, 0, Utc::now() + Duration::hours(1)).await;

    let reply = ledger
        .observe(payment, &address, &txid(1), 0, 5_000_000, Utc::now())
        .await;

    assert_eq!(Ledger::body(&reply)["status"], "success");
    assert_eq!(ledger.payment_row(payment).await, ("success".into(), "5.000000".into()));
    assert_eq!(ledger.status(older).await, "confirmed");
    assert_eq!(ledger.status(newer).await, "waiting_for_payment");
    assert_eq!(
        ledger.available(customer).await,
        Decimal::ZERO,
        "the 5 credited are held by the older deal"
    );
    assert_eq!(
        ledger.events("payment.").await,
        ["payment.created", "payment.received", "payment.succeeded"]
    );
    let deal_events = ledger.events(&format!("deal.{older}.")).await;
    assert_eq!(deal_events.last().map(String::as_str), Some("deal.funded"));
    let balance_events = ledger.events(&format!("user.{customer}.balance")).await;
    assert_eq!(balance_events.len(), 2, "the deposit's credit, then the hold");
    ledger.assert_books_balance().await;
}

#[tokio::test]
async fn an_underpayment_is_partial_until_a_second_transfer_completes_it() {
    let ledger = Ledger::new().await;
    let customer = ledger.user("c").await;
    let performer = ledger.user("p").await;
    let deal = ledger.waiting_deal(customer, performer, 10).await;
    let (payment, address) = ledger.payment(customer, 10, 0, Utc::now() + Duration::hours(1)).await;

    ledger
        .observe(payment, &address, &txid(1), 0, 4_000_000, Utc::now())
        .await;
    assert_eq!(ledger.payment_row(payment).await, ("partial".into(), "4.000000".into()));
    assert_eq!(ledger.status(deal).await, "waiting_for_payment");
    assert_eq!(
        ledger.available(customer).await,
        Decimal::from(4),
        "an underpayment is credited"
    );

    ledger
        .observe(payment, &address, &txid(2), 0, 6_000_000, Utc::now())
        .await;
    assert_eq!(
        ledger.payment_row(payment).await,
        ("success".into(), "10.000000".into())
    );
    assert_eq!(ledger.status(deal).await, "confirmed");
    ledger.assert_books_balance().await;
}

#[tokio::test]
async fn an_overpayment_leaves_the_surplus_on_the_balance() {
    let ledger = Ledger::new().await;
    let customer = ledger.user("c").await;
    let performer = ledger.user("p").await;
    let deal = ledger.waiting_deal(customer, performer, 10).await;
    let (payment, address) = ledger.payment(customer, 10, 0, Utc::now() + Duration::hours(1)).await;

    ledger
        .observe(payment, &address, &txid(1), 0, 12_500_000, Utc::now())
        .await;

    assert_eq!(
        ledger.payment_row(payment).await,
        ("success".into(), "12.500000".into())
    );
    assert_eq!(ledger.status(deal).await, "confirmed");
    assert_eq!(ledger.available(customer).await, Decimal::new(25, 1));
    let overpaid: bool = sqlx::query_scalar(
        "SELECT (payload->'data'->>'overpaid')::boolean FROM outbox WHERE payload->>'type' = 'payment.received'",
    )
    .fetch_one(&ledger.db.pool)
    .await
    .unwrap();
    assert!(overpaid, "payment.received flags the overpayment");
    ledger.assert_books_balance().await;
}

#[tokio::test]
async fn a_transfer_is_credited_once_however_it_is_observed_and_two_logs_of_one_transaction_both_count() {
    let ledger = Ledger::new().await;
    let customer = ledger.user("c").await;
    let (payment, address) = ledger.payment(customer, 10, 0, Utc::now() + Duration::hours(1)).await;
    let mined = Utc::now();

    let first = ledger.observe(payment, &address, &txid(1), 0, 3_000_000, mined).await;
    let redelivered = ledger.observe(payment, &address, &txid(1), 0, 3_000_000, mined).await;
    assert_eq!(
        redelivered.verdict, first.verdict,
        "the same observation answers from the inbox"
    );
    // The same transfer under another command id (another observer): the deposits table refuses it.
    let observation = DepositObservation {
        payment_id: payment,
        address: address.clone(),
        token_contract: TOKEN.into(),
        txid: txid(1),
        log_index: 0,
        amount: Decimal::new(3_000_000, 6),
        block_number: 100,
        block_time: mined,
    };
    let again = ledger.run(Role::Admin, Command::ObserveDeposit(observation)).await;
    assert_eq!(refusal(&again), ErrorCode::DepositRejected);
    // A second Transfer log of the same transaction is another deposit.
    ledger.observe(payment, &address, &txid(1), 1, 2_000_000, mined).await;

    assert_eq!(ledger.payment_row(payment).await, ("partial".into(), "5.000000".into()));
    assert_eq!(ledger.available(customer).await, Decimal::from(5));
    ledger.assert_books_balance().await;
}

#[tokio::test]
async fn a_late_payment_is_credited_and_flagged_and_the_payment_stays_expired() {
    let ledger = Ledger::new().await;
    let customer = ledger.user("c").await;
    let deadline = Utc::now() - Duration::minutes(10);
    let (payment, address) = ledger.payment(customer, 10, 0, deadline).await;

    let expired = ledger
        .run(Role::Admin, Command::ExpirePayment { payment_id: payment })
        .await;
    assert_eq!(Ledger::body(&expired)["status"], "expired");
    let late = ledger
        .observe(payment, &address, &txid(1), 0, 10_000_000, Utc::now())
        .await;

    assert_eq!(Ledger::body(&late)["deposit"]["late"], true);
    assert_eq!(
        ledger.payment_row(payment).await,
        ("expired".into(), "10.000000".into())
    );
    assert_eq!(
        ledger.available(customer).await,
        Decimal::from(10),
        "late coins are credited"
    );
    let flagged: bool = sqlx::query_scalar("SELECT late FROM deposits")
        .fetch_one(&ledger.db.pool)
        .await
        .unwrap();
    assert!(flagged);
    ledger.assert_books_balance().await;
}

#[tokio::test]
async fn a_transfer_mined_before_the_deadline_counts_even_after_the_expiry_was_recorded() {
    let ledger = Ledger::new().await;
    let customer = ledger.user("c").await;
    let deadline = Utc::now() - Duration::minutes(10);
    let (payment, address) = ledger.payment(customer, 10, 0, deadline).await;
    ledger
        .run(Role::Admin, Command::ExpirePayment { payment_id: payment })
        .await;

    let in_time = ledger
        .observe(
            payment,
            &address,
            &txid(1),
            0,
            10_000_000,
            deadline - Duration::minutes(1),
        )
        .await;

    assert_eq!(Ledger::body(&in_time)["status"], "success");
    assert_eq!(Ledger::body(&in_time)["deposit"]["late"], false);
}

#[tokio::test]
async fn a_payment_expires_only_when_waiting_past_its_deadline() {
    let ledger = Ledger::new().await;
    let customer = ledger.user("c").await;
    let (open, _) = ledger.payment(customer, 10, 0, Utc::now() + Duration::hours(1)).await;
    let (paid, address) = ledger.payment(customer, 10, 1, Utc::now() - Duration::seconds(1)).await;
    ledger
        .observe(
            paid,
            &address,
            &txid(1),
            0,
            1_000_000,
            Utc::now() - Duration::minutes(5),
        )
        .await;

    for payment in [open, paid] {
        let reply = ledger
            .run(Role::Admin, Command::ExpirePayment { payment_id: payment })
            .await;
        assert_eq!(refusal(&reply), ErrorCode::PaymentNotExpirable);
    }
    assert_eq!(ledger.payment_row(open).await.0, "waiting");
    assert_eq!(ledger.payment_row(paid).await.0, "partial");
}

#[tokio::test]
async fn an_observation_that_does_not_match_its_payment_changes_nothing() {
    let ledger = Ledger::new().await;
    let customer = ledger.user("c").await;
    let (payment, address) = ledger.payment(customer, 10, 0, Utc::now() + Duration::hours(1)).await;
    let base = DepositObservation {
        payment_id: payment,
        address: address.clone(),
        token_contract: TOKEN.into(),
        txid: txid(9),
        log_index: 0,
        amount: Decimal::new(1, 0),
        block_number: 1,
        block_time: Utc::now(),
    };
    let cases = [
        (
            DepositObservation {
                address: "TSomeoneElse".into(),
                ..base.clone()
            },
            Role::Admin,
            ErrorCode::DepositRejected,
        ),
        (
            DepositObservation {
                token_contract: "TLookAlike".into(),
                ..base.clone()
            },
            Role::Admin,
            ErrorCode::DepositRejected,
        ),
        (
            DepositObservation {
                txid: "XYZ".into(),
                ..base.clone()
            },
            Role::Admin,
            ErrorCode::DepositRejected,
        ),
        (
            DepositObservation {
                amount: Decimal::new(1, 7),
                ..base.clone()
            },
            Role::Admin,
            ErrorCode::InvalidAmount,
        ),
        (
            DepositObservation {
                payment_id: PaymentId::new(payment.get() + 100).unwrap(),
                ..base.clone()
            },
            Role::Admin,
            ErrorCode::PaymentNotFound,
        ),
        (base.clone(), Role::Platform, ErrorCode::Forbidden),
    ];
    for (observation, role, code) in cases {
        let reply = ledger.run(role, Command::ObserveDeposit(observation)).await;
        assert_eq!(refusal(&reply), code);
    }
    assert_eq!(ledger.payment_row(payment).await, ("waiting".into(), "0".into()));
    assert_eq!(ledger.available(customer).await, Decimal::ZERO);
    ledger.assert_books_balance().await;
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
