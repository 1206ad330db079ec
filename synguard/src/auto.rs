//! Auto mode's trigger: the SYN rate, sampled from the `SynSeen` counter every
//! [`SAMPLE`], with hysteresis. Engage as soon as one sample is above `syn_rate_on`;
//! disengage only once every sample for [`HOLD`] has been below `syn_rate_off`, so a flood
//! with gaps does not flap the mode on every lull.

use std::time::{Duration, Instant};

pub const SAMPLE: Duration = Duration::from_millis(100);
pub const HOLD: Duration = Duration::from_secs(1);

/// SYN/s from two readings of a monotonic counter.
#[derive(Debug, Default)]
pub struct RateMeter {
    last: Option<(u64, Instant)>,
}

impl RateMeter {
    /// Feeds a counter reading; returns the rate since the previous one. The first reading,
    /// and one after the counter went backwards (maps re-created), only set the baseline.
    pub fn sample(&mut self, value: u64, now: Instant) -> Option<f64> {
        let prev = self.last.replace((value, now));
        let (v0, t0) = prev?;
        let dt = now.checked_duration_since(t0)?.as_secs_f64();
        if value < v0 || dt <= 0.0 {
            return None;
        }
        Some((value - v0) as f64 / dt)
    }
}

/// What changed after a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Engage,
    Disengage,
}

#[derive(Debug)]
pub struct Hysteresis {
    pub engaged: bool,
    below_since: Option<Instant>,
}

impl Hysteresis {
    pub fn new(engaged: bool) -> Self {
        Hysteresis {
            engaged,
            below_since: None,
        }
    }

    pub fn update(&mut self, rate: f64, on: u32, off: u32, now: Instant) -> Option<Transition> {
        if !self.engaged {
            if rate > f64::from(on) {
                self.engaged = true;
                self.below_since = None;
                return Some(Transition::Engage);
            }
            return None;
        }
        if rate < f64::from(off) {
            let since = *self.below_since.get_or_insert(now);
            if now.duration_since(since) + SAMPLE >= HOLD {
                self.engaged = false;
                self.below_since = None;
                return Some(Transition::Disengage);
            }
        } else {
            self.below_since = None;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_from_counter_deltas() {
        let t = Instant::now();
        let mut m = RateMeter::default();
        assert_eq!(m.sample(100, t), None);
        assert_eq!(m.sample(200, t + SAMPLE), Some(1000.0));
        // Counter reset: new baseline, no rate.
        assert_eq!(m.sample(5, t + 2 * SAMPLE), None);
        assert_eq!(m.sample(55, t + 3 * SAMPLE), Some(500.0));
    }

    #[test]
    fn engages_fast_and_disengages_after_hold() {
        let t0 = Instant::now();
        let mut h = Hysteresis::new(false);
        let at = |i: u32| t0 + SAMPLE * i;
        assert_eq!(h.update(900.0, 1000, 500, at(0)), None);
        assert_eq!(
            h.update(1000.0, 1000, 500, at(1)),
            None,
            "equal is not above"
        );
        assert_eq!(h.update(1500.0, 1000, 500, at(2)), Some(Transition::Engage));
        // Between the thresholds: stays engaged indefinitely.
        for i in 3..40 {
            assert_eq!(h.update(700.0, 1000, 500, at(i)), None);
        }
        // Below off, but a spike resets the hold.
        for i in 40..45 {
            assert_eq!(h.update(100.0, 1000, 500, at(i)), None);
        }
        assert_eq!(h.update(800.0, 1000, 500, at(45)), None);
        for i in 46..55 {
            assert_eq!(h.update(100.0, 1000, 500, at(i)), None, "sample {i}");
        }
        assert_eq!(
            h.update(100.0, 1000, 500, at(55)),
            Some(Transition::Disengage)
        );
        assert!(!h.engaged);
        assert_eq!(h.update(100.0, 1000, 500, at(56)), None);
    }

    #[test]
    fn restarts_engaged() {
        let t0 = Instant::now();
        let mut h = Hysteresis::new(true);
        assert_eq!(h.update(2000.0, 1000, 500, t0), None);
    }
}
