//! Password hashing with argon2id, off the async runtime and bounded, so a
//! login flood can neither starve other requests nor exhaust memory: a
//! fixed set of threads (one per core) runs the hashes, behind a queue that
//! holds about a second of work. A check first takes a place in that queue
//! ([`Passwords::queue_place`]), which a Login does before it asks the
//! database anything, so that a Login refused for want of one costs no
//! database read. A check that finds no place, or that no thread took
//! within a second of its caller's arrival (a Login's wait for its turn and
//! for the database count), is refused ([`Overloaded`]).

use std::{
    str::FromStr,
    sync::{Arc, Mutex, PoisonError, mpsc},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use argon2::{
    ARGON2ID_IDENT, Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher as _, Version,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::Password;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for HashCost {
    /// OWASP's recommendation for argon2id: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl HashCost {
    /// The most memory a stored hash may ask for: 256 MiB.
    pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
    /// The most passes a stored hash may ask for.
    pub const MAX_ITERATIONS: u32 = 16;
    /// The most lanes a stored hash may ask for.
    pub const MAX_PARALLELISM: u32 = 16;

    fn of(params: &Params) -> Self {
        Self {
            memory_kib: params.m_cost(),
            iterations: params.t_cost(),
            parallelism: params.p_cost(),
        }
    }

    /// Whether a hash of this cost is safe to run: a stored hash asking for
    /// more (written by an attacker with database access, say) would let
    /// one Login exhaust memory or time, so it is refused instead.
    fn is_sane(&self) -> bool {
        self.memory_kib <= Self::MAX_MEMORY_KIB
            && self.iterations <= Self::MAX_ITERATIONS
            && self.parallelism <= Self::MAX_PARALLELISM
    }
}

/// What a new password must be like. Existing passwords are not checked
/// again at Login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// The fewest characters (Unicode scalar values, after NFC).
    pub min_chars: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { min_chars: 8 }
    }
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    /// The password matches; `rehash` when the stored hash was made with
    /// other parameters than the current ones.
    Matches {
        /// Whether the hash should be replaced by one at today's cost.
        rehash: bool,
    },
    /// Wrong password, unknown user, or a stored hash that is refused.
    Fails,
}

/// The nice value of the hashing threads at [`HashingPriority::Low`]:
/// below the threads that answer requests, so a login flood slows Logins
/// more than ValidateToken.
const HASH_THREAD_NICE: i32 = 10;

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
    fn apply_to_current_thread(self) -> anyhow::Result<()> {
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

/// The longest a password check waits for a hashing thread, counted from
/// when its caller began to wait (a Login's arrival, for a check).
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(1);

/// More password checks are waiting than the threads can run within about
/// a second: this one was refused without running.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("too many password checks are waiting; retry shortly")]
pub struct Overloaded;

type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// The memory a hashing thread keeps from one hash to the next. Without it
/// every check allocates and zeroes megabytes (19 MiB at the default cost:
/// page faults when the allocator maps them afresh), and the allocator
/// holds on to freed blocks in per-thread arenas: after a login flood the
/// server held over 400 MiB, against about 100 MiB with kept memory, and a
/// check took a third longer.
struct Scratch {
    blocks: Vec<Block>,
    /// The most blocks kept: the current cost's. A stored hash of a higher
    /// cost gets memory of its own for that one check.
    keep: usize,
}

impl Scratch {
    fn new(keep: usize) -> Self {
        Self {
            blocks: Vec::new(),
            keep,
        }
    }

    /// Runs `work` with `count` blocks of memory (argon2 overwrites them
    /// before reading them, so what the last hash left there is never
    /// used); `None` when they cannot be allocated.
    fn with_blocks<T>(&mut self, count: usize, work: impl FnOnce(&mut [Block]) -> T) -> Option<T> {
        fn grow(blocks: &mut Vec<Block>, count: usize) -> Option<()> {
            if let Some(more) = count.checked_sub(blocks.len()) {
                blocks.try_reserve_exact(more).ok()?;
                blocks.resize(count, Block::new());
            }
            Some(())
        }
        if count > self.keep {
            let mut once = Vec::new();
            grow(&mut once, count)?;
            return Some(work(&mut once));
        }
        grow(&mut self.blocks, count)?;
        Some(work(&mut self.blocks[..count]))
    }
}

/// The hashing threads and the bounded queue in front of them. The threads
/// end when the last [`Passwords`] clone is dropped.
#[derive(Debug)]
struct HashThreads {
    queue: mpsc::Sender<Job>,
    /// One permit per job that may be queued or running at once.
    places: Arc<Semaphore>,
}

impl HashThreads {
    fn start(
        threads: usize,
        queue_capacity: usize,
        keep_blocks: usize,
        priority: HashingPriority,
    ) -> anyhow::Result<Self> {
        // Every job holds a place until it has run: the places bound the
        // queue.
        let places = queue_capacity.saturating_add(threads);
        let (queue, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        for n in 0..threads {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("authd-argon2-{n}"))
                .spawn(move || {
                    if let Err(err) = priority.apply_to_current_thread() {
                        tracing::warn!(
                            error = format!("{err:#}"),
                            ?priority,
                            "a hashing thread keeps the default priority"
                        );
                    }
                    let mut scratch = Scratch::new(keep_blocks);
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        match job {
                            Ok(job) => job(&mut scratch),
                            Err(mpsc::RecvError) => return,
                        }
                    }
                })
                .context("cannot start a password hashing thread")?;
        }
        Ok(Self {
            queue,
            places: Arc::new(Semaphore::new(places)),
        })
    }
}

