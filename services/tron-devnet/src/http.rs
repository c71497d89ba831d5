//! The devnet's HTTP API: java-tron's `/wallet/*` and `/walletsolidity/*`, TronGrid's
//! `/v1/accounts/{address}/transactions/trc20`, and the `/devnet/*` control endpoints. Every java-tron
//! endpoint answers GET (query string) and POST (JSON body) like java-tron does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use guarantor_tron::proto::Transaction;
use guarantor_tron::{abi, tx, TronAddress};
use prost::Message;
use serde_json::{json, Map, Value};
use sha3::{Digest, Keccak256};

use crate::chain::{self, Chain, Refused, SUN_PER_TRX};
use crate::json;
use crate::store::{Change, Store};

/// Node faults injected by tests through `/devnet/faults`. Each rate is the share of node requests
/// (not `/devnet/*`) that fail that way.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// 503 with a plain-text body.
    pub error_rate: f64,
    pub latency_ms: u64,
    /// More requests a second are answered 429.
    pub rate_limit_rps: u32,
    /// HTTP 200 with java-tron's `{"Error": ...}`.
    pub java_error_rate: f64,
    /// 503 for broadcasts only (`broadcasttransaction`, `broadcasthex`).
    pub broadcast_error_rate: f64,
    /// The body cut in the middle (truncated JSON).
    pub truncate_rate: f64,
    /// `{}` for a transaction the node knows (`gettransactioninfobyid`, `gettransactionbyid`).
    pub empty_transaction_rate: f64,
    /// Every request answered 403 (a suspended API key) until then.
    pub suspended_until: Option<Instant>,
    window: Option<(Instant, u32)>,
}

#[derive(Clone, Debug)]
pub struct Devnet {
    pub chain: Arc<Mutex<Chain>>,
    pub faults: Arc<Mutex<Faults>>,
    /// Where the chain's changes are logged; none for a devnet in memory only.
    pub store: Option<Arc<Mutex<Store>>>,
    pub block_interval_ms: u64,
}

impl Devnet {
    fn chain(&self) -> std::sync::MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or_default()
    }

    /// Produces `count` blocks now, each logged in the state store.
    pub fn produce(&self, count: u32) -> i64 {
        let mut chain = self.chain();
        for _ in 0..count {
            let pending: Vec<String> = chain
                .pending
                .iter()
                .filter_map(|txid| chain.txs.get(txid).map(|record| record.bytes.clone()))
                .collect();
            let now_ms = Self::now_ms();
            chain.produce_block(now_ms);
            let id = chain.head().id.clone();
            self.record(&mut chain, |seq| Change::Block {
                seq,
                now_ms,
                pending,
                id,
            });
        }
        chain.head().number
    }

    /// Counts a change applied to `chain` and appends it to the state log.
    fn record(&self, chain: &mut Chain, change: impl FnOnce(u64) -> Change) {
        chain.changes += 1;
        let change = change(chain.changes);
        let Some(store) = &self.store else { return };
        let mut store = store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(err) = store.record(chain, &change) {
            tracing::error!(error = format!("{err:#}"), "devnet change not saved");
        }
    }

    /// Writes a snapshot of the chain (at shutdown).
    pub fn save(&self) {
        let Some(store) = &self.store else { return };
        let chain = self.chain();
        let mut store = store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(err) = store.snapshot(&chain) {
            tracing::error!(error = format!("{err:#}"), "devnet state not saved");
        }
    }
}

/// Request parameters: the JSON body merged over the query string.
#[derive(Debug)]
pub struct Params(pub Value);

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let query = request.uri().query().unwrap_or_default().to_owned();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let mut params: Map<String, Value> = serde_urlencoded_pairs(&query);
        if !body.is_empty() {
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(map)) => params.extend(map),
                Ok(_) | Err(_) => return Err(java_error("org.tron.core.exception.BadRequest : invalid JSON")),
            }
        }
        Ok(Params(Value::Object(params)))
    }
}

/// The query string's pairs, percent-decoded (`+` is a space), numbers and booleans typed.
fn serde_urlencoded_pairs(query: &str) -> Map<String, Value> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| {
            let value = match v.as_ref() {
                "true" => json!(true),
                "false" => json!(false),
                text => text.parse::<i64>().map(Value::from).unwrap_or_else(|_| json!(text)),
            };
            (k.into_owned(), value)
        })
        .collect()
}

/// java-tron's answer to a request it cannot serve.
fn java_error(message: &str) -> Response {
    Json(json!({ "Error": message })).into_response()
}

/// A request parameter that is missing or malformed.
#[derive(Debug)]
enum Problem {
    /// Answered like java-tron: 200 with `{"Error": ...}`.
    Java(String),
    /// A control endpoint's 400.
    BadRequest(String),
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        match self {
            Problem::Java(message) => java_error(&message),
            Problem::BadRequest(message) => bad_request(&message),
        }
    }
}

fn visible(params: &Value) -> bool {
    params["visible"].as_bool().unwrap_or(false)
}

