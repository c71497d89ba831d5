//! Applying one command: at most once (the inbox row is written in the same transaction as the
//! effect), with a refusal rolled back to nothing but its recorded answer.

use guarantor_domain::{Command, CommandEnvelope, CommandReply};
use serde_json::Value;
use sqlx::{Acquire, PgConnection};

use crate::rejection::{HandlerError, HandlerResult, Rejection};
use crate::{adjustments, deals, users};

/// Applies `env` inside the caller's transaction and returns the client's answer. A command already
/// applied answers what it answered the first time and changes nothing.
pub async fn apply(db: &mut PgConnection, env: &CommandEnvelope) -> sqlx::Result<CommandReply> {
    let reply = |http_status: u16, body: Option<Value>| CommandReply {
        command_id: env.id,
        http_status,
        body,
    };
    let applied: Option<(String, i16, Option<Value>)> =
        sqlx::query_as("SELECT fingerprint, http_status, body FROM commands WHERE id = $1")
            .bind(env.id)
            .fetch_optional(&mut *db)
            .await?;
    if let Some((fingerprint, status, body)) = applied {
        if fingerprint == env.fingerprint {
            return Ok(reply(status.unsigned_abs(), body));
        }
        let mismatch = Rejection::conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was used with another route or body",
        );
        return Ok(reply(mismatch.status, Some(mismatch.body())));
    }

    let mut effect = db.begin().await?;
    let (status, body) = match handle(&mut effect, env).await {
        Ok(outcome) => {
            effect.commit().await?;
            outcome
        }
        Err(HandlerError::Rejected(rejection)) => {
            effect.rollback().await?;
            (rejection.status, Some(rejection.body()))
        }
        Err(HandlerError::Database(err)) => {
            effect.rollback().await?;
            return Err(err);
        }
    };
    sqlx::query(
        "INSERT INTO commands (id, tenant_id, kind, fingerprint, http_status, body) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(env.id)
    .bind(env.tenant_id)
    .bind(env.command.kind())
    .bind(&env.fingerprint)
    .bind(i16::try_from(status).unwrap_or(i16::MAX))
    .bind(&body)
    .execute(&mut *db)
    .await?;
    Ok(reply(status, body))
}

async fn handle(db: &mut PgConnection, env: &CommandEnvelope) -> HandlerResult<(u16, Option<Value>)> {
    match &env.command {
        Command::UpsertUser { external_id, name } => users::upsert(db, env, external_id, name).await,
        Command::CreateDeal(new) => deals::create(db, env, new).await,
        Command::ActOnDeal {
            deal_id,
            action,
            acting_user,
            dispute,
        } => deals::act(db, env, *deal_id, *action, *acting_user, dispute.as_ref()).await,
        Command::AdjustBalance {
            user_id,
            currency,
            amount,
            reason,
        } => adjustments::adjust(db, env, *user_id, *currency, *amount, reason).await,
    }
}
