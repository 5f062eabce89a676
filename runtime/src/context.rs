//! The per-task ambient context: for each alias, the transaction state and the task's connection.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::backend::{AnyConn, Backend};
use crate::config::AliasEntry;
use crate::error::{Error, ErrorKind};
use crate::hooks::Hook;
use crate::state::{BlockOpts, Control, TxState};

tokio::task_local! {
    static FRAME: Frame;
}

thread_local! {
    /// A plain context that an outermost block on this thread left idle, kept for the next one
    /// (see `Context::recycle`): three allocations fewer per transaction.
    static SPARE: Cell<Option<Arc<Context>>> = const { Cell::new(None) };
    /// The same for the contexts of requests (see the web layer).
    static REQUEST_SPARE: Cell<Option<Arc<Context>>> = const { Cell::new(None) };
}

/// What a future sees of the context: the task's context and the chain of blocks it runs in.
///
/// Each block runs its body with a frame one link longer, so two branches of one `join!` see
/// different chains; that is how concurrent blocks of one alias in one task are detected (7.4).
///
/// A request's frame (see the web layer) creates its context only when the handler first needs
/// it, so a request that never touches a database allocates nothing for it; its deferred
/// outermost blocks are found below the chain, without a link of their own.
pub(crate) struct Frame {
    /// The task's context: set when the frame is made, except a request's root frame's, which is
    /// made on first use (reading a set cell is one load, as reading an enum's tag would be).
    ctx: OnceLock<Arc<Context>>,
    /// The innermost link, held inline: a task's outermost block allocates no link.
    head: Option<Head>,
    /// The links around `head`, innermost first.
    chain: Option<Arc<Link>>,
}

/// A link of the chain: a block of `alias`, or (`block: None`) an alias whose enclosing block
/// was opted out of (`non_atomic_requests`).
#[derive(Clone, Copy)]
struct Head {
    alias: usize,
    block: Option<u64>,
}

impl Clone for Frame {
    fn clone(&self) -> Self {
        Frame {
            ctx: OnceLock::from(self.ctx().clone()),
            head: self.head,
            chain: self.chain.clone(),
        }
    }
}

struct Link {
    head: Head,
    parent: Option<Arc<Link>>,
}

impl Frame {
    pub(crate) fn root(ctx: Arc<Context>) -> Self {
        Frame {
            ctx: OnceLock::from(ctx),
            head: None,
            chain: None,
        }
    }

    /// The root frame of a request: its context, created on first use, has a deferred outermost
    /// block on each alias configured with `atomic_requests(true)`.
    #[cfg(feature = "tower")]
    pub(crate) fn request() -> Self {
        Frame {
            ctx: OnceLock::new(),
            head: None,
            chain: None,
        }
    }

    /// The task's context, created on first use for a request's frame.
    pub(crate) fn ctx(&self) -> &Arc<Context> {
        self.ctx.get_or_init(|| {
            Context::for_request(crate::config::registry().map_or(&[], |r| &r.request_aliases))
        })
    }

    /// The context, if it was ever created (a request's frame that nothing used has none).
    #[cfg(feature = "tower")]
    #[inline]
    pub(crate) fn into_ctx(self) -> Option<Arc<Context>> {
        self.ctx.into_inner()
    }

    /// The frame a block's body runs in.
    pub(crate) fn child(&self, alias: usize, block: u64) -> Frame {
        self.link(alias, Some(block))
    }

    /// The frame of a handler that opted out of the alias's request block.
    pub(crate) fn opted_out(&self, alias: usize) -> Frame {
        self.link(alias, None)
    }

    fn link(&self, alias: usize, block: Option<u64>) -> Frame {
        Frame {
            ctx: OnceLock::from(self.ctx().clone()),
            head: Some(Head { alias, block }),
            // The old head moves into the chain: only a nested block allocates a link.
            chain: self.head.map(|head| {
                Arc::new(Link {
                    head,
                    parent: self.chain.clone(),
                })
            }),
        }
    }

