//! Test helpers (feature `testing`): test bodies in transactions that are always rolled back, and
//! capturing on_commit hooks, like Django's `TestCase` and `captureOnCommitCallbacks`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
//! # sqlx_atomic::Databases::new().add("default", sqlx_atomic::Database::connect_lazy("sqlite:file:testing_doc?mode=memory&cache=shared")?).install()?;
//! use sqlx_atomic::{on_commit, sqlite, testing};
//! let db = sqlite("default");
//! sqlx::query("CREATE TABLE t (x INTEGER)").execute(&db).await?;
//! testing::rollback_after(["default"], async {
//!     sqlx::query("INSERT INTO t VALUES (1)").execute(&db).await?;
//!     let (_, hooks) = testing::capture_on_commit("default", false, async {
//!         on_commit(|| println!("email sent")).name("email").await
//!     })
//!     .await;
//!     assert_eq!(hooks.names(), ["email"]);
//!     Ok::<_, sqlx_atomic::Error>(())
//! })
//! .await?;
//! // Everything the body wrote is gone.
//! let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(&db).await?;
//! assert_eq!(n, 0);
//! # Ok(()) }
//! ```
//!
//! # `#[sqlx_atomic::test]`
//!
//! The attribute does all of the above for a whole test: it runs an `async fn` test in
//! [`rollback_after`] transactions on its aliases, on one tokio runtime shared by the tests of
//! the binary ([`block_on`]), after installing the databases named by the environment
//! ([`ensure_installed`]) if nothing is installed yet:
//!
//! ```ignore
//! // DATABASE_URL=postgres://localhost/app_test cargo test
//! #[sqlx_atomic::test]
//! async fn placing_an_order_writes_it() -> Result<(), sqlx_atomic::Error> {
//!     let id = place_order("book").await?;
//!     let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE id = $1")
//!         .bind(id)
//!         .fetch_one(sqlx_atomic::postgres("default"))
//!         .await?;
//!     assert_eq!(n, 1);
//!     Ok(()) // and the order is rolled back
//! }
//! ```
//!
//! Why one shared runtime rather than `#[tokio::test]`'s runtime per test: the installed
//! databases and their sqlx pools are process-wide, and a pooled PostgreSQL or MySQL connection
//! is tied to the runtime that opened it. With a runtime per test, a connection opened by one test
//! goes back to the pool, the test's runtime shuts down, and the connection is dead for the next
//! test that picks it up: sqlx's default check before handing out an idle connection
//! (`test_before_acquire`) usually notices and reconnects, at the cost of a new connection per
//! test; without that check, or when the shutdown lands at the wrong moment, the query fails with
//! "A Tokio 1.x context was found, but it is being shutdown". The pools' own maintenance tasks
//! also run on the runtime that created them. Written above `#[tokio::test]`, the attribute keeps
//! that attribute and its runtime, and only wraps the body; such tests should use aliases of
//! their own (SQLite connections are not tied to a runtime).
//!
//! Databases configured in code are installed by a `setup` function given to the attribute
//! (`#[sqlx_atomic::test(setup = path)]`), which is awaited before the aliases are looked up;
//! installing them from the body is too late, as the transactions look up their aliases before
//! the body runs. See the attribute's documentation for the details.

pub use crate::restore::*;

use crate::block::Atomic;
use crate::context::Context;
use crate::error::{Error, ErrorKind};
use crate::frame::Frame;
use crate::hook::Hook;
use crate::on_commit::run_hooks;
use crate::registry::{Databases, installed_aliases, is_installed, lookup};
use std::borrow::Cow;
use std::sync::{LazyLock, Mutex, PoisonError};

/// The runtime of [`block_on`]: one per process, never shut down.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sqlx-atomic-test")
        .build()
        .expect("sqlx_atomic::testing: cannot build the shared test runtime")
});

/// Runs `future` to completion on the test runtime: one multi-thread tokio runtime for the whole
/// process, created on first use and shared by every caller, which `#[sqlx_atomic::test]` runs
/// its tests on.
///
/// The future itself runs on the calling thread (so a panic in it unwinds there, and a test
/// fails with the panic's own message); the tasks it spawns, and the I/O and timers of the
/// connections it opens, run on the runtime's worker threads, which outlive the call. That is the
/// point of sharing it: the installed databases and their pools are process-wide, and a pooled
/// PostgreSQL or MySQL connection only works while the runtime that opened it runs, so a
/// connection opened by one test stays usable by the next. With `#[tokio::test]`, each test has a
/// runtime of its own that ends with it, and a connection it gave back to the pool is dead for
/// whichever test picks it up next (see the [module documentation](self)).
///
/// The future is boxed, so a large one does not use up the test thread's stack. Like tokio's
/// `Runtime::block_on`, it panics when called from inside an async context (a `#[tokio::test]`,
/// a task): await the future there instead.
///
/// ```
/// # fn main() -> Result<(), sqlx_atomic::Error> {
/// use sqlx_atomic::{Database, Databases, testing};
/// let n = testing::block_on(async {
///     Databases::new().add("default", Database::connect_lazy("sqlite::memory:")?).install()?;
///     let db = sqlx_atomic::sqlite("default");
///     sqlx::query_scalar::<_, i64>("SELECT 41 + 1").fetch_one(&db).await.map_err(sqlx_atomic::Error::from)
/// })?;
/// assert_eq!(n, 42);
/// // The pool's connection is still usable from the next call.
/// let m: i64 = testing::block_on(async {
///     sqlx::query_scalar("SELECT 1").fetch_one(&sqlx_atomic::sqlite("default")).await
/// })?;
/// assert_eq!(m, 1);
/// # Ok(()) }
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.block_on(Box::pin(future))
}

