//! End-to-end tests of payments through the HTTP API: fresh deposit addresses, idempotent creation,
//! the documented reads and refusals.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use support::System;

#[tokio::test]
async fn concurrent_payment_creations_get_distinct_addresses_and_reads_show_them() {
    let system = System::up().await;
    let user = system.user("payer").await;

    let creations = (0..20).map(|n| {
        system
            .post("/api/v1/payment")
            .json(json!({ "gateway_id": 1, "user_id": user, "amount": format!("{}.5", n + 1), "currency": "USDT" }))
            .send()
    });
    let answers = futures::future::join_all(creations).await;
    let mut addresses = BTreeSet::new();
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        assert_eq!(answer.body["status"], "waiting");
        assert_eq!(answer.body["received"], "0.000000");
        assert_eq!(answer.body["gateway_data"]["network"], "tron");
        let address = answer.body["gateway_data"]["address"].as_str().unwrap().to_owned();
        assert!(address.starts_with('T') && address.len() == 34, "{address}");
        addresses.insert(address);
    }
    assert_eq!(addresses.len(), 20, "every payment has its own address");
    let indexes: i64 = sqlx::query_scalar("SELECT count(DISTINCT hd_index) FROM payments")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(indexes, 20);

    let first = &answers[0].body;
    let id = first["payment_id"].as_i64().unwrap();
    for path in [format!("/api/v1/payment/{id}"), format!("/api/v1/payment/{id}/")] {
        let read = system.get(&path).send().await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.text);
        assert_eq!(read.body["gateway_data"], first["gateway_data"]);
        assert_eq!(read.body["deposits"], json!([]));
        assert_eq!(read.body["amount"], first["amount"]);
    }
    let stored: Option<String> = sqlx::query_scalar("SELECT address FROM payments WHERE id = $1")
        .bind(id)
        .fetch_optional(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), first["gateway_data"]["address"].as_str());
    let columns: Vec<String> =
        sqlx::query_scalar("SELECT column_name::text FROM information_schema.columns WHERE table_name = 'payments'")
            .fetch_all(&system.db.pool)
            .await
            .unwrap();
    assert!(
        columns.iter().all(|c| !c.contains("key") && !c.contains("secret")),
        "no key material is stored: {columns:?}"
    );
    system.assert_invariants().await;
}

#[tokio::test]
async fn a_payment_retried_with_its_idempotency_key_is_the_same_payment() {
    let system = System::up().await;
    let user = system.user("payer").await;
    let body = json!({ "gateway_id": 1, "user_id": user, "amount": "10" });

    let first = system
        .post("/api/v1/payment/")
        .idempotency("pay-1")
        .json(body.clone())
        .send()
        .await;
    let again = system
        .post("/api/v1/payment/")
        .idempotency("pay-1")
        .json(body)
        .send()
        .await;
    let other = system
        .post("/api/v1/payment/")
        .idempotency("pay-1")
        .json(json!({ "gateway_id": 1, "user_id": user, "amount": "11" }))
        .send()
        .await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body, "the retry answers the first payment");
    assert_eq!(other.status, StatusCode::CONFLICT);
    assert_eq!(other.error_code(), "idempotency_key_reused");
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(payments, 1);
}

