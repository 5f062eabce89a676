//! The block runner: runs a future as an atomic block, on every exit path.

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tracing::Instrument;

use crate::alias::AliasCtx;
use crate::classify::Cause;
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::exit::Ended;
use crate::frame::Frame;
use crate::hook::Hook;
use crate::options::{Isolation, LockMode, Retry};
use crate::registry::lookup;
use crate::state::{BlockOpts, ExitPlan, Outcome};

/// A result type an atomic block may return: `Result<T, E>` with `E: From<sqlx_atomic::Error>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Result<T, E>` whose error type `E` implements `From<sqlx_atomic::Error>`",
    label = "an atomic block must return `Result<T, E>` with `E: From<sqlx_atomic::Error>`",
    note = "add `impl From<sqlx_atomic::Error> for YourError`, or return `Result<T, sqlx_atomic::Error>`"
)]
pub trait AtomicResult: Sized {
    #[doc(hidden)]
    fn __is_ok(&self) -> bool;
    #[doc(hidden)]
    fn __from_error(e: Error) -> Self;
}

/// The check `#[atomic]` makes that the function's return type is an [`AtomicResult`]. Public at
/// the crate's root so that a failing check names it by this path, which says what went wrong.
#[doc(hidden)]
pub fn atomic_fn_returns_result<R: AtomicResult>() {}

// Not recommended in diagnostics: a wrong error type is then reported with the trait's own
// message (what to implement) instead of this impl and its unmet bound.
#[diagnostic::do_not_recommend]
impl<T, E: From<Error>> AtomicResult for Result<T, E> {
    fn __is_ok(&self) -> bool {
        self.is_ok()
    }
    fn __from_error(e: Error) -> Self {
        Err(E::from(e))
    }
}

/// An atomic block: the function form of `#[atomic]` (Django's `with transaction.atomic(...)`).
///
/// The outermost block on an alias runs in a transaction; a nested one in a savepoint (unless
/// `savepoint(false)`). `Ok` commits or releases; `Err`, a panic, `set_rollback(true)` or
/// dropping the future rolls back. `docs/semantics.md` has the exact rules.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// # sqlx_atomic::Databases::new().add("default", sqlx_atomic::Database::connect_lazy("sqlite::memory:")?).install()?;
/// use sqlx_atomic::{sqlite, Atomic, Error};
/// let db = sqlite("default");
/// Atomic::new()
///     .run(async {
///         sqlx::query("CREATE TABLE t (x INTEGER)").execute(&db).await?;
///         sqlx::query("INSERT INTO t VALUES (1)").execute(&db).await?;
///         // A nested block: a savepoint. Its failure undoes only its own work.
///         let inner: Result<(), Error> = Atomic::new()
///             .run(async {
///                 sqlx::query("INSERT INTO t VALUES (2)").execute(&db).await?;
///                 Err(Error::from(sqlx::Error::RowNotFound))
///             })
///             .await;
///         assert!(inner.is_err());
///         Ok::<_, Error>(())
///     })
///     .await?;
/// let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(&db).await?;
/// assert_eq!(n, 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Atomic {
    alias: Cow<'static, str>,
    opts: BlockOpts,
}

impl Default for Atomic {
    fn default() -> Self {
        Self::new()
    }
}

impl Atomic {
    /// A block on alias `"default"`, with a savepoint when nested.
    pub fn new() -> Self {
        Atomic {
            alias: Cow::Borrowed("default"),
            opts: BlockOpts::default(),
        }
    }

    /// The alias whose database the block manages.
    pub fn using(mut self, alias: impl Into<Cow<'static, str>>) -> Self {
        self.alias = alias.into();
        self
    }

    /// `false`: when nested, make no savepoint; a failure then dooms the enclosing block.
    pub fn savepoint(mut self, savepoint: bool) -> Self {
        self.opts.savepoint = savepoint;
        self
    }

    /// `true`: refuse to run nested inside another block of the alias (1.8).
    pub fn durable(mut self, durable: bool) -> Self {
        self.opts.durable = durable;
        self
    }

    /// The transaction's isolation level; see [`Isolation`] for what each backend is sent.
    ///
    /// Like every transaction option, it belongs to the outermost block: a nested block must
    /// give the same level or none ([`ErrorKind::OptionMismatch`]).
    pub fn isolation(mut self, level: Isolation) -> Self {
        self.opts.txn.isolation = Some(level);
        self
    }

