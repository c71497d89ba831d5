//! Tenants and their API keys. A key is `gk_<key id>_<secret>`: the id (public) finds the row, the
//! secret (256 random bits) is only ever stored as its SHA-256 and is compared in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use guarantor_config::SecretString;
use guarantor_domain::{ApiKeyId, Role, TenantId};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

const KEY_PREFIX: &str = "gk_";

/// Who a request acts for, resolved from its API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub key_id: ApiKeyId,
    pub tenant_id: TenantId,
    pub role: Role,
}

/// A key just created: the only moment the key itself exists outside the client.
#[derive(Debug)]
pub struct CreatedKey {
    pub id: ApiKeyId,
    pub tenant: String,
    pub tenant_id: TenantId,
    pub role: Role,
    pub key: SecretString,
}

/// A key as `apikey list` shows it: never the key itself.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub id: ApiKeyId,
    pub tenant: String,
    pub role: Role,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("tenant name must be 1 to 128 characters")]
    BadTenantName,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Splits a presented key into its id and secret; anything else is not a key.
fn parse_key(presented: &str) -> Option<(ApiKeyId, &str)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || secret.len() != 43 {
        return None;
    }
    let id = uuid::Uuid::try_parse(id).ok()?;
    Some((ApiKeyId::from_uuid(id), secret))
}

/// Creates the tenant if it does not exist, then a key for it.
pub async fn create(pool: &PgPool, tenant: &str, role: Role) -> Result<CreatedKey, ApiKeyError> {
    if tenant.is_empty() || tenant.chars().count() > 128 {
        return Err(ApiKeyError::BadTenantName);
    }
    let mut secret_bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret_bytes);
    let secret = URL_SAFE_NO_PAD.encode(secret_bytes);
    let id = ApiKeyId::generate();
    let mut tx = pool.begin().await?;
    let tenant_id = sqlx::query_scalar!(
        r#"INSERT INTO tenants (name) VALUES ($1)
           ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
           RETURNING id AS "id: TenantId""#,
        tenant
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO api_keys (id, tenant_id, role, secret_sha256) VALUES ($1, $2, $3, $4)",
        id.as_uuid(),
        tenant_id.get(),
        role.as_str(),
        &secret_digest(&secret)[..]
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(CreatedKey {
        id,
        tenant: tenant.to_owned(),
        tenant_id,
        role,
        key: format!("{KEY_PREFIX}{}_{secret}", id.as_uuid().simple()).into(),
    })
}

pub async fn list(pool: &PgPool, tenant: Option<&str>) -> Result<Vec<KeyInfo>, ApiKeyError> {
    let keys = sqlx::query_as!(
        KeyInfo,
        r#"SELECT k.id AS "id: ApiKeyId", t.name AS tenant, k.role AS "role: Role", k.created_at, k.revoked_at
           FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
           WHERE $1::text IS NULL OR t.name = $1
           ORDER BY t.name, k.created_at"#,
        tenant
    )
    .fetch_all(pool)
    .await?;
    Ok(keys)
}

/// Revokes a key; returns whether a key that was active is now revoked.
pub async fn revoke(pool: &PgPool, id: ApiKeyId) -> Result<bool, ApiKeyError> {
    let result = sqlx::query!(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        id.as_uuid()
    )
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Resolves a presented key to its principal; `None` for anything that is not an active key.
pub async fn authenticate(pool: &PgPool, presented: &str) -> Result<Option<Principal>, sqlx::Error> {
    let Some((id, secret)) = parse_key(presented) else {
        return Ok(None);
    };
    let row = sqlx::query!(
        r#"SELECT tenant_id AS "tenant_id: TenantId", role AS "role: Role", secret_sha256
           FROM api_keys WHERE id = $1 AND revoked_at IS NULL"#,
        id.as_uuid()
    )
    .fetch_optional(pool)
    .await?;
    let Some((tenant_id, role, stored)) = row.map(|row| (row.tenant_id, row.role, row.secret_sha256)) else {
        return Ok(None);
    };
    if !bool::from(secret_digest(secret).ct_eq(stored.as_slice())) {
        return Ok(None);
    }
    Ok(Some(Principal {
        key_id: id,
        tenant_id,
        role,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_keys_parse() {
        let id = uuid::Uuid::now_v7();
        let secret = "a".repeat(43);
        let key = format!("gk_{}_{secret}", id.simple());
        assert_eq!(parse_key(&key), Some((ApiKeyId::from_uuid(id), secret.as_str())));
        for bad in [
            "",
            "gk_",
            "Bearer x",
            &format!("xx_{}_{secret}", id.simple()),
            &format!("gk_{}_short", id.simple()),
        ] {
            assert_eq!(parse_key(bad), None, "{bad:?}");
        }
    }
}
