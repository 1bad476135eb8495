//! Tokens already verified, keyed by their exact text, so that a token seen
//! before skips the signature check; never used past the token's expiry, nor
//! after a key it may have been signed with was revoked.

use std::sync::Arc;

use quick_cache::{Weighter, sync::Cache};

use crate::Claims;

/// What an entry costs beyond its strings: the map slot, the `Arc`, the
/// `Claims` struct.
const ENTRY_OVERHEAD: u64 = 160;

/// An entry: the claims, and the key set generation they were verified in.
#[derive(Clone)]
struct Verified {
    generation: u64,
    claims: Arc<Claims>,
}

/// Weighs an entry by the bytes it holds.
#[derive(Clone)]
struct TokenWeigher;

impl Weighter<String, Verified> for TokenWeigher {
    fn weight(&self, token: &String, verified: &Verified) -> u64 {
        let claims = &verified.claims;
        let strings = claims.iss.len()
            + claims.aud.len()
            + claims.username.len()
            + claims.roles.iter().map(|r| r.len() + 24).sum::<usize>();
        (token.len() + strings) as u64 + ENTRY_OVERHEAD
    }
}

/// The verified-token cache.
pub struct VerifiedTokens {
    cache: Option<Cache<String, Verified, TokenWeigher>>,
    leeway: u64,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens")
            .field("entries", &self.cache.as_ref().map_or(0, Cache::len))
            .finish_non_exhaustive()
    }
}

impl VerifiedTokens {
    /// A cache of at most `capacity_bytes` (0: no cache) for tokens checked
    /// with `leeway` seconds of clock skew.
    pub fn new(capacity_bytes: u64, leeway: u64) -> Self {
        let cache = (capacity_bytes > 0).then(|| {
            // About 600 bytes an entry.
            let estimated = usize::try_from(capacity_bytes / 600)
                .unwrap_or(usize::MAX)
                .max(16);
            Cache::with_weighter(estimated, capacity_bytes, TokenWeigher)
        });
        Self { cache, leeway }
    }

    /// The claims of `token` if it was verified in the key set's
    /// `generation` and is still within its lifetime at `now` (Unix
    /// seconds).
    pub fn get(&self, token: &str, now: u64, generation: u64) -> Option<Arc<Claims>> {
        let cache = self.cache.as_ref()?;
        let verified = cache.get(token)?;
        if now >= verified.claims.exp.saturating_add(self.leeway)
            || verified.generation != generation
        {
            cache.remove(token);
            return None;
        }
        Some(verified.claims)
    }

    /// Remembers that `token` verified to `claims` in the key set's
    /// `generation` (read before the verification began).
    pub fn insert(&self, token: &str, claims: Arc<Claims>, generation: u64) {
        if let Some(cache) = &self.cache {
            cache.insert(token.to_owned(), Verified { generation, claims });
        }
    }

    /// The bytes held, as the cache weighs them.
    pub fn weight(&self) -> u64 {
        self.cache.as_ref().map_or(0, Cache::weight)
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn claims(exp: u64) -> Arc<Claims> {
        Arc::new(Claims {
            iss: "authd".into(),
            aud: "authd".into(),
            sub: Uuid::new_v4(),
            jti: Uuid::new_v4(),
            iat: exp - 900,
            exp,
            username: "alice".into(),
            roles: vec!["reader".into()],
            sid: Some(Uuid::new_v4()),
        })
    }

    #[test]
    fn an_entry_is_never_used_at_or_after_exp_plus_leeway() {
        let cache = VerifiedTokens::new(1 << 20, 5);
        cache.insert("token", claims(1_000), 0);
        assert!(cache.get("token", 1_004, 0).is_some());
        assert!(cache.get("token", 1_005, 0).is_none());
        assert!(
            cache.get("token", 1_000, 0).is_none(),
            "removed once expired"
        );
    }

    #[test]
    fn an_entry_of_an_older_key_generation_is_not_used() {
        let cache = VerifiedTokens::new(1 << 20, 5);
        cache.insert("token", claims(u64::MAX / 2), 1);
        assert!(cache.get("token", 0, 1).is_some());
        assert!(cache.get("token", 0, 2).is_none());
        assert!(cache.get("token", 0, 1).is_none(), "removed once stale");
    }

    #[test]
    fn only_the_exact_text_hits() {
        let cache = VerifiedTokens::new(1 << 20, 0);
        cache.insert("abc.def.ghi", claims(u64::MAX / 2), 0);
        assert!(cache.get("abc.def.ghi", 0, 0).is_some());
        assert!(cache.get("abc.def.ghj", 0, 0).is_none());
        assert!(cache.get("abc.def.gh", 0, 0).is_none());
    }

    #[test]
    fn the_cache_stays_within_its_bytes() {
        let bound = 64 * 1024;
        let cache = VerifiedTokens::new(bound, 0);
        for i in 0..10_000 {
            cache.insert(&format!("{i:0>400}"), claims(u64::MAX / 2), 0);
        }
        assert!(cache.weight() <= bound, "{} > {bound}", cache.weight());
        assert!(cache.weight() > bound / 2);
    }

    #[test]
    fn a_zero_capacity_caches_nothing() {
        let cache = VerifiedTokens::new(0, 0);
        cache.insert("token", claims(u64::MAX / 2), 0);
        assert!(cache.get("token", 0, 0).is_none());
    }
}
