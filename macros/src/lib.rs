//! Attribute macros of [sqlx-atomic](https://docs.rs/sqlx-atomic).
//!
//! Use them through the `sqlx_atomic` crate, which re-exports them (`sqlx_atomic::atomic`,
//! `sqlx_atomic::non_atomic_requests`, and `sqlx_atomic::test` with its feature `testing`); this
//! crate only rewrites functions into calls of the runtime and knows nothing about transactions.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod atomic;
mod emit;
#[cfg(test)]
mod fuzz;
mod item;
mod non_atomic;
mod parse;
mod test_attr;
#[cfg(test)]
mod test_util;

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
/// - `isolation = "serializable"`: the transaction's isolation level, one of
///   `"read_uncommitted"`, `"read_committed"`, `"repeatable_read"` or `"serializable"`
///   (default: the server's). SQLite accepts every level: its transactions are always
///   serializable.
/// - `read_only = true`: begin a read-only transaction, which the server refuses to write in
///   (`false`: a read-write one; default: the server's default).
/// - `lock = "immediate"`: how SQLite's `BEGIN` takes its lock, one of `"deferred"` (SQLite's
///   default), `"immediate"` (the write lock at `BEGIN`, so a read-modify-write block cannot fail
///   half-way with `SQLITE_BUSY`) or `"exclusive"`.
/// - `timeout = "5s"`: a deadline for the transaction, a positive integer followed by `ms`, `s`
///   or `m` (`"500ms"`, `"5s"`, `"2m"`). When it passes, the body is cancelled, the transaction
///   rolled back and the block fails; on PostgreSQL the server also stops a statement that
///   outlives it (default: none; see `Atomic::timeout`).
/// - `retry = 3`: run the whole body again, up to that many more times, when an attempt failed
///   with a conflict the server guarantees it rolled back (a serialization failure, a deadlock,
///   SQLite's busy error); each retry is a new transaction, and the hooks the failed attempt
///   registered are discarded. The value is the number of retries after the first attempt, at
///   least 1, or any expression converting into `sqlx_atomic::Retry`, for a backoff of one's
///   own: `retry = Retry::new(5).backoff(base, cap)`. Only an outermost block is retried: on a
///   nested block, or inside a per-request transaction, `retry` is an error at run time, before
///   anything is sent (opt the handler out with `#[non_atomic_requests]` and retry a block
///   inside it); with `savepoint = false` (which only a nested block uses) it is an error at
///   compile time.
/// - `crate = "path::to::sqlx_atomic"`: where to find the `sqlx_atomic` crate, for code that
///   reaches it through a re-export or a renamed dependency (default: `"::sqlx_atomic"`).
///
/// ```ignore
/// #[atomic(using = "reports", savepoint = false)]
/// async fn refresh(&self, day: Date) -> Result<(), sqlx_atomic::Error> { /* .. */ }
///
/// #[atomic(isolation = "serializable", timeout = "2s", retry = 5)]
/// async fn transfer(from: i64, to: i64, cents: i64) -> Result<(), AppError> { /* .. */ }
/// ```
///
/// The transaction options (`isolation`, `read_only`, `lock`, `timeout`) belong to the
/// transaction, so they are set by the outermost block: a nested block may repeat the same
/// values or leave them out, and anything else is an error at run time, before anything is sent.
/// So is an option the alias's backend cannot honour (e.g. `lock` outside SQLite): it is never
/// ignored.
///
/// ## Retried bodies
///
/// Each attempt runs the body again, with the same arguments, which it borrows rather than
/// consumes: a body that moves a by-value argument fails to compile with "value moved here, in
/// previous iteration of loop". Clone such an argument inside the body before the move
/// (`let name = name.clone();`), or take it by reference. Work outside the database (a message
/// sent, a counter increased) is done again on every attempt; leave it to an `on_commit` hook,
/// which runs once, after the commit.
///
/// ```ignore
/// #[atomic(retry = 3)]
/// async fn rename(&mut self, id: i64, name: String) -> Result<(), AppError> {
///     let name = name.clone(); // the next attempt needs `name` again
///     self.store(id, name).await?;
///     Ok(())
/// }
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
///     ::sqlx_atomic::atomic_fn_returns_result::<Result<i32, E>>();
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
/// The other options become builder calls before `.run(..)`, in the order `using`, `savepoint`,
/// `durable`, `isolation`, `read_only`, `lock`, `timeout`; `timeout` is computed at compile time
/// (`.timeout(::core::time::Duration::from_millis(2000))` for `"2s"`). With `retry`, the body
/// becomes a fresh future for each attempt, which borrows the arguments (`async`, not
/// `async move`):
///
/// ```ignore
/// #[atomic(retry = 3)]
/// async fn f(x: &mut i32) -> Result<i32, E> { body }
/// // becomes
/// async fn f(x: &mut i32) -> Result<i32, E> {
///     ::sqlx_atomic::atomic_fn_returns_result::<Result<i32, E>>();
///     let mut attempts = ::sqlx_atomic::__private::Atomic::new().retry(3u32).__attempts();
///     loop {
///         if let ControlFlow::Break(out) = attempts
///             .attempt(async {
///                 let ret: Result<i32, E> = { body };
///                 ret
///             })
///             .await
///         {
///             break out;
///         }
///     }
/// }
/// ```
///
/// A mistake in the attribute or the function is reported at the offending tokens, all mistakes
/// at once, and the function is then emitted unchanged so the rest of the crate still compiles.
#[proc_macro_attribute]
pub fn atomic(args: TokenStream, item: TokenStream) -> TokenStream {
    atomic::atomic(args.into(), item.into()).into()
}

