//! Running the services: one part per process (`guarantor ledger`, ...) or all of them in one
//! (`guarantor up`). Every part stops on SIGTERM/Ctrl-C after finishing its in-flight work.

#![allow(clippy::print_stdout, reason = "`up` prints the dev API keys for the newcomer")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use guarantor_config::{Config, ExposeSecret};
use guarantor_domain::Role;
use guarantor_ingress::{api_keys, AppState, Application};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::infra;

/// The tenant `up` creates for local development.
const DEV_TENANT: &str = "dev";
const DEV_KEYS_FILE: &str = "dev-api-keys.json";
const DEV_SEED_FILE: &str = "dev-hd-seed.hex";
const DEV_FEE_WALLET_FILE: &str = "dev-fee-wallet-key.hex";
const DEV_MAIN_WALLET_FILE: &str = "dev-main-wallet-key.hex";

/// `guarantor devnet` flags; each overrides its `GUARANTOR_DEVNET_*` variable.
#[derive(Debug, clap::Args)]
pub struct DevnetArgs {
    /// Listen address [env: GUARANTOR_DEVNET_ADDR, default 127.0.0.1:8090]
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Milliseconds between blocks [env: GUARANTOR_DEVNET_BLOCK_INTERVAL_MS, default 3000]
    #[arg(long)]
    block_interval_ms: Option<u64>,
    /// Blocks after which a block is solidified [env: GUARANTOR_DEVNET_SOLIDIFY_LAG, default 19]
    #[arg(long)]
    solidify_lag: Option<i64>,
    /// Keeps the chain across restarts [env: GUARANTOR_DEVNET_STATE_FILE; none: in memory only]
    #[arg(long)]
    state_file: Option<PathBuf>,
}

fn devnet_config(
    config: &Config,
    args: DevnetArgs,
    default_state_file: Option<PathBuf>,
) -> guarantor_tron_devnet::DevnetConfig {
    guarantor_tron_devnet::DevnetConfig {
        addr: args.addr.unwrap_or(config.devnet.addr),
        block_interval: Duration::from_millis(args.block_interval_ms.unwrap_or(config.devnet.block_interval_ms).max(1)),
        solidify_lag: args.solidify_lag.unwrap_or(config.devnet.solidify_lag).max(0),
        state_file: args
            .state_file
            .or_else(|| config.devnet.state_file.clone())
            .or(default_state_file),
        usdt_contract: config.tron.usdt_contract,
    }
}

pub async fn devnet(config: Config, args: DevnetArgs) -> anyhow::Result<()> {
    let _telemetry = guarantor_telemetry::init("devnet", config.log_format, config.sentry_dsn.as_ref())?;
    let shutdown = guarantor_telemetry::shutdown_token();
    guarantor_tron_devnet::run(devnet_config(&config, args, None), shutdown).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Ingress,
    Ledger,
    Scanner,
    Sweeper,
    Devnet,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Ingress => "ingress",
            Part::Ledger => "ledger",
            Part::Scanner => "scanner",
            Part::Sweeper => "sweeper",
            Part::Devnet => "devnet",
        }
    }
}

