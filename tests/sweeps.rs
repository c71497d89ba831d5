//! End-to-end tests of the sweeper on the devnet: credited deposits end up on the main wallet, with
//! exactly one transfer on chain per sweep and the fee the chain really charged recorded.

mod support;

use std::time::{Duration, Instant};

use guarantor_tron::client::{NodeClient, NodeConfig};
use guarantor_tron::TronAddress;
use reqwest::StatusCode;
use serde_json::json;
use support::System;

async fn sweeping_system() -> System {
    System::start(
        &["up"],
        &[
            ("GUARANTOR_SCAN_INTERVAL_SECS", "1"),
            ("GUARANTOR_SWEEP_INTERVAL_SECS", "1"),
            ("GUARANTOR_DEVNET_BLOCK_INTERVAL_MS", "200"),
            ("GUARANTOR_DEVNET_SOLIDIFY_LAG", "3"),
        ],
    )
    .await
}

fn main_wallet(system: &System) -> TronAddress {
    let key = std::fs::read_to_string(system.data_dir.path().join("dev-main-wallet-key.hex")).unwrap();
    guarantor_tron::PrivateKey::from_hex(key.trim()).unwrap().address()
}

#[tokio::test]
async fn a_credited_deposit_is_swept_to_the_main_wallet_once_with_the_fee_the_chain_charged() {
    let system = sweeping_system().await;
    let user = system.user("payer").await;
    let (payment, address, token) = system.create_payment(user, "25").await;
    let token: TronAddress = token.parse().unwrap();
    let address: TronAddress = address.parse().unwrap();
    system
        .pay_with_sdk(&token.to_base58(), &address.to_base58(), 25_000_000)
        .await;
    system
        .payment_until(payment, Duration::from_secs(60), |p| p["status"] == "success")
        .await;

    let (sweep, _, fee_paid) = system.sweep_until("confirmed").await;

    let node = NodeClient::new(NodeConfig::new(system.devnet.clone())).unwrap();
    assert_eq!(
        node.trc20_balance(&token, &main_wallet(&system), true).await.unwrap(),
        25_000_000
    );
    assert_eq!(
        node.trc20_balance(&token, &address, true).await.unwrap(),
        0,
        "nothing left behind"
    );
    let transactions: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT txid, kind, status, fee_sun FROM sweep_transactions WHERE sweep_id = $1 ORDER BY created_at",
    )
    .bind(sweep)
    .fetch_all(&system.db.pool)
    .await
    .unwrap();
    let kinds: Vec<(&str, &str)> = transactions.iter().map(|t| (t.1.as_str(), t.2.as_str())).collect();
    assert_eq!(kinds, [("top_up", "confirmed"), ("transfer", "confirmed")]);
    let mut charged = 0;
    for (txid, ..) in &transactions {
        charged += node.transaction_info(txid, true).await.unwrap().unwrap().fee_sun;
    }
    assert_eq!(fee_paid, charged, "the fee recorded is what the devnet burned");
    assert!(charged > 0);

    system.settle().await;
    let events = system.events().await;
    for kind in ["sweep.submitted", "sweep.confirmed"] {
        assert_eq!(
            events.iter().filter(|(_, e)| e["type"] == kind).count(),
            1,
            "{kind} once"
        );
    }
    let document = support::asyncapi();
    for (_, event) in &events {
        let violations = support::event_violations(&document, event);
        assert!(violations.is_empty(), "{event}: {violations:?}");
    }
    assert!(support::sequence_violations(&events).is_empty());
    // The sweeper's figures, as the next pass reports them.
    system
        .metrics_until(
            &[
                "guarantor_sweeps_total{status=\"confirmed\"} 1",
                "guarantor_unswept_usdt 0",
                "guarantor_sweep_fee_trx_total",
            ],
            Duration::from_secs(30),
        )
        .await;
    system.assert_invariants().await;
}

