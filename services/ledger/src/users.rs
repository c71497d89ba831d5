//! Users: upserted by the platform, keyed by the platform's own id within the tenant.

use guarantor_domain::{CommandEnvelope, UserId};
use guarantor_store::views::UserView;
use serde_json::{json, Value};
use sqlx::PgConnection;

use crate::events;
use crate::rejection::HandlerResult;

pub async fn upsert(
    db: &mut PgConnection,
    env: &CommandEnvelope,
    external_id: &str,
    name: &str,
) -> HandlerResult<(u16, Option<Value>)> {
    let (user, created): (UserView, bool) = {
        let row: (
            UserId,
            String,
            String,
            chrono::DateTime<chrono::Utc>,
            chrono::DateTime<chrono::Utc>,
            bool,
        ) = sqlx::query_as(
            "INSERT INTO users (tenant_id, external_id, name) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant_id, external_id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()
                 RETURNING id, external_id, name, created_at, updated_at, (xmax = 0) AS created",
        )
        .bind(env.tenant_id)
        .bind(external_id)
        .bind(name)
        .fetch_one(&mut *db)
        .await?;
        let (id, external_id, name, created_at, updated_at, created) = row;
        (
            UserView {
                id,
                external_id,
                name,
                created_at,
                updated_at,
            },
            created,
        )
    };
    let mut data = serde_json::to_value(&user).map_err(|err| sqlx::Error::Encode(err.into()))?;
    if let Some(data) = data.as_object_mut() {
        data.insert("created".into(), json!(created));
    }
    events::emit(db, env.tenant_id, "user", user.id.get(), "upserted", data).await?;
    Ok((
        200,
        Some(serde_json::to_value(&user).map_err(|err| sqlx::Error::Encode(err.into()))?),
    ))
}