pub async fn single(config: Config, part: Part) -> anyhow::Result<()> {
    let _telemetry = guarantor_telemetry::init(part.name(), config.log_format, config.sentry_dsn.as_ref())?;
    let shutdown = guarantor_telemetry::shutdown_token();
    // The recorder first, so that nothing a part measures is lost.
    guarantor_ingress::metrics_handle();
    let config = Arc::new(config);
    let infra = prepare(&config, part.name(), false).await?;
    let reads_chain = matches!(part, Part::Scanner | Part::Sweeper);
    let ops = serve_ops(&config, &infra, reads_chain, shutdown.clone())?;
    let outcome = run_part(part, infra, config, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(ops) = ops {
        ops.await??;
    }
    outcome
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `GUARANTOR_OPS_ADDR`, when it is set.
fn serve_ops(
    config: &Config,
    infra: &Infra,
    reads_chain: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let Some(addr) = config.ops_addr else {
        return Ok(None);
    };
    let node = if reads_chain {
        let mut node = node_config(config);
        node.max_retries = 0;
        node.timeout = Duration::from_secs(2);
        Some(guarantor_tron::client::NodeClient::new(node)?)
    } else {
        None
    };
    let dependencies = crate::health::Dependencies {
        pool: infra.pool.clone(),
        nats: infra.nats.clone(),
        node,
    };
    Ok(Some(tokio::spawn(crate::health::serve(addr, dependencies, shutdown))))
}

/// `guarantor up` flags.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Parts not to run, comma-separated (ingress, ledger, scanner, sweeper, devnet), e.g. to run one
    /// of them as a process of its own beside the others
    #[arg(long, value_delimiter = ',', value_parser = parse_part)]
    without: Vec<Part>,
}

fn parse_part(name: &str) -> Result<Part, String> {
    [Part::Ingress, Part::Ledger, Part::Scanner, Part::Sweeper, Part::Devnet]
        .into_iter()
        .find(|part| part.name() == name)
        .ok_or_else(|| format!("no part {name:?}: expected ingress, ledger, scanner, sweeper or devnet"))
}

pub async fn up(mut config: Config, args: UpArgs) -> anyhow::Result<()> {
    let _telemetry = guarantor_telemetry::init("up", config.log_format, config.sentry_dsn.as_ref())?;
    let shutdown = guarantor_telemetry::shutdown_token();
    guarantor_ingress::metrics_handle();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create GUARANTOR_DATA_DIR {}", config.data_dir.display()))?;
    if config.tron.hd_secret.is_none() {
        config.tron.hd_secret = Some(dev_seed(&config.data_dir)?);
    }
    let mut dev_fee_wallet = None;
    if config.tron.node_url.is_none() {
        if config.tron.fee_wallet_key.is_none() {
            let key = dev_key(&config.data_dir, DEV_FEE_WALLET_FILE)?;
            println!(
                " DEV ONLY — the sweeper's fee wallet {} (key in {DEV_FEE_WALLET_FILE}), funded from the devnet.",
                key.address()
            );
            config.tron.fee_wallet_key = Some(key.to_hex().into());
            dev_fee_wallet = Some(key.address());
        }
        if config.tron.main_wallet.is_none() {
            let key = dev_key(&config.data_dir, DEV_MAIN_WALLET_FILE)?;
            println!(
                " DEV ONLY — sweeps go to the main wallet {} (key in {DEV_MAIN_WALLET_FILE}).",
                key.address()
            );
            config.tron.main_wallet = Some(key.address());
        }
    }
    let config = Arc::new(config);
    let infra = prepare(&config, "up", true).await?;
    announce_dev_keys(&infra.pool, &config.data_dir).await?;

    let mut parts = vec![Part::Ingress, Part::Ledger, Part::Scanner, Part::Sweeper];
    if config.tron.node_url.is_none() {
        parts.push(Part::Devnet);
    }
    parts.retain(|part| !args.without.contains(part));
    if let Some(fee_wallet) = dev_fee_wallet {
        let (config, shutdown) = (config.clone(), shutdown.clone());
        tokio::spawn(async move { fund_dev_fee_wallet(&config, &fee_wallet, &shutdown).await });
    }
    let mut tasks = JoinSet::new();
    if let Some(ops) = serve_ops(&config, &infra, true, shutdown.clone())? {
        tasks.spawn(async move { ("ops endpoints", ops.await.unwrap_or_else(|err| Err(err.into()))) });
    }
    for part in parts {
        let (infra, config, shutdown) = (infra.clone(), config.clone(), shutdown.clone());
        tasks.spawn(async move { (part.name(), run_part(part, infra, config, shutdown).await) });
    }
    // The first part to stop (normally because of the shutdown signal) stops the others.
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        shutdown.cancel();
        let (part, outcome) = joined.context("a service task panicked")?;
        if let Err(err) = outcome {
            tracing::error!(part, error = format!("{err:#}"), "service failed");
            result = Err(err.context(format!("{part} failed")));
        }
    }
    result
}

/// Postgres and NATS, connected, migrated and with their streams applied.
#[derive(Clone, Debug)]
struct Infra {
    pool: guarantor_store::PgPool,
    nats: guarantor_messaging::Client,
}

async fn prepare(config: &Config, service: &str, create_database: bool) -> anyhow::Result<Infra> {
    // Each ledger worker keeps a connection of its own; the rest serve requests, the outbox relay,
    // the scanner and the sweeper. Connections open on demand, up to this.
    let connections = u32::try_from(config.ledger_workers).map_or(u32::MAX, |workers| workers.saturating_add(16));
    let pool = if create_database {
        infra::postgres_created(config, connections).await?
    } else {
        infra::postgres(config, connections).await?
    };
    guarantor_store::migrate(&pool).await?;
    let nats = infra::nats(config, service).await?;
    guarantor_messaging::apply_streams(&guarantor_messaging::jetstream(&nats), config.stream_replicas).await?;
    tracing::info!(
        service,
        "connected to Postgres and NATS; migrations and streams applied"
    );
    Ok(Infra { pool, nats })
}