/// Runs a request handler outside the per-request transaction that
/// [`AtomicRequestsLayer`](https://docs.rs/sqlx-atomic/latest/sqlx_atomic/struct.AtomicRequestsLayer.html)
/// opens around it (Django's `@transaction.non_atomic_requests`).
///
/// ```ignore
/// use axum::http::StatusCode;
/// use sqlx_atomic::non_atomic_requests;
///
/// // The audit row must stay even when the request fails: autocommit on "reports".
/// #[non_atomic_requests(using = "reports")]
/// async fn place_order(Json(order): Json<Order>) -> impl IntoResponse {
///     audit("reports", &order).await;
///     match charge(&order).await {
///         Ok(()) => StatusCode::CREATED,
///         Err(_) => StatusCode::CONFLICT,
///     }
/// }
/// ```
///
/// On the named aliases, the handler's statements run in autocommit mode, and an `#[atomic]`
/// block inside it is an outermost block that commits on its own. Aliases that are not named keep
/// their request transaction. Called outside any request or block (e.g. directly from a test), the
/// function just runs its body.
///
/// The opt-out must come first: if the request transaction of an alias was already used (a
/// statement sent or a hook registered, e.g. by a middleware or an extractor), another block is
/// open around the handler, or an alias is unknown, nothing is opted out, and the web layer rolls
/// the request back and answers 500, logging why.
///
/// # Arguments
///
/// All are optional, separated by commas:
///
/// - `using = "alias"`: a database alias to opt out of; repeat it for several
///   (`using = "a", using = "b"`) or give a list (`using = ["a", "b"]`). Aliases are non-empty
///   string literals, each named once. Without `using`, the handler opts out of `"default"`.
/// - `crate = "path::to::sqlx_atomic"`: where to find the `sqlx_atomic` crate, for code that
///   reaches it through a re-export or a renamed dependency (default: `"::sqlx_atomic"`).
///
/// ```ignore
/// #[non_atomic_requests(using = ["default", "reports"])]
/// async fn export(State(app): State<App>) -> Result<Response, AppError> { /* .. */ }
/// ```
///
/// # What it accepts
///
/// An `async fn` with a body: a free function or a method, generic or not, with any return type
/// (`impl IntoResponse`, `Response`, `Result<T, E>`, `String`, ...). The function's future is
/// `Send` whenever its body is, as axum requires of handlers.
///
/// # Expansion
///
/// The attributes, visibility and signature are kept as written; only the body changes (shown
/// slightly simplified):
///
/// ```ignore
/// #[non_atomic_requests(using = ["a", "b"])]
/// async fn handler(x: Query<Q>) -> Response { body }
/// // becomes
/// async fn handler(x: Query<Q>) -> Response {
///     ::sqlx_atomic::__private::non_atomic_requests(&["a", "b"], async move {
///         let ret: Response = { body };
///         ret
///     })
///     .await
/// }
/// ```
///
/// So a `return` in the body returns from the handler, with the handler's type, and `?` converts
/// errors to the declared error type as usual.
///
/// A mistake in the attribute or the function is reported at the offending tokens, all mistakes
/// at once, and the function is then emitted unchanged so the rest of the crate still compiles.
#[proc_macro_attribute]
pub fn non_atomic_requests(args: TokenStream, item: TokenStream) -> TokenStream {
    non_atomic::non_atomic_requests(args.into(), item.into()).into()
}

