//! The revocations in force, as the stream last told them, and how fresh
//! that is: the part of the server's state a local validator needs.

use std::{
    collections::HashMap,
    sync::{
        PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use uuid::Uuid;

use crate::{
    Claims,
    pb::{Revocation, revocation::Subject},
};

/// What is revoked, each entry with the instant (Unix seconds) after which
/// it can be forgotten.
#[derive(Debug, Default)]
pub(super) struct Revoked {
    tokens: HashMap<Uuid, i64>,
    sessions: HashMap<Uuid, i64>,
    /// Tokens of a user issued before the instant are revoked.
    users: HashMap<Uuid, i64>,
    keys: HashMap<String, i64>,
}

impl Revoked {
    /// Applies one revocation of the stream, holding it `margin` seconds
    /// past its bound (this validator's leeway). What is not understood is
    /// skipped, with a warning.
    pub(super) fn apply(&mut self, revocation: &Revocation, margin: i64) {
        let seconds = |at: &Option<prost_types::Timestamp>| at.as_ref().map(|at| at.seconds);
        let until =
            seconds(&revocation.expires_at).map_or(i64::MAX, |at| at.saturating_add(margin));
        let id = |text: &str| Uuid::parse_str(text).ok();
        let understood = match &revocation.subject {
            Some(Subject::Jti(jti)) => {
                id(jti).map(|jti| keep_longest(&mut self.tokens, jti, until))
            }
            Some(Subject::SessionId(sid)) => {
                id(sid).map(|sid| keep_longest(&mut self.sessions, sid, until))
            }
            Some(Subject::UserId(user)) => id(user).map(|user| {
                match seconds(&revocation.tokens_issued_before) {
                    // The server's user instants only move forward; a
                    // lifted restriction arrives without one.
                    Some(before) => {
                        self.users.insert(user, before);
                    }
                    None => {
                        self.users.remove(&user);
                    }
                }
            }),
            Some(Subject::KeyId(kid)) => {
                keep_longest(&mut self.keys, kid.clone(), until);
                Some(())
            }
            None => None,
        };
        if understood.is_none() {
            tracing::warn!(
                ?revocation,
                "skipping a revocation this client does not understand"
            );
        }
    }

    /// Whether a token of these claims is revoked.
    pub(super) fn revokes(&self, claims: &Claims) -> bool {
        self.tokens.contains_key(&claims.jti)
            || claims
                .sid
                .is_some_and(|sid| self.sessions.contains_key(&sid))
            || self
                .users
                .get(&claims.sub)
                .is_some_and(|before| authd_token::issued_before(claims.iat, *before))
    }

    /// Whether the key `kid` is revoked.
    pub(super) fn revokes_key(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The revoked keys.
    pub(super) fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Forgets what no current token can need any more.
    pub(super) fn forget_expired(&mut self, now: i64) {
        self.tokens.retain(|_, until| *until >= now);
        self.sessions.retain(|_, until| *until >= now);
        self.keys.retain(|_, until| *until >= now);
    }

    /// How many entries are held.
    pub(super) fn len(&self) -> usize {
        self.tokens.len() + self.sessions.len() + self.users.len() + self.keys.len()
    }
}

fn keep_longest<K: std::hash::Hash + Eq>(map: &mut HashMap<K, i64>, key: K, until: i64) {
    let kept = map.entry(key).or_insert(until);
    *kept = (*kept).max(until);
}

/// The revocations and when they were last known complete.
#[derive(Debug)]
pub(super) struct View {
    pub(super) revoked: RwLock<Revoked>,
    /// The instant the view was last known complete, as microseconds
    /// since `epoch` (0: never).
    as_of: AtomicU64,
    /// Earlier than any instant at which a fresh view can have been
    /// complete: `max_staleness` before the view was made.
    epoch: Instant,
    max_staleness: Duration,
}

impl View {
    pub(super) fn new(max_staleness: Duration) -> Self {
        Self {
            revoked: RwLock::default(),
            as_of: AtomicU64::new(0),
            epoch: Instant::now()
                .checked_sub(max_staleness + Duration::from_secs(1))
                .unwrap_or_else(Instant::now),
            max_staleness,
        }
    }

    /// Whether the token is revoked; `None` when the view is too old to
    /// say.
    pub(super) fn revokes(&self, claims: &Claims) -> Option<bool> {
        if !self.is_fresh() {
            return None;
        }
        Some(self.read().revokes(claims))
    }

    pub(super) fn read(&self) -> std::sync::RwLockReadGuard<'_, Revoked> {
        self.revoked.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn write(&self) -> std::sync::RwLockWriteGuard<'_, Revoked> {
        self.revoked.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a heartbeat received at `received` that says the server's
    /// state was complete at `as_of` (its wall clock). The heartbeat's age
    /// on arrival is read against this host's clock; a server whose clock
    /// is ahead counts as up to date on arrival, never as newer.
    pub(super) fn heartbeat(&self, as_of: SystemTime, received: Instant) {
        let late = SystemTime::now().duration_since(as_of).unwrap_or_default();
        let Some(complete_at) = received.checked_sub(late) else {
            return;
        };
        // Before the epoch it is stale already: it makes nothing fresh.
        let micros = u64::try_from(
            complete_at
                .saturating_duration_since(self.epoch)
                .as_micros(),
        )
        .unwrap_or(u64::MAX);
        if micros == 0 {
            return;
        }
        self.as_of.fetch_max(micros, Ordering::AcqRel);
    }

    /// Whether the view was complete within `max_staleness`.
    pub(super) fn is_fresh(&self) -> bool {
        self.age().is_some_and(|age| age <= self.max_staleness)
    }

    /// How long ago the view was last known complete; `None`: never.
    pub(super) fn age(&self) -> Option<Duration> {
        match self.as_of.load(Ordering::Acquire) {
            0 => None,
            micros => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_micros(micros)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(user: Uuid, sid: Uuid, iat: u64) -> Claims {
        Claims {
            iss: "authd".into(),
            aud: "authd".into(),
            sub: user,
            jti: Uuid::new_v4(),
            iat,
            exp: iat + 900,
            username: "alice".into(),
            roles: Vec::new(),
            sid: Some(sid),
        }
    }

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    #[test]
    fn each_kind_of_revocation_revokes_what_it_names() {
        let (user, sid) = (Uuid::new_v4(), Uuid::new_v4());
        let token = claims(user, sid, 100);
        let mut revoked = Revoked::default();
        assert!(!revoked.revokes(&token));

        revoked.apply(
            &Revocation {
                subject: Some(Subject::Jti(token.jti.to_string())),
                tokens_issued_before: None,
                expires_at: at(2_000),
            },
            5,
        );
        assert!(revoked.revokes(&token));
        assert!(!revoked.revokes(&claims(user, sid, 100)));

        revoked.apply(
            &Revocation {
                subject: Some(Subject::SessionId(sid.to_string())),
                tokens_issued_before: None,
                expires_at: at(2_000),
            },
            5,
        );
        assert!(revoked.revokes(&claims(user, sid, 100)));
        assert!(!revoked.revokes(&claims(user, Uuid::new_v4(), 100)));

        let user_cut = |before| Revocation {
            subject: Some(Subject::UserId(user.to_string())),
            tokens_issued_before: before,
            expires_at: None,
        };
        revoked.apply(&user_cut(at(101)), 5);
        assert!(revoked.revokes(&claims(user, Uuid::new_v4(), 100)));
        assert!(!revoked.revokes(&claims(user, Uuid::new_v4(), 101)));
        revoked.apply(&user_cut(None), 5);
        assert!(!revoked.revokes(&claims(user, Uuid::new_v4(), 100)));

        // Held for the margin past the bound, then forgotten.
        revoked.forget_expired(2_005);
        assert!(revoked.revokes(&token));
        revoked.forget_expired(2_006);
        assert!(!revoked.revokes(&token));
        assert_eq!(revoked.len(), 0);
    }

    #[test]
    fn a_view_is_fresh_only_within_its_bound_of_a_heartbeat() {
        let view = View::new(Duration::from_secs(5));
        assert!(!view.is_fresh(), "never heard from");
        let now = Instant::now();
        view.heartbeat(SystemTime::now(), now);
        assert!(view.is_fresh());
        // A heartbeat that says the server was complete 6 s ago.
        let stale = View::new(Duration::from_secs(5));
        stale.heartbeat(SystemTime::now() - Duration::from_secs(6), now);
        assert!(!stale.is_fresh());
        // A server clock ahead of ours never makes the view newer than
        // its arrival.
        let ahead = View::new(Duration::from_secs(5));
        ahead.heartbeat(SystemTime::now() + Duration::from_secs(60), now);
        assert!(ahead.age().unwrap() < Duration::from_secs(1));
    }
}
