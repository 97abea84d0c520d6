//! The keys a checked workload's clients share: a few active keys at a time, each retired for
//! a fresh one after a bounded number of writes (as Jepsen's independent keys do). A key's
//! list or register history therefore stays small enough to store in one value and to check,
//! however long the run.

use std::sync::{Arc, Mutex, PoisonError};

use rand::Rng;

use ferrisdb_client::Bytes;

use crate::history::Key;

/// Active keys and the next value to write to each; shared by a workload's clients.
#[derive(Debug, Clone)]
pub struct KeyPool {
    inner: Arc<Mutex<PoolState>>,
    writes_per_key: u64,
}

#[derive(Debug)]
struct PoolState {
    /// The active keys, with the number of values handed out for each.
    active: Vec<(Key, u64)>,
    /// The next key never used.
    next_key: Key,
}

impl KeyPool {
    /// `active` keys at a time (at least one), each written at most `writes_per_key` times.
    pub fn new(active: usize, writes_per_key: u64) -> KeyPool {
        let active = active.max(1);
        KeyPool {
            inner: Arc::new(Mutex::new(PoolState {
                active: (0..active as u64).map(|k| (k, 0)).collect(),
                next_key: active as u64,
            })),
            writes_per_key: writes_per_key.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A random active key to read.
    pub fn read_key(&self, rng: &mut impl Rng) -> Key {
        let state = self.lock();
        state.active[rng.random_range(0..state.active.len())].0
    }

    /// A random active key and a value never written to it before (values start at 1). The
    /// key is retired once it has handed out its last value.
    pub fn write(&self, rng: &mut impl Rng) -> (Key, u64) {
        let mut state = self.lock();
        let slot = rng.random_range(0..state.active.len());
        let (key, written) = state.active[slot];
        let value = written + 1;
        if value >= self.writes_per_key {
            let fresh = state.next_key;
            state.next_key += 1;
            state.active[slot] = (fresh, 0);
        } else {
            state.active[slot].1 = value;
        }
        (key, value)
    }
}

/// The stored key of `key` (a list or a register) under a workload's `prefix`: fixed width,
/// so key order is numeric order.
pub fn key_bytes(prefix: &str, key: Key) -> Bytes {
    Bytes::from(format!("{prefix}{key:010}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use std::collections::BTreeSet;

    #[test]
    fn values_are_unique_per_key_and_keys_retire() {
        let pool = KeyPool::new(3, 4);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut seen = BTreeSet::new();
        for _ in 0..100 {
            let (k, v) = pool.write(&mut rng);
            assert!((1..=4).contains(&v));
            assert!(seen.insert((k, v)), "({k}, {v}) handed out twice");
        }
        // 100 writes at 4 per key use 25 full keys plus up to 3 partly written active ones.
        let keys: BTreeSet<_> = seen.iter().map(|(k, _)| *k).collect();
        assert!((25..=28).contains(&keys.len()), "{} keys", keys.len());
        let retired: BTreeSet<_> = seen
            .iter()
            .filter(|(_, v)| *v == 4)
            .map(|(k, _)| *k)
            .collect();
        for _ in 0..20 {
            assert!(!retired.contains(&pool.read_key(&mut rng)));
        }
    }
}
