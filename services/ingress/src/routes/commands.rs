//! The stored result of an accepted command, for clients that got a 202.

use axum::extract::State;
use axum::Json;
use guarantor_domain::{CommandId, Verdict};
use serde::Serialize;
use serde_json::Value;

use crate::api_keys::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::extract::IdPath;
use crate::{dispatch, repo, AppState};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CommandStatus {
    #[schema(value_type = String, format = Uuid)]
    pub command_id: CommandId,
    /// `pending` until the ledger has decided, then `done` (applied or refused), or `failed` when
    /// the ledger gave up on the command and dead-lettered it (`body` has the error).
    #[schema(example = "done")]
    pub status: &'static str,
    /// The status the synchronous call would have answered (500 for `failed`).
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
    let verdict = repo::verdict_of(&state.pool, principal.tenant_id, id)
        .await
        .map_err(ApiError::database)?;
    if let Some(verdict) = verdict {
        let (http_status, body) = dispatch::reported(&verdict);
        return Ok(Json(CommandStatus {
            command_id: id,
            status: match verdict {
                Verdict::Applied { .. } | Verdict::Refused { .. } => "done",
                Verdict::Failed { .. } => "failed",
            },
            http_status: Some(http_status),
            body,
        }));
    }
    let accepted = repo::was_accepted(&state.pool, principal.tenant_id, id)
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
