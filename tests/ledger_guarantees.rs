//! The ledger's guarantees under concurrency, redelivery, replay and crashes, and its events as an
//! outside service sees them.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use guarantor_domain::{Command, CommandEnvelope, CommandId, Role, TenantId, UserId};
use guarantor_messaging::{COMMAND_STREAM, DLQ_STREAM};
use reqwest::StatusCode;
use serde_json::Value;
use support::System;

/// A scenario touching every kind of command; returns (customer, performer, deal ids).
async fn scenario(system: &System) -> (i64, i64, Vec<i64>) {
    let customer = system.user("alice").await;
    let performer = system.user("bob").await;
    system.adjust(customer, "10").await;
    let closed = system.deal(customer, performer, "10").await;
    system.act(closed, "confirm", performer).await;
    system.act(closed, "close", customer).await;
    let resolved = system.deal(customer, performer, "4").await;
    system.act(resolved, "confirm", performer).await;
    system.adjust(customer, "4").await;
    system.open_dispute(resolved, performer).await;
    system.arbitrate(resolved, "close_customer").await;
    let denied = system.deal(customer, performer, "1").await;
    system.act(denied, "deny", performer).await;
    let cancelled = system.deal(customer, performer, "1").await;
    system.act(cancelled, "cancel", customer).await;
    (customer, performer, vec![closed, resolved, denied, cancelled])
}

fn ok_count(answers: &[support::Answer]) -> usize {
    answers.iter().filter(|answer| answer.status == StatusCode::OK).count()
}

#[tokio::test]
async fn fifty_concurrent_conflicting_actions_have_exactly_one_effect_per_transition() {
    let system = System::up().await;
    // A second ledger replica shares the consumer, so conflicting commands really meet in Postgres.
    let _replica = system.extra_ledger();
    let customer = system.user("alice").await;
    let performer = system.user("bob").await;
    system.adjust(customer, "100").await;
    let fresh = system.deal(customer, performer, "10").await;
    let funded = system.deal(customer, performer, "10").await;
    system.act(funded, "confirm", performer).await;

    // Repeated confirms race a cancel on a fresh deal: one of them wins, all others conflict.
    let confirms_and_cancels = futures::future::join_all((0..50).map(|i| {
        let (action, party) = if i % 5 == 0 {
            ("cancel", customer)
        } else {
            ("confirm", performer)
        };
        system.act(fresh, action, party)
    }))
    .await;
    // Close races disputes (by both parties) and cancels on a funded deal.
    let system = &system;
    let closes_and_disputes = futures::future::join_all((0..50).map(|i| async move {
        match i % 4 {
            0 => system.act(funded, "close", customer).await,
            1 => system.open_dispute(funded, customer).await,
            2 => system.open_dispute(funded, performer).await,
            _ => system.act(funded, "cancel", customer).await,
        }
    }))
    .await;

    assert_eq!(
        ok_count(&confirms_and_cancels),
        1,
        "exactly one transition of the fresh deal"
    );
    assert_eq!(
        ok_count(&closes_and_disputes),
        1,
        "exactly one transition of the funded deal"
    );
    for answer in confirms_and_cancels.iter().chain(&closes_and_disputes) {
        assert!(
            answer.status == StatusCode::OK
                || (answer.status == StatusCode::CONFLICT && answer.error_code() == "invalid_transition"),
            "{}",
            answer.text
        );
    }
    let holds: i64 = sqlx::query_scalar("SELECT count(*) FROM transfers WHERE kind = 'hold' AND deal_id = ANY($1)")
        .bind(vec![fresh, funded])
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    let fresh_status = system.deal_status(fresh).await;
    let expected_holds = if fresh_status == "confirm_performer" { 2 } else { 1 };
    assert_eq!(
        holds, expected_holds,
        "one hold per funded deal, however many confirms raced"
    );
    system.assert_invariants().await;
}

