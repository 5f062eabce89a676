//! `#[sqlx_atomic::test]` for real, on SQLite, PostgreSQL and MariaDB.
//!
//! Every test installs the suite's databases (tests/common) through the attribute's `setup`
//! argument, so the servers are found as in the other suites (SQLX_ATOMIC_TEST_POSTGRES_URL /
//! SQLX_ATOMIC_TEST_MYSQL_URL; a missing server is skipped loudly, and fails the run under
//! CI=true).
//!
//! A rollback can only be seen after the test has returned, so the tests that check one come in
//! pairs: an `#[ignore]`d function with the attribute writes rows into the table its caller names
//! (a thread-local: the body runs on the calling thread), and a plain `#[test]` calls it like any
//! function, then checks from a fresh connection that the rows are gone.

mod common;

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use common::{Backend, Fx};
use sqlx_atomic::{Database, Error, testing, using};

/// The backends whose server answered, set by [`setup`].
static AVAILABLE: OnceLock<Vec<Backend>> = OnceLock::new();

/// The `setup` of every test here: installs the suite's databases once per process, plus one
/// alias per backend for the tests run by `#[tokio::test]` (see `composes_with_tokio_test`).
/// A backend whose server does not answer gets lazy pools that are never used, so that its
/// tests' transactions can be declared and their bodies skip.
async fn setup() {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let (mut dbs, available) = common::configure().await;
        dbs = dbs.add("sqlite_tokio", common::sqlite_db("main", 2).await);
        for b in [Backend::Postgres, Backend::MySql, Backend::PgBouncer] {
            let tokio_alias = format!("{}_tokio", b.alias());
            if available.contains(&b) {
                dbs = dbs.add(tokio_alias, common::server_db(b, &b.url(), 2));
            } else {
                let unused = || Database::connect_lazy(b.default_url()).expect("default url");
                dbs = dbs.add(b.alias(), unused()).add(tokio_alias, unused());
            }
        }
        dbs.install().expect("install");
        AVAILABLE.set(available).expect("set once");
    })
    .await;
}

/// Whether the tests of `b` run (after [`setup`]).
fn available(b: Backend) -> bool {
    AVAILABLE.get().expect("setup ran").contains(&b)
}

