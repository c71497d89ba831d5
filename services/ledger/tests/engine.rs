//! The batch engine and the consumer's settings against real Postgres and a real nats-server.

use std::time::Duration;

use chrono::Utc;
use guarantor_domain::{Command, CommandEnvelope, CommandId, Currency, Role, TenantId, UserId, Verdict};
use guarantor_ledger::consumer::{durable, ConsumerSettings};
use guarantor_ledger::engine::{apply_batch, Incoming};
use guarantor_testkit::{TestDb, TestNats};
use rust_decimal::Decimal;

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
