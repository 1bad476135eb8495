//! The changes of the revocation state, numbered in the order they were
//! applied, for watchers that keep a copy of it: the recent ones are kept,
//! so that a watcher that reconnects resumes where it left off, and each new
//! one is broadcast.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::broadcast;
use uuid::Uuid;

/// How many recent changes are kept for watchers that resume.
const KEPT: usize = 16 * 1024;
/// How many changes a watcher may fall behind before it must start over.
const BACKLOG: usize = 4 * 1024;

/// One change of what is revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationChange {
    /// A logged-out token, held until `expires_at` (Unix seconds).
    Token {
        /// Its `jti`.
        jti: Uuid,
        /// Unix seconds.
        expires_at: i64,
    },
    /// An ended session, held until `expires_at` (Unix seconds).
    Session {
        /// Its `sid`.
        id: Uuid,
        /// Unix seconds.
        expires_at: i64,
    },
    /// A user's standing, replacing any before.
    User {
        /// The user.
        id: Uuid,
        /// Tokens with an earlier `iat` (Unix seconds) are revoked;
        /// `i64::MAX` for a disabled or deleted user, `None` for none.
        tokens_issued_before: Option<i64>,
    },
    /// A revoked signing key, held until `expires_at` (Unix seconds).
    Key {
        /// Its `kid`.
        kid: String,
        /// Unix seconds.
        expires_at: i64,
    },
}

/// A change and its number: numbers grow by one from 1, and a watcher that
/// has seen `n` has seen every change up to `n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberedChange {
    /// The change's number.
    pub seq: u64,
    /// What changed.
    pub change: RevocationChange,
}

/// What a watcher starts from.
#[derive(Debug)]
pub enum WatchStart {
    /// The changes after the one it named, none missing.
    Resume {
        /// The number of the change it named.
        after: u64,
        /// Every change since.
        backlog: Vec<Arc<NumberedChange>>,
    },
    /// Every revocation in force, as of change `seq`.
    Snapshot {
        /// The number of the last change the snapshot holds.
        seq: u64,
        /// What is revoked; shared by the watchers that start from the
        /// same change.
        revocations: Arc<[RevocationChange]>,
    },
}

/// A watcher: where it starts, and the changes after that as they come.
#[derive(Debug)]
pub struct RevocationWatch {
    /// Where it starts.
    pub start: WatchStart,
    /// Every change after the start; lagging too far behind is reported
    /// by the receiver, and the watcher must start over.
    pub changes: broadcast::Receiver<Arc<NumberedChange>>,
}

#[derive(Debug)]
pub(super) struct ChangeLog {
    inner: Mutex<Kept>,
    sender: broadcast::Sender<Arc<NumberedChange>>,
}

#[derive(Debug, Default)]
pub(super) struct Kept {
    seq: u64,
    recent: VecDeque<Arc<NumberedChange>>,
    /// The last snapshot and the change it was taken at: watchers that
    /// arrive together (after a restart, say) share one.
    snapshot: Option<(u64, Arc<[RevocationChange]>)>,
}

impl Kept {
    /// The snapshot as of the last change, when one was taken since.
    pub(super) fn current_snapshot(&self) -> Option<Arc<[RevocationChange]>> {
        match &self.snapshot {
            Some((seq, revocations)) if *seq == self.seq => Some(revocations.clone()),
            _ => None,
        }
    }

    pub(super) fn keep_snapshot(&mut self, revocations: Arc<[RevocationChange]>) {
        self.snapshot = Some((self.seq, revocations));
    }
}

impl ChangeLog {
    pub(super) fn new() -> Self {
        Self {
            inner: Mutex::default(),
            sender: broadcast::channel(BACKLOG).0,
        }
    }

    /// Held while the state changes, so that changes are numbered in the
    /// order they were applied and no snapshot falls between a change and
    /// its number.
    pub(super) fn lock(&self) -> MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn publish(&self, kept: &mut Kept, change: RevocationChange) {
        kept.seq += 1;
        // Out of date now: its memory goes back.
        kept.snapshot = None;
        let numbered = Arc::new(NumberedChange {
            seq: kept.seq,
            change,
        });
        if kept.recent.len() == KEPT {
            kept.recent.pop_front();
        }
        kept.recent.push_back(numbered.clone());
        // No receiver: nobody watches now, which is fine.
        let _ = self.sender.send(numbered);
    }

    /// A watcher resuming after change `after`, when every change since is
    /// still kept; `None` otherwise. Called with the lock held, so that
    /// nothing falls between the backlog and the subscription.
    pub(super) fn resume(&self, kept: &Kept, after: u64) -> Option<RevocationWatch> {
        if after > kept.seq {
            return None;
        }
        let oldest = kept.recent.front().map_or(kept.seq + 1, |first| first.seq);
        if after + 1 < oldest {
            return None;
        }
        let backlog = kept
            .recent
            .iter()
            .filter(|numbered| numbered.seq > after)
            .cloned()
            .collect();
        Some(RevocationWatch {
            start: WatchStart::Resume { after, backlog },
            changes: self.sender.subscribe(),
        })
    }

    /// A watcher starting from `revocations`, the state as of now. Called
    /// with the lock held.
    pub(super) fn snapshot(
        &self,
        kept: &Kept,
        revocations: Arc<[RevocationChange]>,
    ) -> RevocationWatch {
        RevocationWatch {
            start: WatchStart::Snapshot {
                seq: kept.seq,
                revocations,
            },
            changes: self.sender.subscribe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> RevocationChange {
        RevocationChange::Token {
            jti: Uuid::new_v4(),
            expires_at: 1,
        }
    }

    #[test]
    fn a_watcher_resumes_with_exactly_what_it_missed() {
        let log = ChangeLog::new();
        let (first, second) = (token(), token());
        {
            let mut kept = log.lock();
            log.publish(&mut kept, first);
            log.publish(&mut kept, second.clone());
        }
        let kept = log.lock();
        let Some(RevocationWatch {
            start: WatchStart::Resume { after: 1, backlog },
            ..
        }) = log.resume(&kept, 1)
        else {
            panic!("not resumed");
        };
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].seq, 2);
        assert_eq!(backlog[0].change, second);
        assert!(matches!(
            log.resume(&kept, 2).map(|w| w.start),
            Some(WatchStart::Resume { backlog, .. }) if backlog.is_empty()
        ));
        assert!(log.resume(&kept, 3).is_none(), "a number never given");
    }

    #[test]
    fn a_gap_no_longer_kept_means_a_snapshot() {
        let log = ChangeLog::new();
        let mut kept = log.lock();
        for _ in 0..KEPT + 2 {
            log.publish(&mut kept, token());
        }
        assert!(log.resume(&kept, 1).is_none());
        assert!(log.resume(&kept, 2).is_some());
    }
}
