//! The library half of `ferrisdb-loadtest`: what the fault suite shares between its runner
//! (the `chaos` subcommand), its checker and the tests that drive them.
//!
//! - [`history`]: operations as clients invoke and complete them, with their outcomes.

pub mod history;
