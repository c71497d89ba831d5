//! The ingress's SQL about commands: the inbox verdicts the ledger stored, and the commands the
//! ingress accepted with a 202.

use guarantor_domain::{CommandId, TenantId, Verdict};
use serde_json::Value;
use sqlx::PgPool;

fn verdict(outcome: &str, body: Option<Value>) -> Result<Verdict, sqlx::Error> {
    Verdict::from_stored(outcome, body).map_err(|err| sqlx::Error::Decode(err.into()))
}

/// A command's stored verdict and the fingerprint it was applied with.
pub async fn stored(pool: &PgPool, id: CommandId) -> sqlx::Result<Option<(String, Verdict)>> {
    let row: Option<(String, String, Option<Value>)> =
        sqlx::query_as("SELECT fingerprint, outcome, body FROM commands WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    row.map(|(fingerprint, outcome, body)| Ok((fingerprint, verdict(&outcome, body)?)))
        .transpose()
}

/// The tenant's command's verdict, if the ledger has decided.
pub async fn verdict_of(pool: &PgPool, tenant: TenantId, id: CommandId) -> sqlx::Result<Option<Verdict>> {
    let row: Option<(String, Option<Value>)> =
        sqlx::query_as("SELECT outcome, body FROM commands WHERE id = $1 AND tenant_id = $2")
            .bind(id)
            .bind(tenant)
            .fetch_optional(pool)
            .await?;
    row.map(|(outcome, body)| verdict(&outcome, body)).transpose()
}

pub async fn was_accepted(pool: &PgPool, tenant: TenantId, id: CommandId) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accepted_commands WHERE id = $1 AND tenant_id = $2)")
        .bind(id)
        .bind(tenant)
        .fetch_one(pool)
        .await
}

/// Binds an Idempotency-Key's command id to this request's fingerprint; returns the fingerprint it
/// is bound to (this one, or an earlier request's).
pub async fn bind_key(pool: &PgPool, tenant: TenantId, id: CommandId, fingerprint: &str) -> sqlx::Result<String> {
    // A concurrent first request with the same key commits after this statement's snapshot: its row
    // is then visible to the next statement.
    for _ in 0..2 {
        if let Some(bound) = bind_key_once(pool, tenant, id, fingerprint).await? {
            return Ok(bound);
        }
    }
    Err(sqlx::Error::RowNotFound)
}

async fn bind_key_once(
    pool: &PgPool,
    tenant: TenantId,
    id: CommandId,
    fingerprint: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "WITH bound AS (
             INSERT INTO accepted_commands (id, tenant_id, fingerprint) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING RETURNING fingerprint)
         SELECT fingerprint FROM bound
         UNION ALL SELECT COALESCE(fingerprint, $3) FROM accepted_commands WHERE id = $1
         LIMIT 1",
    )
    .bind(id)
    .bind(tenant)
    .bind(fingerprint)
    .fetch_optional(pool)
    .await
}

/// Releases a key bound by a request whose command could not be published (the client got a 503),
/// so that `GET /commands/{id}` does not report it pending forever. Should the publish have been
/// stored after all, the ledger's verdict still appears under the command id.
pub async fn unbind_key(pool: &PgPool, tenant: TenantId, id: CommandId, fingerprint: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM accepted_commands WHERE id = $1 AND tenant_id = $2 AND fingerprint = $3")
        .bind(id)
        .bind(tenant)
        .bind(fingerprint)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records that the command was accepted but not answered yet.
pub async fn accept(pool: &PgPool, tenant: TenantId, id: CommandId) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO accepted_commands (id, tenant_id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(id)
        .bind(tenant)
        .execute(pool)
        .await?;
    Ok(())
}