/// A place in the hashing queue, held from before a check's other work
/// (a Login's database reads) until a hashing thread has run it.
#[derive(Debug)]
#[must_use = "a place is used by a check"]
pub struct QueuePlace {
    _permit: OwnedSemaphorePermit,
    /// When the caller began to wait: a check that no thread took within
    /// [`MAX_QUEUE_WAIT`] of it is refused.
    waiting_since: Instant,
}

/// Hashes and verifies passwords.
#[derive(Debug, Clone)]
pub struct Passwords {
    argon2: Argon2<'static>,
    /// The cost of new hashes; older hashes are replaced on the next login.
    cost: HashCost,
    /// At most one hash per thread runs at once, each holding `memory_kib`
    /// of memory; the threads keep their memory for the next hash.
    threads: Arc<HashThreads>,
    /// A hash of a random password, verified against when the user does not
    /// exist, so an unknown name costs the same time as a wrong password.
    dummy_hash: Arc<str>,
}

impl Passwords {
    /// A hasher with `cost`, running at most `concurrency` hashes at once
    /// on threads of its own at `priority`, with about a second of work
    /// queued at most.
    ///
    /// # Errors
    /// When the cost parameters are out of argon2's range, or the threads
    /// cannot be started.
    pub fn new(
        cost: HashCost,
        concurrency: usize,
        priority: HashingPriority,
    ) -> anyhow::Result<Self> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|err| anyhow::anyhow!("invalid argon2 parameters: {err}"))?;
        let keep_blocks = params.block_count();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let random = uuid::Uuid::new_v4();
        let timed = Instant::now();
        let dummy_hash = argon2
            .hash_password(random.as_bytes())
            .map_err(|err| anyhow::anyhow!("argon2 failed: {err}"))
            .context("cannot prepare the dummy password hash")?
            .to_string();
        // As many checks as the threads get through in about a second.
        let threads = concurrency.max(1);
        let one = timed.elapsed().max(Duration::from_micros(100));
        let per_second = (MAX_QUEUE_WAIT.as_secs_f64() / one.as_secs_f64()) as usize;
        let queue_capacity = threads.saturating_mul(per_second).max(threads);
        Ok(Self {
            argon2,
            cost,
            threads: Arc::new(HashThreads::start(
                threads,
                queue_capacity,
                keep_blocks,
                priority,
            )?),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Hashes a password into a PHC string with a fresh random salt.
    ///
    /// # Errors
    /// [`Overloaded`] when the queue is full; otherwise when argon2 fails,
    /// which only broken parameters cause.
    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let place = self.queue_place(Instant::now())?;
        let password = password.clone();
        let argon2 = self.argon2.clone();
        self.run_blocking(place, move |_| {
            argon2
                .hash_password(password.expose())
                .map(|hash| hash.to_string())
                .map_err(|err| anyhow::anyhow!("argon2 failed: {err}"))
        })
        .await?
    }

    /// Checks `password` against the PHC string `stored`. With no stored
    /// hash (an unknown user) a dummy hash is verified instead and the check
    /// fails: every call does exactly one argon2 verification. A stored hash
    /// that is not argon2id, or whose cost is out of bounds, is refused
    /// without running it.
    ///
    /// The check runs in `place`, taken by [`Self::queue_place`].
    ///
    /// # Errors
    /// [`Overloaded`] when no hashing thread took this check within a
    /// second of when `place`'s caller began to wait.
    pub async fn verify(
        &self,
        place: QueuePlace,
        password: &Password,
        stored: Option<&str>,
    ) -> anyhow::Result<PasswordCheck> {
        let password = password.clone();
        let current = self.cost;
        let known = stored.is_some();
        let hash: Arc<str> = stored.map_or_else(|| self.dummy_hash.clone(), Arc::from);
        self.run_blocking(place, move |scratch| {
            let Ok(parsed) = PasswordHash::new(&hash) else {
                tracing::error!("a stored password hash is not a PHC string; refused");
                return PasswordCheck::Fails;
            };
            let params = match sane_params(&parsed) {
                Ok(params) => params,
                Err(problem) => {
                    tracing::error!(problem, "a stored password hash is refused");
                    return PasswordCheck::Fails;
                }
            };
            let cost = HashCost::of(&params);
            match verify_in(scratch, password.expose(), &parsed, params) {
                Ok(true) if known => PasswordCheck::Matches {
                    rehash: cost != current,
                },
                Ok(_) => PasswordCheck::Fails,
                Err(problem) => {
                    tracing::error!(problem, "a stored password hash cannot be verified");
                    PasswordCheck::Fails
                }
            }
        })
        .await
    }

    /// A place in the queue for one check or hash, for a caller that began
    /// to wait at `waiting_since`: a Login's arrival, so that its wait for
    /// its turn and for the database count too, and no Login is answered
    /// after queueing for more than about a second.
    ///
    /// # Errors
    /// [`Overloaded`] when the queue holds about a second of work already.
    pub fn queue_place(&self, waiting_since: Instant) -> Result<QueuePlace, Overloaded> {
        let permit = self
            .threads
            .places
            .clone()
            .try_acquire_owned()
            .map_err(|_| Overloaded)?;
        Ok(QueuePlace {
            _permit: permit,
            waiting_since,
        })
    }

    /// Runs `work` on a hashing thread, in `place`. Refused with
    /// [`Overloaded`] when no thread took the work within a second of when
    /// the place's caller began to wait (it would rather hear no at once
    /// than late).
    async fn run_blocking<T: Send + 'static>(
        &self,
        place: QueuePlace,
        work: impl FnOnce(&mut Scratch) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move |scratch| {
            // The whole place moves in: it is given back when the job has
            // run (before its answer is sent, so a caller that has its
            // answer finds the place free), or is dropped unrun, even if
            // the caller stopped waiting.
            let QueuePlace {
                _permit: permit,
                waiting_since,
            } = place;
            let answer = if waiting_since.elapsed() > MAX_QUEUE_WAIT {
                Err(Overloaded)
            } else {
                Ok(span.in_scope(|| work(scratch)))
            };
            drop(permit);
            let _ = done.send(answer);
        });
        self.threads
            .queue
            .send(job)
            .map_err(|_| anyhow::anyhow!("the password hashing threads are gone"))?;
        result
            .await
            .context("a password hashing thread failed")?
            .map_err(anyhow::Error::from)
    }
}