fn address_param(params: &Value, key: &str) -> Result<TronAddress, Problem> {
    params[key]
        .as_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| Problem::Java(format!("class java.lang.IllegalArgumentException : invalid {key}")))
}

fn both<H, T>(handler: H) -> MethodRouter<Devnet>
where
    H: axum::handler::Handler<T, Devnet> + Clone,
    T: 'static,
{
    get(handler.clone()).post(handler)
}

pub fn router(devnet: Devnet) -> Router {
    Router::new()
        .route("/wallet/getnowblock", both(now_block))
        .route("/walletsolidity/getnowblock", both(solid_now_block))
        .route("/wallet/getblockbynum", both(block_by_num))
        .route("/walletsolidity/getblockbynum", both(solid_block_by_num))
        .route("/wallet/getblock", both(get_block))
        .route("/walletsolidity/getblock", both(get_block))
        .route("/wallet/getblockbyid", both(block_by_id))
        .route("/wallet/getnodeinfo", both(node_info))
        .route("/wallet/getaccount", both(account))
        .route("/walletsolidity/getaccount", both(solid_account))
        .route("/wallet/getaccountresource", both(account_resource))
        .route("/wallet/getaccountnet", both(account_resource))
        .route("/wallet/getchainparameters", both(chain_parameters))
        .route("/wallet/triggerconstantcontract", both(constant_call))
        .route("/walletsolidity/triggerconstantcontract", both(solid_constant_call))
        .route("/wallet/estimateenergy", both(estimate_energy))
        .route("/wallet/triggersmartcontract", both(trigger_smart_contract))
        .route("/wallet/createtransaction", both(create_transaction))
        .route("/wallet/broadcasttransaction", post(broadcast_json))
        .route("/wallet/broadcasthex", post(broadcast_hex))
        .route("/wallet/getsignweight", post(sign_weight))
        .route("/wallet/gettransactionbyid", both(transaction_by_id))
        .route("/walletsolidity/gettransactionbyid", both(solid_transaction_by_id))
        .route("/wallet/gettransactioninfobyid", both(transaction_info))
        .route("/walletsolidity/gettransactioninfobyid", both(solid_transaction_info))
        .route("/wallet/gettransactioninfobyblocknum", both(infos_by_block))
        .route(
            "/walletsolidity/gettransactioninfobyblocknum",
            both(solid_infos_by_block),
        )
        .route("/wallet/getcontract", both(contract))
        .route("/wallet/getcontractinfo", both(contract_info))
        .route("/v1/accounts/{address}/transactions/trc20", get(trc20_transfers))
        .layer(from_fn_with_state(devnet.clone(), inject_faults))
        .route("/devnet/faucet", post(faucet))
        .route("/devnet/blocks", post(produce_blocks))
        .route("/devnet/info", get(info))
        .route("/devnet/reorg", post(reorg))
        .route("/devnet/faults", post(set_faults))
        .with_state(devnet)
}

fn chance(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}

async fn inject_faults(State(devnet): State<Devnet>, request: Request, next: Next) -> Response {
    let (faults, limited) = {
        let mut faults = devnet.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let limited = faults.rate_limit_rps > 0 && {
            let now = Instant::now();
            let (started, count) = faults.window.get_or_insert((now, 0));
            if now.duration_since(*started) >= Duration::from_secs(1) {
                *started = now;
                *count = 0;
            }
            *count += 1;
            *count > faults.rate_limit_rps
        };
        (faults.clone(), limited)
    };
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.suspended_until.is_some_and(|until| Instant::now() < until) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({ "Error": "The key exceeds the frequency limit(15), and the query server is suspended for 30s" })),
        )
            .into_response();
    }
    if limited {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(json!({ "Error": "rate limit exceeded" })),
        )
            .into_response();
    }
    if chance(faults.error_rate) {
        return (StatusCode::SERVICE_UNAVAILABLE, "injected fault").into_response();
    }
    if chance(faults.java_error_rate) {
        return java_error("org.tron.core.exception.TronException : SERVER_BUSY");
    }
    let path = request.uri().path().to_owned();
    if path.starts_with("/wallet/broadcast") && chance(faults.broadcast_error_rate) {
        return (StatusCode::SERVICE_UNAVAILABLE, "injected broadcast fault").into_response();
    }
    if (path.ends_with("/gettransactioninfobyid") || path.ends_with("/gettransactionbyid"))
        && chance(faults.empty_transaction_rate)
    {
        return Json(json!({})).into_response();
    }
    let response = next.run(request).await;
    if chance(faults.truncate_rate) {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        let cut = bytes.slice(..bytes.len() / 2);
        let mut parts = parts;
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        return Response::from_parts(parts, axum::body::Body::from(cut));
    }
    response
}

async fn now_block(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    let chain = devnet.chain();
    Json(json::block_json(&chain, chain.head(), visible(&p)))
}

async fn solid_now_block(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    let chain = devnet.chain();
    Json(json::block_json(&chain, chain.solid_head(), visible(&p)))
}

