//! How the hashing threads share the CPU with the threads that answer
//! requests: the operating system's priority of each hashing thread.

use std::str::FromStr;

use anyhow::Context as _;

/// The nice value of the hashing threads at [`HashingPriority::Low`]:
/// below the threads that answer requests, so a login flood slows Logins
/// more than ValidateToken.
pub(super) const HASH_THREAD_NICE: i32 = 10;

/// How the hashing threads share the CPU with the threads that answer
/// requests (ValidateToken above all).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HashingPriority {
    /// Nice 10: a tenth of the weight of a request thread. Logins keep a
    /// share of a CPU that ValidateToken saturates, but Linux hands that
    /// share out in pieces of up to a scheduler tick, during which a
    /// request thread on the same CPU waits.
    #[default]
    Low,
    /// `SCHED_IDLE`: hashing gets only the CPU the service's other threads
    /// leave, and a request thread that wakes takes the CPU at once. While
    /// ValidateToken saturates the CPU, Logins all but stop; a check that
    /// has started may then take seconds.
    Idle,
}

impl FromStr for HashingPriority {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        [Self::Low, Self::Idle]
            .into_iter()
            .find(|priority| priority.as_str() == raw)
            .ok_or_else(|| "must be low or idle".to_owned())
    }
}

impl std::fmt::Display for HashingPriority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl HashingPriority {
    /// The flag's spelling of this priority, which [`FromStr`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Idle => "idle",
        }
    }

    /// Applies this priority to the calling thread. Lowering one's own
    /// priority needs no privilege; when it fails anyway the thread runs
    /// at the default priority, and the error says so.
    pub(super) fn apply_to_current_thread(self) -> anyhow::Result<()> {
        match self {
            Self::Low => {
                // Linux keeps a nice value per thread.
                let me = rustix::thread::gettid();
                rustix::process::setpriority_process(Some(me), HASH_THREAD_NICE)
                    .context("cannot set the hashing thread's nice value")
            }
            Self::Idle => {
                use thread_priority::{
                    NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
                    set_thread_priority_and_policy, thread_native_id, thread_schedule_policy,
                };
                let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
                // This sets the policy, then nice 0, which a thread started
                // at a higher nice value may not do without privilege; the
                // nice value means nothing under SCHED_IDLE, so the policy
                // is what is checked.
                let set =
                    set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle);
                match (set, thread_schedule_policy()) {
                    (_, Ok(now)) if now == idle => Ok(()),
                    (Err(err), _) => anyhow::bail!("cannot set SCHED_IDLE: {err:?}"),
                    (Ok(()), now) => anyhow::bail!("SCHED_IDLE did not take: {now:?}"),
                }
            }
        }
    }
}
