//! WatchRevocations: a snapshot of the revocation state, then each change
//! as it is applied, and heartbeats, to one watcher over one stream.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::{
    pb::{
        Heartbeat, Revocation, RevocationEvent, RevocationSnapshot, revocation::Subject,
        revocation_event::Event,
    },
    status::{Reason, refused},
};
use crate::{
    auth::{Authenticator, NumberedChange, RevocationChange, RevocationWatch, WatchStart},
    domain::Role,
};

/// Revocations a snapshot chunk holds at most: about 60 KB a chunk.
const CHUNK: usize = 1_000;
/// Events queued for one watcher; a watcher that falls further behind than
/// the state's backlog starts over with a snapshot.
const QUEUED: usize = 64;
/// `tokens_issued_before` of a disabled or deleted user: the last second
/// a Timestamp can hold.
const END_OF_TIME: i64 = 253_402_300_799;

/// Who may watch, how often heartbeats go, and how many watch at once.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// The role a watcher's token must carry (a verified client certificate
    /// under mutual TLS is enough too).
    pub role: Role,
    /// Time between heartbeats.
    pub heartbeat: Duration,
    /// Watchers at once, at most; more are refused with RESOURCE_EXHAUSTED.
    pub max_watchers: usize,
}

impl WatchSettings {
    /// The role unless told otherwise.
    pub const DEFAULT_ROLE: &str = "authd:watch";
    /// The heartbeat unless told otherwise.
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
    /// The most watchers at once unless told otherwise.
    pub const DEFAULT_MAX_WATCHERS: usize = 10_000;
    /// The shortest heartbeat a watcher may ask for.
    pub const MIN_HEARTBEAT: Duration = Duration::from_secs(1);

    /// The heartbeat of a watcher that asked for `asked`: never slower than
    /// the server's, never faster than [`Self::MIN_HEARTBEAT`].
    fn heartbeat_for(&self, asked: Option<Duration>) -> Duration {
        asked
            .map_or(self.heartbeat, |asked| asked.min(self.heartbeat))
            .max(Self::MIN_HEARTBEAT.min(self.heartbeat))
    }
}

/// The watchers of one server.
#[derive(Debug, Clone)]
pub(super) struct Watchers {
    pub(super) settings: WatchSettings,
    slots: Arc<Semaphore>,
    /// Cancelled when the server shuts down: every stream ends.
    stop: CancellationToken,
}

impl Watchers {
    pub(super) fn new(settings: WatchSettings, stop: CancellationToken) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(settings.max_watchers)),
            settings,
            stop,
        }
    }

    /// Starts a watcher resuming after `resume_token` where it can, with
    /// heartbeats as often as it asked where allowed, and returns its
    /// stream.
    pub(super) fn start(
        &self,
        auth: &Arc<Authenticator>,
        resume_token: &str,
        heartbeat: Option<Duration>,
    ) -> Result<ReceiverStream<Result<RevocationEvent, Status>>, Status> {
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            refused(
                Code::ResourceExhausted,
                Reason::Overloaded,
                "too many watchers; retry shortly",
            )
        })?;
        let incarnation = auth.revocation_incarnation();
        let watch = auth.watch_revocations(parse_resume_token(resume_token, incarnation));
        let (events, stream) = mpsc::channel(QUEUED);
        let heartbeat = self.settings.heartbeat_for(heartbeat);
        let (auth, stop) = (auth.clone(), self.stop.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let feed = Feed {
                auth,
                events,
                incarnation,
            };
            feed.run(watch, heartbeat, stop).await;
        });
        Ok(ReceiverStream::new(stream))
    }
}

/// One watcher's feed.
struct Feed {
    auth: Arc<Authenticator>,
    events: mpsc::Sender<Result<RevocationEvent, Status>>,
    incarnation: u64,
}

impl Feed {
    /// Sends until the watcher goes away or the server stops.
    async fn run(self, mut watch: RevocationWatch, every: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let Some(mut seen) = self.start(watch.start).await else {
                return;
            };
            // Where the view stands, at once rather than a heartbeat later.
            if !self.send(Event::Heartbeat(self.heartbeat()), seen).await {
                return;
            }
            // Until the watcher falls too far behind and must start over.
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => {
                        let _ = self.events.send(Err(refused(
                            Code::Unavailable,
                            Reason::StoreUnavailable,
                            "the server is shutting down; watch another instance",
                        ))).await;
                        return;
                    }
                    () = self.events.closed() => return,
                    _ = ticks.tick() => {
                        if !self.send(Event::Heartbeat(self.heartbeat()), seen).await {
                            return;
                        }
                        continue;
                    }
                    next = watch.changes.recv() => next,
                };
                match next {
                    Ok(numbered) if numbered.seq <= seen => {}
                    Ok(numbered) => {
                        seen = numbered.seq;
                        let event = Event::Revoked(revocation(&numbered.change));
                        if !self.send(event, seen).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
            watch = self.auth.watch_revocations(None);
        }
    }