    /// `true`: a read-only transaction (`BEGIN READ ONLY` on PostgreSQL, `START TRANSACTION READ
    /// ONLY` on MySQL/MariaDB, in the same round trip as the BEGIN); the server refuses its
    /// writes. SQLite has no read-only transactions: there the block fails with
    /// [`ErrorKind::Unsupported`] before anything is sent.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.opts.txn.read_only = Some(read_only);
        self
    }

    /// SQLite's lock mode ([`LockMode`]): `BEGIN IMMEDIATE` or `BEGIN EXCLUSIVE` instead of the
    /// deferred default. PostgreSQL and MySQL/MariaDB refuse it ([`ErrorKind::Unsupported`]).
    pub fn lock(mut self, mode: LockMode) -> Self {
        self.opts.txn.lock = Some(mode);
        self
    }

    /// A deadline for the transaction. When it passes, the body is cancelled, the connection
    /// closed (the server rolls the transaction back) and the block fails with
    /// [`ErrorKind::TimedOut`]. On PostgreSQL the BEGIN also sets `statement_timeout` and
    /// `lock_timeout` for the transaction (`SET LOCAL`, same round trip), so the server stops a
    /// statement that outlives it; MySQL/MariaDB and SQLite have no transaction-scoped
    /// timeout, so there the deadline is the client's alone. Needs a tokio runtime with timers.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.opts.txn.timeout = Some(timeout);
        self
    }

    /// Runs the block again, as a new transaction, when an attempt fails with a conflict that
    /// the server rolled back: a serialization failure (PostgreSQL 40001), a deadlock
    /// (PostgreSQL 40P01, MySQL/MariaDB 1213, a Galera certification failure), a lock wait
    /// timeout that rolled the transaction back (MySQL/MariaDB 1205 with
    /// `innodb_rollback_on_timeout`), or SQLite's busy errors. `retry` is a count of retries
    /// after the first attempt, or a [`Retry`] with its backoff.
    ///
    /// The body is made anew for each attempt, so the retried form takes a closure; a failed
    /// attempt's on_commit hooks are dropped with it. Any other error is returned at once, and
    /// so is a COMMIT whose outcome is unknown ([`ErrorKind::CommitUnknown`]). When the last
    /// attempt fails with a conflict too, the block fails with
    /// [`ErrorKind::RetriesExhausted`], which counts the attempts. Only an outermost block can
    /// be retried: nested in another block of the alias, or in a per-request transaction, it
    /// fails with [`ErrorKind::RetryNested`] before anything is sent (for a request, opt the
    /// handler out with `#[non_atomic_requests]` and retry a block inside it). Needs a tokio
    /// runtime with timers.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
    /// # sqlx_atomic::Databases::new().add("default", sqlx_atomic::Database::connect_lazy("sqlite::memory:")?).install()?;
    /// use sqlx_atomic::{sqlite, Atomic, Error, LockMode};
    /// let db = sqlite("default");
    /// let n: i64 = Atomic::new()
    ///     .lock(LockMode::Immediate)
    ///     .retry(5)
    ///     .run(|| async {
    ///         sqlx::query_scalar("SELECT 41 + 1").fetch_one(&db).await.map_err(Error::from)
    ///     })
    ///     .await?;
    /// assert_eq!(n, 42);
    /// # Ok(()) }
    /// ```
    pub fn retry(mut self, retry: impl Into<Retry>) -> AtomicRetry {
        self.opts.retry = true;
        AtomicRetry {
            atomic: self,
            retry: retry.into(),
        }
    }

    #[doc(hidden)]
    pub fn __test_block(mut self) -> Self {
        self.opts.test = true;
        self
    }

    /// Runs `body` as the block and returns its result, after the commit or rollback.
    pub fn run<F, R>(self, body: F) -> impl Future<Output = R>
    where
        F: Future<Output = R>,
        R: AtomicResult,
    {
        let attempt = self.attempt(body);
        async move { attempt.await.0 }
    }

    /// Runs `body` as the block: its result, and the conflict that kept an outermost block from
    /// committing, if one did.
    fn attempt<F, R>(self, body: F) -> impl Future<Output = (R, Option<Cause>)>
    where
        F: Future<Output = R>,
        R: AtomicResult,
    {
        // Boxed at once, so that nested blocks do not build one huge future (debug builds would
        // overflow the stack).
        let body = Box::pin(body);
        async move {
            match Frame::current() {
                Some(frame) => self.run_in(frame, body).await,
                // The outermost block of the task: its context lives as long as the block. Only
                // the body runs in a task-local scope (with the block's frame); the block's own
                // entry and exit do not read it, so they are not wrapped in a second one.
                None => self.run_in(Frame::root(Context::new(false)), body).await,
            }
        }
    }

    async fn run_in<F, R>(self, frame: Frame, body: std::pin::Pin<Box<F>>) -> (R, Option<Cause>)
    where
        F: Future<Output = R>,
        R: AtomicResult,
    {
        let Entered {
            actx,
            id,
            depth,
            first,
            frame: body_frame,
            span,
        } = match self.enter(&frame) {
            Ok(e) => e,
            Err(e) => return (R::__from_error(e), None),
        };
        let mut guard = Armed {
            actx: &actx,
            id,
            armed: true,
        };
        let body = AssertUnwindSafe(body).catch_unwind();
        // A span no subscriber wants is not entered and left at every poll of the body.
        let body = async move {
            match span {
                None => body_frame.scope(body).await,
                Some(span) => body_frame.scope(body.instrument(span)).await,
            }
        };
        // The transaction's deadline is its first block's.
        let outcome = match self.opts.txn.timeout.filter(|_| first) {
            None => body.await,
            Some(limit) => match tokio::time::timeout(limit, body).await {
                Ok(outcome) => outcome,
                Err(_) => Ok(R::__from_error(timed_out(&actx, limit, depth == 1))),
            },
        };
        guard.armed = false;
        let body_ok = matches!(&outcome, Ok(r) if r.__is_ok());
        // All of the block's work is in `end_block`, polled through one function that is not
        // inlined: its code is compiled once, shared by the blocks of every result type.
        let mut end = std::pin::pin!(end_block(&actx, id, depth, body_ok));
        let ended = std::future::poll_fn(|cx| poll_shared(end.as_mut(), cx)).await;
        (resolve(outcome, ended.error), ended.conflict)
    }

    /// Enters the block in `frame`'s context: everything before the body runs that does not
    /// depend on the body's type (one function for all blocks).
    fn enter(&self, frame: &Frame) -> Result<Entered, Error> {
        let entry = lookup(&self.alias)?;
        let actx = frame.ctx().alias(entry);
        let id = frame.ctx().next_block_id();
        let (depth, first) = {
            let mut st = actx.state();
            if frame.innermost(entry.index) != st.top_block() {
                return Err(actx.err(ErrorKind::ConcurrentBlocks));
            }
            self.opts
                .txn
                .check(entry.kind, entry.db.begin.is_some())
                .map_err(|k| actx.err(k))?;
            st.enter(id, self.opts).map_err(|k| actx.err(k))?;
            (st.depth(), st.innermost_is_first())
        };
        tracing::trace!(target: "sqlx_atomic", alias = %entry.name, depth, "atomic block entered");
        // A span no subscriber wants is not entered and left at every poll of the body.
        let span =
            Some(tracing::debug_span!(target: "sqlx_atomic", "atomic", alias = %entry.name, depth))
                .filter(|s| !s.is_disabled());
        Ok(Entered {
            frame: frame.child(entry.index, id),
            actx,
            id,
            depth,
            first,
            span,
        })
    }
}

