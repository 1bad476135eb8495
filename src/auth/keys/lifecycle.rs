//! A key's life, as a function of its stored instants and the clock:
//! pending → active → retired → removed, or revoked. The plans here decide
//! what a rotation or a revocation writes, from the keys as they are.

use std::time::Duration;

use time::OffsetDateTime;

use crate::store::{KeyEdit, StoredKey};

/// Where a key is in its life at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not yet signing.
    Pending,
    /// Signs new tokens; one key at a time.
    Active,
    /// Published, no longer signing, until its last token has expired.
    Retired,
    /// No token of it can be current: unpublished, deleted by the purge.
    Removed,
    /// Unpublished at once; nothing it signed is valid.
    Revoked,
}

impl KeyState {
    /// The state of `key` at `now`, a retired key being kept `retention`
    /// (the longest a token lives, plus the leeway).
    pub fn of(key: &StoredKey, now: OffsetDateTime, retention: Duration) -> Self {
        if key.revoked_at.is_some() {
            Self::Revoked
        } else if now < key.activates_at {
            Self::Pending
        } else {
            match key.retires_at {
                Some(retired) if now >= retired + retention => Self::Removed,
                Some(retired) if now >= retired => Self::Retired,
                _ => Self::Active,
            }
        }
    }

    /// The name `authd keys list` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Removed => "removed",
            Self::Revoked => "revoked",
        }
    }
}

/// A key as `authd keys list` shows it.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// The key id.
    pub kid: String,
    /// Its state now.
    pub state: KeyState,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When it starts (or started) signing.
    pub activates_at: OffsetDateTime,
    /// When it stops (or stopped) signing, once a successor is scheduled.
    pub retires_at: Option<OffsetDateTime>,
    /// When it was revoked.
    pub revoked_at: Option<OffsetDateTime>,
}

impl KeyInfo {
    /// `key` as of `now`.
    pub fn of(key: &StoredKey, now: OffsetDateTime, retention: Duration) -> Self {
        Self {
            kid: key.kid.clone(),
            state: KeyState::of(key, now, retention),
            created_at: key.created_at,
            activates_at: key.activates_at,
            retires_at: key.retires_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// A new key is pending; it becomes active, and the active one retires,
    /// at `activates_at`.
    Scheduled {
        /// The new key's id.
        kid: String,
        /// When it starts signing.
        activates_at: OffsetDateTime,
    },
    /// A rotation is pending already: nothing was done.
    AlreadyPending {
        /// The pending key's id.
        kid: String,
        /// When it starts signing.
        activates_at: OffsetDateTime,
    },
    /// The active key is younger than the rotation interval: nothing was
    /// done.
    NotDue,
}

/// Why a key was not revoked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeRefusal {
    /// No key has that id.
    #[error("no signing key has the id {0}")]
    NotFound(String),
    /// It was revoked already.
    #[error("the signing key {0} is revoked already")]
    AlreadyRevoked(String),
    /// It is the only key that can sign.
    #[error(
        "the signing key {0} is the only one that can sign: rotate first \
         (authd keys rotate --key-publish-lead 0s), then revoke it"
    )]
    OnlySigner(String),
}

/// Instants of the key lifecycle are whole seconds, as SQLite keeps them.
fn whole_seconds(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(0).unwrap_or(at)
}

fn pending(keys: &[StoredKey], now: OffsetDateTime) -> Option<&StoredKey> {
    keys.iter()
        .filter(|key| key.revoked_at.is_none() && now < key.activates_at)
        .min_by_key(|key| key.activates_at)
}

fn active(keys: &[StoredKey], now: OffsetDateTime) -> Option<&StoredKey> {
    keys.iter()
        .filter(|key| {
            key.revoked_at.is_none()
                && key.activates_at <= now
                && key.retires_at.is_none_or(|retired| now < retired)
        })
        .max_by_key(|key| key.activates_at)
}

/// Whether an automatic rotation every `interval` is due at `now`: no
/// rotation is pending, and the active key has signed that long.
pub(crate) fn is_rotation_due(keys: &[StoredKey], now: OffsetDateTime, interval: Duration) -> bool {
    pending(keys, now).is_none()
        && active(keys, now).is_none_or(|current| now >= current.activates_at + interval)
}

/// The first key of a database that has none: `new`, active from `now`.
/// Nothing when the database holds keys already.
pub(crate) fn plan_bootstrap(
    keys: &[StoredKey],
    mut new: StoredKey,
    now: OffsetDateTime,
) -> Vec<KeyEdit> {
    if !keys.is_empty() {
        return Vec::new();
    }
    let now = whole_seconds(now);
    new.created_at = now;
    new.activates_at = now;
    vec![KeyEdit::Insert(new)]
}