    /// Sends where the watcher starts; the number of the last change it
    /// then holds, or `None` when it went away.
    async fn start(&self, start: WatchStart) -> Option<u64> {
        match start {
            WatchStart::Resume { after, backlog } => {
                let mut seen = after;
                for NumberedChange { seq, change } in backlog.iter().map(AsRef::as_ref) {
                    seen = *seq;
                    if !self.send(Event::Revoked(revocation(change)), seen).await {
                        return None;
                    }
                }
                Some(seen)
            }
            WatchStart::Snapshot { seq, revocations } => {
                let mut chunks = revocations.chunks(CHUNK).peekable();
                if chunks.peek().is_none() {
                    let empty = RevocationSnapshot {
                        revocations: Vec::new(),
                        complete: true,
                    };
                    return self.send(Event::Snapshot(empty), seq).await.then_some(seq);
                }
                while let Some(chunk) = chunks.next() {
                    let snapshot = RevocationSnapshot {
                        revocations: chunk.iter().map(revocation).collect(),
                        complete: chunks.peek().is_none(),
                    };
                    if !self.send(Event::Snapshot(snapshot), seq).await {
                        return None;
                    }
                }
                Some(seq)
            }
        }
    }

    fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            as_of: self.auth.revocations_as_of().map(timestamp),
        }
    }

    /// Sends `event`, resumable after change `seen`; false when the
    /// watcher has gone away.
    async fn send(&self, event: Event, seen: u64) -> bool {
        let event = RevocationEvent {
            event: Some(event),
            resume_token: resume_token(self.incarnation, seen),
        };
        self.events.send(Ok(event)).await.is_ok()
    }
}

fn revocation(change: &RevocationChange) -> Revocation {
    let at = |seconds: i64| prost_types::Timestamp {
        seconds: seconds.min(END_OF_TIME),
        nanos: 0,
    };
    match change {
        RevocationChange::Token { jti, expires_at } => Revocation {
            subject: Some(Subject::Jti(jti.to_string())),
            tokens_issued_before: None,
            expires_at: Some(at(*expires_at)),
        },
        RevocationChange::Session { id, expires_at } => Revocation {
            subject: Some(Subject::SessionId(id.to_string())),
            tokens_issued_before: None,
            expires_at: Some(at(*expires_at)),
        },
        RevocationChange::User {
            id,
            tokens_issued_before,
        } => Revocation {
            subject: Some(Subject::UserId(id.to_string())),
            tokens_issued_before: tokens_issued_before.map(at),
            expires_at: None,
        },
        RevocationChange::Key { kid, expires_at } => Revocation {
            subject: Some(Subject::KeyId(kid.clone())),
            tokens_issued_before: None,
            expires_at: Some(at(*expires_at)),
        },
    }
}

fn timestamp(at: SystemTime) -> prost_types::Timestamp {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// `r1.<incarnation>.<seq>`, both in hexadecimal: the process and the last
/// change seen. Nothing to keep secret: a forged token only costs its
/// maker the changes it skips.
fn resume_token(incarnation: u64, seq: u64) -> String {
    format!("r1.{incarnation:x}.{seq:x}")
}

/// The change a watcher resumes after, when `token` is one of this
/// process's (`incarnation`); `None`: start with a snapshot.
fn parse_resume_token(token: &str, incarnation: u64) -> Option<(u64, u64)> {
    let mut parts = token.strip_prefix("r1.")?.split('.');
    let of = u64::from_str_radix(parts.next()?, 16).ok()?;
    let seq = u64::from_str_radix(parts.next()?, 16).ok()?;
    (parts.next().is_none() && of == incarnation).then_some((of, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_may_ask_for_faster_heartbeats_down_to_a_second() {
        let settings = WatchSettings {
            role: Role::parse(WatchSettings::DEFAULT_ROLE).unwrap(),
            heartbeat: Duration::from_secs(5),
            max_watchers: 1,
        };
        let secs = Duration::from_secs;
        assert_eq!(settings.heartbeat_for(None), secs(5));
        assert_eq!(settings.heartbeat_for(Some(secs(2))), secs(2));
        assert_eq!(settings.heartbeat_for(Some(secs(60))), secs(5));
        assert_eq!(settings.heartbeat_for(Some(Duration::ZERO)), secs(1));
        assert_eq!(
            settings.heartbeat_for(Some(Duration::from_millis(10))),
            secs(1)
        );
    }

    #[test]
    fn resume_tokens_name_their_process_and_change() {
        let token = resume_token(0xabc, 42);
        assert_eq!(token, "r1.abc.2a");
        assert_eq!(parse_resume_token(&token, 0xabc), Some((0xabc, 42)));
        assert_eq!(parse_resume_token(&token, 0xabd), None);
        for bad in ["", "r1.", "r1.abc", "r1.abc.2a.1", "r2.abc.2a", "r1.xyz.1"] {
            assert_eq!(parse_resume_token(bad, 0xabc), None, "{bad}");
        }
    }
}
