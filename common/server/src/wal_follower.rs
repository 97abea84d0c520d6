//! Following a database's committed WAL from the safekeepers: what pageservers and read
//! replicas both do.
//!
//! The follower streams from the safekeeper with the highest commit position, the first listed
//! among equals. Safekeepers only stream committed WAL, and the committed prefix is the same on
//! all of them, so switching between them is always safe; it switches when its stream breaks,
//! or when its safekeeper idles while another reports a higher commit position (a lagging
//! safekeeper just restarted).
//!
//! Why the first among equals: the compute lets the last safekeeper it lists lag (it gathers
//! that one's WAL for up to 20 ms, see `LAGGARD_LINGER` in docs/wal-protocol.md), so that one
//! learns each commit late. On an idle cluster every commit position is equal, which is when a
//! follower usually starts, and a follower that took the last would trail the log by the
//! laggard's linger from then on (it only moves when its stream idles). Listed in the same
//! order as the compute's, the first is never the laggard.

use std::time::Duration;

use crate::auth::{self, PeerChannel};
use ferrisdb_common::error::Reason;
use ferrisdb_common::proto::safekeeper_client::SafekeeperClient;
use ferrisdb_common::proto::{ReadWalRequest, SafekeeperStatusRequest};
use ferrisdb_common::wal::{self, WalRecord};
use ferrisdb_common::{Error, Result};

const RETRY: Duration = Duration::from_millis(200);

