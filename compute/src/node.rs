//! What a compute is for one database: its primary, or a read replica of it.

use std::future::Future;
use std::sync::Arc;

use ferrisdb_common::{Result, Version};

use crate::primary::Primary;
use crate::replica::Replica;
use crate::view::DatabaseView;

/// The role this compute plays for one database, once it has one.
#[derive(Debug, Clone)]
pub enum Node {
    /// It won the database's term and commits.
    Primary(Arc<Primary>),
    /// It follows the WAL and serves read-only transactions.
    Replica(Arc<Replica>),
}

impl Node {
    /// What reads are answered from.
    pub fn view(&self) -> &Arc<DatabaseView> {
        match self {
            Node::Primary(p) => p.view(),
            Node::Replica(r) => r.view(),
        }
    }

    /// The version a new transaction reads at, no older than any commit acknowledged before
    /// this call (linearizable). On a primary, the latest commit, confirmed with a safekeeper
    /// majority; on a replica, the primary's read version once applied here
    /// ([`Replica::read_version`]).
    pub async fn read_version(&self) -> Result<Version> {
        match self {
            Node::Primary(p) => p.read_version().await,
            Node::Replica(r) => r.read_version().await,
        }
    }

    /// Runs `read` at the version [`Node::read_version`] would answer and gives its answer
    /// with that version: on a primary, the read and the liveness check run concurrently
    /// ([`Primary::read_latest`]); on a replica, at the primary's read version once applied.
    pub async fn read_latest<T, F, Fut>(&self, read: F) -> Result<(Version, T)>
    where
        F: FnOnce(Version) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match self {
            Node::Primary(p) => p.read_latest(read).await,
            Node::Replica(r) => {
                let version = r.read_version().await?;
                Ok((version, read(version).await?))
            }
        }
    }

    /// The latest version committed at or before `time_micros`, the same every time: on a
    /// primary once that time has passed by the clock it stamps commits with and every batch
    /// stamped up to it is visible ([`Primary::version_at`]); on a replica, as its primary
    /// answers it unless a commit applied here settles it ([`Replica::version_at`]).
    pub async fn version_at(&self, time_micros: u64) -> Result<Version> {
        match self {
            Node::Primary(p) => p.version_at(time_micros).await,
            Node::Replica(r) => r.version_at(time_micros).await,
        }
    }

    /// The primary, or the `read_only` error a replica gives writes.
    pub fn primary(&self) -> Result<&Arc<Primary>> {
        match self {
            Node::Primary(p) => Ok(p),
            Node::Replica(r) => Err(r.refuse_commit()),
        }
    }

    /// Status for the admin API.
    pub fn status(&self) -> serde_json::Value {
        match self {
            Node::Primary(p) => p.status(),
            Node::Replica(r) => r.status(),
        }
    }
}
