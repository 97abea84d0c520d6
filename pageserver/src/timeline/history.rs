//! Time travel: every version of a key with its commit time, and the version current at a
//! given time.

use bytes::Bytes;
use ferrisdb_common::{Error, Result, Version};

use super::{READ_WAIT, Timeline};

/// What a history entry counts for against a page's byte target: as the wire counts it
/// (`message_size::history_entry_bytes`).
pub(super) fn entry_bytes(value: &Option<Bytes>) -> usize {
    value.as_ref().map_or(0, |v| v.len()) + ferrisdb_common::message_size::HISTORY_ENTRY_OVERHEAD
}

/// A key's versions with their commit times, oldest first, and whether more follow the last.
pub type HistoryPage = (Vec<(Version, u64, Option<Bytes>)>, bool);

impl Timeline {
    /// Every version of `key` in `[from, to]` with its commit time, oldest first (waiting for
    /// `to` to be ingested).
    pub async fn history(
        &self,
        key: &[u8],
        from: Version,
        to: Version,
    ) -> Result<Vec<(Version, u64, Option<Bytes>)>> {
        Ok(self.history_page(key, from, to, 0).await?.0)
    }

    /// The versions of `key` in `[from, to]` with their commit times, oldest first, up to the
    /// first that brings their values to `target_bytes` (0: all of them), and whether more
    /// follow the last one. The layers are read oldest first and no further than the page
    /// needs, so a page costs about its own size, whatever the length of the history after
    /// it (a reader paging through a long history reads it once, not once per page).
    pub async fn history_page(
        &self,
        key: &[u8],
        from: Version,
        to: Version,
        target_bytes: usize,
    ) -> Result<HistoryPage> {
        self.retry_if_layers_dropped(|| self.history_page_once(key, from, to, target_bytes))
            .await
    }

    /// [`Timeline::history_page`], once.
    async fn history_page_once(
        &self,
        key: &[u8],
        from: Version,
        to: Version,
        target_bytes: usize,
    ) -> Result<HistoryPage> {
        // 0 asks for everything still held: from the retention horizon. An explicit version
        // below it is refused, as a read there is.
        let from = if from == Version::ZERO {
            self.readable_from()
        } else {
            from
        };
        self.check_retained(from)?;
        self.wait_ingested(to, READ_WAIT).await?;
        // A branch's versions up to its branch point are its parent's, and come first.
        let mut older = Vec::new();
        if let Some((parent, at)) = self.ancestor_at(to)
            && from <= at
        {
            let more;
            (older, more) = Box::pin(parent.history_page(key, from, at, target_bytes)).await?;
            if more {
                return Ok((older, true));
            }
        }
        let spent: usize = older.iter().map(|(_, _, v)| entry_bytes(v)).sum();
        let budget = match target_bytes {
            0 => 0,
            // The parent's part filled the page: ours begins the next one, if any.
            t if spent >= t => {
                let (own, _) = Box::pin(self.history_page_own(key, from, to, 1)).await?;
                return Ok((older, !own.is_empty()));
            }
            t => t - spent,
        };
        let (mut own, more) = self.history_page_own(key, from, to, budget).await?;
        older.append(&mut own);
        Ok((older, more))
    }

    /// [`Timeline::history_page`] for this database's own layers (above its branch point).
    async fn history_page_own(
        &self,
        key: &[u8],
        from: Version,
        to: Version,
        target_bytes: usize,
    ) -> Result<HistoryPage> {
        let ((memory, memory_cleared), layers) = self.snapshot(|mems| {
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
        // Images are copies of entries, not changes: history comes from the deltas. For one
        // key the delta layers do not overlap in versions (a compacted run's partitions split
        // keys, not versions), and the memory holds what comes after all of them, so reading
        // them by start reads the key's versions in order.
        let mut deltas: Vec<_> = layers
            .iter()
            .filter(|l| !l.image && l.start < to && l.end >= from && l.covers_key(key))
            .collect();
        deltas.sort_by_key(|l| l.start);
        let mut entries = Vec::new();
        let mut cleared = Vec::new();
        let mut bytes = 0usize;
        let mut stopped = false;
        for layer in deltas {
            if target_bytes > 0 && bytes >= target_bytes {
                stopped = true;
                break;
            }
            let found = layer.versions_of(key, from, to).await?;
            bytes += found.iter().map(|(_, v)| entry_bytes(v)).sum::<usize>();
            entries.extend(found);
            cleared.extend(layer.range_tombstones().versions_covering(key, from, to));
        }
        if target_bytes > 0
            && bytes >= target_bytes
            && !(memory.is_empty() && memory_cleared.is_empty())
        {
            stopped = true;
        }
        if !stopped {
            entries.extend(memory);
            cleared.extend(memory_cleared);
        }
        // A range clear is a version of the key only where it removed a value; a point entry
        // at the same version came after it in the batch and stands instead.
        entries.sort_by_key(|(v, _)| *v);
        cleared.retain(|c| entries.binary_search_by_key(c, |(v, _)| *v).is_err());
        cleared.sort();
        cleared.dedup();
        if !cleared.is_empty() {
            let mut merged = Vec::with_capacity(entries.len() + cleared.len());
            let mut points = entries.into_iter().peekable();
            for c in cleared {
                while let Some(p) = points.next_if(|(v, _)| *v < c) {
                    merged.push(p);
                }
                let before = match merged.last() {
                    Some((_, val)) => val.is_some(),
                    None if c.0 > from.0 => {
                        self.get_unchecked(key, Version(c.0 - 1)).await?.is_some()
                    }
                    // The value just below the window is not retained; say it was cleared.
                    None => true,
                };
                if before {
                    merged.push((c, None));
                }
            }
            merged.extend(points);
            entries = merged;
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
        out.dedup_by_key(|(v, _, _)| *v);
        let capped =
            ferrisdb_common::message_size::cap_by_bytes(&mut out, 1, target_bytes, |(_, _, v)| {
                entry_bytes(v)
            });
        Ok((out, stopped || capped))
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