fn block_at(devnet: &Devnet, number: Option<i64>, solid: bool, visible: bool) -> Json<Value> {
    let chain = devnet.chain();
    match number
        .and_then(|n| chain.block(n))
        .filter(|b| !solid || chain.is_solid(b.number))
    {
        Some(block) => Json(json::block_json(&chain, block, visible)),
        None => Json(json!({})),
    }
}

async fn block_by_num(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    block_at(&devnet, p["num"].as_i64(), false, visible(&p))
}

async fn solid_block_by_num(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    block_at(&devnet, p["num"].as_i64(), true, visible(&p))
}

async fn get_block(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    let number = match &p["id_or_num"] {
        Value::Null => Some(devnet.chain().head().number),
        Value::Number(n) => n.as_i64(),
        Value::String(s) if s.len() == 64 => i64::from_str_radix(&s[..16], 16).ok(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let mut block = block_at(&devnet, number, false, visible(&p)).0;
    if p["detail"].as_bool() != Some(true) {
        block.as_object_mut().map(|b| b.remove("transactions"));
    }
    Json(block)
}

async fn block_by_id(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    let number = p["value"]
        .as_str()
        .filter(|s| s.len() == 64)
        .and_then(|s| i64::from_str_radix(&s[..16], 16).ok());
    block_at(&devnet, number, false, visible(&p))
}

async fn node_info(State(devnet): State<Devnet>) -> Json<Value> {
    let chain = devnet.chain();
    let (head, solid) = (chain.head(), chain.solid_head());
    Json(json!({
        "beginSyncNum": head.number,
        "block": format!("Num:{},ID:{}", head.number, head.id),
        "solidityBlock": format!("Num:{},ID:{}", solid.number, solid.id),
        "currentConnectCount": 0,
        "activeConnectCount": 0,
        "passiveConnectCount": 0,
        "totalFlow": 0,
        "configNodeInfo": { "codeVersion": "guarantor-devnet", "p2pVersion": "devnet" },
    }))
}

fn account_at(devnet: &Devnet, p: &Value, solid: bool) -> Response {
    let address = match address_param(p, "address") {
        Ok(address) => address,
        Err(problem) => return problem.into_response(),
    };
    let chain = devnet.chain();
    let Some(account) = chain.account(&address, solid) else {
        return Json(json!({})).into_response();
    };
    let mut out = json!({
        "address": json::address(address.as_bytes(), visible(p)),
        "create_time": account.create_time,
        "account_resource": {},
        "owner_permission": {
            "permission_name": "owner",
            "threshold": 1,
            "keys": [{ "address": json::address(address.as_bytes(), visible(p)), "weight": 1 }],
        },
    });
    if account.balance != 0 {
        out["balance"] = json!(account.balance);
    }
    if account.free_net_used != 0 {
        out["free_net_usage"] = json!(account.free_net_used);
    }
    let held: Vec<Value> = [&chain.token, &chain.lookalike]
        .into_iter()
        .filter_map(|token| {
            let balance = chain.token_balance(&token.address, &address, solid);
            (balance > 0).then(|| json!({ token.address.to_base58(): balance.to_string() }))
        })
        .collect();
    if !held.is_empty() {
        out["trc20"] = json!(held);
    }
    Json(out).into_response()
}

async fn account(State(devnet): State<Devnet>, Params(p): Params) -> Response {
    account_at(&devnet, &p, false)
}

async fn solid_account(State(devnet): State<Devnet>, Params(p): Params) -> Response {
    account_at(&devnet, &p, true)
}

async fn account_resource(State(devnet): State<Devnet>, Params(p): Params) -> Response {
    let address = match address_param(&p, "address") {
        Ok(address) => address,
        Err(problem) => return problem.into_response(),
    };
    let chain = devnet.chain();
    let Some(account) = chain.accounts.get(&address) else {
        return Json(json!({})).into_response();
    };
    let today = chain.head().timestamp / (24 * 3600 * 1000);
    let used = if account.net_day == today {
        account.free_net_used
    } else {
        0
    };
    let mut out = json!({
        "freeNetLimit": chain::FREE_NET_LIMIT,
        "TotalNetLimit": 43_200_000_000_i64,
        "TotalNetWeight": 84_000_000_000_i64,
        "TotalEnergyLimit": 180_000_000_000_i64,
        "TotalEnergyWeight": 19_000_000_000_i64,
    });
    if used != 0 {
        out["freeNetUsed"] = json!(used);
    }
    Json(out).into_response()
}

async fn chain_parameters() -> Json<Value> {
    let parameters = [
        ("getMaintenanceTimeInterval", 21_600_000),
        ("getAccountUpgradeCost", 9_999_000_000),
        ("getCreateAccountFee", chain::CREATE_ACCOUNT_BANDWIDTH_FEE_SUN),
        ("getTransactionFee", chain::BANDWIDTH_FEE_SUN),
        ("getCreateNewAccountFeeInSystemContract", chain::CREATE_ACCOUNT_FEE_SUN),
        ("getEnergyFee", chain::ENERGY_FEE_SUN),
        ("getFreeNetLimit", chain::FREE_NET_LIMIT),
        ("getTotalEnergyLimit", 180_000_000_000),
        ("getAllowTvmTransferTrc10", 1),
        ("getAllowTvmConstantinople", 1),
    ];
    Json(json!({
        "chainParameter": parameters.iter().map(|(key, value)| json!({ "key": key, "value": value })).collect::<Vec<_>>()
    }))
}

/// The call data of a contract request: `data`, or `function_selector` + `parameter`.
fn call_data(p: &Value) -> Result<Vec<u8>, Problem> {
    if let Some(data) = p["data"].as_str() {
        return hex::decode(data.trim_start_matches("0x")).map_err(|_| Problem::Java("invalid data".into()));
    }
    let selector = p["function_selector"]
        .as_str()
        .ok_or_else(|| Problem::Java("function_selector is required".into()))?;
    let mut data = Keccak256::digest(selector.replace(' ', "").as_bytes())[..4].to_vec();
    let parameter = p["parameter"].as_str().unwrap_or_default();
    data.extend(hex::decode(parameter).map_err(|_| Problem::Java("invalid parameter".into()))?);
    Ok(data)
}

fn word(value: u64) -> String {
    format!("{value:064x}")
}

fn string_result(text: &str) -> String {
    let mut out = word(32);
    out.push_str(&word(text.len() as u64));
    let mut bytes = hex::encode(text.as_bytes());
    while !bytes.len().is_multiple_of(64) {
        bytes.push('0');
    }
    out.push_str(&bytes);
    out
}

fn constant(devnet: &Devnet, p: &Value, solid: bool) -> Response {
    let (owner, contract) = match (address_param(p, "owner_address"), address_param(p, "contract_address")) {
        (Ok(owner), Ok(contract)) => (owner, contract),
        (Err(problem), _) | (_, Err(problem)) => return problem.into_response(),
    };
    let data = match call_data(p) {
        Ok(data) => data,
        Err(problem) => return problem.into_response(),
    };
    let chain = devnet.chain();
    let Some(token) = chain.token_at(&contract) else {
        return Json(json!({ "result": { "code": "CONTRACT_VALIDATE_ERROR", "message": hex::encode("No contract or not a smart contract") } })).into_response();
    };
    let selector: [u8; 4] = data.get(..4).and_then(|s| s.try_into().ok()).unwrap_or_default();
    let (result, energy, outcome) = match selector {
        abi::BALANCE_OF_SELECTOR => match abi::decode_balance_of(&data) {
            Ok(who) => (word(chain.token_balance(&contract, &who, solid)), 2_500, "SUCCESS"),
            Err(_) => (String::new(), 500, "REVERT"),
        },
        abi::TRANSFER_SELECTOR => {
            let (outcome, energy) = chain.simulate_transfer(&contract, &owner, &data);
            (
                if outcome == "SUCCESS" { word(1) } else { String::new() },
                energy,
                outcome,
            )
        }
        abi::DECIMALS_SELECTOR => (word(u64::from(token.decimals)), 300, "SUCCESS"),
        [0x06, 0xfd, 0xde, 0x03] => (string_result(&token.name), 800, "SUCCESS"),
        [0x95, 0xd8, 0x9b, 0x41] => (string_result(&token.symbol), 800, "SUCCESS"),
        [0x18, 0x16, 0x0d, 0xdd] => (word(token.balances.values().sum()), 500, "SUCCESS"),
        _ => (String::new(), 300, "REVERT"),
    };
    // java-tron answers a reverting call as a call that ran: `result.result` true, the message, and
    // the would-be transaction marked FAILED.
    let mut transaction = unsigned(
        tx::contract_call(&header_now(&chain), &owner, &contract, data, 0),
        visible(p),
    );
    let mut out = json!({ "energy_used": energy, "constant_result": [result] });
    if outcome == "SUCCESS" {
        out["result"] = json!({ "result": true });
        transaction["ret"] = json!([{}]);
    } else {
        out["result"] = json!({ "result": true, "message": hex::encode("REVERT opcode executed") });
        transaction["ret"] = json!([{ "ret": "FAILED" }]);
    }
    out["transaction"] = transaction;
    Json(out).into_response()
}

async fn constant_call(State(devnet): State<Devnet>, Params(p): Params) -> Response {
    constant(&devnet, &p, false)
}

async fn solid_constant_call(State(devnet): State<Devnet>, Params(p): Params) -> Response {
    constant(&devnet, &p, true)
}

async fn estimate_energy(State(devnet): State<Devnet>, Params(p): Params) -> Response {
    let (owner, contract, data) = match (
        address_param(&p, "owner_address"),
        address_param(&p, "contract_address"),
        call_data(&p),
    ) {
        (Ok(owner), Ok(contract), Ok(data)) => (owner, contract, data),
        (Err(problem), _, _) | (_, Err(problem), _) | (_, _, Err(problem)) => return problem.into_response(),
    };
    let (outcome, energy) = devnet.chain().simulate_transfer(&contract, &owner, &data);
    if outcome == "SUCCESS" {
        Json(json!({ "result": { "result": true }, "energy_required": energy })).into_response()
    } else {
        Json(json!({ "result": { "code": "CONTRACT_EXE_ERROR", "message": hex::encode("REVERT opcode executed") } }))
            .into_response()
    }
}

fn header_now(chain: &Chain) -> tx::TxHeader {
    let head = chain.head();
    let id: [u8; 32] = hex::decode(&head.id)
        .ok()
        .and_then(|id| id.try_into().ok())
        .unwrap_or_default();
    tx::TxHeader::from_block(head.number, &id, Devnet::now_ms(), 60_000)
}

fn unsigned(raw: guarantor_tron::proto::TransactionRaw, visible: bool) -> Value {
    json::transaction_json(
        &Transaction {
            raw_data: Some(raw),
            signature: Vec::new(),
            ret: Vec::new(),
        },
        None,
        visible,
    )
}

async fn trigger_smart_contract(State(devnet): State<Devnet>, Params(p): Params) -> Response {
    let (owner, contract) = match (
        address_param(&p, "owner_address"),
        address_param(&p, "contract_address"),
    ) {
        (Ok(owner), Ok(contract)) => (owner, contract),
        (Err(problem), _) | (_, Err(problem)) => return problem.into_response(),
    };
    let data = match call_data(&p) {
        Ok(data) => data,
        Err(problem) => return problem.into_response(),
    };
    let chain = devnet.chain();
    if chain.token_at(&contract).is_none() {
        return Json(json!({ "result": { "code": "CONTRACT_VALIDATE_ERROR", "message": hex::encode("No contract or not a smart contract") } })).into_response();
    }
    let mut raw = tx::contract_call(
        &header_now(&chain),
        &owner,
        &contract,
        data,
        p["fee_limit"].as_i64().unwrap_or(0),
    );
    if let Some(call_value) = p["call_value"].as_i64() {
        raw = with_call_value(raw, call_value);
    }
    Json(json!({ "result": { "result": true }, "transaction": unsigned(raw, visible(&p)) })).into_response()
}

fn with_call_value(
    raw: guarantor_tron::proto::TransactionRaw,
    call_value: i64,
) -> guarantor_tron::proto::TransactionRaw {
    use guarantor_tron::proto::TriggerSmartContract;
    let mut raw = raw;
    if let Some(parameter) = raw.contract.first_mut().and_then(|c| c.parameter.as_mut()) {
        if let Ok(mut call) = TriggerSmartContract::decode(parameter.value.as_slice()) {
            call.call_value = call_value;
            parameter.value = call.encode_to_vec();
        }
    }
    raw
}

async fn create_transaction(State(devnet): State<Devnet>, Params(p): Params) -> Response {
    let (owner, to) = match (address_param(&p, "owner_address"), address_param(&p, "to_address")) {
        (Ok(owner), Ok(to)) => (owner, to),
        (Err(problem), _) | (_, Err(problem)) => return problem.into_response(),
    };
    let amount = p["amount"].as_i64().unwrap_or(0);
    let chain = devnet.chain();
    let balance = chain.accounts.get(&owner).map(|a| a.balance);
    let problem = match balance {
        None => Some("Validate TransferContract error, no OwnerAccount."),
        Some(_) if amount <= 0 => Some("Amount must be greater than 0."),
        Some(_) if owner == to => Some("Cannot transfer TRX to yourself."),
        Some(balance) if balance < amount => Some("Validate TransferContract error, balance is not sufficient."),
        Some(_) => None,
    };
    if let Some(problem) = problem {
        return java_error(&format!(
            "class org.tron.core.exception.ContractValidateException : {problem}"
        ));
    }
    Json(unsigned(
        tx::trx_transfer(&header_now(&chain), &owner, &to, amount),
        visible(&p),
    ))
    .into_response()
}

fn broadcast_answer(devnet: &Devnet, transaction: Transaction) -> Json<Value> {
    let raw_bytes = transaction.raw_data.clone().unwrap_or_default().encode_to_vec();
    let txid = hex::encode(tx::txid(&raw_bytes));
    match devnet.chain().broadcast(transaction) {
        Ok(txid) => Json(json!({ "result": true, "txid": txid })),
        Err(Refused { code, message }) => Json(json!({ "code": code, "txid": txid, "message": hex::encode(message) })),
    }
}

async fn broadcast_json(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    match json::transaction_from_json(&p) {
        Some(transaction) => broadcast_answer(&devnet, transaction),
        None => Json(json!({ "code": "OTHER_ERROR", "message": hex::encode("invalid transaction JSON") })),
    }
}

async fn broadcast_hex(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    let decoded = p["transaction"]
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| Transaction::decode(b.as_slice()).ok());
    match decoded {
        Some(transaction) => broadcast_answer(&devnet, transaction),
        None => Json(json!({ "code": "OTHER_ERROR", "message": hex::encode("invalid transaction hex") })),
    }
}

async fn sign_weight(Params(p): Params) -> Response {
    let Some(transaction) = json::transaction_from_json(&p) else {
        return java_error("invalid transaction JSON");
    };
    let raw = transaction.raw_data.clone().unwrap_or_default();
    let owner = match chain::action_of(&raw) {
        Ok(chain::Action::Transfer(t)) => t.owner_address,
        Ok(chain::Action::Trigger(c)) => c.owner_address,
        Err(refused) => return java_error(&refused.message),
    };
    let visible = visible(&p);
    Json(json!({
        "permission": {
            "type": "Owner",
            "permission_name": "owner",
            "threshold": 1,
            "keys": [{ "address": json::address(&owner, visible), "weight": 1 }],
        },
        "current_weight": transaction.signature.len(),
        "result": { "code": if transaction.signature.is_empty() { "NOT_ENOUGH_PERMISSION" } else { "ENOUGH_PERMISSION" } },
        "transaction": { "result": { "result": true }, "transaction": json::transaction_json(&transaction, None, visible) },
    }))
    .into_response()
}

/// The transaction `value` names; on the solidity path only once a solidified block holds it.
fn lookup<'a>(chain: &'a Chain, p: &'a Value, solid: bool) -> Option<(&'a str, &'a chain::TxRecord)> {
    let txid = p["value"].as_str()?;
    chain
        .txs
        .get(txid)
        .filter(|r| !solid || r.block.is_some_and(|b| chain.is_solid(b)))
        .map(|record| (txid, record))
}

