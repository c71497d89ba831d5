//! A short-lived cache of API-key lookups, so a request does not cost a Postgres round trip to
//! authenticate. Entries live [`KEY_CACHE_TTL`]: a revoked key is refused at most that long after
//! `guarantor apikey revoke`. Entries are keyed by the SHA-256 of the presented key, never the key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::api_keys::Principal;

/// How long a lookup (found or not) is trusted.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// Most entries kept; the cache is emptied when it is full (a flood of bad keys cannot grow it).
const KEY_CACHE_MAX: usize = 10_000;

type Entries = HashMap<[u8; 32], (Option<Principal>, Instant)>;

#[derive(Debug, Clone, Default)]
pub struct KeyCache {
    entries: Arc<Mutex<Entries>>,
}

fn digest(presented: &str) -> [u8; 32] {
    Sha256::digest(presented.as_bytes()).into()
}

impl KeyCache {
    /// The cached lookup of `presented`, if fresh: `Some(None)` is a cached refusal.
    pub fn get(&self, presented: &str) -> Option<Option<Principal>> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(&digest(presented))
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(principal, _)| *principal)
    }

    pub fn put(&self, presented: &str, principal: Option<Principal>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= KEY_CACHE_MAX {
                entries.clear();
            }
            entries.insert(digest(presented), (principal, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use guarantor_domain::{ApiKeyId, Role, TenantId};

    use super::*;

    #[test]
    fn a_lookup_is_remembered_and_a_refusal_too() {
        let cache = KeyCache::default();
        assert_eq!(cache.get("gk_a"), None);
        let principal = Principal {
            key_id: ApiKeyId::from_uuid(uuid::Uuid::now_v7()),
            tenant_id: TenantId::new(1).unwrap(),
            role: Role::Admin,
        };
        cache.put("gk_a", Some(principal));
        cache.put("gk_b", None);
        assert_eq!(cache.get("gk_a"), Some(Some(principal)));
        assert_eq!(cache.get("gk_b"), Some(None));
    }
}
