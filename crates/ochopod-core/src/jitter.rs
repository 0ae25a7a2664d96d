//! Seedable jitter for backoffs.
//!
//! Hundreds of agents that lose ZooKeeper, or a round, at the same instant and retry on the same
//! schedule retry in lockstep: every retry is a burst. Each agent therefore spreads its delays
//! with its own [`Jitter`], seeded per agent (from its pod key, its pid and its start time, see
//! [`seed_from`]), so that two agents draw different delays while one seed always gives the
//! same sequence (tests replay it).
//!
//! The generator is xorshift64* (Vigna), seeded through splitmix64 so that any seed, zero and
//! neighbouring seeds included, starts from a well-mixed non-zero state. It is fast and small,
//! and good enough to spread retries; it is not for secrets.

use std::time::Duration;

/// A seedable pseudo-random generator for spreading delays. Cheap to create and to clone (a
/// clone continues the same sequence independently).
///
/// ```
/// # use ochopod_core::jitter::Jitter;
/// # use std::time::Duration;
/// let mut a = Jitter::new(42);
/// let mut b = Jitter::new(42);
/// let d = Duration::from_secs(4);
/// let x = a.spread(d);
/// assert_eq!(x, b.spread(d)); // same seed, same delays
/// assert!(x >= d / 2 && x <= d);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jitter {
    state: u64,
}

/// One step of splitmix64: a good mixer of a 64-bit seed.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit seed from bytes (FNV-1a, then mixed): e.g. a pod key, a pid and a start time
/// written one after the other. Equal bytes give equal seeds.
///
/// ```
/// # use ochopod_core::jitter::seed_from;
/// assert_eq!(seed_from(b"3f1c"), seed_from(b"3f1c"));
/// assert_ne!(seed_from(b"3f1c"), seed_from(b"3f1d"));
/// ```
pub fn seed_from(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    splitmix64(h)
}

