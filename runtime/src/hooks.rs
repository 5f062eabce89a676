//! on_commit hooks: registration and dispatch.

use std::borrow::Cow;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Poll;

use futures_util::FutureExt;

use crate::config::lookup;
use crate::context::Frame;
use crate::error::{BoxError, Error, ErrorKind};
use crate::state::HookDisposition;

/// What calling a hook's body gives: its result, or, for an async hook, the future of it.
enum Ran {
    Done(Result<(), BoxError>),
    Future(Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>),
}

/// A hook's body, sync or async, type-erased (made by [`IntoHook`]).
pub struct HookFn(Box<dyn FnOnce() -> Ran + Send>);

impl std::fmt::Debug for HookFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookFn")
    }
}

/// A registered hook: 32 bytes, so that ten thousand of them stay in cache. What most hooks do
/// not have (a name, `robust`) lives behind one box.
pub(crate) struct Hook {
    run: HookFn,
    type_name: fn() -> &'static str,
    options: Option<Box<HookOptions>>,
}

#[derive(Debug, Default)]
struct HookOptions {
    name: Option<Cow<'static, str>>,
    robust: bool,
}

impl Hook {
    /// The name given with [`OnCommit::name`].
    pub(crate) fn name(&self) -> Option<&str> {
        self.options.as_ref()?.name.as_deref()
    }

    /// Whether the hook was made [`robust`](OnCommit::robust).
    fn robust(&self) -> bool {
        self.options.as_ref().is_some_and(|o| o.robust)
    }

    /// The type name of the closure (for the capture helper).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn type_name(&self) -> &'static str {
        (self.type_name)()
    }

    fn options(&mut self) -> &mut HookOptions {
        self.options.get_or_insert_with(Box::default)
    }
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("name", &self.name())
            .field("robust", &self.robust())
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
        HookFn(Box::new(move || Ran::Done(self().into_result())))
    }
}

impl<F, Fut> IntoHook<AsyncHook<Fut::Output>> for F
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HookResult,
{
    fn into_hook(self) -> HookFn {
        HookFn(Box::new(move || {
            let future = self();
            Ran::Future(Box::pin(async move { future.await.into_result() }))
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
            type_name: std::any::type_name::<H>,
            options: None,
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
        self.hook.options().robust = true;
        self
    }

    /// A name for logs and errors.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.hook.options().name = Some(name.into());
        self
    }

    /// Registers the hook with the innermost block of its alias, or, outside any block, hands it
    /// back to be run at once. Synchronous: registering never awaits.
    fn register(self) -> Result<Option<(&'static str, Hook)>, Error> {
        let entry = lookup(&self.alias)?;
        let mut hook = Some(self.hook);
        let registered = Frame::with_current(|frame| {
            frame.ctx.with_alias(entry, |actx| {
                let Some(h) = hook.take() else {
                    unreachable!("the hook is taken once")
                };
                match actx.state().on_commit(h) {
                    Ok(HookDisposition::Registered) => Ok(true),
                    Ok(HookDisposition::RunNow(h)) => {
                        hook = Some(h);
                        Ok(false)
                    }
                    Err(kind) => Err(actx.err(kind)),
                }
            })
        });
        match registered {
            Some(Ok(true)) => {
                tracing::trace!(target: "sqlx_atomic", alias = %entry.name, "on_commit hook registered");
                return Ok(None);
            }
            Some(Ok(false)) => {}
            Some(Err(e)) => return Err(e),
            None if !entry.db.autocommit => {
                return Err(Error::at(&entry.name, ErrorKind::OnCommitInManualMode));
            }
            None => {}
        }
        let Some(hook) = hook else {
            unreachable!("a hook that was not registered is handed back")
        };
        Ok(Some((&*entry.name, hook)))
    }
}

impl IntoFuture for OnCommit {
    type Output = Result<(), Error>;
    type IntoFuture = OnCommitFuture;

    fn into_future(self) -> OnCommitFuture {
        OnCommitFuture {
            stage: Stage::Register(Some(self)),
        }
    }
}

/// The future of an awaited [`OnCommit`]: its first poll registers the hook with the innermost
/// block (no allocation beyond the hook's own box, no await); outside any block it runs the hook
/// at once and completes when the hook has run.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// # sqlx_atomic::Databases::new().add("default", sqlx_atomic::Database::connect_lazy("sqlite::memory:")?).install()?;
/// let registered: sqlx_atomic::OnCommitFuture = std::future::IntoFuture::into_future(
///     sqlx_atomic::on_commit(|| println!("outside a block: runs at once")),
/// );
/// registered.await?;
/// # Ok(()) }
/// ```
#[must_use = "futures do nothing unless awaited"]
pub struct OnCommitFuture {
    stage: Stage,
}

enum Stage {
    Register(Option<OnCommit>),
    Run(Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>),
    Done,
}

impl std::fmt::Debug for OnCommitFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stage = match &self.stage {
            Stage::Register(_) => "register",
            Stage::Run(_) => "running the hook",
            Stage::Done => "done",
        };
        f.debug_struct("OnCommitFuture")
            .field("stage", &stage)
            .finish()
    }
}

impl Future for OnCommitFuture {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.stage {
                Stage::Register(on_commit) => {
                    let Some(on_commit) = on_commit.take() else {
                        unreachable!("the Register stage always holds its OnCommit")
                    };
                    match on_commit.register() {
                        Ok(None) => {
                            this.stage = Stage::Done;
                            return Poll::Ready(Ok(()));
                        }
                        Ok(Some((alias, hook))) => {
                            this.stage = Stage::Run(Box::pin(run_hooks(alias, vec![hook])));
                        }
                        Err(e) => {
                            this.stage = Stage::Done;
                            return Poll::Ready(Err(e));
                        }
                    }
                }
                Stage::Run(run) => {
                    let out = std::task::ready!(run.as_mut().poll(cx));
                    this.stage = Stage::Done;
                    return Poll::Ready(out);
                }
                Stage::Done => panic!("`OnCommitFuture` polled after completion"),
            }
        }
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
        let Hook { run, options, .. } = hook;
        let name = options.as_ref().and_then(|o| o.name.as_deref());
        let robust = options.as_ref().is_some_and(|o| o.robust);
        let name = name.unwrap_or("<unnamed>");
        tracing::debug!(target: "sqlx_atomic", alias, hook = name, index = i, "running on_commit hook");
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(run.0)) {
            Ok(Ran::Done(result)) => Ok(result),
            Ok(Ran::Future(future)) => AssertUnwindSafe(future).catch_unwind().await,
            Err(panic) => Err(panic),
        };
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => Err(e),
            Err(panic) => Ok(panic),
        };
        if robust {
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
        let name = options.and_then(|o| o.name).map(Cow::into_owned);
        return match failure {
            Err(source) => Err(Error::named(alias, ErrorKind::Hook { name, source })),
            Ok(panic) => std::panic::resume_unwind(panic),
        };
    }
    Ok(())
}
