//! `guarantor bench-scanner`: the scanner's cost (SPEC §11). On a devnet of its own limited to
//! `--rps` requests a second (and the node client held to the same rate), with `--addresses`
//! watched payments and deposits planted over `--blocks` blocks (among decoys: the look-alike token
//! to watched addresses, USDT to unwatched ones), it runs one balance-check cycle over the watched
//! addresses, then the block follower over the same blocks with each count of
//! `--follower-addresses` watched, and prints requests per cycle, cycle time, requests per block and
//! the deposits found against those planted. Each run publishes to a nats-server of its own, and what
//! it found is read back from that server's command stream, so a detector is judged by what it
//! really published.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use guarantor_config::Config;
use guarantor_domain::{Command, CommandEnvelope};
use guarantor_payment_scanner::{BalanceCheck, Follower};
use guarantor_tron::client::{NodeClient, NodeConfig};
use guarantor_tron::solid::SolidReader;
use guarantor_tron::{HdWallet, TronAddress};
use guarantor_tron_devnet::{DevnetConfig, Running};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::own::{scratch_nats, ScratchDb};

#[derive(Debug, clap::Args)]
pub struct ScannerBenchArgs {
    /// Watched addresses of the balance-check cycle
    #[arg(long, default_value_t = 10_000)]
    addresses: usize,
    /// Watched addresses of each block-follower run, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    follower_addresses: Vec<usize>,
    /// Blocks the deposits are spread over
    #[arg(long, default_value_t = 200)]
    blocks: u64,
    /// Deposits planted (to distinct watched addresses, two of them in one block)
    #[arg(long, default_value_t = 20)]
    deposits: usize,
    /// Requests a second the devnet answers (more are refused with 429) and the client sends
    #[arg(long, default_value_t = 15)]
    rps: u32,
    /// Print the report as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Run {
    detector: &'static str,
    watched: usize,
    blocks: u64,
    requests: u64,
    seconds: f64,
    requests_per_block: Option<f64>,
    found: usize,
    planted: usize,
    missed: usize,
    /// Observations of transfers that were not planted (look-alikes, unwatched): must be 0.
    wrong: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    rps: u32,
    blocks: u64,
    blocks_with_transactions: u64,
    planted: usize,
    decoys: usize,
    runs: Vec<Run>,
}

const SOLIDIFY_LAG: i64 = 1;

struct Bench {
    db: ScratchDb,
    pool: guarantor_store::PgPool,
    devnet: Running,
    node: String,
    dir: tempfile::TempDir,
    rps: u32,
    token: TronAddress,
    addresses: Vec<TronAddress>,
    planted: BTreeSet<(String, u32)>,
    first_block: u64,
    last_block: u64,
}

#[allow(clippy::print_stdout, reason = "the benchmark's report is its output")]
pub async fn run(config: Config, args: ScannerBenchArgs) -> anyhow::Result<()> {
    let most = args
        .follower_addresses
        .iter()
        .copied()
        .chain([args.addresses])
        .max()
        .unwrap_or(args.addresses);
    anyhow::ensure!(
        args.deposits >= 2 && args.deposits <= args.addresses,
        "--deposits must be 2 to --addresses"
    );
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let mut bench = Bench::start(&config, &args, most, stop).await?;
    let decoys = bench.plant(&args).await?;
    let blocks_with_transactions = bench.blocks_with_transactions();
    eprintln!(
        "planted {} deposits and {decoys} decoys over blocks {}..={}; balance check over {} addresses at {} req/s",
        bench.planted.len(),
        bench.first_block,
        bench.last_block,
        args.addresses,
        args.rps
    );
    bench.watch(args.addresses).await?;
    let mut runs = vec![bench.balance_check(args.addresses).await?];
    for watched in args.follower_addresses.iter().copied() {
        bench.watch(watched).await?;
        runs.push(bench.follow(watched).await?);
    }
    let report = Report {
        rps: args.rps,
        blocks: bench.last_block - bench.first_block + 1,
        blocks_with_transactions,
        planted: bench.planted.len(),
        decoys,
        runs,
    };
    bench.db.drop().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "scanner benchmark: {} blocks ({} with transactions), {} deposits planted among {} decoys, devnet limited to {} requests/s",
        report.blocks, report.blocks_with_transactions, report.planted, report.decoys, report.rps
    );
    println!(
        "{:<15} {:>8} {:>9} {:>10} {:>9} {:>14} {:>6}",
        "detector", "watched", "requests", "req/block", "seconds", "found/planted", "wrong"
    );
    for run in &report.runs {
        println!(
            "{:<15} {:>8} {:>9} {:>10} {:>9.1} {:>14} {:>6}",
            run.detector,
            run.watched,
            run.requests,
            run.requests_per_block
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
            run.seconds,
            format!("{}/{}", run.found, run.planted),
            run.wrong
        );
    }
    Ok(())
}

