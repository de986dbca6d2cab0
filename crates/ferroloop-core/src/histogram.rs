//! A fixed-bucket histogram of durations, as HdrHistogram's: log-linear buckets over
//! nanoseconds, 8 sub-buckets per power of two, so a value is known within 12.5 % (its bucket's
//! bounds); 496 `u64`s cover 0 ns to 2^64 ns. Recording is an index computation and three
//! additions: nothing is allocated per event. Percentiles are computed from the buckets by
//! whoever reads them (the loop's `metrics()` hands the non-empty ones to Python).

const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
pub const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// The bucket of a value in nanoseconds (see the module docs).
#[inline]
pub fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros();
    let sub = (ns >> (exp - SUB_BITS)) as usize & (SUB - 1);
    (exp - SUB_BITS + 1) as usize * SUB + sub
}

/// The values bucket `index` holds, in nanoseconds: `lower..upper` (`upper` saturates at
/// `u64::MAX` for the last bucket).
pub fn bucket_bounds(index: usize) -> (u64, u64) {
    if index < SUB {
        return (index as u64, index as u64 + 1);
    }
    let exp = (index / SUB) as u32 + SUB_BITS - 1;
    let width = 1u64 << (exp - SUB_BITS);
    let lower = (SUB as u64 + (index % SUB) as u64) * width;
    (lower, lower.saturating_add(width))
}

/// A fixed-bucket histogram of durations.
pub struct Histogram {
    pub buckets: Box<[u64; BUCKETS]>,
    pub count: u64,
    pub sum_ns: u64,
    pub max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: Box::new([0; BUCKETS]),
            count: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }
}

impl Histogram {
    /// Records `secs`; a negative one (a timer run a little before its deadline, within the
    /// clock's resolution, as asyncio allows) counts as zero.
    #[inline]
    pub fn record(&mut self, secs: f64) {
        // `as` saturates: NaN and negatives give 0, huge values u64::MAX.
        let ns = (secs * 1e9) as u64;
        self.buckets[bucket_of(ns)] += 1;
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// The non-empty buckets, as (index, count).
    pub fn nonzero(&self) -> Vec<(usize, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (i, n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_cover_u64() {
        let mut values: Vec<u64> = (0..64)
            .flat_map(|s| [1u64 << s, (1u64 << s) + 1, (1u64 << s) + (1u64 << s) / 2])
            .collect();
        values.sort_unstable();
        let mut last = 0;
        for v in values {
            let b = bucket_of(v);
            assert!(b >= last, "{v}");
            last = b;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(7), 7);
        assert_eq!(bucket_of(8), 8);
        assert_eq!(bucket_of(15), 15);
        assert_eq!(bucket_of(16), 16);
    }

    #[test]
    fn bounds_invert_bucket_of() {
        for index in 0..BUCKETS {
            let (lower, upper) = bucket_bounds(index);
            assert_eq!(bucket_of(lower), index);
            assert_eq!(bucket_of(upper - 1), index);
            if index + 1 < BUCKETS {
                assert_eq!(bucket_of(upper), index + 1);
                assert!((upper - lower) as f64 <= lower.max(1) as f64 * 0.125 || lower < 8);
            }
        }
    }

    #[test]
    fn histogram_records_count_sum_and_max() {
        let mut h = Histogram::default();
        h.record(0.001);
        h.record(0.050);
        h.record(-1.0);
        assert_eq!(h.count, 3);
        assert_eq!(h.max_ns, 50_000_000);
        assert_eq!(h.sum_ns, 51_000_000);
        assert_eq!(h.nonzero().iter().map(|(_, n)| n).sum::<u64>(), 3);
    }
}
