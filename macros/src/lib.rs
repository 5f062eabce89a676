//! Attribute macros of [sqlx-atomic](https://docs.rs/sqlx-atomic).
//!
//! Use them through the `sqlx_atomic` crate, which re-exports them (`sqlx_atomic::atomic`); this
//! crate only rewrites functions into calls of the runtime's `Atomic` builder and knows nothing
//! about transactions.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod args;
mod expand;

use proc_macro::TokenStream;

/// Runs the body of an `async fn` in an atomic block: a transaction, or a savepoint when another
/// block on the same alias is already open (Django's `@transaction.atomic`).
///
/// ```ignore
/// use sqlx_atomic::atomic;
///
/// #[atomic]
/// async fn place_order(user: i64) -> Result<i64, AppError> {
///     let id: i64 = sqlx::query_scalar("INSERT INTO orders(user_id) VALUES (?) RETURNING id")
///         .bind(user)
///         .fetch_one(sqlx_atomic::sqlite("default"))
///         .await?;
///     Ok(id)
/// }
/// ```
///
/// The block commits when the body returns `Ok` and rolls back when it returns `Err` (including
/// through `?`) or panics.
///
/// # Arguments
///
/// All are optional, in any order, separated by commas:
///
/// - `using = "alias"`: the database alias of the block (default: `"default"`). It must be a
///   non-empty string literal; for an alias known only at run time, use the function form,
///   `Atomic::new().using(alias).run(async { .. }).await`.
/// - `savepoint = false`: when nested, do not create a savepoint, so an error rolls back the
///   enclosing block too (default: `true`).
/// - `durable = true`: the block must be the outermost one on its alias; entering it inside
///   another block is an error at run time (default: `false`).
/// - `crate = "path::to::sqlx_atomic"`: where to find the `sqlx_atomic` crate, for code that
///   reaches it through a re-export or a renamed dependency (default: `"::sqlx_atomic"`).
///
/// ```ignore
/// #[atomic(using = "reports", savepoint = false)]
/// async fn refresh(&self, day: Date) -> Result<(), sqlx_atomic::Error> { /* .. */ }
/// ```
///
/// # What it accepts
///
/// An `async fn` with a body: a free function, an inherent or trait-impl method (`self`, `&self`,
/// `&mut self`), generic or not. Its return type must be written as a `Result`, that is a path
/// whose last segment is `Result` (`Result<T, E>`, `std::result::Result<T, E>`,
/// `anyhow::Result<T>`, ...), and its error type must implement `From<sqlx_atomic::Error>`. A type
/// alias with another name, `impl Trait` or a missing return type is rejected.
///
/// # Expansion
///
/// The attributes, visibility and signature are kept as written; only the body changes (shown
/// slightly simplified):
///
/// ```ignore
/// #[atomic(using = "reports")]
/// async fn f(x: i32) -> Result<i32, E> { body }
/// // becomes
/// async fn f(x: i32) -> Result<i32, E> {
///     ::sqlx_atomic::__private::assert_atomic_result::<Result<i32, E>>();
///     ::sqlx_atomic::__private::Atomic::new()
///         .using("reports")
///         .run(async move {
///             let ret: Result<i32, E> = { body };
///             ret
///         })
///         .await
/// }
/// ```
///
/// A mistake in the attribute or the function is reported at the offending tokens, all mistakes
/// at once, and the function is then emitted unchanged so the rest of the crate still compiles.
#[proc_macro_attribute]
pub fn atomic(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::atomic(args.into(), item.into()).into()
}
