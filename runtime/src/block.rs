//! The block runner: runs a future as an atomic block, on every exit path.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tracing::Instrument;

use crate::config::lookup;
use crate::context::{AliasCtx, Context, Frame, Lease};
use crate::error::{Error, ErrorKind};
use crate::hooks::run_hooks;
use crate::state::{BlockOpts, Control, Outcome};

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
/// dropping the future rolls back. See SEMANTICS.md for the exact rules.
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
        // Boxed at once, so that nested blocks do not build one huge future (debug builds would
        // overflow the stack).
        let body = Box::pin(body);
        async move {
            match Frame::current() {
                Some(frame) => self.run_in(frame, body).await,
                // The outermost block of the task: its context lives as long as the block. Only
                // the body runs in a task-local scope (with the block's frame); the block's own
                // entry and exit do not read it, so they are not wrapped in a second one.
                // Its context is the thread's spare one when there is one, and becomes it again
                // when the block leaves it idle.
                None => {
                    let ctx = Context::new(false);
                    let out = self.run_in(Frame::root(ctx.clone()), body).await;
                    Context::recycle(ctx);
                    out
                }
            }
        }
    }

    async fn run_in<F, R>(self, frame: Frame, body: std::pin::Pin<Box<F>>) -> R
    where
        F: Future<Output = R>,
        R: AtomicResult,
    {
        let Entered {
            actx,
            id,
            depth,
            frame: body_frame,
            span,
        } = match self.enter(&frame) {
            Ok(e) => e,
            Err(e) => return R::__from_error(e),
        };
        let mut guard = Armed {
            actx: &actx,
            id,
            armed: true,
        };
        let body = AssertUnwindSafe(body).catch_unwind();
        // A span no subscriber wants is not entered and left at every poll of the body.
        let outcome = match span {
            None => body_frame.scope(body).await,
            Some(span) => body_frame.scope(body.instrument(span)).await,
        };
        guard.armed = false;
        let body_ok = matches!(&outcome, Ok(r) if r.__is_ok());
        // All of the block's work is in `end_block`, polled through one function that is not
        // inlined: its code is compiled once, shared by the blocks of every result type.
        let mut end = std::pin::pin!(end_block(&actx, id, depth, body_ok));
        let error = std::future::poll_fn(|cx| poll_shared(end.as_mut(), cx)).await;
        resolve(outcome, error)
    }

    /// Enters the block in `frame`'s context: everything before the body runs that does not
    /// depend on the body's type (one function for all blocks).
    fn enter(&self, frame: &Frame) -> Result<Entered, Error> {
        let entry = lookup(&self.alias)?;
        let actx = frame.ctx().alias(entry);
        let id = frame.ctx().next_block_id();
        let depth = {
            let mut st = actx.state();
            if frame.innermost(entry.index) != st.top_block() {
                return Err(actx.err(ErrorKind::ConcurrentBlocks));
            }
            st.enter(id, self.opts).map_err(|k| actx.err(k))?;
            st.depth()
        };
        // Not even built when DEBUG is off for every subscriber (the usual production setting).
        let span = if tracing::level_enabled!(tracing::Level::DEBUG) {
            entered_span(&entry.name, depth)
        } else {
            None
        };
        Ok(Entered {
            frame: frame.child(entry.index, id),
            actx,
            id,
            depth,
            span,
        })
    }
}

/// A block just entered: its alias context, id and depth, the frame its body runs in, and its
/// span when some subscriber wants it.
struct Entered {
    actx: Arc<AliasCtx>,
    id: u64,
    depth: usize,
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
            cancel_block(self.actx, self.id);
        }
    }
}

/// Leaves block `id` in failure without waiting, because its future was dropped (7.1): blocks
/// opened inside it whose own guards have not run yet go first; an ended transaction's connection
/// is rolled back or closed in the background.
pub(crate) fn cancel_block(actx: &Arc<AliasCtx>, id: u64) {
    let plan = {
        let mut st = actx.state();
        while let Some(top) = st.top_block() {
            if top == id {
                break;
            }
            let _ = st.exit(top, Outcome::Failed);
        }
        st.exit(id, Outcome::Failed)
    };
    tracing::debug!(target: "sqlx_atomic", alias = %actx.name(), "atomic block cancelled");
    if let Ok(plan) = plan
        && plan.ends_transaction
    {
        let rollback = plan.stmts.contains(&Control::Rollback);
        actx.release_now(rollback, plan.close_connection);
    }
}

