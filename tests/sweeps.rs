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

async fn sweep_until(system: &System, status: &str) -> (i64, String, i64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let row: Option<(i64, String, i64)> =
            sqlx::query_as("SELECT id, status, fee_paid_sun FROM sweeps ORDER BY id DESC LIMIT 1")
                .fetch_optional(&system.db.pool)
                .await
                .unwrap();
        if let Some(row) = row.filter(|row| row.1 == status) {
            return row;
        }
        assert!(Instant::now() < deadline, "no sweep reached {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_credited_deposit_is_swept_to_the_main_wallet_once_with_the_fee_the_chain_charged() {
    let system = sweeping_system().await;
    let user = system.user("payer").await;
    let created = system
        .post("/api/v1/payment")
        .json(json!({ "gateway_id": 1, "user_id": user, "amount": "25" }))
        .send()
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text);
    let payment = created.body["payment_id"].as_i64().unwrap();
    let address: TronAddress = created.body["gateway_data"]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let token: TronAddress = created.body["gateway_data"]["token_contract"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    system
        .pay_with_sdk(&token.to_base58(), &address.to_base58(), 25_000_000)
        .await;
    system
        .payment_until(payment, Duration::from_secs(60), |p| p["status"] == "success")
        .await;

    let (sweep, _, fee_paid) = sweep_until(&system, "confirmed").await;

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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = system
            .http
            .get(format!("{}/metrics", system.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("guarantor_sweeps_total{status=\"confirmed\"} 1")
            && metrics.contains("guarantor_unswept_usdt 0")
        {
            assert!(metrics.contains("guarantor_sweep_fee_trx_total"), "{metrics}");
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    system.assert_invariants().await;
}

async fn reconcile(system: &System) -> (bool, String) {
    let output = system
        .command()
        .env("GUARANTOR_TRON_NODE_URL", &system.devnet)
        .arg("reconcile")
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
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
    let created = system
        .post("/api/v1/payment")
        .json(json!({ "gateway_id": 1, "user_id": user, "amount": "30" }))
        .send()
        .await;
    let payment = created.body["payment_id"].as_i64().unwrap();
    let address: TronAddress = created.body["gateway_data"]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let token: TronAddress = created.body["gateway_data"]["token_contract"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    system
        .pay_with_sdk(&token.to_base58(), &address.to_base58(), 25_000_000)
        .await;
    sweep_until(&system, "confirmed").await;
    let (ok, report) = reconcile(&system).await;
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

    let (ok, report) = reconcile(&system).await;
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
    let created = system
        .post("/api/v1/payment")
        .json(json!({ "gateway_id": 1, "user_id": user, "amount": "12" }))
        .send()
        .await;
    let address = created.body["gateway_data"]["address"].as_str().unwrap().to_owned();
    let token: TronAddress = created.body["gateway_data"]["token_contract"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    system.pay_with_sdk(&token.to_base58(), &address, 12_000_000).await;

    let (sweep, _, _) = sweep_until(&system, "failed").await;
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
    sweep_until(&system, "confirmed").await;

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
