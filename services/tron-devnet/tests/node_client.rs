//! The node client against a devnet of the test's own: balances from solidified state, transfers
//! signed by the client, and every refusal java-tron would answer.

use std::time::Duration;

use guarantor_tron::client::{NodeClient, NodeConfig, NodeError};
use guarantor_tron::tx::{self, ExpectedTrc20Transfer};
use guarantor_tron::{HdWallet, PrivateKey, TronAddress};
use guarantor_tron_devnet::{DevnetConfig, Running, GENESIS_PRIVATE_KEY, SUN_PER_TRX};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const LAG: i64 = 5;
const USDT: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";

struct Node {
    running: Running,
    client: NodeClient,
    http: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

impl Node {
    async fn start() -> Self {
        let stop = CancellationToken::new();
        let config = DevnetConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            // Blocks come from /devnet/blocks, so the test decides when time passes.
            block_interval: Duration::from_secs(3600),
            solidify_lag: LAG,
            state_file: None,
            usdt_contract: USDT.parse().unwrap(),
        };
        let (running, _) = guarantor_tron_devnet::start(config, stop.clone()).await.unwrap();
        let client = NodeClient::new(NodeConfig::new(format!("http://{}", running.addr))).unwrap();
        Self {
            running,
            client,
            http: reqwest::Client::new(),
            _stop: stop.drop_guard(),
        }
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("http://{}{path}", self.running.addr))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.unwrap()
    }

    async fn blocks(&self, count: i64) {
        self.control("/devnet/blocks", json!({ "count": count })).await;
    }

    async fn faucet(&self, address: &TronAddress, trx: Option<&str>, usdt: Option<&str>) -> Value {
        let mut body = json!({ "address": address.to_base58() });
        if let Some(trx) = trx {
            body["trx"] = json!(trx);
        }
        if let Some(usdt) = usdt {
            body["usdt"] = json!(usdt);
        }
        self.control("/devnet/faucet", body).await
    }
}

fn usdt() -> TronAddress {
    USDT.parse().unwrap()
}

fn deposit_key(index: u32) -> PrivateKey {
    let wallet = HdWallet::from_mnemonic(
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
        "",
    )
    .unwrap();
    wallet.derive(index).unwrap()
}

#[tokio::test]
async fn a_deposit_is_visible_on_the_solid_path_only_after_the_lag_and_is_listed_as_confirmed() {
    let node = Node::start().await;
    let deposit = deposit_key(0).address();

    let txids = node.faucet(&deposit, None, Some("12.5")).await;
    node.blocks(1).await;

    assert_eq!(
        node.client.trc20_balance(&usdt(), &deposit, false).await.unwrap(),
        12_500_000
    );
    assert_eq!(
        node.client.trc20_balance(&usdt(), &deposit, true).await.unwrap(),
        0,
        "not solidified yet"
    );
    assert!(node
        .client
        .trc20_transfers_to(&deposit, &usdt(), 20)
        .await
        .unwrap()
        .is_empty());

    node.blocks(LAG).await;

    assert_eq!(
        node.client.trc20_balance(&usdt(), &deposit, true).await.unwrap(),
        12_500_000
    );
    let listed = node.client.trc20_transfers_to(&deposit, &usdt(), 20).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].txid, txids["usdt_txid"].as_str().unwrap());
    assert_eq!((listed[0].amount, listed[0].to), (12_500_000, deposit));
    let info = node
        .client
        .transaction_info(&listed[0].txid, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.result.as_deref(), Some("SUCCESS"));
    assert_eq!(info.transfers[0].log_index, 0);
    assert_eq!(info.transfers[0].token, usdt());
    let reader = guarantor_tron::solid::SolidReader::new(node.client.clone(), usdt());
    let block = reader.block(u64::try_from(info.block_number).unwrap()).await.unwrap();
    assert!(block
        .transfers
        .iter()
        .any(|t| t.txid == listed[0].txid && t.to == deposit));
    assert!(reader.head().await.unwrap() >= block.number);
}