/// A block just entered: its alias context, id and depth, whether it is its transaction's first
/// block, the frame its body runs in, and its span when some subscriber wants it.
struct Entered {
    actx: Arc<AliasCtx>,
    id: u64,
    depth: usize,
    /// The first real block of its transaction (see `TxState::innermost_is_first`).
    first: bool,
    frame: Frame,
    span: Option<tracing::Span>,
}

/// Leaves the block in failure if its future is dropped before the body finished (7.1).
struct Armed<'a> {
    actx: &'a Arc<AliasCtx>,
    id: u64,
    armed: bool,
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.actx.cancel_block(self.id);
        }
    }
}

/// Polls `fut` out of line, so that a non-generic future awaited from generic ones is compiled
/// once rather than into each of them.
#[inline(never)]
fn poll_shared<F: Future>(
    fut: std::pin::Pin<&mut F>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<F::Output> {
    fut.poll(cx)
}

/// The block's deadline passed and its body was dropped. An outermost block's connection is
/// closed, so that the server rolls the transaction back even if a statement was still running,
/// and the transaction is treated as lost. Inside a test helper's transaction (`close` false),
/// which must live on, the block leaves in failure as a cancelled block does: back to its
/// savepoint.
fn timed_out(actx: &Arc<AliasCtx>, limit: Duration, close: bool) -> Error {
    if close {
        actx.state().connection_lost();
        actx.release_now(false, true);
    }
    tracing::warn!(target: "sqlx_atomic", alias = %actx.name(), timeout = ?limit, "atomic block timed out; rolled back");
    actx.err(ErrorKind::TimedOut(limit))
}

/// Runs a block again after each attempt that failed with a conflict: the retried form of
/// [`Atomic`], made by [`Atomic::retry`].
#[derive(Debug, Clone)]
pub struct AtomicRetry {
    atomic: Atomic,
    retry: Retry,
}

impl AtomicRetry {
    /// Runs the block: `body` makes each attempt's future. Returns the result of the attempt
    /// that committed, or that failed with anything but a conflict, or
    /// [`ErrorKind::RetriesExhausted`].
    pub async fn run<F, Fut, R>(self, mut body: F) -> R
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = R>,
        R: AtomicResult,
    {
        let mut attempts = self.__attempts();
        loop {
            if let ControlFlow::Break(out) = attempts.attempt(body()).await {
                return out;
            }
        }
    }

    /// The attempts, one at a time: what `#[atomic(retry = ..)]` expands to, so that each
    /// attempt's body can borrow the function's arguments.
    #[doc(hidden)]
    pub fn __attempts(self) -> Attempts {
        Attempts {
            atomic: self.atomic,
            retry: self.retry,
            made: 0,
        }
    }
}

/// The attempts of a retried block (see [`AtomicRetry`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct Attempts {
    atomic: Atomic,
    retry: Retry,
    made: u32,
}

