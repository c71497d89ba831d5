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
    system.assert_invariants().await;
}
