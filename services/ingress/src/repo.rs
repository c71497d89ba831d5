//! The ingress's SQL about commands: the inbox verdicts the ledger stored, and the commands the
//! ingress accepted. Checked at compile time (`query!`).

use guarantor_domain::{CommandId, TenantId, Verdict};
use serde_json::Value;
use sqlx::PgPool;

fn verdict(outcome: &str, body: Option<Value>) -> Result<Verdict, sqlx::Error> {
    Verdict::from_stored(outcome, body).map_err(|err| sqlx::Error::Decode(err.into()))
}

/// A command's stored verdict and the fingerprint it was applied with.
pub async fn stored(pool: &PgPool, id: CommandId) -> sqlx::Result<Option<(String, Verdict)>> {
    let row = sqlx::query!(
        "SELECT fingerprint, outcome, body FROM commands WHERE id = $1",
        id.as_uuid()
    )
    .fetch_optional(pool)
    .await?;
    row.map(|row| Ok((row.fingerprint, verdict(&row.outcome, row.body)?)))
        .transpose()
}

/// The tenant's command's verdict, if the ledger has decided.
pub async fn verdict_of(pool: &PgPool, tenant: TenantId, id: CommandId) -> sqlx::Result<Option<Verdict>> {
    let row = sqlx::query!(
        "SELECT outcome, body FROM commands WHERE id = $1 AND tenant_id = $2",
        id.as_uuid(),
        tenant.get()
    )
    .fetch_optional(pool)
    .await?;
    row.map(|row| verdict(&row.outcome, row.body)).transpose()
}

pub async fn was_accepted(pool: &PgPool, tenant: TenantId, id: CommandId) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM accepted_commands WHERE id = $1 AND tenant_id = $2) AS "accepted!""#,
        id.as_uuid(),
        tenant.get()
    )
    .fetch_one(pool)
    .await
}

/// Binds an Idempotency-Key's command id to this request's fingerprint; returns the fingerprint it
/// is bound to (this one, or an earlier request's).
pub async fn bind_key(pool: &PgPool, tenant: TenantId, id: CommandId, fingerprint: &str) -> sqlx::Result<String> {
    // A concurrent first request with the same key commits after this statement's snapshot: its row
    // is then visible to the next statement.
    for _ in 0..2 {
        let bound = sqlx::query_scalar!(
            r#"WITH bound AS (
                   INSERT INTO accepted_commands (id, tenant_id, fingerprint) VALUES ($1, $2, $3)
                   ON CONFLICT (id) DO NOTHING RETURNING fingerprint)
               SELECT fingerprint AS "fingerprint!" FROM bound
               UNION ALL SELECT COALESCE(fingerprint, $3) FROM accepted_commands WHERE id = $1
               LIMIT 1"#,
            id.as_uuid(),
            tenant.get(),
            fingerprint
        )
        .fetch_optional(pool)
        .await?;
        if let Some(bound) = bound {
            return Ok(bound);
        }
    }
    Err(sqlx::Error::RowNotFound)
}

/// Releases a key bound by a request whose command could not be published (the client got a 503),
/// so that `GET /commands/{id}` does not report it pending forever. Should the publish have been
/// stored after all, the ledger's verdict still appears under the command id.
pub async fn unbind_key(pool: &PgPool, tenant: TenantId, id: CommandId, fingerprint: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM accepted_commands WHERE id = $1 AND tenant_id = $2 AND fingerprint = $3",
        id.as_uuid(),
        tenant.get(),
        fingerprint
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that the command was accepted but not answered yet.
pub async fn accept(pool: &PgPool, tenant: TenantId, id: CommandId) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO accepted_commands (id, tenant_id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        id.as_uuid(),
        tenant.get()
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The next HD index of a deposit address; no two calls, in any process, ever get the same one.
pub async fn next_hd_index(pool: &PgPool) -> sqlx::Result<u32> {
    let index = sqlx::query_scalar!(r#"SELECT nextval('deposit_address_index') AS "index!""#)
        .fetch_one(pool)
        .await?;
    u32::try_from(index).map_err(|err| sqlx::Error::Decode(err.into()))
}
