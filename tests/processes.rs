//! The system as separate processes, the way it is deployed: `guarantor devnet`, and two each of
//! `guarantor ingress`, `guarantor ledger`, `scanner` and `sweeper`, every one with the same
//! configuration and its own ops address. The original flow passes end to end: a deal waits for
//! payment, a deposit to a fresh address funds it, the customer closes it, the coins are swept to
//! the main wallet once, and the books agree with the chain.

mod support;

use std::time::{Duration, Instant};

use guarantor_testkit::free_port;
use guarantor_tron::client::{NodeClient, NodeConfig};
use guarantor_tron::{PrivateKey, TronAddress};
use reqwest::StatusCode;
use serde_json::json;
use support::System;

/// Dev-only keys of this test (never use them elsewhere).
const FEE_WALLET_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const MAIN_WALLET_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const HD_SEED: &str = "000102030405060708090a0b0c0d0e0f";

async fn until_ready(http: &reqwest::Client, ops: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.get(format!("{ops}/readyz")).send().await {
            if response.status() == StatusCode::OK {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{ops}/readyz never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_original_flow_passes_with_each_service_a_process_of_its_own_and_two_of_each_consumer() {
    let main_wallet = PrivateKey::from_hex(MAIN_WALLET_KEY).unwrap().address();
    let fee_wallet = PrivateKey::from_hex(FEE_WALLET_KEY).unwrap().address();
    let main_wallet_text = main_wallet.to_base58();
    let vars = [
        ("GUARANTOR_HD_SEED", HD_SEED),
        ("GUARANTOR_TRON_FEE_WALLET_KEY", FEE_WALLET_KEY),
        ("GUARANTOR_TRON_MAIN_WALLET", main_wallet_text.as_str()),
        ("GUARANTOR_SCAN_INTERVAL_SECS", "1"),
        ("GUARANTOR_SWEEP_INTERVAL_SECS", "1"),
    ];
    let system = System::start(&["ingress"], &vars).await;
    let devnet_addr = system.devnet.trim_start_matches("http://").to_owned();
    let _devnet = system.extra_with(
        &[
            "devnet",
            "--addr",
            &devnet_addr,
            "--block-interval-ms",
            "200",
            "--solidify-lag",
            "3",
        ],
        &[],
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{}/devnet/info", system.devnet)).send().await.is_err() {
        assert!(Instant::now() < deadline, "the devnet did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    system
        .devnet_control(
            "/devnet/faucet",
            json!({ "address": fee_wallet.to_base58(), "trx": "1000" }),
        )
        .await;

    let mut consumers = Vec::new();
    for part in ["ledger", "scanner", "sweeper"] {
        for _ in 0..2 {
            let ops = format!("127.0.0.1:{}", free_port());
            consumers.push((
                part,
                system.extra_with(&[part], &[("GUARANTOR_OPS_ADDR", ops.as_str())]),
                format!("http://{ops}"),
            ));
        }
    }
    for (_, _, ops) in &consumers {
        until_ready(&http, ops).await;
    }

    // The original flow: a deal the customer cannot pay for yet waits for payment.
    let customer = system.user("customer").await;
    let performer = system.user("performer").await;
    let deal = system.deal(customer, performer, "20").await;
    let confirmed = system.act(deal, "confirm", performer).await;
    assert_eq!(confirmed.body["status"], "waiting_for_payment", "{}", confirmed.text);

    // A second ingress replica, on its own address: the payment is made through it.
    let second = format!("127.0.0.1:{}", free_port());
    let _second_ingress = system.extra_with(&["ingress"], &[("GUARANTOR_HTTP_ADDR", second.as_str())]);
    let second = format!("http://{second}");
    until_ready(&http, &second).await;
    let (payment, address, _) = system.create_payment_at(&second, customer, "20").await;
    system
        .devnet_control("/devnet/faucet", json!({ "address": address, "usdt": "20" }))
        .await;
    let done = system
        .payment_until(payment, Duration::from_secs(60), |p| p["status"] == "success")
        .await;
    assert_eq!(
        done["deposits"].as_array().unwrap().len(),
        1,
        "credited once by two scanners"
    );
    assert_eq!(system.deal_status(deal).await, "confirmed");
    let closed = system.act(deal, "close", customer).await;
    assert_eq!(closed.body["status"], "close", "{}", closed.text);
    assert_eq!(system.balance(performer).await, ("20.000000".into(), "0.000000".into()));

    // One of the two sweepers moves the coins, once.
    system.sweep_until("confirmed").await;
    let sweeps: i64 = sqlx::query_scalar("SELECT count(*) FROM sweeps")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(sweeps, 1, "one sweep for one deposit address");
    let transfers: i64 = sqlx::query_scalar("SELECT count(*) FROM sweep_transactions WHERE kind = 'transfer'")
        .fetch_one(&system.db.pool)
        .await
        .unwrap();
    assert_eq!(transfers, 1, "one transfer for one sweep");
    let token: TronAddress = done["gateway_data"]["token_contract"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let node = NodeClient::new(NodeConfig::new(system.devnet.clone())).unwrap();
    assert_eq!(
        node.trc20_balance(&token, &main_wallet, true).await.unwrap(),
        20_000_000
    );

    let (reconciled, report) = system.reconcile().await;
    assert!(reconciled, "reconcile --chain: {report}");
    for (part, mut child, _) in consumers {
        assert!(child.try_wait().unwrap().is_none(), "a {part} stopped during the flow");
    }
    system.settle().await;
    system.assert_invariants().await;
}
