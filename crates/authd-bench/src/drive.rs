//! Load: closed loops (N connections × M calls in flight, each call sent
//! when the previous one answered) and open loops (calls sent at a fixed
//! rate, whatever the answers do), every answer checked.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// One call of a scenario: given the worker and its iteration, sends a
/// request and checks the answer. `Err` is a wrong answer: it fails the run.
pub(crate) type Call = Arc<
    dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = Result<Outcome, String>> + Send>>
        + Send
        + Sync,
>;

/// A checked answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Outcome {
    /// The call did its work.
    Served,
    /// The server shed the call (RESOURCE_EXHAUSTED): an expected answer
    /// under overload, counted apart.
    Shed,
    /// The worker has nothing left to send (a pool of single-use tokens ran
    /// out); not counted.
    Exhausted,
}

/// What a load run measured. Latencies are of every answer; the rate
/// counts the served calls answered within the run's window, over the
/// window: answers that trickle in after the load stopped would otherwise
/// be divided by time in which nothing more was offered.
#[derive(Clone)]
pub(crate) struct Measured {
    pub served: Histogram<u64>,
    pub shed: Histogram<u64>,
    served_in_window: u64,
    pub window: Duration,
    pub wrong: Vec<String>,
}

impl Measured {
    /// Records one lag as a served call.
    pub(crate) fn record_lag(&mut self, lag: Duration) {
        self.record(&Ok(Outcome::Served), lag, true);
    }

    /// An empty measurement.
    pub(crate) fn new() -> Self {
        Self {
            served: latency_histogram(),
            shed: latency_histogram(),
            served_in_window: 0,
            window: Duration::ZERO,
            wrong: Vec::new(),
        }
    }

    /// Records one answer, which took `took`; `in_window` if it came
    /// within the load's window.
    pub(crate) fn record(
        &mut self,
        outcome: &Result<Outcome, String>,
        took: Duration,
        in_window: bool,
    ) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        match outcome {
            Ok(Outcome::Served) => {
                self.served.saturating_record(micros);
                self.served_in_window += u64::from(in_window);
            }
            Ok(Outcome::Shed) => self.shed.saturating_record(micros),
            Ok(Outcome::Exhausted) => {}
            Err(wrong) => {
                if self.wrong.len() < 10 {
                    self.wrong.push(wrong.clone());
                }
            }
        }
    }

    /// Adds the answers of another part of the same load.
    pub(crate) fn merge(&mut self, other: &Self) {
        let _ = self.served.add(&other.served);
        let _ = self.shed.add(&other.shed);
        self.served_in_window += other.served_in_window;
        self.wrong.extend(other.wrong.iter().cloned());
    }

    /// Adds a later measurement of the same load: its answers and its
    /// window.
    pub(crate) fn absorb(&mut self, other: &Self) {
        self.merge(other);
        self.window += other.window;
    }

    /// Served calls per second.
    pub(crate) fn rate(&self) -> f64 {
        self.served_in_window as f64 / self.window.as_secs_f64()
    }
}

fn latency_histogram() -> Histogram<u64> {
    // 1 µs to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

/// `workers` loops, each sending its next call when the last answered,
/// until `duration` has passed.
pub(crate) async fn closed_loop(workers: usize, duration: Duration, call: Call) -> Measured {
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let call = call.clone();
        tasks.spawn(async move {
            let mut measured = Measured::new();
            let mut iteration = 0;
            while Instant::now() < end {
                let sent = Instant::now();
                let outcome = call(worker, iteration).await;
                measured.record(&outcome, sent.elapsed(), Instant::now() <= end);
                iteration += 1;
                if matches!(outcome, Ok(Outcome::Exhausted)) {
                    return (measured, true);
                }
            }
            (measured, false)
        });
    }
    let mut total = Measured::new();
    let mut ran_out = false;
    while let Some(done) = tasks.join_next().await {
        if let Ok((measured, exhausted)) = done {
            total.merge(&measured);
            ran_out |= exhausted;
        }
    }
    total.window = load_window(start, duration, ran_out);
    total
}

/// The window of a closed loop begun at `start` for `duration`: a pool
/// that ran out ended the load early, and the rate is then over the time
/// there was load.
pub(crate) fn load_window(start: Instant, duration: Duration, ran_out: bool) -> Duration {
    if ran_out {
        start.elapsed().min(duration)
    } else {
        duration
    }
}

/// Calls sent at `rate` per second for `duration`, each on a task of its
/// own, whatever the answers do; waits for the last answer. The n-th call
/// is made as worker n.
pub(crate) async fn open_loop(rate: f64, duration: Duration, call: Call) -> Measured {
    let measured = Arc::new(Mutex::new(Measured::new()));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent: u64 = 0;
    // Wake once per call at low rates, once a millisecond (sending what is
    // due) at high ones: a generator waking a thousand times a second to
    // send a few hundred Logins takes CPU the server could use.
    let gap = Duration::from_secs_f64(1.0 / rate.max(1.0)).max(Duration::from_millis(1));
    let mut tick = tokio::time::interval(gap);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while start.elapsed() < duration {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let call = call.clone();
            let measured = measured.clone();
            let iteration = sent;
            tasks.spawn(async move {
                let begun = Instant::now();
                // Spread over the connections as the closed loop's
                // workers are.
                let worker = usize::try_from(iteration).unwrap_or(0);
                let outcome = call(worker, iteration).await;
                let took = begun.elapsed();
                let in_window = start.elapsed() <= duration;
                if let Ok(mut m) = measured.lock() {
                    m.record(&outcome, took, in_window);
                }
            });
            sent += 1;
        }
    }
    while tasks.join_next().await.is_some() {}
    let mut total = measured
        .lock()
        .map(|m| m.clone())
        .unwrap_or_else(|_| Measured::new());
    total.window = duration;
    total
}
