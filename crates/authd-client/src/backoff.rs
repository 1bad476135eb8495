//! Waits between attempts: doubling up to a bound, with jitter, so that the
//! clients of a restarted server do not all come back in the same instant.

use std::time::Duration;

/// `delay`, scaled by a random factor between ½ and 1.
pub(crate) fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// Delays that double from `first` up to `most`, until reset.
#[derive(Debug)]
pub(crate) struct Backoff {
    first: Duration,
    most: Duration,
    next: Duration,
    /// Waits handed out since the last reset.
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(first: Duration, most: Duration) -> Self {
        Self {
            first,
            most,
            next: first,
            failures: 0,
        }
    }

    /// How many attempts failed in a row.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// The wait before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.most);
        self.failures = self.failures.saturating_add(1);
        jittered(delay)
    }

    /// After a success: the next failure waits the least again. Returns
    /// how many attempts had failed before it.
    pub(crate) fn reset(&mut self) -> u32 {
        self.next = self.first;
        std::mem::take(&mut self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_bound_and_start_over_after_a_reset() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(400));
        let bounds: Vec<_> = (0..4).map(|_| backoff.next_delay()).collect();
        for (delay, most) in bounds.iter().zip([100, 200, 400, 400]) {
            assert!(
                *delay >= ms(most / 2) && *delay <= ms(most),
                "{delay:?} for {most}"
            );
        }
        assert_eq!(backoff.failures(), 4);
        assert_eq!(backoff.reset(), 4);
        assert!(backoff.next_delay() <= ms(100));
    }
}
