//! Balancing: which of a tier's usable targets takes the next attempt.
//!
//! Pure functions over weights, loads and hashes. Whether a target is usable (healthy, not
//! ejected, not cooling, not tried yet, under its caps) is asked through a closure, so the
//! algorithms never allocate a candidate list; randomness comes in as an [`Rng`] so tests can
//! fix it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A small, fast pseudo-random generator (SplitMix64). Not for secrets: it only spreads load.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

/// SplitMix64's increment, the odd integer closest to 2^64 divided by the golden ratio.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

thread_local! {
    /// Each thread's generator seed, advanced once per [`Rng::per_request`].
    static THREAD_SEED: std::cell::Cell<u64> = std::cell::Cell::new(random_seed());
}

/// A seed from the standard library's per-process random hash keys.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

impl Rng {
    /// A generator whose sequence is fixed by `seed` (for tests and reproducible choices).
    pub fn seeded(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// A fresh generator for one request: seeded from this thread's counter through the mixer,
    /// so two requests draw unrelated sequences without sharing any state across threads.
    pub fn per_request() -> Rng {
        let seed = THREAD_SEED.with(|cell| {
            let seed = cell.get().wrapping_add(GOLDEN_GAMMA);
            cell.set(seed);
            seed
        });
        Rng { state: mix64(seed) }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// A number in `0..bound` (0 when `bound` is 0), without modulo bias worth mentioning:
    /// the high half of a 128-bit product (Lemire's method, without the rejection step).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        unit_interval(self.next_u64())
    }
}

/// SplitMix64's finaliser: a bijective mix of all 64 bits, so nearby inputs give unrelated
/// outputs.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of `bytes` (FNV-1a, then mixed): the same in every process and every
/// build, so a hash key keeps its target across restarts and reloads.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let folded =
        bytes.iter().fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME));
    mix64(folded)
}

/// The top 53 bits of `bits` as a number in `[0, 1)`.
fn unit_interval(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Greatest common divisor (0 with 0 is 0).
fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The smooth weighted round-robin order for `weights` (nginx's algorithm): one full period,
/// as indices into `weights`, after dividing every weight by their common divisor. Each index
/// appears as often as its reduced weight, and a heavy target's turns are interleaved with the
/// others' (`5,1,1` gives `a a b a c a a`, not `a a a a a b c`). Zero weights never appear.
///
/// Precomputed once per tier, so a pick is one atomic increment and an index, with no lock.
pub fn smooth_order(weights: &[u32]) -> Vec<u16> {
    let divisor = weights.iter().copied().fold(0, gcd);
    if divisor == 0 {
        return Vec::new();
    }
    let reduced: Vec<i64> = weights.iter().map(|weight| i64::from(weight / divisor)).collect();
    let total: i64 = reduced.iter().sum();
    let mut current = vec![0i64; reduced.len()];
    let mut order = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best: Option<(usize, i64)> = None;
        for (index, (value, weight)) in current.iter_mut().zip(&reduced).enumerate() {
            *value += weight;
            if *weight > 0 && best.is_none_or(|(_, top)| *value > top) {
                best = Some((index, *value));
            }
        }
        let Some((index, _)) = best else { break };
        if let Some(value) = current.get_mut(index) {
            *value -= total;
        }
        order.push(u16::try_from(index).unwrap_or(u16::MAX));
    }
    order
}

/// The first usable target in `order` at or after `start` (wrapping): round robin that skips
/// unusable targets, whose turns go to the next one in the order.
pub fn round_robin(order: &[u16], start: usize, usable: impl Fn(usize) -> bool) -> Option<usize> {
    let len = order.len();
    if len == 0 {
        return None;
    }
    let start = start % len;
    order
        .iter()
        .skip(start)
        .chain(order.iter().take(start))
        .map(|&index| usize::from(index))
        .find(|&index| usable(index))
}

/// A target drawn with probability proportional to its weight, among the `count` targets
/// for which `weight` answers (`None`: not usable).
pub fn weighted_random(
    count: usize,
    weight: impl Fn(usize) -> Option<u32>,
    rng: &mut Rng,
) -> Option<usize> {
    let total: u64 = (0..count).filter_map(&weight).map(u64::from).sum();
    if total == 0 {
        return None;
    }
    let mut point = rng.below(total);
    for index in 0..count {
        if let Some(weight) = weight(index).map(u64::from) {
            if point < weight {
                return Some(index);
            }
            point -= weight;
        }
    }
    None
}

/// Power of two choices: two different targets drawn by weight, and the one with the lower
/// `cost` wins (the first drawn on a tie, so an idle group still follows the weights). With
/// one usable target, that one.
pub fn two_choices(
    count: usize,
    weight: impl Fn(usize) -> Option<u32>,
    cost: impl Fn(usize) -> f64,
    rng: &mut Rng,
) -> Option<usize> {
    let first = weighted_random(count, &weight, rng)?;
    let second =
        weighted_random(count, |index| if index == first { None } else { weight(index) }, rng);
    match second {
        Some(second) if cost(second) < cost(first) => Some(second),
        _ => Some(first),
    }
}

/// The target with the highest rendezvous score for `key` among those for which `candidate`
/// answers `(weight, identity hash)`. Weighted rendezvous hashing (Schindelhauer and Schomaker):
/// score = weight / -ln(u), u uniform in (0, 1) from the key and the target's identity. Each
/// key ranks the targets independently, so removing a target moves only its own keys (each to
/// its second choice) and adding one takes about 1/N of the keys from the others.
pub fn rendezvous(
    count: usize,
    key: u64,
    candidate: impl Fn(usize) -> Option<(u32, u64)>,
) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for index in 0..count {
        let Some((weight, identity)) = candidate(index) else { continue };
        let score = rendezvous_score(key, identity, weight);
        if best.is_none_or(|(_, top)| score > top) {
            best = Some((index, score));
        }
    }
    best.map(|(index, _)| index)
}

