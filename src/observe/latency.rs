//! A fixed-size latency histogram for the status page: quarter-octave buckets from 64 µs to
//! about 18 minutes, counted with relaxed atomics, from which p50 and p99 of any interval are
//! estimated (the difference of two snapshots).
//!
//! The Prometheus histograms in [`super::metrics`] have 16 wide buckets chosen for alerting and
//! no way to read their counts back; a per-interval p99 drawn from them would jump between
//! bucket bounds. Here a bucket is at most a quarter of its lower bound wide (an estimate is
//! within 25 %, usually much closer after interpolation), at 808 bytes per route.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Number of buckets: one below 2^16 ns, four per power of two up to 2^41 ns, the last one
/// also taking everything longer.
pub const BUCKETS: usize = 101;

/// log2 of the first bucket's upper bound in nanoseconds (65.5 µs).
const FIRST_EXPONENT: u32 = 16;

/// Sub-buckets per power of two.
const PER_OCTAVE: usize = 4;

/// The bucket a duration of `nanos` nanoseconds falls in.
pub fn bucket_index(nanos: u64) -> usize {
    if nanos < 1 << FIRST_EXPONENT {
        return 0;
    }
    let exponent = 63 - nanos.leading_zeros();
    // The two bits below the leading one pick the quarter of the octave.
    let quarter = ((nanos >> (exponent - 2)) & 3) as usize;
    let index = 1 + (exponent - FIRST_EXPONENT) as usize * PER_OCTAVE + quarter;
    index.min(BUCKETS - 1)
}

/// The lower and upper bounds of bucket `index`, in nanoseconds.
pub fn bucket_bounds(index: usize) -> (u64, u64) {
    if index == 0 {
        return (0, 1 << FIRST_EXPONENT);
    }
    let index = index.min(BUCKETS - 1) - 1;
    let exponent = FIRST_EXPONENT + (index / PER_OCTAVE) as u32;
    let width = 1u64 << (exponent - 2);
    let lower = (1u64 << exponent) + (index % PER_OCTAVE) as u64 * width;
    (lower, lower + width)
}

/// Counts of durations per bucket, updated from any thread.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { buckets: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl LatencyHistogram {
    /// Counts one duration.
    pub fn record(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        if let Some(bucket) = self.buckets.get(bucket_index(nanos)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts so far. Buckets are read one by one, so a snapshot taken while requests
    /// finish may include some of them and not others; each is counted exactly once over
    /// consecutive snapshots.
    pub fn snapshot(&self) -> LatencyCounts {
        LatencyCounts(std::array::from_fn(|i| {
            self.buckets.get(i).map_or(0, |bucket| bucket.load(Ordering::Relaxed))
        }))
    }
}

/// A snapshot of a [`LatencyHistogram`], or the difference of two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyCounts(pub [u64; BUCKETS]);

impl Default for LatencyCounts {
    fn default() -> Self {
        LatencyCounts([0; BUCKETS])
    }
}

impl LatencyCounts {
    /// How many durations were counted.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// What was counted after `earlier`, a snapshot of the same histogram.
    pub fn since(&self, earlier: &LatencyCounts) -> LatencyCounts {
        LatencyCounts(std::array::from_fn(|i| {
            let now = self.0.get(i).copied().unwrap_or(0);
            now.saturating_sub(earlier.0.get(i).copied().unwrap_or(0))
        }))
    }

    /// The estimated `q` quantile (0 < q ≤ 1), interpolating linearly inside its bucket as
    /// Prometheus's `histogram_quantile` does; `None` when nothing was counted.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (index, &count) in self.0.iter().enumerate() {
            if count > 0 && (below + count) as f64 >= rank {
                let (lower, upper) = bucket_bounds(index);
                let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
                let nanos = lower as f64 + (upper - lower) as f64 * within;
                return Some(Duration::from_nanos(nanos as u64));
            }
            below += count;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_quarter_octaves_and_contain_what_they_count() {
        let cases: [(u64, usize); 10] = [
            (0, 0),
            (65_535, 0),
            (65_536, 1),            // 2^16
            (81_920, 2),            // 2^16 × 1.25
            (131_071, 4),           // just below 2^17
            (131_072, 5),           // 2^17
            (1_000_000, 16),        // 1 ms: 2^19 × 1.907
            (1_000_000_000, 56),    // 1 s: 2^29 × 1.863
            (1 << 41, BUCKETS - 1), // beyond the last bound
            (u64::MAX, BUCKETS - 1),
        ];
        for (nanos, index) in cases {
            assert_eq!(bucket_index(nanos), index, "{nanos} ns");
            let (lower, upper) = bucket_bounds(index);
            if index < BUCKETS - 1 {
                assert!(lower <= nanos && nanos < upper, "{nanos} in [{lower}, {upper})");
            }
        }
        for index in 1..BUCKETS {
            let (lower, upper) = bucket_bounds(index);
            assert_eq!(bucket_bounds(index - 1).1, lower, "bucket {index} follows on");
            assert!((upper - lower) * 4 <= lower, "bucket {index} at most a quarter wide");
            assert_eq!(bucket_index(lower), index);
            assert_eq!(bucket_index(upper - 1), index);
        }
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let histogram = LatencyHistogram::default();
        assert_eq!(histogram.snapshot().quantile(0.5), None);
        // 99 fast requests (about 1 ms) and one slow one (about 2 s).
        for _ in 0..99 {
            histogram.record(Duration::from_micros(1_000));
        }
        histogram.record(Duration::from_secs(2));
        let counts = histogram.snapshot();
        assert_eq!(counts.total(), 100);
        let p50 = counts.quantile(0.5).unwrap();
        assert!(p50 >= Duration::from_micros(950) && p50 < Duration::from_micros(1_049), "{p50:?}");
        let p99 = counts.quantile(0.99).unwrap();
        assert!(p99 < Duration::from_micros(1_049), "the 99th of 100 is still fast: {p99:?}");
        let max = counts.quantile(1.0).unwrap();
        assert!(max >= Duration::from_millis(1_600) && max <= Duration::from_millis(2_200));
    }

    #[test]
    fn an_interval_is_the_difference_of_two_snapshots() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_millis(50));
        let before = histogram.snapshot();
        histogram.record(Duration::from_micros(200));
        histogram.record(Duration::from_micros(210));
        let interval = histogram.snapshot().since(&before);
        assert_eq!(interval.total(), 2);
        let p99 = interval.quantile(0.99).unwrap();
        assert!(p99 < Duration::from_micros(262), "{p99:?}");
        assert_eq!(before.since(&histogram.snapshot()).total(), 0, "never negative");
    }
}
