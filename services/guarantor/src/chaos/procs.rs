//! The fault run's own processes: a Postgres cluster (initdb in a temporary directory, so it can be
//! killed without touching anyone else's server), a nats-server, the devnet, and each service, each
//! one killable with SIGKILL and restartable with the same ports, store and configuration.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::Connection;
use tokio::process::{Child, Command};

use crate::bench::own::wait_for;

/// One process the run supervises: how to start it, and the running child.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// Times it exited without being killed by the run (a supervisor restarted it).
    pub exits: u32,
}

impl Proc {
    pub fn new(name: &str, program: PathBuf, args: &[&str], env: &[(String, String)], dir: &Path) -> Self {
        Self {
            name: name.to_owned(),
            program,
            args: args.iter().map(|&arg| arg.to_owned()).collect(),
            env: env.to_vec(),
            log: dir.join(format!("{name}.log")),
            child: None,
            exits: 0,
        }
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut command = Command::new(&self.program);
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("GUARANTOR_")) {
            command.env_remove(name);
        }
        let child = command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, as a crash would; waits until the process is gone.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.ok();
        }
    }

    /// Restarts the process if it exited on its own (as systemd or compose would); true if it had.
    pub fn supervise(&mut self) -> anyhow::Result<bool> {
        let exited = match &mut self.child {
            Some(child) => child.try_wait()?.is_some(),
            None => false,
        };
        if exited {
            self.exits += 1;
            self.start()?;
        }
        Ok(exited)
    }
}

/// The Postgres binaries of the newest installed major version (Debian's layout).
fn postgres_bin(name: &str) -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL's server binaries (Debian package postgresql) are needed")?
        .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin").join(name)))
        .filter(|path| path.exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .with_context(|| format!("no {name} under /usr/lib/postgresql"))
}

/// Runs as the `postgres` user when this process is root (Postgres refuses to run as root).
fn as_postgres(program: PathBuf, args: &[&str]) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let root = std::fs::metadata("/proc/self")?.uid() == 0;
    let mut all: Vec<String> = args.iter().map(|&arg| arg.to_owned()).collect();
    if root {
        all.insert(0, program.to_string_lossy().into_owned());
        all.splice(0..0, ["-u", "postgres", "--"].map(str::to_owned));
        Ok((PathBuf::from("runuser"), all))
    } else {
        Ok((program, all))
    }
}

/// A Postgres cluster of the run's own.
pub struct Postgres {
    pub proc: Proc,
    data: PathBuf,
    pub port: u16,
}

impl Postgres {
    pub async fn init(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let data = dir.join("pg");
        std::fs::create_dir_all(&data)?;
        if std::fs::metadata("/proc/self")?.uid() == 0 {
            let owned = std::process::Command::new("chown")
                .args(["-R", "postgres:", &dir.to_string_lossy()])
                .status()?;
            anyhow::ensure!(owned.success(), "cannot give {} to the postgres user", dir.display());
        }
        let data_text = data.to_string_lossy().into_owned();
        let (program, args) = as_postgres(
            postgres_bin("initdb")?,
            &["-D", &data_text, "-A", "trust", "-U", "postgres", "--no-sync"],
        )?;
        let initialised = Command::new(program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(initialised.success(), "initdb failed in {}", data.display());
        let port_text = port.to_string();
        let (program, args) = as_postgres(
            postgres_bin("postgres")?,
            &[
                "-D",
                &data_text,
                "-p",
                &port_text,
                "-k",
                &data_text,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=200",
            ],
        )?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::new("postgres", program, &args, &[], dir);
        Ok(Self { proc, data, port })
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the postmaster, retrying while a killed one's backends are still exiting, and waits
    /// until it accepts connections (it listens already while it starts up or recovers, and refuses
    /// them then).
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = self.url("postgres");
        loop {
            self.proc.start()?;
            let accepting = async || match sqlx::PgConnection::connect(&url).await {
                Ok(connection) => connection.close().await.is_ok(),
                Err(_) => false,
            };
            if wait_for("Postgres", Duration::from_secs(30), accepting).await.is_ok() {
                return Ok(());
            }
            self.proc.kill9().await;
            anyhow::ensure!(
                Instant::now() < deadline,
                "Postgres did not restart; see {}",
                self.proc.log.display()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// SIGKILL to the postmaster itself (whose pid `postmaster.pid` holds, also when it runs under
    /// runuser): no shutdown checkpoint, crash recovery on the next start.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        let pid = std::fs::read_to_string(self.data.join("postmaster.pid"))?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let killed = Command::new("kill").args(["-9", &pid]).status().await?;
        anyhow::ensure!(killed.success(), "kill -9 {pid} failed");
        self.proc.kill9().await;
        Ok(())
    }
}

/// Waits until `url` answers 200.
pub async fn wait_ready(http: &reqwest::Client, url: &str, within: Duration) -> anyhow::Result<()> {
    wait_for(url, within, async || {
        http.get(url)
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
    })
    .await
}