fn find_transaction(devnet: &Devnet, p: &Value, solid: bool) -> Json<Value> {
    let chain = devnet.chain();
    Json(lookup(&chain, p, solid).map_or_else(|| json!({}), |(_, record)| json::record_json(record, visible(p))))
}

async fn transaction_by_id(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    find_transaction(&devnet, &p, false)
}

async fn solid_transaction_by_id(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    find_transaction(&devnet, &p, true)
}

fn find_info(devnet: &Devnet, p: &Value, solid: bool) -> Json<Value> {
    let chain = devnet.chain();
    Json(lookup(&chain, p, solid).map_or_else(|| json!({}), |(txid, record)| json::receipt_json(&chain, txid, record)))
}

async fn transaction_info(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    find_info(&devnet, &p, false)
}

async fn solid_transaction_info(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    find_info(&devnet, &p, true)
}

fn infos(devnet: &Devnet, p: &Value, solid: bool) -> Json<Value> {
    let chain = devnet.chain();
    let block = p["num"]
        .as_i64()
        .and_then(|n| chain.block(n))
        .filter(|b| !solid || chain.is_solid(b.number));
    let infos: Vec<Value> = block
        .map(|b| {
            b.txids
                .iter()
                .filter_map(|id| chain.txs.get(id).map(|r| json::receipt_json(&chain, id, r)))
                .collect()
        })
        .unwrap_or_default();
    Json(Value::Array(infos))
}

