//! schemathesis against every admin API of a live `ferrisdb dev`, driven by the documents the
//! processes serve at `/openapi.json` (docs/openapi/): a bounded run per process that must find
//! no server error and no answer outside its document; in particular every error answer has
//! the documented `{"error": {"code", "message"}}` shape.
//!
//! schemathesis comes from PyPI: the one on `PATH`, or else one this test installs in a
//! private virtual environment (so its dependencies never disturb other Python tools). Where
//! neither is possible the test says why and skips.
//!
//! Checks: `all` except `positive_data_acceptance`, which expects every schema-valid request
//! to succeed; here validity also depends on state no schema can carry (a branch name that
//! already exists is refused with `invalid_argument`, a database that does not exist is
//! `database_not_found`).

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::DevCluster;

/// Test cases per operation: enough to reach every parameter's edges (the coverage phase
/// adds its own), little enough for the three runs to take well under two minutes here.
const MAX_EXAMPLES: &str = "25";

/// The schemathesis CLI, or why there is none.
fn schemathesis() -> Result<PathBuf, String> {
    let on_path = Command::new("schemathesis").arg("--version").output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return Ok(PathBuf::from("schemathesis"));
    }
    let venv = std::env::temp_dir().join("ferrisdb-schemathesis-venv");
    let bin = venv.join("bin/schemathesis");
    if !bin.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .map_err(|e| format!("python3 is not available ({e})"))?;
        if !made.success() {
            return Err("`python3 -m venv` failed (is python3-venv installed?)".into());
        }
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "schemathesis"])
            .status()
            .map_err(|e| format!("pip did not run ({e})"))?;
        if !pip.success() {
            return Err("`pip install schemathesis` failed (no network to PyPI?)".into());
        }
    }
    Ok(bin)
}

/// Runs schemathesis against the admin API at `http`; returns whether it passed and its
/// report.
fn run(bin: &Path, http: &str, token: &str, workdir: &Path) -> (bool, String) {
    let out = Command::new(bin)
        .arg("run")
        .arg(format!("{http}/openapi.json"))
        .args(["--checks", "all"])
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", MAX_EXAMPLES])
        // Reproducible: the same cases every run.
        .args(["--seed", "17"])
        // A checkpoint or branch at a version not yet ingested waits 10 s before answering
        // `future_version`.
        .args(["--request-timeout", "20"])
        .args(["--max-response-time", "15"])
        .arg("--no-shrink")
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .current_dir(workdir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_api_survives_schemathesis() {
    let bin = match schemathesis() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("SKIPPED every_admin_api_survives_schemathesis: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&dir.path().join("c"), &[]).await;
    // Some history for the time-travel routes to find.
    let db = cluster.db(Duration::from_secs(30)).await;
    for i in 0..3 {
        db.run(|tx| async move {
            tx.set("k", format!("v{i}"));
            Ok(())
        })
        .await
        .unwrap();
    }
    let token = std::fs::read_to_string(dir.path().join("c/cluster.token")).unwrap();
    let token = token.lines().next().unwrap().trim().to_string();
    let workdir = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    for name in ["compute", "pageserver", "safekeeper-1"] {
        let c = cluster.component(name);
        let (ok, report) = tokio::task::spawn_blocking({
            let (bin, http, token, workdir) = (
                bin.clone(),
                c.http.clone(),
                token.clone(),
                workdir.path().to_path_buf(),
            );
            move || run(&bin, &http, &token, &workdir)
        })
        .await
        .unwrap();
        if !ok {
            failed.push(format!("=== {name} ({}) ===\n{report}", c.http));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
