//! Users of the platform: upserted by `external_id`, read with their balances.

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use guarantor_domain::{Command, Role, UserId};
use guarantor_store::views::{self, BalanceView, UserView};
use serde::Deserialize;

use crate::api_keys::Principal;
use crate::dispatch;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, IdPath, RequestMeta};
use crate::routes::validate;
use crate::AppState;

/// The platform's id of a user: a string or an integer.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ExternalId {
    Text(String),
    Number(i64),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UpsertUser {
    pub external_id: ExternalId,
    /// Up to 128 characters.
    #[serde(default)]
    #[schema(max_length = 128)]
    pub name: String,
}

/// Creates the user, or updates the name of the tenant's user with this `external_id`.
#[utoipa::path(
    post,
    path = "/user",
    tag = "users",
    security(("api_key" = [])),
    request_body = UpsertUser,
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$", description = "Makes a retry return the first result")),
    responses(
        (status = 200, body = UserView),
        (status = 202, description = "Accepted; the result will be at GET /api/v1/commands/{command_id}"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 503, body = ErrorBody)
    )
)]
pub async fn upsert(
    State(state): State<AppState>,
    principal: Principal,
    meta: RequestMeta,
    ApiJson { raw, body }: ApiJson<UpsertUser>,
) -> Result<Response, ApiError> {
    let external_id = match body.external_id {
        ExternalId::Text(text) => text,
        ExternalId::Number(number) => number.to_string(),
    };
    validate::text("external_id", &external_id, 1, 128)?;
    validate::text("name", &body.name, 0, 128)?;
    principal.require(&[Role::Platform])?;
    dispatch::execute(
        &state,
        &principal,
        &meta,
        Command::UpsertUser {
            external_id,
            name: body.name,
        },
        &raw,
    )
    .await
}

async fn find(state: &AppState, principal: &Principal, id: UserId) -> Result<UserView, ApiError> {
    let user = views::user(&state.pool, principal.tenant_id, id)
        .await
        .map_err(ApiError::database)?
        .ok_or_else(|| ApiError::not_found("user"))?;
    principal.require(&[Role::Platform])?;
    Ok(user)
}

/// A user of the tenant.
#[utoipa::path(
    get,
    path = "/user/{user_id}",
    tag = "users",
    security(("api_key" = [])),
    params(("user_id" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = UserView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)
    )
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    IdPath(id): IdPath<UserId>,
) -> Result<Json<UserView>, ApiError> {
    find(&state, &principal, id).await.map(Json)
}

/// The user's balances, one row per supported currency: `balance` is available, `held` is in escrow
/// in funded deals where the user is the customer.
#[utoipa::path(
    get,
    path = "/user/{user_id}/balance",
    tag = "users",
    security(("api_key" = [])),
    params(("user_id" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = [BalanceView]),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)
    )
)]
pub async fn balance(
    State(state): State<AppState>,
    principal: Principal,
    IdPath(id): IdPath<UserId>,
) -> Result<Json<Vec<BalanceView>>, ApiError> {
    find(&state, &principal, id).await?;
    views::balances(&state.pool, id)
        .await
        .map(Json)
        .map_err(ApiError::database)
}