async fn infos_by_block(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    infos(&devnet, &p, false)
}

async fn solid_infos_by_block(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    infos(&devnet, &p, true)
}

fn trc20_abi() -> Value {
    let input = |name: &str, kind: &str| json!({ "name": name, "type": kind });
    json!({ "entrys": [
        { "constant": true, "name": "name", "outputs": [input("", "string")], "type": "Function", "stateMutability": "View" },
        { "constant": true, "name": "symbol", "outputs": [input("", "string")], "type": "Function", "stateMutability": "View" },
        { "constant": true, "name": "decimals", "outputs": [input("", "uint8")], "type": "Function", "stateMutability": "View" },
        { "constant": true, "name": "totalSupply", "outputs": [input("", "uint256")], "type": "Function", "stateMutability": "View" },
        { "constant": true, "inputs": [input("who", "address")], "name": "balanceOf", "outputs": [input("", "uint256")], "type": "Function", "stateMutability": "View" },
        { "inputs": [input("_to", "address"), input("_value", "uint256")], "name": "transfer", "outputs": [input("", "bool")], "type": "Function", "stateMutability": "Nonpayable" },
        { "anonymous": false, "inputs": [
            { "indexed": true, "name": "from", "type": "address" },
            { "indexed": true, "name": "to", "type": "address" },
            { "name": "value", "type": "uint256" }
          ], "name": "Transfer", "type": "Event" }
    ]})
}

