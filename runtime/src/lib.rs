//! Runtime of sqlx-atomic (stub, being written).
#![forbid(unsafe_code)]

use std::future::Future;

/// Error of sqlx-atomic.
#[derive(Debug)]
pub struct Error;

/// A result type an atomic block may return.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Result<T, E>` whose error type `E` implements `From<sqlx_atomic::Error>`",
    label = "an #[atomic] function must return `Result<T, E>` with `E: From<sqlx_atomic::Error>`",
    note = "add `impl From<sqlx_atomic::Error> for YourError`, or return `Result<T, sqlx_atomic::Error>`"
)]
pub trait AtomicResult {}
impl<T, E: From<Error>> AtomicResult for Result<T, E> {}

/// Block builder.
#[derive(Debug, Clone, Copy, Default)]
pub struct Atomic;
impl Atomic {
    /// New.
    pub fn new() -> Self { Atomic }
    /// Alias.
    pub fn using(self, _alias: &str) -> Self { self }
    /// Savepoint.
    pub fn savepoint(self, _b: bool) -> Self { self }
    /// Durable.
    pub fn durable(self, _b: bool) -> Self { self }
    /// Run.
    pub async fn run<F, R>(self, fut: F) -> R where F: Future<Output = R>, R: AtomicResult { fut.await }
}

#[doc(hidden)]
pub mod __private {
    pub use crate::Atomic;
    /// Compile-time check used by the macros.
    pub fn assert_atomic_result<R: crate::AtomicResult>() {}
}
