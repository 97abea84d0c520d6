//! The library half of `ferrisdb-loadtest`: what the fault suite shares between its runner
//! (the `chaos` subcommand), its checker and the tests that drive them.
//!
//! - [`history`]: operations as clients invoke and complete them, with their outcomes.
//! - Workloads whose histories can be checked: [`append_workload`] (Elle's list-append
//!   transactions) and [`register_workload`] (single-key registers), on [`key_pool`] keys,
//!   recording outcomes as [`attempt`] classifies the SDK's errors, in the loop of
//!   [`client_loop`].
//! - The checker: [`check`] (the entry point and its report), [`elle`] and [`elle_graph`]
//!   (list-append: version orders, dependency cycles, lost and refused writes), [`cycles`]
//!   (strongly connected components, shortest cycles), [`linearizable`] (registers), and
//!   [`anomaly`] (what they report).
//! - [`chaos`]: the nemesis runner; [`schedule`] draws its faults from a seed, [`cluster`]
//!   owns the processes, [`partition`], [`disk`], [`s3_proxy`] and [`moto`] inject the
//!   network, disk and object-store faults, [`probe`] measures recovery, [`chaos_workload`]
//!   is how workloads and their checkers plug in ([`chaos_checked`]: the list-append and
//!   register workloads under the history checker), [`chaos_report`] writes the report.

pub mod anomaly;
pub mod append_workload;
pub mod attempt;
pub mod chaos;
pub mod chaos_checked;
pub mod chaos_cli;
pub mod chaos_report;
pub mod chaos_workload;
pub mod check;
pub mod client_loop;
pub mod cluster;
pub mod cycles;
pub mod disk;
pub mod elle;
pub mod elle_derived;
pub mod elle_graph;
pub mod history;
pub mod key_pool;
pub mod linearizable;
pub mod moto;
pub mod partition;
pub mod probe;
pub mod register_workload;
pub mod s3_proxy;
pub mod schedule;