#[tokio::test]
async fn trx_and_trc20_transfers_signed_by_the_client_are_applied_with_their_fees() {
    let node = Node::start().await;
    let owner = deposit_key(1);
    let main_wallet = deposit_key(2).address();
    node.faucet(&owner.address(), Some("50"), Some("10")).await;
    node.blocks(1).await;
    let energy_fee = node.client.chain_parameters().await.unwrap().energy_fee_sun;

    // TRX, built locally from the head block: creates the recipient's account.
    let header = node.client.header(Duration::from_secs(60)).await.unwrap();
    let raw = tx::trx_transfer(&header, &owner.address(), &main_wallet, 2 * SUN_PER_TRX);
    let trx = tx::sign(prost::Message::encode_to_vec(&raw), &owner);
    node.client.broadcast(&trx).await.unwrap();
    // USDT, built by the node and verified before signing.
    let expected = ExpectedTrc20Transfer {
        owner: owner.address(),
        token: usdt(),
        to: main_wallet,
        amount: 4_000_000,
        fee_limit_sun: 30 * SUN_PER_TRX,
    };
    let estimate = node
        .client
        .estimate_transfer_energy(&usdt(), &owner.address(), &main_wallet, 4_000_000)
        .await
        .unwrap();
    let raw = node.client.build_trc20_transfer(&expected).await.unwrap();
    let usdt_tx = tx::sign(raw, &owner);
    node.client.broadcast(&usdt_tx).await.unwrap();
    node.blocks(1).await;

    let trx_info = node
        .client
        .transaction_info(&trx.txid_hex(), false)
        .await
        .unwrap()
        .unwrap();
    let usdt_info = node
        .client
        .transaction_info(&usdt_tx.txid_hex(), false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(trx_info.fee_sun, 1_100_000, "activating an account burns 1.1 TRX");
    assert_eq!(usdt_info.result.as_deref(), Some("SUCCESS"));
    assert_eq!(usdt_info.energy_usage_total, estimate);
    assert_eq!(usdt_info.energy_fee_sun, estimate * energy_fee);
    assert_eq!(
        node.client.trc20_balance(&usdt(), &main_wallet, false).await.unwrap(),
        4_000_000
    );
    let left = node
        .client
        .account(&owner.address())
        .await
        .unwrap()
        .unwrap()
        .balance_sun;
    assert_eq!(left, 50 * SUN_PER_TRX - 2 * SUN_PER_TRX - 1_100_000 - usdt_info.fee_sun);
    assert_eq!(
        node.client.account(&main_wallet).await.unwrap().unwrap().balance_sun,
        2 * SUN_PER_TRX
    );
}

#[tokio::test]
async fn the_same_bytes_broadcast_twice_are_a_duplicate() {
    let node = Node::start().await;
    let genesis = PrivateKey::from_hex(GENESIS_PRIVATE_KEY).unwrap();
    let raw = node
        .client
        .build_trx_transfer(&genesis.address(), &deposit_key(0).address(), 1)
        .await
        .unwrap();
    let signed = tx::sign(raw, &genesis);

    node.client.broadcast(&signed).await.unwrap();
    let again = node.client.broadcast(&signed).await.unwrap_err();

    assert!(
        matches!(again, NodeError::Refused { ref code, .. } if code == "DUP_TRANSACTION_ERROR"),
        "{again:?}"
    );
}

#[tokio::test]
async fn expired_tampered_and_wrongly_signed_transactions_are_refused() {
    let node = Node::start().await;
    let genesis = PrivateKey::from_hex(GENESIS_PRIVATE_KEY).unwrap();
    let to = deposit_key(0).address();
    let mut header = node.client.header(Duration::from_secs(60)).await.unwrap();
    let refusal = |err: NodeError| match err {
        NodeError::Refused { code, .. } => code,
        other => panic!("expected a refusal, got {other:?}"),
    };

    let mut expired = header;
    expired.expiration_ms = 1;
    let expired = tx::sign(
        prost::Message::encode_to_vec(&tx::trx_transfer(&expired, &genesis.address(), &to, 1)),
        &genesis,
    );
    let wrong_key = tx::sign(
        prost::Message::encode_to_vec(&tx::trx_transfer(&header, &genesis.address(), &to, 2)),
        &deposit_key(5),
    );
    header.ref_block_hash = [9; 8];
    let bad_tapos = tx::sign(
        prost::Message::encode_to_vec(&tx::trx_transfer(&header, &genesis.address(), &to, 3)),
        &genesis,
    );

    assert_eq!(
        refusal(node.client.broadcast(&expired).await.unwrap_err()),
        "TRANSACTION_EXPIRATION_ERROR"
    );
    assert_eq!(
        refusal(node.client.broadcast(&wrong_key).await.unwrap_err()),
        "SIGERROR"
    );
    assert_eq!(
        refusal(node.client.broadcast(&bad_tapos).await.unwrap_err()),
        "TAPOS_ERROR"
    );
}

#[tokio::test]
async fn a_trc20_transfer_without_trx_for_energy_ends_out_of_energy_and_burns_what_it_had() {
    let node = Node::start().await;
    let poor = deposit_key(3);
    node.faucet(&poor.address(), Some("1"), Some("5")).await;
    node.blocks(1).await;
    let never_activated = deposit_key(4);
    node.faucet(&never_activated.address(), None, Some("5")).await;
    node.blocks(1).await;

    let expected = ExpectedTrc20Transfer {
        owner: poor.address(),
        token: usdt(),
        to: deposit_key(9).address(),
        amount: 5_000_000,
        fee_limit_sun: 30 * SUN_PER_TRX,
    };
    let signed = tx::sign(node.client.build_trc20_transfer(&expected).await.unwrap(), &poor);
    node.client.broadcast(&signed).await.unwrap();
    node.blocks(1).await;
    let inactive = ExpectedTrc20Transfer {
        owner: never_activated.address(),
        ..expected
    };
    let header = node.client.header(Duration::from_secs(60)).await.unwrap();
    let raw = tx::trc20_transfer(
        &header,
        &inactive.owner,
        &usdt(),
        &inactive.to,
        inactive.amount,
        inactive.fee_limit_sun,
    );
    let from_inactive = node
        .client
        .broadcast(&tx::sign(prost::Message::encode_to_vec(&raw), &never_activated))
        .await;

    let info = node
        .client
        .transaction_info(&signed.txid_hex(), false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.result.as_deref(), Some("OUT_OF_ENERGY"));
    assert!(info.failed);
    assert_eq!(info.energy_fee_sun, SUN_PER_TRX, "all the TRX it had went to energy");
    assert_eq!(
        node.client.account(&poor.address()).await.unwrap().unwrap().balance_sun,
        0
    );
    assert_eq!(
        node.client
            .trc20_balance(&usdt(), &poor.address(), false)
            .await
            .unwrap(),
        5_000_000,
        "nothing moved"
    );
    assert!(matches!(from_inactive, Err(NodeError::Refused { ref code, .. }) if code == "CONTRACT_VALIDATE_ERROR"));
}

#[tokio::test]
async fn injected_rate_limits_server_errors_java_errors_and_cut_replies_are_retried() {
    let node = Node::start().await;
    node.control(
        "/devnet/faults",
        json!({ "error_rate": 0.2, "java_error_rate": 0.2, "truncate_rate": 0.2, "rate_limit_rps": 5 }),
    )
    .await;
    let patient = NodeClient::new(NodeConfig::new(format!("http://{}", node.running.addr))).unwrap();

    for _ in 0..15 {
        patient.now_block(false).await.expect("retried until it succeeds");
    }

    let impatient = NodeClient::new(NodeConfig {
        max_retries: 0,
        ..NodeConfig::new(format!("http://{}", node.running.addr))
    })
    .unwrap();
    for fault in ["error_rate", "java_error_rate", "truncate_rate"] {
        node.control("/devnet/faults", json!({ fault: 1.0 })).await;
        let failed = impatient.now_block(false).await.unwrap_err();
        assert!(failed.is_transient(), "{fault}: {failed:?}");
    }
}

#[tokio::test]
async fn a_suspended_key_is_waited_out_within_the_retry_budget() {
    let node = Node::start().await;
    node.control("/devnet/faults", json!({ "suspend_secs": 2 })).await;
    let short = NodeClient::new(NodeConfig {
        retry_budget: Duration::from_millis(300),
        ..NodeConfig::new(format!("http://{}", node.running.addr))
    })
    .unwrap();
    let failed = short.now_block(false).await.unwrap_err();
    assert!(matches!(failed, NodeError::Transient { status: 403, .. }), "{failed:?}");

    let patient = NodeClient::new(NodeConfig::new(format!("http://{}", node.running.addr))).unwrap();
    let started = std::time::Instant::now();
    patient
        .now_block(false)
        .await
        .expect("the suspension ends within the budget");
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "it waited for the suspension"
    );
}

