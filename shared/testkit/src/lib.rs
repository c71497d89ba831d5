//! Test support. Each test gets its own Postgres database (created, migrated, dropped afterwards) and
//! its own `nats-server -js` process on a free port with a temporary store (killed on drop), so tests
//! can run in parallel without sharing state.
//!
//! Postgres is reached through `GUARANTOR_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); `nats-server` must be on the `PATH` or named by
//! `GUARANTOR_TEST_NATS_SERVER`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};

use guarantor_config::SecretString;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::process::{Child, Command};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("GUARANTOR_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

fn admin_options() -> PgConnectOptions {
    PgConnectOptions::from_str(&admin_url()).expect("GUARANTOR_TEST_DATABASE_URL must be a Postgres URL")
}

/// A freshly created and migrated database, dropped when this value is dropped.
#[derive(Debug)]
pub struct TestDb {
    pub pool: PgPool,
    name: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("guarantor_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect_with(&admin_options())
            .await
            .expect("Postgres must be reachable for tests (see GUARANTOR_TEST_DATABASE_URL)");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let pool = guarantor_store::connect(&Self::url_for(&name), 8)
            .await
            .expect("connect to the test database");
        guarantor_store::migrate(&pool)
            .await
            .expect("migrate the test database");
        Self { pool, name }
    }

    /// The admin URL with its database replaced by `name` (credentials and options kept).
    fn url_for(name: &str) -> SecretString {
        let admin = admin_url();
        let (base, query) = admin
            .split_once('?')
            .map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        match query {
            Some(query) => format!("{server}/{name}?{query}"),
            None => format!("{server}/{name}"),
        }
        .into()
    }

    /// The URL of this database, as a service's configuration would hold it.
    pub fn url(&self) -> SecretString {
        Self::url_for(&self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any async context we could borrow, so a short-lived runtime does the work.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                let mut admin = PgConnection::connect_with(&admin_options()).await?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// A `nats-server -js` process of this test's own, killed (and its store removed) on drop.
#[derive(Debug)]
pub struct TestNats {
    child: Child,
    port: u16,
    /// Removed when the server is dropped.
    _store: tempfile::TempDir,
}

impl TestNats {
    pub async fn start() -> Self {
        let store = tempfile::tempdir().expect("temporary store directory");
        for _ in 0..5 {
            let port = free_port();
            let mut child = spawn_server(port, store.path().to_path_buf());
            if wait_until_listening(&mut child, port).await {
                return Self {
                    child,
                    port,
                    _store: store,
                };
            }
            // Another process took the port between our probe and the server's bind: try another.
            child.kill().await.ok();
        }
        panic!("nats-server did not start; is it installed (GUARANTOR_TEST_NATS_SERVER)?");
    }

    pub fn url_string(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> SecretString {
        self.url_string().into()
    }

    /// Kills the server now (a sabotage test's dependency failure).
    pub fn kill(&mut self) {
        self.child.start_kill().ok();
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        self.child.start_kill().ok();
    }
}

async fn wait_until_listening(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn nats_server_binary() -> String {
    std::env::var("GUARANTOR_TEST_NATS_SERVER").unwrap_or_else(|_| {
        ["/usr/sbin/nats-server", "/usr/local/bin/nats-server"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .unwrap_or("nats-server")
            .to_owned()
    })
}

fn spawn_server(port: u16, store: PathBuf) -> Child {
    Command::new(nats_server_binary())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn nats-server (set GUARANTOR_TEST_NATS_SERVER if it is not on the PATH)")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind an ephemeral port")
}

/// The version of tronpy (an independent TRON implementation, from PyPI) the tests drive the devnet
/// with, as a client would.
pub const TRONPY: &str = "tronpy==0.6.2";

/// The python of a virtualenv with tronpy, created once under `dir` (a test's `CARGO_TARGET_TMPDIR`).
pub fn tronpy_python(dir: &std::path::Path) -> std::path::PathBuf {
    use std::process::Command;
    let venv = dir.join("tronpy-venv");
    let python = venv.join("bin").join("python");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import tronpy"])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        let created = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .expect("python3 is installed");
        assert!(created.success(), "python3 -m venv failed");
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", TRONPY])
            .status()
            .expect("pip runs");
        assert!(installed.success(), "pip install {TRONPY} failed");
    }
    python
}
