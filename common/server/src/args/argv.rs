//! Parsed arguments back into a command line, generically.
//!
//! [`to_argv`] walks the arguments clap knows for a struct (`clap::Args::augment_args`: each
//! argument's id, long name, action and position) and looks each one's value up in the
//! struct serialized with serde, whose field names are clap's ids. So the flag names come
//! from the one definition, the `#[arg]` attributes, and writing a command line never spells
//! them again. A field that matches no argument (a struct whose serde and clap names
//! diverged) is an error, not a silently dropped flag; [`from_argv`] is the inverse, and every
//! `Args` struct's tests check `from_argv(to_argv(x)) == x`.
//!
//! Every argument with a value is written, defaults included: a command line recorded in
//! `cluster.json` starts the component the same way whatever a later binary's defaults are.

use std::ffi::OsString;
use std::fmt::Display;

use clap::{Arg, ArgAction, Args, Command, FromArgMatches};
use ferrisdb_common::{Error, Result};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// The command clap builds for `T` alone, without a program name in front of the arguments.
fn command<T: Args>() -> Command {
    T::augment_args(Command::new("argv").no_binary_name(true))
}

/// The command line (flags and values, without a program or subcommand name) that parses to
/// `value`: `--flag VALUE` for each value (repeated for a list), `--flag` for a set switch,
/// positional values in order (after `--` for a `last` argument). A value equal to its
/// argument's default is left out.
///
/// Fails if the value does not serialize to a struct of strings, numbers, booleans, lists
/// and nulls, or if one of its fields is no argument of the struct.
pub fn to_argv<T: Args + Serialize>(value: &T) -> Result<Vec<String>> {
    write_argv(value, |_| true)
}

/// Like [`to_argv`], but only the arguments clap requires: what a caller must give, the
/// rest being defaults. With it a test checks that a struct's hand-written constructor
/// agrees with the defaults in its `#[arg]` attributes: `from_argv(required_only(x)) == x`.
pub fn required_only<T: Args + Serialize>(value: &T) -> Result<Vec<String>> {
    write_argv(value, Arg::is_required_set)
}

/// Parses `argv` (flags and values only, no program name) as `T`'s arguments. Arguments
/// with an `env` fallback read the environment as the program would.
pub fn from_argv<T, I>(argv: I) -> std::result::Result<T, clap::Error>
where
    T: Args + FromArgMatches,
    I: IntoIterator,
    I::Item: Into<OsString> + Clone,
{
    let matches = command::<T>().try_get_matches_from(argv)?;
    T::from_arg_matches(&matches)
}

/// A serde `serialize_with` for an optional value whose argument is parsed from its
/// `Display` form (`humantime::Duration`, which has no serde support of its own).
pub fn display_option<T: Display, S: Serializer>(
    value: &Option<T>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    match value {
        Some(v) => serializer.collect_str(v),
        None => serializer.serialize_none(),
    }
}

fn write_argv<T: Args + Serialize>(value: &T, keep: impl Fn(&Arg) -> bool) -> Result<Vec<String>> {
    let fields = match serde_json::to_value(value) {
        Ok(Value::Object(fields)) => fields,
        Ok(other) => {
            return Err(Error::internal(format!(
                "arguments must serialize to a struct, not {other}"
            )));
        }
        Err(e) => return Err(Error::internal(format!("arguments: {e}"))),
    };
    let command = command::<T>();
    let mut argv = Vec::new();
    let mut positional = Vec::new();
    let mut after_dashes = Vec::new();
    let mut matched = 0;
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(value) = fields.get(id) else {
            continue;
        };
        matched += 1;
        if !keep(arg) {
            continue;
        }
        // A switch is its name alone, present only when set.
        if let (Value::Bool(set), ArgAction::SetTrue) = (value, arg.get_action()) {
            if *set && let Some(long) = arg.get_long() {
                argv.push(format!("--{long}"));
            }
            continue;
        }
        let values = match value {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|v| scalar(id, v))
                .collect::<Result<Vec<_>>>()?,
            other => vec![scalar(id, other)?],
        };
        // A value equal to the argument's default is left out: the command line says what
        // differs from the defaults, as a person would write it (and as the compose file and
        // docs do), and parses back to the same struct.
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() && defaults == values {
            continue;
        }
        match arg.get_long() {
            Some(long) => {
                for v in values {
                    // A value that looks like a flag is joined to its name, so it is never
                    // read as one.
                    if v.starts_with('-') {
                        argv.push(format!("--{long}={v}"));
                    } else {
                        argv.push(format!("--{long}"));
                        argv.push(v);
                    }
                }
            }
            None if arg.is_positional() && arg.is_last_set() => after_dashes.extend(values),
            None if arg.is_positional() => positional.extend(values),
            None => {
                return Err(Error::internal(format!(
                    "argument {id} has no long name: it cannot be written"
                )));
            }
        }
    }
    if matched != fields.len() {
        let ids: Vec<&str> = command
            .get_arguments()
            .map(|a| a.get_id().as_str())
            .collect();
        let strays: Vec<&str> = fields
            .keys()
            .map(String::as_str)
            .filter(|k| !ids.contains(k))
            .collect();
        return Err(Error::internal(format!(
            "fields {} are no command-line arguments (a serde name differs from clap's id?)",
            strays.join(", ")
        )));
    }
    argv.extend(positional);
    if !after_dashes.is_empty() {
        argv.push("--".to_string());
        argv.extend(after_dashes);
    }
    Ok(argv)
}

