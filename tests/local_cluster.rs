//! The CLI finds a `ferrisdb dev` cluster through `./.ferrisdb/cluster.json`: started on a
//! base port that is not the default, `ferrisdb admin status`, `set` and `get` work from the
//! directory it was started in with no `--endpoint`, and the admin credential is found
//! beside the cluster file (HOME points elsewhere, so dev's per-port pointer cannot help).

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;

use support::{BIN, DevCluster};

/// Runs `ferrisdb ARGS` in `dir` with `home` as HOME and no endpoint in the environment.
fn run_in(dir: &Path, home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("HOME", home)
        .env_remove("FERRISDB_ENDPOINT")
        .env_remove("FERRISDB_ADMIN_ENDPOINT")
        .env_remove("FERRISDB_ADMIN_TOKEN")
        .env_remove("FERRISDB_ADMIN_TOKEN_FILE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_without_endpoint_uses_the_cluster_file_in_the_current_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    // dev's default data dir is ./.ferrisdb: this is where it writes cluster.json.
    let mut cluster = DevCluster::start_with_env(
        &project.join(".ferrisdb"),
        &[],
        &[("HOME", home.to_str().unwrap())],
    )
    .await;
    assert_ne!(cluster.base_port, 4500, "the test needs a non-default port");
    assert!(project.join(".ferrisdb/cluster.json").exists());
    // No pointer in this HOME: the credential must come from ./.ferrisdb.
    let other_home = tmp.path().join("other-home");
    std::fs::create_dir_all(&other_home).unwrap();

    let (ok, out, err) = run_in(&project, &other_home, &["admin", "status", "--json"]);
    assert!(ok, "admin status: {out} {err}");
    let status = json(&out);
    assert!(
        !status["primary"].is_null(),
        "the compute's status names its primary term: {status}"
    );

    let (ok, out, err) = run_in(
        &project,
        &other_home,
        &["admin", "status", "--component", "safekeeper-2", "--json"],
    );
    assert!(ok, "admin status --component safekeeper-2: {out} {err}");
    assert_ne!(
        json(&out),
        status,
        "a safekeeper's status is not the compute's"
    );

    let (ok, out, err) = run_in(&project, &other_home, &["set", "found", "by-cluster-file"]);
    assert!(ok, "set: {out} {err}");
    let (ok, out, err) = run_in(&project, &other_home, &["get", "found", "--json"]);
    assert!(ok, "get: {out} {err}");
    let got = json(&out);
    assert_eq!(got["value"], "by-cluster-file", "{got}");
    // The value really is in this cluster, read back through the SDK at its port.
    let db = cluster.db(std::time::Duration::from_secs(10)).await;
    let stored = db
        .run(|tx| async move { tx.get("found").await })
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some(&b"by-cluster-file"[..]));

    // Elsewhere there is no cluster file: the CLI falls back to the default port, where this
    // cluster is not, and a component name has nothing to name.
    let (ok, out, _) = run_in(
        tmp.path(),
        &other_home,
        &["admin", "status", "--component", "pageserver", "--json"],
    );
    assert!(!ok);
    assert_eq!(json(&out)["error"]["code"], "invalid_argument", "{out}");

    // A damaged cluster file is an error naming it, not a silent fallback to another port.
    cluster.stop();
    std::fs::write(project.join(".ferrisdb/cluster.json"), "{").unwrap();
    let (ok, out, _) = run_in(&project, &other_home, &["get", "found", "--json"]);
    assert!(!ok);
    let e = json(&out);
    assert_eq!(e["error"]["code"], "invalid_argument", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cluster.json"),
        "{e}"
    );
}
