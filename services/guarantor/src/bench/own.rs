//! The benchmark's own system: a scratch database (`<configured database>_bench`, recreated each run
//! and dropped after it) on the configured Postgres server, a nats-server of its own, and every service as its own process, so
//! that each one's memory can be read.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use guarantor_config::{Config, SecretString};
use guarantor_domain::Role;
use tokio::process::{Child, Command};

use super::baselines::with_database;
use super::load::Target;

const SERVICES: [&str; 4] = ["ingress", "ledger", "scanner", "sweeper"];

/// How long a process of the benchmark's own system may take to start.
const STARTUP: Duration = Duration::from_secs(30);

pub struct System {
    admin: guarantor_store::PgPool,
    database: String,
    database_url: String,
    nats_port: u16,
    http_port: u16,
    /// Workers of the ledger process (`GUARANTOR_LEDGER_WORKERS`, the one setting passed on).
    pub ledger_workers: u64,
    nats: Child,
    services: Vec<(&'static str, Child)>,
    dir: tempfile::TempDir,
}

/// A port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The nats-server binary: Debian's, a local install's, or the one on the PATH.
pub fn nats_server() -> PathBuf {
    ["/usr/sbin/nats-server", "/usr/local/bin/nats-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

/// Polls `ready` until it answers true, for at most `within`.
pub async fn wait_for(what: &str, within: Duration, mut ready: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ready().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{what} did not answer within {within:?}")
}

/// Whether something listens on `port`.
pub async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

/// A scratch database `<configured database>_<suffix>`, recreated and migrated.
pub struct ScratchDb {
    pub admin: guarantor_store::PgPool,
    pub name: String,
    pub url: String,
}

impl ScratchDb {
    pub async fn create(config: &Config, suffix: &str) -> anyhow::Result<Self> {
        let name = scratch_name(config, suffix)?;
        let url = with_database(&config.database_url, &name)?;
        let admin = guarantor_store::connect(&with_database(&config.database_url, "postgres")?.into(), 1).await?;
        drop_database(&admin, &name).await?;
        let secret: SecretString = url.clone().into();
        guarantor_store::ensure_database(&secret).await?;
        let pool = guarantor_store::connect(&secret, 2).await?;
        guarantor_store::migrate(&pool).await?;
        pool.close().await;
        Ok(Self { admin, name, url })
    }

    pub async fn drop(&self) {
        if let Err(err) = drop_database(&self.admin, &self.name).await {
            eprintln!("could not drop the scratch database {}: {err:#}", self.name);
        }
    }
}

/// A `nats-server -js` of the benchmark's own on a free port, its store under `dir`.
pub async fn scratch_nats(dir: &std::path::Path) -> anyhow::Result<(Child, u16)> {
    let port = free_port()?;
    let nats = Command::new(nats_server())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join(format!("nats-{port}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start nats-server (Debian package nats-server)")?;
    wait_for("nats-server", STARTUP, async || listening(port).await).await?;
    Ok((nats, port))
}

impl System {
    pub async fn start(config: &Config, ledger_workers: u64) -> anyhow::Result<Self> {
        let ScratchDb {
            admin,
            name: database,
            url: database_url,
        } = ScratchDb::create(config, "bench").await?;
        let dir = tempfile::tempdir()?;
        let (nats, nats_port) = scratch_nats(dir.path()).await?;
        let mut system = Self {
            admin,
            database,
            database_url,
            nats_port,
            http_port: free_port()?,
            ledger_workers,
            nats,
            services: Vec::new(),
            dir,
        };
        let exe = std::env::current_exe()?;
        // Keys of the benchmark's own, made for this run only (the sweeper needs them to start).
        let seed = hex::encode(rand::random::<[u8; 32]>());
        let fee_wallet = guarantor_tron::PrivateKey::from_bytes(&rand::random::<[u8; 32]>())?;
        let main_wallet = guarantor_tron::PrivateKey::from_bytes(&rand::random::<[u8; 32]>())?.address();
        for service in SERVICES {
            let log = std::fs::File::create(system.dir.path().join(format!("{service}.log")))?;
            let mut command = Command::new(&exe);
            for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("GUARANTOR_")) {
                command.env_remove(name);
            }
            let child = command
                .arg(service)
                .current_dir(system.dir.path())
                .env("GUARANTOR_DATABASE_URL", &system.database_url)
                .env("GUARANTOR_NATS_URL", format!("nats://127.0.0.1:{nats_port}"))
                .env("GUARANTOR_HTTP_ADDR", format!("127.0.0.1:{}", system.http_port))
                .env("GUARANTOR_LOG_FORMAT", "json")
                .env("GUARANTOR_LEDGER_WORKERS", ledger_workers.to_string())
                .env("GUARANTOR_HD_SEED", &seed)
                .env("GUARANTOR_TRON_FEE_WALLET_KEY", fee_wallet.to_hex())
                .env("GUARANTOR_TRON_MAIN_WALLET", main_wallet.to_base58())
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()?;
            system.services.push((service, child));
        }
        let http = reqwest::Client::new();
        let health = format!("http://127.0.0.1:{}/readyz", system.http_port);
        wait_for("the ingress", STARTUP, async || {
            http.get(&health).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await
        .with_context(|| format!("see the logs in {}", system.dir.path().display()))?;
        Ok(system)
    }

    pub fn nats_url(&self) -> SecretString {
        format!("nats://127.0.0.1:{}", self.nats_port).into()
    }

    /// Keys of a tenant of the benchmark's own.
    pub async fn target(&self, http: reqwest::Client) -> anyhow::Result<Target> {
        let pool = guarantor_store::connect(&self.database_url.clone().into(), 2).await?;
        let key = async |role: Role| -> anyhow::Result<String> {
            let created = guarantor_ingress::api_keys::create(&pool, "bench", role).await?;
            Ok(guarantor_config::ExposeSecret::expose_secret(&created.key).to_owned())
        };
        Ok(Target {
            base: format!("http://127.0.0.1:{}", self.http_port),
            platform: key(Role::Platform).await?,
            arbiter: key(Role::Arbiter).await?,
            admin: key(Role::Admin).await?,
            http,
        })
    }

    /// Resident memory of each service process, in MB.
    #[allow(clippy::float_arithmetic, reason = "a report's megabytes")]
    pub fn rss_mb(&self) -> Vec<(String, f64)> {
        self.services
            .iter()
            .filter_map(|(service, child)| {
                let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()?)).ok()?;
                let kb: f64 = status
                    .lines()
                    .find(|line| line.starts_with("VmRSS:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some(((*service).to_owned(), kb / 1024.0))
            })
            .collect()
    }

    pub async fn stop(mut self) {
        for (_, child) in &mut self.services {
            child.kill().await.ok();
        }
        self.nats.kill().await.ok();
        if let Err(err) = drop_database(&self.admin, &self.database).await {
            eprintln!("could not drop the scratch database {}: {err:#}", self.database);
        }
    }
}

/// `<configured database>_<suffix>`: a scratch database beside the configured one.
pub fn scratch_name(config: &Config, suffix: &str) -> anyhow::Result<String> {
    let url = reqwest::Url::parse(guarantor_config::ExposeSecret::expose_secret(&config.database_url))
        .context("GUARANTOR_DATABASE_URL is not a URL")?;
    let base = url.path().trim_start_matches('/');
    let base = if base.is_empty() { "guarantor" } else { base };
    anyhow::ensure!(
        base.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "the database name {base:?} is not a plain identifier"
    );
    Ok(format!("{base}_{suffix}"))
}

pub async fn drop_database(admin: &guarantor_store::PgPool, database: &str) -> anyhow::Result<()> {
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"))
        .execute(admin)
        .await?;
    Ok(())
}