/// A rotation to `new`, which becomes active `lead` after `now`, when the
/// active key retires. With `due_after`, only when the active key has been
/// active that long. Never while another rotation is pending. With no
/// active key, `new` is active at once.
pub(crate) fn plan_rotation(
    keys: &[StoredKey],
    mut new: StoredKey,
    now: OffsetDateTime,
    lead: Duration,
    due_after: Option<Duration>,
) -> (Vec<KeyEdit>, Rotation) {
    if let Some(waiting) = pending(keys, now) {
        return (
            Vec::new(),
            Rotation::AlreadyPending {
                kid: waiting.kid.clone(),
                activates_at: waiting.activates_at,
            },
        );
    }
    let current = active(keys, now);
    if let (Some(interval), Some(current)) = (due_after, current)
        && now < current.activates_at + interval
    {
        return (Vec::new(), Rotation::NotDue);
    }
    let now = whole_seconds(now);
    // With no key signing, waiting for clients to fetch the new one would
    // only leave Login without a key meanwhile.
    let lead = if current.is_some() {
        lead
    } else {
        Duration::ZERO
    };
    let activates_at = now + Duration::from_secs(lead.as_secs());
    new.created_at = now;
    new.activates_at = activates_at;
    new.retires_at = None;
    new.revoked_at = None;
    let kid = new.kid.clone();
    let mut edits = vec![KeyEdit::Insert(new)];
    if let Some(current) = current {
        edits.push(KeyEdit::Reschedule(StoredKey {
            retires_at: Some(activates_at),
            ..current.clone()
        }));
    }
    (edits, Rotation::Scheduled { kid, activates_at })
}

/// The revocation of `kid` at `now`. Revoking the active key makes the
/// pending one active at once; without a pending key it is refused.
/// Revoking a pending key leaves the active one signing.
///
/// On success, the id of the key that was made active, if any.
pub(crate) fn plan_revoke(
    keys: &[StoredKey],
    kid: &str,
    now: OffsetDateTime,
) -> (Vec<KeyEdit>, Result<Option<String>, RevokeRefusal>) {
    let Some(key) = keys.iter().find(|key| key.kid == kid) else {
        return (Vec::new(), Err(RevokeRefusal::NotFound(kid.to_owned())));
    };
    if key.revoked_at.is_some() {
        return (
            Vec::new(),
            Err(RevokeRefusal::AlreadyRevoked(kid.to_owned())),
        );
    }
    let now = whole_seconds(now);
    let revoked = StoredKey {
        revoked_at: Some(now),
        ..key.clone()
    };
    let current = active(keys, now);
    let waiting = pending(keys, now);
    if current.is_some_and(|current| current.kid == key.kid) {
        let Some(successor) = waiting else {
            return (Vec::new(), Err(RevokeRefusal::OnlySigner(kid.to_owned())));
        };
        let edits = vec![
            KeyEdit::Reschedule(StoredKey {
                retires_at: Some(now),
                ..revoked
            }),
            KeyEdit::Reschedule(StoredKey {
                activates_at: now,
                ..successor.clone()
            }),
        ];
        return (edits, Ok(Some(successor.kid.clone())));
    }
    let mut edits = vec![KeyEdit::Reschedule(revoked)];
    // The active key was to retire when this one activated: it now stays.
    if waiting.is_some_and(|waiting| waiting.kid == key.kid)
        && let Some(current) = current
    {
        edits.push(KeyEdit::Reschedule(StoredKey {
            retires_at: None,
            ..current.clone()
        }));
    }
    (edits, Ok(None))
}

/// `keys` with `edits` made: what the store holds once they commit.
pub(crate) fn apply_edits(mut keys: Vec<StoredKey>, edits: &[KeyEdit]) -> Vec<StoredKey> {
    for edit in edits {
        match edit {
            KeyEdit::Insert(key) => keys.push(key.clone()),
            KeyEdit::Reschedule(key) => {
                if let Some(kept) = keys.iter_mut().find(|kept| kept.kid == key.kid) {
                    kept.activates_at = key.activates_at;
                    kept.retires_at = key.retires_at;
                    kept.revoked_at = key.revoked_at;
                }
            }
        }
    }
    in_activation_order(&mut keys);
    keys
}

