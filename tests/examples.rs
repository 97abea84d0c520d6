//! The SDK examples in `client/examples/` against a real cluster: each must print exactly the
//! output its doc comment promises.
//!
//! The root crate's tests do not build another package's examples, so this test builds them
//! itself with the same cargo, profile and target directory that built the `ferrisdb` binary.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::{BIN, DevCluster};

/// The examples, in the order they run.
const EXAMPLES: [&str; 4] = ["counter", "bank", "time_travel", "change_feed"];

/// How long one example may run.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// How long building the examples may take (a cold build on a slow machine, or waiting for
/// another build's lock on the target directory).
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

/// The output an example's doc comment promises: the first ```` ```text ```` block of its
/// leading `//!` comment.
fn documented_output(source: &str) -> String {
    let doc: Vec<&str> = source
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let start = doc
        .iter()
        .position(|l| l.trim() == "```text")
        .expect("the doc comment has a ```text block")
        + 1;
    let len = doc[start..]
        .iter()
        .position(|l| l.trim() == "```")
        .expect("the ```text block is closed");
    doc[start..start + len]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Builds the client's examples with the cargo running this test, into the profile directory
/// holding the `ferrisdb` binary, and returns the directory the examples land in.
async fn build_examples() -> PathBuf {
    let profile_dir = Path::new(BIN).parent().unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let manifest = support::root().join("Cargo.toml");
    let mut cmd = tokio::process::Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "-p",
        "ferrisdb-client",
        "--examples",
        "--manifest-path",
    ])
    .arg(&manifest)
    .arg("--target-dir")
    .arg(target_dir)
    .stdin(Stdio::null())
    .kill_on_drop(true);
    if profile_dir.file_name().unwrap() == "release" {
        cmd.arg("--release");
    }
    let out = tokio::time::timeout(BUILD_TIMEOUT, cmd.output())
        .await
        .expect("building the examples timed out")
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build -p ferrisdb-client --examples failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    profile_dir.join("examples")
}

/// Runs one example binary against `endpoint`, returning its stdout; fails on a non-zero exit,
/// output on stderr aside, or a hang.
async fn run_example(dir: &Path, name: &str, args: &[&str], endpoint: &str) -> String {
    let out = tokio::time::timeout(
        RUN_TIMEOUT,
        tokio::process::Command::new(dir.join(name))
            .args(args)
            .env("FERRISDB_ENDPOINT", endpoint)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("example {name} did not finish in {RUN_TIMEOUT:?}"))
    .unwrap_or_else(|e| panic!("run example {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example {name} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_print_what_their_docs_say() {
    let examples_dir = build_examples().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("data"), &[]).await;
    let endpoint = cluster.endpoint();

    // Twice: every example resets what it uses, so a rerun in the same database prints the
    // same.
    for pass in 1..=2 {
        for name in EXAMPLES {
            let source_path = support::root()
                .join("client/examples")
                .join(format!("{name}.rs"));
            let expected = documented_output(&std::fs::read_to_string(&source_path).unwrap());
            assert!(!expected.is_empty(), "{name} documents no output");
            let stdout = run_example(&examples_dir, name, &[], &endpoint).await;
            assert_eq!(
                stdout, expected,
                "example {name} (pass {pass}) printed something else"
            );
        }
    }

    // The counter takes N from its argument.
    let stdout = run_example(&examples_dir, "counter", &["25"], &endpoint).await;
    assert_eq!(stdout, "counter = 25\n");
}
