//! The revocation state, held in memory so that ValidateToken needs no
//! database round trip; when it has not matched the store for too long it is
//! not trusted, and validation fails closed. Every change is numbered and
//! broadcast ([`changes`]), for the watchers that keep a copy.

mod changes;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use uuid::Uuid;

use self::changes::ChangeLog;
pub use self::changes::{NumberedChange, RevocationChange, RevocationWatch, WatchStart};
use crate::store::Revocation;

#[derive(Debug, Clone, Copy, Default)]
struct Restriction {
    disabled: bool,
    deleted: bool,
    tokens_valid_after: Option<i64>,
}

impl Restriction {
    /// Tokens issued before this instant (Unix seconds) are revoked.
    fn tokens_issued_before(self) -> Option<i64> {
        if self.deleted || self.disabled {
            Some(i64::MAX)
        } else {
            self.tokens_valid_after
        }
    }
}

/// Shards of each id map, so that writers and the expiry sweep hold any one
/// lock briefly.
const SHARDS: usize = 64;

/// Ids (of tokens, or of sessions) revoked until an instant, after which
/// they need not be remembered.
#[derive(Debug)]
struct ExpiringIds {
    shards: Box<[RwLock<HashMap<Uuid, i64>>]>,
}

impl ExpiringIds {
    fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }

    fn shard(&self, id: Uuid) -> &RwLock<HashMap<Uuid, i64>> {
        // v4 and v7 ids both end in random bits.
        let index = (id.as_u128() % SHARDS as u128) as usize;
        &self.shards[index]
    }

    /// Holds `id` until `expires_at` (Unix seconds), or longer if held so.
    /// Returns the new bound when it changed.
    fn insert(&self, id: Uuid, expires_at: i64) -> Option<i64> {
        // Expired already (a purge's worth of old rows, say): what it
        // revokes no longer validates anyway.
        if expires_at < time::OffsetDateTime::now_utc().unix_timestamp() {
            return None;
        }
        let mut shard = self
            .shard(id)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match shard.get_mut(&id) {
            Some(kept) if *kept >= expires_at => None,
            Some(kept) => {
                *kept = expires_at;
                Some(expires_at)
            }
            None => {
                shard.insert(id, expires_at);
                Some(expires_at)
            }
        }
    }

    /// Every id and its bound.
    fn all(&self) -> Vec<(Uuid, i64)> {
        let mut all = Vec::with_capacity(self.len());
        for shard in &self.shards {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            all.extend(shard.iter().map(|(id, until)| (*id, *until)));
        }
        all
    }

    fn contains(&self, id: Uuid) -> bool {
        self.shard(id)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&id)
    }

    fn forget_expired(&self, now: i64) -> usize {
        let mut forgotten = 0;
        for shard in &self.shards {
            let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
            let before = shard.len();
            shard.retain(|_, expires_at| *expires_at >= now);
            forgotten += before - shard.len();
        }
        forgotten
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// The revocation state of the whole deployment, as far as this instance
/// knows it.
#[derive(Debug)]
pub struct RevocationState {
    /// Logged-out tokens, by `jti`.
    tokens: ExpiringIds,
    /// Ended sessions, by `sid`.
    sessions: ExpiringIds,
    users: RwLock<HashMap<Uuid, Restriction>>,
    /// Revoked signing keys, by `kid`, until no token they signed can be
    /// current (Unix seconds).
    keys: Mutex<HashMap<String, i64>>,
    /// Every change, numbered, for watchers.
    log: ChangeLog,
    /// Tells this state's numbers from those of any other process.
    incarnation: u64,
    /// When the state last matched the store, as microseconds since `epoch`
    /// (0: never).
    synced_at: AtomicU64,
    epoch: Instant,
    /// The wall-clock time of `epoch`.
    epoch_wall: SystemTime,
    /// How long the state is trusted after it last matched the store.
    max_staleness: Duration,
    /// Seconds a token's or session's entry is held past its bound: this
    /// instance's leeway, which may exceed the leeway of the instance that
    /// set the bound.
    margin: i64,
}

/// How many entries of each kind the state holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldRevocations {
    /// Logged-out tokens.
    pub tokens: usize,
    /// Ended sessions.
    pub sessions: usize,
    /// Disabled, deleted or cut-off users.
    pub users: usize,
}

