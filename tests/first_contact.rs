//! What a newcomer meets first: a mistyped alias names the configured one it is close to, a hook
//! that only panics is a hook like any other, and asking a small pool for a second connection
//! while the task holds one is refused instead of deadlocking. On SQLite, PostgreSQL and MariaDB.

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use common::{Backend, RT};
use sqlx::AssertSqlSafe;
use sqlx_atomic::{Atomic, Databases, Error, ErrorKind, on_commit};

/// Each backend's aliases here: a pool of 2, for the `pool()` tests (one test per backend, so
/// that no other test takes its connections), and a pool of 4 for the hook tests.
fn aliases(b: Backend) -> (&'static str, &'static str) {
    match b {
        Backend::Sqlite => ("sqlite2", "sqlite_hooks"),
        Backend::Postgres => ("pg2", "pg_hooks"),
        Backend::MySql => ("my2", "my_hooks"),
        _ => unreachable!("the tests here run on SQLite, PostgreSQL and MariaDB"),
    }
}

/// A backend's alias with a pool of one connection.
fn one(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "sqlite_one",
        Backend::Postgres => "pg_one",
        Backend::MySql => "my_one",
        _ => unreachable!("the tests here run on SQLite, PostgreSQL and MariaDB"),
    }
}

/// Installs `default` and `other` (SQLite) and each backend's aliases; returns the backends whose
/// server answers.
fn available() -> &'static [Backend] {
    static AVAILABLE: OnceLock<Vec<Backend>> = OnceLock::new();
    AVAILABLE.get_or_init(|| {
        RT.block_on(async {
            let (small, hooks) = aliases(Backend::Sqlite);
            let mut dbs = Databases::new()
                .add("default", common::sqlite_db("first_contact", 4).await)
                .add("other", common::sqlite_db("first_contact_other", 4).await)
                .add(small, common::sqlite_db("first_contact_small", 2).await)
                .add(hooks, common::sqlite_db("first_contact", 4).await)
                .add(
                    one(Backend::Sqlite),
                    common::sqlite_db("first_contact_one", 1).await,
                );
            let mut available = vec![Backend::Sqlite];
            for b in [Backend::Postgres, Backend::MySql] {
                if let Some(url) = common::server_url(b).await {
                    let (small, hooks) = aliases(b);
                    dbs = dbs
                        .add(small, common::server_db(b, &url, 2))
                        .add(hooks, common::server_db(b, &url, 4))
                        .add(one(b), common::server_db(b, &url, 1));
                    available.push(b);
                }
            }
            dbs.install().expect("install");
            available
        })
    })
}

/// Runs `f` on each available backend, on a worker thread of the shared runtime.
fn on_each<F, Fut>(f: F)
where
    F: Fn(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    for &b in available() {
        if let Err(e) = RT.block_on(RT.spawn(f(b))) {
            match e.try_into_panic() {
                Ok(p) => panic!("{b:?}: {}", common::panic_message(&*p)),
                Err(e) => panic!("{b:?}: test task failed: {e}"),
            }
        }
    }
}

/// Runs one statement through the ambient handle of `alias`, on its backend.
async fn exec(b: Backend, alias: &'static str, sql: String) -> Result<(), Error> {
    let sql = AssertSqlSafe(sql);
    match b {
        Backend::Sqlite => {
            sqlx::query(sql).execute(sqlx_atomic::sqlite(alias)).await?;
        }
        Backend::Postgres => {
            sqlx::query(sql)
                .execute(sqlx_atomic::postgres(alias))
                .await?;
        }
        _ => {
            sqlx::query(sql).execute(sqlx_atomic::mysql(alias)).await?;
        }
    }
    Ok(())
}

/// The values in `table`, read through the ambient handle outside any block.
async fn values(b: Backend, alias: &'static str, table: &str) -> Vec<i64> {
    let sql = AssertSqlSafe(format!("SELECT v FROM {table} ORDER BY v"));
    match b {
        Backend::Sqlite => {
            sqlx::query_scalar(sql)
                .fetch_all(sqlx_atomic::sqlite(alias))
                .await
        }
        Backend::Postgres => {
            sqlx::query_scalar(sql)
                .fetch_all(sqlx_atomic::postgres(alias))
                .await
        }
        _ => {
            sqlx::query_scalar(sql)
                .fetch_all(sqlx_atomic::mysql(alias))
                .await
        }
    }
    .expect("reading the table")
}

/// A fresh table of this test, on `alias`.
async fn table(b: Backend, alias: &'static str, name: &str) -> String {
    let table = format!("first_contact_{name}_{}", std::process::id());
    exec(b, alias, format!("DROP TABLE IF EXISTS {table}"))
        .await
        .unwrap();
    exec(
        b,
        alias,
        format!("CREATE TABLE {table} (v BIGINT PRIMARY KEY)"),
    )
    .await
    .unwrap();
    table
}

// 1. An unknown alias names the closest configured one.