/// Rolls back (without waiting) a transaction whose exit was cut short by cancellation.
struct ExitGuard<'a> {
    actx: &'a Arc<AliasCtx>,
    armed: bool,
}

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.actx.release_now(true, false);
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

/// Leaves block `id` after its body finished (`body_ok`: with `Ok`): sends what the exit owes,
/// gives the connection back when the transaction ended and runs the committed hooks. Returns
/// the error the block fails with, if any.
pub(crate) async fn end_block(
    actx: &Arc<AliasCtx>,
    id: u64,
    depth: usize,
    body_ok: bool,
) -> Option<Error> {
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
        Err(k) => return Some(actx.err(k)),
    };
    if !plan.ends_transaction {
        if tracing::level_enabled!(tracing::Level::TRACE) {
            trace_left(actx, depth, body_ok);
        }
        return plan.error.map(|k| actx.err(k));
    }
    let error = plan.error.map(|k| actx.err(k));
    if !plan.stmts.is_empty() || plan.close_connection {
        let mut exit_guard = ExitGuard { actx, armed: true };
        let leased = match actx.try_lease() {
            // Only a result stream's hold refuses at once.
            Some(Err(_)) => {
                exit_guard.armed = false;
                return Some(stream_outlived_block(actx));
            }
            Some(leased) => leased,
            None => actx.lease().await,
        };
        let mut lease = match leased {
            Ok(l) => l,
            Err(e) => return Some(e),
        };
        exit_guard.armed = false;
        let mut close = plan.close_connection;
        if lease.has_conn()
            && let Err(e) = lease.send(&plan.stmts).await
        {
            if plan.stmts.contains(&Control::Commit) {
                // 1.7: the commit failed; roll back, or close the connection.
                return Some(commit_failed(lease, e).await);
            }
            rollback_failed(actx, &e);
            close = true;
        }
        if let Some(mut conn) = lease.take_conn()
            && close
        {
            conn.close_on_drop();
        }
        drop(lease);
    } else {
        // Nothing to send (the block never queried); a connection may still be held if the
        // block only prepared one.
        actx.release_now(false, false);
    }
    if tracing::level_enabled!(tracing::Level::DEBUG) {
        debug_ended(actx, !plan.hooks.is_empty() || (body_ok && error.is_none()));
    }
    if error.is_none()
        && body_ok
        && !plan.hooks.is_empty()
        && let Err(e) = run_hooks(actx.name(), plan.hooks).await
    {
        return Some(e);
    }
    error
}

// The events of every block, out of line: the code that builds them is not laid out between
// the instructions a block runs when no subscriber wants them.

/// The block's event and span, when a subscriber wants DEBUG.
#[cold]
#[inline(never)]
fn entered_span(alias: &str, depth: usize) -> Option<tracing::Span> {
    tracing::trace!(target: "sqlx_atomic", alias, depth, "atomic block entered");
    Some(tracing::debug_span!(target: "sqlx_atomic", "atomic", alias, depth))
        .filter(|s| !s.is_disabled())
}

#[cold]
#[inline(never)]
fn trace_left(actx: &AliasCtx, depth: usize, ok: bool) {
    tracing::trace!(target: "sqlx_atomic", alias = %actx.name(), depth, ok, "atomic block left");
}

#[cold]
#[inline(never)]
fn debug_ended(actx: &AliasCtx, committed: bool) {
    tracing::debug!(target: "sqlx_atomic", alias = %actx.name(), committed, "transaction ended");
}

/// A result stream still held the connection when its transaction ended.
#[cold]
#[inline(never)]
fn stream_outlived_block(actx: &Arc<AliasCtx>) -> Error {
    actx.release_now(true, true);
    actx.err(ErrorKind::StreamOutlivedBlock)
}

/// 1.7: the COMMIT failed: roll back, or close the connection if that fails too.
async fn commit_failed(mut lease: Lease, e: Error) -> Error {
    let close = lease.send(&[Control::Rollback]).await.is_err();
    tracing::warn!(target: "sqlx_atomic", alias = %lease.actx.name(), error = %e, "COMMIT failed; rolled back");
    if let Some(mut conn) = lease.take_conn()
        && close
    {
        conn.close_on_drop();
    }
    e
}

/// 1.5: a failed rollback is logged and the connection closed.
#[cold]
#[inline(never)]
fn rollback_failed(actx: &Arc<AliasCtx>, e: &Error) {
    tracing::error!(target: "sqlx_atomic", alias = %actx.name(), error = %e, "ROLLBACK failed; closing the connection");
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
