//! What a Refresh does to a session, decided from the session as stored:
//! a pure function, run again by the store whenever a concurrent Refresh
//! changed the session between its read and its write.

use std::time::Duration;

use time::OffsetDateTime;

use crate::store::{SessionRecord, UserRecord};

/// How long sessions live and how a spent refresh token is treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// A session ends when its refresh token goes unused this long.
    pub refresh_ttl: Duration,
    /// A session ends this long after its Login, however often refreshed.
    pub max_age: Duration,
    /// The refresh token replaced last is still taken this long after its
    /// replacement, and answered with the same new one.
    pub reuse_grace: Duration,
}

impl Default for SessionSettings {
    /// authd's defaults: 30 days unused, 90 days at most, 10 s of grace.
    fn default() -> Self {
        Self {
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            max_age: Duration::from_secs(90 * 24 * 3600),
            reuse_grace: Duration::from_secs(10),
        }
    }
}

impl SessionSettings {
    /// When a refresh token issued at `at` lapses, in a session that may
    /// live until `max_expires_at`: a whole second, as every backend stores
    /// it, so that the expiry a client is told is the one kept.
    pub(crate) fn expiry(
        &self,
        at: OffsetDateTime,
        max_expires_at: OffsetDateTime,
    ) -> OffsetDateTime {
        whole_second((at + self.refresh_ttl).min(max_expires_at))
    }

    /// When a session started at `at` ends at the latest.
    pub(crate) fn max_expiry(&self, at: OffsetDateTime) -> OffsetDateTime {
        whole_second(at + self.max_age)
    }
}

/// `at` without its fraction of a second.
fn whole_second(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(0).unwrap_or(at)
}

/// What a Refresh gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// A new access token for `user`, and the refresh token of the
    /// session's (new or current) generation.
    Granted {
        /// The session as it now stands.
        session: SessionRecord,
        /// Its user.
        user: UserRecord,
        /// Whether this answers a replay within the grace rather than a
        /// rotation.
        replayed: bool,
    },
    /// A spent refresh token came back: the session is ended.
    ReuseDetected(SessionRecord),
    /// Unknown, ended or expired session, or a user who may not log in.
    Refused,
}

