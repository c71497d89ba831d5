//! Runs the real `guarantor` binary against a Postgres database and a nats-server of the test's own.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use guarantor_config::ExposeSecret;
use guarantor_testkit::{free_port, TestDb, TestNats};
use tokio::process::{Child, Command};

pub const BINARY: &str = env!("CARGO_BIN_EXE_guarantor");

/// A `guarantor` command with a clean `GUARANTOR_*` environment pointing at the test's servers.
pub fn command(db_url: &str, nats_url: &str, data_dir: &Path) -> Command {
    let mut command = Command::new(BINARY);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("GUARANTOR_")) {
        command.env_remove(name);
    }
    command
        .current_dir(data_dir)
        .env("GUARANTOR_DATABASE_URL", db_url)
        .env("GUARANTOR_NATS_URL", nats_url)
        .env("GUARANTOR_DATA_DIR", data_dir)
        .env("GUARANTOR_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// `guarantor up` running in the background, with its own database, NATS and data directory.
pub struct System {
    pub base: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub nats: TestNats,
    pub data_dir: tempfile::TempDir,
    pub child: Child,
}

impl System {
    pub async fn up() -> Self {
        let (db, nats) = tokio::join!(TestDb::new(), TestNats::start());
        let data_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(data_dir.path().join("guarantor.log")).unwrap();
        let child = command(
            db.url().expose_secret(),
            &nats.url_string(),
            data_dir.path(),
        )
        .env("GUARANTOR_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .arg("up")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
        let system = Self {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            db,
            nats,
            data_dir,
            child,
        };
        system.wait_until_healthy().await;
        system
    }

    async fn wait_until_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(response) = self.http.get(format!("{}/healthz", self.base)).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log =
            std::fs::read_to_string(self.data_dir.path().join("guarantor.log")).unwrap_or_default();
        panic!("guarantor up did not become healthy within 30 s; its log:\n{log}");
    }

    /// A `guarantor` command against this system's servers (for the operator commands).
    pub fn command(&self) -> Command {
        command(
            self.db.url().expose_secret(),
            &self.nats.url_string(),
            self.data_dir.path(),
        )
    }

    /// The dev keys `up` printed and kept in its data directory.
    pub fn dev_key(&self, role: &str) -> String {
        let text = std::fs::read_to_string(self.data_dir.path().join("dev-api-keys.json")).unwrap();
        let keys: serde_json::Value = serde_json::from_str(&text).unwrap();
        keys[role].as_str().unwrap().to_owned()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("still running");
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .expect("guarantor stops within 40 s of SIGTERM")
            .unwrap()
    }
}