impl Bench {
    async fn start(
        config: &Config,
        args: &ScannerBenchArgs,
        addresses: usize,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let db = ScratchDb::create(config, "scanbench").await?;
        let pool = guarantor_store::connect(&db.url.clone().into(), 4).await?;
        let token = config.tron.usdt_contract;
        let (devnet, _) = guarantor_tron_devnet::start(
            DevnetConfig {
                addr: "127.0.0.1:0".parse()?,
                // Blocks are made by the benchmark.
                block_interval: Duration::from_secs(24 * 3600),
                solidify_lag: SOLIDIFY_LAG,
                state_file: None,
                usdt_contract: token,
            },
            stop,
        )
        .await?;
        let seed: [u8; 32] = rand::random();
        let derive = HdWallet::from_seed(&seed)?.deposit_addresses()?;
        let addresses = (0..addresses)
            .map(|index| derive.address(u32::try_from(index)?).map_err(anyhow::Error::from))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            node: format!("http://{}", devnet.addr),
            db,
            pool,
            devnet,
            dir: tempfile::tempdir()?,
            rps: args.rps,
            token,
            addresses,
            planted: BTreeSet::new(),
            first_block: 0,
            last_block: 0,
        })
    }

    fn blocks_with_transactions(&self) -> u64 {
        let chain = self
            .devnet
            .devnet
            .chain
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let range = self.first_block..=self.last_block;
        chain
            .blocks
            .iter()
            .filter(|block| u64::try_from(block.number).is_ok_and(|n| range.contains(&n)) && !block.txids.is_empty())
            .count() as u64
    }

    /// Plants the deposits (two in one block) and decoys, mines and solidifies them; returns the
    /// number of decoys.
    async fn plant(&mut self, args: &ScannerBenchArgs) -> anyhow::Result<usize> {
        let devnet = &self.devnet.devnet;
        self.first_block = {
            let chain = devnet.chain.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            u64::try_from(chain.head().number + 1)?
        };
        let stride = (args.addresses / args.deposits).max(1);
        let mut targets = (0..args.deposits).map(|n| self.addresses[n * stride]);
        let every = (args.blocks / args.deposits as u64).max(1);
        let unwatched = HdWallet::from_seed(&rand::random::<[u8; 32]>())?.deposit_addresses()?;
        let mut decoys = 0;
        let mut planted = 0;
        for block in 0..args.blocks {
            let mut chain = devnet.chain.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = guarantor_tron_devnet::http::Devnet::now_ms();
            let due = if block % every == 0 && planted < args.deposits {
                // The first planting block carries two deposits.
                if planted == 0 {
                    2
                } else {
                    1
                }
            } else {
                0
            };
            for _ in 0..due.min(args.deposits - planted) {
                let to = targets.next().context("ran out of deposit targets")?;
                let paid = chain
                    .faucet(&to, None, Some(1_000_000 + planted as u64), None, now)
                    .map_err(|refused| anyhow::anyhow!("faucet: {}", refused.message))?;
                self.planted.insert((paid.usdt.context("the faucet paid no USDT")?, 0));
                planted += 1;
            }
            if block % 3 == 1 {
                let watched = self.addresses[(block as usize * 7) % args.addresses];
                chain
                    .faucet(&watched, None, None, Some(5_000_000), now)
                    .map_err(|refused| anyhow::anyhow!("faucet: {}", refused.message))?;
                chain
                    .faucet(
                        &unwatched.address(u32::try_from(block)?)?,
                        None,
                        Some(3_000_000),
                        None,
                        now,
                    )
                    .map_err(|refused| anyhow::anyhow!("faucet: {}", refused.message))?;
                decoys += 2;
            }
            chain.produce_block(now);
        }
        anyhow::ensure!(
            planted == args.deposits,
            "planted {planted} of {} deposits",
            args.deposits
        );
        let mut chain = devnet.chain.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.last_block = u64::try_from(chain.head().number)?;
        for _ in 0..=SOLIDIFY_LAG {
            chain.produce_block(guarantor_tron_devnet::http::Devnet::now_ms());
        }
        drop(chain);
        devnet
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .rate_limit_rps = self.rps;
        Ok(decoys)
    }

    /// Makes the first `count` addresses watched payments (adding rows as needed).
    async fn watch(&self, count: usize) -> anyhow::Result<()> {
        let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
            .fetch_one(&self.pool)
            .await?;
        let existing = usize::try_from(existing)?;
        if existing >= count {
            anyhow::ensure!(existing == count, "cannot watch fewer addresses than before");
            return Ok(());
        }
        let (tenant, user): (i64, i64) = sqlx::query_as(
            "WITH t AS (INSERT INTO tenants (name) VALUES ('scanbench') ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id),
                  u AS (INSERT INTO users (tenant_id, external_id, name) SELECT id, 'payer', 'payer' FROM t
                        ON CONFLICT (tenant_id, external_id) DO UPDATE SET name = EXCLUDED.name RETURNING id, tenant_id)
             SELECT tenant_id, id FROM u",
        )
        .fetch_one(&self.pool)
        .await?;
        let indexes: Vec<i64> = (existing..count).map(|i| i as i64).collect();
        let addresses: Vec<String> = self.addresses[existing..count]
            .iter()
            .map(TronAddress::to_base58)
            .collect();
        sqlx::query(
            "INSERT INTO payments (tenant_id, user_id, gateway_id, currency, amount, status, hd_index, address,
                                   token_contract, expires_at)
             SELECT $1, $2, 1, 'USDT', 1, 'waiting', i, a, $3, now() + interval '1 day'
             FROM unnest($4::bigint[], $5::text[]) AS x(i, a)",
        )
        .bind(tenant)
        .bind(user)
        .bind(self.token.to_base58())
        .bind(&indexes)
        .bind(&addresses)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn reader(&self) -> anyhow::Result<SolidReader> {
        let mut node = NodeConfig::new(self.node.clone());
        node.rate_limit_rps = self.rps;
        Ok(SolidReader::new(NodeClient::new(node)?, self.token))
    }

    /// A nats-server of this run's own, with the streams applied.
    async fn nats(&self) -> anyhow::Result<(tokio::process::Child, guarantor_messaging::JetStream)> {
        let (child, port) = scratch_nats(self.dir.path()).await?;
        let client = guarantor_messaging::connect(&format!("nats://127.0.0.1:{port}").into(), "bench").await?;
        let js = guarantor_messaging::jetstream(&client);
        guarantor_messaging::apply_streams(&js, 1).await?;
        Ok((child, js))
    }

    /// The (txid, log index) of every observation in the run's command stream, and how many of them
    /// are not planted deposits.
    async fn judge(
        &self,
        js: &guarantor_messaging::JetStream,
        detector: &'static str,
        watched: usize,
        requests: u64,
        seconds: f64,
        blocks: Option<u64>,
    ) -> anyhow::Result<Run> {
        let stream = js.get_stream(guarantor_messaging::COMMAND_STREAM).await?;
        let state = stream.get_info().await?.state;
        let mut found = BTreeSet::new();
        if state.messages > 0 {
            for seq in state.first_sequence..=state.last_sequence {
                let message = stream.get_raw_message(seq).await?;
                let envelope: CommandEnvelope = serde_json::from_slice(&message.payload)?;
                if let Command::ObserveDeposit(seen) = envelope.command {
                    found.insert((seen.txid, seen.log_index));
                }
            }
        }
        let wrong = found.difference(&self.planted).count();
        Ok(Run {
            detector,
            watched,
            blocks: blocks.unwrap_or(0),
            requests,
            seconds,
            requests_per_block: blocks.map(|b| requests as f64 / b.max(1) as f64),
            found: found.intersection(&self.planted).count(),
            planted: self.planted.len(),
            missed: self.planted.difference(&found).count(),
            wrong,
        })
    }

    async fn balance_check(&self, watched: usize) -> anyhow::Result<Run> {
        let (_nats, js) = self.nats().await?;
        let check = BalanceCheck::new(
            self.pool.clone(),
            js.clone(),
            self.reader()?,
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        let started = Instant::now();
        let done = check.cycle().await?.context("the balance check's lease is held")?;
        let seconds = started.elapsed().as_secs_f64();
        check.lease.release(&self.pool).await?;
        self.judge(&js, "balance check", watched, done.requests, seconds, None)
            .await
    }

    async fn follow(&self, watched: usize) -> anyhow::Result<Run> {
        let (_nats, js) = self.nats().await?;
        let reader = self.reader()?;
        let follower = Follower::new(self.pool.clone(), js.clone(), reader, Duration::from_secs(3600));
        sqlx::query(
            "INSERT INTO scanner_cursors (name, next_block) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET next_block = EXCLUDED.next_block, read_until = NULL",
        )
        .bind(guarantor_payment_scanner::follower::FOLLOWER)
        .bind(i64::try_from(self.first_block)?)
        .execute(&self.pool)
        .await?;
        let started = Instant::now();
        let (mut requests, mut blocks) = (0, 0);
        loop {
            let cycle = follower.cycle().await?.context("the block follower's lease is held")?;
            requests += cycle.requests;
            blocks += cycle.blocks;
            if cycle.lag_blocks == 0 {
                break;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        follower.lease.release(&self.pool).await?;
        self.judge(&js, "block follower", watched, requests, seconds, Some(blocks))
            .await
    }
}
