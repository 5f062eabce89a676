//! on_commit hooks: registration and dispatch.

use std::borrow::Cow;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures_util::FutureExt;

use crate::config::lookup;
use crate::context::Frame;
use crate::error::{BoxError, Error, ErrorKind};
use crate::state::HookDisposition;

type SyncFn = Box<dyn FnOnce() -> Result<(), BoxError> + Send>;
type AsyncFn =
    Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> + Send>;

/// A hook's body, sync or async.
pub enum HookFn {
    /// A plain closure.
    Sync(SyncFn),
    /// A closure returning a future.
    Async(AsyncFn),
}

/// A registered hook.
pub(crate) struct Hook {
    run: HookFn,
    pub(crate) name: Option<Cow<'static, str>>,
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) type_name: &'static str,
    robust: bool,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("name", &self.name)
            .field("robust", &self.robust)
            .finish()
    }
}

/// What a hook may return: `()` or `Result<(), E>` for any error type.
pub trait HookResult: Send + 'static {
    /// Converts into the hook's outcome.
    fn into_result(self) -> Result<(), BoxError>;
}

impl HookResult for () {
    fn into_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<E: Into<BoxError> + Send + 'static> HookResult for Result<(), E> {
    fn into_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

/// Marker for closures run synchronously.
pub struct SyncHook<R>(PhantomData<R>);
/// Marker for closures returning a future.
pub struct AsyncHook<R>(PhantomData<R>);

/// Something [`on_commit`] accepts: a closure `FnOnce() -> R` or `FnOnce() -> impl Future<Output = R>`,
/// where `R` is `()` or `Result<(), E>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an on_commit hook",
    label = "expected a closure `|| ...` returning `()`, `Result<(), E>`, or a future of one of them",
    note = "the hook must be `Send + 'static`: move what it needs into it (`move || ...`)"
)]
pub trait IntoHook<M>: Send + 'static {
    /// Converts into a hook body.
    fn into_hook(self) -> HookFn;
}

impl<F, R> IntoHook<SyncHook<R>> for F
where
    F: FnOnce() -> R + Send + 'static,
    R: HookResult,
{
    fn into_hook(self) -> HookFn {
        HookFn::Sync(Box::new(move || self().into_result()))
    }
}

impl<F, Fut> IntoHook<AsyncHook<Fut::Output>> for F
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HookResult,
{
    fn into_hook(self) -> HookFn {
        HookFn::Async(Box::new(move || {
            Box::pin(async move { self().await.into_result() })
        }))
    }
}

/// Registers a hook to run after the outermost transaction of the alias commits (SEMANTICS 5).
///
/// Await it: `on_commit(|| ...).await?`. Inside an atomic block the hook is kept and runs after
/// the outermost COMMIT succeeds, in registration order; it is dropped if its savepoint or
/// transaction rolls back. Outside any block it runs at once. Chain `.using("alias")`,
/// `.robust()` or `.name("...")` before awaiting.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// # sqlx_atomic::Databases::new().add("default", sqlx_atomic::Database::connect_lazy("sqlite::memory:")?).install()?;
/// use std::sync::{Arc, Mutex};
/// use sqlx_atomic::{on_commit, Atomic};
/// let log = Arc::new(Mutex::new(Vec::new()));
/// let l = log.clone();
/// Atomic::new()
///     .run(async move {
///         on_commit(move || l.lock().unwrap().push("sent")).await?;
///         Ok::<_, sqlx_atomic::Error>(())
///     })
///     .await?;
/// assert_eq!(*log.lock().unwrap(), ["sent"]);
/// # Ok(()) }
/// ```
pub fn on_commit<M, H: IntoHook<M>>(hook: H) -> OnCommit {
    OnCommit {
        hook: Hook {
            run: hook.into_hook(),
            name: None,
            type_name: std::any::type_name::<H>(),
            robust: false,
        },
        alias: Cow::Borrowed("default"),
    }
}

/// A hook registration to be awaited; see [`on_commit`].
#[must_use = "on_commit does nothing until awaited: `on_commit(..).await?`"]
pub struct OnCommit {
    hook: Hook,
    alias: Cow<'static, str>,
}

impl std::fmt::Debug for OnCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnCommit")
            .field("alias", &self.alias)
            .field("hook", &self.hook)
            .finish()
    }
}

impl OnCommit {
    /// The alias whose commit the hook waits for (default `"default"`).
    pub fn using(mut self, alias: impl Into<Cow<'static, str>>) -> Self {
        self.alias = alias.into();
        self
    }

    /// A robust hook's failure is logged and the next hook runs (5.7).
    pub fn robust(mut self) -> Self {
        self.hook.robust = true;
        self
    }

    /// A name for logs and errors.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.hook.name = Some(name.into());
        self
    }

    async fn register(self) -> Result<(), Error> {
        let entry = lookup(&self.alias)?;
        let hook = match Frame::current() {
            None if !entry.db.autocommit => {
                return Err(Error::at(&entry.name, ErrorKind::OnCommitInManualMode));
            }
            None => self.hook,
            Some(frame) => {
                let actx = frame.ctx.alias(entry);
                let disposition = actx.state().on_commit(self.hook);
                match disposition.map_err(|k| actx.err(k))? {
                    HookDisposition::Registered => {
                        tracing::trace!(target: "sqlx_atomic", alias = %entry.name, "on_commit hook registered");
                        return Ok(());
                    }
                    HookDisposition::RunNow(h) => h,
                }
            }
        };
        run_hooks(&entry.name, vec![hook]).await
    }
}

impl IntoFuture for OnCommit {
    type Output = Result<(), Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.register())
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Runs committed hooks in order (5.6, 5.7). A failing hook that is not robust stops the rest,
/// which are dropped and logged; its panic is resumed after that.
pub(crate) async fn run_hooks(alias: &str, hooks: Vec<Hook>) -> Result<(), Error> {
    let total = hooks.len();
    let mut iter = hooks.into_iter().enumerate();
    while let Some((i, hook)) = iter.next() {
        let name = hook.name.as_deref().unwrap_or("<unnamed>");
        tracing::debug!(target: "sqlx_atomic", alias, hook = name, index = i, "running on_commit hook");
        let outcome = match hook.run {
            HookFn::Sync(f) => std::panic::catch_unwind(AssertUnwindSafe(f)),
            HookFn::Async(f) => {
                AssertUnwindSafe(async move { f().await })
                    .catch_unwind()
                    .await
            }
        };
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => Err(e),
            Err(panic) => Ok(panic),
        };
        if hook.robust {
            match &failure {
                Err(e) => {
                    tracing::error!(target: "sqlx_atomic", alias, hook = name, error = %e, "robust on_commit hook failed")
                }
                Ok(p) => {
                    tracing::error!(target: "sqlx_atomic", alias, hook = name, panic = %panic_message(&**p), "robust on_commit hook panicked")
                }
            }
            continue;
        }
        let dropped = total - i - 1;
        if dropped > 0 {
            tracing::error!(target: "sqlx_atomic", alias, hook = name, dropped, "on_commit hook failed: the remaining hooks of this commit are dropped");
        }
        drop(iter);
        let name = hook.name.map(|n| n.into_owned());
        return match failure {
            Err(source) => Err(Error::named(alias, ErrorKind::Hook { name, source })),
            Ok(panic) => std::panic::resume_unwind(panic),
        };
    }
    Ok(())
}
