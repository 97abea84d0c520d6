//! Applying committed WAL records to the open in-memory layer, and waiting for a version to
//! be applied. (Following the safekeepers is [`crate::ingest`]; this is what it feeds.)

use std::time::Duration;

use ferrisdb_common::wal::WalRecord;
use ferrisdb_common::{Error, ErrorKind, Result, Version};

use super::Timeline;

impl Timeline {
    /// Applies committed records, which must continue exactly where ingestion stands.
    pub fn apply(&self, records: &[WalRecord]) -> Result<()> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let oversized = {
            let mut map = self.write_map()?;
            let mut at = self.ingested_version();
            for r in records {
                if r.version <= at {
                    return Err(Error::internal(format!(
                        "record at version {} does not follow ingested {at}",
                        r.version
                    )));
                }
                for m in &r.mutations {
                    map.open.apply(r.version, m);
                }
                at = r.version;
            }
            // Under the layer-map lock, so a reader never sees a version without its time.
            let mut times = self
                .times
                .write()
                .map_err(|_| Error::internal("commit times lock poisoned"))?;
            // Commit times never decrease (DESIGN.md §2). A primary stamps its own commits in
            // order, but one elected after a failover does not know its predecessor's last
            // time, and its clock may be a little behind: such a time is raised to the one
            // before here, where the log is whole, so the change feed, the cold segments and
            // `history` all carry the same time for a version.
            let mut floor = times.last_time().unwrap_or(0);
            for r in records {
                let mut r = r.clone();
                r.commit_time_micros = r.commit_time_micros.max(floor);
                floor = r.commit_time_micros;
                times.push(r.version, r.commit_time_micros);
                map.open_records.push(r);
            }
            map.open.approximate_bytes() >= self.options.checkpoint_bytes
        };
        if oversized {
            // Repeats while the layer stays over the mark coalesce into one kept signal.
            self.oversized.notify_one();
        }
        self.clock_ahead
            .observe(self.options.clock.now_micros(), last.commit_time_micros);
        self.ingested.send_replace(last.version);
        self.metrics
            .ingested_version
            .with_label_values(&[&self.database])
            .set(last.version.0 as i64);
        self.metrics.ingested_records.inc_by(records.len() as u64);
        Ok(())
    }

    /// Waits until `version` is ingested, up to `timeout`.
    pub async fn wait_ingested(&self, version: Version, timeout: Duration) -> Result<()> {
        let mut rx = self.ingested.subscribe();
        let wait = rx.wait_for(|v| *v >= version);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::new(
                ErrorKind::FutureVersion,
                format!(
                    "version {version} of {} is not ingested after {timeout:?} (ingested {})",
                    self.database,
                    self.ingested_version()
                ),
            )),
        }
    }
}
