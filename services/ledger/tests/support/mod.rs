//! What the ledger's test binaries share: applying one command as a batch of its own.

use chrono::Utc;
use guarantor_domain::{Command, CommandEnvelope, CommandId, CommandReply, Role, TenantId};
use guarantor_ledger::engine::{apply_batch, Incoming};
use sqlx::PgConnection;

/// Applies `command` (id `id`, by `role` of `tenant`) as a batch of its own on `db` and returns its reply.
pub async fn apply_one(
    db: &mut PgConnection,
    tenant: TenantId,
    role: Role,
    id: CommandId,
    command: Command,
) -> CommandReply {
    let envelope = CommandEnvelope {
        id,
        tenant_id: tenant,
        role,
        fingerprint: "f".into(),
        issued_at: Utc::now(),
        command,
    };
    let mut replies = apply_batch(
        db,
        &[Incoming {
            envelope,
            redrive: false,
        }],
    )
    .await
    .unwrap();
    replies.pop().unwrap()
}
