//! Deterministic simulation of the WAL protocol: the real acceptors and the real proposer's
//! decisions under a simulated faulty network and clock, many seeds per run
//! (docs/wal-protocol.md, "Simulation"; docs/testing.md).
//!
//! `FERRISDB_SIM_SEEDS=N` runs N seeds (default [`DEFAULT_SEEDS`]) starting at
//! `FERRISDB_SIM_FIRST_SEED` (default 0); `FERRISDB_SIM_SEED=S` replays seed S alone and prints
//! its last events.

mod sim;

use std::time::Instant;

use sim::{Bugs, Config, Stats, World};

/// Seeds per `cargo test` run: a few seconds of the suite on this machine.
const DEFAULT_SEEDS: u64 = 2000;
/// Simulated time of faults per seed (ticks of the simulated clock).
const DURATION: u64 = 3_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn run(seed: u64, bugs: Bugs) -> Result<Stats, String> {
    World::new(Config {
        seed,
        duration: DURATION,
        bugs,
    })
    .run()
}

/// The seeds to run: one to replay, or a range.
fn seeds() -> Vec<u64> {
    if let Some(s) = env_u64("FERRISDB_SIM_SEED") {
        return vec![s];
    }
    let n = env_u64("FERRISDB_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let first = env_u64("FERRISDB_SIM_FIRST_SEED").unwrap_or(0);
    (first..first + n).collect()
}

/// Runs `seeds`, returning the first failing seed and what failed.
fn first_failure(seeds: &[u64], bugs: Bugs) -> (Option<(u64, String)>, Stats, f64) {
    let started = Instant::now();
    let mut total = Stats::default();
    for &seed in seeds {
        match run(seed, bugs) {
            Ok(s) => {
                total.events += s.events;
                total.elections_won += s.elections_won;
                total.acked += s.acked;
                total.reads += s.reads;
                total.wal_copies += s.wal_copies;
                total.buffer_misses += s.buffer_misses;
                total.acceptor_crashes += s.acceptor_crashes;
                total.torn_crashes += s.torn_crashes;
                total.proposer_crashes += s.proposer_crashes;
                total.partitions += s.partitions;
            }
            Err(why) => return (Some((seed, why)), total, started.elapsed().as_secs_f64()),
        }
    }
    (None, total, started.elapsed().as_secs_f64())
}

/// Every seed keeps every invariant: one winner per term, committed logs agree, nothing
/// acknowledged is lost (a final election by a healthy majority recovers it byte for
/// byte), terms never go back, the commit position never passes a majority's flush.
#[test]
fn the_wal_protocol_keeps_its_invariants_under_simulated_faults() {
    let seeds = seeds();
    let (failure, total, secs) = first_failure(&seeds, Bugs::default());
    if let Some((seed, why)) = failure {
        panic!(
            "simulation failed: FERRISDB_SIM_SEED={seed}\n{why}\nreplay: FERRISDB_SIM_SEED={seed} \
             cargo test -p ferrisdb-compute --test wal_simulation -- --nocapture"
        );
    }
    println!(
        "{} seeds in {secs:.1}s ({:.0} seeds/s): {} events, {} elections won, {} records \
         acknowledged, {} read versions confirmed, {} acceptor crashes ({} mid-write), {} proposer crashes, {} partitions, {} WAL copies \
         from peers, {} buffer misses",
        seeds.len(),
        seeds.len() as f64 / secs.max(1e-9),
        total.events,
        total.elections_won,
        total.acked,
        total.reads,
        total.acceptor_crashes,
        total.torn_crashes,
        total.proposer_crashes,
        total.partitions,
        total.wal_copies,
        total.buffer_misses
    );
    // The runs must exercise the protocol, not idle: elections are won and records
    // acknowledged, acceptors crash mid-append.
    if seeds.len() >= 100 {
        assert!(total.elections_won >= seeds.len() as u64, "{total:?}");
        assert!(total.acked >= 10 * seeds.len() as u64, "{total:?}");
        assert!(total.torn_crashes > 0, "{total:?}");
    }
}

/// A seed replays exactly: the same events, the same outcome.
#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 77] {
        let a = run(seed, Bugs::default()).map(|s| (s.events, s.acked, s.elections_won));
        let b = run(seed, Bugs::default()).map(|s| (s.events, s.acked, s.elections_won));
        assert_eq!(a, b, "seed {seed} ran differently twice");
    }
}

/// Runs the default seeds with `bugs` planted and asserts some seed reports a violation.
fn assert_caught(bugs: Bugs, what: &str) {
    let seeds: Vec<u64> = (0..DEFAULT_SEEDS).collect();
    let (failure, _, _) = first_failure(&seeds, bugs);
    let (seed, why) = failure.unwrap_or_else(|| panic!("no seed caught {what}"));
    println!(
        "{what}: caught by FERRISDB_SIM_SEED={seed}: {}",
        why.lines().next().unwrap_or("")
    );
}

/// Planted bug: an acceptor that answers appends before they are durable loses
/// acknowledged WAL when it crashes.
#[test]
fn a_planted_ack_before_fsync_is_caught() {
    let bugs = Bugs {
        ack_before_fsync: true,
        ..Bugs::default()
    };
    assert_caught(bugs, "an acceptor that acknowledges before fsync");
}

/// Planted bug: a proposer that picks the longest log as donor, ignoring terms, overwrites
/// committed WAL of a newer term.
#[test]
fn a_planted_donor_by_length_is_caught() {
    let bugs = Bugs {
        donor_by_length: true,
        ..Bugs::default()
    };
    assert_caught(bugs, "a proposer that ignores terms when picking its donor");
}

/// Planted bug: a proposer that acknowledges a record once any one acceptor has flushed it.
#[test]
fn a_planted_commit_without_majority_is_caught() {
    let bugs = Bugs {
        commit_on_one_flush: true,
        ..Bugs::default()
    };
    assert_caught(bugs, "a proposer that commits without a majority");
}

/// Planted bug: a primary that hands out read versions without the liveness check serves a
/// stale version once a newer primary has acknowledged commits.
#[test]
fn a_planted_read_without_liveness_check_is_caught() {
    let bugs = Bugs {
        read_without_check: true,
        ..Bugs::default()
    };
    assert_caught(bugs, "a read version handed out without a liveness check");
}
