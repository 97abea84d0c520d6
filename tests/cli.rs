//! The CLI and the shell through the real binary against a real `ferrisdb dev` cluster: binary
//! keys and values with escapes, `--hex` and `--json`; every atomic op; key selectors, read
//! versions and watches; error codes for bad input; and `ferrisdb shell` both piped and on a
//! real terminal (tmux), with transactions that commit, roll back and conflict.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferrisdb_client::{Bytes, Database};
use support::{BIN, DevCluster, cli};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Runs the CLI against `ep`, asserting success, and returns stdout.
fn ok(ep: &str, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--endpoint", ep]);
    let (ok, out, err) = cli(&all);
    assert!(ok, "ferrisdb {args:?} failed: {out} {err}");
    out
}

/// Runs the CLI with `--json` against `ep`, asserting success, and parses stdout.
fn ok_json(ep: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    json(&ok(ep, &all))
}

/// Runs the CLI with `--json`, asserting it fails with `code`, and returns the message.
fn fails_with(ep: &str, args: &[&str], code: &str) -> String {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--endpoint", ep, "--json"]);
    let (ok, out, err) = cli(&all);
    assert!(!ok, "ferrisdb {args:?} should have failed: {out} {err}");
    let v = json(&out);
    assert_eq!(v["error"]["code"], code, "ferrisdb {args:?}: {v}");
    v["error"]["message"].as_str().unwrap().to_string()
}

