//! Password hashing with argon2id, off the async runtime and bounded: a
//! fixed set of threads runs the hashes behind a queue of about a second of
//! work, so a login flood can neither starve other calls nor exhaust memory.

mod cost;
mod priority;
mod threads;
mod verify;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, Version};

pub use cost::{HashCost, PasswordPolicy};
pub use priority::HashingPriority;
pub use threads::{Overloaded, QueuePlace};

use self::{
    threads::{HashThreads, MAX_QUEUE_WAIT},
    verify::{sane_params, verify_in},
};
use crate::{domain::Password, telemetry::metrics::Meter};

/// Hashing or checking a password failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Refused without running: the queue is full, or no thread took the
    /// work within a second.
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    /// The hashing threads have stopped (a bug, or the process ending).
    #[error("the password hashing threads are gone")]
    ThreadsGone,
    /// argon2 refused to hash, which only broken parameters cause.
    #[error("argon2 failed: {0}")]
    Argon2(String),
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
    /// Times each hash.
    meter: Meter,
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
            meter: Meter::off(),
        })
    }

    /// The same hasher, timing each hash with `meter`.
    #[must_use]
    pub fn metered(self, meter: Meter) -> Self {
        Self { meter, ..self }
    }

    /// How many checks and hashes wait for a thread now.
    pub fn waiting(&self) -> usize {
        self.threads.waiting()
    }

    /// Hashes a password into a PHC string with a fresh random salt.
    ///
    /// # Errors
    /// [`Overloaded`] when the queue is full; otherwise when argon2 fails,
    /// which only broken parameters cause.
    pub async fn hash(&self, password: &Password) -> Result<String, PasswordError> {
        let place = self.queue_place(Instant::now())?;
        let password = password.clone();
        let argon2 = self.argon2.clone();
        let meter = self.meter.clone();
        self.threads
            .run(place, move |_| {
                let began = Instant::now();
                let hashed = argon2.hash_password(password.expose());
                meter.password_hashed(began.elapsed());
                hashed
                    .map(|hash| hash.to_string())
                    .map_err(|err| PasswordError::Argon2(err.to_string()))
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
    ) -> Result<PasswordCheck, PasswordError> {
        let password = password.clone();
        let current = self.cost;
        let known = stored.is_some();
        let hash: Arc<str> = stored.map_or_else(|| self.dummy_hash.clone(), Arc::from);
        let meter = self.meter.clone();
        self.threads
            .run(place, move |scratch| {
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
                let began = Instant::now();
                let verified = verify_in(scratch, password.expose(), &parsed, params);
                meter.password_hashed(began.elapsed());
                match verified {
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
        self.threads.place(waiting_since)
    }
}

#[cfg(test)]
mod tests {
    use super::{priority::HASH_THREAD_NICE, threads::Scratch, *};

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
    ) -> Result<PasswordCheck, PasswordError> {
        let place = passwords.queue_place(since)?;
        passwords.verify(place, password, stored).await
    }

    async fn check(
        passwords: &Passwords,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<PasswordCheck, PasswordError> {
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
            passwords.threads.run(place, move |_| {
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
                Err(PasswordError::Overloaded(_)) => refused += 1,
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
        let places = || passwords.threads.free_places();
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
                    .threads
                    .run(place, move |_| {
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
                .is_err_and(|err| matches!(err, PasswordError::Overloaded(_)))
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
        assert!(late.is_err_and(|err| matches!(err, PasswordError::Overloaded(_))));
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