/// Whether `password` hashes to the stored argon2id hash `parsed`, of the
/// checked parameters `params`, computed in the thread's kept memory; the
/// outputs are compared in constant time.
fn verify_in(
    scratch: &mut Scratch,
    password: &[u8],
    parsed: &PasswordHash,
    params: Params,
) -> Result<bool, &'static str> {
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return Err("no salt or no hash");
    };
    let version = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from)
        .map_err(|_| "unknown argon2 version")?;
    let blocks = params.block_count();
    let argon2 = Argon2::new(Algorithm::Argon2id, version, params);
    let mut computed = [0u8; argon2::password_hash::phc::Output::MAX_LENGTH];
    let computed = computed
        .get_mut(..expected.len())
        .ok_or("hash output too long")?;
    scratch
        .with_blocks(blocks, |blocks| {
            argon2.hash_password_into_with_memory(password, salt.as_ref(), computed, blocks)
        })
        .ok_or("out of memory")?
        .map_err(|_| "argon2 refused the stored parameters")?;
    let computed = argon2::password_hash::phc::Output::new(computed)
        .map_err(|_| "hash output out of range")?;
    // `Output`'s equality is constant-time.
    Ok(computed == *expected)
}

/// The parameters of a stored hash, if it is an argon2id hash of sane cost.
fn sane_params(parsed: &PasswordHash) -> Result<Params, &'static str> {
    if parsed.algorithm != ARGON2ID_IDENT {
        return Err("not argon2id");
    }
    let params = Params::try_from(parsed).map_err(|_| "unreadable argon2 parameters")?;
    if !HashCost::of(&params).is_sane() {
        return Err("argon2 parameters out of bounds");
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Passwords of one lane, `memory_kib` and `iterations`, on `threads`.
    fn of_cost(memory_kib: u32, iterations: u32, threads: usize) -> Passwords {
        let cost = HashCost {
            memory_kib,
            iterations,
            parallelism: 1,
        };
        Passwords::new(cost, threads, HashingPriority::Low).unwrap()
    }

    fn cheap() -> Passwords {
        of_cost(64, 1, 2)
    }

    /// Checks `password` against `stored` for a caller that began to wait
    /// at `since`.
    async fn check_since(
        passwords: &Passwords,
        password: &Password,
        stored: Option<&str>,
        since: Instant,
    ) -> anyhow::Result<PasswordCheck> {
        let place = passwords.queue_place(since)?;
        passwords.verify(place, password, stored).await
    }

    async fn check(
        passwords: &Passwords,
        password: &Password,
        stored: Option<&str>,
    ) -> anyhow::Result<PasswordCheck> {
        check_since(passwords, password, stored, Instant::now()).await
    }

    /// The scheduling policy and nice value of each of the two hashing
    /// threads of `passwords`: two jobs that wait for each other cannot
    /// both run on one thread.
    async fn scheduling_of_both_threads(
        passwords: &Passwords,
    ) -> Vec<(thread_priority::ThreadSchedulePolicy, i32)> {
        let both = Arc::new(std::sync::Barrier::new(2));
        let jobs = (0..2).map(|_| {
            let both = both.clone();
            let place = passwords.queue_place(Instant::now()).unwrap();
            passwords.run_blocking(place, move |_| {
                both.wait();
                let policy = thread_priority::thread_schedule_policy().unwrap();
                let me = rustix::thread::gettid();
                let nice = rustix::process::getpriority_process(Some(me)).unwrap();
                (policy, nice)
            })
        });
        futures_util::future::try_join_all(jobs).await.unwrap()
    }

    #[tokio::test]
    async fn hashing_threads_run_at_the_priority_asked_for() {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        let cost = HashCost {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let low = Passwords::new(cost, 2, HashingPriority::Low).unwrap();
        for (policy, nice) in scheduling_of_both_threads(&low).await {
            assert_eq!(
                policy,
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other)
            );
            assert_eq!(nice, HASH_THREAD_NICE);
        }
        let idle = Passwords::new(cost, 2, HashingPriority::Idle).unwrap();
        for (policy, _) in scheduling_of_both_threads(&idle).await {
            assert_eq!(
                policy,
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
            );
        }
        // The thread that runs the tests is untouched.
        assert_eq!(
            thread_priority::thread_schedule_policy().unwrap(),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other)
        );
    }

    #[tokio::test]
    async fn a_flood_of_checks_is_refused_at_once_beyond_the_queue() {
        // One thread, a hash of some milliseconds: the queue holds about a
        // second's worth, far fewer than the flood.
        let passwords = of_cost(4096, 2, 1);
        let password = Password::parse("correct horse").unwrap();
        let hash = passwords.hash(&password).await.unwrap();
        let checks = (0..2_000).map(|_| {
            let (passwords, password, hash) = (passwords.clone(), password.clone(), hash.clone());
            tokio::spawn(async move { check(&passwords, &password, Some(&hash)).await })
        });
        let (mut matched, mut refused) = (0, 0);
        for check in checks.collect::<Vec<_>>() {
            match check.await.unwrap() {
                Ok(PasswordCheck::Matches { .. }) => matched += 1,
                Err(err) if err.is::<Overloaded>() => refused += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(
            matched > 0 && refused > 0,
            "{matched} matched, {refused} refused"
        );
        assert_eq!(matched + refused, 2_000);
    }

    #[tokio::test]
    async fn a_place_is_held_until_its_check_has_run_even_if_its_caller_gave_up() {
        let passwords = of_cost(64, 1, 1);
        let places = || passwords.threads.places.available_permits();
        let all = places();
        // The one thread runs a job that waits on `gate`, so the next check
        // stays queued.
        let (open, gate) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let place = passwords.queue_place(Instant::now()).unwrap();
        let busy = tokio::spawn({
            let passwords = passwords.clone();
            async move {
                passwords
                    .run_blocking(place, move |_| {
                        let _ = started.send(());
                        let _ = gate.recv();
                    })
                    .await
            }
        });
        running.await.unwrap();
        let password = Password::parse("correct horse").unwrap();
        let given_up = passwords.verify(
            passwords.queue_place(Instant::now()).unwrap(),
            &password,
            None,
        );
        // Polled once, so queued, then dropped: its caller stopped waiting.
        assert!(futures_util::FutureExt::now_or_never(given_up).is_none());
        assert_eq!(places(), all - 2);

        open.send(()).unwrap();
        busy.await.unwrap().unwrap();
        // The thread runs jobs in order: once this check has its answer,
        // the one given up has run too, and every place is back.
        check(&passwords, &password, None).await.unwrap();
        assert_eq!(places(), all);
    }

    #[tokio::test]
    async fn places_run_out_then_come_back() {
        let passwords = of_cost(64, 1, 1);
        let held: Vec<_> = std::iter::from_fn(|| passwords.queue_place(Instant::now()).ok())
            .take(100_000)
            .collect();
        assert!(held.len() > 1 && held.len() < 100_000, "{}", held.len());
        assert!(passwords.queue_place(Instant::now()).is_err());
        let password = Password::parse("correct horse").unwrap();
        assert!(
            check(&passwords, &password, None)
                .await
                .is_err_and(|err| err.is::<Overloaded>())
        );
        drop(held);
        assert_eq!(
            check(&passwords, &password, None).await.unwrap(),
            PasswordCheck::Fails
        );
    }

    #[tokio::test]
    async fn a_check_whose_caller_waited_a_second_already_is_refused() {
        let passwords = cheap();
        let password = Password::parse("correct horse").unwrap();
        let hash = passwords.hash(&password).await.unwrap();
        let long_ago = Instant::now()
            .checked_sub(MAX_QUEUE_WAIT + Duration::from_millis(1))
            .unwrap();
        let late = check_since(&passwords, &password, Some(&hash), long_ago).await;
        assert!(late.is_err_and(|err| err.is::<Overloaded>()));
        let just_in_time = Instant::now()
            .checked_sub(MAX_QUEUE_WAIT - Duration::from_millis(500))
            .unwrap();
        assert_eq!(
            check_since(&passwords, &password, Some(&hash), just_in_time)
                .await
                .unwrap(),
            PasswordCheck::Matches { rehash: false }
        );
    }

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_do_not() {
        let passwords = cheap();
        let right = Password::parse("correct horse").unwrap();
        let wrong = Password::parse("correct horsf").unwrap();
        let hash = passwords.hash(&right).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert_eq!(
            check(&passwords, &right, Some(&hash)).await.unwrap(),
            PasswordCheck::Matches { rehash: false }
        );
        assert_eq!(
            check(&passwords, &wrong, Some(&hash)).await.unwrap(),
            PasswordCheck::Fails
        );
    }

    #[tokio::test]
    async fn unknown_users_never_verify_and_garbage_hashes_fail_closed() {
        let passwords = cheap();
        let password = Password::parse("anything").unwrap();
        assert_eq!(
            check(&passwords, &password, None).await.unwrap(),
            PasswordCheck::Fails
        );
        assert_eq!(
            check(&passwords, &password, Some("not a phc string"))
                .await
                .unwrap(),
            PasswordCheck::Fails
        );
    }

    #[tokio::test]
    async fn hashes_of_another_cost_verify_and_ask_for_a_rehash() {
        let old = cheap();
        let new = of_cost(128, 1, 1);
        let password = Password::parse("correct horse").unwrap();
        let hash = old.hash(&password).await.unwrap();
        assert_eq!(
            check(&new, &password, Some(&hash)).await.unwrap(),
            PasswordCheck::Matches { rehash: true }
        );
    }

    #[tokio::test]
    async fn hashes_of_insane_cost_or_other_algorithms_are_refused_unrun() {
        let passwords = cheap();
        let password = Password::parse("correct horse").unwrap();
        let hash = passwords.hash(&password).await.unwrap();
        // A real hash with its cost raised to 4 GiB: refused before running.
        let greedy = hash.replace("m=64,", "m=4194304,");
        let argon2i = hash.replace("$argon2id$", "$argon2i$");
        for stored in [greedy, argon2i] {
            assert_eq!(
                check(&passwords, &password, Some(&stored)).await.unwrap(),
                PasswordCheck::Fails,
                "{stored}"
            );
        }
    }

    /// The check in kept memory agrees with argon2's own verifier, for
    /// hashes of the current cost, of a higher one (memory of its own), of
    /// the older argon2 version and of a longer output, checked one after
    /// another on one thread so each finds the last one's memory.
    #[tokio::test]
    async fn checks_in_kept_memory_agree_with_argon2s_own_verifier() {
        use argon2::PasswordVerifier as _;

        let passwords = cheap();
        let one_thread = of_cost(64, 1, 1);
        let right = Password::parse("correct horse").unwrap();
        let wrong = Password::parse("correct horsf").unwrap();
        let other = |memory_kib, version, output_len| {
            let params = Params::new(memory_kib, 2, 2, output_len).unwrap();
            Argon2::new(Algorithm::Argon2id, version, params)
                .hash_password(right.expose())
                .unwrap()
                .to_string()
        };
        let hashes = [
            passwords.hash(&right).await.unwrap(),
            other(256, Version::V0x13, None),
            other(64, Version::V0x10, None),
            other(64, Version::V0x13, Some(64)),
            passwords.hash(&right).await.unwrap(),
        ];
        for hash in &hashes {
            let parsed = PasswordHash::new(hash).unwrap();
            for (password, matches) in [(&right, true), (&wrong, false)] {
                let oracle = Argon2::default().verify_password(password.expose(), &parsed);
                assert_eq!(oracle.is_ok(), matches, "{hash}");
                let ours = check(&one_thread, password, Some(hash)).await.unwrap();
                assert_eq!(
                    matches!(ours, PasswordCheck::Matches { .. }),
                    matches,
                    "{hash}"
                );
            }
        }
    }

    #[test]
    fn a_thread_keeps_no_more_memory_than_the_current_cost_needs() {
        let mut scratch = Scratch::new(8);
        assert_eq!(scratch.with_blocks(32, |blocks| blocks.len()), Some(32));
        assert!(scratch.blocks.is_empty(), "a larger hash's memory was kept");
        assert_eq!(scratch.with_blocks(8, |blocks| blocks.len()), Some(8));
        assert_eq!(scratch.blocks.len(), 8);
        assert_eq!(scratch.with_blocks(4, |blocks| blocks.len()), Some(4));
        assert_eq!(scratch.blocks.len(), 8);
    }

    #[test]
    fn default_cost_is_owasp() {
        let cost = HashCost::default();
        assert_eq!(
            (cost.memory_kib, cost.iterations, cost.parallelism),
            (19456, 2, 1)
        );
    }
}
