//! The fault run's load: clients sending keyed requests as a careful platform would — every request
//! carries an `Idempotency-Key` and is retried with the same key while the system is unreachable or
//! answers 503 — and recording what the system acknowledged (200, or 202 resolved later).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Payments each client pays on chain (each is credited, then swept with a top-up and a transfer,
/// which takes the sweeper a few seconds of chain time).
const PAYMENTS_PER_CLIENT: usize = 2;

/// How long one logical request is retried before it counts as unacknowledged.
const GIVE_UP: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    pub platform: String,
    pub admin: String,
    pub http: reqwest::Client,
}

/// Counters shared by the clients.
#[derive(Debug, Default)]
pub struct Counters {
    /// Logical requests sent (each once, however often retried).
    pub sent: AtomicU64,
    /// Answered 200, or 202 and then resolved.
    pub acknowledged: AtomicU64,
    /// Retries after a refused connection, a timeout or a 503.
    pub retries: AtomicU64,
    /// Never acknowledged within the retry budget.
    pub unacknowledged: AtomicU64,
    /// Answered with another status (a bug in this run or in the system).
    pub unexpected: AtomicU64,
}

/// What a client's acknowledged requests should have done.
#[derive(Debug, Default)]
pub struct Expected {
    /// Transfers of acknowledged credits.
    pub credit_transfers: Vec<i64>,
    /// Deals whose close was acknowledged.
    pub closed_deals: Vec<i64>,
    /// Payments paid on chain, with the base units sent.
    pub payments: Vec<(i64, String, u64)>,
}

/// One logical POST with its `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct Keyed {
    path: String,
    key: String,
    acting: Option<i64>,
    body: Option<Value>,
    admin: bool,
}

impl Keyed {
    fn new(path: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            key: key.into(),
            acting: None,
            body: None,
            admin: false,
        }
    }
    fn json(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
    fn acting(mut self, user: i64) -> Self {
        self.acting = Some(user);
        self
    }
    fn admin(mut self) -> Self {
        self.admin = true;
        self
    }
}

impl Api {
    /// One keyed request, retried with the same key until it is acknowledged; the result body (a
    /// 202 is followed to its verdict).
    pub async fn keyed(&self, counters: &Counters, request: Keyed) -> Option<Value> {
        let Keyed {
            path,
            key,
            acting,
            body,
            admin,
        } = request;
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + GIVE_UP;
        while Instant::now() < deadline {
            let mut request = self
                .http
                .request(Method::POST, format!("{}{path}", self.base))
                .bearer_auth(if admin { &self.admin } else { &self.platform })
                .header("Idempotency-Key", &key)
                .timeout(Duration::from_secs(10));
            if let Some(user) = acting {
                request = request.header("Acting-User", user.to_string());
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let answered = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    response.json::<Value>().await.ok().map(|body| (status, body))
                }
                Err(_) => None,
            };
            match answered {
                Some((StatusCode::OK, body)) => {
                    counters.acknowledged.fetch_add(1, Ordering::Relaxed);
                    return Some(body);
                }
                Some((StatusCode::ACCEPTED, body)) => {
                    let id = body["command_id"].as_str().unwrap_or_default().to_owned();
                    if let Some(result) = self.resolve(&id, deadline).await {
                        counters.acknowledged.fetch_add(1, Ordering::Relaxed);
                        return Some(result);
                    }
                    break;
                }
                Some((status, _)) if status != StatusCode::SERVICE_UNAVAILABLE && !status.is_server_error() => {
                    counters.unexpected.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                _ => {
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        counters.unacknowledged.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Follows a 202 to its verdict: the body of a `done` command.
    async fn resolve(&self, id: &str, deadline: Instant) -> Option<Value> {
        while Instant::now() < deadline {
            let answered = self
                .http
                .get(format!("{}/api/v1/commands/{id}", self.base))
                .bearer_auth(&self.platform)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if let Ok(response) = answered {
                if let Ok(body) = response.json::<Value>().await {
                    match body["status"].as_str() {
                        Some("done") => return Some(body["body"].clone()),
                        Some("failed") => return None,
                        _ => {}
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }
}

/// One client: a customer (credited up front) and a performer of its own, looping over a credit, a
/// deal lifecycle (create, confirm, close) and, every fourth round, a payment paid on the devnet (up
/// to `PAYMENTS_PER_CLIENT`),
/// until `stop`.
pub async fn client(
    api: Api,
    devnet: String,
    index: usize,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> Expected {
    let mut expected = Expected::default();
    let user = async |name: String| -> Option<i64> {
        let body = json!({ "external_id": name, "name": name });
        let answered = api
            .keyed(&counters, Keyed::new("/api/v1/user", format!("user-{name}")).json(body))
            .await?;
        answered["id"].as_i64()
    };
    let (Some(customer), Some(performer)) = (user(format!("c{index}")).await, user(format!("p{index}")).await) else {
        return expected;
    };
    let funding = json!({ "user_id": customer, "currency": "USDT", "amount": "100000", "reason": "chaos funding" });
    let Some(funded) = api
        .keyed(
            &counters,
            Keyed::new("/api/v1/admin/adjustments", format!("fund-{index}"))
                .json(funding)
                .admin(),
        )
        .await
    else {
        return expected;
    };
    expected.credit_transfers.extend(funded["transfer_id"].as_i64());
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let key = |what: &str| format!("{what}-{index}-{round}");
        let credit = json!({ "user_id": customer, "currency": "USDT", "amount": "1", "reason": "chaos" });
        if let Some(done) = api
            .keyed(
                &counters,
                Keyed::new("/api/v1/admin/adjustments", key("credit"))
                    .json(credit)
                    .admin(),
            )
            .await
        {
            expected.credit_transfers.extend(done["transfer_id"].as_i64());
        }
        let deal = json!({ "title": "chaos", "amount": "1", "customer_id": customer, "performer_id": performer });
        let created = api
            .keyed(&counters, Keyed::new("/api/v1/deal", key("deal")).json(deal))
            .await;
        if let Some(deal) = created.and_then(|created| created["deal_id"].as_i64()) {
            let confirm = format!("/api/v1/deal/{deal}/confirm");
            let close = format!("/api/v1/deal/{deal}/close");
            let confirmed = api
                .keyed(&counters, Keyed::new(confirm, key("confirm")).acting(performer))
                .await;
            if confirmed.is_some()
                && api
                    .keyed(&counters, Keyed::new(close, key("close")).acting(customer))
                    .await
                    .is_some()
            {
                expected.closed_deals.push(deal);
            }
        }
        if round % 4 == 1 && expected.payments.len() < PAYMENTS_PER_CLIENT {
            let payment = json!({ "gateway_id": 1, "user_id": customer, "amount": "2" });
            if let Some(payment) = api
                .keyed(&counters, Keyed::new("/api/v1/payment", key("payment")).json(payment))
                .await
            {
                let (Some(id), Some(address)) = (
                    payment["payment_id"].as_i64(),
                    payment["gateway_data"]["address"].as_str(),
                ) else {
                    continue;
                };
                if pay(&api.http, &devnet, address).await {
                    expected.payments.push((id, address.to_owned(), 2_000_000));
                }
            }
        }
    }
    expected
}

/// 2 USDT from the devnet's genesis to `address` (a real signed transfer). Sent once: a retry after
/// a lost answer could pay twice, and the devnet is not among the faults.
async fn pay(http: &reqwest::Client, devnet: &str, address: &str) -> bool {
    http.post(format!("{devnet}/devnet/faucet"))
        .json(&json!({ "address": address, "usdt": "2" }))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
}
