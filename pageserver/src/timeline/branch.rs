//! Branches: creating one (metadata only, in both manifests), and where a branch's reads go
//! in its parent for what its own layers do not hold.

use std::sync::Arc;

use bytes::Bytes;
use ferrisdb_common::{Error, ErrorKind, Result, Version};
use ferrisdb_server_common::versioned_map::RangeTombstones;

use super::Timeline;
use super::merge::SourceRows;
use crate::format::delta::DeltaLayer;
use crate::format::manifest::{self, Manifest};

impl Timeline {
    /// The branch point, for a branch.
    pub fn ancestor(&self) -> Option<(String, Version)> {
        self.ancestor
            .as_ref()
            .map(|(t, v)| (t.database.clone(), *v))
    }

    /// Makes `name` a branch of `parent` at version `at`, by metadata only: `parent`'s
    /// manifest records the branch (so its GC keeps what the branch reads), then the branch's
    /// first manifest names the parent and makes `at` its durable version, so its WAL starts
    /// there. Fails with `invalid_argument` if `name` exists, and `version_too_old` or
    /// `future_version` if `at` is outside what the parent holds.
    ///
    /// The parent is first made durable in object storage up to `at` (a checkpoint, when its
    /// remote consistent version is below): the branch's first manifest says everything up to
    /// `at` is in the bucket, and the branch reads the parent's versions up to `at`, so they
    /// must be there. Before, a branch at the parent's latest version pointed at parent
    /// versions only the safekeepers held; restored from the bucket, the parent came back
    /// lower and reused those version numbers, and the branch showed the new commits (or lost
    /// its own history) — an outside audit's finding.
    pub async fn create_branch(parent: &Timeline, name: &str, at: Version) -> Result<()> {
        let existing = manifest::load_latest(&parent.store, name).await?;
        if existing.generation > 0 {
            return Err(Error::invalid(format!(
                "database {} already exists",
                ferrisdb_common::error::echo(name)
            )));
        }
        parent.check_readable(at)?;
        if at > parent.ingested_version() {
            return Err(Error::new(
                ErrorKind::FutureVersion,
                format!(
                    "cannot branch {} at {at}: only {} is ingested",
                    parent.database,
                    parent.ingested_version()
                ),
            ));
        }
        if parent.remote_consistent_version() < at {
            parent.upload(at).await?;
        }
        {
            let mut m = parent.manifest.lock().await;
            // A checkpoint cannot lower it, and the upload above raised it to `at` or past.
            if m.remote_consistent_version < at {
                return Err(Error::unavailable(format!(
                    "cannot branch {} at {at}: only {} is in object storage",
                    parent.database, m.remote_consistent_version
                )));
            }
            // Checked again under the manifest lock: GC raises the horizon under it.
            parent.check_readable(at)?;
            let mut next = m.clone();
            next.generation += 1;
            next.writer = parent.writer.clone();
            next.branches.push(manifest::BranchPoint {
                database: name.to_string(),
                version: at,
            });
            manifest::store_next(&parent.store, &next).await?;
            parent.replace_manifest(&mut m, next);
        }
        let mut first = Manifest::empty(name);
        first.generation = 1;
        first.remote_consistent_version = at;
        first.writer = parent.writer.clone();
        first.ancestor = Some(manifest::BranchPoint {
            database: parent.database.clone(),
            version: at,
        });
        manifest::store_next(&parent.store, &first)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::Fenced => Error::invalid(format!(
                    "database {} already exists",
                    ferrisdb_common::error::echo(name)
                )),
                _ => e,
            })?;
        tracing::info!(parent = %parent.database, branch = name, version = %at, "branch created");
        Ok(())
    }

    /// The parent a range read at `version` also needs: none when an image of this timeline
    /// already answers for everything below it.
    pub(super) fn ancestor_below(
        &self,
        layers: &[Arc<DeltaLayer>],
        version: Version,
    ) -> Option<(&Arc<Timeline>, Version)> {
        let imaged = Self::layers_for(layers, version)
            .first()
            .is_some_and(|l| l.image);
        if imaged {
            None
        } else {
            self.ancestor_at(version)
        }
    }

    /// The parent's live rows as the oldest source of a merge: each at the branch point, which
    /// is below every version of the branch's own.
    pub(super) fn parent_rows(rows: Vec<(Bytes, Bytes)>, at: Version) -> SourceRows {
        let rows = rows.into_iter().map(|(k, v)| (k, at, Some(v))).collect();
        (rows, RangeTombstones::default())
    }

    /// Where a read at `version` goes in the parent: the branch point or below.
    pub(super) fn ancestor_at(&self, version: Version) -> Option<(&Arc<Timeline>, Version)> {
        self.ancestor
            .as_ref()
            .map(|(t, point)| (t, version.min(*point)))
    }
}
