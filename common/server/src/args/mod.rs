//! The servers' command-line arguments, defined once.
//!
//! Each service crate owns one `Args` struct (`ferrisdb_wal_service::Args`,
//! `ferrisdb_pageserver::Args`, `ferrisdb_compute::Args`) that names its flags, defaults and
//! help. The `ferrisdb` binary flattens it into its subcommand; `ferrisdb dev` and the test
//! launchers build the struct's values and turn them into a child's command line with
//! [`to_argv`], which reads the flag names from the struct's own clap definition: no flag is
//! spelled a second time as a string, so none can drift. This module holds that writer (and
//! its inverse, [`from_argv`]) and the argument groups every server flattens: [`SecurityArgs`],
//! [`RuntimeArgs`] and [`S3Args`] (where it keeps data in object storage).

pub mod argv;
pub mod runtime;
pub mod s3;
pub mod security;

pub use argv::{display_option, from_argv, required_only, to_argv};
pub use runtime::RuntimeArgs;
pub use s3::S3Args;
pub use security::SecurityArgs;