impl RevocationState {
    /// An empty state, trusted for `max_staleness` after each catch-up.
    pub fn new(max_staleness: Duration) -> Self {
        Self {
            tokens: ExpiringIds::new(),
            sessions: ExpiringIds::new(),
            users: RwLock::default(),
            keys: Mutex::default(),
            log: ChangeLog::new(),
            incarnation: Uuid::new_v4().as_u64_pair().0,
            synced_at: AtomicU64::new(0),
            epoch: Instant::now(),
            epoch_wall: SystemTime::now(),
            max_staleness,
            margin: 0,
        }
    }

    /// The same, holding each token's and session's entry `leeway` past
    /// its bound, for an instance that forgives that much clock skew.
    #[must_use]
    pub fn holding_past_expiry(mut self, leeway: Duration) -> Self {
        self.margin = i64::try_from(leeway.as_secs()).unwrap_or(i64::MAX);
        self
    }

    /// Applies one revocation; what it changes is numbered and broadcast.
    pub fn apply(&self, revocation: Revocation) {
        let mut kept = self.log.lock();
        let change = match revocation {
            Revocation::Token { jti, expires_at } => self
                .tokens
                .insert(jti, expires_at.saturating_add(self.margin))
                .map(|expires_at| RevocationChange::Token { jti, expires_at }),
            Revocation::Session { id, expires_at } => self
                .sessions
                .insert(id.as_uuid(), expires_at.saturating_add(self.margin))
                .map(|expires_at| RevocationChange::Session {
                    id: id.as_uuid(),
                    expires_at,
                }),
            Revocation::User {
                id,
                disabled,
                tokens_valid_after,
            } => self.restrict(id.as_uuid(), |entry| {
                entry.disabled = disabled;
                // A cut-off only moves forward, whatever order news arrive in.
                entry.tokens_valid_after = entry.tokens_valid_after.max(tokens_valid_after);
            }),
            Revocation::UserDeleted { id } => {
                self.restrict(id.as_uuid(), |entry| entry.deleted = true)
            }
        };
        if let Some(change) = change {
            self.log.publish(&mut kept, change);
        }
    }

    /// Changes the restriction of user `id`; the change, when its effect
    /// changed.
    fn restrict(&self, id: Uuid, edit: impl FnOnce(&mut Restriction)) -> Option<RevocationChange> {
        let mut users = self.users.write().unwrap_or_else(PoisonError::into_inner);
        let entry = users.entry(id).or_default();
        let before = entry.tokens_issued_before();
        edit(entry);
        let after = entry.tokens_issued_before();
        if !entry.deleted && !entry.disabled && entry.tokens_valid_after.is_none() {
            users.remove(&id);
        }
        (before != after).then_some(RevocationChange::User {
            id,
            tokens_issued_before: after,
        })
    }

    /// Records the signing keys revoked now, each `kid` with the instant
    /// (Unix seconds) after which no token it signed can be current.
    pub fn apply_revoked_keys(&self, revoked: impl IntoIterator<Item = (String, i64)>) {
        let mut kept = self.log.lock();
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        for (kid, expires_at) in revoked {
            if keys.contains_key(&kid) {
                continue;
            }
            keys.insert(kid.clone(), expires_at);
            self.log
                .publish(&mut kept, RevocationChange::Key { kid, expires_at });
        }
    }

