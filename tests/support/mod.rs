//! Runs the real `guarantor` binary against a Postgres database and a nats-server of the test's own.

#![allow(dead_code, reason = "each test binary uses a different part of the support module")]

pub mod schema;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use guarantor_config::ExposeSecret;
use guarantor_testkit::{free_port, TestDb, TestNats};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
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

/// Runs a command to its end; answers whether it succeeded, its stdout and its stderr.
pub async fn output(command: &mut Command) -> (bool, String, String) {
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `guarantor up` running in the background, with its own database, NATS and data directory.
pub struct System {
    pub base: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub nats: TestNats,
    /// Set by `stop_nats`: the stopped server's store, kept so nothing else reuses the directory.
    stopped_nats: bool,
    /// Extra variables of this system, given to every command run against it.
    vars: Vec<(String, String)>,
    pub data_dir: tempfile::TempDir,
    pub child: Child,
    /// The base URL of the devnet `up` runs.
    pub devnet: String,
}

impl System {
    pub async fn up() -> Self {
        Self::start(&["up"], &[]).await
    }

    /// Runs `guarantor <args>` (a whole `up`, or one part such as `ingress`) with extra variables.
    pub async fn start(args: &[&str], vars: &[(&str, &str)]) -> Self {
        Self::start_on(TestNats::start().await, args, vars).await
    }

    /// Like `start`, on the given nats-server(s) (a cluster, say).
    pub async fn start_on(nats: TestNats, args: &[&str], vars: &[(&str, &str)]) -> Self {
        let db = TestDb::new().await;
        let data_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let devnet = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(data_dir.path().join("guarantor.log")).unwrap();
        let child = command(db.url().expose_secret(), &nats.url_string(), data_dir.path())
            .env("GUARANTOR_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("GUARANTOR_DEVNET_ADDR", &devnet)
            .envs(vars.iter().copied())
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let system = Self {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            db,
            nats,
            stopped_nats: false,
            vars: vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            data_dir,
            child,
            devnet: format!("http://{devnet}"),
        };
        system.wait_until_healthy().await;
        if args.first() != Some(&"up") {
            system.create_dev_keys().await;
        }
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
        let log = std::fs::read_to_string(self.data_dir.path().join("guarantor.log")).unwrap_or_default();
        panic!("guarantor up did not become healthy within 30 s; its log:\n{log}");
    }

    /// Kills this system's nats-server (the system keeps running without it).
    pub fn stop_nats(&mut self) {
        self.nats.kill();
        self.stopped_nats = true;
    }

    /// Starts another ledger replica (`guarantor ledger`) sharing the durable consumer; it is killed
    /// when the returned child is dropped.
    pub fn extra_ledger(&self) -> Child {
        self.extra("ledger")
    }

    /// Starts another process of one part (`guarantor <part>`) against this system's servers and its
    /// devnet, logging to `<part>.log` in the data directory; it is killed when the child is dropped.
    pub fn extra(&self, part: &str) -> Child {
        self.extra_with(&[part], &[])
    }

    /// `guarantor <args>` like `extra`, with extra variables.
    pub fn extra_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.path().join(format!("{}.log", args[0])))
            .unwrap();
        // Services log to stdout; errors before logging starts go to stderr.
        self.command()
            .env("GUARANTOR_TRON_NODE_URL", &self.devnet)
            .envs(vars.iter().copied())
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// A devnet control call (`/devnet/...`); answers its JSON.
    pub async fn devnet_control(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.devnet))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.unwrap()
    }

    /// Produces `count` devnet blocks now; answers the new head.
    pub async fn blocks(&self, count: u64) -> u64 {
        let answer = self.devnet_control("/devnet/blocks", json!({ "count": count })).await;
        answer["head"].as_u64().unwrap()
    }

    /// Waits until the scanner's block follower has read every block up to `block`.
    pub async fn scanned_past(&self, block: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let next: Option<i64> = sqlx::query_scalar("SELECT next_block FROM scanner_cursors")
                .fetch_optional(&self.db.pool)
                .await
                .unwrap();
            if next.is_some_and(|next| next > i64::try_from(block).unwrap()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the scanner is still before block {block}: {next:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `guarantor <args>` against this system (an operator command); answers whether it
    /// succeeded, its stdout and its stderr.
    pub async fn cli(&self, args: &[&str]) -> (bool, String, String) {
        output(self.command().env("GUARANTOR_TRON_NODE_URL", &self.devnet).args(args)).await
    }

    /// `guarantor reconcile` (with the chain check, against the devnet); whether it passed, and its
    /// report.
    pub async fn reconcile(&self) -> (bool, String) {
        let (ok, stdout, stderr) = self.cli(&["reconcile"]).await;
        (ok, format!("{stdout}{stderr}"))
    }

    /// Waits until the newest sweep reaches `status`; answers its (id, status, fee paid in sun).
    pub async fn sweep_until(&self, status: &str) -> (i64, String, i64) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let row: Option<(i64, String, i64)> =
                sqlx::query_as("SELECT id, status, fee_paid_sun FROM sweeps ORDER BY id DESC LIMIT 1")
                    .fetch_optional(&self.db.pool)
                    .await
                    .unwrap();
            if let Some(row) = row.filter(|row| row.1 == status) {
                return row;
            }
            assert!(Instant::now() < deadline, "no sweep reached {status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The Prometheus text `up` serves on `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until `/metrics` contains every one of `lines`; answers the text.
    pub async fn metrics_until(&self, lines: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = self.metrics().await;
            if lines.iter().all(|line| text.contains(line)) {
                return text;
            }
            assert!(Instant::now() < deadline, "/metrics never showed {lines:?}:\n{text}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A `guarantor` command against this system's servers (for the operator commands).
    pub fn command(&self) -> Command {
        let mut command = command(
            self.db.url().expose_secret(),
            &self.nats.url_string(),
            self.data_dir.path(),
        );
        command.envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    /// The dev keys `up` printed and kept in its data directory.
    pub fn dev_key(&self, role: &str) -> String {
        let text = std::fs::read_to_string(self.data_dir.path().join("dev-api-keys.json")).unwrap();
        let keys: serde_json::Value = serde_json::from_str(&text).unwrap();
        keys[role].as_str().unwrap().to_owned()
    }

    /// Writes dev keys the way `up` does, for systems started without `up`.
    async fn create_dev_keys(&self) {
        let mut keys = serde_json::Map::new();
        for role in guarantor_domain::Role::ALL {
            let created = guarantor_ingress::api_keys::create(&self.db.pool, "dev", role)
                .await
                .unwrap();
            keys.insert(role.as_str().to_owned(), created.key.expose_secret().into());
        }
        std::fs::write(
            self.data_dir.path().join("dev-api-keys.json"),
            serde_json::to_string(&keys).unwrap(),
        )
        .unwrap();
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

/// A response as the tests look at it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    /// The raw body text (empty for `deny`).
    pub text: String,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts the documented error shape and returns the code.
    pub fn error_code(&self) -> &str {
        let error = &self.body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "not the error shape: {}",
            self.text
        );
        assert!(error["details"].is_object(), "not the error shape: {}", self.text);
        self.code()
    }
}

/// A request builder over the system's HTTP API.
pub struct Call<'a> {
    system: &'a System,
    method: Method,
    /// Another ingress than the system's own (a second replica), if set.
    base: Option<String>,
    path: String,
    key: Option<String>,
    acting_user: Option<i64>,
    idempotency_key: Option<String>,
    body: Option<Value>,
}

impl Call<'_> {
    /// Sends the call to the ingress at `base` instead.
    pub fn at(mut self, base: &str) -> Self {
        self.base = Some(base.to_owned());
        self
    }
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }
    pub fn anonymous(mut self) -> Self {
        self.key = None;
        self
    }
    pub fn acting(mut self, user: i64) -> Self {
        self.acting_user = Some(user);
        self
    }
    pub fn idempotency(mut self, key: &str) -> Self {
        self.idempotency_key = Some(key.to_owned());
        self
    }
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
    pub async fn send(self) -> Answer {
        let mut request = self.system.http.request(
            self.method,
            format!("{}{}", self.base.as_deref().unwrap_or(&self.system.base), self.path),
        );
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(user) = self.acting_user {
            request = request.header("Acting-User", user.to_string());
        }
        if let Some(key) = &self.idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = &self.body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, body, text }
    }
}

impl System {
    /// A call with the dev platform key.
    pub fn call(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            system: self,
            method,
            base: None,
            path: path.to_owned(),
            key: Some(self.dev_key("platform")),
            acting_user: None,
            idempotency_key: None,
            body: None,
        }
    }

    pub fn get(&self, path: &str) -> Call<'_> {
        self.call(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> Call<'_> {
        self.call(Method::POST, path)
    }

    /// Upserts a user and returns its id.
    pub async fn user(&self, external_id: &str) -> i64 {
        let answer = self
            .post("/api/v1/user/")
            .json(json!({ "external_id": external_id, "name": external_id }))
            .send()
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.body["id"].as_i64().unwrap()
    }

    /// Creates a deal and returns its id.
    pub async fn deal(&self, customer: i64, performer: i64, amount: &str) -> i64 {
        let answer = self
            .post("/api/v1/deal/")
            .json(json!({ "title": "a deal", "amount": amount, "customer_id": customer, "performer_id": performer }))
            .send()
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.body["deal_id"].as_i64().unwrap()
    }

    /// Credits (or debits, when negative) a user's available balance with an admin adjustment.
    pub async fn adjust(&self, user: i64, amount: &str) -> Answer {
        self.post("/api/v1/admin/adjustments")
            .key(&self.dev_key("admin"))
            .json(json!({ "user_id": user, "currency": "USDT", "amount": amount, "reason": "test funding" }))
            .send()
            .await
    }

    /// (available, held) of a user in USDT.
    pub async fn balance(&self, user: i64) -> (String, String) {
        let answer = self.get(&format!("/api/v1/user/{user}/balance")).send().await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let row = &answer.body[0];
        (
            row["balance"].as_str().unwrap().to_owned(),
            row["held"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn deal_status(&self, deal: i64) -> String {
        let answer = self.get(&format!("/api/v1/deal/{deal}")).send().await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.body["status"].as_str().unwrap().to_owned()
    }

    /// A deal action as the given party (GET, as the original brief's clients do).
    pub async fn act(&self, deal: i64, action: &str, acting_user: i64) -> Answer {
        self.get(&format!("/api/v1/deal/{deal}/{action}"))
            .acting(acting_user)
            .send()
            .await
    }

    /// An arbiter's decision.
    pub async fn arbitrate(&self, deal: i64, decision: &str) -> Answer {
        self.post(&format!("/api/v1/deal/{deal}/dispute/{decision}"))
            .key(&self.dev_key("arbiter"))
            .send()
            .await
    }

    pub async fn open_dispute(&self, deal: i64, acting_user: i64) -> Answer {
        self.post(&format!("/api/v1/deal/{deal}/dispute/"))
            .acting(acting_user)
            .json(json!({ "title": "not delivered", "description": "nothing arrived" }))
            .send()
            .await
    }

    /// Creates a payment of `amount` for `user`: its id, deposit address and token contract.
    pub async fn create_payment(&self, user: i64, amount: &str) -> (i64, String, String) {
        self.create_payment_at(&self.base, user, amount).await
    }

    /// `create_payment` through the ingress at `base`.
    pub async fn create_payment_at(&self, base: &str, user: i64, amount: &str) -> (i64, String, String) {
        let answer = self
            .post("/api/v1/payment")
            .at(base)
            .json(json!({ "gateway_id": 1, "user_id": user, "amount": amount, "currency": "USDT" }))
            .send()
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let data = &answer.body["gateway_data"];
        (
            answer.body["payment_id"].as_i64().unwrap(),
            data["address"].as_str().unwrap().to_owned(),
            data["token_contract"].as_str().unwrap().to_owned(),
        )
    }

    /// Pays `units` (base units) of `token` to `to` from the devnet's genesis account with tronpy, as
    /// a customer's wallet would; returns tronpy's `{"txid", "block_number", "result"}`.
    pub async fn pay_with_sdk(&self, token: &str, to: &str, units: u64) -> Value {
        let python =
            tokio::task::spawn_blocking(|| guarantor_testkit::tronpy_python(Path::new(env!("CARGO_TARGET_TMPDIR"))))
                .await
                .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk/pay.py");
        let output = Command::new(python)
            .arg(script)
            .args([
                self.devnet.as_str(),
                guarantor_tron_devnet::GENESIS_PRIVATE_KEY,
                token,
                to,
                &units.to_string(),
            ])
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "tronpy failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Reads payment `id` until `done` holds for it (or fails after `within`).
    pub async fn payment_until(&self, id: i64, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let answer = self.get(&format!("/api/v1/payment/{id}")).send().await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
            if done(&answer.body) {
                return answer.body;
            }
            assert!(Instant::now() < deadline, "payment {id} is still {}", answer.body);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn assert_invariants(&self) {
        let violations = guarantor_ledger::reconcile::check(&self.db.pool).await.unwrap();
        assert!(violations.is_empty(), "invariants violated: {violations:?}");
    }

    /// A snapshot of everything the ledger owns, to prove that something changed nothing.
    pub async fn snapshot(&self) -> Value {
        let snapshot: Value = sqlx::query_scalar(
            "SELECT json_build_object(
                'accounts', (SELECT json_agg(a ORDER BY a.id) FROM accounts a),
                'transfers', (SELECT count(*) FROM transfers),
                'deals', (SELECT json_agg(json_build_object('id', d.id, 'status', d.status, 'updated_at', d.updated_at) ORDER BY d.id) FROM deals d),
                'users', (SELECT json_agg(u ORDER BY u.id) FROM users u),
                'disputes', (SELECT json_agg(s ORDER BY s.deal_id) FROM disputes s),
                'payments', (SELECT json_agg(p ORDER BY p.id) FROM payments p),
                'deposits', (SELECT json_agg(d ORDER BY d.id) FROM deposits d),
                'commands', (SELECT count(*) FROM commands),
                'events', (SELECT coalesce(sum(last), 0) FROM event_sequences))",
        )
        .fetch_one(&self.db.pool)
        .await
        .unwrap();
        snapshot
    }
}

impl System {
    /// JetStream on this system's NATS.
    pub async fn jetstream(&self) -> guarantor_messaging::JetStream {
        let client = guarantor_messaging::connect(&self.nats.url(), "e2e-test")
            .await
            .unwrap();
        guarantor_messaging::jetstream(&client)
    }

    /// Waits until the ledger has processed every command and the outbox has published every event.
    pub async fn settle(&self) {
        let js = self.jetstream().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::new();
        while Instant::now() < deadline {
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
                .get_consumer_from_stream(
                    guarantor_ledger::consumer::CONSUMER,
                    guarantor_messaging::COMMAND_STREAM,
                )
                .await
                .unwrap();
            let info = consumer.info().await.unwrap();
            let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
            if info.num_pending == 0 && info.num_ack_pending == 0 && unpublished == 0 {
                return;
            }
            last = format!(
                "pending {}, ack pending {}, redelivered {}, waiting pulls {}, ack wait {:?}, unpublished events {unpublished}",
                info.num_pending, info.num_ack_pending, info.num_redelivered, info.num_waiting, info.config.ack_wait
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let path = self.data_dir.path().join("ledger.log");
        let log = std::fs::read_to_string(&path).unwrap_or_else(|err| format!("{}: {err}", path.display()));
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "the system did not settle within 20 s ({last}); extra ledgers' log (newest first):\n{}",
            tail.join("\n")
        );
    }

    /// Every event in `GUARANTOR_EVT` so far, in stream order, as (subject, envelope).
    pub async fn events(&self) -> Vec<(String, Value)> {
        use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
        use futures::StreamExt;
        let js = self.jetstream().await;
        let consumer = js
            .get_stream(guarantor_messaging::EVENT_STREAM)
            .await
            .unwrap()
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                filter_subject: "guarantor.evt.>".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut events = Vec::new();
        while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(2), messages.next()).await {
            let message = message.unwrap();
            events.push((
                message.subject.to_string(),
                serde_json::from_slice(&message.payload).unwrap(),
            ));
        }
        events
    }
}

/// The AsyncAPI document of the repository.
pub fn asyncapi() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../asyncapi.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Checks an event against its message's schema in the AsyncAPI document.
pub fn event_violations(document: &Value, event: &Value) -> Vec<String> {
    let kind = event["type"].as_str().unwrap_or_default();
    match document["components"]["messages"].get(kind) {
        Some(message) => schema::violations(document, &message["payload"], event),
        None => vec![format!("asyncapi.json documents no message {kind:?}")],
    }
}

/// Checks that each aggregate's events carry sequences 1, 2, 3, ... in stream order.
pub fn sequence_violations(events: &[(String, Value)]) -> Vec<String> {
    let mut last: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut found = Vec::new();
    for (subject, event) in events {
        let aggregate: Vec<&str> = subject.split('.').collect();
        let key = format!("{}.{}", aggregate[2], aggregate[3]);
        let sequence = event["sequence"].as_i64().unwrap_or(-1);
        let expected = last.get(&key).copied().unwrap_or(0) + 1;
        if sequence != expected {
            found.push(format!(
                "{key}: sequence {sequence} where {expected} was due ({subject})"
            ));
        }
        last.insert(key, sequence);
    }
    found
}
