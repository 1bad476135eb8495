//! The revocation state, held in memory so that ValidateToken needs no
//! database round trip; when it has not matched the store for too long it is
//! not trusted, and validation fails closed.

use std::{
    collections::HashMap,
    sync::{
        PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::store::Revocation;

#[derive(Debug, Clone, Copy, Default)]
struct Restriction {
    disabled: bool,
    deleted: bool,
    tokens_valid_after: Option<i64>,
}

/// Shards of the `jti` map, so that writers and the expiry sweep hold any
/// one lock briefly.
const SHARDS: usize = 64;

/// The revocation state of the whole deployment, as far as this instance
/// knows it.
#[derive(Debug)]
pub struct RevocationState {
    tokens: Box<[RwLock<HashMap<Uuid, i64>>]>,
    users: RwLock<HashMap<Uuid, Restriction>>,
    /// When the state last matched the store, as microseconds since `epoch`
    /// (0: never).
    synced_at: AtomicU64,
    epoch: Instant,
    /// How long the state is trusted after it last matched the store.
    max_staleness: Duration,
}

impl RevocationState {
    /// An empty state, trusted for `max_staleness` after each catch-up.
    pub fn new(max_staleness: Duration) -> Self {
        Self {
            tokens: (0..SHARDS).map(|_| RwLock::default()).collect(),
            users: RwLock::default(),
            synced_at: AtomicU64::new(0),
            epoch: Instant::now(),
            max_staleness,
        }
    }

    fn shard(&self, jti: Uuid) -> &RwLock<HashMap<Uuid, i64>> {
        // v4 and v7 ids both end in random bits.
        let index = (jti.as_u128() % SHARDS as u128) as usize;
        &self.tokens[index]
    }

    /// Applies one revocation.
    pub fn apply(&self, revocation: Revocation) {
        match revocation {
            Revocation::Token { jti, expires_at } => {
                // Expired already (a purge's worth of old rows, say): the
                // token no longer validates anyway.
                if expires_at < time::OffsetDateTime::now_utc().unix_timestamp() {
                    return;
                }
                let mut shard = self
                    .shard(jti)
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                let kept = shard.entry(jti).or_insert(expires_at);
                *kept = (*kept).max(expires_at);
            }
            Revocation::User {
                id,
                disabled,
                tokens_valid_after,
            } => {
                let mut users = self.users.write().unwrap_or_else(PoisonError::into_inner);
                let entry = users.entry(id.as_uuid()).or_default();
                entry.disabled = disabled;
                // A cut-off only moves forward, whatever order news arrive in.
                entry.tokens_valid_after = entry.tokens_valid_after.max(tokens_valid_after);
                if !entry.deleted && !entry.disabled && entry.tokens_valid_after.is_none() {
                    users.remove(&id.as_uuid());
                }
            }
            Revocation::UserDeleted { id } => {
                let mut users = self.users.write().unwrap_or_else(PoisonError::into_inner);
                users.entry(id.as_uuid()).or_default().deleted = true;
            }
        }
    }

    /// Whether the token `jti` of user `sub`, issued at `iat` (Unix
    /// seconds), is revoked; `None` when the state is too old to say.
    pub fn revokes(&self, jti: Uuid, sub: Uuid, iat: u64) -> Option<bool> {
        if !self.is_fresh() {
            return None;
        }
        let logged_out = self
            .shard(jti)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&jti);
        if logged_out {
            return Some(true);
        }
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        Some(users.get(&sub).is_some_and(|user| {
            user.deleted
                || user.disabled
                || user
                    .tokens_valid_after
                    .is_some_and(|cutoff| i64::try_from(iat).map_or(true, |iat| iat < cutoff))
        }))
    }

    /// Records that the state matched the store as of `at`.
    pub fn mark_synced(&self, at: Instant) {
        let micros = u64::try_from(at.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.synced_at.fetch_max(micros, Ordering::AcqRel);
    }

    /// Whether the state matched the store recently enough to be trusted.
    pub fn is_fresh(&self) -> bool {
        self.is_fresh_at(Instant::now())
    }

    fn is_fresh_at(&self, now: Instant) -> bool {
        let synced = self.synced_at.load(Ordering::Acquire);
        if synced == 0 {
            return false;
        }
        let age = now
            .saturating_duration_since(self.epoch)
            .saturating_sub(Duration::from_micros(synced));
        age <= self.max_staleness
    }

    /// Forgets the logged-out tokens whose `expires_at` is before `now`
    /// (Unix seconds). Returns how many were forgotten.
    pub fn forget_expired(&self, now: i64) -> usize {
        let mut forgotten = 0;
        for shard in &self.tokens {
            let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
            let before = shard.len();
            shard.retain(|_, expires_at| *expires_at >= now);
            forgotten += before - shard.len();
        }
        forgotten
    }

    /// How many logged-out tokens and restricted users are held.
    pub fn len(&self) -> (usize, usize) {
        let tokens = self
            .tokens
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum();
        let users = self
            .users
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        (tokens, users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    fn fresh() -> RevocationState {
        let state = RevocationState::new(Duration::from_secs(60));
        state.mark_synced(Instant::now());
        state
    }

    #[test]
    fn a_state_that_never_synced_or_synced_long_ago_says_nothing() {
        let state = RevocationState::new(Duration::from_secs(3));
        assert_eq!(state.revokes(Uuid::new_v4(), Uuid::new_v4(), 1), None);
        let synced = Instant::now();
        state.mark_synced(synced);
        assert_eq!(
            state.revokes(Uuid::new_v4(), Uuid::new_v4(), 1),
            Some(false)
        );
        assert!(state.is_fresh_at(synced + Duration::from_millis(2_999)));
        assert!(!state.is_fresh_at(synced + Duration::from_millis(3_001)));
    }

    #[test]
    fn logged_out_tokens_are_revoked_until_forgotten_after_expiry() {
        let state = fresh();
        let (jti, user) = (Uuid::new_v4(), Uuid::new_v4());
        let expires_at = time::OffsetDateTime::now_utc().unix_timestamp() + 60;
        state.apply(Revocation::Token { jti, expires_at });
        assert_eq!(state.revokes(jti, user, 1), Some(true));
        assert_eq!(state.revokes(Uuid::new_v4(), user, 1), Some(false));
        assert_eq!(
            state.forget_expired(expires_at),
            0,
            "kept through its last second"
        );
        assert_eq!(state.forget_expired(expires_at + 1), 1);
        assert_eq!(state.revokes(jti, user, 1), Some(false));
    }

    #[test]
    fn a_revocation_that_expired_already_is_not_kept() {
        let state = fresh();
        let jti = Uuid::new_v4();
        let expires_at = time::OffsetDateTime::now_utc().unix_timestamp() - 1;
        state.apply(Revocation::Token { jti, expires_at });
        assert_eq!(state.len(), (0, 0));
    }

    #[test]
    fn a_user_cut_off_revokes_earlier_tokens_and_never_moves_back() {
        let state = fresh();
        let user = Uuid::new_v4();
        let restrict = |disabled, cutoff| Revocation::User {
            id: UserId::from(user),
            disabled,
            tokens_valid_after: cutoff,
        };
        state.apply(restrict(false, Some(50)));
        assert_eq!(state.revokes(Uuid::new_v4(), user, 49), Some(true));
        assert_eq!(state.revokes(Uuid::new_v4(), user, 50), Some(false));
        state.apply(restrict(false, Some(40)));
        assert_eq!(state.revokes(Uuid::new_v4(), user, 49), Some(true));

        state.apply(restrict(true, Some(50)));
        assert_eq!(state.revokes(Uuid::new_v4(), user, 60), Some(true));
        state.apply(restrict(false, Some(50)));
        assert_eq!(state.revokes(Uuid::new_v4(), user, 60), Some(false));
    }

    #[test]
    fn a_deleted_user_stays_revoked() {
        let state = fresh();
        let user = Uuid::new_v4();
        state.apply(Revocation::UserDeleted {
            id: UserId::from(user),
        });
        state.apply(Revocation::User {
            id: UserId::from(user),
            disabled: false,
            tokens_valid_after: None,
        });
        assert_eq!(state.revokes(Uuid::new_v4(), user, u64::MAX), Some(true));
        assert_eq!(state.len(), (0, 1));
    }
}
