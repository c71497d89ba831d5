//! Leases in Postgres: one scanner process runs a detector at a time. A holder renews its lease
//! while it works; a holder that stops (a crash, a partition) loses it when it expires, and another
//! process takes over. Writes of the detector's progress are fenced by the lease, so a holder that
//! lost it cannot move the cursor.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Lease {
    pub name: &'static str,
    pub holder: Uuid,
    pub ttl: Duration,
}

impl Lease {
    pub fn new(name: &'static str, ttl: Duration) -> Self {
        Self {
            name,
            holder: Uuid::new_v4(),
            ttl,
        }
    }

    /// Takes the lease, or renews it when this process holds it; false when another holds it.
    pub async fn acquire(&self, pool: &PgPool) -> sqlx::Result<bool> {
        let ttl = self.ttl.as_secs_f64();
        let held = sqlx::query_scalar!(
            r#"INSERT INTO scanner_leases (name, holder, expires_at)
               VALUES ($1, $2, now() + make_interval(secs => $3))
               ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
               WHERE scanner_leases.holder = EXCLUDED.holder OR scanner_leases.expires_at < now()
               RETURNING holder"#,
            self.name,
            self.holder,
            ttl,
        )
        .fetch_optional(pool)
        .await?;
        Ok(held == Some(self.holder))
    }

    /// Gives the lease up (on shutdown), so another process need not wait for it to expire.
    pub async fn release(&self, pool: &PgPool) -> sqlx::Result<()> {
        sqlx::query!(
            "DELETE FROM scanner_leases WHERE name = $1 AND holder = $2",
            self.name,
            self.holder
        )
        .execute(pool)
        .await?;
        Ok(())
    }
}
