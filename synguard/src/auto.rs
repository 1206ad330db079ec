//! Auto mode's trigger: two rates sampled every [`SAMPLE`], with hysteresis. The SYN rate
//! (`SynSeen`) and the forged-ACK rate: ACKs to a listener with no socket and a bad cookie,
//! which count under `AckPassedUnengaged` while not engaged and `CookieAckInvalid` while
//! engaged, so their sum is one continuous count. A pure forged-ACK flood would otherwise
//! never engage, and the kernel would send an RST toward every spoofed source. Engage as
//! soon as one sample has either rate above its `_on` threshold; disengage only once every
//! sample for [`HOLD`] has had both below their `_off` thresholds, so a flood with gaps does
//! not flap the mode on every lull.

use std::time::{Duration, Instant};

use synguard_common::maps::Config;

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

/// One sample of both trigger rates, per second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub syn: f64,
    pub forged_ack: f64,
}

/// The four thresholds, per second, as `CONFIG` holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub syn_on: u32,
    pub syn_off: u32,
    pub ack_on: u32,
    pub ack_off: u32,
}

impl Thresholds {
    pub fn of(c: &Config) -> Thresholds {
        Thresholds {
            syn_on: c.syn_rate_on,
            syn_off: c.syn_rate_off,
            ack_on: c.ack_rate_on,
            ack_off: c.ack_rate_off,
        }
    }

    /// Which rate is above its `_on` threshold, if any: the reason to engage.
    pub fn trigger(&self, r: Rates) -> Option<&'static str> {
        if r.syn > f64::from(self.syn_on) {
            Some("SYN rate above syn_rate_on")
        } else if r.forged_ack > f64::from(self.ack_on) {
            Some("forged-ACK rate above ack_rate_on")
        } else {
            None
        }
    }

    fn all_below_off(&self, r: Rates) -> bool {
        r.syn < f64::from(self.syn_off) && r.forged_ack < f64::from(self.ack_off)
    }
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

    pub fn update(&mut self, rates: Rates, th: Thresholds, now: Instant) -> Option<Transition> {
        if !self.engaged {
            if th.trigger(rates).is_some() {
                self.engaged = true;
                self.below_since = None;
                return Some(Transition::Engage);
            }
            return None;
        }
        if th.all_below_off(rates) {
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

    const TH: Thresholds = Thresholds {
        syn_on: 1000,
        syn_off: 500,
        ack_on: 2000,
        ack_off: 1000,
    };

    fn syn(r: f64) -> Rates {
        Rates {
            syn: r,
            forged_ack: 0.0,
        }
    }

    fn ack(r: f64) -> Rates {
        Rates {
            syn: 0.0,
            forged_ack: r,
        }
    }

    #[test]
    fn engages_fast_and_disengages_after_hold() {
        let t0 = Instant::now();
        let mut h = Hysteresis::new(false);
        let at = |i: u32| t0 + SAMPLE * i;
        assert_eq!(h.update(syn(900.0), TH, at(0)), None);
        assert_eq!(h.update(syn(1000.0), TH, at(1)), None, "equal is not above");
        assert_eq!(h.update(syn(1500.0), TH, at(2)), Some(Transition::Engage));
        // Between the thresholds: stays engaged indefinitely.
        for i in 3..40 {
            assert_eq!(h.update(syn(700.0), TH, at(i)), None);
        }
        // Below off, but a spike resets the hold.
        for i in 40..45 {
            assert_eq!(h.update(syn(100.0), TH, at(i)), None);
        }
        assert_eq!(h.update(syn(800.0), TH, at(45)), None);
        for i in 46..55 {
            assert_eq!(h.update(syn(100.0), TH, at(i)), None, "sample {i}");
        }
        assert_eq!(
            h.update(syn(100.0), TH, at(55)),
            Some(Transition::Disengage)
        );
        assert!(!h.engaged);
        assert_eq!(h.update(syn(100.0), TH, at(56)), None);
    }

    #[test]
    fn a_forged_ack_flood_alone_engages() {
        let t0 = Instant::now();
        let at = |i: u32| t0 + SAMPLE * i;
        let mut h = Hysteresis::new(false);
        assert_eq!(h.update(ack(2000.0), TH, at(0)), None, "equal is not above");
        assert_eq!(
            TH.trigger(ack(2001.0)),
            Some("forged-ACK rate above ack_rate_on")
        );
        assert_eq!(h.update(ack(2001.0), TH, at(1)), Some(Transition::Engage));
        // Forged ACKs above ack_rate_off hold it engaged though no SYN arrives at all.
        for i in 2..40 {
            assert_eq!(h.update(ack(1500.0), TH, at(i)), None, "sample {i}");
        }
        assert!(h.engaged);
    }

    #[test]
    fn disengages_only_when_both_rates_are_below_off() {
        let t0 = Instant::now();
        let at = |i: u32| t0 + SAMPLE * i;
        let mut h = Hysteresis::new(true);
        let both = |s: f64, a: f64| Rates {
            syn: s,
            forged_ack: a,
        };
        // SYNs quiet, forged ACKs still above ack_rate_off: no hold starts.
        for i in 0..30 {
            assert_eq!(h.update(both(0.0, 1000.0), TH, at(i)), None);
        }
        // Forged ACKs quiet, SYNs above syn_rate_off: still none.
        for i in 30..60 {
            assert_eq!(h.update(both(500.0, 0.0), TH, at(i)), None);
        }
        // Both below for the hold time.
        for i in 60..69 {
            assert_eq!(h.update(both(499.0, 999.0), TH, at(i)), None, "sample {i}");
        }
        assert_eq!(
            h.update(both(499.0, 999.0), TH, at(69)),
            Some(Transition::Disengage)
        );
    }

    #[test]
    fn restarts_engaged() {
        let t0 = Instant::now();
        let mut h = Hysteresis::new(true);
        assert_eq!(h.update(syn(2000.0), TH, t0), None);
    }

    #[test]
    fn thresholds_come_from_config() {
        let th = Thresholds::of(&Config::DEFAULT);
        assert_eq!(th.syn_on, Config::DEFAULT.syn_rate_on);
        assert_eq!(th.ack_on, Config::DEFAULT.ack_rate_on);
        assert_eq!(th.ack_off, Config::DEFAULT.ack_rate_off);
    }
}