async fn stored(db: &Database, key: &[u8]) -> Option<Bytes> {
    let key = Bytes::copy_from_slice(key);
    db.run(|tx| {
        let key = key.clone();
        async move { tx.get(key).await }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_keys_and_values_through_escapes_hex_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let ep = cluster.endpoint();
    let db = cluster.db(Duration::from_secs(10)).await;

    // Escapes in, exact bytes stored.
    let set = ok_json(&ep, &["set", r"bin/\x00\xff\\k", r"v\n\t\x01é"]);
    assert_eq!(set["key"], r"bin/\x00\xff\\k");
    assert_eq!(
        stored(&db, b"bin/\x00\xff\\k").await.as_deref(),
        Some("v\n\t\x01é".as_bytes())
    );
    // Text output escapes what a terminal cannot show, canonically, and keeps UTF-8.
    assert_eq!(ok(&ep, &["get", r"bin/\x00\xFF\\k"]), "v\\x0a\\x09\\x01é\n");
    let got = ok_json(&ep, &["get", r"bin/\x00\xff\\k"]);
    assert_eq!(got["key"], r"bin/\x00\xff\\k");
    assert_eq!(got["value"], r"v\x0a\x09\x01é");
    assert!(got["version"].as_u64().unwrap() >= set["version"].as_u64().unwrap());

    // --hex: hex in and out.
    let got = ok_json(&ep, &["get", "62696e2f00ff5c6b", "--hex"]);
    assert_eq!(got["key"], "62696e2f00ff5c6b");
    assert_eq!(got["value"], "760a0901c3a9");
    ok(&ep, &["set", "62696e2f01", "00ff00", "--hex"]);
    assert_eq!(
        stored(&db, b"bin/\x01").await.as_deref(),
        Some(&b"\0\xff\0"[..])
    );
    assert_eq!(ok(&ep, &["get", r"bin/\x01"]), "\\x00\\xff\\x00\n");

    // A key made of every byte value survives the trip through text both ways.
    let every: Vec<u8> = (0..=255u8).collect();
    let mut key = b"all/".to_vec();
    key.extend_from_slice(&every);
    let hex_key: String = key.iter().map(|b| format!("{b:02x}")).collect();
    ok(&ep, &["set", &hex_key, "ff", "--hex"]);
    let scanned = ok_json(&ep, &["scan", "all/", "all0"]);
    let escaped = scanned["rows"][0]["key"].as_str().unwrap().to_string();
    assert_eq!(ok(&ep, &["get", &escaped]), "\\xff\n", "via {escaped}");
    assert_eq!(stored(&db, &key).await.as_deref(), Some(&b"\xff"[..]));

    // Scans: forward, reverse, limited, in text and JSON.
    for i in 0..5u8 {
        ok(&ep, &["set", &format!(r"r/\x0{i}"), &format!("v{i}")]);
    }
    let rows = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["key"].as_str().unwrap().to_string(),
                    r["value"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let all: Vec<(String, String)> = (0..5)
        .map(|i| (format!(r"r/\x0{i}"), format!("v{i}")))
        .collect();
    assert_eq!(rows(&ok_json(&ep, &["scan", "r/", "r0"])), all);
    let reversed: Vec<_> = all.iter().rev().cloned().collect();
    let back = ok_json(&ep, &["scan", "r/", "r0", "--reverse"]);
    assert_eq!(rows(&back), reversed);
    assert_eq!(back["reverse"], true);
    assert_eq!(
        rows(&ok_json(
            &ep,
            &["scan", "r/", "r0", "--reverse", "--limit", "2"]
        )),
        reversed[..2]
    );
    assert_eq!(
        rows(&ok_json(&ep, &["scan", r"r/\x01", r"r/\x03"])),
        all[1..3]
    );
    assert_eq!(
        ok(&ep, &["scan", "r/", "r0", "--limit", "2"]),
        "r/\\x00 = v0\nr/\\x01 = v1\n"
    );
    let hex_rows = ok_json(&ep, &["scan", "722f", "7230", "--hex", "--limit", "1"]);
    assert_eq!(hex_rows["rows"][0]["key"], "722f00");
    assert_eq!(hex_rows["rows"][0]["value"], "7630");
    assert_eq!(hex_rows["begin"], "722f");

    // A scan longer than one batch streams through every page, both ways.
    db.run(|tx| async move {
        for i in 0..2_500u32 {
            tx.set(format!("big/{i:05}"), format!("{i}"));
        }
        Ok(())
    })
    .await
    .unwrap();
    let all_big = ok_json(&ep, &["scan", "big/", "big0"]);
    let big = rows(&all_big);
    assert_eq!(big.len(), 2_500);
    assert!(big.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(big[1_234], ("big/01234".to_string(), "1234".to_string()));
    let text = ok(
        &ep,
        &["scan", "big/", "big0", "--reverse", "--limit", "1500"],
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1_500);
    assert_eq!(lines[0], "big/02499 = 2499");
    assert_eq!(lines[1_499], "big/01000 = 1000");

    // clear and clearrange take escapes too.
    ok(&ep, &["clear", r"r/\x00"]);
    ok(&ep, &["clearrange", r"r/\x01", r"r/\x03"]);
    let left: Vec<String> = rows(&ok_json(&ep, &["scan", "r/", "r0"]))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(left, [r"r/\x03", r"r/\x04"]);

    // Bad input: a clear code, a message naming the argument, a non-zero exit, nothing written.
    let m = fails_with(&ep, &["set", r"bad\q", "v"], "invalid_argument");
    assert!(m.contains(r"unknown escape \q"), "{m}");
    assert!(m.starts_with("key "), "{m}");
    let m = fails_with(&ep, &["set", "k", r"\x4"], "invalid_argument");
    assert!(
        m.starts_with("value ") && m.contains("two hex digits"),
        "{m}"
    );
    let m = fails_with(&ep, &["get", "abc", "--hex"], "invalid_argument");
    assert!(m.contains("odd number"), "{m}");
    fails_with(&ep, &["scan", "zz", "7a", "--hex"], "invalid_argument");
    fails_with(
        &ep,
        &["get", "k", "--at-timestamp", "yesterday"],
        "invalid_argument",
    );
    let (ok_, out, err) = cli(&["get", r"trailing\", "--endpoint", &ep]);
    assert!(!ok_ && out.is_empty(), "{out}");
    assert!(
        err.contains("invalid_argument") && err.contains("backslash ends it"),
        "{err}"
    );
    assert_eq!(stored(&db, b"bad\\q").await, None);
    assert_eq!(stored(&db, b"k").await, None);
    // Errors from the database carry their codes the same way.
    let big = "x".repeat(10_001);
    fails_with(&ep, &["set", &big, "v"], "key_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_atomic_op_by_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let ep = cluster.endpoint();
    let db = cluster.db(Duration::from_secs(10)).await;
    let le = |n: i64| n.to_le_bytes().to_vec();

    // add with --i64: integers as 8 little-endian bytes; negative numbers too.
    ok(&ep, &["atomic", "add", "n", "40", "--i64"]);
    let out = ok_json(&ep, &["atomic", "add", "n", "5", "--i64"]);
    assert_eq!(out["op"], "add");
    assert!(out["version"].as_u64().unwrap() > 0);
    ok(&ep, &["atomic", "add", "n", "-3", "--i64"]);
    assert_eq!(stored(&db, b"n").await.unwrap().to_vec(), le(42));
    // Without --i64 the parameter is bytes, as FoundationDB's add takes them.
    ok(
        &ep,
        &["atomic", "add", "n", r"\x01\x00\x00\x00\x00\x00\x00\x00"],
    );
    assert_eq!(stored(&db, b"n").await.unwrap().to_vec(), le(43));

    let cases: &[(&str, &[u8], &str, &[u8])] = &[
        ("bit_and", b"\x0f", r"\x3c", b"\x0c"),
        ("bit_or", b"\x0f", r"\x30", b"\x3f"),
        ("bit_xor", b"\x0f", r"\xff", b"\xf0"),
        ("max", b"\x05\x01", r"\x06\x00", b"\x05\x01"),
        ("min", b"\x05\x01", r"\x06\x00", b"\x06\x00"),
        ("byte_max", b"abc", "abd", b"abd"),
        ("byte_min", b"abc", "abd", b"abc"),
        ("append_if_fits", b"abc", "def", b"abcdef"),
    ];
    for (op, before, param, after) in cases {
        let key = format!("op/{op}");
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        ok(&ep, &["set", &hex(key.as_bytes()), &hex(before), "--hex"]);
        ok(&ep, &["atomic", op, &key, param]);
        assert_eq!(
            stored(&db, key.as_bytes()).await.as_deref(),
            Some(*after),
            "{op}"
        );
    }
    // compare_and_clear clears only on a match.
    ok(&ep, &["set", "cac", "done"]);
    ok(&ep, &["atomic", "compare_and_clear", "cac", "nope"]);
    assert_eq!(stored(&db, b"cac").await.as_deref(), Some(&b"done"[..]));
    ok(&ep, &["atomic", "COMPARE_AND_CLEAR", "cac", "done"]);
    assert_eq!(stored(&db, b"cac").await, None);

    // set_versionstamped_key: the stamp is the commit version and batch order, big-endian.
    let out = ok_json(
        &ep,
        &[
            "atomic",
            "set_versionstamped_key",
            "log/",
            "entry",
            "--stamp-offset",
            "end",
        ],
    );
    let version = out["version"].as_u64().unwrap();
    let stamp = out["versionstamp"].as_str().unwrap();
    assert_eq!(&stamp[..16], format!("{version:016x}"));
    let mut written = b"log/".to_vec();
    written.extend_from_slice(&version.to_be_bytes());
    written.extend_from_slice(&[0, 0]);
    assert_eq!(stored(&db, &written).await.as_deref(), Some(&b"entry"[..]));
    let scanned = ok_json(&ep, &["scan", "log/", "log0"]);
    assert_eq!(scanned["rows"][0]["key"], out["written_key"]);
    assert_eq!(scanned["rows"][0]["value"], "entry");
    // The template form FoundationDB uses: placeholder bytes, then a 4-byte LE offset.
    let out = ok_json(
        &ep,
        &[
            "atomic",
            "set_versionstamped_key",
            r"pre/\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00/suf\x04\x00\x00\x00",
            "x",
        ],
    );
    let v = out["version"].as_u64().unwrap();
    let mut written = b"pre/".to_vec();
    written.extend_from_slice(&v.to_be_bytes());
    written.extend_from_slice(b"\0\0/suf");
    assert_eq!(stored(&db, &written).await.as_deref(), Some(&b"x"[..]));
    // set_versionstamped_value, the stamp at byte 2.
    let out = ok_json(
        &ep,
        &[
            "atomic",
            "set_versionstamped_value",
            "vs",
            r"ab\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
            "--stamp-offset",
            "2",
        ],
    );
    let v = out["version"].as_u64().unwrap();
    let mut value = b"ab".to_vec();
    value.extend_from_slice(&v.to_be_bytes());
    value.extend_from_slice(&[0, 0]);
    assert_eq!(stored(&db, b"vs").await.as_deref(), Some(&value[..]));
    assert_eq!(
        ok(&ep, &["get", "7673", "--hex"]).trim(),
        value.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );

    // Bad atomic input is refused before anything is sent.
    let m = fails_with(&ep, &["atomic", "increment", "n", "1"], "invalid_argument");
    assert!(
        m.contains("bit_and") && m.contains("set_versionstamped_key"),
        "{m}"
    );
    let m = fails_with(
        &ep,
        &["atomic", "add", "n", "1.5", "--i64"],
        "invalid_argument",
    );
    assert!(m.contains("--i64"), "{m}");
    let m = fails_with(
        &ep,
        &["atomic", "set_versionstamped_key", "short", "v"],
        "invalid_argument",
    );
    assert!(m.contains("template"), "{m}");
    fails_with(
        &ep,
        &["atomic", "add", "n", "1", "--i64", "--stamp-offset", "end"],
        "invalid_argument",
    );
    assert_eq!(stored(&db, b"n").await.unwrap().to_vec(), le(43));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_versions_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let ep = cluster.endpoint();

    for k in ["k/a", "k/c", "k/e"] {
        ok(&ep, &["set", k, "v"]);
    }
    let getkey = |args: &[&str]| {
        let mut all = vec!["getkey"];
        all.extend_from_slice(args);
        ok(&ep, &all).trim().to_string()
    };
    assert_eq!(getkey(&["k/b"]), "k/c");
    assert_eq!(getkey(&["k/c"]), "k/c");
    assert_eq!(getkey(&["k/c", "--selector", "first_greater_than"]), "k/e");
    assert_eq!(getkey(&["k/c", "--selector", "gt"]), "k/e");
    assert_eq!(getkey(&["k/c", "--selector", "lt"]), "k/a");
    assert_eq!(getkey(&["k/c", "--selector", "le"]), "k/c");
    assert_eq!(getkey(&["k/a", "--offset", "2"]), "k/e");
    assert_eq!(
        getkey(&["k/e", "--selector", "le", "--offset", "-2"]),
        "k/a"
    );
    // Past the last key: the end of the user keyspace, escaped.
    assert_eq!(getkey(&["k/f"]), r"\xff");
    let j = ok_json(&ep, &["getkey", "k/a", "--selector", "gt"]);
    assert_eq!(j["key"], "k/c");
    assert_eq!(j["selector"]["or_equal"], true);

    // getversion is the latest commit; versionat maps a time to it. (An idle primary
    // supersedes a handed-out read version with an empty heartbeat batch, so the latest
    // version may move past the set's without another write.)
    let v = ok_json(&ep, &["set", "k/g", "v"])["version"]
        .as_u64()
        .unwrap();
    let latest = |out: String| out.trim().parse::<u64>().unwrap();
    let first = latest(ok(&ep, &["getversion"]));
    assert!(first >= v);
    let second = ok_json(&ep, &["getversion"])["version"].as_u64().unwrap();
    assert!(second >= first);
    let now = support::now_micros().to_string();
    let at = ok_json(&ep, &["versionat", &now])["version"]
        .as_u64()
        .unwrap();
    let after = latest(ok(&ep, &["getversion"]));
    assert!(v <= at && at <= after, "{v} <= {at} <= {after}");
    assert_eq!(ok(&ep, &["versionat", "0"]).trim(), "0");
    // Reads at that version see the past.
    ok(&ep, &["set", "k/a", "new"]);
    assert_eq!(
        ok(&ep, &["get", "k/a", "--at-version", &v.to_string()]),
        "v\n"
    );
    assert_eq!(ok(&ep, &["get", "k/a", "--at-timestamp", &now]), "v\n");
    assert_eq!(
        ok(
            &ep,
            &[
                "getkey",
                "k/a",
                "--selector",
                "gt",
                "--at-version",
                &v.to_string()
            ]
        )
        .trim(),
        "k/c"
    );

    // watch: a separate process waits; writes until it fires (it may start watching after
    // the first of them), then its answer is one of the values written, at a later version.
    let mut watcher = Command::new(BIN)
        .args(["watch", r"w\x00", "--json", "--endpoint", &ep])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let before = ok_json(&ep, &["getversion"])["version"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while watcher.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the watch never fired");
        ok(&ep, &["set", r"w\x00", &format!(r"v\x00{i}")]);
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = watcher.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let fired = json(String::from_utf8_lossy(&out.stdout).trim());
    assert_eq!(fired["key"], r"w\x00");
    let value = fired["value"].as_str().unwrap();
    let n: u32 = value.strip_prefix(r"v\x00").unwrap().parse().unwrap();
    assert!(n < i, "{fired}");
    assert!(fired["version"].as_u64().unwrap() > before);

    // Output that cannot be written. A closed stderr never turns a command's error into a
    // panic (exit 101 instead of its status); a reader of stdout that went away (`| head`)
    // ends a command quietly; a full disk under stdout fails a command that worked, since
    // nobody saw its answer.
    let status = |args: &[&str], stdout: Stdio, stderr: Stdio| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--endpoint", &ep]);
        let out = Command::new(BIN)
            .args(&all)
            .stdout(stdout)
            .stderr(stderr)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    };
    assert_eq!(
        status(&["get", r"a\q"], Stdio::null(), closed()).0,
        Some(1),
        "a bad escape with stderr closed"
    );
    assert_eq!(status(&["get", "k/a"], closed(), Stdio::piped()).0, Some(0));
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let (code, err) = status(&["get", "k/a"], Stdio::from(full), Stdio::piped());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("writing the output"), "{err}");
}

/// A shell fed through a pipe, with its output read line by line as it comes.
struct PipedShell {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
}

impl PipedShell {
    fn start(ep: &str) -> PipedShell {
        let mut child = Command::new(BIN)
            .args(["shell", "--endpoint", ep])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (send, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if send.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        PipedShell { child, lines }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line of output (stdout or stderr).
    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the shell printed nothing")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_shell_runs_transactions_and_stops_at_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let ep = cluster.endpoint();
    let db = cluster.db(Duration::from_secs(10)).await;

    // A whole script on stdin: autocommit, a committed transaction, a rolled-back one.
    let script = [
        r#"set auto "a b"; get auto"#,
        "begin",
        r"set t\x00 one",
        r"get t\x00",
        "atomic add n 7 --i64",
        "commit",
        "begin",
        "set gone x",
        "get gone",
        "rollback",
        "get gone",
        "# a comment",
        r#"getrange "" \xff 10"#,
        "reset",
    ];
    let mut child = Command::new(BIN)
        .args(["shell", "--endpoint", &ep])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", script.join("\n")).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // `reset` outside a transaction is the failing last command.
    assert!(!out.status.success(), "{stdout} {stderr}");
    assert!(
        stderr.contains("ERROR: invalid_argument: no transaction to reset"),
        "{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("Committed (version "), "{stdout}");
    assert_eq!(lines[1], "`auto' is `a b'");
    assert_eq!(lines[2], "Transaction started");
    assert_eq!(lines[3], r"`t\x00' is `one'");
    assert!(lines[4].starts_with("Committed (version "), "{stdout}");
    assert_eq!(lines[5], "Transaction started");
    assert_eq!(lines[6], "`gone' is `x'");
    assert_eq!(lines[7], "Transaction rolled back");
    assert_eq!(lines[8], "`gone': not found");
    assert_eq!(
        lines[9..],
        [
            "`auto' is `a b'",
            r"`n' is `\x07\x00\x00\x00\x00\x00\x00\x00'",
            r"`t\x00' is `one'",
        ]
    );
    assert_eq!(stored(&db, b"t\0").await.as_deref(), Some(&b"one"[..]));
    assert_eq!(stored(&db, b"gone").await, None);

    // --exec stops at the first error: nothing after it runs, the status says it failed.
    let (ok_, out, err) = cli(&[
        "shell",
        "--endpoint",
        &ep,
        "--exec",
        r"set e1 1; set e2 \q; set e3 3",
    ]);
    assert!(!ok_, "{out} {err}");
    assert!(err.contains(r"unknown escape \q"), "{err}");
    assert_eq!(stored(&db, b"e1").await.as_deref(), Some(&b"1"[..]));
    assert_eq!(stored(&db, b"e3").await, None);
    // An error inside a transaction never lets the script reach its commit.
    let (ok_, _, err) = cli(&[
        "shell",
        "--endpoint",
        &ep,
        "--exec",
        "begin; set f1 1; bogus; commit",
    ]);
    assert!(!ok_);
    assert!(err.contains("bogus"), "{err}");
    assert!(err.contains("not committed"), "{err}");
    assert_eq!(stored(&db, b"f1").await, None);
    // So does ending a script inside a transaction: its writes are discarded, and it says so.
    let (ok_, _, err) = cli(&["shell", "--endpoint", &ep, "--exec", "begin; set f2 2"]);
    assert!(!ok_);
    assert!(err.contains("not committed"), "{err}");
    assert_eq!(stored(&db, b"f2").await, None);

    // A conflict: the shell's transaction read a key someone else then wrote.
    let mut sh = PipedShell::start(&ep);
    sh.send("begin");
    assert_eq!(sh.next(), "Transaction started");
    sh.send("get auto");
    assert_eq!(sh.next(), "`auto' is `a b'");
    ok(&ep, &["set", "auto", "theirs"]);
    sh.send("set auto mine");
    sh.send("commit");
    let line = sh.next();
    assert!(line.starts_with("ERROR: not_committed"), "{line}");
    drop(sh.child.stdin.take());
    assert!(!sh.child.wait().unwrap().success());
    assert_eq!(stored(&db, b"auto").await.as_deref(), Some(&b"theirs"[..]));

    // A watch inside a transaction is FoundationDB's transaction watch: armed by the commit
    // against the value the transaction left, so neither the commit nor its own write fires it.
    let mut sh = PipedShell::start(&ep);
    sh.send("begin");
    assert_eq!(sh.next(), "Transaction started");
    sh.send("set w here");
    sh.send("watch w");
    assert!(sh.next().starts_with("Watch on `w' set"));
    sh.send("commit");
    let line = sh.next();
    assert!(line.starts_with("Committed (version "), "{line}");
    ok(&ep, &["set", "w", "there"]);
    assert_eq!(sh.next(), "`w' is `there'");
    assert!(sh.next().starts_with("(at version "));
    drop(sh.child.stdin.take());
    assert!(sh.child.wait().unwrap().success());
}

/// A tmux server of our own, on a socket in the test's temporary directory (so neither the
/// server nor its socket outlives the test), killed on drop.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn prompts(&self) -> usize {
        let screen = self.screen();
        screen.matches("ferrisdb> ").count() + screen.matches("ferrisdb (tx)> ").count()
    }

    /// Types `line` and Enter at the prompt, and waits for the next prompt: like a person,
    /// it does not type ahead (rustyline reads the terminal's answer to its cursor query at
    /// each prompt, and can swallow keys typed before it).
    fn type_line(&self, line: &str) {
        let before = self.prompts();
        assert!(
            self.cmd(&["send-keys", "-t", "shell", "-l", line])
                .status
                .success()
        );
        self.enter(before);
    }

    /// Presses Enter and waits for the prompt after the one counted in `before`.
    fn enter(&self, before: usize) {
        assert!(
            self.cmd(&["send-keys", "-t", "shell", "Enter"])
                .status
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.prompts() <= before {
            assert!(
                Instant::now() < deadline,
                "no prompt after Enter:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn screen(&self) -> String {
        let out = self.cmd(&["capture-pane", "-p", "-J", "-t", "shell", "-S", "-500"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text` `times` times, returning the screen.
    fn wait_for(&self, text: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= times {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {text:?} ({times}x):\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_on_a_real_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let ep = cluster.endpoint();
    let db = cluster.db(Duration::from_secs(10)).await;
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();

    let tmux = Tmux {
        socket: dir.path().join("tmux.sock"),
    };
    let command = format!("env HOME={} {BIN} shell --endpoint {ep}", home.display());
    let started = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "shell",
        "-x",
        "200",
        "-y",
        "50",
        &command,
    ]);
    assert!(started.status.success(), "{started:?}");
    tmux.wait_for("ferrisdb> ", 1);

    // A transaction that commits: the write is visible inside it at once, and to everyone
    // else only after the commit.
    tmux.type_line("begin");
    tmux.wait_for("Transaction started", 1);
    tmux.wait_for("ferrisdb (tx)> ", 1);
    tmux.type_line(r#"set tty\x01 "hello there""#);
    tmux.type_line(r"get tty\x01");
    tmux.wait_for(r"`tty\x01' is `hello there'", 1);
    assert_eq!(stored(&db, b"tty\x01").await, None, "visible before commit");
    tmux.type_line("commit");
    let screen = tmux.wait_for("Committed (version ", 1);
    let version: u64 = screen
        .split("Committed (version ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let got = ok_json(&ep, &["get", r"tty\x01"]);
    assert_eq!(got["value"], "hello there");
    let history = ok_json(&ep, &["history", r"tty\x01"]);
    assert_eq!(history["versions"][0]["version"], version);

    // A transaction rolled back leaves nothing behind.
    tmux.type_line("begin");
    tmux.wait_for("Transaction started", 2);
    tmux.type_line("set rolled back");
    tmux.type_line("get rolled");
    tmux.wait_for("`rolled' is `back'", 1);
    tmux.type_line("rollback");
    tmux.wait_for("Transaction rolled back", 1);
    tmux.type_line("get rolled");
    tmux.wait_for("`rolled': not found", 1);
    assert_eq!(
        ok_json(&ep, &["get", "rolled"])["value"],
        serde_json::Value::Null
    );

    // Autocommit, an atomic op, a range read, and errors that leave the session usable.
    tmux.type_line("atomic add ctr 2 --i64; atomic add ctr 3 --i64");
    tmux.wait_for("Committed (version ", 3);
    tmux.type_line("getrange c d");
    tmux.wait_for(r"`ctr' is `\x05\x00\x00\x00\x00\x00\x00\x00'", 1);
    tmux.type_line(r"get bad\q");
    tmux.wait_for("ERROR: invalid_argument", 1);
    tmux.type_line("commit");
    tmux.wait_for("ERROR: invalid_argument: no transaction to commit", 1);
    tmux.type_line("getversion");
    tmux.type_line("get ctr");
    tmux.wait_for(r"`ctr' is `\x05", 2);

    // Line editing: recall the previous line with the up arrow and run it again.
    tmux.type_line("set edited first");
    tmux.wait_for("Committed (version ", 4);
    assert!(
        tmux.cmd(&["send-keys", "-t", "shell", "Up"])
            .status
            .success()
    );
    // Replace the last word: delete "first" and type "second".
    for _ in 0.."first".len() {
        assert!(
            tmux.cmd(&["send-keys", "-t", "shell", "BSpace"])
                .status
                .success()
        );
    }
    let before = tmux.prompts();
    assert!(
        tmux.cmd(&["send-keys", "-t", "shell", "-l", "second"])
            .status
            .success()
    );
    tmux.enter(before);
    tmux.wait_for("Committed (version ", 5);
    assert_eq!(
        stored(&db, b"edited").await.as_deref(),
        Some(&b"second"[..])
    );

    // exit leaves, and the history file has the session's lines.
    assert!(
        tmux.cmd(&["send-keys", "-t", "shell", "-l", "exit"])
            .status
            .success()
    );
    assert!(
        tmux.cmd(&["send-keys", "-t", "shell", "Enter"])
            .status
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let history_file = home.join(".ferrisdb_history");
    while !std::fs::read_to_string(&history_file).is_ok_and(|h| h.contains("set edited second")) {
        assert!(Instant::now() < deadline, "no history file written");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flags_token_and_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let ep = cluster.endpoint();
    ok(&ep, &["set", "tok", "before"]);

    // The compute again, now requiring a bearer token.
    let compute = cluster.component("compute");
    DevCluster::kill_pid(compute.pid);
    let mut argv = compute.argv.clone();
    argv.extend(["--token".to_string(), "s3cret".to_string()]);
    cluster.spawn_argv("compute", &argv);

    let with_token = |extra: &[&str], envs: &[(&str, &str)]| {
        let out = Command::new(BIN)
            .args(["get", "tok", "--json"])
            .args(extra)
            .env_remove("FERRISDB_TOKEN")
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            json(&String::from_utf8_lossy(&out.stdout)),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok_, v) = with_token(&["--endpoint", &ep, "--token", "s3cret"], &[]);
        if ok_ {
            assert_eq!(v["value"], "before");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the compute never came back: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok_, v) = with_token(&["--endpoint", &ep], &[]);
    assert!(!ok_);
    assert_eq!(v["error"]["code"], "unauthenticated");
    let (ok_, v) = with_token(&["--endpoint", &ep, "--token", "wrong"], &[]);
    assert!(!ok_);
    assert_eq!(v["error"]["code"], "unauthenticated");
    // The token from the environment, as scripts pass secrets.
    let (ok_, v) = with_token(&["--endpoint", &ep], &[("FERRISDB_TOKEN", "s3cret")]);
    assert!(ok_, "{v}");
    // Endpoints to fail over to: a dead one first, comma-separated or repeated.
    let dead = format!("http://127.0.0.1:{}", support::free_base_port());
    let list = format!("{dead},{ep}");
    let (ok_, v) = with_token(&["--endpoint", &list, "--token", "s3cret"], &[]);
    assert!(ok_, "{v}");
    assert_eq!(v["value"], "before");
    let (ok_, v) = with_token(
        &["--endpoint", &dead, "--endpoint", &ep, "--token", "s3cret"],
        &[],
    );
    assert!(ok_, "{v}");
    // The shell takes the same flags.
    let (ok_, out, err) = cli(&[
        "shell",
        "--endpoint",
        &list,
        "--token",
        "s3cret",
        "--exec",
        "set tok after; get tok",
    ]);
    assert!(ok_, "{out} {err}");
    assert!(out.ends_with("`tok' is `after'\n"), "{out}");
    // A CA file that is not there is bad input, not a connection failure.
    let (ok_, v) = with_token(&["--endpoint", &ep, "--tls-ca", "/nonexistent/ca.pem"], &[]);
    assert!(!ok_);
    assert_eq!(v["error"]["code"], "invalid_argument");
}