/// Sorts `keys` in the order they sign: by activation, a key retired in
/// the second its successor activated before that successor.
pub(crate) fn in_activation_order(keys: &mut [StoredKey]) {
    keys.sort_by(|a, b| {
        let order = |key: &StoredKey| (key.activates_at, key.retires_at.is_none(), key.retires_at);
        order(a).cmp(&order(b)).then_with(|| a.kid.cmp(&b.kid))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETENTION: Duration = Duration::from_secs(905);

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).unwrap()
    }

    fn key(kid: &str) -> StoredKey {
        StoredKey {
            kid: kid.to_owned(),
            public_key: vec![0; 32],
            sealed_private_key: Vec::new(),
            sealed_by: "kek".to_owned(),
            created_at: at(0),
            activates_at: at(0),
            retires_at: None,
            revoked_at: None,
        }
    }

    fn states(keys: &[StoredKey], now: OffsetDateTime) -> Vec<(String, KeyState)> {
        keys.iter()
            .map(|k| (k.kid.clone(), KeyState::of(k, now, RETENTION)))
            .collect()
    }

    fn rotate(keys: Vec<StoredKey>, kid: &str, now: OffsetDateTime, lead: u64) -> Vec<StoredKey> {
        let (edits, rotation) =
            plan_rotation(&keys, key(kid), now, Duration::from_secs(lead), None);
        assert!(
            matches!(rotation, Rotation::Scheduled { .. }),
            "{rotation:?}"
        );
        apply_edits(keys, &edits)
    }

    #[test]
    fn a_rotation_publishes_first_then_signs_and_retires_the_old_key() {
        let keys = apply_edits(Vec::new(), &plan_bootstrap(&[], key("a"), at(0)));
        assert!(plan_bootstrap(&keys, key("x"), at(1)).is_empty());
        let keys = rotate(keys, "b", at(100), 600);
        use KeyState::*;
        assert_eq!(
            states(&keys, at(699)),
            [("a".into(), Active), ("b".into(), Pending)]
        );
        assert_eq!(
            states(&keys, at(700)),
            [("a".into(), Retired), ("b".into(), Active)]
        );
        assert_eq!(
            states(&keys, at(700 + 904)),
            [("a".into(), Retired), ("b".into(), Active)]
        );
        assert_eq!(
            states(&keys, at(700 + 905)),
            [("a".into(), Removed), ("b".into(), Active)]
        );
    }

    #[test]
    fn a_second_rotation_waits_for_the_pending_one() {
        let keys = apply_edits(Vec::new(), &plan_bootstrap(&[], key("a"), at(0)));
        let keys = rotate(keys, "b", at(0), 600);
        let (edits, rotation) = plan_rotation(&keys, key("c"), at(10), Duration::ZERO, None);
        assert!(edits.is_empty());
        assert_eq!(
            rotation,
            Rotation::AlreadyPending {
                kid: "b".into(),
                activates_at: at(600)
            }
        );
        // Once it is active, the next may come.
        let keys = rotate(keys, "c", at(600), 0);
        use KeyState::*;
        assert_eq!(
            states(&keys, at(600)),
            [
                ("a".into(), Retired),
                ("b".into(), Retired),
                ("c".into(), Active)
            ]
        );
    }

    #[test]
    fn an_automatic_rotation_waits_for_the_interval() {
        let keys = apply_edits(Vec::new(), &plan_bootstrap(&[], key("a"), at(0)));
        let day = Duration::from_secs(86_400);
        let (edits, rotation) = plan_rotation(&keys, key("b"), at(86_399), day, Some(day));
        assert!(edits.is_empty());
        assert_eq!(rotation, Rotation::NotDue);
        let (edits, rotation) = plan_rotation(&keys, key("b"), at(86_400), day, Some(day));
        assert_eq!(edits.len(), 2);
        assert!(matches!(rotation, Rotation::Scheduled { .. }));
    }

    #[test]
    fn the_only_signing_key_is_not_revoked() {
        let keys = apply_edits(Vec::new(), &plan_bootstrap(&[], key("a"), at(0)));
        let (edits, outcome) = plan_revoke(&keys, "a", at(5));
        assert!(edits.is_empty());
        let refusal = outcome.unwrap_err();
        assert_eq!(refusal, RevokeRefusal::OnlySigner("a".into()));
        assert!(refusal.to_string().contains("authd keys rotate"));
        assert_eq!(
            plan_revoke(&keys, "zz", at(5)).1,
            Err(RevokeRefusal::NotFound("zz".into()))
        );
    }

    #[test]
    fn revoking_the_active_key_brings_the_pending_one_forward() {
        let keys = apply_edits(Vec::new(), &plan_bootstrap(&[], key("a"), at(0)));
        let keys = rotate(keys, "b", at(10), 600);
        let (edits, outcome) = plan_revoke(&keys, "a", at(20));
        assert_eq!(outcome, Ok(Some("b".into())));
        let keys = apply_edits(keys, &edits);
        use KeyState::*;
        assert_eq!(
            states(&keys, at(20)),
            [("a".into(), Revoked), ("b".into(), Active)]
        );
        assert_eq!(
            plan_revoke(&keys, "a", at(21)).1,
            Err(RevokeRefusal::AlreadyRevoked("a".into()))
        );
    }

    #[test]
    fn revoking_the_pending_key_keeps_the_active_one_signing() {
        let keys = apply_edits(Vec::new(), &plan_bootstrap(&[], key("a"), at(0)));
        let keys = rotate(keys, "b", at(10), 600);
        let (edits, outcome) = plan_revoke(&keys, "b", at(20));
        assert_eq!(outcome, Ok(None));
        let keys = apply_edits(keys, &edits);
        use KeyState::*;
        assert_eq!(
            states(&keys, at(5_000)),
            [("a".into(), Active), ("b".into(), Revoked)]
        );
        // A retired key may go too, and the active one stays.
        let keys = rotate(keys, "c", at(5_000), 0);
        let (edits, outcome) = plan_revoke(&keys, "a", at(5_001));
        assert_eq!(outcome, Ok(None));
        let keys = apply_edits(keys, &edits);
        assert_eq!(KeyState::of(&keys[2], at(5_001), RETENTION), Active);
    }
}
