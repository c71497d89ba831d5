//! Postgres access shared by the services. The migrations in `migrations/` are embedded in the binary,
//! so `guarantor migrate` and every service at start apply exactly the schema they were built with.

pub mod views;

use std::str::FromStr;
use std::time::Duration;

use guarantor_config::{ExposeSecret, SecretString};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};

pub use sqlx::PgPool;

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("GUARANTOR_DATABASE_URL is not a valid Postgres URL: {0}")]
    BadUrl(sqlx::Error),
    #[error("cannot reach Postgres: {0}")]
    Unreachable(sqlx::Error),
    #[error("cannot create database {database}: {source}")]
    CreateDatabase { database: String, source: sqlx::Error },
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Every statement is planned for its actual parameters (`plan_cache_mode = force_custom_plan`): the
/// services' statements are prepared once per connection, and a generic plan chosen while a table
/// was new and small (a sequential scan) would otherwise stay in use as the table grows, until an
/// autoanalyze happened to invalidate it. Planning these short statements costs microseconds.
fn options(url: &SecretString) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url.expose_secret())
        .map(|options| {
            options
                .application_name("guarantor")
                .options([("plan_cache_mode", "force_custom_plan")])
        })
        .map_err(StoreError::BadUrl)
}

/// A pool of at most `max_connections`, failing fast when Postgres is down.
pub async fn connect(url: &SecretString, max_connections: u32) -> Result<PgPool, StoreError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options(url)?)
        .await
        .map_err(StoreError::Unreachable)
}

/// Creates the database the URL names if it does not exist yet (a convenience of `guarantor up`;
/// production databases are created by their operators).
pub async fn ensure_database(url: &SecretString) -> Result<(), StoreError> {
    let target = options(url)?;
    let database = target.get_database().unwrap_or("postgres").to_owned();
    let mut admin = PgConnection::connect_with(&target.clone().database("postgres"))
        .await
        .map_err(StoreError::Unreachable)?;
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "exists!""#,
        &database
    )
    .fetch_one(&mut admin)
    .await
    .map_err(StoreError::Unreachable)?;
    if !exists {
        let statement = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
        sqlx::raw_sql(&statement)
            .execute(&mut admin)
            .await
            .map_err(|source| StoreError::CreateDatabase {
                database: database.clone(),
                source,
            })?;
        tracing::info!(%database, "created database");
    }
    admin.close().await.map_err(StoreError::Unreachable)
}

/// Applies every embedded migration that has not run yet.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Whether Postgres answers a trivial query within a second.
pub async fn ping(pool: &PgPool) -> bool {
    let query = sqlx::query!("SELECT 1 AS alive").fetch_one(pool);
    matches!(tokio::time::timeout(Duration::from_secs(1), query).await, Ok(Ok(_)))
}
