//! A page source that injects faults, for tests (built with `cfg(test)` or the `test-aids`
//! feature, never into a server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use ferrisdb_common::proto::{
    HistoryRequest, PageGetRangeRequest, PageGetRequest, PageserverStatus, VersionAtRequest,
};
use ferrisdb_common::{Error, Result, Version};

use crate::page_source::{HistoryPage, PageSource, RangeRows};

/// One kind of page-source call, for naming the calls a [`FaultyPageSource`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageCall {
    /// [`PageSource::get`].
    Get,
    /// [`PageSource::get_range`].
    GetRange,
    /// [`PageSource::history`].
    History,
    /// [`PageSource::version_at`].
    VersionAt,
    /// [`PageSource::status`].
    Status,
}

/// A page source that fails the calls a test asks it to and passes the rest to another, like
/// `ferrisdb_server_common::faulty_store::FaultyStore` for object storage. It counts every call, so
/// a test can also tell whether a tier in front answered without asking.
#[derive(Debug)]
pub struct FaultyPageSource {
    inner: Arc<dyn PageSource>,
    state: Mutex<Faults>,
}

#[derive(Debug, Default)]
struct Faults {
    /// Per call: the error to give and how many more times (`usize::MAX`: until cleared).
    failing: HashMap<PageCall, (Error, usize)>,
    calls: HashMap<PageCall, usize>,
}

impl FaultyPageSource {
    /// Passes every call to `inner` until told to fail some.
    pub fn new(inner: Arc<dyn PageSource>) -> FaultyPageSource {
        FaultyPageSource {
            inner,
            state: Mutex::default(),
        }
    }

    /// The next `times` calls of `call` fail with `error` (without reaching the inner source).
    pub fn fail(&self, call: PageCall, error: Error, times: usize) {
        self.lock().failing.insert(call, (error, times));
    }

    /// Every call of `call` fails with `error` until [`FaultyPageSource::heal`].
    pub fn fail_always(&self, call: PageCall, error: Error) {
        self.fail(call, error, usize::MAX);
    }

    /// Stops failing anything.
    pub fn heal(&self) {
        self.lock().failing.clear();
    }

    /// How many calls of `call` were made, failed or not.
    pub fn calls(&self, call: PageCall) -> usize {
        self.lock().calls.get(&call).copied().unwrap_or(0)
    }

    /// The fault a call meets now, if any; counts the call.
    fn check(&self, call: PageCall) -> Result<()> {
        let mut state = self.lock();
        *state.calls.entry(call).or_default() += 1;
        let Some((error, left)) = state.failing.get_mut(&call) else {
            return Ok(());
        };
        let error = error.clone();
        if *left != usize::MAX {
            *left -= 1;
        }
        if *left == 0 {
            state.failing.remove(&call);
        }
        Err(error)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Faults> {
        // Nothing panics while holding the lock, so a poisoned one is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[tonic::async_trait]
impl PageSource for FaultyPageSource {
    async fn get(&self, req: PageGetRequest) -> Result<Option<Bytes>> {
        self.check(PageCall::Get)?;
        self.inner.get(req).await
    }

    async fn get_range(&self, req: PageGetRangeRequest) -> Result<RangeRows> {
        self.check(PageCall::GetRange)?;
        self.inner.get_range(req).await
    }

    async fn history(&self, req: HistoryRequest) -> Result<HistoryPage> {
        self.check(PageCall::History)?;
        self.inner.history(req).await
    }

    async fn version_at(&self, req: VersionAtRequest) -> Result<Version> {
        self.check(PageCall::VersionAt)?;
        self.inner.version_at(req).await
    }

    async fn status(&self, database: &str) -> Result<PageserverStatus> {
        self.check(PageCall::Status)?;
        self.inner.status(database).await
    }
}
