//! The context of one task (or one request, or one `scope`): an alias context per alias, created
//! on first use, and the statement recorder.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::alias::{AliasCtx, Slot};
use crate::config::AliasEntry;
use crate::error::Error;
use crate::record::Recorder;
use crate::state::{BlockOpts, TxState};
use crate::sync::lock;

/// The context of one task (or one request, or one [`scope`](crate::scope)).
pub(crate) struct Context {
    /// One slot per alias of the registry, by index: reading a filled slot is one atomic load.
    aliases: Box<[OnceLock<Arc<AliasCtx>>]>,
    /// The aliases of a context created before the registry was installed.
    late: Mutex<Vec<Option<Arc<AliasCtx>>>>,
    /// An error to turn the request's response into a 500 (see the web layer).
    pub(crate) request_error: Mutex<Option<Error>>,
    next_block: AtomicU64,
    pub(crate) recorder: Option<Recorder>,
    /// The request's outermost blocks: `deferred[k]` is the alias index of the block with id
    /// `k + 1`. Each is entered when the alias's context is first created, so a request that
    /// never touches an alias costs it nothing (see the web layer).
    deferred: &'static [usize],
    /// The request's blocks were ended (the web layer's exits ran to the end).
    request_ended: AtomicBool,
}

impl Drop for Context {
    fn drop(&mut self) {
        // A request's context dropped before its exits ran: the request's future was dropped
        // (7.1). Its blocks are left in failure, innermost first; a transaction's connection is
        // rolled back or closed in the background.
        if self.deferred.is_empty() || *self.request_ended.get_mut() {
            return;
        }
        for (id, actx) in self.request_blocks().rev() {
            actx.cancel_block(id);
        }
    }
}

impl Context {
    /// A plain context (no request blocks); `record`: with a statement recorder.
    pub(crate) fn new(record: bool) -> Arc<Self> {
        Self::with_deferred(record, &[])
    }

    /// The context of one request, with a deferred outermost block on each alias of `aliases`
    /// (registry indices), whose ids are 1, 2, … in that order.
    pub(crate) fn for_request(aliases: &'static [usize]) -> Arc<Self> {
        Self::with_deferred(false, aliases)
    }

    fn with_deferred(record: bool, deferred: &'static [usize]) -> Arc<Self> {
        Arc::new(Context {
            aliases: (0..crate::config::registry().map_or(0, |r| r.entries.len()))
                .map(|_| OnceLock::new())
                .collect(),
            late: Mutex::new(Vec::new()),
            request_error: Mutex::new(None),
            next_block: AtomicU64::new(deferred.len() as u64 + 1),
            recorder: record.then(Recorder::default),
            deferred,
            request_ended: AtomicBool::new(false),
        })
    }

    /// The request's blocks were ended: nothing is left to cancel when the context is dropped.
    #[cfg(feature = "tower")]
    pub(crate) fn request_ended(&self) {
        self.request_ended.store(true, Ordering::Relaxed);
    }

    /// The request's blocks (ids 1, 2, … in registry order) on the aliases the request touched,
    /// with their alias contexts; an alias the request never touched has none and nothing to end.
    pub(crate) fn request_blocks(&self) -> impl DoubleEndedIterator<Item = (u64, Arc<AliasCtx>)> {
        self.deferred
            .iter()
            .enumerate()
            .filter_map(|(k, &index)| Some((k as u64 + 1, self.existing_alias(index)?)))
    }

    /// The id of the request's deferred block on alias `index`.
    pub(crate) fn deferred_block(&self, index: usize) -> Option<u64> {
        deferred_block(self.deferred, index)
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
        if let Some(id) = self.deferred_block(entry.index) {
            // The request's block on this alias begins now, lazily as any block.
            match state.enter(id, BlockOpts::default()) {
                Ok(()) => {
                    tracing::trace!(target: "sqlx_atomic", alias = %entry.name, depth = 1, "request block entered");
                }
                Err(kind) => {
                    let error = Error::at(&entry.name, kind);
                    tracing::error!(target: "sqlx_atomic", error = %error, "the request transaction could not begin");
                    lock(&self.request_error).get_or_insert(error);
                }
            }
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

/// The id of the deferred block on alias `index` among a request's `deferred` blocks
/// (`deferred[k]` has id `k + 1`).
fn deferred_block(deferred: &[usize], index: usize) -> Option<u64> {
    deferred
        .iter()
        .position(|&i| i == index)
        .map(|k| k as u64 + 1)
}
