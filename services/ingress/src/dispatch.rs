//! Turning a validated request into a command and its answer: idempotency (a retried
//! `Idempotency-Key` returns the first result; with another request, 409), publishing through the
//! [`CommandBus`](crate::bus::CommandBus), and the 202 fallback when the ledger is slow.

use axum::http::{header::LOCATION, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use futures::StreamExt;
use guarantor_domain::{Command, CommandEnvelope, CommandId, CommandReply, Role, TenantId, UserId, Verdict};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api_keys::Principal;
use crate::bus::Submitted;
use crate::error::{respond, ApiError};
use crate::extract::RequestMeta;
use crate::{repo, AppState};

/// Namespace of command ids derived from (tenant, Idempotency-Key).
const IDEMPOTENCY_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6775_6172_616e_746f_7200_6964_656d_706f);

/// What binds an `Idempotency-Key` to one request: the route, who asks (the key's role and the acting
/// user) and the canonical body.
fn fingerprint(route: &str, role: Role, acting_user: Option<UserId>, body: &Value) -> String {
    // serde_json maps are ordered, so the same body always serialises the same way.
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(b"\n");
    hasher.update(role.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(acting_user.map(|user| user.to_string()).unwrap_or_default().as_bytes());
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

fn pending(id: CommandId) -> Response {
    (
        StatusCode::ACCEPTED,
        [(LOCATION, format!("/api/v1/commands/{id}"))],
        Json(json!({ "command_id": id, "status": "pending" })),
    )
        .into_response()
}

fn key_reused() -> ApiError {
    ApiError::conflict(
        "idempotency_key_reused",
        "this Idempotency-Key was used with another request",
    )
}

/// The stored verdict of command `id` as this request's answer, if the ledger has decided.
async fn stored_answer(state: &AppState, id: CommandId, fingerprint: &str) -> Result<Option<Response>, ApiError> {
    match repo::stored(&state.pool, id).await.map_err(ApiError::database)? {
        Some((stored, verdict)) if stored == fingerprint => Ok(Some(respond(&verdict))),
        Some(_) => Err(key_reused()),
        None => Ok(None),
    }
}

/// Runs `command` for `principal` and answers like the ledger decided.
pub async fn execute(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    command: Command,
    body: &Value,
) -> Result<Response, ApiError> {
    let acting_user = match &command {
        Command::ActOnDeal { acting_user, .. } => *acting_user,
        Command::UpsertUser { .. }
        | Command::CreateDeal(_)
        | Command::AdjustBalance { .. }
        | Command::CreatePayment(_)
        | Command::ObserveDeposit(_)
        | Command::ExpirePayment { .. } => None,
    };
    let fingerprint = fingerprint(&meta.route, principal.role, acting_user, body);
    let id = command_id(principal.tenant_id, meta.idempotency_key.as_deref());
    if meta.idempotency_key.is_some() {
        if let Some(answer) = stored_answer(state, id, &fingerprint).await? {
            return Ok(answer);
        }
        let bound = repo::bind_key(&state.pool, principal.tenant_id, id, &fingerprint)
            .await
            .map_err(ApiError::database)?;
        if bound != fingerprint {
            // The key belongs to another request, applied or still pending.
            return Err(key_reused());
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
    let submitted = match state.bus.submit(&envelope, meta.request_id.as_deref()).await {
        Ok(submitted) => submitted,
        Err(err) => {
            if meta.idempotency_key.is_some() {
                if let Err(unbound) = repo::unbind_key(&state.pool, principal.tenant_id, id, &fingerprint).await {
                    tracing::warn!(error = %unbound, "a key bound to an unpublished command stays bound");
                }
            }
            return Err(ApiError::unavailable("the command queue is unavailable").with_cause(err));
        }
    };
    match submitted {
        Submitted::Done(verdict) => Ok(respond(&verdict)),
        Submitted::Duplicate => wait_for_first(state, principal.tenant_id, id, &fingerprint).await,
        Submitted::Pending => accept(state, principal.tenant_id, id).await,
    }
}

/// A retry of a request already queued: waits for the verdict the ledger announces for it (or finds
/// it stored), up to the command timeout, else answers 202.
async fn wait_for_first(
    state: &AppState,
    tenant: TenantId,
    id: CommandId,
    fingerprint: &str,
) -> Result<Response, ApiError> {
    let mut announced = state
        .bus
        .watch(id)
        .await
        .map_err(|err| ApiError::unavailable("the command queue is unavailable").with_cause(err))?;
    if let Some(answer) = stored_answer(state, id, fingerprint).await? {
        return Ok(answer);
    }
    let verdict = tokio::time::timeout(state.bus.timeout(), async {
        while let Some(message) = announced.next().await {
            match serde_json::from_slice::<CommandReply>(&message.payload) {
                Ok(reply) if reply.fingerprint == fingerprint => return Some(reply.verdict),
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "malformed verdict announcement ignored"),
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    match verdict {
        Some(verdict) => Ok(respond(&verdict)),
        None => accept(state, tenant, id).await,
    }
}

/// Records that the command was accepted but not answered yet, and answers 202.
async fn accept(state: &AppState, tenant: TenantId, id: CommandId) -> Result<Response, ApiError> {
    repo::accept(&state.pool, tenant, id)
        .await
        .map_err(ApiError::database)?;
    Ok(pending(id))
}

/// The answer `GET /commands/{id}` reports for a verdict: its status and body.
pub fn reported(verdict: &Verdict) -> (u16, Option<Value>) {
    (crate::error::verdict_status(verdict).as_u16(), verdict.body())
}