/// One value as the argument parser reads it back.
fn scalar(id: &str, value: &Value) -> Result<String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(Error::internal(format!(
            "argument {id}: {other} is not a single value"
        ))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::path::PathBuf;

    /// Every shape of argument the servers use.
    #[derive(Debug, Clone, PartialEq, clap::Args, serde::Serialize)]
    struct Sample {
        /// A required value with a renamed flag.
        #[arg(long = "peer", required = true)]
        peers: Vec<String>,
        /// A value with a default.
        #[arg(long, default_value = "127.0.0.1:1")]
        listen: SocketAddr,
        /// An optional path.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A number that may be negative.
        #[arg(long, allow_negative_numbers = true, default_value_t = 0)]
        offset: i64,
        /// A switch.
        #[arg(long)]
        on: bool,
        /// A duration by its Display form.
        #[arg(long)]
        #[serde(serialize_with = "display_option")]
        after: Option<humantime_like::Secs>,
        /// Flattened arguments.
        #[command(flatten)]
        #[serde(flatten)]
        security: crate::args::SecurityArgs,
        /// The command after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    }

    /// A stand-in for `humantime::Duration`: parsed from and written as text, no serde.
    mod humantime_like {
        /// Seconds written `Ns`.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub struct Secs(pub u64);
        impl std::fmt::Display for Secs {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}s", self.0)
            }
        }
        impl std::str::FromStr for Secs {
            type Err = String;
            fn from_str(s: &str) -> Result<Secs, String> {
                s.trim_end_matches('s')
                    .parse()
                    .map(Secs)
                    .map_err(|e| format!("{e}"))
            }
        }
    }

    fn sample() -> Sample {
        Sample {
            peers: vec!["http://a:1".into(), "http://b:2".into()],
            listen: "127.0.0.1:7".parse().unwrap(),
            dir: Some(PathBuf::from("/tmp/a b")),
            offset: -3,
            on: true,
            after: Some(humantime_like::Secs(30)),
            security: crate::args::SecurityArgs {
                cluster_token_file: Some("/t".into()),
                insecure: true,
                ..Default::default()
            },
            command: vec!["ferrisdb".into(), "--x".into()],
        }
    }

    #[test]
    fn values_at_their_defaults_are_left_out() {
        let mut value = sample();
        value.listen = "127.0.0.1:1".parse().unwrap();
        value.offset = 0;
        let argv = to_argv(&value).unwrap();
        assert!(!argv.iter().any(|a| a.starts_with("--listen")), "{argv:?}");
        assert!(!argv.iter().any(|a| a.starts_with("--offset")), "{argv:?}");
        assert_eq!(from_argv::<Sample, _>(&argv).unwrap(), value);
        // Off its default, the value is written.
        value.offset = 5;
        let argv = to_argv(&value).unwrap();
        assert!(argv.windows(2).any(|w| w == ["--offset", "5"]), "{argv:?}");
    }

    #[test]
    fn a_written_command_line_parses_back_to_the_same_value() {
        let value = sample();
        let argv = to_argv(&value).unwrap();
        assert_eq!(
            argv,
            [
                "--peer",
                "http://a:1",
                "--peer",
                "http://b:2",
                "--listen",
                "127.0.0.1:7",
                "--dir",
                "/tmp/a b",
                "--offset=-3",
                "--on",
                "--after",
                "30s",
                "--cluster-token-file",
                "/t",
                "--insecure",
                "--",
                "ferrisdb",
                "--x",
            ]
        );
        assert_eq!(from_argv::<Sample, _>(&argv).unwrap(), value);
        // Unset switches, empty options and defaults round-trip too.
        let bare = Sample {
            dir: None,
            offset: 0,
            on: false,
            after: None,
            security: crate::args::SecurityArgs::default(),
            ..sample()
        };
        assert_eq!(
            from_argv::<Sample, _>(to_argv(&bare).unwrap()).unwrap(),
            bare
        );
        // Only what clap requires: the peers (and the trailing command, which is not
        // required, is left out).
        assert_eq!(
            required_only(&bare).unwrap(),
            ["--peer", "http://a:1", "--peer", "http://b:2"]
        );
    }

    #[test]
    fn a_field_that_is_no_argument_is_an_error() {
        #[derive(clap::Args, serde::Serialize)]
        struct Diverged {
            /// Renamed by serde only.
            #[arg(long)]
            #[serde(rename = "other")]
            name: String,
        }
        let e = to_argv(&Diverged { name: "x".into() }).unwrap_err();
        assert!(e.to_string().contains("other"), "{e}");
        #[derive(clap::Args, serde::Serialize)]
        struct Nested {
            /// Flattened for clap, nested for serde.
            #[command(flatten)]
            security: crate::args::SecurityArgs,
        }
        let e = to_argv(&Nested {
            security: crate::args::SecurityArgs::default(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("security"), "{e}");
    }
}