#[tokio::test]
async fn every_event_of_a_scenario_arrives_once_in_order_per_deal_in_the_documented_envelope() {
    let system = System::up().await;
    let (_, _, deals) = scenario(&system).await;
    system.settle().await;
    // Every event ever written counts in its aggregate's sequence; the relay deletes what it published.
    let (written, unpublished): (i64, i64) =
        sqlx::query_as("SELECT (SELECT sum(last)::bigint FROM event_sequences), (SELECT count(*) FROM outbox)")
            .fetch_one(&system.db.pool)
            .await
            .unwrap();
    assert_eq!(unpublished, 0, "the relay took every published event out of the outbox");

    // An outside service: a consumer of its own on the event stream, from the beginning.
    let events = system.events().await;
    let document = support::asyncapi();
    for (_, event) in &events {
        let violations = support::event_violations(&document, event);
        assert!(violations.is_empty(), "{event} against asyncapi.json: {violations:?}");
    }
    assert_eq!(support::sequence_violations(&events), Vec::<String>::new());

    assert_eq!(
        events.len() as i64,
        written,
        "every event written is in the stream exactly once"
    );
    let ids: HashSet<&str> = events.iter().map(|(_, e)| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "no event twice");
    let mut per_deal: HashMap<i64, Vec<String>> = HashMap::new();
    for (subject, event) in &events {
        let kind = event["type"].as_str().unwrap();
        let (aggregate, name) = kind.split_once('.').unwrap();
        assert_eq!(event["schema_version"], 1);
        assert!(chrono::DateTime::parse_from_rfc3339(event["occurred_at"].as_str().unwrap()).is_ok());
        assert!(event["tenant_id"].as_i64().is_some());
        assert!(event["data"].is_object());
        let id = match aggregate {
            "deal" => event["data"]["deal_id"].as_i64().unwrap(),
            "user" => event["data"]
                .get("user_id")
                .or(event["data"].get("id"))
                .and_then(Value::as_i64)
                .unwrap(),
            other => panic!("unexpected aggregate {other}"),
        };
        assert_eq!(subject, &format!("guarantor.evt.{aggregate}.{id}.{name}"));
        if aggregate == "deal" {
            per_deal.entry(id).or_default().push(name.to_owned());
            assert!(event["data"]["status"].as_str().is_some());
        }
    }
    let expected: [&[&str]; 4] = [
        &["created", "confirmed", "closed"],
        &["created", "waiting_for_payment", "funded", "disputed", "resolved"],
        &["created", "denied"],
        &["created", "cancelled"],
    ];
    for (deal, names) in deals.iter().zip(expected) {
        assert_eq!(per_deal[deal], names, "events of deal {deal} in order");
    }
    let resolved = events.iter().find(|(_, e)| e["type"] == "deal.resolved").unwrap();
    assert_eq!(resolved.1["data"]["resolution"], "customer");
    let kinds: HashSet<&str> = events.iter().map(|(_, e)| e["type"].as_str().unwrap()).collect();
    assert!(
        kinds.contains("user.upserted") && kinds.contains("user.balance_changed"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn replaying_and_redelivering_every_command_changes_nothing() {
    let system = System::up().await;
    scenario(&system).await;
    system.settle().await;
    let before = system.snapshot().await;
    let js = system.jetstream().await;

    // Replay the whole command stream through the CLI, as an operator would: first a dry run, then
    // for real. Every command has its verdict already.
    let commands: i64 = sqlx::query_scalar("SELECT count(*) FROM commands")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    for (args, verb) in [(&["--dry-run"][..], "would replay"), (&[][..], "replayed")] {
        let mut replay = vec!["replay", "--stream", COMMAND_STREAM, "--from-seq", "1"];
        replay.extend_from_slice(args);
        let (ok, printed, stderr) = system.cli(&replay).await;
        assert!(ok, "{stderr}");
        assert!(
            printed.contains(&format!(
                "{verb} {commands} messages (up to sequence {commands}): 0 applied, 0 refused, {commands} already decided, 0 failed, 0 not commands"
            )),
            "{printed}"
        );
        assert_eq!(system.snapshot().await, before, "a replay changes nothing");
    }

    // Redeliver every command to the running ledger under a new message id (past JetStream's dedup).
    let mut stream = js.get_stream(COMMAND_STREAM).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let headers = guarantor_messaging::headers(&format!("redelivery-{sequence}"), None);
        js.publish_with_headers(
            message.subject.to_string(),
            headers,
            Bytes::from(message.payload.to_vec()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    system.settle().await;

    assert_eq!(system.snapshot().await, before, "a redelivery changes nothing");
    system.assert_invariants().await;
}

#[tokio::test]
async fn a_command_committed_before_its_ack_is_a_no_op_when_redelivered() {
    let system = System::up().await;
    let customer = system.user("alice").await;
    system.settle().await;
    let tenant = tenant_of(&system, customer).await;
    let envelope = credit_envelope(tenant, customer, 7, "crash test");
    // A ledger replica applies and commits the command, then dies before acking the message...
    let mut db = system.db.pool.acquire().await.unwrap();
    let incoming = guarantor_ledger::engine::Incoming {
        envelope: envelope.clone(),
        redrive: false,
    };
    let first = guarantor_ledger::engine::apply_batch(&mut db, &[incoming])
        .await
        .unwrap();
    assert!(matches!(first[0].verdict, guarantor_domain::Verdict::Applied { .. }));
    let after_commit = system.snapshot().await;

    // ...so JetStream delivers the message again, here to the running ledger.
    let js = system.jetstream().await;
    publish_command(&js, &envelope).await;
    system.settle().await;

    let after_redelivery = system.snapshot().await;
    assert_eq!(after_redelivery["accounts"], after_commit["accounts"]);
    assert_eq!(after_redelivery["transfers"], after_commit["transfers"]);
    assert_eq!(after_redelivery["commands"], after_commit["commands"]);
    assert_eq!(system.balance(customer).await.0, "7.000000", "credited once");
    system.assert_invariants().await;
}

#[tokio::test]
async fn a_poison_message_goes_to_the_dlq_and_can_be_listed_and_redriven() {
    let system = System::up().await;
    let js = system.jetstream().await;

    let headers = guarantor_messaging::headers("poison-1", None);
    js.publish_with_headers("guarantor.cmd.deal.act", headers, Bytes::from_static(b"{not a command"))
        .await
        .unwrap()
        .await
        .unwrap();
    system.settle().await;

    let mut dlq = js.get_stream(DLQ_STREAM).await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 1);
    let (listed, letters, _) = system.cli(&["dlq", "list", "--json"]).await;
    assert!(listed);
    let letters: Value = serde_json::from_str(&letters).unwrap();
    assert_eq!(letters[0]["original_subject"], "guarantor.cmd.deal.act");
    assert!(letters[0]["error"].as_str().unwrap().contains("not a command"));

    assert_eq!(letters[0]["deliveries"], 1);
    assert_eq!(letters[0]["command_id"], Value::Null, "not a command");

    let (redriven, printed, _) = system.cli(&["dlq", "redrive", "--all"]).await;
    // Still poison: it is dead-lettered again, as a new DLQ message, and the command says so.
    assert!(!redriven, "{printed}");
    assert!(
        printed.contains("DLQ message 1 → guarantor.cmd.deal.act: failed again (now DLQ message 2): not a command"),
        "{printed}"
    );
    system.settle().await;
    let state = dlq.info().await.unwrap().state.clone();
    assert_eq!((state.messages, state.last_sequence), (1, 2));
}

#[tokio::test]
async fn a_command_accepted_while_no_ledger_runs_answers_202_and_is_applied_when_one_starts() {
    let system = System::start(&["ingress"], &[("GUARANTOR_COMMAND_TIMEOUT_MS", "300")]).await;

    let accepted = system
        .post("/api/v1/user")
        .json(serde_json::json!({ "external_id": "late" }))
        .send()
        .await;

    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.text);
    assert_eq!(accepted.body["status"], "pending");
    let id = accepted.body["command_id"].as_str().unwrap().to_owned();
    let pending = system.get(&format!("/api/v1/commands/{id}")).send().await;
    assert_eq!(pending.body["status"], "pending", "{}", pending.text);

    let _ledger = system.extra_ledger();
    let mut done = pending;
    for _ in 0..200 {
        done = system.get(&format!("/api/v1/commands/{id}")).send().await;
        if done.body["status"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done.body["status"], "done", "{}", done.text);
    assert_eq!(done.body["http_status"], 200);
    assert_eq!(done.body["body"]["external_id"], "late");
    let unknown = system
        .get(&format!("/api/v1/commands/{}", CommandId::generate()))
        .send()
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_command_answers_503_in_the_error_shape_when_nats_is_down() {
    let mut system = System::up().await;
    let before = system.snapshot().await;

    system.stop_nats();
    let answer = system
        .post("/api/v1/user")
        .json(serde_json::json!({ "external_id": "lost" }))
        .send()
        .await;

    assert_eq!(
        (answer.status, answer.error_code()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    // A keyed request that could not be published leaves no pending command behind.
    let keyed = system
        .post("/api/v1/user")
        .idempotency("during-the-outage")
        .json(serde_json::json!({ "external_id": "lost" }))
        .send()
        .await;
    assert_eq!(keyed.status, StatusCode::SERVICE_UNAVAILABLE);
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM accepted_commands")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(pending, 0);
    assert_eq!(system.snapshot().await["users"], before["users"]);
}

#[tokio::test]
async fn a_ledger_killed_mid_load_loses_no_accepted_command_and_applies_none_twice() {
    // Messages the killed ledger held come back after the ack wait.
    let vars = [
        ("GUARANTOR_COMMAND_TIMEOUT_MS", "500"),
        ("GUARANTOR_LEDGER_ACK_WAIT_SECS", "2"),
    ];
    let system = System::start(&["ingress"], &vars).await;
    let mut ledger = system.extra_ledger();
    let user = system
        .post("/api/v1/user")
        .json(serde_json::json!({ "external_id": "u" }))
        .send()
        .await;
    assert_eq!(user.status, StatusCode::OK, "{}", user.text);
    let user = user.body["id"].as_i64().unwrap();

    // 400 credits of 1 USDT each, with the ledger killed (SIGKILL) once some are applied and
    // others are not yet: mid-load, not before or after it.
    const CREDITS: i64 = 400;
    let credits = futures::future::join_all((0..CREDITS).map(|i| {
        let system = &system;
        async move {
            system
                .post("/api/v1/admin/adjustments")
                .key(&system.dev_key("admin"))
                .idempotency(&format!("credit-{i}"))
                .json(serde_json::json!({ "user_id": user, "currency": "USDT", "amount": "1", "reason": "load" }))
                .send()
                .await
        }
    }));
    let applied = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM commands WHERE kind = 'balance.adjust'")
            .fetch_one(&system.db.pool)
            .await
            .unwrap()
    };
    let killer = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while applied().await < 40 {
            assert!(std::time::Instant::now() < deadline, "the load never started");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ledger.start_kill().unwrap();
        ledger.wait().await.unwrap();
        applied().await
    };
    let (answers, applied_at_kill) = tokio::join!(credits, killer);
    assert!(
        applied_at_kill < CREDITS,
        "the kill landed after the load ({applied_at_kill} applied)"
    );
    let _restarted = system.extra_ledger();
    system.settle().await;

    let accepted = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK || a.status == StatusCode::ACCEPTED)
        .count();
    assert_eq!(
        accepted as i64,
        CREDITS,
        "every credit was accepted: {:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert_eq!(
        system.balance(user).await.0,
        format!("{CREDITS}.000000"),
        "each accepted credit applied exactly once"
    );
    assert_eq!(applied().await, CREDITS);
    // The ledger counts every delivery after the first (here: the messages the killed one held).
    let redelivered: i64 = sqlx::query_scalar("SELECT count(*) FROM command_attempts")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert!(redelivered > 0, "the killed ledger held messages that came back");
    system.assert_invariants().await;
}

#[tokio::test]
async fn a_command_that_arrives_while_postgres_is_down_is_applied_when_it_returns_not_dead_lettered() {
    let system = System::up().await;
    let customer = system.user("alice").await;
    system.settle().await;
    let tenant = tenant_of(&system, customer).await;
    // Another database's connection plays the operator's console while the system's database is away.
    let console = guarantor_testkit::TestDb::new().await;
    let name = system.db.name().to_owned();
    sqlx::raw_sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&console.pool)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&console.pool)
        .await
        .unwrap();

    // The ingress cannot authenticate without Postgres, so the commands arrive as replayed ones would.
    let js = system.jetstream().await;
    for units in 1..=5 {
        publish_command(&js, &credit_envelope(tenant, customer, units, "during an outage")).await;
    }
    // The ledger holds them while Postgres refuses connections for 15 s (longer than the ack wait a
    // delivery would otherwise spend, and than any retry budget).
    let outage = std::time::Instant::now();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream(guarantor_ledger::consumer::CONSUMER, COMMAND_STREAM)
        .await
        .unwrap();
    while outage.elapsed() < Duration::from_secs(15) {
        let info = consumer.info().await.unwrap();
        assert_eq!(info.num_pending, 0, "the ledger took every command");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sqlx::raw_sql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&console.pool)
        .await
        .unwrap();
    system.settle().await;

    assert_eq!(
        system.balance(customer).await.0,
        "15.000000",
        "every command applied once Postgres returned"
    );
    let mut dlq = js.get_stream(DLQ_STREAM).await.unwrap();
    assert_eq!(
        dlq.info().await.unwrap().state.messages,
        0,
        "an outage sends nothing to the DLQ"
    );
    system.assert_invariants().await;
}

async fn tenant_of(system: &System, user: i64) -> TenantId {
    sqlx::query_scalar("SELECT tenant_id FROM users WHERE id = $1")
        .bind(user)
        .fetch_one(&system.db.pool)
        .await
        .unwrap()
}

/// An admin's credit of `units` USDT to `user`, as the ingress would publish it.
fn credit_envelope(tenant: TenantId, user: i64, units: i64, reason: &str) -> CommandEnvelope {
    CommandEnvelope {
        id: CommandId::generate(),
        tenant_id: tenant,
        role: Role::Admin,
        fingerprint: "f".repeat(64),
        issued_at: chrono::Utc::now(),
        command: Command::AdjustBalance {
            user_id: UserId::new(user).unwrap(),
            currency: guarantor_domain::Currency::Usdt,
            amount: rust_decimal::Decimal::new(units, 0),
            reason: reason.into(),
        },
    }
}

/// Publishes a command straight to `GUARANTOR_CMD` under its own id, bypassing the ingress.
async fn publish_command(js: &guarantor_messaging::JetStream, envelope: &CommandEnvelope) {
    let headers = guarantor_messaging::headers(&envelope.id.to_string(), None);
    let payload = Bytes::from(serde_json::to_vec(envelope).unwrap());
    js.publish_with_headers(envelope.subject(), headers, payload)
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Polls `GET /commands/{id}` until its status is `status` (within 30 s).
async fn command_status(system: &System, id: CommandId, status: &str) -> support::Answer {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = system.get(&format!("/api/v1/commands/{id}")).send().await;
        if answer.body["status"] == status {
            return answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "command {id} never became {status}: {}",
            answer.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn dev_tenant_user(system: &System, external_id: &str) -> (TenantId, i64) {
    let tenant: TenantId = sqlx::query_scalar("SELECT id FROM tenants WHERE name = 'dev'")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    let user: i64 =
        sqlx::query_scalar("INSERT INTO users (tenant_id, external_id, name) VALUES ($1, $2, $2) RETURNING id")
            .bind(tenant)
            .bind(external_id)
            .fetch_one(&system.db.pool)
            .await
            .unwrap();
    (tenant, user)
}

#[tokio::test]
async fn a_command_failing_on_every_attempt_is_dead_lettered_with_a_failed_verdict_and_its_batch_is_applied() {
    // No ledger runs while the commands are published, so they reach it together, as one batch.
    let system = System::start(&["ingress"], &[]).await;
    let (tenant, customer) = dev_tenant_user(&system, "customer").await;
    let (_, performer) = dev_tenant_user(&system, "performer").await;
    let js = system.jetstream().await;
    // A deal whose title the database refuses (the ingress would have refused it; a replayed or
    // hand-made message need not have passed the ingress): it fails the same way on every attempt.
    let poison = CommandEnvelope {
        id: CommandId::generate(),
        tenant_id: tenant,
        role: Role::Platform,
        fingerprint: "p".repeat(64),
        issued_at: chrono::Utc::now(),
        command: Command::CreateDeal(guarantor_domain::NewDeal {
            title: "t".repeat(300),
            description: String::new(),
            amount: rust_decimal::Decimal::ONE,
            currency: guarantor_domain::Currency::Usdt,
            customer_id: UserId::new(customer).unwrap(),
            performer_id: UserId::new(performer).unwrap(),
            deadline_at: None,
        }),
    };
    for i in 0..10 {
        if i == 5 {
            publish_command(&js, &poison).await;
        }
        publish_command(&js, &credit_envelope(tenant, customer, 1, "beside the poison")).await;
    }

    let _ledger = system.extra_ledger();
    let failed = command_status(&system, poison.id, "failed").await;
    system.settle().await;

    assert_eq!(failed.body["http_status"], 500, "{}", failed.text);
    assert_eq!(
        failed.body["body"]["error"]["code"], "command_failed",
        "{}",
        failed.text
    );
    assert_eq!(
        system.balance(customer).await.0,
        "10.000000",
        "the rest of the batch is applied"
    );
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM command_attempts WHERE id = $1")
        .bind(poison.id.as_uuid())
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(attempts, 3, "tried three times, then given up on");
    let mut dlq = js.get_stream(DLQ_STREAM).await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 1);
    let letter = dlq.get_raw_message(1).await.unwrap();
    assert_eq!(letter.subject.as_str(), "guarantor.dlq.guarantor.cmd.deal.create");
    assert_eq!(
        system.snapshot().await["deals"],
        serde_json::json!(null),
        "no deal was created"
    );
    system.assert_invariants().await;

    // The operator removes the cause (here: titles may be longer now) and re-drives the message:
    // the command is applied, once, and its answer is no longer `failed`.
    let (_, letters, _) = system.cli(&["dlq", "list", "--json"]).await;
    let letters: Value = serde_json::from_str(&letters).unwrap();
    assert_eq!(letters[0]["command_id"], poison.id.to_string());
    assert!(
        letters[0]["error"].as_str().unwrap().contains("deals_title_check"),
        "{letters}"
    );
    sqlx::query("ALTER TABLE deals DROP CONSTRAINT deals_title_check")
        .execute(&system.db.pool)
        .await
        .unwrap();
    let (redriven, printed, _) = system.cli(&["dlq", "redrive", "--id", "1"]).await;
    assert!(redriven, "{printed}");
    assert!(
        printed.contains("DLQ message 1 → guarantor.cmd.deal.create: applied"),
        "{printed}"
    );
    let done = command_status(&system, poison.id, "done").await;
    assert_eq!(done.body["http_status"], 200, "{}", done.text);
    system.settle().await;
    assert_eq!(dlq.info().await.unwrap().state.messages, 0, "the DLQ is empty");
    let deals: i64 = sqlx::query_scalar("SELECT count(*) FROM deals")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(deals, 1, "the re-driven deal was created once");
    system.assert_invariants().await;
}

#[tokio::test]
async fn two_ledgers_under_conflicting_load_never_deadlock_and_keep_every_aggregates_event_sequence() {
    let system = System::up().await;
    let _replica = system.extra_ledger();
    let mut users = Vec::new();
    for n in 0..6 {
        let user = system.user(&format!("user-{n}")).await;
        system.adjust(user, "3").await;
        users.push(user);
    }
    // Every user is the customer of some deals and the performer of others, so releases fund other
    // customers' waiting deals while their own deals move.
    let mut deals = Vec::new();
    for n in 0..36 {
        let (customer, performer) = (users[n % 6], users[(n + 1 + n / 6) % 6]);
        if customer != performer {
            deals.push((
                system.deal(customer, performer, &format!("{}", 1 + n % 3)).await,
                customer,
                performer,
            ));
        }
    }
    let deadlocks = || async {
        sqlx::query_scalar::<_, i64>("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            .fetch_one(&system.db.pool)
            .await
            .unwrap()
    };
    let before = deadlocks().await;

    let system_ref = &system;
    let lifecycles = futures::future::join_all(deals.iter().map(|&(deal, customer, performer)| async move {
        system_ref.act(deal, "confirm", performer).await;
        system_ref.act(deal, "close", customer).await;
    }));
    let credits = futures::future::join_all(users.iter().flat_map(|user| [*user; 8]).enumerate().map(
        |(n, user)| async move {
            system_ref.adjust(user, if n % 4 == 0 { "-1" } else { "1" }).await;
        },
    ));
    tokio::join!(lifecycles, credits);
    system.settle().await;
    // Backends report their statistics within a second of going idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    assert_eq!(deadlocks().await, before, "Postgres detected no deadlock");
    for log in ["guarantor.log", "ledger.log"] {
        let text = std::fs::read_to_string(system.data_dir.path().join(log)).unwrap_or_default();
        assert!(!text.contains("deadlock"), "{log} mentions a deadlock");
    }
    let events = system.events().await;
    assert!(events.len() > deals.len() * 3, "{} events", events.len());
    assert_eq!(support::sequence_violations(&events), Vec::<String>::new());
    system.assert_invariants().await;
}

#[tokio::test]
async fn a_reused_key_with_another_request_answers_409_while_the_first_is_pending_and_once_it_is_done() {
    let system = System::start(&["ingress"], &[("GUARANTOR_COMMAND_TIMEOUT_MS", "300")]).await;
    let upsert = |external_id: &'static str| {
        system
            .post("/api/v1/user")
            .idempotency("the-key")
            .json(serde_json::json!({ "external_id": external_id }))
            .send()
    };

    let first = upsert("a").await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let pending_other = upsert("b").await;
    let pending_retry = upsert("a").await;
    assert_eq!(
        (pending_other.status, pending_other.error_code()),
        (StatusCode::CONFLICT, "idempotency_key_reused")
    );
    assert_eq!(pending_retry.status, StatusCode::ACCEPTED);
    assert_eq!(pending_retry.body["command_id"], first.body["command_id"]);

    let _ledger = system.extra_ledger();
    let id: CommandId = first.body["command_id"].as_str().unwrap().parse().unwrap();
    command_status(&system, id, "done").await;
    let done_other = upsert("b").await;
    let done_retry = upsert("a").await;

    assert_eq!(
        (done_other.status, done_other.error_code()),
        (StatusCode::CONFLICT, "idempotency_key_reused")
    );
    assert_eq!(done_retry.status, StatusCode::OK);
    assert_eq!(done_retry.body["external_id"], "a");
    let users: Vec<String> = sqlx::query_scalar("SELECT external_id FROM users")
        .fetch_all(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(users, ["a"]);
}

#[tokio::test]
async fn reconcile_exits_non_zero_naming_a_ledger_row_corrupted_behind_its_back_and_zero_otherwise() {
    let system = System::up().await;
    let (customer, _, deals) = scenario(&system).await;
    system.settle().await;
    let (ok, report) = system.reconcile().await;
    assert!(ok, "a clean ledger reconciles: {report}");

    // A balance edited by hand, without its transfer: invariant 1 names the account.
    let account: i64 = sqlx::query_scalar("SELECT id FROM accounts WHERE kind = 'user_available' AND user_id = $1")
        .bind(customer)
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    // A column of that account edited by hand (5 added), then put back: reconcile names it, then
    // agrees again.
    let edited = |column: &'static str, named: String| {
        let system = &system;
        async move {
            let edit = |sign: &str| format!("UPDATE accounts SET {column} = {column} {sign} 5 WHERE id = $1");
            sqlx::query(&edit("+"))
                .bind(account)
                .execute(&system.db.pool)
                .await
                .unwrap();
            let (ok, report) = system.reconcile().await;
            assert!(!ok, "{report}");
            assert!(report.contains(&named), "{column}: {report}");
            sqlx::query(&edit("-"))
                .bind(account)
                .execute(&system.db.pool)
                .await
                .unwrap();
            assert!(system.reconcile().await.0, "{column} restored");
        }
    };
    edited("balance", format!("account {account}: balance")).await;
    // What the customer holds no longer matches their funded deals.
    edited("held", format!("user {customer} holds")).await;

    // A closed deal put back into `confirmed` by hand: its escrow no longer holds its amount.
    sqlx::query("UPDATE deals SET status = 'confirmed' WHERE id = $1")
        .bind(deals[0])
        .execute(&system.db.pool)
        .await
        .unwrap();
    let (ok, report) = system.reconcile().await;
    assert!(!ok, "{report}");
    assert!(
        report.contains(&format!("deal {} in status confirmed", deals[0])),
        "{report}"
    );
}
