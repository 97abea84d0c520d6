//! `ferrisdb-loadtest chaos`: the command line of the nemesis runner.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::chaos::ChaosConfig;
use crate::schedule::{FaultKind, Timing};

/// Options of `chaos`.
#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// The `ferrisdb` binary to run the cluster with.
    #[arg(long, default_value = "target/debug/ferrisdb")]
    pub binary: PathBuf,
    /// The schedule's seed (default: from the clock; printed either way).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop after this many faults.
    #[arg(long)]
    pub faults: Option<u64>,
    /// Stop after this long (e.g. `10m`).
    #[arg(long)]
    pub duration: Option<humantime::Duration>,
    /// Shortest fault.
    #[arg(long, default_value = "300ms")]
    pub min_hold: humantime::Duration,
    /// Longest fault.
    #[arg(long, default_value = "3s")]
    pub max_hold: humantime::Duration,
    /// Longest healthy pause between faults.
    #[arg(long, default_value = "500ms")]
    pub max_gap: humantime::Duration,
    /// How long availability may take to come back after a fault.
    #[arg(long, default_value = "90s")]
    pub recovery_timeout: humantime::Duration,
    /// Only these kinds (labels as in the report, e.g. `kill/compute,partition/client_compute`;
    /// default: all).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Where the cluster lives (default: a new temporary directory, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where chaos.json and chaos.md go.
    #[arg(long, default_value = "chaos-results")]
    pub out: PathBuf,
}

impl ChaosArgs {
    /// The run's configuration (the data dir is decided by the caller).
    pub fn config(&self, data_dir: PathBuf, command: String) -> anyhow::Result<ChaosConfig> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0)
        });
        let all = FaultKind::all();
        let kinds = if self.only.is_empty() {
            all
        } else {
            let mut kinds = Vec::new();
            for label in &self.only {
                let k = all
                    .iter()
                    .find(|k| k.label() == *label)
                    .with_context(|| format!("no fault kind {label}"))?;
                kinds.push(*k);
            }
            kinds
        };
        if self.faults.is_none() && self.duration.is_none() {
            anyhow::bail!("give --faults N and/or --duration");
        }
        Ok(ChaosConfig {
            binary: self.binary.clone(),
            data_dir,
            seed,
            faults: self.faults,
            duration: self.duration.map(Duration::from),
            timing: Timing {
                min_hold: self.min_hold.into(),
                max_hold: self.max_hold.into(),
                max_gap: self.max_gap.into(),
            },
            kinds,
            recovery_timeout: self.recovery_timeout.into(),
            workloads: crate::chaos_checked::default_workloads(),
            command,
        })
    }
}

/// Runs `chaos` and writes its report; `Ok(false)` when the run found a problem.
pub async fn main(args: ChaosArgs) -> anyhow::Result<bool> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let (data_dir, temporary) = match &args.data_dir {
        Some(d) => (d.clone(), false),
        None => (tempfile_dir()?, true),
    };
    let config = args.config(data_dir.clone(), command)?;
    // On Ctrl-C or SIGTERM the run is dropped, which stops the cluster, removes the iptables
    // rules and unmounts the tmpfs.
    let report = tokio::select! {
        r = crate::chaos::run(config) => r,
        _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
    };
    if temporary {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    let report = report?;
    report.write(&args.out)?;
    println!("{}", report.markdown());
    println!(
        "report: {} and {}",
        args.out.join("chaos.md").display(),
        args.out.join("chaos.json").display()
    );
    Ok(report.valid)
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "ferrisdb-chaos-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
