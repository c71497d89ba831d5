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

/// The 3-node cluster configuration shipped in `nats/cluster.conf` (its values come from the
/// environment, so the test's servers and the compose file's containers run the same file).
pub const CLUSTER_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../nats/cluster.conf");

/// One nats-server of a test.
#[derive(Debug)]
struct Node {
    /// None while killed.
    child: std::sync::Mutex<Option<Child>>,
    port: u16,
    cluster_port: Option<u16>,
    store: PathBuf,
}

/// `nats-server -js` processes of this test's own: one server, or a 3-node JetStream cluster on one
/// host (each node with its own ports and store). Killed, and their stores removed, on drop.
#[derive(Debug)]
pub struct TestNats {
    nodes: Vec<Node>,
    /// Removed when the servers are dropped.
    _stores: tempfile::TempDir,
}

impl TestNats {
    pub async fn start() -> Self {
        let stores = tempfile::tempdir().expect("temporary store directory");
        let store = stores.path().join("n1");
        for _ in 0..5 {
            let node = Node {
                child: std::sync::Mutex::default(),
                port: free_port(),
                cluster_port: None,
                store: store.clone(),
            };
            if node.spawn(&[]).await {
                return Self {
                    nodes: vec![node],
                    _stores: stores,
                };
            }
            // Another process took the port between our probe and the server's bind: try another.
        }
        panic!("nats-server did not start; is it installed (GUARANTOR_TEST_NATS_SERVER)?");
    }

    /// Three servers clustered with `nats/cluster.conf`, each routing to the other two. JetStream
    /// elects its metadata leader a moment after they start; this returns once it has.
    pub async fn cluster() -> Self {
        let stores = tempfile::tempdir().expect("temporary store directory");
        let nodes: Vec<Node> = (1..=3)
            .map(|index| Node {
                child: std::sync::Mutex::default(),
                port: free_port(),
                cluster_port: Some(free_port()),
                store: stores.path().join(format!("n{index}")),
            })
            .collect();
        let routes: Vec<String> = nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.cluster_port.unwrap_or_default()))
            .collect();
        for (index, node) in nodes.iter().enumerate() {
            let others: Vec<&String> = routes
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != index)
                .map(|(_, route)| route)
                .collect();
            assert!(
                node.spawn(&others).await,
                "nats-server {} of the cluster did not start",
                index + 1
            );
        }
        let cluster = Self { nodes, _stores: stores };
        cluster.wait_for_jetstream().await;
        cluster
    }

    /// Waits until the cluster can create a stream with 3 replicas (its metadata leader is elected
    /// and every member is a peer), creating and deleting a probe stream.
    async fn wait_for_jetstream(&self) {
        // Usually a few seconds; on a loaded 2-core machine the election once took longer than 30 s.
        let deadline = Instant::now() + Duration::from_secs(90);
        let client = async_nats::connect(self.url_string().split(',').next().unwrap_or_default())
            .await
            .expect("connect to the test's nats-server");
        let js = async_nats::jetstream::new(client);
        let probe = async_nats::jetstream::stream::Config {
            name: "TESTKIT_PROBE".to_owned(),
            subjects: vec!["testkit.probe".to_owned()],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            num_replicas: 3,
            ..Default::default()
        };
        while js.create_stream(probe.clone()).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the JetStream cluster did not form within 90 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        js.delete_stream("TESTKIT_PROBE")
            .await
            .expect("delete the probe stream");
    }

    /// The client URL: every server, comma-separated (as `GUARANTOR_NATS_URL` takes them).
    pub fn url_string(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn url(&self) -> SecretString {
        self.url_string().into()
    }

    /// Kills every server now (a sabotage test's dependency failure).
    pub fn kill(&self) {
        for index in 0..self.nodes.len() {
            self.kill_node(index);
        }
    }

    /// Kills one server with SIGKILL, as a crash would (its store stays).
    pub fn kill_node(&self, index: usize) {
        let child = self.nodes[index].child.lock().ok().and_then(|mut child| child.take());
        if let Some(mut child) = child {
            child.start_kill().ok();
        }
    }

    /// Starts a killed server again on its ports and store; it rejoins the cluster.
    pub async fn restart_node(&self, index: usize) {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .filter_map(|(_, node)| node.cluster_port.map(|port| format!("nats://127.0.0.1:{port}")))
            .collect();
        let node = &self.nodes[index];
        assert!(
            node.child.lock().is_ok_and(|child| child.is_none()),
            "server {index} is running"
        );
        assert!(
            node.spawn(&routes.iter().collect::<Vec<_>>()).await,
            "server {index} did not restart"
        );
    }
}

impl Node {
    async fn spawn(&self, routes: &[&String]) -> bool {
        let mut command = Command::new(nats_server_binary());
        match self.cluster_port {
            None => {
                command
                    .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
                    .arg(&self.store);
            }
            Some(cluster_port) => {
                let name = self
                    .store
                    .file_name()
                    .and_then(|name| name.to_str())
                    .unwrap_or("node")
                    .to_owned();
                command
                    .args(["-c", CLUSTER_CONF])
                    .env("NATS_SERVER_NAME", name)
                    .env("NATS_LISTEN", format!("127.0.0.1:{}", self.port))
                    .env("NATS_STORE_DIR", &self.store)
                    .env("NATS_CLUSTER_LISTEN", format!("127.0.0.1:{cluster_port}"))
                    .env("NATS_ROUTE_1", routes.first().map_or("", |route| route.as_str()))
                    .env("NATS_ROUTE_2", routes.get(1).map_or("", |route| route.as_str()));
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn nats-server (set GUARANTOR_TEST_NATS_SERVER if it is not on the PATH)");
        if wait_until_listening(&mut child, self.port).await {
            if let Ok(mut slot) = self.child.lock() {
                *slot = Some(child);
            }
            true
        } else {
            child.kill().await.ok();
            false
        }
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        self.kill();
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

/// The version of schemathesis (PyPI) the fuzz test runs against `/openapi.json`.
pub const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// The python of a virtualenv with tronpy, created once under `dir` (a test's `CARGO_TARGET_TMPDIR`).
pub fn tronpy_python(dir: &std::path::Path) -> std::path::PathBuf {
    venv_with(dir, "tronpy-venv", TRONPY, "tronpy")
        .join("bin")
        .join("python")
}

/// The `st` command of a virtualenv with schemathesis, created once under `dir`.
pub fn schemathesis_cli(dir: &std::path::Path) -> std::path::PathBuf {
    venv_with(dir, "schemathesis-venv", SCHEMATHESIS, "schemathesis")
        .join("bin")
        .join("st")
}

/// A virtualenv under `dir` named `name` with `requirement` installed from PyPI (once: kept while
/// `module` imports).
fn venv_with(dir: &std::path::Path, name: &str, requirement: &str, module: &str) -> std::path::PathBuf {
    use std::process::Command;
    let venv = dir.join(name);
    let python = venv.join("bin").join("python");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", &format!("import {module}")])
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
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                requirement,
            ])
            .status()
            .expect("pip runs");
        assert!(installed.success(), "pip install {requirement} failed");
    }
    venv
}
