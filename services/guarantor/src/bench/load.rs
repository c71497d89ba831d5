//! The load generator: clients driving the deal lifecycle over HTTP as a platform would — create,
//! confirm with the customer's balance, close; every tenth deal disputed and resolved by an arbiter —
//! recording each request's latency by route.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};

/// Where the load goes and with which keys.
#[derive(Debug, Clone)]
pub struct Target {
    pub base: String,
    pub platform: String,
    pub arbiter: String,
    pub admin: String,
    pub http: reqwest::Client,
}

/// Latencies of one route, in microseconds.
#[derive(Debug, Default, Clone)]
struct Samples(Vec<u32>);

#[derive(Debug, Clone, Serialize)]
pub struct RouteReport {
    pub requests: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub clients: usize,
    pub seconds: f64,
    pub commands: usize,
    pub commands_per_sec: f64,
    pub lifecycles: usize,
    pub lifecycles_per_sec: f64,
    pub errors: BTreeMap<String, usize>,
    pub routes: BTreeMap<String, RouteReport>,
    /// CPU the load generator itself used, in percent of one core.
    pub generator_cpu_percent: f64,
    /// CPU the whole machine spent (every process: services, Postgres, nats-server, the load generator)
    /// per command, in microseconds: steadier than commands/s where the machine's speed varies.
    pub machine_cpu_us_per_command: f64,
}

#[allow(
    clippy::float_arithmetic,
    reason = "percentiles and rates of a benchmark report, never money"
)]
fn millis(micros: u32) -> f64 {
    f64::from(micros) / 1000.0
}

impl Samples {
    fn report(mut self) -> RouteReport {
        self.0.sort_unstable();
        let at = |q: usize| -> f64 {
            if self.0.is_empty() {
                return 0.0;
            }
            let index = (self.0.len() * q / 100).min(self.0.len() - 1);
            millis(self.0[index])
        };
        RouteReport {
            requests: self.0.len(),
            p50_ms: at(50),
            p95_ms: at(95),
            p99_ms: at(99),
        }
    }
}

/// What one client recorded.
#[derive(Debug, Default)]
struct Tally {
    routes: BTreeMap<&'static str, Samples>,
    errors: BTreeMap<String, usize>,
    commands: usize,
    lifecycles: usize,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (route, samples) in other.routes {
            self.routes.entry(route).or_default().0.extend(samples.0);
        }
        for (error, count) in other.errors {
            *self.errors.entry(error).or_default() += count;
        }
        self.commands += other.commands;
        self.lifecycles += other.lifecycles;
    }
}

