//! on_commit: registering a hook with the task's innermost block (or running it at once), and
//! running the hooks of a commit.

use std::borrow::Cow;
use std::future::{Future, IntoFuture};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Poll;

use futures_util::FutureExt;

use crate::error::{Error, ErrorKind};
use crate::frame::Frame;
use crate::hook::{Hook, IntoHook, Ran};
use crate::registry::lookup;
use crate::state::HookDisposition;

/// Registers a hook to run after the outermost transaction of the alias commits (docs/semantics.md §5).
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
        hook: Hook(hook.into_hook().0),
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
        self.hook = self.hook.with_options(|o| o.robust = true);
        self
    }

    /// A name for logs and errors.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        let name = name.into();
        self.hook = self.hook.with_options(|o| o.name = Some(name));
        self
    }

    /// Registers the hook with the innermost block of its alias, or, outside any block, hands it
    /// back to be run at once. Synchronous: registering never awaits.
    fn register(self) -> Result<Option<(&'static str, Hook)>, Error> {
        /// What happened to the hook: small, so that the hot path moves no error around.
        enum Registration {
            Registered,
            RunNow,
            ManualMode,
        }
        let entry = lookup(&self.alias)?;
        let mut hook = Some(self.hook);
        let registered = Frame::with_current(|frame| {
            frame.ctx().with_alias(entry, |actx| {
                let Some(h) = hook.take() else {
                    unreachable!("the hook is taken once")
                };
                match actx.state().on_commit(h) {
                    Ok(HookDisposition::Registered) => Registration::Registered,
                    Ok(HookDisposition::RunNow(h)) => {
                        hook = Some(h);
                        Registration::RunNow
                    }
                    Err(_) => Registration::ManualMode,
                }
            })
        });
        match registered {
            Some(Registration::Registered) => {
                tracing::trace!(target: "sqlx_atomic", alias = %entry.name, "on_commit hook registered");
                return Ok(None);
            }
            Some(Registration::RunNow) => {}
            Some(Registration::ManualMode) => {
                return Err(Error::at(&entry.name, ErrorKind::OnCommitInManualMode));
            }
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
            Stage::Register(Some(_)) => "register",
            Stage::Register(None) => "done",
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
                Stage::Register(slot) => {
                    // Registered or refused: the slot stays empty, which is what "done" means
                    // in this stage (nothing else to write on the hot path).
                    let Some(on_commit) = slot.take() else {
                        panic!("`OnCommitFuture` polled after completion")
                    };
                    match on_commit.register() {
                        Ok(None) => return Poll::Ready(Ok(())),
                        Ok(Some((alias, hook))) => {
                            this.stage = Stage::Run(Box::pin(run_hooks(alias, vec![hook])));
                        }
                        Err(e) => return Poll::Ready(Err(e)),
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

/// The message of a panic payload, for logs.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// How a hook that did not succeed failed: its error, or its panic.
enum HookFailed {
    Error(crate::error::BoxError),
    Panic(Box<dyn std::any::Any + Send>),
}

/// Calls a hook's body (sync or async), catching its panic.
async fn call_hook(body: Box<dyn crate::hook::Body>) -> Result<(), HookFailed> {
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| body.call())) {
        Ok(Ran::Done(result)) => Ok(result),
        Ok(Ran::Future(future)) => AssertUnwindSafe(future).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(HookFailed::Error(e)),
        Err(panic) => Err(HookFailed::Panic(panic)),
    }
}

/// Logs a robust hook's failure (the next hook runs).
fn robust_failed(alias: &str, name: &str, failure: &HookFailed) {
    match failure {
        HookFailed::Error(e) => {
            tracing::error!(target: "sqlx_atomic", alias, hook = name, error = %e, "robust on_commit hook failed")
        }
        HookFailed::Panic(p) => {
            tracing::error!(target: "sqlx_atomic", alias, hook = name, panic = %panic_message(&**p), "robust on_commit hook panicked")
        }
    }
}

/// Runs committed hooks in order (5.6, 5.7). A failing hook that is not robust stops the rest,
/// which are dropped and logged; its panic is resumed after that.
pub(crate) async fn run_hooks(alias: &str, hooks: Vec<Hook>) -> Result<(), Error> {
    let total = hooks.len();
    let mut iter = hooks.into_iter().enumerate();
    while let Some((i, hook)) = iter.next() {
        let Hook(mut body) = hook;
        let options = body.take_options();
        let name = options.as_ref().and_then(|o| o.name.as_deref());
        let robust = options.as_ref().is_some_and(|o| o.robust);
        let name = name.unwrap_or("<unnamed>");
        tracing::debug!(target: "sqlx_atomic", alias, hook = name, index = i, "running on_commit hook");
        let Err(failure) = call_hook(body).await else {
            continue;
        };
        if robust {
            robust_failed(alias, name, &failure);
            continue;
        }
        let dropped = total - i - 1;
        if dropped > 0 {
            tracing::error!(target: "sqlx_atomic", alias, hook = name, dropped, "on_commit hook failed: the remaining hooks of this commit are dropped");
        }
        drop(iter);
        let name = options.and_then(|o| o.name).map(Cow::into_owned);
        return match failure {
            HookFailed::Error(source) => Err(Error::named(alias, ErrorKind::Hook { name, source })),
            HookFailed::Panic(panic) => std::panic::resume_unwind(panic),
        };
    }
    Ok(())
}

/// Runs the hooks of a request's COMMIT (docs/semantics.md §8.3), in order. No failure escapes:
/// a hook's error or panic is logged at ERROR with the alias and the hook's name, and the call
/// says whether a hook that is not robust failed. `keep_going`: the hooks after a failed one
/// still run; otherwise they are dropped and logged, as after a block's COMMIT (5.7).
#[cfg(feature = "tower")]
pub(crate) async fn run_request_hooks(alias: &str, hooks: Vec<Hook>, keep_going: bool) -> bool {
    let total = hooks.len();
    let mut failed = false;
    for (i, Hook(mut body)) in hooks.into_iter().enumerate() {
        let options = body.take_options();
        let name = options.as_ref().and_then(|o| o.name.as_deref());
        let robust = options.as_ref().is_some_and(|o| o.robust);
        let name = name.unwrap_or("<unnamed>");
        tracing::debug!(target: "sqlx_atomic", alias, hook = name, index = i, "running on_commit hook");
        let Err(failure) = call_hook(body).await else {
            continue;
        };
        if robust {
            robust_failed(alias, name, &failure);
            continue;
        }
        failed = true;
        let then = if keep_going {
            "the request committed and its response stands"
        } else {
            "the request committed; answering 500"
        };
        match &failure {
            HookFailed::Error(e) => {
                tracing::error!(target: "sqlx_atomic", alias, hook = name, error = %e, "on_commit hook failed after the request's COMMIT: {then}")
            }
            HookFailed::Panic(p) => {
                tracing::error!(target: "sqlx_atomic", alias, hook = name, panic = %panic_message(&**p), "on_commit hook panicked after the request's COMMIT: {then}")
            }
        }
        if !keep_going {
            let dropped = total - i - 1;
            if dropped > 0 {
                tracing::error!(target: "sqlx_atomic", alias, hook = name, dropped, "the remaining on_commit hooks of this commit are dropped");
            }
            break;
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_is_one_box() {
        assert_eq!(size_of::<Hook>(), size_of::<Box<dyn FnOnce() + Send>>());
    }

    #[test]
    fn options_are_kept_in_any_order_and_the_type_name_is_the_closures() {
        fn marker() {}
        let plain = on_commit(marker).hook;
        assert_eq!(plain.name(), None);
        assert!(!plain.robust());
        let both = on_commit(marker).robust().name("n").hook;
        assert_eq!((both.name(), both.robust()), (Some("n"), true));
        let both = on_commit(marker).name("m").robust().name("n").hook;
        assert_eq!((both.name(), both.robust()), (Some("n"), true));
        assert!(both.type_name().ends_with("marker"), "{}", both.type_name());
        let mut body = both.0;
        let taken = body.take_options().expect("options");
        assert_eq!(taken.name.as_deref(), Some("n"));
        assert!(matches!(body.call(), Ran::Done(Ok(()))));
    }
}
