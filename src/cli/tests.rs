//! Property tests of the command line: generated strings (fixed seed) through every value
//! parser and whole command lines, none of which may panic.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clap::Parser;

use super::ClientCommand;
use super::atomic_op::parse_stamp_at;
use super::client_args::{ClientArgs, parse_seconds};
use super::time::{MAX_RFC3339_MICROS, parse_timestamp, rfc3339, rfc3339_text};
use crate::escape;

/// A deterministic generator (fixed seed): reproducible, and varied enough to reach the
/// corners a hand-picked list misses.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }

    /// A string built from pieces parsers trip on, and random characters.
    fn hostile(&mut self) -> String {
        const PIECES: &[&str] = &[
            "0",
            "1",
            "9",
            "-",
            "+",
            ".",
            "e",
            "E",
            "inf",
            "-inf",
            "NaN",
            "infinity",
            "1e308",
            "1e-400",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "99999999999999999999999999",
            "2147483647",
            "-2147483648",
            "9999",
            "10000",
            "-12-31T23:59:59",
            "1970-01-01",
            "T",
            "Z",
            ":",
            "\\",
            "\\x",
            "\\xff",
            "\\x0",
            "\\q",
            "0x",
            "ff",
            "g",
            "end",
            " ",
            "\t",
            "\n",
            "\0",
            "é",
            "✓",
            "\u{202e}",
            "\u{feff}",
            "--",
            "=",
            ",",
            "\"",
            "'",
            ";",
            "%",
            "{}",
        ];
        let mut s = String::new();
        for _ in 0..self.next() % 8 {
            if self.next().is_multiple_of(5) {
                s.push(char::from_u32((self.next() % 0x11_0000) as u32).unwrap_or('\u{fffd}'));
            } else {
                s.push_str(self.pick(PIECES));
            }
        }
        s
    }
}

/// The client arguments of `ferrisdb getversion ARGS…`.
fn client_args(args: &[&str]) -> ClientArgs {
    let argv = ["ferrisdb", "getversion"].iter().chain(args);
    match crate::Cli::try_parse_from(argv).unwrap().command {
        crate::Command::Client(ClientCommand::GetVersion(c)) => c.args,
        _ => panic!("not getversion"),
    }
}

#[test]
fn value_parsers_answer_every_string_without_panicking() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut accepted = [0usize; 5];
    let mut template = client_args(&[]);
    for s in [
        "--timeout=1e9",
        "--timeout=inf",
        "--timeout=-1",
        "--timeout=NaN",
    ] {
        assert!(
            crate::Cli::try_parse_from(["ferrisdb", "getversion", s]).is_err(),
            "{s}"
        );
    }
    assert_eq!(
        client_args(&["--timeout=0.5"]).timeout(),
        Duration::from_millis(500)
    );
    for round in 0..30_000u32 {
        let s = rng.hostile();
        if let Ok(secs) = parse_seconds(&s) {
            accepted[0] += 1;
            assert!(secs.is_finite() && secs >= 0.0, "{s:?} -> {secs}");
            template.timeout = secs;
            let _ = template.timeout();
        }
        if let Ok(micros) = parse_timestamp(&s) {
            accepted[1] += 1;
            let _ = rfc3339(micros);
            let _ = rfc3339_text(micros);
        }
        accepted[2] += usize::from(escape::parse("key", &s).is_ok());
        accepted[3] += usize::from(escape::parse_hex("key", &s).is_ok());
        accepted[4] += usize::from(parse_stamp_at(&s).is_ok());
        // Numbers through clap as every u64/i32 flag takes them (fewer rounds: slow).
        if round.is_multiple_of(50) {
            let _ = crate::Cli::try_parse_from(["ferrisdb", "get", "k", "--at-version", &s]);
            let _ = crate::Cli::try_parse_from(["ferrisdb", "getkey", "k", "--offset", &s]);
            let _ = crate::Cli::try_parse_from(["ferrisdb", "changes", "--limit", &s]);
        }
    }
    // The generator reaches both outcomes of every parser, or it tests nothing.
    assert!(accepted.iter().all(|&n| n > 0), "{accepted:?}");
    for micros in [0, 1, MAX_RFC3339_MICROS, MAX_RFC3339_MICROS + 1, u64::MAX] {
        let _ = rfc3339_text(micros);
    }
    assert!(rfc3339(u64::MAX).is_none());
    assert_eq!(
        rfc3339(MAX_RFC3339_MICROS).as_deref(),
        Some("9999-12-31T23:59:59.999999Z")
    );
    for bad in ["inf", "-1", "NaN", "1e300", "-inf", ""] {
        assert!(parse_seconds(bad).is_err(), "{bad}");
    }
}

#[test]
fn whole_command_lines_parse_or_fail_without_panicking() {
    const WORDS: &[&str] = &[
        "get",
        "set",
        "getkey",
        "history",
        "changes",
        "clear",
        "clearrange",
        "scan",
        "atomic",
        "getversion",
        "versionat",
        "watch",
        "admin",
        "branch",
        "checkpoint",
        "status",
        "--timeout",
        "--at-version",
        "--at-timestamp",
        "--offset",
        "--selector",
        "--limit",
        "--from",
        "--to",
        "--hex",
        "--json",
        "--i64",
        "--stamp-offset",
        "--database",
        "--endpoint",
        "--token",
        "add",
        "set_versionstamped_key",
        "k",
        "v",
    ];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..2_000 {
        let mut argv = vec!["ferrisdb".to_string()];
        for _ in 0..rng.next() % 7 {
            if rng.next().is_multiple_of(2) {
                argv.push(rng.pick(WORDS).to_string());
            } else {
                argv.push(rng.hostile());
            }
        }
        let Ok(cli) = crate::Cli::try_parse_from(&argv) else {
            continue;
        };
        // What runs before any connection: decoding keys, selectors, atomic templates.
        if let crate::Command::Client(cmd) = cli.command {
            match cmd {
                ClientCommand::Atomic(c) => {
                    let _ = c.atomic.resolve(c.args.codec());
                    let _ = c.args.timeout();
                }
                ClientCommand::GetKey(c) => {
                    let _ = c.selector.selector(c.args.codec());
                }
                ClientCommand::Get(super::get::Get { key, args, .. })
                | ClientCommand::Clear(super::clear::Clear { key, args }) => {
                    let _ = args.codec().decode("key", &key);
                    let _ = args.timeout();
                }
                _ => {}
            }
        }
    }
}

#[test]
fn debug_never_prints_a_token() {
    let args = client_args(&["--token", "tok-s3cret"]);
    let shown = format!("{args:?}");
    assert!(
        !shown.contains("tok-s3cret") && shown.contains("<redacted>"),
        "{shown}"
    );
    let cli =
        crate::Cli::try_parse_from(["ferrisdb", "admin", "status", "--admin-token", "tok-s3cret"])
            .unwrap();
    let crate::Command::Client(ClientCommand::Admin { command }) = cli.command else {
        panic!("not an admin command");
    };
    let shown = format!("{command:?}");
    assert!(
        !shown.contains("tok-s3cret") && shown.contains("<redacted>"),
        "{shown}"
    );
}
