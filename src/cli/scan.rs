//! `ferrisdb scan BEGIN END` (alias `getrange`): a range, streamed in batches, one snapshot.

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use ferrisdb_client::{Error, RangeOptions};
use futures::StreamExt;
use serde_json::json;

use super::client_args::{ClientArgs, connect};
use super::output::{fail, js, warn};
use super::time::{At, resolve_at};

/// `ferrisdb scan`'s arguments.
#[derive(Debug, Args)]
pub struct Scan {
    /// First key of the range.
    pub(crate) begin: String,
    /// First key past the range.
    pub(crate) end: String,
    /// At most this many pairs (0: all).
    #[arg(long, default_value_t = 0)]
    pub(crate) limit: usize,
    /// From the end of the range backwards.
    #[arg(long)]
    pub(crate) reverse: bool,
    #[command(flatten)]
    pub(crate) at: At,
    #[command(flatten)]
    pub(crate) args: ClientArgs,
}

impl Scan {
    /// Prints the range's pairs as they arrive.
    pub async fn execute(self) -> ExitCode {
        scan(
            &self.args,
            &self.begin,
            &self.end,
            self.limit,
            self.reverse,
            &self.at,
        )
        .await
    }
}

/// Buffered stdout for long outputs, which notices when its reader has gone away so a scan
/// piped into `head` stops instead of reading the rest of the range for nobody.
struct Out {
    w: std::io::BufWriter<std::io::Stdout>,
    closed: bool,
}

impl Out {
    fn new() -> Out {
        Out {
            w: std::io::BufWriter::new(std::io::stdout()),
            closed: false,
        }
    }

    fn put(&mut self, s: impl Display) {
        if !self.closed && write!(self.w, "{s}").is_err() {
            self.closed = true;
        }
    }

    fn flush(&mut self) {
        if !self.closed && self.w.flush().is_err() {
            self.closed = true;
        }
    }
}

/// Streams a range read. The read version is fixed first, so when a batch fails with a
/// retryable error the scan resumes after the last row printed, in a new transaction at the
/// same version: the output is one consistent snapshot however many retries it took.
async fn scan(
    args: &ClientArgs,
    begin: &str,
    end: &str,
    limit: usize,
    reverse: bool,
    at: &At,
) -> ExitCode {
    let codec = args.codec();
    let setup = async {
        let b = Bytes::from(codec.decode("begin", begin)?);
        let e = Bytes::from(codec.decode("end", end)?);
        let db = connect(args).await?;
        let version = match resolve_at(&db, at).await? {
            Some(v) => v,
            None => db.run(|tx| async move { tx.read_version().await }).await?,
        };
        Ok::<_, Error>((db, b, e, version))
    };
    let (db, mut b, mut e, version) = match setup.await {
        Ok(s) => s,
        Err(err) => return fail(args.json, &err),
    };
    let mut out = Out::new();
    if args.json {
        out.put(format_args!(
            "{{\"begin\":{},\"end\":{},\"version\":{version},\"reverse\":{reverse},\"rows\":[",
            js(codec.encode(&b)),
            js(codec.encode(&e)),
        ));
    }
    let mut left = (limit != 0).then_some(limit);
    let mut rows = 0usize;
    let mut backoff = Duration::from_millis(5);
    let mut progress = Instant::now();
    let failure = 'scan: loop {
        let tx = db.create_transaction();
        if let Err(err) = tx.set_read_version(version) {
            break 'scan Some(err);
        }
        let opts = RangeOptions {
            limit: left.unwrap_or(0),
            reverse,
            ..RangeOptions::default()
        };
        let mut stream = tx.get_range_stream(b.clone(), e.clone(), opts);
        loop {
            match stream.next().await {
                None => break 'scan None,
                Some(Ok((k, v))) => {
                    if args.json {
                        let sep = if rows == 0 { "" } else { "," };
                        out.put(format_args!(
                            "{sep}{}",
                            json!({"key": codec.encode(&k), "value": codec.encode(&v)})
                        ));
                    } else {
                        out.put(format_args!(
                            "{} = {}\n",
                            codec.encode(&k),
                            codec.encode(&v)
                        ));
                    }
                    if out.closed {
                        return ExitCode::SUCCESS;
                    }
                    rows += 1;
                    left = left.map(|n| n - 1);
                    if reverse {
                        e = k;
                    } else {
                        b = key_after(&k);
                    }
                    progress = Instant::now();
                    backoff = Duration::from_millis(5);
                }
                Some(Err(err))
                    if err.kind().is_retryable()
                        && progress.elapsed() + backoff < args.timeout() =>
                {
                    tracing::debug!(error = %err, rows, "scan batch failed; resuming");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue 'scan;
                }
                Some(Err(err)) => break 'scan Some(err),
            }
        }
    };
    let code = match (&failure, args.json) {
        (None, true) => {
            out.put("]}\n");
            ExitCode::SUCCESS
        }
        (None, false) => ExitCode::SUCCESS,
        // The rows already printed stay a valid JSON document, with the error inside it.
        (Some(err), true) => {
            out.put(format_args!(
                "],\"error\":{}}}\n",
                json!({"code": err.code(), "message": err.message()})
            ));
            ExitCode::FAILURE
        }
        (Some(err), false) => {
            out.flush();
            warn(format_args!("error: {err}"));
            ExitCode::FAILURE
        }
    };
    out.flush();
    code
}

fn key_after(key: &[u8]) -> Bytes {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    Bytes::from(k)
}