async fn run_part(part: Part, infra: Infra, config: Arc<Config>, shutdown: CancellationToken) -> anyhow::Result<()> {
    match part {
        Part::Ingress => {
            let state = AppState::new(infra.pool, infra.nats, config.clone()).await?;
            let app = Application::build(state, config.http_addr)
                .await
                .with_context(|| format!("cannot listen on GUARANTOR_HTTP_ADDR {}", config.http_addr))?;
            tracing::info!(addr = %app.local_addr()?, "ingress listening");
            app.run_until(async move { shutdown.cancelled().await }).await?;
        }
        Part::Ledger => {
            let settings = guarantor_ledger::ConsumerSettings {
                batch_max: usize::try_from(config.ledger_batch_max).unwrap_or(usize::MAX),
                workers: usize::try_from(config.ledger_workers).unwrap_or(1),
                ack_wait: Duration::from_secs(config.ledger_ack_wait_secs),
                ..guarantor_ledger::ConsumerSettings::default()
            };
            guarantor_ledger::run(infra.pool, infra.nats, settings, shutdown).await?
        }
        Part::Scanner => {
            let reader = guarantor_tron::solid::SolidReader::new(node_client(&config)?, config.tron.usdt_contract);
            let settings = guarantor_payment_scanner::ScannerSettings {
                interval: Duration::from_secs(config.scan_interval_secs),
                balance_interval: Duration::from_secs(config.balance_check_interval_secs),
                grace: Duration::from_secs(config.payment_grace_secs),
            };
            let js = guarantor_messaging::jetstream(&infra.nats);
            guarantor_payment_scanner::run(infra.pool, js, reader, settings, shutdown).await?
        }
        Part::Sweeper => guarantor_sweeper::run(sweeper(&config, infra.pool)?, infra.nats, shutdown).await,
        Part::Devnet => {
            let args = DevnetArgs {
                addr: None,
                block_interval_ms: None,
                solidify_lag: None,
                state_file: None,
            };
            let state_file = config.data_dir.join("devnet-state.json");
            guarantor_tron_devnet::run(devnet_config(&config, args, Some(state_file)), shutdown).await?
        }
    }
    tracing::info!(part = part.name(), "stopped");
    Ok(())
}

/// The TRON node the services use: `GUARANTOR_TRON_NODE_URL`, else the local devnet.
fn node_config(config: &Config) -> guarantor_tron::client::NodeConfig {
    let url = config
        .tron
        .node_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.devnet.addr));
    let mut node = guarantor_tron::client::NodeConfig::new(url);
    node.api_key = config.tron.api_key.as_ref().map(|key| key.expose_secret().to_owned());
    node.rate_limit_rps = config.tron.rate_limit_rps;
    node
}

pub fn node_client(config: &Config) -> anyhow::Result<guarantor_tron::client::NodeClient> {
    Ok(guarantor_tron::client::NodeClient::new(node_config(config))?)
}

/// On the first start, creates the dev tenant with a platform, an arbiter and an admin key and prints
/// them; later starts print them again from the data directory, where they are kept for this purpose
/// only. Keys that no longer authenticate (a reset database) are replaced.
async fn announce_dev_keys(pool: &guarantor_store::PgPool, data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join(DEV_KEYS_FILE);
    let roles = [Role::Platform, Role::Arbiter, Role::Admin];
    let kept: Option<serde_json::Map<String, serde_json::Value>> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let mut keys = serde_json::Map::new();
    for role in roles {
        let kept_key = kept
            .as_ref()
            .and_then(|kept| kept.get(role.as_str()))
            .and_then(|key| key.as_str())
            .map(str::to_owned);
        let still_valid = match &kept_key {
            Some(key) => api_keys::authenticate(pool, key).await?.is_some_and(|p| p.role == role),
            None => false,
        };
        let key = match kept_key {
            Some(key) if still_valid => key,
            _ => api_keys::create(pool, DEV_TENANT, role)
                .await?
                .key
                .expose_secret()
                .to_owned(),
        };
        keys.insert(role.as_str().to_owned(), key.into());
    }
    if kept.as_ref() != Some(&keys) {
        write_private(&path, &serde_json::to_string_pretty(&keys)?)?;
    }
    println!("──────────────────────────────────────────────────────────────────────────");
    println!(
        " DEV ONLY — API keys of tenant '{DEV_TENANT}' (kept in {}):",
        path.display()
    );
    for (role, key) in &keys {
        println!("   {role:<9} {}", key.as_str().unwrap_or_default());
    }
    println!(" Never use these keys outside local development.");
    println!("──────────────────────────────────────────────────────────────────────────");
    Ok(())
}