    /// A watcher of the state: resuming after change `after` of this
    /// incarnation where every change since is kept, else from a snapshot
    /// of everything in force.
    pub fn watch(&self, after: Option<(u64, u64)>) -> RevocationWatch {
        let mut kept = self.log.lock();
        if let Some((incarnation, seq)) = after
            && incarnation == self.incarnation
            && let Some(watch) = self.log.resume(&kept, seq)
        {
            return watch;
        }
        if let Some(revocations) = kept.current_snapshot() {
            return self.log.snapshot(&kept, revocations);
        }
        let mut revocations: Vec<RevocationChange> = self
            .tokens
            .all()
            .into_iter()
            .map(|(jti, expires_at)| RevocationChange::Token { jti, expires_at })
            .collect();
        revocations.extend(
            self.sessions
                .all()
                .into_iter()
                .map(|(id, expires_at)| RevocationChange::Session { id, expires_at }),
        );
        revocations.extend(
            self.users
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(id, restriction)| RevocationChange::User {
                    id: *id,
                    tokens_issued_before: restriction.tokens_issued_before(),
                }),
        );
        revocations.extend(
            self.keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(kid, expires_at)| RevocationChange::Key {
                    kid: kid.clone(),
                    expires_at: *expires_at,
                }),
        );
        let revocations: Arc<[RevocationChange]> = revocations.into();
        kept.keep_snapshot(revocations.clone());
        self.log.snapshot(&kept, revocations)
    }

    /// What tells this process's change numbers from any other's.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The wall-clock time the state last matched the store; `None` when
    /// it never has.
    pub fn synced_as_of(&self) -> Option<SystemTime> {
        match self.synced_at.load(Ordering::Acquire) {
            0 => None,
            micros => Some(self.epoch_wall + Duration::from_micros(micros)),
        }
    }

    /// Whether the token `jti` of session `sid` and user `sub`, issued at
    /// `iat` (Unix seconds), is revoked; `None` when the state is too old
    /// to say.
    pub fn revokes(&self, jti: Uuid, sid: Option<Uuid>, sub: Uuid, iat: u64) -> Option<bool> {
        if !self.is_fresh() {
            return None;
        }
        if self.tokens.contains(jti) || sid.is_some_and(|sid| self.sessions.contains(sid)) {
            return Some(true);
        }
        let users = self.users.read().unwrap_or_else(PoisonError::into_inner);
        Some(users.get(&sub).is_some_and(|user| {
            user.deleted
                || user.disabled
                || user
                    .tokens_valid_after
                    .is_some_and(|cutoff| authd_token::issued_before(iat, cutoff))
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
        self.synced_at.load(Ordering::Acquire) != 0 && self.age_at(now) <= self.max_staleness
    }

    /// How long ago the state last matched the store (since it was made,
    /// when it never has): what an operator alerts on.
    pub fn age(&self) -> Duration {
        self.age_at(Instant::now())
    }

    fn age_at(&self, now: Instant) -> Duration {
        let lived = now.saturating_duration_since(self.epoch);
        match self.synced_at.load(Ordering::Acquire) {
            0 => lived,
            synced => lived.saturating_sub(Duration::from_micros(synced)),
        }
    }

    /// Forgets the logged-out tokens and ended sessions whose `expires_at`,
    /// plus the margin, is before `now` (Unix seconds). Returns how many were forgotten.
    pub fn forget_expired(&self, now: i64) -> usize {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, expires_at| *expires_at >= now);
        self.tokens.forget_expired(now) + self.sessions.forget_expired(now)
    }

    /// How many entries of each kind are held.
    pub fn held(&self) -> HeldRevocations {
        HeldRevocations {
            tokens: self.tokens.len(),
            sessions: self.sessions.len(),
            users: self
                .users
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SessionId, UserId};

    fn fresh() -> RevocationState {
        let state = RevocationState::new(Duration::from_secs(60));
        state.mark_synced(Instant::now());
        state
    }

    #[test]
    fn a_state_that_never_synced_or_synced_long_ago_says_nothing() {
        let state = RevocationState::new(Duration::from_secs(3));
        assert_eq!(state.revokes(Uuid::new_v4(), None, Uuid::new_v4(), 1), None);
        let synced = Instant::now();
        state.mark_synced(synced);
        assert_eq!(
            state.revokes(Uuid::new_v4(), None, Uuid::new_v4(), 1),
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
        assert_eq!(state.revokes(jti, None, user, 1), Some(true));
        assert_eq!(state.revokes(Uuid::new_v4(), None, user, 1), Some(false));
        assert_eq!(
            state.forget_expired(expires_at),
            0,
            "kept through its last second"
        );
        assert_eq!(state.forget_expired(expires_at + 1), 1);
        assert_eq!(state.revokes(jti, None, user, 1), Some(false));
    }

    #[test]
    fn entries_are_held_past_their_bound_for_the_leeway() {
        let state = RevocationState::new(Duration::from_secs(60))
            .holding_past_expiry(Duration::from_secs(300));
        state.mark_synced(Instant::now());
        let (jti, session, user) = (Uuid::new_v4(), SessionId::generate(), Uuid::new_v4());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        // Bounds set by an instance of no leeway, already past: this one
        // still accepts such tokens for five minutes, so still revokes them.
        state.apply(Revocation::Token {
            jti,
            expires_at: now - 10,
        });
        state.apply(Revocation::Session {
            id: session,
            expires_at: now - 10,
        });
        let sid = Some(session.as_uuid());
        assert_eq!(state.revokes(jti, None, user, 1), Some(true));
        assert_eq!(state.revokes(Uuid::new_v4(), sid, user, 1), Some(true));
        assert_eq!(state.forget_expired(now + 290), 0);
        assert_eq!(state.forget_expired(now + 291), 2);
    }

    #[test]
    fn an_ended_session_revokes_every_token_that_names_it() {
        let state = fresh();
        let (session, user) = (SessionId::generate(), Uuid::new_v4());
        let expires_at = time::OffsetDateTime::now_utc().unix_timestamp() + 60;
        state.apply(Revocation::Session {
            id: session,
            expires_at,
        });
        let sid = Some(session.as_uuid());
        assert_eq!(state.revokes(Uuid::new_v4(), sid, user, 1), Some(true));
        assert_eq!(
            state.revokes(Uuid::new_v4(), Some(Uuid::new_v4()), user, 1),
            Some(false)
        );
        assert_eq!(state.revokes(Uuid::new_v4(), None, user, 1), Some(false));
        assert_eq!(state.forget_expired(expires_at + 1), 1);
        assert_eq!(state.revokes(Uuid::new_v4(), sid, user, 1), Some(false));
    }

    #[test]
    fn a_revocation_that_expired_already_is_not_kept() {
        let state = fresh();
        let jti = Uuid::new_v4();
        let expires_at = time::OffsetDateTime::now_utc().unix_timestamp() - 1;
        state.apply(Revocation::Token { jti, expires_at });
        assert_eq!(state.held().tokens, 0);
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
        assert_eq!(state.revokes(Uuid::new_v4(), None, user, 49), Some(true));
        assert_eq!(state.revokes(Uuid::new_v4(), None, user, 50), Some(false));
        state.apply(restrict(false, Some(40)));
        assert_eq!(state.revokes(Uuid::new_v4(), None, user, 49), Some(true));

        state.apply(restrict(true, Some(50)));
        assert_eq!(state.revokes(Uuid::new_v4(), None, user, 60), Some(true));
        state.apply(restrict(false, Some(50)));
        assert_eq!(state.revokes(Uuid::new_v4(), None, user, 60), Some(false));
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
        assert_eq!(
            state.revokes(Uuid::new_v4(), None, user, u64::MAX),
            Some(true)
        );
        assert_eq!(state.held().users, 1);
    }
}