thread_local! {
    /// The table the `#[ignore]`d half of a pair writes into, named by the checking half.
    static TABLE: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn table() -> String {
    TABLE
        .with(|t| t.borrow().clone())
        .expect("run by the test that checks it, which names the table")
}

/// Calls `run` (a function with the attribute) with a fresh table of `b` named in [`TABLE`], then
/// checks from a fresh connection that the table is empty: whatever `run` wrote was rolled back.
/// Returns `run`'s outcome, `Err` with the payload if it panicked; `None` when `b` is skipped.
fn rolled_back<R>(b: Backend, run: impl FnOnce() -> R) -> Option<std::thread::Result<R>> {
    testing::block_on(setup());
    if !available(b) {
        return None;
    }
    let fx = testing::block_on(Fx::new(b));
    TABLE.with(|t| *t.borrow_mut() = Some(fx.table.clone()));
    let outcome = catch_unwind(AssertUnwindSafe(run));
    TABLE.with(|t| t.borrow_mut().take());
    let left = testing::block_on(fx.committed());
    // No connection of the test's alias was left inside a transaction.
    testing::block_on(fx.assert_pool_clean(b.alias()));
    testing::block_on(fx.drop_table());
    assert_eq!(
        left,
        Vec::<i64>::new(),
        "rows written by the test body survived it: it was not rolled back"
    );
    Some(outcome)
}

use common::panic_message as message;

macro_rules! attribute_suite {
    ($module:ident, $db:ty, $backend:expr, $alias:literal, $tokio_alias:literal) => {
        mod $module {
            use super::*;
            use sqlx::AssertSqlSafe;
            use sqlx_atomic::{Atomic, Handle, atomic};
            type DB = $db;
            const B: Backend = $backend;

            async fn insert(alias: &'static str, v: i64) -> Result<(), Error> {
                let sql = format!("INSERT INTO {} (v) VALUES ({v})", table());
                sqlx::query(AssertSqlSafe(sql))
                    .execute(Handle::<DB>::new(alias))
                    .await?;
                Ok(())
            }

            /// The rows of the table as the alias's ambient handle sees them (inside the test's
            /// transaction, its own uncommitted rows included).
            async fn seen_by(alias: &'static str) -> i64 {
                let sql = format!("SELECT COUNT(*) FROM {}", table());
                let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_one(Handle::<DB>::new(alias))
                    .await
                    .unwrap();
                n
            }

            /// The rows of the table as a fresh connection, outside any transaction, sees them.
            async fn committed() -> i64 {
                committed_on(B.alias()).await
            }

            /// The same, through the pool of `alias`. A body run by `#[tokio::test]` reads through
            /// its own alias's pool: a connection that the shared pool opened on that test's
            /// runtime would be dead once the runtime shuts down, and the checks that follow the
            /// test take the shared pool's idle connections without pinging them.
            /// The simple protocol (one message) reads correctly through a transaction pooler
            /// too, where a prepared statement would not.
            async fn committed_on(alias: &str) -> i64 {
                let pool = sqlx_atomic::pool::<DB>(alias).unwrap();
                let sql = format!("SELECT COUNT(*) FROM {}", table());
                let row = sqlx::raw_sql(AssertSqlSafe(sql))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                sqlx::Row::get::<i64, _>(&row, 0)
            }

            // Run by the harness.

            #[sqlx_atomic::test(using = $alias, setup = setup)]
            async fn the_body_runs_in_a_transaction_on_its_alias() {
                if !available(B) {
                    return;
                }
                assert!(using(B.alias()).in_atomic_block().unwrap());
                // Other aliases are left alone.
                assert!(!using(B.single()).in_atomic_block().unwrap());
                sqlx::query("SELECT 1")
                    .execute(Handle::<DB>::new(B.alias()))
                    .await
                    .unwrap();
            }

            #[sqlx_atomic::test(using = $alias, setup = setup)]
            async fn a_result_test_passes_with_ok() -> Result<(), Error> {
                if !available(B) {
                    return Ok(());
                }
                sqlx::query("SELECT 1")
                    .execute(Handle::<DB>::new(B.alias()))
                    .await?;
                assert!(using(B.alias()).in_atomic_block()?);
                Ok(())
            }

            #[sqlx_atomic::test(using = $tokio_alias, setup = setup)]
            #[tokio::test]
            async fn composes_with_tokio_test() {
                if !available(B) {
                    return;
                }
                assert!(using($tokio_alias).in_atomic_block().unwrap());
                // On tokio::test's runtime, not the shared one.
                let flavor = tokio::runtime::Handle::current().runtime_flavor();
                assert_eq!(flavor, tokio::runtime::RuntimeFlavor::CurrentThread);
            }

            // Called by the checks below.

            #[sqlx_atomic::test(using = $alias, setup = setup)]
            #[ignore = "called by rows_written_in_the_body_are_rolled_back"]
            async fn writes_rows() {
                insert(B.alias(), 1).await.unwrap();
                insert(B.alias(), 2).await.unwrap();
                assert_eq!(seen_by(B.alias()).await, 2);
                // Uncommitted while the test runs.
                assert_eq!(committed().await, 0);
            }

            #[test]
            fn rows_written_in_the_body_are_rolled_back() {
                rolled_back(B, writes_rows).map(|outcome| outcome.unwrap());
            }

            #[sqlx_atomic::test(using = $alias, setup = setup)]
            #[ignore = "called by a_panicking_body_is_rolled_back_and_keeps_its_message"]
            async fn writes_then_panics() {
                insert(B.alias(), 1).await.unwrap();
                panic!("the body's own panic, on {:?}", B);
            }

            #[test]
            fn a_panicking_body_is_rolled_back_and_keeps_its_message() {
                if let Some(outcome) = rolled_back(B, writes_then_panics) {
                    let payload = outcome.expect_err("the panic reaches the caller");
                    assert_eq!(
                        message(&*payload),
                        format!("the body's own panic, on {:?}", B)
                    );
                }
            }

            #[sqlx_atomic::test(using = $alias, setup = setup)]
            #[ignore = "called by an_err_result_is_returned_and_rolled_back"]
            async fn writes_then_fails() -> Result<(), Error> {
                insert(B.alias(), 1).await?;
                sqlx::query("SELECT * FROM sqlx_atomic_no_such_table")
                    .execute(Handle::<DB>::new(B.alias()))
                    .await?;
                unreachable!("the query fails");
            }

            #[test]
            fn an_err_result_is_returned_and_rolled_back() {
                if let Some(outcome) = rolled_back(B, writes_then_fails) {
                    let error = outcome.unwrap().expect_err("the body's error is returned");
                    assert!(error.is_database(), "{error}");
                    assert!(error.to_string().contains("no_such_table"), "{error}");
                }
            }

            #[atomic(using = $alias, durable = true)]
            async fn durable_insert(v: i64) -> Result<(), Error> {
                insert(B.alias(), v).await
            }

            #[sqlx_atomic::test(using = $alias, setup = setup)]
            #[ignore = "called by durable_blocks_run_inside_and_are_rolled_back"]
            async fn writes_in_durable_blocks() -> Result<(), Error> {
                durable_insert(1).await?;
                Atomic::new()
                    .using(B.alias())
                    .durable(true)
                    .run(insert(B.alias(), 2))
                    .await?;
                // The durable blocks only released savepoints of the test's transaction.
                assert_eq!(seen_by(B.alias()).await, 2);
                assert_eq!(committed().await, 0);
                Ok(())
            }

            #[test]
            fn durable_blocks_run_inside_and_are_rolled_back() {
                rolled_back(B, writes_in_durable_blocks).map(|outcome| outcome.unwrap().unwrap());
            }

            #[sqlx_atomic::test(using = $tokio_alias, setup = setup)]
            #[tokio::test]
            #[ignore = "called by the_tokio_test_form_is_rolled_back"]
            async fn writes_rows_on_tokio_test() {
                insert($tokio_alias, 1).await.unwrap();
                assert_eq!(seen_by($tokio_alias).await, 1);
                assert_eq!(committed_on($tokio_alias).await, 0);
            }

            #[test]
            fn the_tokio_test_form_is_rolled_back() {
                rolled_back(B, writes_rows_on_tokio_test).map(|outcome| outcome.unwrap());
            }
        }
    };
}

attribute_suite!(
    sqlite,
    sqlx::Sqlite,
    Backend::Sqlite,
    "sqlite",
    "sqlite_tokio"
);
attribute_suite!(
    postgres,
    sqlx::Postgres,
    Backend::Postgres,
    "pg",
    "pg_tokio"
);
attribute_suite!(mysql, sqlx::MySql, Backend::MySql, "my", "my_tokio");
attribute_suite!(
    pgbouncer,
    sqlx::Postgres,
    Backend::PgBouncer,
    "pgb",
    "pgb_tokio"
);

// Independent of the backend.

#[sqlx_atomic::test(setup = setup)]
async fn without_using_the_test_runs_on_default() {
    assert!(using("default").in_atomic_block().unwrap());
    assert!(!using("sqlite").in_atomic_block().unwrap());
}

#[sqlx_atomic::test(using = ["sqlite", "pg", "my"], setup = setup)]
async fn every_alias_of_a_list_is_in_a_transaction() {
    for b in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        assert!(using(b.alias()).in_atomic_block().unwrap(), "{b:?}");
    }
    assert!(!using("default").in_atomic_block().unwrap());
}

