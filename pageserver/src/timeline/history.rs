//! Time travel: every version of a key with its commit time, and the version current at a
//! given time.

use bytes::Bytes;
use ferrisdb_common::{Error, Result, Version};

use super::{READ_WAIT, Timeline};

impl Timeline {
    /// Every version of `key` in `[from, to]` with its commit time, oldest first (waiting for
    /// `to` to be ingested).
    pub async fn history(
        &self,
        key: &[u8],
        from: Version,
        to: Version,
    ) -> Result<Vec<(Version, u64, Option<Bytes>)>> {
        // 0 asks for everything still held: from the retention horizon. An explicit version
        // below it is refused, as a read there is.
        let from = if from == Version::ZERO {
            self.gc_horizon()
        } else {
            from
        };
        self.check_retained(from)?;
        self.wait_ingested(to, READ_WAIT).await?;
        let ((memory, mut cleared), layers) = self.snapshot(|mems| {
            let points = mems
                .iter()
                .flat_map(|m| {
                    m.versions_of(key, from, to)
                        .map(|(v, val)| (v, val.clone()))
                })
                .collect::<Vec<_>>();
            let cleared = mems
                .iter()
                .flat_map(|m| m.range_tombstones().versions_covering(key, from, to))
                .collect::<Vec<_>>();
            (points, cleared)
        })?;
        let mut entries = memory;
        // Images are copies of entries, not changes: history comes from the deltas.
        for layer in layers
            .iter()
            .filter(|l| !l.image && l.start < to && l.end >= from && l.covers_key(key))
        {
            entries.extend(layer.versions_of(key, from, to).await?);
            cleared.extend(layer.range_tombstones().versions_covering(key, from, to));
        }
        // A range clear is a version of the key only where it removed a value; a point entry
        // at the same version came after it in the batch and stands instead.
        cleared.retain(|c| !entries.iter().any(|(v, _)| v == c));
        cleared.sort();
        cleared.dedup();
        if !cleared.is_empty() {
            entries.sort_by_key(|(v, _)| *v);
            for c in cleared {
                let before = match entries.iter().rev().find(|(v, _)| *v < c) {
                    Some((_, val)) => val.is_some(),
                    None if c.0 > from.0 => {
                        self.get_unchecked(key, Version(c.0 - 1)).await?.is_some()
                    }
                    // The value just below the window is not retained; say it was cleared.
                    None => true,
                };
                if before {
                    entries.push((c, None));
                    entries.sort_by_key(|(v, _)| *v);
                }
            }
        }
        let mut out: Vec<(Version, u64, Option<Bytes>)> = {
            let times = self
                .times
                .read()
                .map_err(|_| Error::internal("commit times lock poisoned"))?;
            entries
                .into_iter()
                .map(|(v, val)| (v, times.time_of(v).unwrap_or(0), val))
                .collect()
        };
        out.sort_by_key(|(v, _, _)| *v);
        out.dedup_by_key(|(v, _, _)| *v);
        // A branch's versions up to its branch point are its parent's.
        if let Some((parent, at)) = self.ancestor_at(to)
            && from <= at
        {
            let mut older = Box::pin(parent.history(key, from, at)).await?;
            older.append(&mut out);
            out = older;
        }
        Ok(out)
    }

    /// The latest ingested version committed at or before `time_micros` (0 when none was).
    pub fn version_at(&self, time_micros: u64) -> Result<Version> {
        let v = self
            .times
            .read()
            .map_err(|_| Error::internal("commit times lock poisoned"))?
            .version_at(time_micros);
        let v = match (v, self.ancestor_at(Version::MAX)) {
            (Some(v), _) => v,
            // Before the branch's first commit: the parent's version then, up to the branch
            // point (a branch holds nothing of the parent's after it).
            (None, Some((parent, at))) => parent.version_at(time_micros)?.min(at),
            (None, None) => Version::ZERO,
        };
        self.check_retained(v)?;
        Ok(v)
    }
}
