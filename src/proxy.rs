//! The wake proxy: scale to zero's other half. It listens where clients connect, starts the
//! compute when a connection arrives and none is running, and splices bytes both ways. The
//! compute suspends itself (`--suspend-after`); the proxy never stops it.
//!
//! `ferrisdb dev --suspend-after D` runs one in front of its compute; `ferrisdb proxy` runs
//! one alone for deployments.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferrisdb_common::{Error, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

/// `ferrisdb proxy`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, serde::Serialize)]
pub struct ProxyArgs {
    /// Where clients connect. Beyond loopback the compute's command line must carry
    /// --token-file (or --token), or --insecure be given.
    #[arg(long, default_value = "127.0.0.1:4500")]
    pub listen: SocketAddr,
    /// Listen beyond loopback even though the compute requires no client token.
    #[arg(long)]
    pub insecure: bool,
    /// Where the compute started by the command serves its client API.
    #[arg(long)]
    pub upstream: SocketAddr,
    /// The compute's command line, e.g. `-- ferrisdb compute --listen-grpc 127.0.0.1:4520
    /// --suspend-after 5m …`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// How long a woken compute may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Called with the pid of every compute the waker starts.
pub type OnStart = Box<dyn Fn(u32) + Send + Sync>;

/// A compute that exits sooner than this after starting failed to start (a bad flag, a
/// port taken): the next start waits, longer each time it happens again.
const QUICK_EXIT: Duration = Duration::from_secs(5);

/// The longest wait before starting again a compute that keeps failing to start.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(10);

/// Starts the compute on demand: at most one child at a time.
pub struct Waker {
    argv: Vec<String>,
    log: Option<PathBuf>,
    child: Mutex<Running>,
    on_start: OnStart,
}

/// The child last started, when, and how many starts in a row ended within [`QUICK_EXIT`].
#[derive(Default)]
struct Running {
    child: Option<Child>,
    started: Option<tokio::time::Instant>,
    quick_exits: u32,
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker").field("argv", &self.argv).finish()
    }
}

impl Waker {
    /// A waker running `argv` (program first), appending its output to `log` (or inheriting
    /// the proxy's), and telling `on_start` each new pid.
    pub fn new(argv: Vec<String>, log: Option<PathBuf>, on_start: OnStart) -> Result<Waker> {
        if argv.is_empty() {
            return Err(Error::invalid("the proxy needs a command to start"));
        }
        Ok(Waker {
            argv,
            log,
            child: Mutex::new(Running::default()),
            on_start,
        })
    }

    /// Starts the compute unless it is running; returns whether it had to.
    pub async fn ensure_running(&self) -> Result<bool> {
        let mut running = self.child.lock().await;
        let exited = match running.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => return Ok(false),
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Err(e)) => Some(e.to_string()),
            None => None,
        };
        // Suspended after idling is the usual exit; one soon after its start is a failure,
        // and starting it again at once, for every connection, spun (an outside audit saw
        // 303 starts in 5 s from one bad flag).
        if let (Some(status), Some(started)) = (exited, running.started) {
            let lived = started.elapsed();
            if lived < QUICK_EXIT {
                running.quick_exits = running.quick_exits.saturating_add(1);
                let pause = Duration::from_millis(100)
                    .saturating_mul(1u32 << running.quick_exits.min(10))
                    .min(MAX_RESTART_PAUSE);
                tracing::warn!(
                    %status,
                    lived_ms = lived.as_millis() as u64,
                    in_a_row = running.quick_exits,
                    ?pause,
                    "the compute exited soon after it started (see its log); starting it again after a pause"
                );
                tokio::time::sleep(pause).await;
            } else {
                running.quick_exits = 0;
                tracing::info!(%status, "the compute had exited (suspended when idle); starting it again");
            }
        }
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(false);
        if let Some(log) = &self.log {
            let out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?;
            cmd.stdout(out.try_clone()?).stderr(out);
        }
        let started = cmd
            .spawn()
            .map_err(|e| Error::internal(format!("starting {}: {e}", self.argv[0])))?;
        let pid = started.id().unwrap_or(0);
        tracing::info!(pid, "starting the compute");
        (self.on_start)(pid);
        running.child = Some(started);
        running.started = Some(tokio::time::Instant::now());
        Ok(true)
    }

    /// The running compute's pid, if one runs.
    pub async fn pid(&self) -> Option<u32> {
        let mut running = self.child.lock().await;
        let c = running.child.as_mut()?;
        match c.try_wait() {
            Ok(None) => c.id(),
            _ => None,
        }
    }
}

/// The first pause after a failed accept; it doubles up to [`MAX_ACCEPT_BACKOFF`].
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// The longest pause between failed accepts.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How long to pause after the `failures`-th failed accept in a row (1-based): doubling
/// from [`MIN_ACCEPT_BACKOFF`] to [`MAX_ACCEPT_BACKOFF`].
fn accept_backoff(failures: u32) -> Duration {
    MIN_ACCEPT_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_ACCEPT_BACKOFF)
}

/// Accepts on `listener` until the task is dropped, waking the compute behind `upstream`.
///
/// A failed accept (most often out of file descriptors) is retried after a pause that grows
/// while failures continue: retrying at once would spin a core without freeing anything.
pub async fn serve(listener: TcpListener, upstream: SocketAddr, waker: Arc<Waker>) {
    let mut failures = 0u32;
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => {
                failures = 0;
                client
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let pause = accept_backoff(failures);
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error = %e, failures, ?pause, "accept failed; pausing");
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let waker = waker.clone();
        tokio::spawn(async move {
            if let Err(e) = splice(client, upstream, &waker).await {
                tracing::warn!(error = %e, "proxied connection failed");
            }
        });
    }
}

