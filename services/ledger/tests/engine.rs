//! The batch engine and the consumer's settings against real Postgres and a real nats-server.

use std::time::Duration;

use chrono::Utc;
use guarantor_domain::{
    Command, CommandEnvelope, CommandId, Currency, DealAction, DealId, DepositObservation, NewDeal, NewPayment,
    PaymentId, Role, TenantId, UserId, Verdict,
};
use guarantor_ledger::consumer::{durable, ConsumerSettings};
use guarantor_ledger::engine::{apply_batch, Incoming};
use guarantor_testkit::{TestDb, TestNats};
use rust_decimal::Decimal;
use serde_json::Value;
use sqlx::PgConnection;

mod support;

async fn tenant_and_user(db: &TestDb) -> (TenantId, UserId) {
    let tenant: TenantId = sqlx::query_scalar("INSERT INTO tenants (name) VALUES ('t') RETURNING id")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let user: UserId =
        sqlx::query_scalar("INSERT INTO users (tenant_id, external_id, name) VALUES ($1, 'u', 'u') RETURNING id")
            .bind(tenant)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    (tenant, user)
}

#[tokio::test]
async fn deliveries_of_one_command_racing_each_other_apply_it_once_and_all_answer_the_same() {
    let db = TestDb::new().await;
    let (tenant, user) = tenant_and_user(&db).await;
    let envelope = CommandEnvelope {
        id: CommandId::generate(),
        tenant_id: tenant,
        role: Role::Admin,
        fingerprint: "f".into(),
        issued_at: Utc::now(),
        command: Command::AdjustBalance {
            user_id: user,
            currency: Currency::Usdt,
            amount: Decimal::from(3),
            reason: "race".into(),
        },
    };
    // Four deliveries at once, each on a connection of its own, as replicas would get them after a
    // redelivery raced the first delivery.
    let mut connections = Vec::new();
    for _ in 0..4 {
        connections.push(db.pool.acquire().await.unwrap());
    }
    let replies = futures::future::join_all(connections.iter_mut().map(|db| {
        let batch = [Incoming {
            envelope: envelope.clone(),
            redrive: false,
        }];
        async move { apply_batch(db, &batch).await.unwrap().remove(0) }
    }))
    .await;
    drop(connections);

    for reply in &replies {
        assert!(matches!(reply.verdict, Verdict::Applied { .. }), "{reply:?}");
        assert_eq!(
            reply.verdict, replies[0].verdict,
            "every delivery answers the stored verdict"
        );
    }
    let transfers: i64 = sqlx::query_scalar("SELECT count(*) FROM transfers")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(transfers, 1, "applied once");
    assert!(guarantor_ledger::reconcile::check(&db.pool).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_changed_consumer_setting_reaches_the_existing_durable_consumer_on_start() {
    let nats = TestNats::start().await;
    let client = guarantor_messaging::connect(&nats.url(), "test").await.unwrap();
    let js = guarantor_messaging::jetstream(&client);
    guarantor_messaging::apply_streams(&js, 1).await.unwrap();
    let first = ConsumerSettings {
        ack_wait: Duration::from_secs(30),
        ..ConsumerSettings::default()
    };
    durable(&js, &first).await.unwrap();

    let changed = ConsumerSettings {
        ack_wait: Duration::from_secs(7),
        ..ConsumerSettings::default()
    };
    let mut consumer = durable(&js, &changed).await.unwrap();

    let info = consumer.info().await.unwrap();
    assert_eq!(info.config.ack_wait, Duration::from_secs(7));
    assert_eq!(
        info.config.max_deliver, -1,
        "JetStream never gives up on a command by itself"
    );
}

#[tokio::test]
async fn a_deals_changes_leave_its_indexes_alone_so_they_are_heap_only_updates() {
    // Postgres updates a row heap-only (no new index entries) only when no indexed column changes,
    // the columns of partial-index predicates included. A deal's confirm, close or dispute changes
    // its status, funding time and update time: no index of `deals` may name them.
    let db = TestDb::new().await;
    let covering: Vec<String> = sqlx::query_scalar(
        r"SELECT pg_get_indexdef(indexrelid) FROM pg_index
          WHERE indrelid = 'deals'::regclass
            AND pg_get_indexdef(indexrelid) ~ '\m(status|funded_at|updated_at)\M'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(covering, Vec::<String>::new());
    let fillfactor: Option<Vec<String>> =
        sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = 'deals'::regclass")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        fillfactor,
        Some(vec!["fillfactor=70".to_owned()]),
        "room for new versions on each page"
    );
}

/// Applies one command as a batch of its own on `db` and returns its result body.
async fn applied(db: &mut PgConnection, tenant: TenantId, role: Role, command: Command) -> Value {
    match support::apply_one(db, tenant, role, CommandId::generate(), command)
        .await
        .verdict
    {
        Verdict::Applied { body } => body.unwrap_or(Value::Null),
        other => panic!("not applied: {other:?}"),
    }
}

/// Index scans without a condition (or sequential scans) in a plan, except on the external
/// accounts' index, which holds one row per kind and currency whatever the ledger's size.
fn unbounded_scans(plan: &Value, found: &mut Vec<String>) {
    let kind = plan["Node Type"].as_str().unwrap_or_default();
    let index = plan["Index Name"].as_str().unwrap_or_default();
    let whole =
        kind == "Seq Scan" || (kind.contains("Index") && kind.contains("Scan") && plan.get("Index Cond").is_none());
    if whole && index != "accounts_external" {
        found.push(format!(
            "{kind} {} {index}",
            plan["Relation Name"].as_str().unwrap_or_default()
        ));
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        unbounded_scans(child, found);
    }
}

#[tokio::test]
async fn the_engines_plans_made_on_an_empty_ledger_look_rows_up_by_key_and_never_scan_a_whole_table() {
    // Each connection plans the engine's statements once, generically, on its first batch — on a new
    // ledger, on empty tables. A plan that scans a whole table or index there costs a little on day
    // one and a full scan of every deal or account per batch once the ledger has grown.
    let db = TestDb::new().await;
    let (tenant, _) = tenant_and_user(&db).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let mut users = Vec::new();
    for name in ["customer", "performer"] {
        let body = applied(
            &mut conn,
            tenant,
            Role::Platform,
            Command::UpsertUser {
                external_id: name.into(),
                name: name.into(),
            },
        )
        .await;
        users.push(UserId::new(body["id"].as_i64().unwrap()).unwrap());
    }
    let deal = |amount: i64| {
        Command::CreateDeal(NewDeal {
            title: "t".into(),
            description: String::new(),
            amount: Decimal::from(amount),
            currency: Currency::Usdt,
            customer_id: users[0],
            performer_id: users[1],
            deadline_at: None,
        })
    };
    let act = |deal_id: DealId, action: DealAction, acting_user: UserId| Command::ActOnDeal {
        deal_id,
        action,
        acting_user: Some(acting_user),
        dispute: None,
    };
    // A deal waits for money, a deposit on a payment funds it and it is closed, then an operator's
    // credit: every statement of the engine runs.
    let body = applied(&mut conn, tenant, Role::Platform, deal(5)).await;
    let id = DealId::new(body["deal_id"].as_i64().unwrap()).unwrap();
    applied(
        &mut conn,
        tenant,
        Role::Platform,
        act(id, DealAction::Confirm, users[1]),
    )
    .await;
    let token = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";
    let payment = Command::CreatePayment(NewPayment {
        user_id: users[0],
        gateway_id: 1,
        amount: Decimal::from(5),
        currency: Currency::Usdt,
        hd_index: 0,
        address: "TAddress0".into(),
        token_contract: token.into(),
        expires_at: Utc::now() + chrono::Duration::hours(1),
    });
    let body = applied(&mut conn, tenant, Role::Platform, payment).await;
    let deposit = Command::ObserveDeposit(DepositObservation {
        payment_id: PaymentId::new(body["payment_id"].as_i64().unwrap()).unwrap(),
        address: "TAddress0".into(),
        token_contract: token.into(),
        txid: "ab".repeat(32),
        log_index: 0,
        amount: Decimal::from(5),
        block_number: 100,
        block_time: Utc::now(),
    });
    applied(&mut conn, tenant, Role::Admin, deposit).await;
    let closed = applied(&mut conn, tenant, Role::Platform, act(id, DealAction::Close, users[0])).await;
    assert_eq!(closed["status"], "close");
    let credit = Command::AdjustBalance {
        user_id: users[0],
        currency: Currency::Usdt,
        amount: Decimal::from(5),
        reason: "credit".into(),
    };
    applied(&mut conn, tenant, Role::Admin, credit).await;

    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let statements: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT name, statement, cardinality(parameter_types) FROM pg_prepared_statements
         WHERE statement !~* '^\\s*(SET|SELECT name)'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(
        statements.len() >= 6,
        "the engine's statements are prepared: {statements:?}"
    );
    let mut found = Vec::new();
    for (name, statement, parameters) in &statements {
        let arguments = match usize::try_from(*parameters).unwrap() {
            0 => String::new(),
            n => format!("({})", vec!["NULL"; n].join(", ")),
        };
        let explained: Value = sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) EXECUTE {name}{arguments}"))
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let mut scans = Vec::new();
        unbounded_scans(&explained[0]["Plan"], &mut scans);
        if !scans.is_empty() {
            found.push(format!("{scans:?} in {statement}"));
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}
