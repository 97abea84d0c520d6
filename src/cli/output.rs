//! How commands print: a line on stdout, a JSON string, an error in text or JSON.

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;
use std::sync::OnceLock;

use ferrisdb_client::Error;
use serde_json::json;

/// The first error writing stdout, if any (see [`say`]).
static OUTPUT_ERROR: OnceLock<std::io::Error> = OnceLock::new();

/// Prints one line on stdout. A failed write is no panic (which `println!` gives): a reader
/// that went away (`| head`) stops a command quietly, anything else (a full disk) turns its
/// exit status into a failure ([`exit_status`]); commands that print until interrupted stop
/// once [`output_lost`] says so.
pub(crate) fn say(line: impl Display) {
    if let Err(e) = writeln!(std::io::stdout(), "{line}") {
        let _ = OUTPUT_ERROR.set(e);
    }
}

/// Prints one line on stderr; a closed stderr loses the line but never panics (which
/// `eprintln!` does, exiting 101 instead of the command's status).
pub(crate) fn warn(line: impl Display) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Whether a line printed on stdout was lost: nothing more is worth printing.
pub(crate) fn output_lost() -> bool {
    OUTPUT_ERROR.get().is_some()
}

/// A command's exit status, once its output is accounted for: output lost to anything but a
/// reader that went away is a failure, even when the command itself succeeded (the caller
/// never saw its answer).
pub(crate) fn exit_status(code: ExitCode) -> ExitCode {
    match OUTPUT_ERROR.get() {
        Some(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            warn(format_args!("error: writing the output: {e}"));
            ExitCode::FAILURE
        }
        _ => code,
    }
}

/// A JSON string literal.
pub(crate) fn js(s: impl Into<String>) -> serde_json::Value {
    serde_json::Value::String(s.into())
}

/// Prints `e` (as `{"error": …}` with `--json`) and gives the failure exit status.
pub(crate) fn fail(json: bool, e: &Error) -> ExitCode {
    if json {
        say(json!({"error": {"code": e.code(), "message": e.message()}}));
    } else {
        warn(format_args!("error: {e}"));
    }
    ExitCode::FAILURE
}

/// The exit status of a command's result, its error printed.
pub(crate) fn finish(json: bool, result: Result<(), Error>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(json, &e),
    }
}