fn smart_contract(contract: &TronAddress, visible: bool) -> Value {
    let genesis = chain::genesis_key().address();
    json!({
        "origin_address": json::address(genesis.as_bytes(), visible),
        "contract_address": json::address(contract.as_bytes(), visible),
        "abi": trc20_abi(),
        "bytecode": "",
        "consume_user_resource_percent": 100,
        "name": "TetherToken",
        "origin_energy_limit": 10_000_000,
        "code_hash": hex::encode(Keccak256::digest(b"guarantor devnet TRC-20")),
    })
}

async fn contract(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    let chain = devnet.chain();
    match p["value"].as_str().and_then(|v| v.parse::<TronAddress>().ok()) {
        Some(address) if chain.token_at(&address).is_some() => Json(smart_contract(&address, visible(&p))),
        _ => Json(json!({})),
    }
}

async fn contract_info(State(devnet): State<Devnet>, Params(p): Params) -> Json<Value> {
    let chain = devnet.chain();
    match p["value"].as_str().and_then(|v| v.parse::<TronAddress>().ok()) {
        Some(address) if chain.token_at(&address).is_some() => Json(json!({
            "runtimecode": "",
            "smart_contract": smart_contract(&address, visible(&p)),
            "contract_state": { "energy_usage": 0, "energy_factor": 0, "update_cycle": 0 },
        })),
        _ => Json(json!({})),
    }
}