/// One target's score for one key (see [`rendezvous`]).
pub fn rendezvous_score(key: u64, identity: u64, weight: u32) -> f64 {
    // Half a unit in the last place keeps u strictly inside (0, 1): ln(0) would be -inf.
    let u = unit_interval(mix64(key ^ mix64(identity))) + 0.5 / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// The peak-EWMA update (Finagle, linkerd): a response slower than the estimate replaces it at
/// once (the peak), a faster one pulls it down by a weight that grows with the time since the
/// last update, `1 - exp(-elapsed / decay)`. So a target that turns slow is avoided within one
/// response, and one that recovers earns its traffic back over about `decay`.
pub fn peak_ewma(estimate: f64, elapsed: Duration, sample: f64, decay: Duration) -> f64 {
    if sample > estimate {
        return sample;
    }
    let tau = decay.as_secs_f64();
    let keep = if tau > 0.0 { (-elapsed.as_secs_f64() / tau).exp() } else { 0.0 };
    estimate * keep + sample * (1.0 - keep)
}

/// A target's latency estimate for [`Balance::PeakEwma`], in seconds, lock-free.
///
/// Two atomics rather than one lock: a concurrent update may be lost (the last writer wins),
/// which only means one sample fewer in an estimate that is a smoothing anyway.
#[derive(Debug)]
pub struct Latency {
    /// The estimate in seconds, as `f64` bits.
    estimate: AtomicU64,
    /// When it was last updated, as [`super::Moment`] nanoseconds.
    updated: AtomicU64,
}

impl Latency {
    /// An estimate starting at `initial` (a target nothing is known about yet).
    pub fn new(initial: Duration) -> Latency {
        Latency {
            estimate: AtomicU64::new(initial.as_secs_f64().to_bits()),
            updated: AtomicU64::new(0),
        }
    }

    /// The current estimate, in seconds.
    pub fn estimate(&self) -> f64 {
        f64::from_bits(self.estimate.load(Ordering::Relaxed))
    }

    /// Folds in one response time `sample` observed at `now`.
    pub fn observe(&self, sample: Duration, now: super::Moment, decay: Duration) {
        let previous =
            super::Moment::from_nanos(self.updated.swap(now.as_nanos(), Ordering::Relaxed));
        let next = peak_ewma(self.estimate(), now.since(previous), sample.as_secs_f64(), decay);
        self.estimate.store(next.to_bits(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;
    use super::*;
    use proptest::prelude::*;

    fn counts(picks: impl Iterator<Item = usize>, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for pick in picks {
            counts[pick] += 1;
        }
        counts
    }

    #[test]
    fn smooth_order_table() {
        for (weights, expected) in [
            (vec![1], vec![0]),
            (vec![1, 1, 1], vec![0, 1, 2]),
            (vec![5, 1, 1], vec![0, 0, 1, 0, 2, 0, 0]),
            // Reduced by the common divisor: 4:2 is 2:1.
            (vec![4, 2], vec![0, 1, 0]),
            (vec![0, 3], vec![1]),
            (vec![0, 0], vec![]),
            (vec![], vec![]),
        ] {
            assert_eq!(smooth_order(&weights), expected, "{weights:?}");
        }
    }

    #[test]
    fn round_robin_skips_unusable_targets() {
        let order = smooth_order(&[1, 1, 1]);
        assert_eq!(round_robin(&order, 0, |_| true), Some(0));
        assert_eq!(round_robin(&order, 4, |_| true), Some(1));
        assert_eq!(round_robin(&order, 1, |index| index != 1), Some(2));
        assert_eq!(round_robin(&order, 2, |index| index == 0), Some(0));
        assert_eq!(round_robin(&order, 0, |_| false), None);
        assert_eq!(round_robin(&[], 0, |_| true), None);
    }

    #[test]
    fn rng_is_reproducible_and_bounded() {
        let mut a = Rng::seeded(7);
        let mut b = Rng::seeded(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
            assert!(a.below(3) < 3);
            b.below(3);
            let unit = a.unit();
            assert!((0.0..1.0).contains(&unit));
            b.unit();
        }
        assert_eq!(Rng::seeded(1).below(0), 0);
        assert_ne!(Rng::per_request().next_u64(), Rng::per_request().next_u64());
    }

    #[test]
    fn hash_bytes_is_stable() {
        // Pinned: a change would move every hash key to another target after an upgrade.
        assert_eq!(hash_bytes(b""), mix64(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash_bytes(b"user-1"), hash_bytes(b"user-1"));
        assert_ne!(hash_bytes(b"user-1"), hash_bytes(b"user-2"));
    }

    #[test]
    fn peak_ewma_table() {
        let decay = Duration::from_secs(10);
        // A slower sample is taken at once.
        assert_eq!(peak_ewma(0.010, Duration::ZERO, 0.500, decay), 0.500);
        // A faster one right after the last update barely moves the estimate...
        let soon = peak_ewma(0.500, Duration::from_millis(1), 0.010, decay);
        assert!(soon > 0.49, "{soon}");
        // ...one after a long quiet period replaces it almost entirely.
        let late = peak_ewma(0.500, Duration::from_secs(100), 0.010, decay);
        assert!(late < 0.011, "{late}");
        // After one decay period, 1/e of the old estimate is left.
        let one = peak_ewma(1.0, decay, 0.0, decay);
        assert!((one - (-1.0f64).exp()).abs() < 1e-9, "{one}");
    }

    #[test]
    fn latency_follows_peaks_at_once() {
        let latency = Latency::new(Duration::from_millis(20));
        let start = super::super::Moment::from_nanos(1_000_000_000);
        latency.observe(Duration::from_millis(300), start, Duration::from_secs(10));
        assert!((latency.estimate() - 0.3).abs() < 1e-9);
    }

    #[test]
    fn weighted_random_honours_weights() {
        let weights = [1u32, 2, 7];
        let mut rng = Rng::seeded(42);
        let n = 100_000;
        let counts = counts(
            (0..n).map(|_| weighted_random(3, |i| weights.get(i).copied(), &mut rng).unwrap()),
            3,
        );
        for (count, weight) in counts.iter().zip(weights) {
            let share = *count as f64 / n as f64;
            let expected = f64::from(weight) / 10.0;
            assert!((share - expected).abs() < 0.01, "{counts:?}");
        }
    }

    #[test]
    fn weighted_random_skips_unusable_targets() {
        let mut rng = Rng::seeded(3);
        for _ in 0..1000 {
            let pick = weighted_random(3, |i| (i != 1).then_some(5), &mut rng).unwrap();
            assert_ne!(pick, 1);
        }
        assert_eq!(weighted_random(3, |_| None, &mut rng), None);
    }

    #[test]
    fn two_choices_prefers_the_less_loaded_target() {
        let mut rng = Rng::seeded(9);
        let in_flight = [10.0, 0.0, 10.0, 10.0];
        let n = 10_000;
        let counts = counts(
            (0..n).map(|_| two_choices(4, |_| Some(1), |i| in_flight[i], &mut rng).unwrap()),
            4,
        );
        // The idle target wins every pair it is drawn into: with 4 targets, half of them.
        let share = counts[1] as f64 / n as f64;
        assert!((share - 0.5).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn two_choices_follows_weights_when_idle() {
        let weights = [1u32, 3];
        let mut rng = Rng::seeded(5);
        let n = 40_000;
        let counts = counts(
            (0..n).map(|_| two_choices(2, |i| weights.get(i).copied(), |_| 0.0, &mut rng).unwrap()),
            2,
        );
        let share = counts[1] as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.01, "{counts:?}");
        assert_eq!(two_choices(2, |i| (i == 1).then_some(1), |_| 0.0, &mut rng), Some(1));
    }

    #[test]
    fn rendezvous_is_sticky_and_follows_weights() {
        let identities: Vec<u64> = (0..3).map(|i| hash_bytes(format!("t{i}").as_bytes())).collect();
        let weights = [1u32, 1, 2];
        let candidate = |i: usize| Some((weights[i], identities[i]));
        let key = hash_bytes(b"session-1");
        let first = rendezvous(3, key, candidate);
        assert_eq!(rendezvous(3, key, candidate), first);
        let n = 40_000;
        let counts = counts(
            (0..n).map(|k: u64| rendezvous(3, hash_bytes(&k.to_le_bytes()), candidate).unwrap()),
            3,
        );
        let share = counts[2] as f64 / n as f64;
        assert!((share - 0.5).abs() < 0.015, "{counts:?}");
    }

    #[test]
    fn rendezvous_sends_a_removed_targets_keys_elsewhere_and_no_others() {
        let identities: Vec<u64> = (0..4).map(|i| hash_bytes(format!("t{i}").as_bytes())).collect();
        for k in 0..2_000u64 {
            let key = hash_bytes(&k.to_le_bytes());
            let all = rendezvous(4, key, |i| Some((1, identities[i]))).unwrap();
            let without_2 = rendezvous(4, key, |i| (i != 2).then(|| (1, identities[i]))).unwrap();
            if all != 2 {
                assert_eq!(all, without_2, "key {k} moved although its target stayed");
            } else {
                assert_ne!(without_2, 2);
            }
        }
    }

    proptest! {
        /// Adding one target to N moves about 1/(N+1) of the keys, and only to the new target.
        #[test]
        fn rendezvous_moves_about_one_nth_of_keys(n in 2usize..12, salt in any::<u64>()) {
            let identities: Vec<u64> =
                (0..=n).map(|i| hash_bytes(format!("{salt}-{i}").as_bytes())).collect();
            let keys = 20_000u64;
            let mut moved = 0u64;
            for k in 0..keys {
                let key = hash_bytes(&(k ^ salt).to_le_bytes());
                let before = rendezvous(n, key, |i| Some((1, identities[i]))).unwrap();
                let after = rendezvous(n + 1, key, |i| Some((1, identities[i]))).unwrap();
                if before != after {
                    prop_assert_eq!(after, n, "a key moved between two old targets");
                    moved += 1;
                }
            }
            let share = moved as f64 / keys as f64;
            let expected = 1.0 / (n as f64 + 1.0);
            prop_assert!((share - expected).abs() < 0.25 * expected + 0.01,
                "moved {share}, expected about {expected}");
        }

        /// Over one period, smooth round robin gives each target exactly its reduced weight,
        /// and over any window its count stays within one turn of its share.
        #[test]
        fn smooth_order_is_exact_and_smooth(weights in prop::collection::vec(1u32..20, 1..6)) {
            let order = smooth_order(&weights);
            let divisor = weights.iter().copied().fold(0, gcd);
            let counts = counts(order.iter().map(|&i| usize::from(i)), weights.len());
            for (count, weight) in counts.iter().zip(&weights) {
                prop_assert_eq!(*count as u32, weight / divisor);
            }
            let total = order.len() as f64;
            for (target, weight) in weights.iter().enumerate() {
                let share = f64::from(weight / divisor) / total;
                let mut seen = 0.0;
                for (step, pick) in order.iter().enumerate() {
                    if usize::from(*pick) == target {
                        seen += 1.0;
                    }
                    let expected = share * (step as f64 + 1.0);
                    prop_assert!((seen - expected).abs() <= 1.0 + 1e-9);
                }
            }
        }
    }
}
