//! A hook: the type-erased closure that on_commit keeps until the commit, with its options, and
//! the conversions from the closures users write.

use std::borrow::Cow;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use crate::error::BoxError;

/// What calling a hook's body gives: its result, or, for an async hook, the future of it.
pub(crate) enum Ran {
    Done(Result<(), BoxError>),
    Future(Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>),
}

/// A hook's body, sync or async, type-erased (made by [`IntoHook`]).
pub struct HookFn(pub(crate) Box<dyn Body>);

impl std::fmt::Debug for HookFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookFn")
    }
}

/// What a registered hook is behind its one box: the closure, and what is known of it.
pub(crate) trait Body: Send {
    /// Calls the closure (consuming it and its box).
    fn call(self: Box<Self>) -> Ran;
    /// The closure's type name (for the capture helper).
    fn type_name(&self) -> &'static str;
    /// The options set with [`OnCommit::name`](crate::OnCommit::name) or [`OnCommit::robust`](crate::OnCommit::robust), if any.
    fn options(&self) -> Option<&HookOptions> {
        None
    }
    /// The options, to change them.
    fn options_mut(&mut self) -> Option<&mut HookOptions> {
        None
    }
    /// Takes the options out, before the body is called.
    fn take_options(&mut self) -> Option<HookOptions> {
        None
    }
    /// The durable job this hook stands for, written to the outbox before the COMMIT.
    #[cfg(feature = "outbox")]
    fn job(&self) -> Option<&crate::outbox::PendingJob> {
        None
    }
}

/// A closure run synchronously.
struct SyncBody<F>(F);

impl<F, R> Body for SyncBody<F>
where
    F: FnOnce() -> R + Send + 'static,
    R: HookResult,
{
    fn call(self: Box<Self>) -> Ran {
        Ran::Done((self.0)().into_result())
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<F>()
    }
}

/// A closure returning a future.
struct AsyncBody<F>(F);

impl<F, Fut> Body for AsyncBody<F>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HookResult,
{
    fn call(self: Box<Self>) -> Ran {
        let future = (self.0)();
        Ran::Future(Box::pin(async move { future.await.into_result() }))
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<F>()
    }
}

/// A body with options: most hooks have none, so they are a second box only for those that do.
struct WithOptions {
    body: Box<dyn Body>,
    options: HookOptions,
}

impl Body for WithOptions {
    fn call(self: Box<Self>) -> Ran {
        self.body.call()
    }
    fn type_name(&self) -> &'static str {
        self.body.type_name()
    }
    fn options(&self) -> Option<&HookOptions> {
        Some(&self.options)
    }
    fn options_mut(&mut self) -> Option<&mut HookOptions> {
        Some(&mut self.options)
    }
    fn take_options(&mut self) -> Option<HookOptions> {
        Some(std::mem::take(&mut self.options))
    }
    #[cfg(feature = "outbox")]
    fn job(&self) -> Option<&crate::outbox::PendingJob> {
        self.body.job()
    }
}

/// A registered hook: one box (16 bytes), so that ten thousand of them stay in cache and move
/// as cheaply as a `Box<dyn FnOnce()>`.
pub(crate) struct Hook(pub(crate) Box<dyn Body>);

#[derive(Debug, Default)]
pub(crate) struct HookOptions {
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) robust: bool,
}

impl Hook {
    /// The durable job this hook stands for, if it is one.
    #[cfg(feature = "outbox")]
    pub(crate) fn job(&self) -> Option<&crate::outbox::PendingJob> {
        self.0.job()
    }

    /// The name given with [`OnCommit::name`](crate::OnCommit::name).
    pub(crate) fn name(&self) -> Option<&str> {
        self.0.options()?.name.as_deref()
    }

    /// Whether the hook was made [`robust`](crate::OnCommit::robust).
    pub(crate) fn robust(&self) -> bool {
        self.0.options().is_some_and(|o| o.robust)
    }

    /// The type name of the closure (for the capture helper).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn type_name(&self) -> &'static str {
        self.0.type_name()
    }

    /// The hook with its options changed by `f` (wrapped in a [`WithOptions`] on first use).
    pub(crate) fn with_options(mut self, f: impl FnOnce(&mut HookOptions)) -> Hook {
        if let Some(options) = self.0.options_mut() {
            f(options);
            return self;
        }
        let mut options = HookOptions::default();
        f(&mut options);
        Hook(Box::new(WithOptions {
            body: self.0,
            options,
        }))
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

/// What a hook may return: `()` or `Result<(), E>` for any error type; or nothing at all, for a
/// hook that only panics (its return type is then `!`).
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

/// The never type `!`, named on stable Rust: `!` may be written only as a function's return type,
/// and the return type of a function pointer can be read back through a trait. Public only so
/// that the public impl below may name it; the module is private, so it is not exported.
pub trait FnOutput {
    /// The return type.
    type Output;
}

impl<T> FnOutput for fn() -> T {
    type Output = T;
}

/// `!`, the type of an expression that never finishes (a `panic!`).
pub type Never = <fn() -> ! as FnOutput>::Output;

/// A hook that never returns (`|| panic!(..)`, `|| unreachable!()`, `|| -> ! { .. }`): since
/// edition 2024 such a closure returns `!`, not `()`. Calling it panics, which is reported as
/// any hook's panic is.
impl HookResult for Never {
    fn into_result(self) -> Result<(), BoxError> {
        self
    }
}

/// Marker for closures run synchronously.
pub struct SyncHook<R>(PhantomData<R>);
/// Marker for closures returning a future.
pub struct AsyncHook<R>(PhantomData<R>);

/// Something [`on_commit`](crate::on_commit) accepts: a closure `FnOnce() -> R` or `FnOnce() -> impl Future<Output = R>`,
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
        HookFn(Box::new(SyncBody(self)))
    }
}

impl<F, Fut> IntoHook<AsyncHook<Fut::Output>> for F
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: HookResult,
{
    fn into_hook(self) -> HookFn {
        HookFn(Box::new(AsyncBody(self)))
    }
}
