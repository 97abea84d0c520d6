//! The library half of `ferrisdb-loadtest`: what the fault suite shares between its runner
//! (the `chaos` subcommand), its checker and the tests that drive them.
//!
//! - [`history`]: operations as clients invoke and complete them, with their outcomes.
//! - [`chaos`]: the nemesis runner; [`schedule`] draws its faults from a seed, [`cluster`]
//!   owns the processes, [`partition`], [`disk`], [`s3_proxy`] and [`moto`] inject the
//!   network, disk and object-store faults, [`probe`] measures recovery, [`chaos_workload`]
//!   is how workloads and their checkers plug in, [`chaos_report`] writes the report.

pub mod chaos;
pub mod chaos_cli;
pub mod chaos_report;
pub mod chaos_workload;
pub mod cluster;
pub mod disk;
pub mod history;
pub mod moto;
pub mod partition;
pub mod probe;
pub mod s3_proxy;
pub mod schedule;
