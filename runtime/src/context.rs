//! The context of one task (or one request, or one `scope`): an alias context per alias, created
//! on first use, the statement recorder, and the thread's spare contexts.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::alias::{AliasCtx, Slot};
use crate::config::AliasEntry;
use crate::error::Error;
use crate::record::Recorder;
use crate::state::{BlockOpts, TxState};
use crate::sync::{get_mut, lock};

thread_local! {
    /// A plain context that an outermost block on this thread left idle, kept for the next one
    /// (see `Context::recycle`): three allocations fewer per transaction.
    static SPARE: Cell<Option<Arc<Context>>> = const { Cell::new(None) };
    /// The same for the contexts of requests (see the web layer).
    static REQUEST_SPARE: Cell<Option<Arc<Context>>> = const { Cell::new(None) };
}

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
    /// A plain context (no request blocks): the thread's spare one if there is one, else a new
    /// one.
    pub(crate) fn new(record: bool) -> Arc<Self> {
        if !record && let Some(ctx) = SPARE.try_with(Cell::take).ok().flatten() {
            return ctx;
        }
        Self::with_deferred(record, &[])
    }

    /// Ends the use of `ctx`, the context of an outermost block or of a request that has ended:
    /// if nothing else holds it and every alias it touched is idle (no block, no transaction, no
    /// connection), it is reset to its initial state and becomes the thread's spare context,
    /// which `new` (or `for_request`) hands to the next outermost block (or request) as if new.
    /// Otherwise it is dropped as usual (rolling back what is left, see `AliasCtx`'s drop).
    pub(crate) fn recycle(mut ctx: Arc<Self>) {
        if !ctx.reset() {
            return;
        }
        let spare = if ctx.deferred.is_empty() {
            &SPARE
        } else {
            &REQUEST_SPARE
        };
        // If the thread's locals are being destroyed, the closure is dropped with `ctx`.
        let _ = spare.try_with(move |spare| spare.set(Some(ctx)));
    }

    /// Resets a context that nothing else holds and whose aliases are all idle: each alias is
    /// as new, with the request's block on it entered again (a request's context).
    fn reset(self: &mut Arc<Self>) -> bool {
        let Some(ctx) = Arc::get_mut(self) else {
            return false;
        };
        let registered = crate::config::registry().map_or(0, |r| r.entries.len());
        if ctx.recorder.is_some()
            || (!ctx.deferred.is_empty() && !*ctx.request_ended.get_mut())
            || ctx.aliases.len() != registered
            || !get_mut(&mut ctx.late).is_empty()
            || get_mut(&mut ctx.request_error).is_some()
        {
            // Dropped as it is: a request's blocks that did not end are cancelled.
            return false;
        }
        let deferred = ctx.deferred;
        for (index, slot) in ctx.aliases.iter_mut().enumerate() {
            if let Some(actx) = slot.get_mut()
                && !Arc::get_mut(actx).is_some_and(|a| a.reset(deferred_block(deferred, index)))
            {
                // Dropped: the aliases reset so far end as new ones would.
                return false;
            }
        }
        // A request's context stays marked ended while it is a spare, so that dropping it (the
        // spare replaced, the thread ending) cancels nothing; `for_request` clears the mark.
        *ctx.next_block.get_mut() = deferred.len() as u64 + 1;
        true
    }

    /// The context of one request, with a deferred outermost block on each alias of `aliases`
    /// (registry indices), whose ids are 1, 2, … in that order.
    pub(crate) fn for_request(aliases: &'static [usize]) -> Arc<Self> {
        if let Some(ctx) = REQUEST_SPARE.try_with(Cell::take).ok().flatten()
            && std::ptr::eq(ctx.deferred, aliases)
        {
            ctx.request_ended.store(false, Ordering::Relaxed);
            return ctx;
        }
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

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use crate::{Atomic, Database, Databases};

    fn runtime() -> tokio::runtime::Runtime {
        static INSTALLED: OnceLock<()> = OnceLock::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        INSTALLED.get_or_init(|| {
            let _in_runtime = rt.enter();
            Databases::new()
                .add(
                    "default",
                    Database::connect_lazy("sqlite::memory:").unwrap(),
                )
                .install()
                .unwrap();
        });
        rt
    }

    /// The context the current block runs in.
    fn current() -> *const Context {
        Frame::with_current(|f| Arc::as_ptr(f.ctx())).expect("in a block")
    }

    fn spare() -> Option<*const Context> {
        SPARE.with(|s| {
            let ctx = s.take();
            let ptr = ctx.as_ref().map(Arc::as_ptr);
            s.set(ctx);
            ptr
        })
    }

    async fn select_one() -> Result<(), Error> {
        let db = crate::sqlite("default");
        sqlx::query("SELECT 1").execute(&db).await?;
        Ok(())
    }

    #[test]
    fn an_idle_context_is_reused_by_the_next_outermost_block_as_new() {
        runtime().block_on(async {
            let first = Atomic::new()
                .run(async {
                    select_one().await?;
                    Err::<*const Context, _>(Error::from(sqlx::Error::RowNotFound))
                })
                .await;
            assert!(first.is_err());
            let kept = spare().expect("the failed block left its context idle: it is the spare");
            let second = Atomic::new()
                .durable(true)
                .run(async {
                    // As new: no block left open by the first one (durable would refuse), the
                    // rollback flag clear, and the first query begins a transaction again.
                    assert!(!crate::get_rollback()?);
                    assert_eq!(Frame::with_current(|f| f.innermost(0)), Some(Some(1)));
                    select_one().await?;
                    Ok::<_, Error>(current())
                })
                .await
                .unwrap();
            assert_eq!(second, kept);
            assert_eq!(spare(), Some(kept), "the second block gave it back");
        });
    }

    #[test]
    fn a_context_still_held_is_not_reused() {
        runtime().block_on(async {
            let held = Atomic::new()
                .run(async {
                    select_one().await?;
                    Ok::<_, Error>(Frame::with_current(|f| f.ctx().clone()).unwrap())
                })
                .await
                .unwrap();
            assert_eq!(spare(), None);
            let other = Atomic::new()
                .run(async { Ok::<_, Error>(current()) })
                .await
                .unwrap();
            assert_ne!(other, Arc::as_ptr(&held));
        });
    }
}
