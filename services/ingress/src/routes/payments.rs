//! Payments: a fresh deposit address per payment, derived from the operator's HD seed. The ingress
//! allocates the HD index (a Postgres sequence, atomic across processes) and derives the address
//! from the public half of the deposit branch; the ledger records the payment, and the scanner
//! credits what arrives.

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use chrono::Utc;
use guarantor_domain::payment::USDT_TRC20_GATEWAY_ID;
use guarantor_domain::{Command, NewPayment, PaymentId, RawAmount, Role};
use guarantor_store::views::{self, PaymentView};
use serde::Deserialize;
use serde_json::json;

use crate::api_keys::Principal;
use crate::dispatch;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, IdPath, RequestMeta};
use crate::routes::validate;
use crate::{repo, AppState};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CreatePayment {
    /// `id` of one of `GET /payment/gateways` (1: USDT TRC-20).
    #[schema(example = 1)]
    pub gateway_id: i64,
    /// The user who pays; the money is credited to their balance.
    #[schema(minimum = 1)]
    pub user_id: i64,
    /// What the payment asks for. Whatever arrives is credited, more or less.
    #[schema(value_type = String, example = "12.50")]
    pub amount: RawAmount,
    /// Defaults to USDT.
    #[serde(default = "default_currency")]
    #[schema(example = "USDT")]
    pub currency: String,
}

fn default_currency() -> String {
    "USDT".to_owned()
}

/// Creates a payment with its own deposit address. Pay `gateway_data.amount` of
/// `gateway_data.token_contract` to `gateway_data.address`; the scanner credits every confirmed
/// transfer (under-, over- and late payments too) and funds the user's deals waiting for payment.
#[utoipa::path(
    post,
    path = "/payment",
    tag = "payments",
    security(("api_key" = [])),
    request_body = CreatePayment,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes a retry return the first result")),
    responses(
        (status = 200, body = PaymentView, description = "The payment, `waiting`, with its deposit address"),
        (status = 202, description = "Accepted; the result will be at GET /api/v1/commands/{command_id}"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)
    )
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson { raw, body }: ApiJson<CreatePayment>,
) -> Result<Response, ApiError> {
    if body.gateway_id != USDT_TRC20_GATEWAY_ID {
        return Err(ApiError::validation("unknown payment gateway")
            .with_details(json!({ "field": "gateway_id", "gateways": [USDT_TRC20_GATEWAY_ID] })));
    }
    let user_id = validate::user_id("user_id", body.user_id)?;
    let currency = validate::currency("currency", &body.currency)?;
    let amount = validate::amount("amount", body.amount, currency, state.config.max_amount)?;
    principal.require(&[Role::Platform])?;
    let addresses = state.deposit_addresses.as_ref().ok_or_else(|| {
        ApiError::unavailable("payments need the operator's HD seed (GUARANTOR_HD_SEED or GUARANTOR_HD_MNEMONIC)")
    })?;
    let hd_index = repo::next_hd_index(&state.pool).await.map_err(ApiError::database)?;
    let address = addresses.address(hd_index).map_err(ApiError::internal)?;
    let ttl = chrono::Duration::seconds(i64::try_from(state.config.payment_ttl_secs).unwrap_or(i64::MAX));
    let command = Command::CreatePayment(NewPayment {
        user_id,
        gateway_id: body.gateway_id,
        amount: amount.value(),
        currency,
        hd_index,
        address: address.to_base58(),
        token_contract: state.config.tron.usdt_contract.to_base58(),
        expires_at: Utc::now() + ttl,
    });
    dispatch::execute(&state, &principal, &meta, command, &raw).await
}

/// A payment of the tenant, with its credited deposits, oldest first.
#[utoipa::path(
    get,
    path = "/payment/{payment_id}",
    tag = "payments",
    security(("api_key" = [])),
    params(("payment_id" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = PaymentView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)
    )
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    IdPath(id): IdPath<PaymentId>,
) -> Result<Json<PaymentView>, ApiError> {
    let mut db = state.pool.acquire().await.map_err(ApiError::database)?;
    let payment = views::payment(&mut db, principal.tenant_id, id)
        .await
        .map_err(ApiError::database)?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    principal.require(&[Role::Platform])?;
    Ok(Json(payment))
}