impl Jitter {
    /// A generator seeded with `seed`; the same seed always gives the same sequence.
    pub fn new(seed: u64) -> Jitter {
        let state = splitmix64(seed);
        // xorshift's one forbidden state; splitmix64 is a bijection, so exactly one seed maps
        // here.
        Jitter {
            state: if state == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                state
            },
        }
    }

    /// The next 64 random bits (xorshift64*).
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number uniform in `[0, n]` (both ends included), without modulo bias worth the name
    /// (Lemire's multiply-shift on 64 bits: the bias is below 2^-64 * n).
    pub fn up_to(&mut self, n: u64) -> u64 {
        if n == u64::MAX {
            return self.next_u64();
        }
        let span = u128::from(n) + 1;
        ((u128::from(self.next_u64()) * span) >> 64) as u64
    }

    /// `d` spread uniformly in `[d/2, d]` ("equal jitter"): the delay keeps at least half of
    /// its length, so a backoff still backs off, and agents on the same schedule draw different
    /// points of its upper half. Nanosecond resolution; a delay longer than 584 years is
    /// treated as 584 years.
    pub fn spread(&mut self, d: Duration) -> Duration {
        let n = nanos(d);
        let half = n / 2;
        Duration::from_nanos(half + self.up_to(n - half))
    }

    /// `d` spread uniformly in `[0, d]` ("full jitter"): the widest spread, for delays where
    /// retrying at once is acceptable.
    pub fn full(&mut self, d: Duration) -> Duration {
        Duration::from_nanos(self.up_to(nanos(d)))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let mut a = Jitter::new(7);
        let mut b = Jitter::new(7);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let d = Duration::from_millis(250);
        let xs: Vec<Duration> = (0..100).map(|_| a.spread(d)).collect();
        let ys: Vec<Duration> = (0..100).map(|_| b.spread(d)).collect();
        assert_eq!(xs, ys);
    }

    #[test]
    fn neighbouring_seeds_and_zero_give_different_sequences() {
        let firsts: Vec<u64> = (0..1000).map(|s| Jitter::new(s).next_u64()).collect();
        let mut sorted = firsts.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            firsts.len(),
            "two seeds in 0..1000 start alike"
        );
        // Zero is a fine seed: no stuck all-zero state.
        let mut z = Jitter::new(0);
        let draws: Vec<u64> = (0..10).map(|_| z.next_u64()).collect();
        assert!(draws.iter().all(|&x| x != 0), "{draws:?}");
    }

    #[test]
    fn every_seed_yields_a_live_state() {
        // The one seed splitmix64 maps to zero is still usable.
        let mut j = Jitter { state: 0 };
        assert_eq!(
            j.next_u64(),
            0,
            "xorshift from zero is stuck: the guard in new() matters"
        );
        for seed in [0, 1, u64::MAX, 0x9E37_79B9_7F4A_7C15] {
            let mut j = Jitter::new(seed);
            assert_ne!(j.state, 0);
            assert_ne!(j.next_u64(), j.next_u64());
        }
    }

    #[test]
    fn spread_stays_in_the_upper_half() {
        let mut j = Jitter::new(1);
        for ms in [0u64, 1, 2, 3, 250, 10_000] {
            let d = Duration::from_millis(ms);
            for _ in 0..2000 {
                let x = j.spread(d);
                assert!(x >= d / 2 && x <= d, "{x:?} outside [{:?}, {d:?}]", d / 2);
            }
        }
        // Nanosecond edges: 1 ns spreads to 0 or 1 ns, both ends reachable.
        let got: Vec<Duration> = (0..200)
            .map(|_| j.spread(Duration::from_nanos(1)))
            .collect();
        assert!(got.contains(&Duration::ZERO) && got.contains(&Duration::from_nanos(1)));
        // Huge delays do not overflow.
        let x = j.spread(Duration::MAX);
        assert!(x >= Duration::from_nanos(u64::MAX / 2));
    }

    #[test]
    fn full_stays_within_zero_and_d() {
        let mut j = Jitter::new(2);
        let d = Duration::from_secs(10);
        for _ in 0..5000 {
            assert!(j.full(d) <= d);
        }
        assert_eq!(j.full(Duration::ZERO), Duration::ZERO);
        let _ = j.full(Duration::MAX);
    }

    #[test]
    fn up_to_reaches_both_ends_and_nothing_beyond() {
        let mut j = Jitter::new(3);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            let x = j.up_to(3);
            seen[usize::try_from(x).unwrap()] += 1;
        }
        // 1000 expected per value; a fair generator stays well within 800..1200.
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        assert_eq!(j.up_to(0), 0);
    }

    #[test]
    fn values_spread_over_the_interval() {
        // 300 agents with consecutive seeds (the worst case: seeds that differ by one bit)
        // draw their first delay of a 10 s backoff: the draws cover the interval [5 s, 10 s]
        // evenly (10 buckets of 0.5 s, 30 expected each) instead of bunching.
        let d = Duration::from_secs(10);
        let mut buckets = [0u32; 10];
        for seed in 0..300 {
            let x = Jitter::new(seed).spread(d);
            let i = ((x - d / 2).as_millis() / 500).min(9);
            buckets[usize::try_from(i).unwrap()] += 1;
        }
        assert!(
            buckets.iter().all(|&c| (12..=50).contains(&c)),
            "{buckets:?}"
        );
        // And one generator's successive draws are not all alike either.
        let mut j = Jitter::new(9);
        let mut draws: Vec<Duration> = (0..50).map(|_| j.spread(d)).collect();
        draws.sort_unstable();
        draws.dedup();
        assert!(draws.len() >= 49, "{} distinct draws of 50", draws.len());
        let mean = (0..10_000).map(|_| j.full(d).as_secs_f64()).sum::<f64>() / 10_000.0;
        assert!(
            (4.8..5.2).contains(&mean),
            "full jitter of 10 s has mean {mean}"
        );
    }

    #[test]
    fn seeds_from_bytes_differ_per_agent() {
        let a = seed_from(b"0f7c2a4e-9d1b-4c55-8a6e-2b7d9e1f3a01/4242/1733555400");
        let b = seed_from(b"0f7c2a4e-9d1b-4c55-8a6e-2b7d9e1f3a01/4243/1733555400");
        assert_ne!(a, b);
        assert_eq!(
            a,
            seed_from(b"0f7c2a4e-9d1b-4c55-8a6e-2b7d9e1f3a01/4242/1733555400")
        );
        assert_ne!(seed_from(b""), 0);
    }
}