#[tokio::test]
async fn clients_of_one_node_key_share_its_rate_limit() {
    let node = Node::start().await;
    let config = NodeConfig {
        rate_limit_rps: 10,
        api_key: Some("shared-key".into()),
        ..NodeConfig::new(format!("http://{}", node.running.addr))
    };
    let (first, second) = (
        NodeClient::new(config.clone()).unwrap(),
        NodeClient::new(config).unwrap(),
    );
    let started = std::time::Instant::now();
    let calls = (0..10).flat_map(|_| [first.now_block(false), second.now_block(false)]);
    for outcome in futures::future::join_all(calls).await {
        outcome.unwrap();
    }
    // 20 requests at 10 a second between them: about 2 s, where two separate budgets take 1 s.
    assert!(
        started.elapsed() >= Duration::from_millis(1_700),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_node_built_transaction_that_differs_from_the_request_is_refused_before_signing() {
    let node = Node::start().await;
    let owner = deposit_key(1).address();
    let asked = ExpectedTrc20Transfer {
        owner,
        token: usdt(),
        to: deposit_key(2).address(),
        amount: 7,
        fee_limit_sun: SUN_PER_TRX,
    };
    let raw = node.client.build_trc20_transfer(&asked).await.unwrap();

    let other_recipient = ExpectedTrc20Transfer {
        to: deposit_key(3).address(),
        ..asked
    };

    assert!(tx::verify_trc20_transfer(&raw, &asked).is_ok());
    assert!(tx::verify_trc20_transfer(&raw, &other_recipient).is_err());
}

#[tokio::test]
async fn a_restarted_devnet_with_a_state_file_continues_the_same_chain() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("devnet-state.json");
    let config = |state_file: &std::path::Path| DevnetConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        block_interval: Duration::from_secs(3600),
        solidify_lag: LAG,
        state_file: Some(state_file.to_path_buf()),
        usdt_contract: usdt(),
    };
    let deposit = deposit_key(7).address();

    let first_stop = CancellationToken::new();
    let (first, handle) = guarantor_tron_devnet::start(config(&state_file), first_stop.clone())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    http.post(format!("http://{}/devnet/faucet", first.addr))
        .json(&json!({ "address": deposit.to_base58(), "trx": "2", "usdt": "3" }))
        .send()
        .await
        .unwrap();
    http.post(format!("http://{}/devnet/blocks", first.addr))
        .json(&json!({ "count": 3 }))
        .send()
        .await
        .unwrap();
    let before = NodeClient::new(NodeConfig::new(format!("http://{}", first.addr)))
        .unwrap()
        .now_block(false)
        .await
        .unwrap();
    first_stop.cancel();
    handle.await.unwrap();

    let second_stop = CancellationToken::new();
    let (second, _) = guarantor_tron_devnet::start(config(&state_file), second_stop.clone())
        .await
        .unwrap();
    let _guard = second_stop.drop_guard();
    let client = NodeClient::new(NodeConfig::new(format!("http://{}", second.addr))).unwrap();

    assert_eq!(client.now_block(false).await.unwrap(), before, "the same head block");
    assert_eq!(client.trc20_balance(&usdt(), &deposit, false).await.unwrap(), 3_000_000);
    assert_eq!(
        client.account(&deposit).await.unwrap().unwrap().balance_sun,
        2 * SUN_PER_TRX
    );
}

