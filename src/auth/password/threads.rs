//! The hashing threads and the queue in front of them: one thread per
//! core, each keeping its argon2 memory from one hash to the next, and
//! places in the queue that bound it to about a second of work.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use argon2::Block;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{HashingPriority, PasswordError};

/// The longest a password check waits for a hashing thread, counted from
/// when its caller began to wait (a Login's arrival, for a check).
pub(super) const MAX_QUEUE_WAIT: Duration = Duration::from_secs(1);

/// More password checks are waiting than the threads can run within about
/// a second: this one was refused without running.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("too many password checks are waiting; retry shortly")]
pub struct Overloaded;

type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// The memory a hashing thread keeps from one hash to the next. Without it
/// every check allocates and zeroes megabytes (page faults when the
/// allocator maps them afresh), and the allocator holds on to freed blocks
/// in per-thread arenas, so a login flood leaves the server several times
/// larger (BENCHMARKS.md has the peak RSS).
pub(super) struct Scratch {
    pub(super) blocks: Vec<Block>,
    /// The most blocks kept: the current cost's. A stored hash of a higher
    /// cost gets memory of its own for that one check.
    keep: usize,
}

impl Scratch {
    pub(super) fn new(keep: usize) -> Self {
        Self {
            blocks: Vec::new(),
            keep,
        }
    }

    /// Runs `work` with `count` blocks of memory (argon2 overwrites them
    /// before reading them, so what the last hash left there is never
    /// used); `None` when they cannot be allocated.
    pub(super) fn with_blocks<T>(
        &mut self,
        count: usize,
        work: impl FnOnce(&mut [Block]) -> T,
    ) -> Option<T> {
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
/// end when the last [`super::Passwords`] clone is dropped.
#[derive(Debug)]
pub(super) struct HashThreads {
    queue: mpsc::Sender<Job>,
    /// One permit per job that may be queued or running at once.
    places: Arc<Semaphore>,
    /// Jobs sent that no thread has taken yet.
    waiting: Arc<AtomicUsize>,
}

impl HashThreads {
    pub(super) fn start(
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
            waiting: Arc::default(),
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

impl HashThreads {
    /// A place in the queue for one job, for a caller that began to wait
    /// at `waiting_since`.
    ///
    /// # Errors
    /// [`Overloaded`] when the queue holds about a second of work already.
    pub(super) fn place(&self, waiting_since: Instant) -> Result<QueuePlace, Overloaded> {
        let permit = self
            .places
            .clone()
            .try_acquire_owned()
            .map_err(|_| Overloaded)?;
        Ok(QueuePlace {
            _permit: permit,
            waiting_since,
        })
    }

    /// How many jobs wait for a thread now.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// How many places are free now.
    #[cfg(test)]
    pub(super) fn free_places(&self) -> usize {
        self.places.available_permits()
    }

    /// Runs `work` on a hashing thread, in `place`. Refused with
    /// [`Overloaded`] when no thread took the work within a second of when
    /// the place's caller began to wait (it would rather hear no at once
    /// than late).
    pub(super) async fn run<T: Send + 'static>(
        &self,
        place: QueuePlace,
        work: impl FnOnce(&mut Scratch) -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        let waiting = self.waiting.clone();
        let job: Job = Box::new(move |scratch| {
            waiting.fetch_sub(1, Ordering::Relaxed);
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
        self.waiting.fetch_add(1, Ordering::Relaxed);
        if self.queue.send(job).is_err() {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(PasswordError::ThreadsGone);
        }
        Ok(result.await.map_err(|_| PasswordError::ThreadsGone)??)
    }
}
