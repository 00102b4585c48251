//! Bounded retries with jittered exponential backoff.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use crate::limits::{BACKOFF_MAX, BACKOFF_MIN};

/// Counts retries and sleeps between them; sleeping happens outside any transaction, so no
/// lock is held while waiting.
pub(crate) struct Backoff {
    retries_left: u32,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(max_retries: u32) -> Self {
        Backoff { retries_left: max_retries, next: BACKOFF_MIN }
    }

    /// Sleeps before the next attempt; `false` when no retry is left.
    pub(crate) fn wait(&mut self) -> bool {
        if self.retries_left == 0 {
            return false;
        }
        self.retries_left -= 1;
        std::thread::sleep(jitter(self.next));
        self.next = (self.next * 2).min(BACKOFF_MAX);
        true
    }
}

/// A random duration in [d/2, d], so that clients that failed together do not retry together.
fn jitter(d: Duration) -> Duration {
    let random = RandomState::new().hash_one(std::time::Instant::now());
    let half = d / 2;
    half + Duration::from_nanos(random % (half.as_nanos() as u64 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_growing() {
        let mut b = Backoff::new(3);
        assert!(b.wait());
        assert!(b.wait());
        assert!(b.wait());
        assert!(!b.wait());
        assert_eq!(b.next, BACKOFF_MIN * 8);
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(10));
            assert!(j >= Duration::from_millis(5) && j <= Duration::from_millis(10));
        }
    }
}