/// The configured aliases, as the message lists them.
fn configured() -> String {
    sqlx_atomic::installed_aliases()
        .iter()
        .map(|a| format!("`{a}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn a_mistyped_alias_names_the_configured_one_it_is_close_to() {
    available();
    RT.block_on(async {
        let e = Atomic::new()
            .using("defualt")
            .run(async { Ok::<_, Error>(()) })
            .await
            .unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::UnknownAlias), "{e}");
        assert_eq!(e.alias(), Some("defualt"));
        assert_eq!(
            e.to_string(),
            format!(
                "database `defualt`: this alias is not configured; did you mean `default`? \
                 (configured: {}; see `Databases::add`)",
                configured()
            )
        );
        // Case does not hide the typo.
        let e = sqlx_atomic::pool::<sqlx::Sqlite>("Other").unwrap_err();
        assert!(e.to_string().contains("did you mean `other`?"), "{e}");
    });
}

#[test]
fn an_alias_close_to_none_lists_the_configured_ones() {
    available();
    RT.block_on(async {
        let e = sqlx_atomic::pool::<sqlx::Sqlite>("analytics").unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::UnknownAlias), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "database `analytics`: this alias is not configured (configured: {}; see \
                 `Databases::add`)",
                configured()
            )
        );
        // An input of any length is compared cheaply and named as it was given.
        let long = "x".repeat(10_000);
        let e = sqlx_atomic::pool::<sqlx::Sqlite>(&long).unwrap_err();
        assert!(!e.to_string().contains("did you mean"), "{e}");
    });
}