/// Serialises [`ensure_installed`], so that tests starting together build one set of pools.
static INSTALLING: Mutex<()> = Mutex::new(());

/// Installs [`Databases::from_env`] (`DATABASE_URL` for the alias `"default"`,
/// `DATABASE_URL_<ALIAS>` for the others) unless databases are installed already, which is what
/// `#[sqlx_atomic::test]` does before each test.
///
/// Does nothing when databases are installed (by anyone, in code or from the environment), or when
/// the environment names no database; check [`is_installed`] afterwards if
/// that matters. Safe to call from many tests at once: one of them installs, and the others,
/// including code that installs its own databases at the same moment, find them installed. Fails
/// when a URL of the environment is invalid. Must be called inside a tokio runtime, which the
/// pools are created on.
///
/// ```
/// # fn main() -> Result<(), sqlx_atomic::Error> {
/// use sqlx_atomic::{Database, Databases, testing};
/// testing::block_on(async {
///     Databases::new().add("default", Database::connect_lazy("sqlite::memory:")?).install()?;
///     // Installed in code: the environment is not read.
///     testing::ensure_installed()?;
///     assert_eq!(sqlx_atomic::installed_aliases(), ["default"]);
///     Ok(())
/// })
/// # }
/// ```
pub fn ensure_installed() -> Result<(), Error> {
    if is_installed() {
        return Ok(());
    }
    let _installing = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);
    if is_installed() {
        return Ok(());
    }
    let databases = Databases::from_env()?;
    if databases.aliases().next().is_none() {
        return Ok(());
    }
    match databases.install() {
        // Installed by code that does not go through this function, since we looked.
        Err(e) if matches!(e.kind(), ErrorKind::AlreadyInstalled) && is_installed() => Ok(()),
        result => result,
    }
}

/// `#[sqlx_atomic::test]`: the future of the test's `setup` function, which must be an
/// `async fn()` returning `()`.
#[doc(hidden)]
pub fn __setup<F, Fut>(setup: F) -> Fut
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    setup()
}

/// `#[sqlx_atomic::test]`: installs the databases of the environment if nothing is installed,
/// then checks that every alias of the test is installed, failing the test with what to do if not.
#[doc(hidden)]
pub fn __prepare(aliases: &[&str]) {
    const ATTR: &str = "#[sqlx_atomic::test]";
    if let Err(e) = ensure_installed() {
        panic!(
            "{ATTR}: cannot install the databases named by the environment (DATABASE_URL, \
             DATABASE_URL_<ALIAS>): {e}"
        );
    }
    if !is_installed() {
        panic!(
            "{ATTR}: no databases are installed. Set DATABASE_URL (the alias \"default\") and \
             DATABASE_URL_<ALIAS> for other aliases, or install them in code in a setup function \
             given to the attribute: #[sqlx_atomic::test(setup = path::to::setup)]"
        );
    }
    for &alias in aliases {
        if lookup(alias).is_err() {
            let var = match alias {
                "default" => "DATABASE_URL".to_owned(),
                other => format!("DATABASE_URL_{}", other.to_ascii_uppercase()),
            };
            panic!(
                "{ATTR}: the database alias `{alias}` is not installed (installed: {}). Set {var} \
                 before the first test runs, or add the alias to the databases your setup \
                 function installs",
                installed_aliases().join(", ")
            );
        }
    }
}

/// Runs `body` inside an outermost transaction on each alias that is always rolled back at the
/// end, whatever the body returns and if it panics (docs/semantics.md §10.1). Inside it, `#[atomic]` blocks
/// nest as savepoints and `durable` blocks are allowed. Nothing the body writes is visible to
/// other connections or left behind.
///
/// The body may return anything; a panic is propagated after the rollback.
///
/// Started outside any block (as `#[sqlx_atomic::test]` does), the body runs on `aliases` only:
/// a query through the ambient handle to any other alias is refused with
/// [`ErrorKind::NotAllowedInTest`] before anything is sent, as it would write for real
/// (docs/semantics.md §10.3). A request sent through `AtomicRequestsLayer` from the body (the app
/// called in-process, with `tower::ServiceExt::oneshot`) runs inside these transactions: its
/// request blocks are savepoints (§10.4).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// use sqlx_atomic::{Database, Databases, ErrorKind, sqlite, testing};
/// Databases::new()
///     .add("default", Database::connect_lazy("sqlite::memory:")?)
///     .add("other", Database::connect_lazy("sqlite::memory:")?)
///     .install()?;
/// testing::rollback_after(["default"], async {
///     let refused = sqlx::query("SELECT 1").execute(&sqlite("other")).await.unwrap_err();
///     let refused = sqlx_atomic::Error::from(refused);
///     assert!(matches!(refused.kind(), ErrorKind::NotAllowedInTest { .. }), "{refused}");
/// })
/// .await;
/// # Ok(()) }
/// ```
pub async fn rollback_after<I, S, F>(aliases: I, body: F) -> F::Output
where
    I: IntoIterator<Item = S>,
    S: Into<Cow<'static, str>>,
    F: Future,
{
    let aliases: Vec<Cow<'static, str>> = aliases.into_iter().map(Into::into).collect();
    if Frame::is_set() {
        nest(aliases, body).await
    } else {
        // The test's own context, which refuses queries to the aliases it did not name (an
        // unknown alias fails in `nest`, with its name).
        let entries: Vec<_> = aliases.iter().filter_map(|a| lookup(a).ok()).collect();
        Frame::root(Context::for_test(&entries))
            .scope(nest(aliases, body))
            .await
    }
}

