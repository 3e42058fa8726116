//! How a consumer that keeps catching up with its producer holds back (and a
//! producer that keeps catching up with its consumer in a full ring: the same, the
//! other way round).
//!
//! A consumer faster than its producer finds the ring empty after every message and
//! looks again at once. Each look pulls the cache lines the producer is about to
//! write (`tail`, the frame being filled), and the producer's next locked
//! instruction then waits for them to come back: measured here, a put took 36 ns
//! with nobody looking and 90 ns with a consumer chasing it. A consumer that, once it
//! sees it is chasing, waits two microseconds before looking finds a batch of
//! messages instead of one, and the producer runs at its own speed (44 ns a put).
//! Half a microsecond did nearly as well while cache-line transfers between the two
//! CPUs took 25 ns; the longer pause keeps batches large when they take longer.
//!
//! "Chasing" means: for [`STREAK`] waits in a row, the next message came during a
//! brief first look ([`look_briefly`]: three looks within three pauses, about 70 ns
//! here, 120 ns on CPUs with a longer pause). A round trip (a pipe's ping-pong) does
//! not look like that, since the reply needs the peer to receive and send first.
//! Once holding back, a wait that finds fewer than two messages after the pause (or
//! none) ends the mode: the producer is not streaming any more, and the pause would
//! only be latency.
//!
//! The state is this process's, per handle, and only a hint: any value is safe.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::signal::{Patience, YIELD_TIME};

/// Waits in a row that must end quickly before a consumer holds back.
pub(crate) const STREAK: u32 = 16;

/// How long a chasing consumer waits before it looks.
pub(crate) const HOLD_BACK: Duration = Duration::from_nanos(2000);

/// Pause rounds in [`look_briefly`]: round `k` pauses `2^k` times.
const BRIEF_ROUNDS: u32 = 2;

/// Looks for `ready()` a few times within a few pauses: whether it came.
pub(crate) fn look_briefly(mut ready: impl FnMut() -> bool) -> bool {
    for round in 0..BRIEF_ROUNDS {
        if ready() {
            return true;
        }
        for _ in 0..(1u32 << round) {
            std::hint::spin_loop();
        }
    }
    ready()
}

/// One handle's record of how its recent waits went.
#[derive(Default)]
pub(crate) struct Pace {
    quick_waits: AtomicU32,
    /// The last wait that got past the brief look slept longer than the yield
    /// phase could have covered.
    slept_long: AtomicBool,
}

impl Clone for Pace {
    /// A new handle (another thread's, another process's) starts afresh.
    fn clone(&self) -> Pace {
        Pace::default()
    }
}

impl Pace {
    /// Called when a consumer finds the ring empty (a producer finds it full) and is
    /// about to wait: if it has been chasing, pauses first, touching no shared
    /// memory. Whether it paused.
    pub(crate) fn hold_back(&self) -> bool {
        if !self.holding_back() {
            return false;
        }
        let until = Instant::now() + HOLD_BACK;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        true
    }

    /// Records whether the wait just begun looked like chasing a producer.
    pub(crate) fn record(&self, chasing: bool) {
        let n = if chasing { self.quick_waits.load(Ordering::Relaxed).saturating_add(1).min(STREAK) } else { 0 };
        self.quick_waits.store(n, Ordering::Relaxed);
    }

    /// Whether the next wait should yield its CPU before sleeping: not after a long
    /// wait. An idle worker between sporadic tasks would otherwise burn the whole
    /// yield phase after every task (measured: 120 µs of CPU a task, four workers,
    /// one task a millisecond); a consumer kept busy by a producer that is only
    /// briefly off its CPU keeps yielding, and does not fall asleep.
    pub(crate) fn patience(&self) -> Patience {
        if self.slept_long.load(Ordering::Relaxed) {
            Patience::Sleep
        } else {
            Patience::Yield
        }
    }

    /// Records how long the last wait past the brief look slept (zero: not at all).
    pub(crate) fn slept(&self, asleep: Duration) {
        self.slept_long.store(asleep >= YIELD_TIME, Ordering::Relaxed);
    }

    fn holding_back(&self) -> bool {
        self.quick_waits.load(Ordering::Relaxed) >= STREAK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_of_quick_waits_holds_back_and_one_slow_wait_ends_it() {
        let pace = Pace::default();
        for _ in 0..STREAK - 1 {
            pace.record(true);
        }
        assert!(!pace.holding_back());
        pace.record(true);
        assert!(pace.holding_back());
        let t = Instant::now();
        assert!(pace.hold_back());
        assert!(t.elapsed() >= HOLD_BACK, "a chasing consumer pauses before it looks");
        pace.record(false);
        assert!(!pace.hold_back(), "one slow wait ends holding back");
    }

    #[test]
    fn a_long_sleep_skips_the_next_yield_phase_and_a_short_wait_restores_it() {
        let pace = Pace::default();
        assert_eq!(pace.patience(), Patience::Yield);
        pace.slept(YIELD_TIME * 10);
        assert_eq!(pace.patience(), Patience::Sleep, "an idle worker sleeps at once");
        pace.slept(Duration::ZERO);
        assert_eq!(pace.patience(), Patience::Yield, "a wait the spin or a short sleep ended");
        pace.slept(YIELD_TIME / 2);
        assert_eq!(pace.patience(), Patience::Yield);
    }

    #[test]
    fn a_brief_look_sees_what_comes_within_it_and_nothing_later() {
        let mut looks = 0;
        assert!(look_briefly(|| {
            looks += 1;
            looks == 2
        }));
        let mut looks = 0;
        assert!(!look_briefly(|| {
            looks += 1;
            false
        }));
        assert_eq!(looks, BRIEF_ROUNDS + 1);
    }
}
