//! The workloads: which operations a client issues, in what mix.

use rand::Rng;
use serde::Serialize;

use crate::keys::{Distribution, KeyChooser};

/// Keys a YCSB E scan reads (YCSB draws up to 100; short ranges here, the same for every
/// target).
pub const SCAN_LENGTH: usize = 10;

/// Keys read and written by one multi-key transaction.
pub const TXN_KEYS: usize = 4;

/// A named workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Durable single-key writes (blind upserts).
    Writes,
    /// Read-only point reads.
    Reads,
    /// YCSB A: 50 % reads, 50 % updates.
    YcsbA,
    /// YCSB B: 95 % reads, 5 % updates.
    YcsbB,
    /// YCSB C: reads only.
    YcsbC,
    /// YCSB E: 95 % short range scans, 5 % updates (updates, not inserts, so every target
    /// keeps the same key set).
    YcsbE,
    /// YCSB F: 50 % reads, 50 % atomic read-modify-writes.
    YcsbF,
    /// Transactions reading and writing [`TXN_KEYS`] keys atomically.
    Txn,
    /// Point reads at a version taken right after loading, before any write phase changed
    /// the data.
    TimeTravel,
}

/// One operation, on key indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Read one key.
    Read(u64),
    /// Write one key durably.
    Write(u64),
    /// Read up to `n` keys from `start` in key order.
    Scan(u64, usize),
    /// Read one key and write it back changed, atomically.
    ReadModifyWrite(u64),
    /// Read these keys and write them all, atomically.
    Txn(Vec<u64>),
    /// Read one key at the time-travel snapshot.
    ReadAt(u64),
}

impl Workload {
    /// Every workload, in the order the comparison runs them: reads first (before writes
    /// grow any target's history), time travel last (after the writes have changed the data
    /// its snapshot saw).
    pub const ALL: [Workload; 9] = [
        Workload::Reads,
        Workload::YcsbC,
        Workload::YcsbE,
        Workload::Writes,
        Workload::YcsbA,
        Workload::YcsbB,
        Workload::YcsbF,
        Workload::Txn,
        Workload::TimeTravel,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Writes => "writes",
            Workload::Reads => "reads",
            Workload::YcsbA => "ycsb-a",
            Workload::YcsbB => "ycsb-b",
            Workload::YcsbC => "ycsb-c",
            Workload::YcsbE => "ycsb-e",
            Workload::YcsbF => "ycsb-f",
            Workload::Txn => "txn",
            Workload::TimeTravel => "time-travel",
        }
    }

    /// The key distribution used unless one is forced: YCSB's default (zipfian) for the YCSB
    /// workloads, uniform for the others.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Workload::YcsbA
            | Workload::YcsbB
            | Workload::YcsbC
            | Workload::YcsbE
            | Workload::YcsbF => Distribution::Zipfian,
            _ => Distribution::Uniform,
        }
    }

    /// The next operation.
    pub fn next_op(self, keys: &KeyChooser, rng: &mut impl Rng) -> Op {
        let k = keys.next(rng);
        let p: f64 = rng.random();
        match self {
            Workload::Writes => Op::Write(k),
            Workload::Reads | Workload::YcsbC => Op::Read(k),
            Workload::YcsbA => mix(p, 0.5, Op::Read(k), Op::Write(k)),
            Workload::YcsbB => mix(p, 0.95, Op::Read(k), Op::Write(k)),
            Workload::YcsbE => mix(p, 0.95, Op::Scan(k, SCAN_LENGTH), Op::Write(k)),
            Workload::YcsbF => mix(p, 0.5, Op::Read(k), Op::ReadModifyWrite(k)),
            Workload::Txn => Op::Txn(keys.distinct(rng, TXN_KEYS)),
            Workload::TimeTravel => Op::ReadAt(k),
        }
    }
}

fn mix(p: f64, first_share: f64, first: Op, second: Op) -> Op {
    if p < first_share { first } else { second }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn shares(w: Workload) -> (f64, f64, f64, f64) {
        let keys = KeyChooser::new(1000, w.default_distribution());
        let mut rng = SmallRng::seed_from_u64(11);
        let n = 100_000;
        let (mut reads, mut writes, mut scans, mut rmw) = (0, 0, 0, 0);
        for _ in 0..n {
            match w.next_op(&keys, &mut rng) {
                Op::Read(_) | Op::ReadAt(_) => reads += 1,
                Op::Write(_) => writes += 1,
                Op::Scan(_, len) => {
                    assert_eq!(len, SCAN_LENGTH);
                    scans += 1
                }
                Op::ReadModifyWrite(_) => rmw += 1,
                Op::Txn(ks) => {
                    assert_eq!(ks.len(), TXN_KEYS);
                    writes += 1
                }
            }
        }
        let f = |c: i32| f64::from(c) / f64::from(n);
        (f(reads), f(writes), f(scans), f(rmw))
    }

    fn near(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.01
    }

    #[test]
    fn ycsb_mixes_have_their_ratios() {
        let (r, w, _, _) = shares(Workload::YcsbA);
        assert!(near(r, 0.5) && near(w, 0.5), "A {r} {w}");
        let (r, w, _, _) = shares(Workload::YcsbB);
        assert!(near(r, 0.95) && near(w, 0.05), "B {r} {w}");
        assert_eq!(shares(Workload::YcsbC), (1.0, 0.0, 0.0, 0.0));
        let (_, w, s, _) = shares(Workload::YcsbE);
        assert!(near(s, 0.95) && near(w, 0.05), "E {s} {w}");
        let (r, _, _, m) = shares(Workload::YcsbF);
        assert!(near(r, 0.5) && near(m, 0.5), "F {r} {m}");
    }

    #[test]
    fn single_purpose_workloads_do_one_thing() {
        assert_eq!(shares(Workload::Writes), (0.0, 1.0, 0.0, 0.0));
        assert_eq!(shares(Workload::Reads), (1.0, 0.0, 0.0, 0.0));
        assert_eq!(shares(Workload::Txn), (0.0, 1.0, 0.0, 0.0));
        assert_eq!(shares(Workload::TimeTravel), (1.0, 0.0, 0.0, 0.0));
    }

    #[test]
    fn names_round_trip_through_the_command_line() {
        use clap::ValueEnum;
        for w in Workload::ALL {
            assert_eq!(Workload::from_str(w.name(), false), Ok(w));
        }
    }
}
