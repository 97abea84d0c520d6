//! Which keys a workload touches: uniform or zipfian (YCSB's generator), and how a key index
//! is spelled.

use rand::Rng;
use serde::Serialize;

/// The shape of key popularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// YCSB's scrambled zipfian (theta 0.99): a few hot keys spread over the key space.
    Zipfian,
}

impl Distribution {
    /// The lowercase name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
        }
    }
}

/// The zipfian constant YCSB uses.
pub const ZIPFIAN_THETA: f64 = 0.99;

/// Spells key `index` with a fixed width, so key order is index order and short range reads
/// (YCSB E) see neighbouring indexes.
pub fn key_name(index: u64) -> String {
    format!("user{index:012}")
}

/// The first key past every key [`key_name`] produces ('~' sorts after every digit).
pub const KEY_SPACE_END: &str = "user~";

/// The value key `index` is loaded with: it starts with `L`, and no value written later does,
/// so a time-travel read can tell the loaded value from a newer one.
pub fn load_value(index: u64, size: usize) -> Vec<u8> {
    value_with(b'L', index, size)
}

/// A value written by a measured operation (starts with `W`).
pub fn write_value(seq: u64, size: usize) -> Vec<u8> {
    value_with(b'W', seq, size)
}

/// Whether `v` is a value from [`load_value`].
pub fn is_load_value(v: &[u8]) -> bool {
    v.first() == Some(&b'L')
}

fn value_with(marker: u8, n: u64, size: usize) -> Vec<u8> {
    // Printable and varied, so no target gets an easy time from compressing runs of zeros.
    let mut v = Vec::with_capacity(size.max(1));
    v.push(marker);
    let mut x = fnv1a64(n);
    while v.len() < size {
        v.push(b'a' + (x % 26) as u8);
        x = x.rotate_left(5) ^ 0x9e37_79b9_7f4a_7c15;
    }
    v
}

/// Draws key indexes in `0..count` with a [`Distribution`].
#[derive(Debug, Clone)]
pub struct KeyChooser {
    count: u64,
    zipf: Option<Zipfian>,
}

impl KeyChooser {
    /// A chooser over `count` keys (at least 1).
    pub fn new(count: u64, dist: Distribution) -> KeyChooser {
        let count = count.max(1);
        let zipf = match dist {
            Distribution::Uniform => None,
            Distribution::Zipfian => Some(Zipfian::new(count, ZIPFIAN_THETA)),
        };
        KeyChooser { count, zipf }
    }

    /// The next key index.
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        match &self.zipf {
            None => rng.random_range(0..self.count),
            // Scrambled as YCSB does, so the hot keys are not all at the start of the key
            // space (which would make range reads and any key-ordered layout look better).
            Some(z) => fnv1a64(z.next(rng)) % self.count,
        }
    }

    /// `n` distinct key indexes (fewer if there are fewer keys), sorted, so that lock-based
    /// targets take their locks in one order and cannot deadlock.
    pub fn distinct(&self, rng: &mut impl Rng, n: usize) -> Vec<u64> {
        let n = n.min(self.count as usize);
        let mut out: Vec<u64> = Vec::with_capacity(n);
        while out.len() < n {
            let k = self.next(rng);
            if !out.contains(&k) {
                out.push(k);
            }
        }
        out.sort_unstable();
        out
    }
}

/// YCSB's `ZipfianGenerator` (Gray et al., "Quickly generating billion-record synthetic
/// databases"): ranks in `0..n`, rank 0 the most popular.
#[derive(Debug, Clone)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    /// A generator over `n` ranks with skew `theta` (0 < theta < 1).
    pub fn new(n: u64, theta: f64) -> Zipfian {
        let n = n.max(1);
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2.min(n), theta);
        let eta = if n > 2 {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan)
        } else {
            0.0
        };
        Zipfian {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
        }
    }

    /// The probability of rank 0, for checks.
    #[cfg(test)]
    pub fn p_first(&self) -> f64 {
        1.0 / self.zetan
    }

    /// The next rank.
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if self.n > 1 && uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }
}

/// FNV-1a over the 8 bytes of `v`, as YCSB scrambles zipfian ranks.
pub fn fnv1a64(v: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn key_names_sort_like_indexes() {
        assert!(key_name(9) < key_name(10));
        assert!(key_name(999_999) < key_name(1_000_000));
        assert!(key_name(u64::from(u32::MAX)).as_str() < KEY_SPACE_END);
    }

    #[test]
    fn zipfian_stays_in_range_and_is_skewed() {
        let n = 10_000;
        let z = Zipfian::new(n, ZIPFIAN_THETA);
        let mut rng = SmallRng::seed_from_u64(7);
        let draws = 200_000;
        let mut counts = vec![0u64; n as usize];
        for _ in 0..draws {
            let r = z.next(&mut rng);
            assert!(r < n);
            counts[r as usize] += 1;
        }
        // Rank 0 comes up about as often as theory says (1/zeta(n)), within 10 %.
        let p0 = counts[0] as f64 / draws as f64;
        assert!(
            (p0 / z.p_first() - 1.0).abs() < 0.1,
            "p0 {p0} vs {}",
            z.p_first()
        );
        // Popularity falls with rank, and the top 1 % of ranks take a large share.
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[1000]);
        let top: u64 = counts[..(n as usize / 100)].iter().sum();
        assert!(top as f64 / draws as f64 > 0.4, "top 1% share {top}");
    }

    #[test]
    fn uniform_covers_the_key_space_evenly() {
        let c = KeyChooser::new(100, Distribution::Uniform);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[c.next(&mut rng) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn scrambled_zipfian_spreads_hot_keys() {
        let c = KeyChooser::new(100_000, Distribution::Zipfian);
        let mut rng = SmallRng::seed_from_u64(3);
        let draws: Vec<u64> = (0..10_000).map(|_| c.next(&mut rng)).collect();
        assert!(draws.iter().all(|&k| k < 100_000));
        // The hottest key is not simply key 0.
        let hottest = fnv1a64(0) % 100_000;
        let hits = draws.iter().filter(|&&k| k == hottest).count();
        assert!(hits > 100, "hottest key drawn {hits} times");
    }

    #[test]
    fn load_values_are_marked() {
        let v = load_value(3, 100);
        assert_eq!(v.len(), 100);
        assert!(is_load_value(&v));
        assert!(!is_load_value(&write_value(3, 100)));
        assert_eq!(load_value(1, 0).len(), 1);
    }

    #[test]
    fn distinct_keys_are_sorted_and_unique() {
        let c = KeyChooser::new(1000, Distribution::Zipfian);
        let mut rng = SmallRng::seed_from_u64(5);
        for _ in 0..100 {
            let ks = c.distinct(&mut rng, 4);
            assert_eq!(ks.len(), 4);
            assert!(ks.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(
            KeyChooser::new(2, Distribution::Uniform)
                .distinct(&mut rng, 4)
                .len(),
            2
        );
    }
}
