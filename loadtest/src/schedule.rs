//! The nemesis's schedule: which fault comes next, on what, for how long — all drawn from one
//! seed, so the same seed gives the same schedule (what the cluster makes of it still depends
//! on timing, as in any real-process test).
//!
//! Faults come in rounds: each round is a seeded shuffle of every kind the run enables, so a
//! run of `N` faults covers every kind once it has `N >= kinds` faults, and the mix stays even.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A small deterministic generator (SplitMix64): the schedule must not change when a
/// dependency's generator does.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.range(0, i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A process the nemesis can kill or pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessKind {
    /// One of the three safekeepers (which one is drawn per fault).
    Safekeeper,
    /// The pageserver.
    Pageserver,
    /// The primary compute.
    Compute,
    /// The read replica the runner starts beside the primary.
    Replica,
}

/// Which link a partition cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// The primary compute from every safekeeper (it can no longer commit).
    ComputeSafekeepers,
    /// One safekeeper from its two peers.
    SafekeeperSafekeeper,
    /// The pageserver from every safekeeper (it stops ingesting WAL).
    PageserverSafekeepers,
    /// The workload's clients from the primary compute.
    ClientCompute,
}

/// Where a byte is flipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorruptTarget {
    /// A WAL segment of one safekeeper (killed, damaged, restarted): the other two hold the
    /// same WAL, so nothing acknowledged may be lost and the damage is never served.
    WalSegment,
    /// A delta layer in the bucket (damaged, then restored): reads must fail or be right.
    DeltaLayer,
    /// A cold (Parquet) segment in the bucket (damaged, then restored).
    ColdSegment,
    /// The newest manifest in the bucket (damaged, then restored).
    Manifest,
}

/// What the fault-injecting S3 proxy does while the fault lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreFault {
    /// Every new request is answered `503 Slow Down` without reaching the store.
    Errors,
    /// Every chunk is delayed.
    Latency,
    /// Requests are swallowed: nothing comes back until the client's own timeout.
    Timeouts,
}

/// Whose disk fills up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskTarget {
    /// `safekeeper-1`'s data dir (a tmpfs of its own).
    Safekeeper,
    /// The pageserver's cache dir (a tmpfs of its own).
    PageserverCache,
}

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "fault", content = "on")]
pub enum FaultKind {
    /// SIGKILL, then a restart from the recorded command line.
    Kill(ProcessKind),
    /// SIGSTOP, then SIGCONT.
    Pause(ProcessKind),
    /// iptables drops on one link, then the rules go.
    Partition(Link),
    /// A ballast file fills the disk, then is deleted.
    DiskFull(DiskTarget),
    /// A flipped byte, then repair (restore or peer recovery).
    Corrupt(CorruptTarget),
    /// The S3 proxy misbehaves, then passes traffic again.
    ObjectStore(StoreFault),
}

impl FaultKind {
    /// Every kind the nemesis knows.
    pub fn all() -> Vec<FaultKind> {
        let mut all = Vec::new();
        for p in [
            ProcessKind::Safekeeper,
            ProcessKind::Pageserver,
            ProcessKind::Compute,
            ProcessKind::Replica,
        ] {
            all.push(FaultKind::Kill(p));
            all.push(FaultKind::Pause(p));
        }
        for l in [
            Link::ComputeSafekeepers,
            Link::SafekeeperSafekeeper,
            Link::PageserverSafekeepers,
            Link::ClientCompute,
        ] {
            all.push(FaultKind::Partition(l));
        }
        all.push(FaultKind::DiskFull(DiskTarget::Safekeeper));
        all.push(FaultKind::DiskFull(DiskTarget::PageserverCache));
        for c in [
            CorruptTarget::WalSegment,
            CorruptTarget::DeltaLayer,
            CorruptTarget::ColdSegment,
            CorruptTarget::Manifest,
        ] {
            all.push(FaultKind::Corrupt(c));
        }
        for s in [
            StoreFault::Errors,
            StoreFault::Latency,
            StoreFault::Timeouts,
        ] {
            all.push(FaultKind::ObjectStore(s));
        }
        all
    }

