//! What one measured phase of a benchmark runs: the workload, its keys and clients, how long
//! and in which loop. The runner executes it and the report prints it.

use std::time::Duration;

use crate::keys::Distribution;
use crate::workload::Workload;

/// What one measured phase runs.
#[derive(Debug, Clone)]
pub struct PhaseSpec {
    /// The workload.
    pub workload: Workload,
    /// Which keys it touches.
    pub distribution: Distribution,
    /// How many keys exist (all loaded beforehand).
    pub keys: u64,
    /// Bytes per written value.
    pub value_size: usize,
    /// Concurrent clients, each with its own connection.
    pub concurrency: usize,
    /// Unmeasured run-in before measuring.
    pub warmup: Duration,
    /// Measure for this long …
    pub duration: Duration,
    /// … or (if set) until this many operations succeeded.
    pub ops: Option<u64>,
    /// Open loop at this many operations per second in total; `None`: closed loop.
    pub rate: Option<f64>,
}

impl PhaseSpec {
    /// `closed` or `open@RATE/s`.
    pub fn mode(&self) -> String {
        match self.rate {
            None => "closed".to_string(),
            Some(r) => format!("open@{r}/s"),
        }
    }
}