#[tokio::test]
async fn a_reorg_drops_unsolidified_transactions_and_refuses_to_reach_below_the_solidified_head() {
    let node = Node::start().await;
    let deposit = PrivateKey::from_hex(&"34".repeat(32)).unwrap().address();
    let paid = node.faucet(&deposit, None, Some("7")).await;
    node.blocks(2).await;
    let txid = paid["usdt_txid"].as_str().unwrap().to_owned();
    assert!(node.client.transaction_info(&txid, false).await.unwrap().is_some());

    let answer = node.control("/devnet/reorg", json!({ "depth": 2 })).await;

    assert_eq!(answer["dropped_txids"], json!([txid]));
    assert!(
        node.client.transaction_info(&txid, false).await.unwrap().is_none(),
        "gone from the chain"
    );
    assert_eq!(node.client.trc20_balance(&usdt(), &deposit, false).await.unwrap(), 0);
    node.blocks(LAG + 1).await;
    assert_eq!(node.client.trc20_balance(&usdt(), &deposit, true).await.unwrap(), 0);
    assert!(node
        .client
        .trc20_transfers_to(&deposit, &usdt(), 20)
        .await
        .unwrap()
        .is_empty());
    let too_deep = node
        .http
        .post(format!("http://{}/devnet/reorg", node.running.addr))
        .json(&json!({ "depth": LAG + 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(too_deep.status(), reqwest::StatusCode::CONFLICT);
}

#[tokio::test]
async fn the_lookalike_token_has_usdts_name_but_its_own_address_and_balances() {
    let node = Node::start().await;
    let info: Value = node
        .http
        .get(format!("http://{}/devnet/info", node.running.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["usdt_contract"], USDT);
    assert_eq!(info["solidify_lag"], LAG);
    let lookalike: TronAddress = info["lookalike_contract"].as_str().unwrap().parse().unwrap();
    assert_ne!(lookalike, usdt());
    let deposit = PrivateKey::from_hex(&"35".repeat(32)).unwrap().address();

    let paid = node
        .control(
            "/devnet/faucet",
            json!({ "address": deposit.to_base58(), "lookalike": "9" }),
        )
        .await;
    assert!(paid["lookalike_txid"].is_string());
    node.blocks(LAG + 1).await;

    assert_eq!(
        node.client.trc20_balance(&lookalike, &deposit, true).await.unwrap(),
        9_000_000
    );
    assert_eq!(node.client.trc20_balance(&usdt(), &deposit, true).await.unwrap(), 0);
    assert!(node
        .client
        .trc20_transfers_to(&deposit, &usdt(), 20)
        .await
        .unwrap()
        .is_empty());
    let listed = node.client.trc20_transfers_to(&deposit, &lookalike, 20).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].token, lookalike);
    let symbol = node
        .http
        .post(format!("http://{}/wallet/triggerconstantcontract", node.running.addr))
        .json(&json!({
            "owner_address": deposit.to_base58(), "contract_address": lookalike.to_base58(),
            "function_selector": "symbol()", "data": "95d89b41", "visible": true,
        }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(symbol["constant_result"][0]
        .as_str()
        .unwrap()
        .contains(&hex::encode("USDT")));
}

#[tokio::test]
async fn the_state_is_a_snapshot_and_an_append_only_log_replayed_to_the_same_chain() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("devnet-state.json");
    let config = || DevnetConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        block_interval: Duration::from_secs(3600),
        solidify_lag: LAG,
        state_file: Some(state_file.clone()),
        usdt_contract: usdt(),
    };
    let deposit = deposit_key(8).address();
    let stop = CancellationToken::new();
    let (first, _) = guarantor_tron_devnet::start(config(), stop.clone()).await.unwrap();
    let http = reqwest::Client::new();
    let post = async |path: &str, body: Value| {
        http.post(format!("http://{}{path}", first.addr))
            .json(&body)
            .send()
            .await
            .unwrap()
    };
    post(
        "/devnet/faucet",
        json!({ "address": deposit.to_base58(), "trx": "2", "usdt": "3" }),
    )
    .await;
    post("/devnet/blocks", json!({ "count": 2 })).await;
    post("/devnet/faucet", json!({ "address": deposit.to_base58(), "usdt": "4" })).await;
    post("/devnet/blocks", json!({ "count": 1 })).await;
    post("/devnet/reorg", json!({ "depth": 1 })).await;
    post("/devnet/blocks", json!({ "count": 2 })).await;
    let log = std::fs::read_to_string(dir.path().join("devnet-state.json.log")).unwrap();
    assert_eq!(log.lines().count(), 6, "one line a change, nothing rewritten: {log}");
    let client = NodeClient::new(NodeConfig::new(format!("http://{}", first.addr))).unwrap();
    let head = client.now_block(false).await.unwrap();
    let balance = client.trc20_balance(&usdt(), &deposit, false).await.unwrap();
    assert_eq!(balance, 3_000_000, "the reorganised transfer is gone");
    // A crash: no snapshot at shutdown, the log alone carries the changes.
    std::mem::forget(stop);

    let second_stop = CancellationToken::new();
    let (second, _) = guarantor_tron_devnet::start(config(), second_stop.clone())
        .await
        .unwrap();
    let _guard = second_stop.drop_guard();
    let again = NodeClient::new(NodeConfig::new(format!("http://{}", second.addr))).unwrap();
    assert_eq!(
        again.now_block(false).await.unwrap(),
        head,
        "the same head, replayed from the log"
    );
    assert_eq!(again.trc20_balance(&usdt(), &deposit, false).await.unwrap(), balance);
    assert_eq!(again.account(&deposit).await.unwrap().unwrap().balance_sun, 2_000_000);
}

fn signed_trx(header: &tx::TxHeader, to: &TronAddress, sun: i64) -> tx::SignedTransaction {
    use prost::Message;
    let genesis = PrivateKey::from_hex(GENESIS_PRIVATE_KEY).unwrap();
    tx::sign(
        tx::trx_transfer(header, &genesis.address(), to, sun).encode_to_vec(),
        &genesis,
    )
}

#[tokio::test]
async fn a_dropped_broadcast_is_never_mined_and_the_same_bytes_land_once_the_node_keeps_them() {
    let node = Node::start().await;
    let to = deposit_key(3).address();
    let header = node.client.header(Duration::from_secs(600)).await.unwrap();
    let signed = signed_trx(&header, &to, 1_000_000);
    node.control("/devnet/faults", json!({ "drop_pending": true })).await;

    let txid = node.client.broadcast(&signed).await.unwrap();
    node.blocks(2).await;
    assert!(
        node.client.transaction_info(&txid, false).await.unwrap().is_none(),
        "accepted, never mined"
    );

    node.control("/devnet/faults", json!({})).await;
    assert_eq!(
        node.client.broadcast(&signed).await.unwrap(),
        txid,
        "the same bytes again"
    );
    node.blocks(1).await;
    assert!(node.client.transaction_info(&txid, false).await.unwrap().is_some());
}

#[tokio::test]
async fn expiration_is_checked_when_packing_and_before_the_duplicate_check() {
    let node = Node::start().await;
    let to = deposit_key(4).address();
    // Expires before the next block is packed: dropped, not mined.
    let short = node.client.header(Duration::from_millis(300)).await.unwrap();
    let lost = node
        .client
        .broadcast(&signed_trx(&short, &to, 1_000_000))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    node.blocks(1).await;
    assert!(node.client.transaction_info(&lost, false).await.unwrap().is_none());

    // Mined, then broadcast again after it expired: refused as expired, not as a duplicate.
    let header = node.client.header(Duration::from_millis(800)).await.unwrap();
    let signed = signed_trx(&header, &to, 2_000_000);
    node.client.broadcast(&signed).await.unwrap();
    node.blocks(1).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    node.blocks(1).await;
    let again = node.client.broadcast(&signed).await.unwrap_err();
    assert!(
        matches!(again, NodeError::Refused { ref code, .. } if code == "TRANSACTION_EXPIRATION_ERROR"),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_reverting_constant_call_answers_like_java_tron_and_the_client_says_it_reverted() {
    let node = Node::start().await;
    let empty = deposit_key(5).address();
    let answer: Value = node
        .http
        .post(format!("http://{}/wallet/triggerconstantcontract", node.running.addr))
        .json(&json!({
            "owner_address": empty.to_base58(), "contract_address": USDT,
            "data": hex::encode(guarantor_tron::abi::encode_transfer(&deposit_key(6).address(), 5)), "visible": true,
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["result"]["result"], true);
    assert_eq!(answer["transaction"]["ret"][0]["ret"], "FAILED");
    assert!(answer["result"]["message"].is_string());

    let reverted = node
        .client
        .estimate_transfer_energy(&usdt(), &empty, &deposit_key(6).address(), 5)
        .await
        .unwrap_err();
    assert!(reverted.to_string().contains("reverted"), "{reverted}");
}
