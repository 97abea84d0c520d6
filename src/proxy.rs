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

/// How long a woken compute may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Called with the pid of every compute the waker starts.
pub type OnStart = Box<dyn Fn(u32) + Send + Sync>;

/// Starts the compute on demand: at most one child at a time.
pub struct Waker {
    argv: Vec<String>,
    log: Option<PathBuf>,
    child: Mutex<Option<Child>>,
    on_start: OnStart,
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
            child: Mutex::new(None),
            on_start,
        })
    }

    /// Starts the compute unless it is running; returns whether it had to.
    pub async fn ensure_running(&self) -> Result<bool> {
        let mut child = self.child.lock().await;
        if let Some(c) = child.as_mut()
            && matches!(c.try_wait(), Ok(None))
        {
            return Ok(false);
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
        *child = Some(started);
        Ok(true)
    }

    /// The running compute's pid, if one runs.
    pub async fn pid(&self) -> Option<u32> {
        let mut child = self.child.lock().await;
        let c = child.as_mut()?;
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
/// compute's, and this is all the proxy can check.
fn compute_requires_token(argv: &[String]) -> bool {
    argv.iter().any(|a| {
        a == "--token"
            || a == "--token-file"
            || a.starts_with("--token=")
            || a.starts_with("--token-file=")
    })
}

/// `ferrisdb proxy`: serves `listen`, starting `argv` on demand, until `shutdown`. Beyond
/// loopback it requires a compute command line with a client token, unless `insecure`.
pub async fn run(
    listen: SocketAddr,
    upstream: SocketAddr,
    argv: Vec<String>,
    insecure: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
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
mod tests {
    use super::*;

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
