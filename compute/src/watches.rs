//! Watches: clients waiting for a key's value to change.
//!
//! A waiter names the value it knows. The committer reports every batch once it is committed
//! (after the committed version is published), and a waiter fires when the batch leaves its key
//! at a different value. Registration happens *before* the server reads the key's current
//! value, so no commit can slip between the two unseen: a batch reported before the
//! registration is visible to that read, and one reported after it reaches the waiter.
//!
//! Setting a key to the value a waiter already knows does not fire it; changing it and
//! changing it back within one batch does not either. That is FoundationDB's contract too:
//! a watch reports that the value differs, not every write.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use ferrisdb_common::wal::Mutation;
use ferrisdb_common::{Error, Result, Version};
use tokio::sync::oneshot;

/// What a fired watch reports: the version that changed the key, and its value there.
pub type Fired = (Version, Option<Bytes>);

#[derive(Debug)]
struct Waiter {
    known: Option<Bytes>,
    reply: oneshot::Sender<Fired>,
}

/// The waiters of one database, by key.
#[derive(Debug)]
pub struct Watches {
    /// `None` once closed: nothing will be reported any more.
    waiters: Mutex<Option<BTreeMap<Bytes, Vec<Waiter>>>>,
    limit: usize,
}

impl Watches {
    /// At most `limit` outstanding waiters; more are refused with `unavailable`.
    pub fn new(limit: usize) -> Watches {
        Watches {
            waiters: Mutex::new(Some(BTreeMap::new())),
            limit,
        }
    }

    /// Drops every waiter and refuses new ones with `unavailable`: the view they wait on will
    /// see no more commits (its primary lost its term), so their clients must watch again
    /// wherever the database is served now.
    pub fn close(&self) {
        if let Ok(mut waiters) = self.waiters.lock() {
            *waiters = None;
        }
    }

    /// Registers a waiter for `key` knowing `known`; the receiver gets the first change.
    pub fn register(&self, key: Bytes, known: Option<Bytes>) -> Result<oneshot::Receiver<Fired>> {
        let mut guard = self
            .waiters
            .lock()
            .map_err(|_| Error::internal("watch table poisoned"))?;
        let Some(waiters) = guard.as_mut() else {
            return Err(Error::unavailable(
                "this compute stopped committing to the database; watch again",
            ));
        };
        // Waiters whose client went away are dropped lazily, here and when their key changes.
        waiters.retain(|_, list| {
            list.retain(|w| !w.reply.is_closed());
            !list.is_empty()
        });
        let outstanding: usize = waiters.values().map(Vec::len).sum();
        if outstanding >= self.limit {
            return Err(Error::unavailable(format!(
                "too many watches on this compute ({outstanding}); retry later"
            )));
        }
        let (reply, rx) = oneshot::channel();
        waiters
            .entry(key)
            .or_default()
            .push(Waiter { known, reply });
        Ok(rx)
    }

    /// Fires the waiters whose key `mutations` (one committed batch, in order) left at a
    /// different value than they know.
    pub fn on_commit(&self, version: Version, mutations: &[Mutation]) {
        let Ok(mut guard) = self.waiters.lock() else {
            return;
        };
        let Some(waiters) = guard.as_mut() else {
            return;
        };
        if waiters.is_empty() {
            return;
        }
        // The batch's final value of each watched key it touches.
        let mut after: BTreeMap<Bytes, Option<Bytes>> = BTreeMap::new();
        for m in mutations {
            match m {
                Mutation::Set { key, value } if waiters.contains_key(key) => {
                    after.insert(key.clone(), Some(value.clone()));
                }
                Mutation::Clear { key } if waiters.contains_key(key) => {
                    after.insert(key.clone(), None);
                }
                Mutation::ClearRange { begin, end } => {
                    for key in waiters.range(begin.clone()..end.clone()).map(|(k, _)| k) {
                        after.insert(key.clone(), None);
                    }
                }
                _ => {}
            }
        }
        for (key, value) in after {
            let Some(list) = waiters.get_mut(&key) else {
                continue;
            };
            let (fire, keep): (Vec<Waiter>, Vec<Waiter>) =
                list.drain(..).partition(|w| w.known != value);
            for w in fire {
                let _ = w.reply.send((version, value.clone()));
            }
            if keep.is_empty() {
                waiters.remove(&key);
            } else {
                *list = keep;
            }
        }
    }

    /// Outstanding waiters (including ones whose client may have gone).
    pub fn len(&self) -> usize {
        self.waiters.lock().map_or(0, |w| {
            w.as_ref().map_or(0, |w| w.values().map(Vec::len).sum())
        })
    }

    /// Whether no waiter is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn set(k: &str, v: &str) -> Mutation {
        Mutation::Set {
            key: b(k),
            value: b(v),
        }
    }

    #[test]
    fn fires_on_a_different_value_only() {
        let w = Watches::new(100);
        let mut same = w.register(b("k"), Some(b("1"))).unwrap();
        let mut other = w.register(b("j"), None).unwrap();
        w.on_commit(Version(5), &[set("k", "1"), set("x", "y")]);
        assert!(same.try_recv().is_err(), "same value: not a change");
        w.on_commit(Version(6), &[set("k", "2"), set("k", "1")]);
        assert!(same.try_recv().is_err(), "changed and back in one batch");
        w.on_commit(Version(7), &[set("k", "3")]);
        assert_eq!(same.try_recv().unwrap(), (Version(7), Some(b("3"))));
        assert!(other.try_recv().is_err());
        w.on_commit(
            Version(8),
            &[Mutation::ClearRange {
                begin: b("a"),
                end: b("z"),
            }],
        );
        assert!(other.try_recv().is_err(), "already absent");
        w.on_commit(Version(9), &[set("j", "v")]);
        assert_eq!(other.try_recv().unwrap(), (Version(9), Some(b("v"))));
        assert!(w.is_empty());
    }

    #[test]
    fn closing_ends_every_wait_and_refuses_new_ones() {
        let w = Watches::new(10);
        let waiting = w.register(b("k"), None).unwrap();
        w.close();
        assert!(
            futures::executor::block_on(waiting).is_err(),
            "a closed table drops its waiters"
        );
        let refused = w.register(b("k"), None).unwrap_err();
        assert_eq!(refused.kind(), ferrisdb_common::ErrorKind::Unavailable);
        w.on_commit(Version(1), &[set("k", "v")]);
        assert!(w.is_empty());
    }

    #[test]
    fn range_clears_fire_and_abandoned_waiters_are_dropped() {
        let w = Watches::new(2);
        let mut k = w.register(b("m"), Some(b("1"))).unwrap();
        let gone = w.register(b("n"), Some(b("1"))).unwrap();
        assert!(w.register(b("o"), None).is_err(), "over the limit");
        drop(gone);
        let _o = w.register(b("o"), None).unwrap();
        assert_eq!(w.len(), 2);
        w.on_commit(
            Version(3),
            &[Mutation::ClearRange {
                begin: b("a"),
                end: b("n"),
            }],
        );
        assert_eq!(k.try_recv().unwrap(), (Version(3), None));
    }
}