    /// The innermost block of `alias` this frame runs in.
    pub(crate) fn innermost(&self, alias: usize) -> Option<u64> {
        if let Some(head) = self.head {
            if head.alias == alias {
                return head.block;
            }
            let mut link = self.chain.as_deref();
            while let Some(l) = link {
                if l.head.alias == alias {
                    return l.head.block;
                }
                link = l.parent.as_deref();
            }
        }
        // Below the chain: the request's deferred block on the alias, if any.
        self.ctx().deferred_block(alias)
    }

    pub(crate) fn current() -> Option<Frame> {
        FRAME.try_with(Frame::clone).ok()
    }

    /// Whether the task runs in a frame, without cloning it (nor making a request's context).
    pub(crate) fn is_set() -> bool {
        FRAME.try_with(|_| ()).is_ok()
    }

    /// Calls `f` with the task's frame, if any, without cloning it.
    pub(crate) fn with_current<R>(f: impl FnOnce(&Frame) -> R) -> Option<R> {
        FRAME.try_with(f).ok()
    }

    /// `fut` running in this frame (a nameable future: no `async fn` layer around tokio's).
    pub(crate) fn scope<F: Future>(
        self,
        fut: F,
    ) -> tokio::task::futures::TaskLocalFuture<Frame, F> {
        FRAME.scope(self, fut)
    }
}