async fn splice(mut client: TcpStream, upstream: SocketAddr, waker: &Waker) -> Result<()> {
    client.set_nodelay(true)?;
    waker.ensure_running().await?;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let mut server = loop {
        match TcpStream::connect(upstream).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(Error::unavailable(format!(
                    "the compute at {upstream} did not start: {e}"
                )));
            }
            Err(_) => {
                // It may have exited (suspended) between the check and the connect.
                waker.ensure_running().await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    server.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// Whether the compute command line makes the compute require a client token: the proxy
/// splices bytes (TLS passes through untouched to the compute), so authentication is the
/// compute's, and this is all the proxy can check. The command may be a wrapper script, so
/// it is not parsed; the flags' names come from [`ferrisdb_compute::Args`], where they are
/// defined.
fn compute_requires_token(argv: &[String]) -> bool {
    let compute = <ferrisdb_compute::Args as clap::Args>::augment_args(clap::Command::new("c"));
    let flags: Vec<String> = compute
        .get_arguments()
        .filter(|a| matches!(a.get_id().as_str(), "token" | "token_file"))
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    argv.iter().any(|a| {
        flags.iter().any(|f| {
            a == f
                || a.strip_prefix(f.as_str())
                    .is_some_and(|r| r.starts_with('='))
        })
    })
}

/// `ferrisdb proxy`: serves `--listen`, starting the command on demand, until `shutdown`.
/// Beyond loopback it requires a compute command line with a client token, unless
/// `--insecure`.
pub async fn run(args: ProxyArgs, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let ProxyArgs {
        listen,
        insecure,
        upstream,
        command: argv,
    } = args;
    ferrisdb_server_common::auth::check_exposure(
        listen,
        "the proxy (and the compute behind it)",
        compute_requires_token(&argv),
        insecure,
        "--token-file to the compute's command line",
    )?;
    let listener = ferrisdb_server_common::serve::bind(listen, "the proxy").await?;
    let waker = Arc::new(Waker::new(argv, None, Box::new(|_| {}))?);
    tracing::info!(%listen, %upstream, "wake proxy serving");
    tokio::select! {
        _ = serve(listener, upstream, waker) => Ok(()),
        _ = shutdown => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A compute that exits at once (a bad flag) is started again after a pause that grows,
    /// not at once for every connection.
    #[tokio::test]
    async fn a_compute_that_exits_at_once_is_restarted_after_growing_pauses() {
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = starts.clone();
        let waker = Waker::new(
            vec!["false".into()],
            None,
            Box::new(move |_| seen.lock().unwrap().push(std::time::Instant::now())),
        )
        .unwrap();
        for _ in 0..3 {
            assert!(waker.ensure_running().await.unwrap());
            // Let it exit before the next connection asks.
            while waker.pid().await.is_some() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let starts = starts.lock().unwrap();
        assert_eq!(starts.len(), 3);
        // Paused 200 ms before the second start and 400 ms before the third, at least.
        assert!(starts[1] - starts[0] >= Duration::from_millis(200));
        assert!(starts[2] - starts[1] >= Duration::from_millis(400));
    }

    #[test]
    fn proxy_arguments_round_trip_and_the_token_check_reads_the_compute_s_flags() {
        let args = ProxyArgs {
            listen: "0.0.0.0:4500".parse().unwrap(),
            insecure: true,
            upstream: "127.0.0.1:4520".parse().unwrap(),
            command: vec![
                "ferrisdb".into(),
                "compute".into(),
                "--suspend-after".into(),
            ],
        };
        let argv = ferrisdb_server_common::args::to_argv(&args).unwrap();
        assert_eq!(
            ferrisdb_server_common::args::from_argv::<ProxyArgs, _>(&argv).unwrap(),
            args
        );
        let mut compute =
            ferrisdb_compute::Args::new(vec!["http://s:1".into()], "http://p:1".into());
        let line = |c: &ferrisdb_compute::Args| {
            let mut argv = vec!["ferrisdb".to_string(), "compute".to_string()];
            argv.extend(ferrisdb_server_common::args::to_argv(c).unwrap());
            argv
        };
        assert!(!compute_requires_token(&line(&compute)));
        compute.token_file = Some("/t".into());
        assert!(compute_requires_token(&line(&compute)));
        // A wrapper script's command line: the flags by name.
        assert!(compute_requires_token(&[
            "run.sh".into(),
            "--token=x".into()
        ]));
        assert!(compute_requires_token(&[
            "run.sh".into(),
            "--token-file".into(),
            "f".into()
        ]));
        assert!(!compute_requires_token(&[
            "run.sh".into(),
            "--tokens".into()
        ]));
    }

    #[test]
    fn accept_backoff_grows_to_a_bound() {
        assert_eq!(accept_backoff(1), MIN_ACCEPT_BACKOFF);
        assert_eq!(accept_backoff(2), MIN_ACCEPT_BACKOFF * 2);
        assert!(accept_backoff(5) > accept_backoff(4));
        assert_eq!(accept_backoff(50), MAX_ACCEPT_BACKOFF);
        assert_eq!(accept_backoff(u32::MAX), MAX_ACCEPT_BACKOFF);
        assert!(accept_backoff(0) >= MIN_ACCEPT_BACKOFF);
    }
}