/// The sweeper, from the configuration: it needs the HD seed (deposit keys), the fee wallet's key and
/// the main wallet.
fn sweeper(config: &Config, pool: guarantor_store::PgPool) -> anyhow::Result<guarantor_sweeper::Sweeper> {
    let hd = config
        .tron
        .hd_secret
        .as_ref()
        .context("the sweeper needs GUARANTOR_HD_SEED or GUARANTOR_HD_MNEMONIC")?
        .wallet()?;
    let fee_wallet = config
        .tron
        .fee_wallet_key
        .as_ref()
        .context("the sweeper needs GUARANTOR_TRON_FEE_WALLET_KEY")?;
    let fee_wallet = guarantor_tron::PrivateKey::from_hex(fee_wallet.expose_secret())
        .map_err(|_| anyhow::anyhow!("GUARANTOR_TRON_FEE_WALLET_KEY is not a secp256k1 key in hex"))?;
    let main_wallet = config
        .tron
        .main_wallet
        .context("the sweeper needs GUARANTOR_TRON_MAIN_WALLET")?;
    let node = node_client(config)?;
    let sweep = &config.sweep;
    Ok(guarantor_sweeper::Sweeper {
        pool,
        reader: guarantor_tron::solid::SolidReader::new(node.counted_apart(), config.tron.usdt_contract),
        node,
        wallets: guarantor_sweeper::Wallets {
            hd,
            fee_wallet,
            main_wallet,
        },
        settings: guarantor_sweeper::SweepSettings {
            interval: Duration::from_secs(sweep.interval_secs),
            min_amount: config.sweep_min_amount,
            fee_margin_percent: sweep.fee_margin_percent,
            max_fee_sun: i64::try_from(sweep.max_fee_trx)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000),
            tx_lifetime: Duration::from_secs(sweep.tx_lifetime_secs),
            max_attempts: i32::try_from(sweep.max_attempts).unwrap_or(i32::MAX),
        },
        holder: uuid::Uuid::new_v4(),
    })
}

/// With the devnet: funds the dev fee wallet `up` generated from the genesis account (through the
/// faucet) when it holds less than 1,000 TRX, waiting for the devnet to answer.
async fn fund_dev_fee_wallet(config: &Config, fee_wallet: &guarantor_tron::TronAddress, shutdown: &CancellationToken) {
    let devnet = format!("http://{}", config.devnet.addr);
    let Ok(node) = guarantor_tron::client::NodeClient::new(guarantor_tron::client::NodeConfig::new(devnet.clone()))
    else {
        return;
    };
    let http = reqwest::Client::new();
    loop {
        let balance = tokio::select! {
            () = shutdown.cancelled() => return,
            account = node.account(fee_wallet) => account.map(|a| a.map_or(0, |a| a.balance_sun)),
        };
        let funded = match balance {
            Ok(balance) if balance >= 1_000 * 1_000_000 => true,
            Ok(_) => http
                .post(format!("{devnet}/devnet/faucet"))
                .json(&serde_json::json!({ "address": fee_wallet.to_base58(), "trx": "100000" }))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
            Err(_) => false,
        };
        if funded {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// A dev-only key kept in the data directory, made on the first start.
fn dev_key(data_dir: &Path, file: &str) -> anyhow::Result<guarantor_tron::PrivateKey> {
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => guarantor_tron::PrivateKey::from_hex(text.trim())
            .map_err(|_| anyhow::anyhow!("{} does not hold a key", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => loop {
            if let Ok(key) = guarantor_tron::PrivateKey::from_bytes(&rand::random::<[u8; 32]>()) {
                write_private(&path, &format!("{}\n", key.to_hex()))?;
                return Ok(key);
            }
        },
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The dev-only HD seed of the data directory, made on the first start: deposit addresses of a
/// local run are derived from it. A real deployment sets GUARANTOR_HD_SEED or GUARANTOR_HD_MNEMONIC
/// (or their `_FILE` variants) and never uses this file.
fn dev_seed(data_dir: &Path) -> anyhow::Result<guarantor_config::HdSecret> {
    let path = data_dir.join(DEV_SEED_FILE);
    let seed = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().to_owned(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let seed = hex::encode(rand::random::<[u8; 32]>());
            write_private(&path, &format!("{seed}\n"))?;
            seed
        }
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let secret = guarantor_config::HdSecret::Seed(seed.into());
    secret
        .wallet()
        .with_context(|| format!("{} does not hold a valid seed", path.display()))?;
    println!(
        " DEV ONLY — deposit addresses derive from the HD seed in {} (set GUARANTOR_HD_SEED in production).",
        path.display()
    );
    Ok(secret)
}

fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(content.as_bytes())?;
    Ok(())
}
