//! Newer writes laid over an older, paged range source.
//!
//! Two places read a range this way: the compute lays its hot tier over the pageserver's
//! answer at the hot tier's floor, and a transaction lays its own uncommitted writes over the
//! compute's answer. Both have point entries (a value, or `None` for a clear) and cleared
//! ranges; both must answer a limited read without knowing how many of the source's rows
//! their clears hide, so the source is read in pages until enough rows survive.

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;

use crate::Result;

/// Writes newer than a range source: they win over its rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlay {
    /// Keys written, with their value (`None`: cleared).
    pub entries: BTreeMap<Bytes, Option<Bytes>>,
    /// Ranges cleared: every source row inside them is gone (entries inside still count).
    pub cleared: Vec<(Bytes, Bytes)>,
}

/// One page of a range source: rows in scan order, and whether the source holds more past
/// the last one.
pub type Page = (Vec<(Bytes, Bytes)>, bool);

impl Overlay {
    /// Whether `key` lies in a cleared range.
    pub fn is_cleared(&self, key: &[u8]) -> bool {
        self.cleared
            .iter()
            .any(|(b, e)| b.as_ref() <= key && key < e.as_ref())
    }

    /// Whether the overlay decides `key`, so the source's row for it does not count.
    pub fn overrides(&self, key: &[u8]) -> bool {
        self.entries.contains_key(key) || self.is_cleared(key)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.cleared.is_empty()
    }

    /// Up to `limit` (0: all) live rows of `[begin, end)`, in key order or reversed, with a
    /// flag saying whether more may follow. `fetch(begin, end, limit)` reads one page of the
    /// source in the same direction; it may answer fewer rows than asked, saying more follow.
    /// A caller wanting every row reads again after the last row while the flag is set.
    pub async fn read_range<F, Fut>(
        &self,
        begin: Bytes,
        end: Bytes,
        limit: usize,
        reverse: bool,
        fetch: F,
    ) -> Result<(Vec<(Bytes, Bytes)>, bool)>
    where
        F: FnMut(Bytes, Bytes, usize) -> Fut,
        Fut: Future<Output = Result<Page>>,
    {
        self.read_range_capped(begin, end, limit, reverse, 0, fetch)
            .await
    }

    /// [`Overlay::read_range`], stopping once the rows hold `max_bytes` of keys and values
    /// (0: no cap; at least one row is kept) and then saying more follow: the answer is a
    /// prefix of the range in scan order, whatever the cap cut.
    pub async fn read_range_capped<F, Fut>(
        &self,
        begin: Bytes,
        end: Bytes,
        limit: usize,
        reverse: bool,
        max_bytes: usize,
        mut fetch: F,
    ) -> Result<(Vec<(Bytes, Bytes)>, bool)>
    where
        F: FnMut(Bytes, Bytes, usize) -> Fut,
        Fut: Future<Output = Result<Page>>,
    {
        let in_range = |k: &Bytes| *k >= begin && *k < end;
        let mut own: Vec<(&Bytes, &Option<Bytes>)> =
            self.entries.iter().filter(|(k, _)| in_range(k)).collect();
        if reverse {
            own.reverse();
        }
        // The first `limit` live rows in scan order lie at or before the `limit`-th entry that
        // sets a value (own values are live whatever the source holds), so nothing past it is
        // needed: neither the entries after it nor the source's rows. This keeps a short scan
        // of a long range, over an overlay with many entries, a short read of the source.
        let (mut begin, mut end) = (begin, end);
        let mut narrowed = false;
        if limit > 0
            && let Some(i) = own
                .iter()
                .enumerate()
                .filter(|(_, (_, v))| v.is_some())
                .nth(limit - 1)
                .map(|(i, _)| i)
        {
            own.truncate(i + 1);
            narrowed = true;
            let last = own[i].0.clone();
            if reverse {
                begin = last;
            } else {
                end = successor(&last);
            }
        }
        if own.is_empty() && self.cleared.is_empty() {
            // Nothing to lay over the source (the common case for a short scan): its page is
            // the answer, without merging it through a map.
            let (mut page, more) = fetch(begin, end, limit).await?;
            let cut = limit > 0 && page.len() > limit;
            if cut {
                page.truncate(limit);
            }
            let capped = cap_bytes(&mut page, max_bytes);
            return Ok((page, more || cut || capped));
        }
        // Each entry hides at most one source row, so asking for that many more usually
        // settles the answer in one page; a cleared range can hide any number, so pages
        // continue from where the last one ended until enough rows survive.
        let page_limit = if limit == 0 { 0 } else { limit + own.len() };
        let (mut lo, mut hi) = (begin.clone(), end.clone());
        let mut rows: BTreeMap<Bytes, Bytes> = BTreeMap::new();
        loop {
            let (page, more) = fetch(lo.clone(), hi.clone(), page_limit).await?;
            let last = page.last().map(|(k, _)| k.clone());
            rows.extend(page.into_iter().filter(|(k, _)| !self.overrides(k)));
            let settled = match (last, more) {
                (Some(last), true) => last,
                // The source had nothing more in range: every row is known.
                _ => {
                    let live = Self::merge(rows, &own, None, reverse);
                    // Narrowed, the range may go on past where it was cut: as FoundationDB
                    // allows, a read that reached its limit exactly says more may follow.
                    let more =
                        limit > 0 && (live.len() > limit || (narrowed && live.len() >= limit));
                    let mut live = Self::cut(live, limit);
                    let capped = cap_bytes(&mut live, max_bytes);
                    return Ok((live, more || capped));
                }
            };
            // Only what lies up to where this page ended is known.
            let mut live = Self::merge(rows.clone(), &own, Some(&settled), reverse);
            // Without a limit, a page whose rows this overlay all hid answers nothing yet:
            // read on rather than return an empty page that says more follow.
            let enough = if limit == 0 {
                !live.is_empty()
            } else {
                live.len() >= limit
            };
            if enough || cap_bytes(&mut live, max_bytes) {
                let mut live = Self::cut(live, limit);
                cap_bytes(&mut live, max_bytes);
                return Ok((live, true));
            }
            if reverse {
                hi = settled;
            } else {
                lo = successor(&settled);
            }
        }
    }