impl Attempts {
    /// Runs one attempt: `Break` with the block's result, or `Continue` (after the backoff)
    /// when it failed with a conflict and another attempt may follow.
    pub async fn attempt<F, R>(&mut self, body: F) -> ControlFlow<R>
    where
        F: Future<Output = R>,
        R: AtomicResult,
    {
        self.made += 1;
        let (out, conflict) = self.atomic.clone().attempt(body).await;
        let Some(cause) = conflict else {
            return ControlFlow::Break(out);
        };
        let alias = self.atomic.alias.as_ref();
        if self.made > self.retry.retries() {
            let attempts = self.made;
            tracing::warn!(target: "sqlx_atomic", alias, attempts, error = %cause, "atomic block gave up after a conflict");
            return ControlFlow::Break(R::__from_error(Error::named(
                alias,
                ErrorKind::RetriesExhausted { attempts, cause },
            )));
        }
        let delay = self.retry.delay(self.made, random());
        tracing::debug!(target: "sqlx_atomic", alias, attempt = self.made, ?delay, error = %cause, "atomic block failed with a conflict; running it again");
        tokio::time::sleep(delay).await;
        ControlFlow::Continue(())
    }
}

/// A random number for the backoff's jitter: the standard library's randomly keyed hasher,
/// keyed anew for each call.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

/// Leaves block `id` after its body finished (`body_ok`: with `Ok`): sends what the exit owes,
/// gives the connection back when the transaction ended and runs the committed hooks.
pub(crate) async fn end_block(actx: &Arc<AliasCtx>, id: u64, depth: usize, body_ok: bool) -> Ended {
    match plan_exit(actx, id, depth, body_ok) {
        Ok(plan) => crate::exit::execute(actx, plan, body_ok).await,
        Err(ended) => ended,
    }
}

/// Leaves a request's block (docs/semantics.md §8.3) as [`end_block`] leaves an outermost block,
/// except for the hooks: those of a transaction that committed are handed back, not run, so that
/// the request layer runs them under its own rule for failures. A transaction that did not
/// commit hands back none.
#[cfg(feature = "tower")]
pub(crate) async fn end_request_block(actx: &Arc<AliasCtx>, id: u64) -> (Ended, Vec<Hook>) {
    let plan = match plan_exit(actx, id, 1, true) {
        Ok(plan) => plan,
        Err(ended) => return (ended, Vec::new()),
    };
    // A committing plan has no error of its own: an error is the COMMIT's (1.7, 5.5), and then
    // no hook is handed back.
    crate::exit::execute_keeping_hooks(actx, plan, true).await
}

/// The plan of block `id`'s exit when it ends its transaction; otherwise the block is left here
/// and its outcome is the `Err`.
fn plan_exit(
    actx: &Arc<AliasCtx>,
    id: u64,
    depth: usize,
    body_ok: bool,
) -> Result<ExitPlan<Hook>, Ended> {
    let planned = actx.state().exit(
        id,
        if body_ok {
            Outcome::Ok
        } else {
            Outcome::Failed
        },
    );
    let plan = match planned {
        Ok(p) => p,
        Err(k) => return Err(Ended::failed(actx.err(k))),
    };
    if !plan.ends_transaction {
        tracing::trace!(target: "sqlx_atomic", alias = %actx.name(), depth, ok = body_ok, "atomic block left");
        return Err(Ended {
            error: plan.error.map(|k| actx.err(k)),
            conflict: None,
        });
    }
    Ok(plan)
}

/// The caller's result: a panic resumes, the body's `Err` wins over ours (1.5), and our error
/// replaces an `Ok`.
fn resolve<R: AtomicResult>(
    outcome: Result<R, Box<dyn std::any::Any + Send>>,
    error: Option<Error>,
) -> R {
    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(r) if !r.__is_ok() => r,
        Ok(r) => match error {
            Some(e) => R::__from_error(e),
            None => r,
        },
    }
}
