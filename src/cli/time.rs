//! Times and past states: `--at-version`/`--at-timestamp`, Unix microseconds or RFC 3339
//! in, RFC 3339 out.

use std::time::Duration;

use clap::Args;
use ferrisdb_client::{Database, Error, Version};
use ferrisdb_common::error::echo;

/// Which past state a read sees.
#[derive(Debug, Clone, Args)]
pub struct At {
    /// Read at this version instead of the latest.
    #[arg(long, conflicts_with = "at_timestamp")]
    pub(crate) at_version: Option<u64>,
    /// Read as of this time: Unix microseconds, or RFC 3339 (2026-11-22T01:02:03.5Z).
    #[arg(long)]
    pub(crate) at_timestamp: Option<String>,
}

/// The version a read pinned by `at` happens at, if it is pinned.
pub(crate) async fn resolve_at(db: &Database, at: &At) -> Result<Option<Version>, Error> {
    match &at.at_timestamp {
        Some(ts) => Ok(Some(db.version_at(parse_timestamp(ts)?).await?)),
        None => Ok(at.at_version.map(Version)),
    }
}

/// Unix microseconds from an integer or an RFC 3339 time.
pub(crate) fn parse_timestamp(s: &str) -> Result<u64, Error> {
    if let Ok(micros) = s.parse::<u64>() {
        return Ok(micros);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        Error::invalid(format!(
            "timestamp {}: {e} (use Unix microseconds or RFC 3339)",
            echo(s)
        ))
    })?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| Error::invalid(format!("timestamp {} is before 1970", echo(s))))
        .and_then(|d| {
            u64::try_from(d.as_micros())
                .map_err(|_| Error::invalid(format!("timestamp {} is too late", echo(s))))
        })
}

/// The last microsecond RFC 3339 can write (9999-12-31T23:59:59.999999Z).
pub(crate) const MAX_RFC3339_MICROS: u64 = 253_402_300_799_999_999;

/// `micros` as an RFC 3339 time; `None` past the year 9999, which RFC 3339 cannot write.
pub(crate) fn rfc3339(micros: u64) -> Option<String> {
    if micros > MAX_RFC3339_MICROS {
        return None;
    }
    let t = std::time::UNIX_EPOCH.checked_add(Duration::from_micros(micros))?;
    Some(humantime::format_rfc3339_micros(t).to_string())
}

/// [`rfc3339`] for text output: a placeholder where no RFC 3339 time exists.
pub(crate) fn rfc3339_text(micros: u64) -> String {
    rfc3339(micros).unwrap_or_else(|| format!("(after year 9999: {micros} µs)"))
}
