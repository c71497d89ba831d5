//! Turning a validated request into a command and its answer: idempotency (a retried
//! `Idempotency-Key` returns the first result; with another route or body, 409), publishing through the
//! [`CommandBus`](crate::bus::CommandBus), and the 202 fallback when the ledger is slow.

use std::time::{Duration, Instant};

use axum::http::{header::LOCATION, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use guarantor_domain::{Command, CommandEnvelope, CommandId, CommandReply, TenantId};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api_keys::Principal;
use crate::bus::Submitted;
use crate::error::ApiError;
use crate::extract::RequestMeta;
use crate::AppState;

/// Namespace of command ids derived from (tenant, Idempotency-Key).
const IDEMPOTENCY_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6775_6172_616e_746f_7200_6964_656d_706f);

fn fingerprint(route: &str, body: &Value) -> String {
    // serde_json maps are ordered, so the same body always serialises the same way.
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(b"\n");
    hasher.update(body.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

fn command_id(tenant: TenantId, idempotency_key: Option<&str>) -> CommandId {
    match idempotency_key {
        Some(key) => CommandId::from_uuid(uuid::Uuid::new_v5(
            &IDEMPOTENCY_NAMESPACE,
            format!("{tenant}:{key}").as_bytes(),
        )),
        None => CommandId::generate(),
    }
}

/// The client's answer for a reply: its status and body (an empty body where the reply has none).
pub fn respond(http_status: u16, body: Option<Value>) -> Response {
    let status = StatusCode::from_u16(http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match body {
        Some(body) => (status, Json(body)).into_response(),
        None => status.into_response(),
    }
}

fn pending(id: CommandId) -> Response {
    (
        StatusCode::ACCEPTED,
        [(LOCATION, format!("/api/v1/commands/{id}"))],
        Json(json!({ "command_id": id, "status": "pending" })),
    )
        .into_response()
}

/// A command's stored outcome, if the ledger applied it.
async fn stored(state: &AppState, id: CommandId) -> Result<Option<(String, CommandReply)>, ApiError> {
    let row: Option<(String, i16, Option<Value>)> =
        sqlx::query_as("SELECT fingerprint, http_status, body FROM commands WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.pool)
            .await
            .map_err(ApiError::database)?;
    Ok(row.map(|(fingerprint, status, body)| {
        (
            fingerprint,
            CommandReply {
                command_id: id,
                http_status: status.unsigned_abs(),
                body,
            },
        )
    }))
}

fn replay_or_refuse(fingerprint: &str, stored_fingerprint: &str, reply: CommandReply) -> Result<Response, ApiError> {
    if stored_fingerprint == fingerprint {
        Ok(respond(reply.http_status, reply.body))
    } else {
        Err(ApiError::conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was used with another route or body",
        ))
    }
}

/// Runs `command` for `principal` and answers like the ledger did.
pub async fn execute(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    command: Command,
    body: &Value,
) -> Result<Response, ApiError> {
    let fingerprint = fingerprint(&meta.route, body);
    let id = command_id(principal.tenant_id, meta.idempotency_key.as_deref());
    if meta.idempotency_key.is_some() {
        if let Some((stored_fingerprint, reply)) = stored(state, id).await? {
            return replay_or_refuse(&fingerprint, &stored_fingerprint, reply);
        }
    }
    let envelope = CommandEnvelope {
        id,
        tenant_id: principal.tenant_id,
        role: principal.role,
        fingerprint: fingerprint.clone(),
        issued_at: Utc::now(),
        command,
    };
    let submitted = state
        .bus
        .submit(&envelope, meta.request_id.as_deref())
        .await
        .map_err(|err| ApiError::unavailable("the command queue is unavailable").with_cause(err))?;
    match submitted {
        Submitted::Done(reply) => Ok(respond(reply.http_status, reply.body)),
        Submitted::Duplicate => {
            // A retry of a command already queued: wait for the first one's stored outcome.
            let deadline = Instant::now() + state.bus.timeout();
            while Instant::now() < deadline {
                if let Some((stored_fingerprint, reply)) = stored(state, id).await? {
                    return replay_or_refuse(&fingerprint, &stored_fingerprint, reply);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            accept(state, principal.tenant_id, id).await
        }
        Submitted::Pending => accept(state, principal.tenant_id, id).await,
    }
}

/// Records that the command was accepted but not answered yet, and answers 202.
async fn accept(state: &AppState, tenant: TenantId, id: CommandId) -> Result<Response, ApiError> {
    sqlx::query("INSERT INTO accepted_commands (id, tenant_id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(id)
        .bind(tenant)
        .execute(&state.pool)
        .await
        .map_err(ApiError::database)?;
    Ok(pending(id))
}