    /// A short stable name for reports ("kill/safekeeper").
    pub fn label(&self) -> String {
        let (a, b) = match self {
            FaultKind::Kill(p) => ("kill", json_name(p)),
            FaultKind::Pause(p) => ("pause", json_name(p)),
            FaultKind::Partition(l) => ("partition", json_name(l)),
            FaultKind::DiskFull(d) => ("disk_full", json_name(d)),
            FaultKind::Corrupt(c) => ("corrupt", json_name(c)),
            FaultKind::ObjectStore(s) => ("object_store", json_name(s)),
        };
        format!("{a}/{b}")
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

fn json_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Its position in the schedule (from 0).
    pub index: u64,
    /// What it does.
    pub kind: FaultKind,
    /// Which of several like processes it hits (a safekeeper, 1–3); 1 otherwise.
    pub instance: u8,
    /// How long the fault lasts before it heals.
    pub hold: Duration,
    /// A pause with the cluster healthy before the fault.
    pub gap: Duration,
}

/// How long faults last and how far apart they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Shortest fault.
    pub min_hold: Duration,
    /// Longest fault.
    pub max_hold: Duration,
    /// Longest healthy pause before a fault (the shortest is 0).
    pub max_gap: Duration,
}

/// The faults of a run, drawn lazily from the seed.
#[derive(Debug, Clone)]
pub struct Schedule {
    rng: SplitMix,
    kinds: Vec<FaultKind>,
    round: Vec<FaultKind>,
    timing: Timing,
    next_index: u64,
}

impl Schedule {
    /// The schedule for `seed` over `kinds` (in a stable order, whatever order they come in).
    pub fn new(seed: u64, mut kinds: Vec<FaultKind>, timing: Timing) -> Schedule {
        kinds.sort();
        kinds.dedup();
        Schedule {
            rng: SplitMix::new(seed),
            kinds,
            round: Vec::new(),
            timing,
            next_index: 0,
        }
    }
}

impl Iterator for Schedule {
    type Item = Fault;

    fn next(&mut self) -> Option<Fault> {
        if self.round.is_empty() {
            if self.kinds.is_empty() {
                return None;
            }
            self.round = self.kinds.clone();
            self.rng.shuffle(&mut self.round);
        }
        let kind = self.round.pop()?;
        let instance = match kind {
            FaultKind::Kill(ProcessKind::Safekeeper)
            | FaultKind::Pause(ProcessKind::Safekeeper)
            | FaultKind::Partition(Link::SafekeeperSafekeeper)
            | FaultKind::Corrupt(CorruptTarget::WalSegment) => self.rng.range(1, 4) as u8,
            _ => 1,
        };
        let ms = |d: Duration| d.as_millis() as u64;
        let hold = Duration::from_millis(
            self.rng
                .range(ms(self.timing.min_hold), ms(self.timing.max_hold) + 1),
        );
        let gap = Duration::from_millis(self.rng.range(0, ms(self.timing.max_gap) + 1));
        let index = self.next_index;
        self.next_index += 1;
        Some(Fault {
            index,
            kind,
            instance,
            hold,
            gap,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            min_hold: Duration::from_millis(100),
            max_hold: Duration::from_millis(900),
            max_gap: Duration::from_millis(300),
        }
    }

    #[test]
    fn a_seed_gives_one_schedule_and_rounds_cover_every_kind() {
        let a: Vec<Fault> = Schedule::new(7, FaultKind::all(), timing())
            .take(100)
            .collect();
        let mut reversed = FaultKind::all();
        reversed.reverse();
        let b: Vec<Fault> = Schedule::new(7, reversed, timing()).take(100).collect();
        assert_eq!(a, b);
        let c: Vec<Fault> = Schedule::new(8, FaultKind::all(), timing())
            .take(100)
            .collect();
        assert_ne!(a, c);
        let kinds = FaultKind::all().len();
        let first_round: std::collections::BTreeSet<_> =
            a.iter().take(kinds).map(|f| f.kind).collect();
        assert_eq!(first_round.len(), kinds);
        for f in &a {
            assert!(f.hold >= timing().min_hold && f.hold <= timing().max_hold);
            assert!((1..=3).contains(&f.instance));
        }
    }

    #[test]
    fn labels_are_stable() {
        assert_eq!(
            FaultKind::Kill(ProcessKind::Safekeeper).label(),
            "kill/safekeeper"
        );
        assert_eq!(
            FaultKind::Partition(Link::ClientCompute).label(),
            "partition/client_compute"
        );
        assert_eq!(
            FaultKind::DiskFull(DiskTarget::PageserverCache).label(),
            "disk_full/pageserver_cache"
        );
    }
}
