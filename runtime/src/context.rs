//! The context of one task (or one request, or one `scope`): an alias context per alias, created
//! on first use, and the statement recorder.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::alias::{AliasCtx, Slot};
use crate::error::{Error, ErrorKind};
use crate::record::Recorder;
use crate::registry::AliasEntry;
use crate::requests::blocks::RequestBlocks;
use crate::state::TxState;
use crate::sync::lock;

/// The context of one task (or one request, or one [`scope`](crate::scope)).
pub(crate) struct Context {
    /// One slot per alias of the registry, by index: reading a filled slot is one atomic load.
    aliases: Box<[OnceLock<Arc<AliasCtx>>]>,
    /// The aliases of a context created before the registry was installed.
    late: Mutex<Vec<Option<Arc<AliasCtx>>>>,
    next_block: AtomicU64,
    pub(crate) recorder: Option<Recorder>,
    /// A request's context: its deferred outermost blocks (see the web layer).
    pub(crate) request: Option<RequestBlocks>,
    /// A test's context: the aliases the test named; queries to the others are refused.
    only: Option<TestAliases>,
}

/// The aliases a test runs in rolled-back transactions on.
struct TestAliases {
    /// Their registry indices.
    indices: Box<[usize]>,
    /// Their names, for the error.
    names: Vec<String>,
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Some(request) = &self.request {
            request.cancel_unended(|index| self.existing_alias(index));
        }
    }
}

impl Context {
    /// A plain context (no request blocks); `record`: with a statement recorder.
    pub(crate) fn new(record: bool) -> Arc<Self> {
        Self::with(record, None)
    }

    /// The context of one request, with its deferred outermost blocks.
    pub(crate) fn for_request(request: RequestBlocks) -> Arc<Self> {
        Self::with(false, Some(request))
    }

    /// The context of a test that runs on the aliases `entries` only.
    #[cfg(feature = "testing")]
    pub(crate) fn for_test(entries: &[&'static Arc<AliasEntry>]) -> Arc<Self> {
        let mut ctx = Self::with(false, None);
        Arc::get_mut(&mut ctx).expect("a new context").only = Some(TestAliases {
            indices: entries.iter().map(|e| e.index).collect(),
            names: entries.iter().map(|e| e.name.to_string()).collect(),
        });
        ctx
    }

    /// The error for a query on `entry`'s alias, when the context is a test's that did not name
    /// it (docs/semantics.md §10.3).
    #[inline]
    pub(crate) fn refuses(&self, entry: &AliasEntry) -> Option<Error> {
        let only = self.only.as_ref()?;
        if only.indices.contains(&entry.index) {
            return None;
        }
        Some(Error::at(
            &entry.name,
            ErrorKind::NotAllowedInTest {
                allowed: only.names.clone(),
            },
        ))
    }

    fn with(record: bool, request: Option<RequestBlocks>) -> Arc<Self> {
        Arc::new(Context {
            aliases: (0..crate::registry::registry().map_or(0, |r| r.entries.len()))
                .map(|_| OnceLock::new())
                .collect(),
            late: Mutex::new(Vec::new()),
            // Block ids after the request's own (1, 2, …).
            next_block: AtomicU64::new(request.as_ref().map_or(0, RequestBlocks::count) + 1),
            recorder: record.then(Recorder::default),
            request,
            only: None,
        })
    }

    /// Whether the task runs inside a test helper's always-rolled-back transaction on some alias
    /// (10.1): a request sent from it runs inside that transaction (10.3).
    #[cfg(feature = "tower")]
    pub(crate) fn in_test(&self) -> bool {
        let in_test = |a: &Arc<AliasCtx>| a.state().in_test();
        self.aliases.iter().filter_map(OnceLock::get).any(in_test)
            || lock(&self.late).iter().flatten().any(in_test)
    }

    /// The id of the request's deferred block on alias `index`, if any.
    pub(crate) fn deferred_block(&self, index: usize) -> Option<u64> {
        self.request.as_ref()?.block_on(index)
    }

    /// The alias's context if this task has created it, without creating it.
    pub(crate) fn existing_alias(&self, index: usize) -> Option<Arc<AliasCtx>> {
        match self.aliases.get(index) {
            Some(slot) => slot.get().cloned(),
            None => lock(&self.late).get(index).cloned().flatten(),
        }
    }

    pub(crate) fn next_block_id(&self) -> u64 {
        self.next_block.fetch_add(1, Ordering::Relaxed)
    }

    /// The alias's context in this task, created on first use.
    pub(crate) fn alias(self: &Arc<Self>, entry: &'static Arc<AliasEntry>) -> Arc<AliasCtx> {
        self.with_alias(entry, Arc::clone)
    }

    /// Calls `f` with the alias's context in this task (created on first use), without cloning
    /// it: for the hot paths that need it only for a moment. For a context created before the
    /// registry was installed, `f` runs under the lock of the task's late alias table, so it must
    /// not call back into this context's aliases.
    pub(crate) fn with_alias<R>(
        self: &Arc<Self>,
        entry: &'static Arc<AliasEntry>,
        f: impl FnOnce(&Arc<AliasCtx>) -> R,
    ) -> R {
        if let Some(slot) = self.aliases.get(entry.index) {
            return f(slot.get_or_init(|| self.new_alias(entry)));
        }
        let mut v = lock(&self.late);
        if v.len() <= entry.index {
            v.resize(entry.index + 1, None);
        }
        f(v[entry.index].get_or_insert_with(|| self.new_alias(entry)))
    }

    fn new_alias(self: &Arc<Self>, entry: &'static Arc<AliasEntry>) -> Arc<AliasCtx> {
        let mut state = TxState::new(entry.db.autocommit, entry.tracks_abort());
        if let Some(request) = &self.request {
            request.enter(entry, &mut state);
        }
        Arc::new(AliasCtx {
            entry,
            recorder: self.recorder.clone(),
            state: Mutex::new(state),
            slot: Mutex::new(Slot::default()),
            freed: tokio::sync::Notify::new(),
        })
    }
}
