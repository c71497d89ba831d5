//! `guarantor chaos`: the fault run. It starts a system of its own — a Postgres cluster and a
//! nats-server of its own, the devnet, and the ingress, two ledgers, the scanner and the sweeper as
//! separate processes — drives keyed load at it (credits, deal lifecycles, payments paid on chain),
//! and meanwhile kills with SIGKILL and restarts, in turn, the ingress, a ledger, the scanner, the
//! sweeper, the nats-server and Postgres. Afterwards every acknowledged request must be reflected
//! exactly once, every payment credited once and swept once, and `reconcile` must find nothing. It
//! prints requests sent, acknowledged, lost and doubled, and exits non-zero unless lost and doubled
//! are 0 and the books reconcile.

mod load;
mod procs;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use guarantor_config::{ExposeSecret, SecretString};
use guarantor_domain::Role;
use serde::Serialize;
use serde_json::json;

use crate::bench::own::{free_port, listening, nats_server, wait_for};
use load::{Api, Counters, Expected};
use procs::{wait_ready, Postgres, Proc};

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Seconds of load before each fault (and after the last one).
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The processes the faults hit, in the order they are hit.
const FAULTS: [&str; 6] = ["ingress", "ledger-1", "scanner", "sweeper", "nats-server", "postgres"];

#[derive(Debug, Serialize)]
struct Report {
    requests_sent: u64,
    acknowledged: u64,
    retries: u64,
    unacknowledged: u64,
    unexpected_answers: u64,
    lost: u64,
    doubled: u64,
    payments: usize,
    payments_swept_usdt: String,
    reconcile_violations: usize,
    faults: Vec<&'static str>,
    restarted_after_exiting_by_itself: Vec<(String, u32)>,
    seconds: u64,
}