/// [`rollback_after`] without restricting the aliases: for [`capture_on_commit`], whose body may
/// use other aliases as it would outside the helper.
async fn rollback_after_on<F: Future>(alias: &'static str, body: F) -> F::Output {
    let aliases = vec![Cow::Borrowed(alias)];
    if Frame::is_set() {
        nest(aliases, body).await
    } else {
        Frame::root(Context::new(false))
            .scope(nest(aliases, body))
            .await
    }
}

async fn nest<F: Future>(mut aliases: Vec<Cow<'static, str>>, body: F) -> F::Output {
    let Some(alias) = aliases.pop() else {
        return body.await;
    };
    // A test block always rolls back, on every exit; a panic in the body is resumed by the runner
    // after the rollback.
    let outcome: Result<F::Output, Error> = Atomic::new()
        .using(alias.clone())
        .__test_block()
        .run(async { Ok(Box::pin(nest(aliases, body)).await) })
        .await;
    match outcome {
        Ok(out) => out,
        Err(e) => panic!(
            "sqlx_atomic::testing::rollback_after: the test transaction on `{alias}` failed: {e}"
        ),
    }
}

/// One captured hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedHook {
    /// The name given with [`OnCommit::name`](crate::OnCommit::name), if any.
    pub name: Option<String>,
    /// The Rust type of the hook closure.
    pub type_name: &'static str,
}

/// The hooks captured by [`capture_on_commit`], in registration order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The hooks, in the order they were registered (with `execute`, hooks registered by hooks
    /// follow).
    pub hooks: Vec<CapturedHook>,
    /// With `execute`: the message of the hook failure that stopped the run, if any.
    pub failure: Option<String>,
}

impl Captured {
    /// How many hooks were captured.
    pub fn len(&self) -> usize {
        self.hooks.len()
    }

    /// Whether no hook was captured.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// The hooks' names (`"<unnamed>"` for hooks without one).
    pub fn names(&self) -> Vec<&str> {
        self.hooks
            .iter()
            .map(|h| h.name.as_deref().unwrap_or("<unnamed>"))
            .collect()
    }
}

fn describe(h: &Hook) -> CapturedHook {
    CapturedHook {
        name: h.name().map(str::to_owned),
        type_name: h.type_name(),
    }
}

/// Collects the on_commit hooks of `alias` registered while `body` runs, instead of leaving them
/// to the commit (docs/semantics.md §10.2), like Django's `captureOnCommitCallbacks`. With `execute`, runs
/// them after the body as if the transaction had committed, including the hooks those hooks
/// register. If no block of the alias is open, the body runs in a [`rollback_after`]
/// transaction so that hooks are deferred at all.
///
/// Returns the body's output and the captured hooks. A failing executed hook stops the rest, as at
/// a real commit; its error is in [`Captured::failure`].
pub async fn capture_on_commit<F: Future>(
    alias: &'static str,
    execute: bool,
    body: F,
) -> (F::Output, Captured) {
    let in_block = lookup(alias)
        .ok()
        .and_then(|entry| Frame::with_current(|frame| frame.ctx().alias(entry).state().in_block()))
        == Some(true);
    if in_block {
        capture_in_block(alias, execute, body).await
    } else {
        rollback_after_on(alias, capture_in_block(alias, execute, body)).await
    }
}

async fn capture_in_block<F: Future>(
    alias: &'static str,
    execute: bool,
    body: F,
) -> (F::Output, Captured) {
    let Some(actx) = lookup(alias)
        .ok()
        .and_then(|entry| Frame::with_current(|frame| frame.ctx().alias(entry)))
    else {
        return (body.await, Captured::default());
    };
    let mark = actx.state().hooks_len();
    let out = body.await;
    let mut captured = Captured::default();
    loop {
        let batch = actx.state().take_hooks_from(mark);
        if batch.is_empty() {
            break;
        }
        captured.hooks.extend(batch.iter().map(describe));
        if !execute {
            break;
        }
        if let Err(e) = run_hooks(alias, batch).await {
            captured.failure = Some(e.to_string());
            break;
        }
    }
    (out, captured)
}