#[tokio::test]
async fn bad_payment_requests_are_refused_in_the_documented_shape_and_change_nothing() {
    let system = System::up().await;
    let user = system.user("payer").await;
    let cases = [
        (
            json!({ "gateway_id": 2, "user_id": user, "amount": "1" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "gateway_id": 1, "user_id": user, "amount": "0" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            json!({ "gateway_id": 1, "user_id": user, "amount": "1.0000001" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (
            json!({ "gateway_id": 1, "user_id": user, "amount": "1", "currency": "BTC" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported_currency",
        ),
        (
            json!({ "gateway_id": 1, "user_id": 0, "amount": "1" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({ "gateway_id": 1, "user_id": user + 1000, "amount": "1" }),
            StatusCode::NOT_FOUND,
            "user_not_found",
        ),
        (
            json!({ "gateway_id": 1, "amount": "1" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ];
    for (body, status, code) in cases {
        let answer = system.post("/api/v1/payment").json(body.clone()).send().await;
        assert_eq!(answer.status, status, "{body}: {}", answer.text);
        assert_eq!(answer.error_code(), code, "{body}");
    }
    let arbiter = system
        .post("/api/v1/payment")
        .key(&system.dev_key("arbiter"))
        .json(json!({ "gateway_id": 1, "user_id": user, "amount": "1" }))
        .send()
        .await;
    assert_eq!(arbiter.status, StatusCode::FORBIDDEN);
    for path in ["/api/v1/payment/999999", "/api/v1/payment/abc"] {
        let answer = system.get(path).send().await;
        assert!(
            answer.status == StatusCode::NOT_FOUND || answer.status == StatusCode::BAD_REQUEST,
            "{path}"
        );
    }
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(payments, 0);
}

/// A system with a fast devnet (blocks every 200 ms, solidified 3 blocks behind) and a scanner that
/// looks every second.
async fn paying_system() -> System {
    System::start(
        &["up"],
        &[
            ("GUARANTOR_SCAN_INTERVAL_SECS", "1"),
            ("GUARANTOR_DEVNET_BLOCK_INTERVAL_MS", "200"),
            ("GUARANTOR_DEVNET_SOLIDIFY_LAG", "3"),
        ],
    )
    .await
}

#[tokio::test]
async fn the_original_flows_payment_branch_end_to_end_on_the_devnet() {
    let system = paying_system().await;
    let customer = system.user("customer").await;
    let performer = system.user("performer").await;
    let deal = system.deal(customer, performer, "10").await;
    let confirmed = system.act(deal, "confirm", performer).await;
    assert_eq!(confirmed.body["status"], "waiting_for_payment", "{}", confirmed.text);

    let (payment, address, token) = system.create_payment(customer, "10").await;
    let paid = system.pay_with_sdk(&token, &address, 10_000_000).await;
    assert_eq!(paid["result"], "SUCCESS");

    let done = system
        .payment_until(payment, Duration::from_secs(60), |p| p["status"] == "success")
        .await;
    assert_eq!(done["received"], "10.000000");
    assert_eq!(
        done["deposits"],
        json!([{
            "txid": paid["txid"],
            "log_index": 0,
            "amount": "10.000000",
            "block_number": paid["block_number"],
            "late": false,
        }])
    );
    assert_eq!(system.deal_status(deal).await, "confirmed");
    assert_eq!(system.balance(customer).await, ("0.000000".into(), "10.000000".into()));

    let closed = system.act(deal, "close", customer).await;
    assert_eq!(closed.body["status"], "close", "{}", closed.text);
    assert_eq!(system.balance(performer).await, ("10.000000".into(), "0.000000".into()));

    system.settle().await;
    let events = system.events().await;
    let count = |kind: &str| events.iter().filter(|(_, e)| e["type"] == kind).count();
    for kind in [
        "payment.created",
        "payment.received",
        "payment.succeeded",
        "deal.funded",
    ] {
        assert_eq!(count(kind), 1, "{kind} once");
    }
    let document = support::asyncapi();
    for (_, event) in &events {
        let violations = support::event_violations(&document, event);
        assert!(violations.is_empty(), "{event}: {violations:?}");
    }
    assert!(support::sequence_violations(&events).is_empty());
    system.assert_invariants().await;
}

const LAG: u64 = 3;

/// A system whose devnet makes blocks only when the test asks (`/devnet/blocks`), solidified 3
/// behind, with a scanner that looks every second.
async fn stepped_system(extra: &[(&str, &str)]) -> System {
    let mut vars = vec![
        ("GUARANTOR_SCAN_INTERVAL_SECS", "1"),
        ("GUARANTOR_DEVNET_BLOCK_INTERVAL_MS", "3600000"),
        ("GUARANTOR_DEVNET_SOLIDIFY_LAG", "3"),
    ];
    vars.extend_from_slice(extra);
    System::start(&["up"], &vars).await
}

/// Sends `usdt` whole units from the devnet's genesis (a real signed transfer) without mining it.
async fn faucet(system: &System, address: &str, token: &str, amount: &str) -> String {
    let paid = system
        .devnet_control("/devnet/faucet", json!({ "address": address, token: amount }))
        .await;
    paid[format!("{token}_txid")].as_str().unwrap().to_owned()
}

/// Mines what is pending, solidifies it, and waits until the scanner has read it.
async fn mine_and_scan(system: &System) {
    let mined = system.blocks(1).await;
    system.blocks(LAG).await;
    system.scanned_past(mined).await;
}

async fn waiting_deal(system: &System, customer: i64, performer: i64, amount: &str) -> i64 {
    let deal = system.deal(customer, performer, amount).await;
    let confirmed = system.act(deal, "confirm", performer).await;
    assert_eq!(confirmed.body["status"], "waiting_for_payment", "{}", confirmed.text);
    deal
}

async fn settled(system: &System, payment: i64, status: &str) -> serde_json::Value {
    let want = status.to_owned();
    system
        .payment_until(payment, Duration::from_secs(30), move |p| p["status"] == want.as_str())
        .await
}

#[tokio::test]
async fn under_over_and_partial_funding_payments_are_credited_as_they_arrive() {
    let system = stepped_system(&[]).await;
    let performer = system.user("performer").await;
    // An underpayment, completed by a second transfer.
    let short = system.user("short").await;
    let short_deal = waiting_deal(&system, short, performer, "10").await;
    let (short_payment, short_address, _) = system.create_payment(short, "10").await;
    // Two waiting deals, a payment that covers only the older one.
    let two = system.user("two-deals").await;
    let older = waiting_deal(&system, two, performer, "5").await;
    let newer = waiting_deal(&system, two, performer, "10").await;
    let (two_payment, two_address, _) = system.create_payment(two, "5").await;
    // An overpayment.
    let over = system.user("over").await;
    let over_deal = waiting_deal(&system, over, performer, "10").await;
    let (over_payment, over_address, _) = system.create_payment(over, "10").await;

    faucet(&system, &short_address, "usdt", "4").await;
    faucet(&system, &two_address, "usdt", "5").await;
    faucet(&system, &over_address, "usdt", "12.5").await;
    mine_and_scan(&system).await;

    let partial = settled(&system, short_payment, "partial").await;
    assert_eq!(partial["received"], "4.000000");
    assert_eq!(system.deal_status(short_deal).await, "waiting_for_payment");
    assert_eq!(system.balance(short).await, ("4.000000".into(), "0.000000".into()));
    settled(&system, two_payment, "success").await;
    assert_eq!(system.deal_status(older).await, "confirmed");
    assert_eq!(system.deal_status(newer).await, "waiting_for_payment");
    let overpaid = settled(&system, over_payment, "success").await;
    assert_eq!(overpaid["received"], "12.500000");
    assert_eq!(system.deal_status(over_deal).await, "confirmed");
    assert_eq!(
        system.balance(over).await,
        ("2.500000".into(), "10.000000".into()),
        "the surplus stays"
    );

    faucet(&system, &short_address, "usdt", "6").await;
    mine_and_scan(&system).await;
    let completed = settled(&system, short_payment, "success").await;
    assert_eq!(completed["deposits"].as_array().unwrap().len(), 2);
    assert_eq!(system.deal_status(short_deal).await, "confirmed");
    system.assert_invariants().await;
}

#[tokio::test]
async fn two_transfers_in_one_block_are_two_deposits_and_replays_credit_nothing_again() {
    let system = stepped_system(&[]).await;
    let user = system.user("payer").await;
    let (payment, address, _) = system.create_payment(user, "10").await;
    let first = faucet(&system, &address, "usdt", "3").await;
    let second = faucet(&system, &address, "usdt", "4").await;
    mine_and_scan(&system).await;

    let paid = system
        .payment_until(payment, Duration::from_secs(30), |p| {
            p["deposits"].as_array().unwrap().len() == 2
        })
        .await;
    let txids: BTreeSet<&str> = paid["deposits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["txid"].as_str().unwrap())
        .collect();
    assert_eq!(txids, BTreeSet::from([first.as_str(), second.as_str()]));
    assert_eq!(paid["deposits"][0]["block_number"], paid["deposits"][1]["block_number"]);
    assert_eq!(paid["received"], "7.000000");

    // Every command and observation again, through the live handlers: nothing changes.
    let before = system.snapshot().await;
    let replayed = system
        .command()
        .args(["replay", "--stream", "GUARANTOR_CMD", "--from-seq", "1"])
        .output()
        .await
        .unwrap();
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    // And the scanner reads the same blocks again from an older cursor.
    sqlx::query("UPDATE scanner_cursors SET next_block = 0")
        .execute(&system.db.pool)
        .await
        .unwrap();
    let head = system.blocks(1).await;
    system.scanned_past(head - LAG).await;
    system.settle().await;
    assert_eq!(system.snapshot().await, before, "replays and rescans changed nothing");
    let deposits: i64 = sqlx::query_scalar("SELECT count(*) FROM deposits")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(deposits, 2);
    system.assert_invariants().await;
}

#[tokio::test]
async fn a_reorged_transfer_and_a_lookalike_token_are_never_credited() {
    let system = stepped_system(&[]).await;
    let user = system.user("payer").await;
    let (payment, address, _) = system.create_payment(user, "10").await;

    let reorged = faucet(&system, &address, "usdt", "10").await;
    system.blocks(1).await;
    let reorg = system.devnet_control("/devnet/reorg", json!({ "depth": 1 })).await;
    // (The block may hold other transactions too, e.g. the dev fee wallet's funding.)
    assert!(
        reorg["dropped_txids"].as_array().unwrap().contains(&json!(reorged)),
        "{reorg}"
    );
    faucet(&system, &address, "lookalike", "10").await;
    mine_and_scan(&system).await;
    let head = system.blocks(1).await;
    system.scanned_past(head - LAG).await;

    let untouched = system.get(&format!("/api/v1/payment/{payment}")).send().await;
    assert_eq!(untouched.body["status"], "waiting");
    assert_eq!(untouched.body["deposits"], json!([]));
    assert_eq!(system.balance(user).await.0, "0.000000");

    // The real token still counts.
    faucet(&system, &address, "usdt", "10").await;
    mine_and_scan(&system).await;
    settled(&system, payment, "success").await;
    system.assert_invariants().await;
}

#[tokio::test]
async fn a_payment_expires_when_nothing_came_and_a_late_transfer_is_credited_and_flagged() {
    let system = stepped_system(&[("GUARANTOR_PAYMENT_TTL_SECS", "1")]).await;
    let user = system.user("late").await;
    let (payment, address, _) = system.create_payment(user, "10").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Blocks mined after the deadline, read by the scanner: nothing came in time.
    mine_and_scan(&system).await;
    settled(&system, payment, "expired").await;

    faucet(&system, &address, "usdt", "10").await;
    mine_and_scan(&system).await;
    let late = system
        .payment_until(payment, Duration::from_secs(30), |p| p["received"] == "10.000000")
        .await;
    assert_eq!(late["status"], "expired");
    assert_eq!(late["deposits"][0]["late"], true);
    assert_eq!(system.balance(user).await.0, "10.000000", "late coins are credited");
    system.assert_invariants().await;
}

#[tokio::test]
async fn a_failing_node_delays_detection_and_credits_nothing_wrongly() {
    let system = stepped_system(&[]).await;
    let user = system.user("payer").await;
    let (payment, address, _) = system.create_payment(user, "10").await;
    faucet(&system, &address, "usdt", "10").await;
    // The node fails before the deposit's block is solid (the scanner reads every second, so a fault
    // set after mining could come too late), then every way it can for several scan cycles.
    system
        .devnet_control("/devnet/faults", json!({ "error_rate": 1.0 }))
        .await;
    system.blocks(1 + LAG).await;
    for faults in [
        json!({ "error_rate": 1.0 }),
        json!({ "java_error_rate": 1.0 }),
        json!({ "truncate_rate": 1.0 }),
        // Suspended for longer than the check below waits: a suspension that ended before the
        // check let the scanner read the (already solid) deposit and the ledger credit it in time.
        json!({ "stall_solidified": true, "suspend_secs": 5 }),
    ] {
        system.devnet_control("/devnet/faults", faults).await;
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let read = system.get(&format!("/api/v1/payment/{payment}")).send().await;
        assert_eq!(read.body["status"], "waiting", "nothing credited while the node fails");
    }
    system.devnet_control("/devnet/faults", json!({})).await;

    let paid = settled(&system, payment, "success").await;
    assert_eq!(paid["deposits"].as_array().unwrap().len(), 1);
    system.assert_invariants().await;
}

#[tokio::test]
async fn two_scanner_processes_observe_each_deposit_once() {
    let system = stepped_system(&[]).await;
    let mut second = system.extra("scanner");
    let user = system.user("payer").await;
    let mut payments = Vec::new();
    for _ in 0..3 {
        let (payment, address, _) = system.create_payment(user, "1").await;
        faucet(&system, &address, "usdt", "1").await;
        payments.push(payment);
    }
    mine_and_scan(&system).await;
    for payment in payments {
        settled(&system, payment, "success").await;
    }

    let js = system.jetstream().await;
    let stream = js.get_stream("GUARANTOR_CMD").await.unwrap();
    let mut observations = 0;
    let info = stream.get_info().await.unwrap();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if let Ok(message) = stream.get_raw_message(seq).await {
            if message.subject.as_str() == "guarantor.cmd.deposit.observe" {
                observations += 1;
            }
        }
    }
    assert_eq!(observations, 3, "one observation per deposit");
    assert!(
        second.try_wait().unwrap().is_none(),
        "the second scanner runs, standing by"
    );
    // `up` reports its scanner's cycles in its metrics, the second process in its log.
    let metrics = system.metrics().await;
    let first_cycles = usize::from(metrics.contains("guarantor_scanner_lag_blocks"));
    let log = std::fs::read_to_string(system.data_dir.path().join("scanner.log")).unwrap();
    assert!(log.contains("scanner started"), "{log}");
    let second_cycles = log.matches("block follower cycle").count();
    assert!(
        (first_cycles == 0) != (second_cycles == 0),
        "one scanner holds the lease and works, the other stands by: {first_cycles} and {second_cycles} cycles"
    );
    system.assert_invariants().await;
}

#[tokio::test]
async fn the_balance_check_credits_what_the_block_follower_missed_and_nothing_else() {
    let system = stepped_system(&[("GUARANTOR_BALANCE_CHECK_INTERVAL_SECS", "1")]).await;
    // Blind the block follower: its cursor far ahead of the chain.
    system.scanned_past(0).await;
    sqlx::query("UPDATE scanner_cursors SET next_block = 1000000")
        .execute(&system.db.pool)
        .await
        .unwrap();
    let user = system.user("payer").await;
    let (payment, address, _) = system.create_payment(user, "7").await;
    let first = faucet(&system, &address, "usdt", "4").await;
    let second = faucet(&system, &address, "usdt", "3").await;
    faucet(&system, &address, "lookalike", "5").await;
    system.blocks(1 + LAG).await;

    let paid = settled(&system, payment, "success").await;
    let txids: BTreeSet<&str> = paid["deposits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["txid"].as_str().unwrap())
        .collect();
    assert_eq!(txids, BTreeSet::from([first.as_str(), second.as_str()]));
    assert_eq!(paid["received"], "7.000000", "the look-alike token is not counted");
    // Later checks find the balance accounted for and publish nothing more.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let deposits: i64 = sqlx::query_scalar("SELECT count(*) FROM deposits")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(deposits, 2);
    system.assert_invariants().await;
}

#[tokio::test]
async fn a_scanner_configured_with_an_address_that_is_no_token_refuses_to_start() {
    let system = stepped_system(&[]).await;
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        system
            .command()
            .env("GUARANTOR_TRON_NODE_URL", &system.devnet)
            .env("GUARANTOR_TRON_USDT_CONTRACT", "TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH")
            .arg("scanner")
            .output(),
    )
    .await
    .expect("the scanner stops by itself")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("GUARANTOR_TRON_USDT_CONTRACT"), "{stderr}");
}
