//! The async runtime a server process runs on.

/// How many threads a server's runtime has: every server flattens these into its `Args`, and
/// the `ferrisdb` binary builds its runtime from them before anything else starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct RuntimeArgs {
    /// Worker threads of the async runtime, 1 to 1024 (default: one per core). Fewer suit a process
    /// sharing its machine with others: `ferrisdb dev` runs each safekeeper on one, since
    /// five processes on one machine each running a worker per core wake one another across
    /// threads and cores for every append (docs/benchmarks/request-path-profile.md, tenth
    /// round).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
}

impl RuntimeArgs {
    /// A multi-threaded runtime with the worker threads asked for (or one per core), I/O and
    /// timers enabled.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = self.worker_threads {
            builder.worker_threads(usize::from(n));
        }
        builder.enable_all().build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{from_argv, to_argv};

    #[test]
    fn worker_threads_round_trip_and_zero_is_refused() {
        let one = RuntimeArgs {
            worker_threads: Some(1),
        };
        let argv = to_argv(&one).unwrap();
        assert_eq!(argv, ["--worker-threads", "1"]);
        assert_eq!(from_argv::<RuntimeArgs, _>(&argv).unwrap(), one);
        assert_eq!(
            from_argv::<RuntimeArgs, _>(Vec::<String>::new()).unwrap(),
            RuntimeArgs::default()
        );
        let zero = from_argv::<RuntimeArgs, _>(["--worker-threads", "0"]).unwrap_err();
        assert_eq!(zero.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn the_runtime_has_the_workers_asked_for() {
        let rt = RuntimeArgs {
            worker_threads: Some(1),
        }
        .build()
        .unwrap();
        assert_eq!(rt.metrics().num_workers(), 1);
        let rt = RuntimeArgs {
            worker_threads: Some(3),
        }
        .build()
        .unwrap();
        assert_eq!(rt.metrics().num_workers(), 3);
    }
}
