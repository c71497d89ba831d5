//! The stored result of an accepted command, for clients that got a 202.

use axum::extract::State;
use axum::Json;
use guarantor_domain::CommandId;
use serde::Serialize;
use serde_json::Value;

use crate::api_keys::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::extract::IdPath;
use crate::AppState;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CommandStatus {
    #[schema(value_type = String, format = Uuid)]
    pub command_id: CommandId,
    /// `pending` until the ledger has applied the command, then `done`.
    #[schema(example = "done")]
    pub status: &'static str,
    /// The status the synchronous call would have answered.
    pub http_status: Option<u16>,
    /// The body the synchronous call would have answered.
    #[schema(value_type = Object)]
    pub body: Option<Value>,
}

/// A command's outcome.
#[utoipa::path(
    get,
    path = "/commands/{command_id}",
    tag = "commands",
    security(("api_key" = [])),
    params(("command_id" = String, Path, format = Uuid)),
    responses(
        (status = 200, body = CommandStatus),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)
    )
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    IdPath(id): IdPath<CommandId>,
) -> Result<Json<CommandStatus>, ApiError> {
    let done: Option<(i16, Option<Value>)> =
        sqlx::query_as("SELECT http_status, body FROM commands WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(principal.tenant_id)
            .fetch_optional(&state.pool)
            .await
            .map_err(ApiError::database)?;
    if let Some((http_status, body)) = done {
        return Ok(Json(CommandStatus {
            command_id: id,
            status: "done",
            http_status: Some(http_status.unsigned_abs()),
            body,
        }));
    }
    let accepted: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accepted_commands WHERE id = $1 AND tenant_id = $2)")
            .bind(id)
            .bind(principal.tenant_id)
            .fetch_one(&state.pool)
            .await
            .map_err(ApiError::database)?;
    if !accepted {
        return Err(ApiError::not_found("command"));
    }
    Ok(Json(CommandStatus {
        command_id: id,
        status: "pending",
        http_status: None,
        body: None,
    }))
}