impl Target {
    async fn post(
        &self,
        key: &str,
        path: &str,
        acting_user: Option<i64>,
        body: Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .http
            .post(format!("{}/api/v1{path}", self.base))
            .bearer_auth(key)
            .json(&body);
        if let Some(user) = acting_user {
            request = request.header("Acting-User", user.to_string());
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A user with a large balance to spend, and a counterpart.
    pub async fn pair(&self, label: &str) -> anyhow::Result<(i64, i64)> {
        let mut ids = Vec::new();
        for role in ["customer", "performer"] {
            let external = format!("bench-{label}-{role}");
            let (status, body) = self
                .post(
                    &self.platform,
                    "/user/",
                    None,
                    json!({ "external_id": external, "name": external }),
                )
                .await?;
            anyhow::ensure!(
                status == StatusCode::OK,
                "creating a bench user answered {status}: {body}"
            );
            ids.push(body["id"].as_i64().context("a user without an id")?);
        }
        let (status, body) = self
            .post(
                &self.admin,
                "/admin/adjustments",
                None,
                json!({ "user_id": ids[0], "currency": "USDT", "amount": "100000000", "reason": "bench" }),
            )
            .await?;
        anyhow::ensure!(
            status == StatusCode::OK,
            "crediting a bench user answered {status}: {body}"
        );
        Ok((ids[0], ids[1]))
    }

    /// Creates an open deal (for the memory measurement); returns whether it was created.
    pub async fn open_deal(&self, customer: i64, performer: i64) -> anyhow::Result<bool> {
        let (status, _) = self
            .post(
                &self.platform,
                "/deal/",
                None,
                json!({ "title": "open", "amount": "1", "customer_id": customer, "performer_id": performer }),
            )
            .await?;
        Ok(status == StatusCode::OK)
    }
}

async fn timed(
    tally: &mut Tally,
    route: &'static str,
    call: impl std::future::Future<Output = anyhow::Result<(StatusCode, Value)>>,
) -> Option<Value> {
    let started = Instant::now();
    let outcome = call.await;
    let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
    tally.commands += 1;
    match outcome {
        Ok((StatusCode::OK, body)) => {
            tally.routes.entry(route).or_default().0.push(micros);
            Some(body)
        }
        Ok((status, _)) => {
            *tally.errors.entry(format!("{route} {status}")).or_default() += 1;
            None
        }
        Err(err) => {
            *tally.errors.entry(format!("{route} {err}")).or_default() += 1;
            None
        }
    }
}

/// One deal from creation to its end.
async fn lifecycle(target: &Target, tally: &mut Tally, customer: i64, performer: i64, n: usize) {
    let created = timed(
        tally,
        "create",
        target.post(
            &target.platform,
            "/deal/",
            None,
            json!({ "title": "bench", "amount": "1", "customer_id": customer, "performer_id": performer }),
        ),
    )
    .await;
    let Some(id) = created.and_then(|deal| deal["deal_id"].as_i64()) else {
        return;
    };
    let path = format!("/deal/{id}");
    if timed(
        tally,
        "confirm",
        target.post(&target.platform, &format!("{path}/confirm"), Some(performer), json!({})),
    )
    .await
    .is_none()
    {
        return;
    }
    let ended = if n.is_multiple_of(10) {
        let disputed = timed(
            tally,
            "dispute",
            target.post(
                &target.platform,
                &format!("{path}/dispute/"),
                Some(customer),
                json!({ "title": "late delivery" }),
            ),
        )
        .await;
        let side = if n.is_multiple_of(20) {
            "close_customer"
        } else {
            "close_performer"
        };
        match disputed {
            Some(_) => {
                timed(
                    tally,
                    "resolve",
                    target.post(&target.arbiter, &format!("{path}/dispute/{side}"), None, json!({})),
                )
                .await
            }
            None => None,
        }
    } else {
        timed(
            tally,
            "close",
            target.post(&target.platform, &format!("{path}/close"), Some(customer), json!({})),
        )
        .await
    };
    if ended.is_some() {
        tally.lifecycles += 1;
    }
}

/// This process's CPU time so far (user + system), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) start after the last ')'.
            let rest = stat.rsplit_once(')')?.1.to_owned();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    from_ticks(ticks)
}

/// Linux reports CPU time in `/proc` in clock ticks of 1/100 s.
fn from_ticks(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 10)
}

/// CPU time the whole machine spent so far: the `cpu` line of `/proc/stat` without idle, I/O wait
/// and time stolen by the hypervisor.
fn machine_cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().next()?;
            let fields: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            // user, nice, system, idle, iowait, irq, softirq, steal
            Some(fields.get(..7)?.iter().sum::<u64>() - fields[3] - fields[4])
        })
        .unwrap_or(0);
    from_ticks(ticks)
}

/// Runs `clients` clients, each with its own pair of users, for `duration`.
#[allow(clippy::float_arithmetic, reason = "rates of a benchmark report, never money")]
pub async fn phase(target: &Target, pairs: &[(i64, i64)], clients: usize, duration: Duration) -> PhaseReport {
    let target = Arc::new(target.clone());
    let cpu_before = cpu_time();
    let machine_before = machine_cpu_time();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let (customer, performer) = pairs[client % pairs.len()];
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut n = client;
            while Instant::now() < deadline {
                lifecycle(&target, &mut tally, customer, performer, n).await;
                n += clients;
            }
            tally
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        if let Ok(tally) = task.await {
            total.merge(tally);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = (cpu_time().saturating_sub(cpu_before)).as_secs_f64();
    let machine_us = machine_cpu_time().saturating_sub(machine_before).as_secs_f64() * 1e6;
    PhaseReport {
        clients,
        seconds,
        commands: total.commands,
        commands_per_sec: total.commands as f64 / seconds,
        lifecycles: total.lifecycles,
        lifecycles_per_sec: total.lifecycles as f64 / seconds,
        errors: total.errors,
        routes: total
            .routes
            .into_iter()
            .map(|(route, samples)| (route.to_owned(), samples.report()))
            .collect(),
        generator_cpu_percent: 100.0 * cpu / seconds,
        machine_cpu_us_per_command: machine_us / total.commands.max(1) as f64,
    }
}