#[test]
fn a_query_on_a_mistyped_alias_says_which_alias_was_meant() {
    available();
    RT.block_on(async {
        let err = sqlx::query("SELECT 1")
            .execute(sqlx_atomic::sqlite("defualt"))
            .await
            .unwrap_err();
        // The message reaches code that only sees the `sqlx::Error`.
        assert!(
            err.to_string().contains(
                "database `defualt`: this alias is not configured; did you mean `default`?"
            ),
            "{err}"
        );
        let e = Error::from(err);
        assert!(matches!(e.kind(), ErrorKind::UnknownAlias), "{e}");
        assert!(e.to_string().contains("did you mean `default`?"), "{e}");
        // The same in a block on the right alias: the handle's alias is the one looked up.
        let e = Atomic::new()
            .run(async {
                sqlx::query("SELECT 1")
                    .execute(sqlx_atomic::sqlite("othr"))
                    .await?;
                Ok::<_, Error>(())
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("did you mean `other`?"), "{e}");
    });
}

// 2. A hook that only panics is a hook.

#[test]
fn a_hook_that_only_panics_runs_after_the_commit_and_its_panic_propagates() {
    on_each(|b| async move {
        let (_, alias) = aliases(b);
        let table = table(b, alias, "panicking_hooks").await;
        // One hook of each form that never returns, and, for comparison, one returning `()`
        // that panics. Each block commits its row, then its hook panics: the panic comes out
        // of the block, and the hook registered after it is dropped.
        let later = Arc::new(Mutex::new(Vec::new()));
        for form in 0..5i64 {
            let (table, later) = (table.clone(), later.clone());
            let joined = tokio::spawn(async move {
                Atomic::new()
                    .using(alias)
                    .run(async {
                        exec(b, alias, format!("INSERT INTO {table} (v) VALUES ({form})")).await?;
                        let hook = sqlx_atomic::using(alias);
                        match form {
                            0 => hook.on_commit(|| panic!("boom 0")).await?,
                            1 => hook.on_commit(|| unreachable!("boom 1")).await?,
                            2 => hook.on_commit(|| -> ! { panic!("boom 2") }).await?,
                            3 => hook.on_commit(|| async { panic!("boom 3") }).await?,
                            _ => {
                                hook.on_commit(move || {
                                    if form == 4 {
                                        panic!("boom 4")
                                    }
                                })
                                .await?
                            }
                        }
                        let later = later.clone();
                        on_commit(move || later.lock().unwrap().push(form))
                            .using(alias)
                            .await?;
                        Ok::<_, Error>(())
                    })
                    .await
            })
            .await;
            let panic = joined.expect_err("the hook's panic comes out of the block");
            let payload = panic.try_into_panic().expect("a panic");
            let message = common::panic_message(&*payload);
            assert!(message.ends_with(&format!("boom {form}")), "{message}");
        }
        assert_eq!(values(b, alias, &table).await, [0, 1, 2, 3, 4]);
        assert!(
            later.lock().unwrap().is_empty(),
            "the hooks after a failed one are dropped"
        );
        exec(b, alias, format!("DROP TABLE {table}")).await.unwrap();
    });
}

#[test]
fn a_robust_hook_that_only_panics_lets_the_next_hooks_run() {
    on_each(|b| async move {
        let (_, alias) = aliases(b);
        let table = table(b, alias, "robust_panicking_hooks").await;
        let ran = Arc::new(Mutex::new(Vec::new()));
        let r = ran.clone();
        let t = table.clone();
        Atomic::new()
            .using(alias)
            .run(async move {
                exec(b, alias, format!("INSERT INTO {t} (v) VALUES (1)")).await?;
                on_commit(|| panic!("boom"))
                    .using(alias)
                    .name("panics")
                    .robust()
                    .await?;
                on_commit(move || r.lock().unwrap().push("next"))
                    .using(alias)
                    .await?;
                Ok::<_, Error>(())
            })
            .await
            .unwrap();
        assert_eq!(*ran.lock().unwrap(), ["next"]);
        assert_eq!(values(b, alias, &table).await, [1]);
        exec(b, alias, format!("DROP TABLE {table}")).await.unwrap();
    });
}

// 4. `pool()` refuses what would deadlock.

macro_rules! pool_suite {
    ($module:ident, $db:ty, $backend:expr) => {
        mod $module {
            use crate::common::{self, Backend, RT};
            use crate::{aliases, available};
            use sqlx_atomic::{Atomic, Error, ErrorKind, Handle};
            type DB = $db;
            const B: Backend = $backend;

            /// One statement through the block's connection (the ambient handle).
            async fn select_1(alias: &'static str) -> Result<(), Error> {
                sqlx::query("SELECT 1")
                    .execute(Handle::<DB>::new(alias))
                    .await?;
                Ok(())
            }

            #[test]
            fn pool_refuses_only_what_would_deadlock() {
                if !available().contains(&B) {
                    return;
                }
                let alias = aliases(B).0;
                RT.block_on(RT.spawn(async move {
                    let pool = sqlx_atomic::pool::<DB>(alias).unwrap();
                    assert_eq!(pool.options().get_max_connections(), 2);

                    // Outside any block, every connection taken: the task holds none, so the
                    // pool is returned (a query on it waits for another task's connection).
                    let taken = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());
                    assert_eq!((pool.size(), pool.num_idle()), (2, 0));
                    sqlx_atomic::pool::<DB>(alias).expect("outside a block, the pool");
                    // In a block before its first query, the task holds none yet either.
                    Atomic::new()
                        .using(alias)
                        .run(async {
                            sqlx_atomic::pool::<DB>(alias).expect("before the first query");
                            Ok::<_, Error>(())
                        })
                        .await
                        .unwrap();
                    drop(taken);
                    common::settle::<DB>(alias).await;

                    // In a block, a connection free: reading through a second connection works.
                    Atomic::new()
                        .using(alias)
                        .run(async {
                            select_1(alias).await?;
                            let pool = sqlx_atomic::pool::<DB>(alias)
                                .expect("with a free connection, the pool");
                            sqlx::query("SELECT 1").execute(&pool).await?;
                            Ok::<_, Error>(())
                        })
                        .await
                        .unwrap();
                    common::settle::<DB>(alias).await;

                    // In a block, after a query, the other connection taken: another task
                    // may give one back, so the pool is returned (with a warning in the log).
                    let taken = pool.acquire().await.unwrap();
                    Atomic::new()
                        .using(alias)
                        .run(async {
                            select_1(alias).await?;
                            assert_eq!((pool.size(), pool.num_idle()), (2, 0));
                            sqlx_atomic::pool::<DB>(alias).expect("another task may free one");
                            Ok::<_, Error>(())
                        })
                        .await
                        .unwrap();
                    drop(taken);
                    common::settle::<DB>(alias).await;

                    // A pool of one, held by this task's block: nothing can ever free another.
                    let single = crate::one(B);
                    let e = Atomic::new()
                        .using(single)
                        .run(async {
                            select_1(single).await?;
                            let e = sqlx_atomic::pool::<DB>(single)
                                .expect_err("the task holds the pool's only connection");
                            // The block goes on: the error is `pool()`'s alone.
                            select_1(single).await?;
                            Ok::<_, Error>(e)
                        })
                        .await
                        .unwrap();
                    assert!(
                        matches!(e.kind(), ErrorKind::PoolHeldByTask { max_connections: 1 }),
                        "{e}"
                    );
                    assert_eq!(e.alias(), Some(single));
                    assert_eq!(
                        e.to_string(),
                        format!(
                            "database `{single}`: `pool()` was called while this task holds one \
                             of the alias's connections (in an atomic block) and all 1 \
                             connections of the pool are in use: a query through the pool would \
                             wait for a second connection while holding the first, which \
                             deadlocks once every task does the same; query through the ambient \
                             handle inside the block, take the pool's connection before entering \
                             the block, or give the pool more connections than the tasks that \
                             hold one at once"
                        )
                    );
                    common::settle::<DB>(alias).await;

                    // After the block the task holds nothing: the pool again, all taken or not.
                    let taken = (pool.acquire().await.unwrap(), pool.acquire().await.unwrap());
                    sqlx_atomic::pool::<DB>(alias).expect("after the block, the pool");
                    drop(taken);
                    common::settle::<DB>(alias).await;
                }))
                .unwrap();
            }
        }
    };
}

pool_suite!(sqlite, sqlx::Sqlite, Backend::Sqlite);
pool_suite!(postgres, sqlx::Postgres, Backend::Postgres);
pool_suite!(mariadb, sqlx::MySql, Backend::MySql);
