//! The devnet speaks java-tron's protocol, not just our client's dialect: tronpy (an independent TRON
//! implementation from PyPI, installed here into a virtualenv of the test's own) builds, signs and
//! broadcasts a TRX and a TRC-20 transfer and reads the balances back.

use std::path::Path;
use std::time::Duration;

use guarantor_tron::client::{NodeClient, NodeConfig};
use guarantor_tron_devnet::{DevnetConfig, GENESIS_PRIVATE_KEY};
use tokio_util::sync::CancellationToken;

const USDT: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";
#[tokio::test]
async fn tronpy_sends_trx_and_usdt_through_the_devnet_and_reads_the_balances() {
    let python =
        tokio::task::spawn_blocking(|| guarantor_testkit::tronpy_python(Path::new(env!("CARGO_TARGET_TMPDIR"))))
            .await
            .unwrap();
    let stop = CancellationToken::new();
    let config = DevnetConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        block_interval: Duration::from_millis(200),
        solidify_lag: 19,
        state_file: None,
        usdt_contract: USDT.parse().unwrap(),
    };
    let (running, _) = guarantor_tron_devnet::start(config, stop.clone()).await.unwrap();
    let _stop = stop.drop_guard();
    let endpoint = format!("http://{}", running.addr);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tronpy/drive_devnet.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .args([endpoint.as_str(), GENESIS_PRIVATE_KEY, USDT])
        .output()
        .await
        .unwrap();

    assert!(
        output.status.success(),
        "tronpy failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["token_result"], "SUCCESS");
    assert_eq!(seen["trx_balance"], "3");
    assert_eq!(seen["usdt_balance"], 1_500_000);
    assert_eq!(seen["decimals"], 6);
    // And our own client agrees with what tronpy saw.
    let client = NodeClient::new(NodeConfig::new(endpoint)).unwrap();
    let recipient = seen["recipient"].as_str().unwrap().parse().unwrap();
    let info = client
        .transaction_info(seen["token_txid"].as_str().unwrap(), false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.transfers[0].amount, 1_500_000);
    assert_eq!(
        client.account(&recipient).await.unwrap().unwrap().balance_sun,
        3_000_000
    );
}
