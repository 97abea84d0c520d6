//! Resolver benchmark: conflict checks against a full 5-second window of commits.
//!
//! ```sh
//! cargo bench --bench resolver
//! ```
//!
//! The window is filled as 14,000 commits/s would fill it (the durable-write rate at 16
//! clients on the benchmark machine, in batches of 6): `FERRISDB_BENCH_BATCHES` batches
//! (default 11,500, 4.9 s of them) of 6 single-key writes over 100,000 keys. Then each case
//! checks a transaction of 4 point reads (or one 1,000-key range read) at a read version
//! that is the newest (what nearly every transaction has), 1 s old, or at the start of the
//! window (4.9 s old: the longest a transaction may live), and prints the time per check;
//! `add` is timed per batch while filling. Timings are printed, never asserted.
//!
//! Run without `--bench` (as `cargo test --all-targets` runs benchmark targets), it only says
//! how to run it.

mod support;

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use ferrisdb_common::Version;
use ferrisdb_compute::requests::KeyRange;
use ferrisdb_compute::resolver::Resolver;

/// Keys `k000000`… in a fixed pseudo-random order.
fn key(i: u64) -> Bytes {
    Bytes::from(format!("k{:06}", i % 100_000))
}

fn main() {
    if !support::benchmarking("resolver") {
        return;
    }
    let batches: u64 = std::env::var("FERRISDB_BENCH_BATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11_500);
    let micros_per_batch = 6_000_000 / 14_000; // 6 commits at 14,000/s
    let mut res = Resolver::new(Version(0));
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let started = Instant::now();
    for b in 1..=batches {
        let writes = (0..6).map(|_| KeyRange::single(&key(next()))).collect();
        res.add(Version(b), b * micros_per_batch, writes);
    }
    let add_ns = started.elapsed().as_nanos() as f64 / batches as f64;
    let now = batches * micros_per_batch;
    println!("\n## Resolver: {batches} batches of 6 writes in the window\n");
    println!("`add`: {add_ns:.0} ns per batch\n");
    println!("| read version | reads | ns per check | conflicts |");
    println!("|---|---|---:|---:|");
    let points = |next: &mut dyn FnMut() -> u64| -> Vec<KeyRange> {
        (0..4).map(|_| KeyRange::single(&key(next()))).collect()
    };
    let span = |next: &mut dyn FnMut() -> u64| -> Vec<KeyRange> {
        let a = next() % 99_000;
        vec![KeyRange {
            begin: key(a),
            end: key(a + 1_000),
        }]
    };
    let cases: [(&str, u64); 3] = [
        ("newest", batches),
        ("1 s old", batches - 1_000_000 / micros_per_batch),
        ("4.9 s old", 1),
    ];
    for (name, rv) in cases {
        for (shape, make) in [
            (
                "4 point reads",
                &points as &dyn Fn(&mut dyn FnMut() -> u64) -> Vec<KeyRange>,
            ),
            ("a 1,000-key range", &span),
        ] {
            let reads: Vec<Vec<KeyRange>> = (0..2_000).map(|_| make(&mut next)).collect();
            let started = Instant::now();
            let mut conflicts = 0;
            for r in &reads {
                if black_box(res.check(Version(rv), r, &[], now)).is_err() {
                    conflicts += 1;
                }
            }
            let ns = started.elapsed().as_nanos() as f64 / reads.len() as f64;
            println!(
                "| {name} | {shape} | {ns:.0} | {conflicts}/{} |",
                reads.len()
            );
        }
    }
}
