//! Every process's `/metrics` passes `promtool check metrics` (Prometheus's own linter: names,
//! units, `_total` on counters, help texts) on a live `ferrisdb dev` that has served commits
//! and reads, so labelled series exist too.
//!
//! promtool comes from Debian's `prometheus` package (`apt-get download` + `dpkg-deb -x`, no
//! installation needed); when neither it nor the package can be had, the test says so and
//! skips.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{DevCluster, admin_get};

/// promtool on PATH, or unpacked from Debian's package into the target directory.
fn promtool() -> Result<PathBuf, String> {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v promtool"])
        .output()
    {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !path.is_empty() {
            return Ok(PathBuf::from(path));
        }
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("promtool");
    let bin = dir.join("root/usr/bin/promtool");
    if bin.exists() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let download = Command::new("apt-get")
        .args(["download", "prometheus"])
        .current_dir(&dir)
        .output()
        .map_err(|e| format!("apt-get: {e}"))?;
    let deb = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| {
            format!(
                "`apt-get download prometheus` gave no package: {}",
                String::from_utf8_lossy(&download.stderr).trim()
            )
        })?;
    let unpacked = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(dir.join("root"))
        .status()
        .map_err(|e| format!("dpkg-deb: {e}"))?;
    // The package is 20 MB and only the binary is needed.
    let _ = std::fs::remove_file(&deb);
    if !unpacked.success() || !bin.exists() {
        return Err(format!("dpkg-deb -x {} gave no promtool", deb.display()));
    }
    Ok(bin)
}

/// promtool's verdict on `text`: `Ok` when clean, else its exit status and findings.
fn check_metrics(promtool: &Path, text: &str) -> Result<(), String> {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && findings.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {findings}", out.status))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_serves_metrics_promtool_accepts() {
    let promtool = match promtool() {
        Ok(p) => p,
        Err(why) => {
            println!("SKIPPED: promtool is not available here: {why}");
            return;
        }
    };
    // The linter itself works: a counter without `_total` is a finding.
    let bad = "# HELP bad_counter A counter.\n# TYPE bad_counter counter\nbad_counter 1\n";
    assert!(
        check_metrics(&promtool, bad).is_err(),
        "promtool flags nothing"
    );

    let tmp = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(&tmp.path().join("dev"), &[]).await;
    let db = cluster.db(Duration::from_secs(10)).await;
    for i in 0..20u32 {
        let key = format!("k{i}");
        db.run(|tx| {
            let key = key.clone();
            async move {
                tx.get(key.clone()).await?;
                tx.set(key, b"v".to_vec());
                Ok(())
            }
        })
        .await
        .unwrap();
    }
    let mut findings = Vec::new();
    let components = cluster.components();
    assert_eq!(components.len(), 5, "{components:?}");
    for c in &components {
        let response = admin_get(&format!("{}/metrics", c.http)).await.unwrap();
        assert!(
            response.status().is_success(),
            "{}: {}",
            c.name,
            response.status()
        );
        let text = response.text().await.unwrap();
        assert!(text.contains("# TYPE ferrisdb_"), "{}: {text}", c.name);
        if let Err(f) = check_metrics(&promtool, &text) {
            findings.push(format!("{} ({}/metrics): {f}", c.name, c.http));
        }
    }
    assert!(
        findings.is_empty(),
        "promtool findings:\n{}",
        findings.join("\n")
    );
}