/// Runs an `async fn` test inside transactions that are always rolled back, like a Django
/// `TestCase`: whatever the body writes is gone when it returns, fails or panics (feature
/// `testing` of `sqlx_atomic`).
///
/// ```ignore
/// use sqlx_atomic::{postgres, using};
///
/// #[sqlx_atomic::test(using = "reports")]
/// async fn refresh_writes_a_row() -> Result<(), sqlx_atomic::Error> {
///     refresh().await?;
///     let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM daily")
///         .fetch_one(postgres("reports"))
///         .await?;
///     assert_eq!(n, 1); // and rolled back after the test
///     assert!(using("reports").in_atomic_block()?);
///     Ok(())
/// }
/// ```
///
/// Inside, `#[atomic]` blocks nest as savepoints, `durable` blocks are allowed, and
/// `on_commit` hooks never run (capture them with `testing::capture_on_commit`). The test fails
/// when the body panics, with the body's own message, or returns `Err`, as with `#[test]`.
///
/// # Two forms
///
/// **Alone**, it replaces `#[tokio::test]`: the function becomes a synchronous `#[test]` whose
/// body runs on one multi-thread tokio runtime shared by every test of the binary
/// (`sqlx_atomic::testing::block_on`). The installed databases and their pools are process-wide,
/// and a pooled PostgreSQL or MySQL connection dies with the runtime that opened it: with a
/// runtime per test, as `#[tokio::test]` has, the next test that picks such a connection up
/// reconnects (sqlx's check before acquiring) or, without that check, fails ("A Tokio 1.x context
/// was found, but it is being shutdown"). The function can still be called like any other
/// function, e.g. from another test.
///
/// **Above another test attribute** (one whose path ends in `test`, such as `#[tokio::test]`,
/// written after this one), that attribute stays and runs the function; only the body is
/// wrapped, and the function stays async. Its runtime ends with the test, so give such tests
/// aliases of their own, or accept the above for the pooled PostgreSQL and MySQL connections they
/// open; SQLite connections are not tied to a runtime.
///
/// ```ignore
/// #[sqlx_atomic::test(using = "scratch")]
/// #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// async fn on_its_own_runtime() { /* .. */ }
/// ```
///
/// # Databases
///
/// Before the transactions begin, the test awaits its `setup` function if it has one; then, if no
/// databases are installed yet, it installs `Databases::from_env()`: `DATABASE_URL` for the alias
/// `"default"` and `DATABASE_URL_<ALIAS>` for the others, like Django's test settings (see
/// `sqlx_atomic::testing::ensure_installed`). Databases configured in code must therefore be
/// installed by the `setup` function, not in the body: the aliases are looked up when the
/// transactions begin, before the body runs. A test whose alias is installed by neither fails
/// with a message saying so.
///
/// ```ignore
/// use sqlx_atomic::{Database, Databases};
/// use tokio::sync::OnceCell;
///
/// async fn setup() {
///     static ONCE: OnceCell<()> = OnceCell::const_new();
///     ONCE.get_or_init(|| async {
///         Databases::new()
///             .add("default", Database::connect_lazy("sqlite://test.db?mode=rwc").unwrap())
///             .install()
///             .unwrap();
///         // migrations, fixtures shared by every test..
///     })
///     .await;
/// }
///
/// #[sqlx_atomic::test(setup = setup)]
/// async fn uses_the_code_configuration() { /* .. */ }
/// ```
///
/// # Arguments
///
/// All are optional, separated by commas:
///
/// - `using = "alias"`: a database alias to run the test in a transaction on; repeat it for
///   several (`using = "a", using = "b"`) or give a list (`using = ["a", "b"]`). Aliases are
///   non-empty string literals, each named once. Without `using`, the test uses `"default"`.
/// - `setup = path::to::setup`: an `async fn()` (returning `()`) awaited before the databases are
///   looked up and the transactions begin, on every run of the test: guard one-time work with a
///   `OnceCell` as above.
/// - `crate = "path::to::sqlx_atomic"`: where to find the `sqlx_atomic` crate, for code that
///   reaches it through a re-export or a renamed dependency (default: `"::sqlx_atomic"`).
///
/// # What it accepts
///
/// An `async fn` with a body, returning `()`, `Result<(), E>` with `E: Debug`, or anything else
/// `#[test]` accepts. Alone, it takes no parameters; with another test attribute, that attribute
/// decides. A plain `#[test]` next to it is an error (the function is a test already), and so is
/// a function another attribute written above it has already made synchronous.
///
/// Write it as `#[sqlx_atomic::test]`, or import it under another name: like `use tokio::*`,
/// `use sqlx_atomic::*` with the feature `testing` makes every plain `#[test]` of the module
/// ambiguous (error E0659) between the built-in attribute and this one.
///
/// # Expansion
///
/// Shown slightly simplified:
///
/// ```ignore
/// #[sqlx_atomic::test(using = ["a", "b"], setup = setup)]
/// async fn t() -> Result<(), E> { body }
/// // becomes
/// #[test]
/// fn t() -> Result<(), E> {
///     ::sqlx_atomic::testing::block_on(async move {
///         ::sqlx_atomic::testing::__setup(setup).await;
///         ::sqlx_atomic::testing::__prepare(&["a", "b"]); // env install, alias check
///         ::sqlx_atomic::testing::rollback_after(["a", "b"], async move {
///             let ret: Result<(), E> = { body };
///             ret
///         })
///         .await
///     })
/// }
/// ```
///
/// With another test attribute, the function keeps `async` and that attribute, and its body is
/// what `block_on` receives above. A mistake in the attribute or the function is reported at the
/// offending tokens, all mistakes at once, and the function is then emitted unchanged.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    test_attr::test(args.into(), item.into()).into()
}
