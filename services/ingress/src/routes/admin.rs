//! Operator actions. Admin keys act across tenants.

use axum::extract::{Query, State};
use axum::response::Response;
use axum::Json;
use guarantor_domain::{Command, RawAmount, Role};
use guarantor_store::views::{self, SweepView};
use serde::{Deserialize, Serialize};

use crate::api_keys::Principal;
use crate::dispatch;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, RequestMeta};
use crate::routes::validate;
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Adjustment {
    #[schema(minimum = 1)]
    pub user_id: i64,
    #[schema(example = "USDT")]
    pub currency: String,
    /// Signed: positive credits the user, negative debits (never below zero).
    #[schema(value_type = String, example = "-5.000000")]
    pub amount: RawAmount,
    /// Why, for the audit trail (1 to 500 characters).
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// The ledger transfer an adjustment made.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdjustmentTransfer {
    pub transfer_id: i64,
    pub user_id: i64,
    pub currency: String,
    #[schema(example = "-5.000000")]
    pub amount: String,
    #[schema(example = "adjustment")]
    pub kind: String,
    pub reason: String,
    /// The user's available balance afterwards.
    pub balance: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// An operator's audited correction of a user's available balance, against the operator-adjustments
/// account. A credit funds the user's deals waiting for payment.
#[utoipa::path(
    post,
    path = "/admin/adjustments",
    tag = "admin",
    security(("api_key" = [])),
    request_body = Adjustment,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes a retry return the first result")),
    responses(
        (status = 200, body = AdjustmentTransfer),
        (status = 202, description = "Accepted; the result will be at GET /api/v1/commands/{command_id}"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "insufficient_funds"),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)
    )
)]
pub async fn adjust(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson { raw, body }: ApiJson<Adjustment>,
) -> Result<Response, ApiError> {
    let user_id = validate::user_id("user_id", body.user_id)?;
    let currency = validate::currency("currency", &body.currency)?;
    let amount = validate::signed_amount("amount", body.amount, currency, state.config.max_amount)?;
    validate::text("reason", &body.reason, 1, 500)?;
    principal.require(&[Role::Admin])?;
    let command = Command::AdjustBalance {
        user_id,
        currency,
        amount,
        reason: body.reason,
    };
    dispatch::execute(&state, &principal, &meta, command, &raw).await
}

const SWEEP_STATUSES: [&str; 5] = ["fee_check", "topping_up", "sending", "confirmed", "failed"];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SweepParams {
    /// Only sweeps in this status: fee_check, topping_up, sending, confirmed or failed.
    pub status: Option<String>,
    /// 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// The sweeps of every tenant, newest first: address, amount, status, transactions, fee paid and
/// last error.
#[utoipa::path(
    get,
    path = "/admin/sweeps",
    tag = "admin",
    security(("api_key" = [])),
    params(SweepParams),
    responses(
        (status = 200, body = [SweepView]),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)
    )
)]
pub async fn sweeps(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<SweepParams>,
) -> Result<Json<Vec<SweepView>>, ApiError> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(
            ApiError::validation("limit must be 1 to 500").with_details(serde_json::json!({ "field": "limit" }))
        );
    }
    if let Some(status) = params.status.as_deref().filter(|s| !SWEEP_STATUSES.contains(s)) {
        return Err(ApiError::validation(format!("unknown sweep status {status:?}"))
            .with_details(serde_json::json!({ "field": "status", "statuses": SWEEP_STATUSES })));
    }
    principal.require(&[Role::Admin])?;
    views::sweeps(&state.pool, params.status.as_deref(), limit)
        .await
        .map(Json)
        .map_err(ApiError::database)
}