/// TronGrid's `/v1/accounts/{address}/transactions/trc20`: the address's token transfers, newest
/// first, from the address index, a page at a time (`meta.fingerprint` names the next page).
async fn trc20_transfers(
    State(devnet): State<Devnet>,
    Path(address): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let Ok(address) = address.parse::<TronAddress>() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "success": false, "error": "invalid address" })),
        )
            .into_response();
    };
    let flag = |key: &str| query.get(key).is_some_and(|v| v == "true");
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 200);
    let min_timestamp = query
        .get("min_timestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or(0);
    let skip = match query.get("fingerprint").map(|f| f.parse::<usize>()) {
        None => 0,
        Some(Ok(skip)) => skip,
        Some(Err(_)) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "success": false, "error": "invalid fingerprint" })),
            )
                .into_response()
        }
    };
    let contract = match query.get("contract_address").map(|c| c.parse::<TronAddress>()) {
        None => None,
        Some(Ok(contract)) => Some(contract),
        Some(Err(_)) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "success": false, "error": "invalid contract_address" })),
            )
                .into_response()
        }
    };
    let chain = devnet.chain();
    let matching = chain
        .index
        .get(&address)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .rev()
        .filter(|entry| !flag("only_confirmed") || chain.is_solid(entry.block))
        .filter(|entry| entry.timestamp >= min_timestamp)
        .filter(|entry| contract.is_none_or(|c| c == entry.contract))
        .filter(|entry| !flag("only_to") || entry.to == address)
        .filter(|entry| !flag("only_from") || entry.from == address);
    let mut data = Vec::new();
    let mut more = false;
    for entry in matching.skip(skip) {
        if data.len() == limit {
            more = true;
            break;
        }
        let Some(token) = chain.token_at(&entry.contract) else {
            continue;
        };
        data.push(json!({
            "transaction_id": entry.txid,
            "token_info": { "symbol": token.symbol, "address": token.address.to_base58(), "decimals": token.decimals, "name": token.name },
            "block_timestamp": entry.timestamp,
            "from": entry.from.to_base58(),
            "to": entry.to.to_base58(),
            "type": "Transfer",
            "value": entry.amount.to_string(),
        }));
    }
    let size = data.len();
    let mut meta = json!({ "at": Devnet::now_ms(), "page_size": size });
    if more {
        let next = skip + size;
        meta["fingerprint"] = json!(next.to_string());
        meta["links"] =
            json!({ "next": format!("/v1/accounts/{}/transactions/trc20?fingerprint={next}", address.to_base58()) });
    }
    Json(json!({ "data": data, "success": true, "meta": meta })).into_response()
}