#[sqlx_atomic::test(using = "sqlite", setup = setup)]
#[should_panic(expected = "the body's own message")]
async fn a_panic_fails_the_test_with_the_body_s_message() {
    panic!("the body's own message");
}

mod reexport {
    pub use sqlx_atomic as sa;
}

#[sqlx_atomic::test(using = "other", setup = setup, crate = "crate::reexport::sa")]
async fn the_crate_can_be_reached_through_a_reexport() -> Result<(), Error> {
    assert!(using("other").in_atomic_block()?);
    Ok(())
}

#[sqlx_atomic::test(using = "sqlite", setup = setup)]
async fn an_early_return_returns_from_the_test() -> Result<(), Error> {
    if using("sqlite").in_atomic_block()? {
        return Ok(());
    }
    Err(Error::from(sqlx::Error::RowNotFound))
}

#[sqlx_atomic::test(using = "nobody_installed_this", setup = setup)]
#[ignore = "called by a_test_fails_when_its_alias_is_not_installed"]
async fn on_an_unknown_alias() {
    unreachable!("the alias is not installed")
}

#[test]
fn a_test_fails_when_its_alias_is_not_installed() {
    let payload = catch_unwind(on_an_unknown_alias).expect_err("the test fails");
    let message = message(&*payload);
    assert!(
        message.starts_with(
            "#[sqlx_atomic::test]: the database alias `nobody_installed_this` is not installed \
             (installed: sqlite, "
        ),
        "{message}"
    );
    assert!(
        message.contains("Set DATABASE_URL_NOBODY_INSTALLED_THIS before the first test runs"),
        "{message}"
    );
}

#[test]
fn block_on_shares_one_runtime_across_calls_and_threads() {
    let id = || testing::block_on(async { tokio::runtime::Handle::current().id() });
    let here = id();
    assert_eq!(id(), here);
    assert_eq!(std::thread::spawn(id).join().unwrap(), here);
    let flavor = testing::block_on(async { tokio::runtime::Handle::current().runtime_flavor() });
    assert_eq!(flavor, tokio::runtime::RuntimeFlavor::MultiThread);
}

/// Why tests share one runtime: a PostgreSQL connection opened by one call and given back to its
/// pool is still usable by the next call, even from a pool that hands idle connections out without
/// checking them first. With a runtime per call (as with a `#[tokio::test]` per test), the second
/// query often fails, "A Tokio 1.x context was found, but it is being shutdown" (whether it does
/// depends on tokio's shutdown timing, hence the 20 rounds).
#[test]
fn block_on_keeps_pooled_connections_usable_from_call_to_call() {
    testing::block_on(setup());
    if !available(Backend::Postgres) {
        return;
    }
    for round in 0..20 {
        let pool = testing::block_on(async {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .connect_lazy(&Backend::Postgres.url())
                .unwrap();
            sqlx::query("SELECT 1").execute(&pool).await.unwrap();
            // The connection goes back to the pool in a task of its own.
            tokio::time::timeout(std::time::Duration::from_secs(10), async {
                while pool.num_idle() == 0 {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the connection returns to the pool");
            pool
        });
        let second = testing::block_on(async { sqlx::query("SELECT 1").execute(&pool).await });
        if let Err(e) = second {
            panic!("round {round}: the pooled connection failed in the next call: {e}");
        }
    }
}
