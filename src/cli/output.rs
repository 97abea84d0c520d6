//! How commands print: a line on stdout, a JSON string, an error in text or JSON.

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;

use ferrisdb_client::Error;
use serde_json::json;

/// Prints one line on stdout. A reader that went away (`| head`) is not an error worth a
/// panic, which `println!` would give.
pub(crate) fn say(line: impl Display) {
    let _ = writeln!(std::io::stdout(), "{line}");
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
        eprintln!("error: {e}");
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
