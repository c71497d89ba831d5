//! `guarantor devnet`: a TRON-compatible node for development and tests. It speaks java-tron's HTTP
//! API (and TronGrid's TRC-20 transfer listing) for everything the product uses, so standard SDKs work
//! against it unchanged. It keeps TRX, one USDT-like TRC-20 token (6 decimals, at mainnet USDT's
//! address) and a look-alike token (same name, symbol and decimals, another address), verifies signatures, expiration, TaPoS and duplicates, charges bandwidth and energy,
//! produces blocks at an interval and solidifies them after a lag. Its chain survives a restart when
//! it has a state file (a snapshot and an append-only log of the changes since, see [`store`]).

pub mod chain;
pub mod http;
pub mod json;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use guarantor_tron::TronAddress;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use chain::Chain;
pub use chain::{GENESIS_PRIVATE_KEY, SUN_PER_TRX};
use http::{Devnet, Faults};
use store::Store;

/// Where the devnet listens when nothing else is configured.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8090";

#[derive(Debug, Clone)]
pub struct DevnetConfig {
    pub addr: SocketAddr,
    pub block_interval: Duration,
    pub solidify_lag: i64,
    /// The chain is loaded from and saved to this file; without one it lives in memory only.
    pub state_file: Option<PathBuf>,
    pub usdt_contract: TronAddress,
}

/// The chain kept in the state file (snapshot and log), or a new one.
fn load(config: &DevnetConfig) -> anyhow::Result<(Chain, Option<Store>)> {
    let genesis = || Chain::genesis(Devnet::now_ms(), config.usdt_contract, config.solidify_lag);
    let Some(path) = &config.state_file else {
        return Ok((genesis(), None));
    };
    let (mut chain, store) = Store::open(path, genesis)?;
    chain.solidify_lag = config.solidify_lag;
    chain.rebuild_index();
    tracing::info!(head = chain.head().number, path = %path.display(), "devnet continues its chain");
    Ok((chain, Some(store)))
}

/// A running devnet: its address and the handle to its chain.
#[derive(Debug, Clone)]
pub struct Running {
    pub addr: SocketAddr,
    pub devnet: Devnet,
}

/// Binds, then serves and produces blocks until `shutdown`.
pub async fn start(
    config: DevnetConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<(Running, tokio::task::JoinHandle<()>)> {
    let (chain, store) = load(&config)?;
    let devnet = Devnet {
        chain: Arc::new(Mutex::new(chain)),
        faults: Arc::new(Mutex::new(Faults::default())),
        store: store.map(|store| Arc::new(Mutex::new(store))),
        block_interval_ms: u64::try_from(config.block_interval.as_millis()).unwrap_or(u64::MAX),
    };
    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("the devnet cannot listen on {}", config.addr))?;
    let addr = listener.local_addr()?;
    let router = http::router(devnet.clone());
    let producer = devnet.clone();
    let saver = devnet.clone();
    let interval = config.block_interval;
    let stop = shutdown.clone();
    let handle = tokio::spawn(async move {
        let blocks = async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = ticker.tick() => { producer.produce(1); }
                    () = stop.cancelled() => break,
                }
            }
        };
        let server = axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await });
        let (served, ()) = tokio::join!(server, blocks);
        if let Err(err) = served {
            tracing::error!(error = %err, "devnet server failed");
        }
        saver.save();
    });
    tracing::info!(%addr, genesis = %chain::genesis_key().address(), "devnet listening");
    Ok((Running { addr, devnet }, handle))
}

/// Runs the devnet until `shutdown`.
pub async fn run(config: DevnetConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (_, handle) = start(config, shutdown).await?;
    handle.await?;
    Ok(())
}