/// Decides the Refresh of `found` (the session and its user, as stored) by
/// the token of generation `presented` at `now`, whose new access token's
/// `exp` plus leeway is `access_expires_at`. Returns the session's new
/// state, if it changes, and the decision.
pub(crate) fn plan_refresh(
    found: Option<(SessionRecord, UserRecord)>,
    presented: u64,
    now: OffsetDateTime,
    settings: &SessionSettings,
    access_expires_at: OffsetDateTime,
) -> (Option<SessionRecord>, Decision) {
    let Some((session, user)) = found else {
        return (None, Decision::Refused);
    };
    let cut_off = user
        .tokens_valid_after
        .is_some_and(|cutoff| session.created_at < cutoff);
    if session.revoked_at.is_some()
        || user.disabled_at.is_some()
        || cut_off
        || now >= session.expires_at
    {
        return (None, Decision::Refused);
    }
    let mut next = session.clone();
    next.access_expires_at = next.access_expires_at.max(access_expires_at);
    let replayed = if presented == session.generation {
        next.generation += 1;
        next.last_refreshed_at = now;
        next.expires_at = settings.expiry(now, session.max_expires_at);
        false
    } else if presented.checked_add(1) == Some(session.generation)
        && now < session.last_refreshed_at + settings.reuse_grace
    {
        true
    } else if presented < session.generation {
        next.revoked_at = Some(now);
        return (Some(next.clone()), Decision::ReuseDetected(next));
    } else {
        // A generation never issued: a database restored from before it.
        return (None, Decision::Refused);
    };
    (
        Some(next.clone()),
        Decision::Granted {
            session: next,
            user,
            replayed,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SessionId, UserId, Username};

    const T0: i64 = 1_800_000_000;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(T0 + seconds).unwrap()
    }

    fn settings() -> SessionSettings {
        SessionSettings {
            refresh_ttl: Duration::from_secs(100),
            max_age: Duration::from_secs(250),
            reuse_grace: Duration::from_secs(10),
        }
    }

    fn user() -> UserRecord {
        UserRecord {
            id: UserId::generate(),
            username: Username::parse("alice").unwrap(),
            password_hash: String::new(),
            roles: Vec::new(),
            disabled_at: None,
            tokens_valid_after: None,
            created_at: at(-1000),
            updated_at: at(-1000),
        }
    }

    /// A session started at T0, in generation `generation` since `rotated`.
    fn session(user: &UserRecord, generation: u64, rotated: i64) -> SessionRecord {
        SessionRecord {
            id: SessionId::generate(),
            user_id: user.id,
            created_at: at(0),
            last_refreshed_at: at(rotated),
            expires_at: at(rotated + 100).min(at(250)),
            max_expires_at: at(250),
            revoked_at: None,
            client_address: None,
            user_agent: None,
            generation,
            access_expires_at: at(rotated + 60),
        }
    }

    fn plan(
        session: &SessionRecord,
        user: &UserRecord,
        presented: u64,
        now: i64,
    ) -> (Option<SessionRecord>, Decision) {
        plan_refresh(
            Some((session.clone(), user.clone())),
            presented,
            at(now),
            &settings(),
            at(now + 60),
        )
    }

    #[test]
    fn the_newest_token_rotates() {
        let user = user();
        let session = session(&user, 3, 20);
        let (new, decision) = plan(&session, &user, 3, 30);
        let new = new.unwrap();
        assert_eq!(new.generation, 4);
        assert_eq!(new.last_refreshed_at, at(30));
        assert_eq!(new.expires_at, at(130));
        assert_eq!(new.access_expires_at, at(90));
        assert!(
            matches!(decision, Decision::Granted { replayed: false, session, .. } if session == new)
        );
    }

    #[test]
    fn rotation_never_passes_the_maximum_age() {
        let user = user();
        let session = session(&user, 1, 200);
        let (new, _) = plan(&session, &user, 1, 210);
        assert_eq!(new.unwrap().expires_at, at(250));
    }

    #[test]
    fn the_previous_token_within_the_grace_gets_the_same_generation() {
        let user = user();
        let session = session(&user, 4, 30);
        let (new, decision) = plan(&session, &user, 3, 39);
        let new = new.unwrap();
        assert_eq!(new.generation, 4, "no new generation");
        assert_eq!(new.expires_at, session.expires_at);
        assert_eq!(
            new.access_expires_at,
            at(99),
            "the fresh access token is covered"
        );
        assert!(matches!(decision, Decision::Granted { replayed: true, .. }));
    }

    #[test]
    fn a_spent_token_after_the_grace_or_an_older_one_ends_the_session() {
        let user = user();
        let session = session(&user, 4, 30);
        for (presented, now) in [(3, 40), (3, 90), (2, 31), (1, 31)] {
            let (new, decision) = plan(&session, &user, presented, now);
            let new = new.unwrap();
            assert_eq!(new.revoked_at, Some(at(now)), "{presented} at {now}");
            assert_eq!(new.generation, 4);
            assert_eq!(decision, Decision::ReuseDetected(new));
        }
    }

    #[test]
    fn ended_expired_cut_off_or_disabled_sessions_are_refused_unchanged() {
        let user = user();
        let live = session(&user, 2, 10);
        let mut ended = live.clone();
        ended.revoked_at = Some(at(11));
        let mut disabled = user.clone();
        disabled.disabled_at = Some(at(12));
        let mut cut_off = user.clone();
        cut_off.tokens_valid_after = Some(at(1));
        let cases = [
            (ended, user.clone(), 2, 20),
            (live.clone(), user.clone(), 2, 110),
            (live.clone(), disabled, 2, 20),
            (live.clone(), cut_off, 2, 20),
            (live.clone(), user.clone(), 3, 20),
        ];
        for (session, user, presented, now) in cases {
            assert_eq!(
                plan(&session, &user, presented, now),
                (None, Decision::Refused)
            );
        }
        assert_eq!(
            plan_refresh(None, 1, at(0), &settings(), at(60)),
            (None, Decision::Refused)
        );
    }
}
