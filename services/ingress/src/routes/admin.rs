//! Operator actions. Admin keys act across tenants.

use axum::extract::State;
use axum::response::Response;
use guarantor_domain::{Command, RawAmount, Role};
use serde::{Deserialize, Serialize};

use crate::api_keys::Principal;
use crate::dispatch;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, RequestMeta};
use crate::routes::validate;
use crate::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Adjustment {
    pub user_id: i64,
    #[schema(example = "USDT")]
    pub currency: String,
    /// Signed: positive credits the user, negative debits (never below zero).
    #[schema(value_type = String, example = "-5.000000")]
    pub amount: RawAmount,
    /// Why, for the audit trail (1 to 500 characters).
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
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry return the first result")),
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
