//! Token bucket arithmetic for [`TokenBucket`]: the per-source SYN limit and the per-CPU
//! SYN+ACK cap. The eBPF glue does the map I/O; this is the math.
//!
//! No division and no 128-bit products: the level is in nanotokens, so `rate` tokens/s
//! add exactly `rate` nanotokens per elapsed nanosecond, and the one product that could
//! overflow is split into 32-bit halves.

use crate::maps::TokenBucket;

const NANO: u64 = 1_000_000_000;

impl TokenBucket {
    /// Refills for the time since the last call and takes one token if there is one.
    ///
    /// `rate_per_s` 0 means unlimited: always `true`, bucket untouched. `burst` (the depth,
    /// in tokens) 0 means one second's worth. A zeroed bucket (a fresh map entry) starts
    /// full, since its `last_ns` of 0 is long ago. A clock that steps back refills nothing.
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64, rate_per_s: u32, burst: u32) -> bool {
        if rate_per_s == 0 {
            return true;
        }
        let depth = if burst == 0 { rate_per_s } else { burst };
        // At most (2^32 - 1) * 10^9 < 2^62.
        let cap = u64::from(depth) * NANO;
        let rate = u64::from(rate_per_s);
        let level = if self.nanotokens > cap {
            cap
        } else {
            self.nanotokens
        };
        let elapsed = now_ns.saturating_sub(self.last_ns);
        if now_ns > self.last_ns {
            self.last_ns = now_ns;
        }
        let room = cap - level;
        // elapsed * rate = (hi_ns * rate) << 32 + lo_ns * rate; each product < 2^64.
        let hi = (elapsed >> 32) * rate;
        let level = if hi > u64::from(u32::MAX) {
            // The refill is at least 2^64 nanotokens: more than any room.
            cap
        } else {
            let part_hi = hi << 32;
            let part_lo = (elapsed & 0xffff_ffff) * rate;
            if part_hi >= room || part_lo >= room - part_hi {
                cap
            } else {
                level + part_hi + part_lo
            }
        };
        if level >= NANO {
            self.nanotokens = level - NANO;
            true
        } else {
            self.nanotokens = level;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The same bucket in exact 128-bit arithmetic, written from the definition.
    struct Model {
        level: u128,
        last: u64,
    }

    impl Model {
        fn take(&mut self, now: u64, rate: u32, burst: u32) -> bool {
            if rate == 0 {
                return true;
            }
            let depth = if burst == 0 { rate } else { burst } as u128;
            let cap = depth * 1_000_000_000;
            let elapsed = now.saturating_sub(self.last) as u128;
            self.last = self.last.max(now);
            self.level = (self.level.min(cap) + elapsed * rate as u128).min(cap);
            if self.level >= 1_000_000_000 {
                self.level -= 1_000_000_000;
                true
            } else {
                false
            }
        }
    }

    #[test]
    fn basics() {
        let mut b = TokenBucket::default();
        // Fresh bucket at t = 1 s: full, 3 tokens.
        let t = 1_000_000_000;
        assert!(b.take(t, 10, 3));
        assert!(b.take(t, 10, 3));
        assert!(b.take(t, 10, 3));
        assert!(!b.take(t, 10, 3));
        // 10/s: one token per 100 ms, not before.
        assert!(!b.take(t + 99_999_999, 10, 3));
        assert!(b.take(t + 100_000_000, 10, 3));
        assert!(!b.take(t + 100_000_000, 10, 3));
        // Rate 0 = unlimited and leaves the bucket alone.
        let before = b;
        assert!(b.take(t, 0, 0));
        assert_eq!(b, before);
    }

    #[test]
    fn slow_rate_with_frequent_calls_still_refills() {
        // 1 token/s, polled every microsecond: fractions must not be lost.
        let mut b = TokenBucket {
            nanotokens: 0,
            last_ns: 1,
        };
        let mut grants = 0;
        for i in 1..=3_000_000u64 {
            grants += b.take(1 + i * 1000, 1, 1) as u32;
        }
        assert_eq!(grants, 3);
    }

    #[test]
    fn extreme_values() {
        let mut b = TokenBucket {
            nanotokens: u64::MAX,
            last_ns: 0,
        };
        assert!(b.take(u64::MAX, u32::MAX, u32::MAX));
        assert_eq!(b.nanotokens, u64::from(u32::MAX) * NANO - NANO);
        let mut b = TokenBucket {
            nanotokens: 0,
            last_ns: 5,
        };
        assert!(!b.take(4, 1, 1), "clock stepped back: no refill");
        assert_eq!(b.last_ns, 5);
    }

    fn rate() -> impl Strategy<Value = u32> {
        prop_oneof![0u32..5, 1u32..100_000, Just(u32::MAX), any::<u32>()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn matches_exact_model(
            rate in rate(),
            burst in prop_oneof![0u32..5, 1u32..1000, any::<u32>()],
            start_level in any::<u64>(),
            start in any::<u64>(),
            steps in prop::collection::vec(prop_oneof![0u64..10, 0u64..2_000_000_000, any::<u64>()], 1..60),
        ) {
            let mut b = TokenBucket { nanotokens: start_level, last_ns: start };
            let mut m = Model { level: start_level as u128, last: start };
            let mut now = start;
            for (i, s) in steps.iter().enumerate() {
                // Mostly forward, sometimes backward.
                now = if i % 7 == 3 { now.saturating_sub(*s) } else { now.saturating_add(*s) };
                prop_assert_eq!(b.take(now, rate, burst), m.take(now, rate, burst), "step {}", i);
                if rate != 0 {
                    prop_assert_eq!(b.nanotokens as u128, m.level);
                    prop_assert_eq!(b.last_ns, m.last);
                }
            }
        }

        /// Over any run of calls from a full bucket, grants never exceed the depth plus
        /// what the rate allows for the time spanned.
        #[test]
        fn never_exceeds_rate(
            rate in 1u32..10_000,
            burst in 1u32..100,
            gaps in prop::collection::vec(0u64..5_000_000, 1..300),
        ) {
            let mut b = TokenBucket::default();
            let t0 = 10_000_000_000u64;
            let mut now = t0;
            let mut grants = 0u64;
            for g in gaps {
                now += g;
                grants += b.take(now, rate, burst) as u64;
            }
            let allowed = burst as u64 + (now - t0) * rate as u64 / 1_000_000_000;
            prop_assert!(grants <= allowed, "{} > {}", grants, allowed);
        }
    }
}