/// Whole units as a decimal string (at most 6 decimals) → base units.
fn units(text: &str) -> Option<i64> {
    let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    if fraction.len() > 6 || whole.is_empty() || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = format!("{fraction:0<6}").parse().ok()?;
    whole.checked_mul(SUN_PER_TRX)?.checked_add(fraction)
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

async fn faucet(State(devnet): State<Devnet>, Params(p): Params) -> Response {
    let Ok(to) = address_param(&p, "address") else {
        return bad_request("address must be a TRON address");
    };
    let amount = |key: &str| -> Result<Option<i64>, Problem> {
        match &p[key] {
            Value::Null => Ok(None),
            Value::String(text) => units(text)
                .filter(|u| *u > 0)
                .map(Some)
                .ok_or_else(|| Problem::BadRequest(format!("{key} must be a positive decimal string"))),
            _ => Err(Problem::BadRequest(format!("{key} must be a decimal string"))),
        }
    };
    let (trx, usdt, lookalike) = match (amount("trx"), amount("usdt"), amount("lookalike")) {
        (Ok(trx), Ok(usdt), Ok(lookalike)) => (trx, usdt, lookalike),
        (Err(problem), _, _) | (_, Err(problem), _) | (_, _, Err(problem)) => return problem.into_response(),
    };
    let token_units = |units: Option<i64>| units.and_then(|u| u64::try_from(u).ok());
    let result = devnet
        .chain()
        .faucet(&to, trx, token_units(usdt), token_units(lookalike), Devnet::now_ms());
    match result {
        Ok(paid) => {
            let mut out = json!({});
            for (key, txid) in [
                ("trx_txid", paid.trx),
                ("usdt_txid", paid.usdt),
                ("lookalike_txid", paid.lookalike),
            ] {
                if let Some(txid) = txid {
                    out[key] = json!(txid);
                }
            }
            Json(out).into_response()
        }
        Err(refused) => (
            StatusCode::CONFLICT,
            Json(json!({ "error": refused.message, "code": refused.code })),
        )
            .into_response(),
    }
}

async fn info(State(devnet): State<Devnet>) -> Json<Value> {
    let chain = devnet.chain();
    Json(json!({
        "genesis_address": chain::genesis_key().address().to_base58(),
        "usdt_contract": chain.token.address.to_base58(),
        "lookalike_contract": chain.lookalike.address.to_base58(),
        "solidify_lag": chain.solidify_lag,
        "block_interval_ms": devnet.block_interval_ms,
        "head": chain.head().number,
        "solidified": chain.solid_head().number,
    }))
}

/// Replaces the newest `depth` unsolidified blocks with new ones without their transactions.
async fn reorg(State(devnet): State<Devnet>, Params(p): Params) -> Response {
    let Some(depth) = p["depth"].as_i64() else {
        return bad_request("depth must be a positive integer");
    };
    let mut chain = devnet.chain();
    let now_ms = Devnet::now_ms();
    match chain.reorg(depth, now_ms) {
        Ok((dropped, head)) => {
            devnet.record(&mut chain, |seq| Change::Reorg { seq, depth, now_ms });
            Json(json!({ "dropped_txids": dropped, "head": head })).into_response()
        }
        Err(refused) => (StatusCode::CONFLICT, Json(json!({ "error": refused.0 }))).into_response(),
    }
}

async fn produce_blocks(State(devnet): State<Devnet>, Params(p): Params) -> Response {
    let count = p["count"].as_u64().unwrap_or(1);
    if !(1..=10_000).contains(&count) {
        return bad_request("count must be 1 to 10000");
    }
    let head = devnet.produce(u32::try_from(count).unwrap_or(1));
    let solid = devnet.chain().solid_head().number;
    Json(json!({ "head": head, "solidified": solid })).into_response()
}

/// Sets the node faults (every field optional, absent = off) and the stalled solidified head.
async fn set_faults(State(devnet): State<Devnet>, Params(p): Params) -> Response {
    let rate = |key: &str| -> Result<f64, Problem> {
        let value = p[key].as_f64().unwrap_or(0.0);
        if (0.0..=1.0).contains(&value) {
            Ok(value)
        } else {
            Err(Problem::BadRequest(format!("{key} must be between 0 and 1")))
        }
    };
    let rates = (
        rate("error_rate"),
        rate("java_error_rate"),
        rate("truncate_rate"),
        rate("empty_transaction_rate"),
        rate("broadcast_error_rate"),
    );
    let (error_rate, java_error_rate, truncate_rate, empty_transaction_rate, broadcast_error_rate) = match rates {
        (Ok(a), Ok(b), Ok(c), Ok(d), Ok(e)) => (a, b, c, d, e),
        (Err(bad), ..) | (_, Err(bad), ..) | (_, _, Err(bad), ..) | (_, _, _, Err(bad), _) | (.., Err(bad)) => {
            return bad.into_response()
        }
    };
    let suspend_secs = p["suspend_secs"].as_u64().unwrap_or(0);
    let mut faults = devnet.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *faults = Faults {
        error_rate,
        latency_ms: p["latency_ms"].as_u64().unwrap_or(0),
        rate_limit_rps: u32::try_from(p["rate_limit_rps"].as_u64().unwrap_or(0)).unwrap_or(u32::MAX),
        java_error_rate,
        broadcast_error_rate,
        truncate_rate,
        empty_transaction_rate,
        suspended_until: (suspend_secs > 0).then(|| Instant::now() + Duration::from_secs(suspend_secs)),
        window: None,
    };
    let mut chain = devnet.chain();
    chain.solid_cap = match p["stall_solidified"].as_bool() {
        Some(true) => Some(chain.solid_head().number),
        Some(false) | None => None,
    };
    chain.drop_pending = p["drop_pending"].as_bool().unwrap_or(false);
    chain.energy_percent = p["energy_percent"]
        .as_u64()
        .and_then(|percent| u32::try_from(percent).ok());
    Json(json!({
        "error_rate": faults.error_rate,
        "latency_ms": faults.latency_ms,
        "rate_limit_rps": faults.rate_limit_rps,
        "java_error_rate": faults.java_error_rate,
        "broadcast_error_rate": faults.broadcast_error_rate,
        "truncate_rate": faults.truncate_rate,
        "empty_transaction_rate": faults.empty_transaction_rate,
        "suspend_secs": suspend_secs,
        "stalled_solidified": chain.solid_cap,
        "drop_pending": chain.drop_pending,
        "energy_percent": chain.energy_percent,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::units;

    #[test]
    fn query_strings_are_percent_decoded() {
        let pairs = super::serde_urlencoded_pairs("value=ab%2Fcd&num=7&visible=true&name=a+b");
        assert_eq!(pairs["value"], "ab/cd");
        assert_eq!(pairs["num"], 7);
        assert_eq!(pairs["visible"], true);
        assert_eq!(pairs["name"], "a b");
    }

    #[test]
    fn faucet_amounts_are_exact_decimals() {
        assert_eq!(units("1"), Some(1_000_000));
        assert_eq!(units("0.5"), Some(500_000));
        assert_eq!(units("12.000001"), Some(12_000_001));
        assert_eq!(units("1.0000001"), None);
        assert_eq!(units("-1"), None);
        assert_eq!(units("x"), None);
    }
}