#[tokio::test]
async fn reconcile_checks_the_chain_and_names_an_address_whose_coins_moved_behind_its_back() {
    let system = System::start(
        &["up"],
        &[
            ("GUARANTOR_SCAN_INTERVAL_SECS", "1"),
            ("GUARANTOR_SWEEP_INTERVAL_SECS", "1"),
            ("GUARANTOR_SWEEP_MIN_AMOUNT", "10"),
            ("GUARANTOR_DEVNET_BLOCK_INTERVAL_MS", "200"),
            ("GUARANTOR_DEVNET_SOLIDIFY_LAG", "3"),
        ],
    )
    .await;
    let user = system.user("payer").await;
    let (payment, address, token) = system.create_payment(user, "30").await;
    let token: TronAddress = token.parse().unwrap();
    let address: TronAddress = address.parse().unwrap();
    system
        .pay_with_sdk(&token.to_base58(), &address.to_base58(), 25_000_000)
        .await;
    system.sweep_until("confirmed").await;
    let (ok, report) = system.reconcile().await;
    assert!(ok, "{report}");
    assert!(report.contains("ok: invariant 5 holds"), "{report}");

    // 5 more, credited but below the sweep minimum, then moved away with the deposit key itself.
    system
        .pay_with_sdk(&token.to_base58(), &address.to_base58(), 5_000_000)
        .await;
    system
        .payment_until(payment, Duration::from_secs(60), |p| p["received"] == "30.000000")
        .await;
    let seed = std::fs::read_to_string(system.data_dir.path().join("dev-hd-seed.hex")).unwrap();
    let wallet = guarantor_tron::HdWallet::from_seed(&hex::decode(seed.trim()).unwrap()).unwrap();
    let index: i64 = sqlx::query_scalar("SELECT hd_index FROM payments WHERE id = $1")
        .bind(payment)
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    let key = wallet.derive(u32::try_from(index).unwrap()).unwrap();
    assert_eq!(key.address(), address);
    system
        .devnet_control("/devnet/faucet", json!({ "address": address.to_base58(), "trx": "50" }))
        .await;
    let node = NodeClient::new(NodeConfig::new(system.devnet.clone())).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let header = node.header(Duration::from_secs(60)).await.unwrap();
    let elsewhere = guarantor_tron::PrivateKey::from_hex(&"77".repeat(32))
        .unwrap()
        .address();
    let raw = guarantor_tron::tx::trc20_transfer(&header, &address, &token, &elsewhere, 5_000_000, 50_000_000);
    let signed = guarantor_tron::tx::sign(prost::Message::encode_to_vec(&raw), &key);
    node.broadcast(&signed).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.trc20_balance(&token, &address, true).await.unwrap() != 0 {
        assert!(Instant::now() < deadline, "the transfer out did not solidify");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (ok, report) = system.reconcile().await;
    assert!(!ok, "{report}");
    assert!(report.contains(&address.to_base58()), "{report}");
    assert!(
        report.contains("5.000000 missing") || report.contains("5 missing"),
        "{report}"
    );
}

#[tokio::test]
async fn a_sweep_failing_for_an_empty_fee_wallet_is_failed_with_its_reason_and_lands_once_when_retried() {
    let fee_wallet = guarantor_tron::PrivateKey::from_hex(&"5a".repeat(32)).unwrap();
    let system = System::start(
        &["up"],
        &[
            ("GUARANTOR_SCAN_INTERVAL_SECS", "1"),
            ("GUARANTOR_SWEEP_INTERVAL_SECS", "1"),
            ("GUARANTOR_SWEEP_MAX_ATTEMPTS", "2"),
            ("GUARANTOR_TRON_FEE_WALLET_KEY", &fee_wallet.to_hex()),
            ("GUARANTOR_DEVNET_BLOCK_INTERVAL_MS", "200"),
            ("GUARANTOR_DEVNET_SOLIDIFY_LAG", "3"),
        ],
    )
    .await;
    let user = system.user("payer").await;
    let (_, address, token) = system.create_payment(user, "12").await;
    let token: TronAddress = token.parse().unwrap();
    system.pay_with_sdk(&token.to_base58(), &address, 12_000_000).await;

    let (sweep, _, _) = system.sweep_until("failed").await;
    let listed = system
        .get("/api/v1/admin/sweeps?status=failed")
        .key(&system.dev_key("admin"))
        .send()
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(listed.body[0]["sweep_id"], sweep);
    assert_eq!(listed.body[0]["address"], address.as_str());
    // The fee wallet holds nothing, not even an account: the top-up is refused with the node's reason.
    assert!(
        listed.body[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("CONTRACT_VALIDATE_ERROR"),
        "{}",
        listed.text
    );
    let platform = system.get("/api/v1/admin/sweeps").send().await;
    assert_eq!(platform.status, StatusCode::FORBIDDEN);

    system
        .devnet_control(
            "/devnet/faucet",
            json!({ "address": fee_wallet.address().to_base58(), "trx": "1000" }),
        )
        .await;
    let retried = system
        .command()
        .args(["sweeps", "retry", &sweep.to_string()])
        .output()
        .await
        .unwrap();
    assert!(retried.status.success(), "{}", String::from_utf8_lossy(&retried.stderr));
    system.sweep_until("confirmed").await;

    let node = NodeClient::new(NodeConfig::new(system.devnet.clone())).unwrap();
    assert_eq!(
        node.trc20_balance(&token, &main_wallet(&system), true).await.unwrap(),
        12_000_000
    );
    let landed: Vec<(String, String)> = sqlx::query_as(
        "SELECT kind, status FROM sweep_transactions WHERE sweep_id = $1 AND status = 'confirmed' ORDER BY created_at",
    )
    .bind(sweep)
    .fetch_all(&system.db.pool)
    .await
    .unwrap();
    assert_eq!(
        landed,
        [
            ("top_up".into(), "confirmed".into()),
            ("transfer".into(), "confirmed".into())
        ]
    );
    system.settle().await;
    let events = system.events().await;
    assert_eq!(events.iter().filter(|(_, e)| e["type"] == "sweep.failed").count(), 1);
    let listed = system
        .command()
        .args(["sweeps", "list", "--json"])
        .output()
        .await
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["status"], "confirmed");
}

const LAG: u64 = 3;

/// A system on a stepped devnet (blocks only when the test makes them) without a sweeper: the
/// sweeping is done by `guarantor sweeper` processes the test starts and kills.
async fn stepped_system(extra: &[(&str, &str)]) -> System {
    let mut vars = vec![
        ("GUARANTOR_SCAN_INTERVAL_SECS", "1"),
        ("GUARANTOR_SWEEP_INTERVAL_SECS", "1"),
        ("GUARANTOR_DEVNET_BLOCK_INTERVAL_MS", "3600000"),
        ("GUARANTOR_DEVNET_SOLIDIFY_LAG", "3"),
    ];
    vars.extend_from_slice(extra);
    System::start(&["up", "--without", "sweeper"], &vars).await
}

/// A `guarantor sweeper` with `up`'s dev keys.
fn sweeper(system: &System) -> tokio::process::Child {
    let dir = system.data_dir.path();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("sweeper.log"))
        .unwrap();
    system
        .command()
        .env("GUARANTOR_TRON_NODE_URL", &system.devnet)
        .env("GUARANTOR_HD_SEED_FILE", dir.join("dev-hd-seed.hex"))
        .env("GUARANTOR_TRON_FEE_WALLET_KEY_FILE", dir.join("dev-fee-wallet-key.hex"))
        .env("GUARANTOR_TRON_MAIN_WALLET", main_wallet(system).to_base58())
        .arg("sweeper")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn kill_9(child: &mut tokio::process::Child) {
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

/// Waits until `sql` (a boolean query) holds.
async fn until(system: &System, sql: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let holds: bool = sqlx::query_scalar(sql).fetch_one(&system.db.pool).await.unwrap();
        if holds {
            return;
        }
        assert!(Instant::now() < deadline, "never: {sql}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the devnet knows transaction `txid` (pending or mined).
async fn known_to_node(system: &System, txid: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found: serde_json::Value = system
            .http
            .post(format!("{}/wallet/gettransactionbyid", system.devnet))
            .json(&json!({ "value": txid }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if found.get("txID").is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "{txid} never reached the node");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A paid, credited payment of `amount` whole USDT: its address and the token.
async fn credited_payment(system: &System, amount: &str) -> (TronAddress, TronAddress) {
    let user = system.user(&format!("payer-{amount}")).await;
    let (payment, address, token) = system.create_payment(user, amount).await;
    let token: TronAddress = token.parse().unwrap();
    let address: TronAddress = address.parse().unwrap();
    system
        .devnet_control(
            "/devnet/faucet",
            json!({ "address": address.to_base58(), "usdt": amount }),
        )
        .await;
    system.blocks(1 + LAG).await;
    system
        .payment_until(payment, Duration::from_secs(30), |p| p["status"] == "success")
        .await;
    (address, token)
}

/// The USDT transfers the main wallet received (solidified), as TronGrid lists them.
async fn arrived(system: &System, token: &TronAddress) -> Vec<(TronAddress, u64)> {
    let node = NodeClient::new(NodeConfig::new(system.devnet.clone())).unwrap();
    node.trc20_transfers_to(&main_wallet(system), token, 200)
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.from, t.amount))
        .collect()
}

#[tokio::test]
async fn a_sweeper_killed_at_each_step_lands_exactly_one_transfer_and_one_top_up() {
    let system = stepped_system(&[]).await;
    // Funding of the dev fee wallet, mined and solidified.
    tokio::time::sleep(Duration::from_millis(500)).await;
    system.blocks(1 + LAG).await;
    let (address, token) = credited_payment(&system, "20").await;

    // 1. The top-up is stored, but every broadcast fails: killed while retrying.
    system
        .devnet_control("/devnet/faults", json!({ "broadcast_error_rate": 1.0 }))
        .await;
    let mut first = sweeper(&system);
    until(
        &system,
        "SELECT EXISTS (SELECT 1 FROM sweep_transactions WHERE kind = 'top_up')",
    )
    .await;
    kill_9(&mut first).await;
    system.devnet_control("/devnet/faults", json!({})).await;

    // 2. Restarted (once the dead holder's lease ran out): the same stored top-up is broadcast;
    //    killed before it is mined.
    let top_up: String = sqlx::query_scalar("SELECT txid FROM sweep_transactions WHERE kind = 'top_up'")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    let mut second = sweeper(&system);
    known_to_node(&system, &top_up).await;
    kill_9(&mut second).await;
    system.blocks(1 + LAG).await;

    // 3. Restarted: the top-up's receipt, then the transfer stored and broadcast; killed after the
    //    transfer is mined but before its receipt is solidified and recorded.
    let mut third = sweeper(&system);
    until(
        &system,
        "SELECT EXISTS (SELECT 1 FROM sweep_transactions WHERE kind = 'transfer')",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    system.blocks(1).await;
    kill_9(&mut third).await;
    system.blocks(LAG).await;

    // 4. Restarted: the receipt is recorded.
    let _fourth = sweeper(&system);
    system.sweep_until("confirmed").await;

    assert_eq!(
        arrived(&system, &token).await,
        [(address, 20_000_000)],
        "exactly one transfer landed"
    );
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT kind, status FROM sweep_transactions ORDER BY created_at")
        .fetch_all(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(
        rows,
        [
            ("top_up".into(), "confirmed".into()),
            ("transfer".into(), "confirmed".into())
        ]
    );
    system.assert_invariants().await;
    let (ok, report) = system.reconcile().await;
    assert!(ok, "{report}");
}

#[tokio::test]
async fn a_transfer_the_node_dropped_is_replaced_only_after_it_expired_and_exactly_one_lands() {
    let system = stepped_system(&[("GUARANTOR_SWEEP_TX_LIFETIME_SECS", "2")]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    system.blocks(1 + LAG).await;
    let (address, token) = credited_payment(&system, "7").await;
    let _sweeper = sweeper(&system);
    // The top-up is broadcast; from now on the node accepts broadcasts and loses them.
    until(
        &system,
        "SELECT EXISTS (SELECT 1 FROM sweep_transactions WHERE kind = 'top_up')",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    system
        .devnet_control("/devnet/faults", json!({ "drop_pending": true }))
        .await;
    system.blocks(1 + LAG).await;
    until(
        &system,
        "SELECT EXISTS (SELECT 1 FROM sweep_transactions WHERE kind = 'transfer')",
    )
    .await;
    // Blocks while the lost transfer expires (its re-broadcasts are lost too), then the node keeps
    // what it accepts again.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        system.blocks(1).await;
    }
    system.devnet_control("/devnet/faults", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        system.blocks(1).await;
        let confirmed: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sweeps WHERE status = 'confirmed')")
            .fetch_one(&system.db.pool)
            .await
            .unwrap();
        if confirmed {
            break;
        }
        assert!(Instant::now() < deadline, "the sweep never landed");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    assert_eq!(
        arrived(&system, &token).await,
        [(address, 7_000_000)],
        "exactly one transfer landed"
    );
    let transfers: Vec<String> =
        sqlx::query_scalar("SELECT status FROM sweep_transactions WHERE kind = 'transfer' ORDER BY created_at")
            .fetch_all(&system.db.pool)
            .await
            .unwrap();
    assert_eq!(transfers, ["expired", "confirmed"]);
    let (ok, report) = system.reconcile().await;
    assert!(ok, "{report}");
}

#[tokio::test]
async fn a_transfer_that_runs_out_of_energy_is_recorded_with_its_fee_and_the_retry_tops_up_again() {
    let system = sweeping_system().await;
    // Every contract call needs three times the energy estimated: the first transfer runs out.
    system
        .devnet_control("/devnet/faults", json!({ "energy_percent": 300 }))
        .await;
    let user = system.user("payer").await;
    let (_, address, token) = system.create_payment(user, "9").await;
    let token: TronAddress = token.parse().unwrap();
    let address: TronAddress = address.parse().unwrap();
    system
        .devnet_control("/devnet/faucet", json!({ "address": address.to_base58(), "usdt": "9" }))
        .await;
    until(
        &system,
        "SELECT EXISTS (SELECT 1 FROM sweep_transactions WHERE kind = 'transfer' AND status = 'failed')",
    )
    .await;
    system.devnet_control("/devnet/faults", json!({})).await;
    let (sweep, _, fee_paid) = system.sweep_until("confirmed").await;

    assert_eq!(
        arrived(&system, &token).await,
        [(address, 9_000_000)],
        "exactly one transfer landed"
    );
    let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT kind, status, result, fee_sun FROM sweep_transactions WHERE sweep_id = $1 ORDER BY created_at",
    )
    .bind(sweep)
    .fetch_all(&system.db.pool)
    .await
    .unwrap();
    let shape: Vec<(&str, &str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_deref()))
        .collect();
    assert_eq!(
        shape,
        [
            ("top_up", "spent", None),
            ("transfer", "failed", Some("OUT_OF_ENERGY")),
            ("top_up", "confirmed", None),
            ("transfer", "confirmed", Some("SUCCESS")),
        ]
    );
    assert!(rows[1].3 > 0, "the failed transfer's burned fee is recorded");
    assert_eq!(
        fee_paid,
        rows.iter().map(|r| r.3).sum::<i64>(),
        "every fee burned is counted"
    );
    let (ok, report) = system.reconcile().await;
    assert!(ok, "{report}");
}

#[tokio::test]
async fn a_credited_deposit_wakes_the_sweeper_before_its_next_pass() {
    let system = stepped_system(&[("GUARANTOR_SWEEP_INTERVAL_SECS", "3600")]).await;
    let _sweeper = sweeper(&system);
    tokio::time::sleep(Duration::from_millis(500)).await;
    system.blocks(1 + LAG).await;
    credited_payment(&system, "6").await;
    // The pass at start found nothing; the next is an hour away: the credit's event starts one.
    until(&system, "SELECT EXISTS (SELECT 1 FROM sweeps)").await;
}

#[tokio::test]
async fn two_sweeper_processes_sweep_each_address_once() {
    let system = stepped_system(&[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    system.blocks(1 + LAG).await;
    let mut paid = Vec::new();
    for amount in ["3", "4", "5"] {
        paid.push(credited_payment(&system, amount).await);
    }
    let (_first, _second) = (sweeper(&system), sweeper(&system));
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        system.blocks(1).await;
        let confirmed: i64 = sqlx::query_scalar("SELECT count(*) FROM sweeps WHERE status = 'confirmed'")
            .fetch_one(&system.db.pool)
            .await
            .unwrap();
        if confirmed == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{confirmed} of 3 sweeps confirmed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let token = paid[0].1;
    let mut landed = arrived(&system, &token).await;
    landed.sort();
    let mut expected: Vec<(TronAddress, u64)> = paid
        .iter()
        .zip([3_000_000, 4_000_000, 5_000_000])
        .map(|((address, _), amount)| (*address, amount))
        .collect();
    expected.sort();
    assert_eq!(landed, expected, "one transfer per address");
    let top_ups: i64 = sqlx::query_scalar("SELECT count(*) FROM sweep_transactions WHERE kind = 'top_up'")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(top_ups, 3);
    let (ok, report) = system.reconcile().await;
    assert!(ok, "{report}");
}
