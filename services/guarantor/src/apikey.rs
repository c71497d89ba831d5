//! `guarantor apikey create|list|revoke`. A key is printed once, at creation; `list` never shows keys.

#![allow(clippy::print_stdout, reason = "this is the command's output")]

use clap::Subcommand;
use guarantor_config::{Config, ExposeSecret};
use guarantor_domain::{ApiKeyId, Role};
use guarantor_ingress::api_keys;

use crate::infra;

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Creates a key (and its tenant if it does not exist) and prints it once.
    Create {
        #[arg(long)]
        tenant: String,
        /// platform, arbiter or admin
        #[arg(long)]
        role: Role,
        /// Print {"id", "tenant", "role", "key"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lists keys (never the keys themselves).
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revokes a key by its id.
    Revoke { id: ApiKeyId },
}

pub async fn run(config: &Config, command: ApikeyCommand) -> anyhow::Result<()> {
    let pool = infra::postgres(config, 2).await?;
    guarantor_store::migrate(&pool).await?;
    match command {
        ApikeyCommand::Create { tenant, role, json } => {
            let created = api_keys::create(&pool, &tenant, role).await?;
            if json {
                let out = serde_json::json!({
                    "id": created.id,
                    "tenant": created.tenant,
                    "role": created.role,
                    "key": created.key.expose_secret(),
                });
                println!("{out}");
            } else {
                println!("id:     {}", created.id);
                println!("tenant: {} (id {})", created.tenant, created.tenant_id);
                println!("role:   {}", created.role);
                println!("key:    {}", created.key.expose_secret());
                println!("Store the key now: it is not shown again.");
            }
        }
        ApikeyCommand::List { tenant, json } => {
            let keys = api_keys::list(&pool, tenant.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string(&keys)?);
            } else {
                for key in keys {
                    let state = key
                        .revoked_at
                        .map_or_else(|| "active".to_owned(), |at| format!("revoked {at}"));
                    println!(
                        "{}  {:<24} {:<8} created {}  {state}",
                        key.id, key.tenant, key.role, key.created_at
                    );
                }
            }
        }
        ApikeyCommand::Revoke { id } => {
            let revoked = api_keys::revoke(&pool, id).await?;
            anyhow::ensure!(revoked, "no active key with id {id}");
            println!("revoked {id}");
        }
    }
    Ok(())
}
