//! An object store that fails on purpose, for tests: a seeded share of calls fail with a
//! transient error, and some writes fail *after* they landed (the response was lost), which is
//! the case conditional writes must handle.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Wraps a store and injects failures into a percentage of calls.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    fail_percent: AtomicU32,
    rng: Mutex<StdRng>,
    injected: AtomicU64,
    gets: AtomicU64,
    /// Milliseconds every GET waits before it is served (a store far away).
    get_delay_ms: AtomicU64,
    gets_in_flight: AtomicU64,
    most_gets_in_flight: AtomicU64,
}

impl FaultyStore {
    /// Fails `fail_percent` % of calls to `inner`, drawing from a generator seeded by `seed`.
    pub fn new(inner: Arc<dyn ObjectStore>, fail_percent: u32, seed: u64) -> FaultyStore {
        FaultyStore {
            inner,
            fail_percent: AtomicU32::new(fail_percent),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            injected: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            get_delay_ms: AtomicU64::new(0),
            gets_in_flight: AtomicU64::new(0),
            most_gets_in_flight: AtomicU64::new(0),
        }
    }

    /// Changes the failure rate (0–100).
    pub fn set_fail_percent(&self, p: u32) {
        self.fail_percent.store(p.min(100), Ordering::SeqCst);
    }

    /// How many reads (GETs, ranged or not) reached the store so far.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::SeqCst)
    }

    /// Makes every GET wait `delay` before it is served, as a distant store's would.
    pub fn set_get_delay(&self, delay: std::time::Duration) {
        self.get_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The most GETs that were in flight at once since the last call (or the start).
    pub fn most_gets_in_flight(&self) -> u64 {
        self.most_gets_in_flight.swap(0, Ordering::SeqCst)
    }

    /// How many failures were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    fn roll(&self) -> bool {
        let p = self.fail_percent.load(Ordering::SeqCst);
        let hit = self
            .rng
            .lock()
            .map(|mut r| r.random_range(0..100) < p)
            .unwrap_or(false);
        if hit {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }

    fn fault(what: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "FaultyStore",
            source: format!("injected failure: {what}").into(),
        }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.roll() {
            // Half the faults strike before the write, half after it landed.
            let after = self
                .rng
                .lock()
                .map(|mut r| r.random_bool(0.5))
                .unwrap_or(false);
            if after {
                self.inner.put_opts(location, payload, opts).await?;
                return Err(Self::fault("response lost after the write landed"));
            }
            return Err(Self::fault("put"));
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if self.roll() {
            return Err(Self::fault("multipart"));
        }
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if self.roll() {
            return Err(Self::fault("get"));
        }
        let now = self.gets_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_gets_in_flight.fetch_max(now, Ordering::SeqCst);
        let delay = self.get_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let got = self.inner.get_opts(location, options).await;
        self.gets_in_flight.fetch_sub(1, Ordering::SeqCst);
        got
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if self.roll() {
            return futures::stream::once(async { Err(Self::fault("list")) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        if self.roll() {
            return Err(Self::fault("list"));
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        if self.roll() {
            return Err(Self::fault("copy"));
        }
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn injects_about_the_asked_share_and_retries_get_through() {
        let store = Arc::new(FaultyStore::new(Arc::new(InMemory::new()), 20, 7));
        let path = Path::from("a/b");
        let mut failed = 0;
        for _ in 0..500 {
            if store
                .put(&path, PutPayload::from_static(b"x"))
                .await
                .is_err()
            {
                failed += 1;
            }
        }
        assert!(
            (60..=140).contains(&failed),
            "{failed} of 500 failed at 20%"
        );
        let got = crate::objstore::with_retries("get", || async {
            store.get(&path).await?.bytes().await
        })
        .await
        .unwrap();
        assert_eq!(&got[..], b"x");
    }
}