    /// Source rows and own entries merged, live rows only, in scan order; with `upto`, only
    /// keys up to it in scan order.
    fn merge(
        mut rows: BTreeMap<Bytes, Bytes>,
        own: &[(&Bytes, &Option<Bytes>)],
        upto: Option<&Bytes>,
        reverse: bool,
    ) -> Vec<(Bytes, Bytes)> {
        let mut cleared = Vec::new();
        for (k, v) in own {
            match v {
                Some(v) => {
                    rows.insert((*k).clone(), v.clone());
                }
                None => cleared.push((*k).clone()),
            }
        }
        for k in cleared {
            rows.remove(&k);
        }
        let within = |k: &Bytes| upto.is_none_or(|u| if reverse { k >= u } else { k <= u });
        let live = rows.into_iter().filter(|(k, _)| within(k));
        if reverse {
            live.rev().collect()
        } else {
            live.collect()
        }
    }

    fn cut(mut rows: Vec<(Bytes, Bytes)>, limit: usize) -> Vec<(Bytes, Bytes)> {
        if limit > 0 {
            rows.truncate(limit);
        }
        rows
    }
}

/// Cuts `rows` once they hold `max_bytes` of rows as
/// [`crate::message_size::range_row_bytes`] counts them (0: never), keeping at least one;
/// returns whether it cut.
fn cap_bytes(rows: &mut Vec<(Bytes, Bytes)>, max_bytes: usize) -> bool {
    crate::message_size::cap_by_bytes(rows, 1, max_bytes, |(k, v)| {
        crate::message_size::range_row_bytes(k, v)
    })
}