/// Where followed WAL goes.
pub trait WalSink: Send + Sync {
    /// The database followed.
    fn database(&self) -> &str;
    /// The LSN up to which records have been applied: the stream resumes there.
    fn applied_lsn(&self) -> u64;
    /// Applies committed records, in log order, contiguous with what came before.
    fn apply(&self, records: &[WalRecord]) -> Result<()>;
    /// How long the safekeeper may hold newly committed WAL to send it with what commits
    /// after it (`ReadWalRequest.gather_millis`): zero for a sink that serves the newest
    /// versions (a read replica), longer for one that never does (the pageserver).
    fn gather(&self) -> Duration {
        Duration::ZERO
    }
    /// What the safekeeper streaming to this sink said of its WAL on disk and its budget
    /// (`WalChunk.wal_bytes`, `max_wal_bytes`; 0: not said), with every chunk. A sink that
    /// makes WAL deletable (the pageserver, by uploading) may act on it; the default ignores
    /// it. It is a peer's word: it may cost work, never data.
    fn wal_budget(&self, _wal_bytes: u64, _max_wal_bytes: u64) {}
    /// Whether the sink takes more records now. One that holds them in memory until it can
    /// put them elsewhere (the pageserver, until it uploads) says no when full, and the
    /// follower stops reading the stream until [`WalSink::wait_for_room`]: the safekeeper's
    /// stream then waits on HTTP/2 flow control, with the WAL safe on its disk.
    fn has_room(&self) -> bool {
        true
    }
    /// The term that wrote the WAL just below [`WalSink::applied_lsn`], when the sink kept it
    /// from an earlier run (the pageserver: in its manifest); `None` otherwise. The first
    /// stream is checked against it (`ReadWalRequest.expected_term`); later ones against the
    /// term the safekeepers named for what this follower applied.
    fn resume_term(&self) -> Option<u64> {
        None
    }
    /// Notes that the WAL up to `lsn` (where applied records end) was written in `term`, as
    /// the safekeeper streaming it says (`WalChunk.term`). A sink that keeps the term across
    /// restarts (see [`WalSink::resume_term`]) records it here; the default ignores it.
    fn applied_term(&self, _lsn: u64, _term: u64) {}
    /// The WAL this sink needs next is gone: the safekeepers deleted it once object storage
    /// held it. A sink that can start again from there (a read replica, from what the
    /// pageserver has ingested) arranges that and returns true, and [`follow`] returns; the
    /// default, false, keeps asking (and says why once a minute).
    fn wal_trimmed(&self) -> bool {
        false
    }
    /// Resolves once [`WalSink::has_room`]; called only when it said no.
    fn wait_for_room(&self) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// Clients of every safekeeper in `endpoints`, carrying the cluster credential.
pub fn clients(endpoints: &[String]) -> Result<Vec<SafekeeperClient<PeerChannel>>> {
    endpoints
        .iter()
        .map(|url| {
            Ok(ferrisdb_common::with_message_limits!(
                SafekeeperClient::new(auth::peer_channel(url)?)
            ))
        })
        .collect()
}

/// How often a follower that needs WAL the safekeepers no longer hold says so.
const TRIMMED_WARN_EVERY: Duration = Duration::from_secs(60);

/// How long a follower leaves a safekeeper alone after it served WAL that failed a check
/// (`corruption`), when another can serve: the damaged one repairs itself from a peer
/// meanwhile.
const AVOID_DAMAGED: Duration = Duration::from_secs(30);

/// How long a follower is refused as diverged, without applying anything, before it says
/// so as an error: a safekeeper with a stale suffix says it for a moment, a rewritten log for
/// good.
const DIVERGED_ALARM: Duration = Duration::from_secs(10);

/// How often a follower on an idle stream asks the other safekeepers whether one of them is
/// ahead of the one it follows.
const IDLE_RECHECK: Duration = Duration::from_secs(2);

/// Follows the committed WAL into `sink` until the task is dropped, or until the WAL it needs
/// is gone and the sink says it starts again elsewhere ([`WalSink::wal_trimmed`]).
pub async fn follow(sink: &dyn WalSink, safekeepers: &[String]) -> Result<()> {
    let clients = clients(safekeepers)?;
    let mut trimmed_warned: Option<tokio::time::Instant> = None;
    // Until when each safekeeper is passed over for damaged WAL (see [`AVOID_DAMAGED`]). A
    // follower that went back to the one with the highest commit position every time asked a
    // damaged safekeeper 3,052 times in 11 minutes while two intact copies sat unused, and
    // ingestion stopped (an outside audit).
    let mut avoid: Vec<Option<tokio::time::Instant>> = vec![None; clients.len()];
    // The term that wrote the WAL just below a position this follower applied up to, as the
    // safekeepers named it: each new stream is asked to check it (see [`Resume`]).
    let mut resume = Resume(sink.resume_term().map(|t| (sink.applied_lsn(), t)));
    let mut diverged_warned: Option<tokio::time::Instant> = None;
    // Since when, at which applied position, every stream was refused as diverged.
    let mut diverged: Option<(u64, tokio::time::Instant)> = None;
    loop {
        let commits = commit_positions(&clients, sink.database()).await;
        let Some(i) = choose(&commits, &avoid, tokio::time::Instant::now()) else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let streamed = stream_from(&clients, i, sink, &mut resume).await;
        if !streamed
            .as_ref()
            .is_err_and(|e| e.reason() == Some(Reason::WalDiverged))
        {
            // A stream that was not refused as diverged ends the run of refusals.
            diverged = None;
        }
        if let Err(e) = streamed {
            if e.reason() == Some(Reason::WalDiverged) {
                // The safekeeper's log below this follower's position is not the one it
                // applied. A safekeeper still holding a suffix that never committed (it was
                // down through a failover, and is cut back when it rejoins) says so for a
                // while; a log rewritten under the follower (a lost or restored safekeeper
                // disk, docs/wal-protocol.md, "Followers check the term they resume in") says
                // so for good, and going on would put another history's records on top of
                // the ones applied. The others are asked meanwhile, this one again later;
                // once every answer has said so for [`DIVERGED_ALARM`], it is an error.
                avoid[i] = Some(tokio::time::Instant::now() + AVOID_DAMAGED);
                let applied = sink.applied_lsn();
                let since = match diverged {
                    Some((at, since)) if at == applied => since,
                    _ => tokio::time::Instant::now(),
                };
                diverged = Some((applied, since));
                if since.elapsed() >= DIVERGED_ALARM
                    && diverged_warned.is_none_or(|at| at.elapsed() >= TRIMMED_WARN_EVERY)
                {
                    diverged_warned = Some(tokio::time::Instant::now());
                    tracing::error!(
                        database = sink.database(),
                        safekeeper = %safekeepers[i],
                        applied,
                        error = %e,
                        "the safekeepers' WAL is not the WAL this follower applied: the log was rewritten under it (a lost or restored safekeeper disk); not following it"
                    );
                } else {
                    tracing::warn!(
                        database = sink.database(),
                        safekeeper = %safekeepers[i],
                        applied,
                        error = %e,
                        "this safekeeper's WAL below the follower's position is another term's: following the others"
                    );
                }
            } else if e.kind() == ferrisdb_common::ErrorKind::Corruption {
                avoid[i] = Some(tokio::time::Instant::now() + AVOID_DAMAGED);
                tracing::warn!(
                    database = sink.database(),
                    safekeeper = %safekeepers[i],
                    error = %e,
                    "this safekeeper's WAL failed a check: following the others for {AVOID_DAMAGED:?}"
                );
            } else if e.kind() == ferrisdb_common::ErrorKind::VersionTooOld && sink.wal_trimmed() {
                tracing::warn!(
                    database = sink.database(),
                    safekeeper = %safekeepers[i],
                    applied = sink.applied_lsn(),
                    "the WAL needed next was deleted by the safekeepers after it reached object storage: starting again from there"
                );
                return Ok(());
            } else if e.kind() == ferrisdb_common::ErrorKind::VersionTooOld {
                // The WAL this follower needs next is gone: the safekeepers deleted it once
                // object storage held it. Retrying cannot help; an object store that is not
                // the one the database was uploaded to (a typo, an empty bucket) is the usual
                // cause. Loud, but once a minute.
                if trimmed_warned.is_none_or(|at| at.elapsed() >= TRIMMED_WARN_EVERY) {
                    trimmed_warned = Some(tokio::time::Instant::now());
                    tracing::error!(
                        database = sink.database(),
                        safekeeper = %safekeepers[i],
                        error = %e,
                        "the WAL needed next was deleted by the safekeepers after it reached object storage, and it is not in the state loaded here: is --object-store the bucket this database was uploaded to?"
                    );
                }
            } else {
                tracing::info!(
                    database = sink.database(),
                    safekeeper = %safekeepers[i],
                    error = %e,
                    "WAL stream ended; picking a safekeeper again"
                );
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// The safekeeper to stream from: [`best`] among those not avoided at `now` (see
/// [`AVOID_DAMAGED`]), or among all when every one that answered is avoided.
fn choose(
    commits: &[Option<u64>],
    avoid: &[Option<tokio::time::Instant>],
    now: tokio::time::Instant,
) -> Option<usize> {
    let usable: Vec<Option<u64>> = commits
        .iter()
        .zip(avoid)
        .map(|(c, until)| c.filter(|_| until.is_none_or(|t| t <= now)))
        .collect();
    best(&usable).or_else(|| best(commits))
}

/// The safekeeper to stream from: the highest commit position, the first listed among equals
/// (see the module doc); `None` when none answered.
fn best(commits: &[Option<u64>]) -> Option<usize> {
    commits
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.map(|c| (i, c)))
        .max_by_key(|&(i, c)| (c, std::cmp::Reverse(i)))
        .map(|(i, _)| i)
}

/// Each safekeeper's commit position (`None`: did not answer within a second).
pub async fn commit_positions(
    clients: &[SafekeeperClient<PeerChannel>],
    database: &str,
) -> Vec<Option<u64>> {
    let asks = clients.iter().map(|c| {
        let mut c = c.clone();
        let req = SafekeeperStatusRequest {
            database: database.to_string(),
        };
        async move {
            tokio::time::timeout(Duration::from_secs(1), c.get_status(req))
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|r| r.into_inner().commit_lsn)
        }
    });
    futures::future::join_all(asks).await
}

/// What a follower knows of the term that wrote the WAL it applied: `(lsn, term)`, the term
/// that wrote the byte just below `lsn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resume(Option<(u64, u64)>);

impl Resume {
    /// The term to send as `ReadWalRequest.expected_term` for a stream from `at`: known only
    /// when it was named for exactly that position (0: not known, nothing is checked).
    fn expected_at(self, at: u64) -> u64 {
        self.0.filter(|&(lsn, _)| lsn == at).map_or(0, |(_, t)| t)
    }

    /// Notes a safekeeper's `term` for the WAL below `lsn` (0: it did not say).
    fn note(&mut self, lsn: u64, term: u64) {
        if term != 0 {
            self.0 = Some((lsn, term));
        }
    }
}

/// Streams from safekeeper `i` until the stream fails or another safekeeper is ahead.
async fn stream_from(
    clients: &[SafekeeperClient<PeerChannel>],
    i: usize,
    sink: &dyn WalSink,
    resume: &mut Resume,
) -> Result<()> {
    let mut at = sink.applied_lsn();
    let mut client = clients[i].clone();
    let req = ReadWalRequest {
        database: sink.database().to_string(),
        start_lsn: at,
        end_lsn: None,
        gather_millis: u32::try_from(sink.gather().as_millis()).unwrap_or(u32::MAX),
        expected_term: resume.expected_at(at),
    };
    let mut stream = client.read_wal(req).await?.into_inner();
    let mut last_check = None;
    while let Some(chunk) = stream.message().await? {
        sink.wal_budget(chunk.wal_bytes, chunk.max_wal_bytes);
        if chunk.begin_lsn != at {
            return Err(Error::internal(format!(
                "WAL chunk starts at {}, expected {at}",
                chunk.begin_lsn
            )));
        }
        if chunk.wal.is_empty() {
            resume.note(at, chunk.term);
            // Idle: if another safekeeper has committed WAL this one lacks, go there. Asked at
            // most every [`IDLE_RECHECK`], not at every keep-alive (two a second): for an idle
            // database that was six status calls a second to the safekeepers, most of what a
            // compute's idle branches cost them.
            if last_check.is_some_and(|t: tokio::time::Instant| t.elapsed() < IDLE_RECHECK) {
                continue;
            }
            last_check = Some(tokio::time::Instant::now());
            let others = commit_positions(clients, sink.database()).await;
            if others.iter().flatten().any(|c| *c > at) && chunk.commit_lsn <= at {
                return Ok(());
            }
            continue;
        }
        let records = wal::decode_frames(&chunk.wal, chunk.begin_lsn)?;
        if !sink.has_room() {
            sink.wait_for_room().await;
        }
        sink.apply(&records)?;
        at += chunk.wal.len() as u64;
        resume.note(at, chunk.term);
        if chunk.term != 0 {
            sink.applied_term(at, chunk.term);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Resume, best, choose};

    #[test]
    fn a_follower_names_a_term_only_for_the_position_it_was_told_of() {
        let mut r = Resume(None);
        assert_eq!(r.expected_at(100), 0, "nothing known: nothing checked");
        r.note(100, 3);
        assert_eq!(r.expected_at(100), 3);
        assert_eq!(r.expected_at(120), 0, "another position: not known");
        r.note(120, 0);
        assert_eq!(
            r.expected_at(100),
            3,
            "a safekeeper that did not say changes nothing"
        );
        r.note(120, 4);
        assert_eq!((r.expected_at(100), r.expected_at(120)), (0, 4));
    }

    #[test]
    fn a_safekeeper_that_sent_damaged_wal_is_passed_over_until_its_time_is_up() {
        let now = tokio::time::Instant::now();
        let later = now + std::time::Duration::from_secs(30);
        let commits = [Some(9), Some(7), Some(7)];
        // The highest commit position wins, unless it is avoided.
        assert_eq!(choose(&commits, &[None, None, None], now), Some(0));
        assert_eq!(choose(&commits, &[Some(later), None, None], now), Some(1));
        // Once its time is up, it is chosen again.
        assert_eq!(choose(&commits, &[Some(later), None, None], later), Some(0));
        // Avoided, but the only one answering: still followed rather than none.
        assert_eq!(
            choose(&[Some(9), None, None], &[Some(later), None, None], now),
            Some(0)
        );
        assert_eq!(choose(&[None, None, None], &[None, None, None], now), None);
    }

    #[test]
    fn the_highest_commit_position_wins_and_the_first_listed_among_equals() {
        assert_eq!(best(&[]), None);
        assert_eq!(best(&[None, None, None]), None);
        // An idle cluster: all equal, and the last listed is the compute's laggard.
        assert_eq!(best(&[Some(7), Some(7), Some(7)]), Some(0));
        assert_eq!(best(&[None, Some(7), Some(7)]), Some(1));
        assert_eq!(best(&[Some(5), Some(7), Some(7)]), Some(1));
        assert_eq!(best(&[Some(5), Some(6), Some(9)]), Some(2));
        assert_eq!(best(&[Some(0), None, Some(0)]), Some(0));
    }
}