/// Everything the run started.
struct Own {
    postgres: Postgres,
    nats: Proc,
    nats_port: u16,
    devnet: Proc,
    devnet_url: String,
    services: Vec<(Proc, String)>,
    database_url: String,
    http_port: u16,
    main_wallet: guarantor_tron::TronAddress,
    dir: tempfile::TempDir,
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut own = start(dir).await?;
    let outcome = drive(&mut own, &args).await;
    for (service, _) in &mut own.services {
        service.kill9().await;
    }
    own.nats.kill9().await;
    own.devnet.kill9().await;
    if let Err(err) = own.postgres.kill9().await {
        eprintln!("could not stop the run's Postgres: {err:#}");
    }
    let report = match outcome {
        Ok(report) => report,
        Err(err) => {
            let kept = own.dir.keep();
            return Err(err.context(format!("the run's logs are kept in {}", kept.display())));
        }
    };
    if args.json {
        #[allow(clippy::print_stdout, reason = "the command's report")]
        {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    } else {
        print(&report);
    }
    anyhow::ensure!(
        report.lost == 0 && report.doubled == 0 && report.reconcile_violations == 0 && report.unexpected_answers == 0,
        "the fault run found lost or doubled effects, unexpected answers or violated invariants"
    );
    Ok(())
}

#[allow(clippy::print_stdout, reason = "the command's report")]
fn print(report: &Report) {
    println!(
        "fault run: killed (SIGKILL) and restarted in turn: {}",
        report.faults.join(", ")
    );
    println!("  requests sent          {}", report.requests_sent);
    println!("  acknowledged           {}", report.acknowledged);
    println!("  retried (503, refused) {}", report.retries);
    println!("  never acknowledged     {}", report.unacknowledged);
    println!("  unexpected answers     {}", report.unexpected_answers);
    println!("  lost                   {}", report.lost);
    println!("  doubled                {}", report.doubled);
    println!(
        "  payments               {} paid on chain, {} USDT swept to the main wallet",
        report.payments, report.payments_swept_usdt
    );
    println!("  reconcile violations   {}", report.reconcile_violations);
    for (name, exits) in &report.restarted_after_exiting_by_itself {
        println!("  {name} exited by itself {exits} time(s) and was restarted");
    }
    println!("  {} s", report.seconds);
}

async fn start(dir: tempfile::TempDir) -> anyhow::Result<Own> {
    let exe = std::env::current_exe()?;
    let http = reqwest::Client::new();
    let mut postgres = Postgres::init(dir.path(), free_port()?).await?;
    postgres.start().await?;
    let database_url = postgres.url("guarantor");
    guarantor_store::ensure_database(&SecretString::from(database_url.clone())).await?;

    let nats_port = free_port()?;
    let store = dir.path().join("nats");
    let mut nats = Proc::new(
        "nats-server",
        nats_server(),
        &[
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &nats_port.to_string(),
            "-sd",
            &store.to_string_lossy(),
        ],
        &[],
        dir.path(),
    );
    nats.start()?;
    wait_for("nats-server", Duration::from_secs(10), async || {
        listening(nats_port).await
    })
    .await?;

    let devnet_addr = format!("127.0.0.1:{}", free_port()?);
    let devnet_url = format!("http://{devnet_addr}");
    let mut devnet = Proc::new(
        "devnet",
        exe.clone(),
        &[
            "devnet",
            "--addr",
            &devnet_addr,
            "--block-interval-ms",
            "300",
            "--solidify-lag",
            "3",
        ],
        &[],
        dir.path(),
    );
    devnet.start()?;
    wait_ready(&http, &format!("{devnet_url}/devnet/info"), Duration::from_secs(30)).await?;

    // Keys of this run only.
    let seed = hex::encode(rand::random::<[u8; 32]>());
    let fee_wallet = guarantor_tron::PrivateKey::from_bytes(&rand::random::<[u8; 32]>())?;
    let main_wallet = guarantor_tron::PrivateKey::from_bytes(&rand::random::<[u8; 32]>())?.address();
    http.post(format!("{devnet_url}/devnet/faucet"))
        .json(&json!({ "address": fee_wallet.address().to_base58(), "trx": "100000" }))
        .send()
        .await?
        .error_for_status()?;
    let http_port = free_port()?;
    let env = |ops: u16| -> Vec<(String, String)> {
        [
            ("GUARANTOR_DATABASE_URL", database_url.clone()),
            ("GUARANTOR_NATS_URL", format!("nats://127.0.0.1:{nats_port}")),
            ("GUARANTOR_HTTP_ADDR", format!("127.0.0.1:{http_port}")),
            ("GUARANTOR_OPS_ADDR", format!("127.0.0.1:{ops}")),
            ("GUARANTOR_TRON_NODE_URL", devnet_url.clone()),
            ("GUARANTOR_HD_SEED", seed.clone()),
            ("GUARANTOR_TRON_FEE_WALLET_KEY", fee_wallet.to_hex()),
            ("GUARANTOR_TRON_MAIN_WALLET", main_wallet.to_base58()),
            ("GUARANTOR_SCAN_INTERVAL_SECS", "1".to_owned()),
            ("GUARANTOR_SWEEP_INTERVAL_SECS", "1".to_owned()),
            ("GUARANTOR_COMMAND_TIMEOUT_MS", "2000".to_owned()),
            ("GUARANTOR_LEDGER_ACK_WAIT_SECS", "5".to_owned()),
            ("GUARANTOR_LOG_FORMAT", "json".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    };
    let mut services = Vec::new();
    for (name, part) in [
        ("ledger-1", "ledger"),
        ("ledger-2", "ledger"),
        ("ingress", "ingress"),
        ("scanner", "scanner"),
        ("sweeper", "sweeper"),
    ] {
        let ops = free_port()?;
        let mut service = Proc::new(name, exe.clone(), &[part], &env(ops), dir.path());
        service.start()?;
        // One at a time: each applies the migrations at start.
        wait_ready(
            &http,
            &format!("http://127.0.0.1:{ops}/readyz"),
            Duration::from_secs(60),
        )
        .await
        .with_context(|| format!("{name} did not become ready"))?;
        services.push((service, format!("http://127.0.0.1:{ops}/readyz")));
    }
    Ok(Own {
        postgres,
        nats,
        nats_port,
        devnet,
        devnet_url,
        services,
        database_url,
        http_port,
        main_wallet,
        dir,
    })
}

async fn drive(own: &mut Own, args: &ChaosArgs) -> anyhow::Result<Report> {
    let started = Instant::now();
    let http = reqwest::Client::new();
    let pool = guarantor_store::connect(&SecretString::from(own.database_url.clone()), 4).await?;
    let key = async |role: Role| -> anyhow::Result<String> {
        let created = guarantor_ingress::api_keys::create(&pool, "chaos", role).await?;
        Ok(created.key.expose_secret().to_owned())
    };
    let api = Api {
        base: format!("http://127.0.0.1:{}", own.http_port),
        platform: key(Role::Platform).await?,
        admin: key(Role::Admin).await?,
        http: http.clone(),
    };
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..args.clients.max(1))
        .map(|index| {
            tokio::spawn(load::client(
                api.clone(),
                own.devnet_url.clone(),
                index,
                counters.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let pause = Duration::from_secs(args.seconds.max(1));
    for fault in FAULTS {
        supervised_sleep(own, pause).await?;
        eprintln!("chaos: kill -9 {fault}");
        match fault {
            "nats-server" => {
                own.nats.kill9().await;
                supervised_sleep(own, Duration::from_secs(2)).await?;
                own.nats.start()?;
                let port = own.nats_port;
                wait_for("the restarted nats-server", Duration::from_secs(10), async || {
                    listening(port).await
                })
                .await?;
            }
            "postgres" => {
                own.postgres.kill9().await?;
                supervised_sleep(own, Duration::from_secs(2)).await?;
                own.postgres.start().await?;
            }
            name => {
                let (service, _) = own
                    .services
                    .iter_mut()
                    .find(|(service, _)| service.name == name)
                    .context("an unknown process")?;
                service.kill9().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                service.start()?;
            }
        }
        for (service, ready) in &own.services {
            wait_ready(&http, ready, Duration::from_secs(60))
                .await
                .with_context(|| format!("{} did not recover after {fault} was killed", service.name))?;
        }
    }
    supervised_sleep(own, pause).await?;
    stop.store(true, Ordering::Relaxed);
    let mut expected = Expected::default();
    for client in clients {
        let done = client.await?;
        expected.credit_transfers.extend(done.credit_transfers);
        expected.closed_deals.extend(done.closed_deals);
        expected.payments.extend(done.payments);
    }
    let verdict = verify(own, &pool, &expected).await?;
    Ok(Report {
        requests_sent: counters.sent.load(Ordering::Relaxed),
        acknowledged: counters.acknowledged.load(Ordering::Relaxed),
        retries: counters.retries.load(Ordering::Relaxed),
        unacknowledged: counters.unacknowledged.load(Ordering::Relaxed),
        unexpected_answers: counters.unexpected.load(Ordering::Relaxed),
        lost: verdict.lost,
        doubled: verdict.doubled,
        payments: expected.payments.len(),
        payments_swept_usdt: verdict.swept,
        reconcile_violations: verdict.violations,
        faults: FAULTS.to_vec(),
        restarted_after_exiting_by_itself: own
            .services
            .iter()
            .filter(|(service, _)| service.exits > 0)
            .map(|(service, _)| (service.name.clone(), service.exits))
            .collect(),
        seconds: started.elapsed().as_secs(),
    })
}

/// Sleeps, restarting any service that exits on its own meanwhile (as a supervisor would).
async fn supervised_sleep(own: &mut Own, duration: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        for (service, _) in &mut own.services {
            if service.supervise()? {
                eprintln!("chaos: {} exited by itself; restarted", service.name);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

struct Verdict {
    lost: u64,
    doubled: u64,
    swept: String,
    violations: usize,
}

/// Waits for the system to settle, then compares what was acknowledged with what the books hold.
async fn verify(own: &mut Own, pool: &guarantor_store::PgPool, expected: &Expected) -> anyhow::Result<Verdict> {
    let nats = guarantor_messaging::connect(&format!("nats://127.0.0.1:{}", own.nats_port).into(), "chaos").await?;
    let js = guarantor_messaging::jetstream(&nats);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let backlog = guarantor_ledger::gauges::read(pool, &js).await;
        let settled = backlog
            .as_ref()
            .is_ok_and(|b| b.consumer_pending == 0 && b.consumer_ack_pending == 0 && b.outbox_backlog == 0);
        let paid: Vec<i64> = expected.payments.iter().map(|(id, _, _)| *id).collect();
        let unswept = sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM payments p WHERE p.id = ANY($1)
                 AND NOT EXISTS (SELECT 1 FROM sweeps s WHERE s.address = p.address AND s.status = 'confirmed')"#,
            &paid
        )
        .fetch_one(pool)
        .await?;
        if settled && unswept == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the system did not settle within 120 s after the faults ({backlog:?}, {unswept} payments unswept)"
        );
        supervised_sleep(own, Duration::from_millis(500)).await?;
    }

    // Lost: an acknowledged effect that is not in the books.
    let found_transfers = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM transfers WHERE id = ANY($1)"#,
        &expected.credit_transfers
    )
    .fetch_one(pool)
    .await?;
    let closed = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM deals WHERE id = ANY($1) AND status = 'close'"#,
        &expected.closed_deals
    )
    .fetch_one(pool)
    .await?;
    let mut lost =
        count(expected.credit_transfers.len()) - found_transfers + count(expected.closed_deals.len()) - closed;
    // Doubled: one command or deal step moving money twice, or a payment credited more than paid.
    let doubled_transfers = sqlx::query_scalar!(
        r#"SELECT (SELECT count(*) - count(DISTINCT command_id) FROM transfers WHERE kind = 'adjustment')
                + (SELECT count(*) FROM (SELECT 1 FROM transfers WHERE deal_id IS NOT NULL
                                         GROUP BY deal_id, kind HAVING count(*) > 1) twice) AS "count!""#
    )
    .fetch_one(pool)
    .await?;
    let mut doubled = doubled_transfers;
    let node =
        guarantor_tron::client::NodeClient::new(guarantor_tron::client::NodeConfig::new(own.devnet_url.clone()))?;
    let usdt: guarantor_tron::TronAddress = guarantor_tron::MAINNET_USDT_CONTRACT.parse()?;
    let mut swept_units: u64 = 0;
    for (id, address, units) in &expected.payments {
        let received = sqlx::query_scalar!("SELECT received FROM payments WHERE id = $1", id)
            .fetch_one(pool)
            .await?;
        let credited = guarantor_domain::Currency::Usdt
            .to_base_units(received)
            .with_context(|| format!("payment {id} received {received}, not a USDT amount"))?;
        match credited.cmp(units) {
            std::cmp::Ordering::Less => lost += 1,
            std::cmp::Ordering::Greater => doubled += 1,
            std::cmp::Ordering::Equal => {}
        }
        let left = node.trc20_balance(&usdt, &address.parse()?, true).await?;
        anyhow::ensure!(
            left == 0,
            "payment {id}'s address still holds {left} base units after its sweep"
        );
        swept_units += units;
    }
    // The main wallet holds exactly what was swept: a transfer sent twice would show here.
    let main = node.trc20_balance(&usdt, &own.main_wallet, true).await?;
    match main.cmp(&swept_units) {
        std::cmp::Ordering::Less => lost += 1,
        std::cmp::Ordering::Greater => doubled += 1,
        std::cmp::Ordering::Equal => {}
    }
    let violations = guarantor_ledger::reconcile::check(pool).await?;
    for violation in &violations {
        eprintln!("reconcile: invariant {}: {}", violation.invariant, violation.detail);
    }
    Ok(Verdict {
        lost: u64::try_from(lost.max(0))?,
        doubled: u64::try_from(doubled.max(0))?,
        swept: guarantor_domain::Currency::Usdt
            .from_base_units(swept_units)
            .to_string(),
        violations: violations.len(),
    })
}

fn count(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}