/// A statement recorded by [`Scope::record_statements`](crate::Scope::record_statements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedStatement {
    /// The alias it was sent to.
    pub alias: String,
    /// Its SQL text.
    pub sql: String,
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
    pub(crate) recorder: Option<Mutex<Vec<RecordedStatement>>>,
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
            crate::block::cancel_block(&actx, id);
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
            recorder: record.then(|| Mutex::new(Vec::new())),
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
    fn deferred_block(&self, index: usize) -> Option<u64> {
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
            recorder: self.recorder.is_some().then(|| Arc::downgrade(self)),
            state: Mutex::new(state),
            slot: Mutex::new(Slot::default()),
            freed: tokio::sync::Notify::new(),
        })
    }

    pub(crate) fn record(&self, alias: &str, sql: &str) {
        if let Some(r) = &self.recorder {
            lock(r).push(RecordedStatement {
                alias: alias.to_owned(),
                sql: sql.to_owned(),
            });
        }
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

/// Locks a std mutex, ignoring poisoning: our critical sections never leave data half-changed.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A std mutex's data through `&mut`, ignoring poisoning (as `lock`).
fn get_mut<T>(m: &mut Mutex<T>) -> &mut T {
    m.get_mut().unwrap_or_else(PoisonError::into_inner)
}

/// One alias in one task.
pub(crate) struct AliasCtx {
    pub(crate) entry: &'static Arc<AliasEntry>,
    recorder: Option<std::sync::Weak<Context>>,
    pub(crate) state: Mutex<TxState<Hook>>,
    /// The task's connection of the alias, and who holds it. A std mutex, held only for a few
    /// loads and stores: a lease takes the connection out and puts it back when dropped.
    slot: Mutex<Slot>,
    /// Wakes the branches of this task waiting for the slot (`Slot::waiting`).
    freed: tokio::sync::Notify,
}

/// The connection slot of one alias in one task.
#[derive(Default)]
struct Slot {
    /// The connection, when no lease holds it.
    conn: Option<AnyConn>,
    /// The connection was taken idle without the pool's test: the first control statement
    /// sent on it is the test (see `Database::test_with_begin`).
    untested: bool,
    /// A lease holds the slot (and the connection, if any).
    held: bool,
    /// The lease is a result stream's.
    streaming: bool,
    /// Another branch of the task waits for the slot.
    waiting: bool,
    /// The transaction the leased connection was in is gone: close it when the lease ends.
    revoked: bool,
}

impl AliasCtx {
    /// Back to the state of a new alias context, if nothing is open on it (no block, no
    /// transaction, no connection held), with the request's block `deferred` entered again.
    fn reset(&mut self, deferred: Option<u64>) -> bool {
        let slot = get_mut(&mut self.slot);
        let state = get_mut(&mut self.state);
        if slot.held || slot.conn.is_some() || !state.renew(self.entry.db.autocommit) {
            return false;
        }
        *slot = Slot::default();
        deferred.is_none_or(|id| state.enter(id, BlockOpts::default()).is_ok())
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.entry.name
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, TxState<Hook>> {
        lock(&self.state)
    }

    #[cold]
    pub(crate) fn err(&self, kind: ErrorKind) -> Error {
        Error::at(&self.entry.name, kind)
    }

    pub(crate) fn record(&self, sql: &str) {
        if let Some(ctx) = self.recorder.as_ref().and_then(|w| w.upgrade()) {
            ctx.record(&self.entry.name, sql);
        }
    }

    pub(crate) fn recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// Takes the task's connection slot at once; `None` if another branch of this task holds it
    /// (then wait with [`lease`](Self::lease)), and the `Busy` error if a result stream holds it
    /// (waiting would deadlock). The hot paths call this first, so that an uncontended lease
    /// runs no future.
    #[inline]
    pub(crate) fn try_lease(self: &Arc<Self>) -> Option<Result<Lease, Error>> {
        self.take_slot(&mut lock(&self.slot))
    }

    /// What the slot answers now (see `try_lease`), under its lock.
    fn take_slot(self: &Arc<Self>, slot: &mut Slot) -> Option<Result<Lease, Error>> {
        if slot.held {
            return slot.streaming.then(|| Err(self.err(ErrorKind::Busy)));
        }
        slot.held = true;
        Some(Ok(Lease {
            conn: slot.conn.take(),
            untested: slot.untested,
            actx: self.clone(),
            phase: Phase::Idle,
        }))
    }

    /// Takes the task's connection slot, waiting for another branch of this task to finish its
    /// statement; fails fast if a result stream holds it (that would deadlock).
    pub(crate) async fn lease(self: &Arc<Self>) -> Result<Lease, Error> {
        loop {
            let freed = {
                let mut slot = lock(&self.slot);
                if let Some(leased) = self.take_slot(&mut slot) {
                    return leased;
                }
                slot.waiting = true;
                // Made under the lock, before the holder can let go: `notify_waiters` wakes
                // every `Notified` made before it, polled or not, so no wake-up is lost.
                self.freed.notified()
            };
            freed.await;
        }
    }

    /// Gives the connection back (or closes it) when a transaction ended while the slot may be
    /// held elsewhere; used from `Drop`, so it never waits.
    pub(crate) fn release_now(&self, rollback: bool, close: bool) {
        let conn = {
            let mut slot = lock(&self.slot);
            if slot.held {
                slot.revoked = true;
                return;
            }
            slot.conn.take()
        };
        if let Some(mut conn) = conn {
            if rollback {
                if conn.sqlx_depth() > 0 {
                    conn.start_rollback();
                } else {
                    conn.close_on_drop();
                }
            }
            if close {
                conn.close_on_drop();
            }
        }
    }
}

impl Drop for AliasCtx {
    fn drop(&mut self) {
        // The scope ended: an open manual transaction is rolled back (4.2).
        let must_rollback = lock(&self.state).scope_end();
        self.release_now(must_rollback, false);
    }
}

/// What a lease is doing, for what its drop must clean up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    /// A transaction-control statement is in flight: if dropped, the connection's state is unknown.
    Control,
    /// A user statement is in flight: if dropped, its outcome is unknown.
    Query,
    /// A result stream holds the connection.
    Stream,
}

/// Exclusive use of an alias's connection slot within a task.
pub(crate) struct Lease {
    /// The task's connection, taken out of the slot for the lease; put back when it ends.
    conn: Option<AnyConn>,
    /// `Slot::untested`, for the lease.
    untested: bool,
    pub(crate) actx: Arc<AliasCtx>,
    phase: Phase,
}

impl Lease {
    pub(crate) fn set_phase(&mut self, phase: Phase) {
        if (phase == Phase::Stream) != (self.phase == Phase::Stream) {
            lock(&self.actx.slot).streaming = phase == Phase::Stream;
        }
        self.phase = phase;
    }

    /// Fills the lease with a connection from the pool (call it when `!has_conn()`): an idle
    /// one at once when the first statement sent on it tests it (`Database::test_with_begin`).
    /// Not an `ensure_conn` that checks first: the check is the callers' own, so that a lease
    /// that has its connection (the usual case) polls no future for it.
    pub(crate) async fn fill_conn(&mut self) -> Result<(), Error> {
        let db = &self.actx.entry.db;
        if db.test_with_begin
            && let Some(conn) = db.pool.try_acquire()
        {
            self.conn = Some(conn);
            self.untested = true;
            return Ok(());
        }
        self.acquire().await
    }

    /// Takes a connection from the pool, with the pool's checks.
    async fn acquire(&mut self) -> Result<(), Error> {
        let conn = self
            .actx
            .entry
            .db
            .pool
            .acquire()
            .await
            .map_err(|e| Error::from(e).with_alias(self.actx.name()))?;
        self.conn = Some(conn);
        self.untested = false;
        Ok(())
    }

    /// The first control statement on an untested connection failed with `e`: if the connection
    /// is gone, close it and take another with the pool's checks (the caller sends the statement
    /// again); otherwise `e` stands.
    async fn replace_dead(&mut self, e: sqlx::Error) -> Result<(), Error> {
        if !crate::backend::connection_gone(&e) {
            return Err(Error::from(e).with_alias(self.actx.name()));
        }
        tracing::debug!(target: "sqlx_atomic", alias = %self.actx.entry.name, error = %e, "an idle connection failed its first statement; retrying on another connection");
        if let Some(mut dead) = self.conn.take() {
            dead.close_on_drop();
        }
        self.acquire().await
    }

    /// The lease's connection, if it has one.
    pub(crate) fn conn_mut(&mut self) -> Option<&mut AnyConn> {
        self.conn.as_mut()
    }

    pub(crate) fn has_conn(&self) -> bool {
        self.conn.is_some()
    }

    pub(crate) fn typed<DB: Backend>(
        &mut self,
    ) -> Result<&mut sqlx::pool::PoolConnection<DB>, Error> {
        let kind = self.actx.entry.kind;
        self.conn.as_mut().and_then(DB::__conn).ok_or_else(|| {
            self.actx.err(ErrorKind::WrongBackend {
                expected: DB::BACKEND_NAME,
                actual: kind.name(),
            })
        })
    }

    /// Sends control statements in order on the lease's connection, which the callers take
    /// first (`fill_conn`: a query) or find there (an exit); a lease without one lost it, and
    /// nothing is sent. Not filled here: a statement owed to a transaction belongs on its
    /// connection, never on a fresh one.
    pub(crate) async fn send(&mut self, stmts: &[Control]) -> Result<(), Error> {
        if stmts.is_empty() {
            return Ok(());
        }
        if !self.has_conn() {
            return Err(self.actx.err(ErrorKind::ConnectionLost));
        }
        self.set_phase(Phase::Control);
        for &stmt in stmts {
            // A BEGIN with options is written for this transaction; the alias's own BEGIN, if
            // any, otherwise (the two never meet: `TxnOpts::check`).
            let with_options = match stmt {
                Control::Begin(opts) if !opts.is_empty() => opts.begin_sql(self.actx.entry.kind),
                _ => None,
            };
            let begin = with_options
                .as_deref()
                .or(self.actx.entry.db.begin.as_deref());
            let text = crate::backend::ControlText { stmt, begin };
            if tracing::level_enabled!(tracing::Level::DEBUG) {
                debug_control(&self.actx, &text);
            }
            if self.actx.recording() {
                self.actx.record(&text.to_string());
            }
            let conn = self.conn.as_mut().expect("checked above");
            let mut sent = conn.control(stmt, begin).await;
            // The connection was taken idle without a ping: this statement was its test.
            let tested_now = std::mem::take(&mut self.untested);
            if tested_now && let Err(e) = sent {
                // Boxed: the retry is rare, and its futures are not laid out in every send's.
                if let Err(e) = Box::pin(self.retry(e, stmt, begin)).await {
                    self.set_phase(Phase::Idle);
                    return Err(e);
                }
                sent = Ok(());
            }
            if let Err(e) = sent {
                self.set_phase(Phase::Idle);
                return Err(Error::from(e).with_alias(self.actx.name()));
            }
        }
        self.set_phase(Phase::Idle);
        Ok(())
    }

    /// Queues a ROLLBACK of the connection's transaction without waiting for it (sqlx sends it
    /// before the connection is used again); false, queueing nothing, when the lease has no
    /// connection or sqlx sees no transaction on it.
    pub(crate) fn queue_rollback(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut().filter(|c| c.sqlx_depth() > 0) else {
            return false;
        };
        let text = crate::backend::ControlText {
            stmt: Control::Rollback,
            begin: None,
        };
        if tracing::level_enabled!(tracing::Level::DEBUG) {
            debug_control(&self.actx, &text);
        }
        if self.actx.recording() {
            self.actx.record(&text.to_string());
        }
        conn.start_rollback();
        true
    }

    /// `stmt`, the first statement on an untested connection, failed with `e`: sends it again on
    /// a pinged connection if that one is gone.
    async fn retry(
        &mut self,
        e: sqlx::Error,
        stmt: Control,
        begin: Option<&str>,
    ) -> Result<(), Error> {
        self.replace_dead(e).await?;
        let conn = self.conn.as_mut().expect("replaced above");
        conn.control(stmt, begin)
            .await
            .map_err(|e| Error::from(e).with_alias(self.actx.name()))
    }

    /// Takes the connection out of the slot, to give it back to the pool or close it.
    pub(crate) fn take_conn(&mut self) -> Option<AnyConn> {
        self.conn.take()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        match self.phase {
            Phase::Control => {
                if let Some(mut conn) = self.conn.take() {
                    conn.close_on_drop();
                }
                self.actx.state().connection_lost();
            }
            Phase::Query => self.actx.state().query_failed(
                crate::classify::Cause::refused(
                    "a statement was cancelled while in flight".to_owned(),
                ),
                Some(crate::classify::Effect::Statement),
            ),
            Phase::Idle | Phase::Stream => {}
        }
        let (closed, wake) = {
            let mut slot = lock(&self.actx.slot);
            let closed = if std::mem::take(&mut slot.revoked) {
                self.conn.take()
            } else {
                slot.conn = self.conn.take();
                None
            };
            slot.untested = self.untested;
            slot.held = false;
            slot.streaming = false;
            (closed, std::mem::take(&mut slot.waiting))
        };
        if let Some(mut conn) = closed {
            conn.close_on_drop();
        }
        if wake {
            self.actx.freed.notify_waiters();
        }
    }
}

/// A control statement's event, out of line: the code that builds it is not laid out between
/// the instructions of every transaction when no subscriber wants it.
#[cold]
#[inline(never)]
fn debug_control(actx: &AliasCtx, text: &crate::backend::ControlText<'_>) {
    tracing::debug!(
        target: "sqlx_atomic",
        alias = %actx.entry.name,
        depth = actx.state().depth(),
        statement = %text,
        "transaction control"
    );
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;
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