/// The smallest key after `key` (`key` followed by a zero byte).
pub fn successor(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    Bytes::from(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// A source of keys k00..k49 answering in pages of the asked size.
    async fn source(begin: Bytes, end: Bytes, limit: usize, reverse: bool) -> Result<Page> {
        let all: Vec<(Bytes, Bytes)> = (0..50)
            .map(|i| (b(&format!("k{i:02}")), b(&format!("v{i}"))))
            .filter(|(k, _)| *k >= begin && *k < end)
            .collect();
        let mut all = all;
        if reverse {
            all.reverse();
        }
        let more = limit > 0 && all.len() > limit;
        if limit > 0 {
            all.truncate(limit);
        }
        Ok((all, more))
    }

    fn keys(rows: &[(Bytes, Bytes)]) -> Vec<String> {
        rows.iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn clears_hiding_many_rows_are_read_past_in_pages() {
        let mut o = Overlay::default();
        o.cleared.push((b("k05"), b("k40")));
        o.entries.insert(b("k10"), Some(b("mine")));
        o.entries.insert(b("k02"), None);
        o.entries.insert(b("k99"), Some(b("outside")));
        for reverse in [false, true] {
            let (rows, more) = o
                .read_range(b("k00"), b("k50"), 0, reverse, |lo, hi, n| {
                    source(lo, hi, n, reverse)
                })
                .await
                .unwrap();
            let mut want: Vec<String> = ["k00", "k01", "k03", "k04", "k10"]
                .iter()
                .map(|s| s.to_string())
                .chain((40..50).map(|i| format!("k{i}")))
                .collect();
            if reverse {
                want.reverse();
            }
            assert_eq!(keys(&rows), want);
            assert!(!more);
            for limit in 1..=16 {
                let (rows, more) = o
                    .read_range(b("k00"), b("k50"), limit, reverse, |lo, hi, n| {
                        source(lo, hi, n, reverse)
                    })
                    .await
                    .unwrap();
                let expect: Vec<String> = want.iter().take(limit).cloned().collect();
                assert_eq!(keys(&rows), expect, "limit {limit} reverse {reverse}");
                assert_eq!(more, limit < want.len(), "limit {limit} reverse {reverse}");
            }
        }
        let (rows, _) = o
            .read_range(b("k10"), b("k11"), 0, false, |lo, hi, n| {
                source(lo, hi, n, false)
            })
            .await
            .unwrap();
        assert_eq!(rows, vec![(b("k10"), b("mine"))]);
    }

    /// A short read of a long range over an overlay with many entries reads the source only
    /// up to the `limit`-th entry that sets a value (and asks for few rows), in both
    /// directions; it still says more may follow.
    #[tokio::test]
    async fn a_limited_read_stops_at_the_limit_th_own_value() {
        let mut o = Overlay::default();
        o.entries.insert(b("k05"), None);
        for i in 10..=40 {
            o.entries.insert(b(&format!("k{i}")), Some(b("mine")));
        }
        for reverse in [false, true] {
            let asked = std::sync::Mutex::new(Vec::new());
            let (rows, more) = o
                .read_range(b("k00"), b("k50"), 12, reverse, |lo, hi, n| {
                    asked.lock().unwrap().push((lo.clone(), hi.clone(), n));
                    source(lo, hi, n, reverse)
                })
                .await
                .unwrap();
            let want: Vec<String> = if reverse {
                (38..50).rev().map(|i| format!("k{i}")).collect()
            } else {
                [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]
                    .iter()
                    .map(|i| format!("k{i:02}"))
                    .collect()
            };
            assert_eq!(keys(&rows), want, "reverse {reverse}");
            assert!(more, "reverse {reverse}");
            let asked = asked.into_inner().unwrap();
            let want_asked = if reverse {
                vec![(b("k29"), b("k50"), 24)]
            } else {
                vec![(b("k00"), b("k21\0"), 25)]
            };
            assert_eq!(asked, want_asked, "reverse {reverse}");
        }
    }

    /// Reads all of `[k00, k50)` through `overlay` the way a client does: page after page,
    /// from after the last row while more follow, from a source that answers at most five
    /// rows a page, with answers capped at `max_bytes`.
    async fn read_all(overlay: &Overlay, reverse: bool, max_bytes: usize) -> Vec<String> {
        let (mut lo, mut hi) = (b("k00"), b("k50"));
        let mut all = Vec::new();
        loop {
            let (rows, more) = overlay
                .read_range_capped(lo.clone(), hi.clone(), 0, reverse, max_bytes, |l, h, _| {
                    source(l, h, 5, reverse)
                })
                .await
                .unwrap();
            assert!(
                !(more && rows.is_empty()),
                "an empty page saying more follow"
            );
            let last = rows.last().map(|(k, _)| k.clone());
            all.extend(keys(&rows));
            match last {
                Some(last) if more => {
                    if reverse {
                        hi = last;
                    } else {
                        lo = successor(&last);
                    }
                }
                _ => return all,
            }
        }
    }

    #[tokio::test]
    async fn paged_sources_and_byte_caps_still_give_every_row() {
        // A clear hides whole pages of the source; a set lands in the middle of it.
        let overlay = Overlay {
            entries: [(b("k20"), Some(b("own")))].into_iter().collect(),
            cleared: vec![(b("k00"), b("k30"))],
        };
        let mut want: Vec<String> = std::iter::once("k20".to_string())
            .chain((30..50).map(|i| format!("k{i:02}")))
            .collect();
        for max_bytes in [0, 1, 12, 1 << 20] {
            assert_eq!(
                read_all(&overlay, false, max_bytes).await,
                want,
                "cap {max_bytes}"
            );
        }
        want.reverse();
        for max_bytes in [0, 1, 12] {
            assert_eq!(
                read_all(&overlay, true, max_bytes).await,
                want,
                "reverse, cap {max_bytes}"
            );
        }
        // With nothing laid over the source, the cap still cuts its pages: five bytes a row
        // and the row's framing (21 counted), so the third reaches 60.
        let per_row = crate::message_size::range_row_bytes(b"k00", b"vv");
        assert_eq!(per_row, 21);
        let (rows, more) = Overlay::default()
            .read_range_capped(b("k00"), b("k50"), 0, false, 60, |l, h, n| {
                source(l, h, n, false)
            })
            .await
            .unwrap();
        assert_eq!(
            (keys(&rows), more),
            (vec!["k00".into(), "k01".into(), "k02".into()], true)
        );
    }
}
