//! Connections to Postgres and NATS with errors that tell a newcomer what to start.

use anyhow::Context;
use guarantor_config::Config;
use guarantor_messaging::Client;
use guarantor_store::PgPool;

const START_POSTGRES: &str =
    "start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
(Debian) or `docker compose up -d postgres`, or point GUARANTOR_DATABASE_URL at a running server";
const START_NATS: &str =
    "start it with `nats-server -js` (Debian package nats-server) or `docker compose up -d nats`, \
or point GUARANTOR_NATS_URL at a running server";

/// Connects to the configured database, creating it first when `create` is set.
pub async fn postgres(config: &Config, max_connections: u32) -> anyhow::Result<PgPool> {
    guarantor_store::connect(&config.database_url, max_connections)
        .await
        .with_context(|| format!("Postgres is not reachable (GUARANTOR_DATABASE_URL); {START_POSTGRES}"))
}

pub async fn postgres_created(config: &Config, max_connections: u32) -> anyhow::Result<PgPool> {
    guarantor_store::ensure_database(&config.database_url)
        .await
        .with_context(|| format!("Postgres is not reachable (GUARANTOR_DATABASE_URL); {START_POSTGRES}"))?;
    postgres(config, max_connections).await
}

pub async fn nats(config: &Config, service: &str) -> anyhow::Result<Client> {
    guarantor_messaging::connect_once(&config.nats_url, service)
        .await
        .with_context(|| format!("NATS is not reachable (GUARANTOR_NATS_URL); {START_NATS}"))
}
