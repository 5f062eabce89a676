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

use crate::block::Atomic;
use crate::config::lookup;
use crate::context::{Context, Frame};
use crate::error::Error;
use crate::hooks::{Hook, run_hooks};
use std::borrow::Cow;

/// Runs `body` inside an outermost transaction on each alias that is always rolled back at the
/// end, whatever the body returns and if it panics (SEMANTICS 10.1). Inside it, `#[atomic]` blocks
/// nest as savepoints and `durable` blocks are allowed. Nothing the body writes is visible to
/// other connections or left behind.
///
/// The body may return anything; a panic is propagated after the rollback.
pub async fn rollback_after<I, S, F>(aliases: I, body: F) -> F::Output
where
    I: IntoIterator<Item = S>,
    S: Into<Cow<'static, str>>,
    F: Future,
{
    let aliases: Vec<Cow<'static, str>> = aliases.into_iter().map(Into::into).collect();
    match Frame::current() {
        Some(_) => nest(aliases, body).await,
        None => {
            Frame::root(Context::new(false))
                .scope(nest(aliases, body))
                .await
        }
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
        name: h.name.as_ref().map(|n| n.to_string()),
        type_name: h.type_name,
    }
}

/// Collects the on_commit hooks of `alias` registered while `body` runs, instead of leaving them
/// to the commit (SEMANTICS 10.2), like Django's `captureOnCommitCallbacks`. With `execute`, runs
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
    let in_block = match (Frame::current(), lookup(alias)) {
        (Some(frame), Ok(entry)) => frame.ctx.alias(entry).state().in_block(),
        _ => false,
    };
    if in_block {
        capture_in_block(alias, execute, body).await
    } else {
        rollback_after([alias], capture_in_block(alias, execute, body)).await
    }
}

async fn capture_in_block<F: Future>(
    alias: &'static str,
    execute: bool,
    body: F,
) -> (F::Output, Captured) {
    let actx = match (Frame::current(), lookup(alias)) {
        (Some(frame), Ok(entry)) => frame.ctx.alias(entry),
        _ => return (body.await, Captured::default()),
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
