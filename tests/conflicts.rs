//! Conflicts between transactions on real servers, with and without `retry`: PostgreSQL's
//! serialization failures, MariaDB's deadlocks (which roll the whole transaction back), and
//! SQLite's busy errors and lock modes. Concurrency is arranged with barriers and channels,
//! never with sleeps.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{Backend, RT};
use sqlx::AssertSqlSafe;
use sqlx_atomic::{
    Atomic, Conflict, Database, Databases, Error, ErrorKind, Isolation, LockMode, Retry,
};
use tokio::sync::{Barrier, oneshot};

struct Setup {
    postgres: bool,
    mysql: bool,
    pgbouncer: bool,
}

/// The aliases of this binary: `pg`, `pgb` (through pgbouncer, in transaction-pooling mode) and
/// `my` (pools of 16) when their servers answer (under
/// `CI=true` they must), and `lite`, a SQLite file in WAL mode with plain (deferred) BEGINs and
/// a 5 s busy timeout.
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        RT.block_on(async {
            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
            use std::str::FromStr;
            let dir =
                std::env::temp_dir().join(format!("sqlx-atomic-conflicts-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.join("lite.db").display());
            let opts = SqliteConnectOptions::from_str(&url)
                .unwrap()
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            let lite = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(opts)
                .await
                .unwrap();
            let mut dbs = Databases::new().add("lite", Database::from_pool(lite));
            let mut setup = Setup {
                postgres: false,
                mysql: false,
                pgbouncer: false,
            };
            if let Some(url) = common::server_url(Backend::Postgres).await {
                dbs = dbs.add("pg", common::server_db(Backend::Postgres, &url, 16));
                setup.postgres = true;
            }
            if let Some(url) = common::server_url(Backend::PgBouncer).await {
                dbs = dbs.add("pgb", common::server_db(Backend::PgBouncer, &url, 16));
                setup.pgbouncer = true;
            }
            if let Some(url) = common::server_url(Backend::MySql).await {
                dbs = dbs.add("my", common::server_db(Backend::MySql, &url, 16));
                setup.mysql = true;
            }
            dbs.install().unwrap();
            setup
        })
    })
}

/// A table `name` with one counter row (`id` 1, `n` 0) and a second row (`id` 2), made anew.
async fn counter_table(alias: &'static str, name: &str) {
    let ddl = [
        format!("DROP TABLE IF EXISTS {name}"),
        format!("CREATE TABLE {name} (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"),
        format!("INSERT INTO {name} (id, n) VALUES (1, 0), (2, 0)"),
    ];
    for sql in ddl {
        exec(alias, &sql).await.unwrap();
    }
}

/// Runs `sql` through the alias's ambient handle.
async fn exec(alias: &'static str, sql: &str) -> Result<(), Error> {
    let sql = AssertSqlSafe(sql.to_owned());
    match alias {
        "pg" | "pgb" => {
            sqlx::query(sql)
                .execute(sqlx_atomic::postgres(alias))
                .await?;
        }
        "my" => {
            sqlx::query(sql).execute(sqlx_atomic::mysql("my")).await?;
        }
        _ => {
            sqlx::query(sql).execute(sqlx_atomic::sqlite(alias)).await?;
        }
    }
    Ok(())
}

/// Reads row `id`'s counter through the alias's ambient handle.
async fn read(alias: &'static str, table: &str, id: i64) -> Result<i64, Error> {
    let sql = AssertSqlSafe(format!("SELECT n FROM {table} WHERE id = {id}"));
    Ok(match alias {
        "pg" | "pgb" => sqlx::query_scalar::<_, i32>(sql)
            .fetch_one(sqlx_atomic::postgres(alias))
            .await?
            .into(),
        "my" => sqlx::query_scalar::<_, i32>(sql)
            .fetch_one(sqlx_atomic::mysql("my"))
            .await?
            .into(),
        _ => {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(sqlx_atomic::sqlite(alias))
                .await?
        }
    })
}

/// `UPDATE … SET n = n + 1` of row `id`: takes the row's lock, keeps no stale value.
async fn bump(alias: &'static str, table: &str, id: i64) -> Result<(), Error> {
    exec(
        alias,
        &format!("UPDATE {table} SET n = n + 1 WHERE id = {id}"),
    )
    .await
}

/// Read-modify-write of row `id`: the increment a conflict can interrupt.
async fn increment(alias: &'static str, table: &str, id: i64) -> Result<(), Error> {
    let n = read(alias, table, id).await?;
    exec(
        alias,
        &format!("UPDATE {table} SET n = {} WHERE id = {id}", n + 1),
    )
    .await
}

/// One SQLite test at a time: they share the `lite` file, and a stale deferred transaction that
/// meets another test's writer holding the lock gets plain BUSY instead of BUSY_SNAPSHOT.
fn lite_file() -> std::sync::MutexGuard<'static, ()> {
    static LITE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LITE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn run(f: impl Future<Output = ()> + Send + 'static) {
    RT.block_on(RT.spawn(f)).unwrap();
}

/// 16 tasks share `calls` SERIALIZABLE increments of one row, each call run by `call`; returns
/// the errors of the calls that failed.
async fn hot_row<F, Fut>(calls: u32, call: F) -> Vec<Error>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), Error>> + Send,
{
    let next = Arc::new(AtomicU32::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let next = next.clone();
        let call = call.clone();
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < calls {
                if let Err(e) = call().await {
                    errors.push(e);
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for w in workers {
        errors.extend(w.await.unwrap());
    }
    errors
}

/// One SERIALIZABLE increment of row 1 of `table` that counts its committed hook in `hooks`.
async fn serializable_increment(
    alias: &'static str,
    table: &'static str,
    retry: bool,
    hooks: &'static AtomicU32,
) -> Result<(), Error> {
    let block = Atomic::new()
        .using(alias)
        .isolation(Isolation::Serializable);
    let body = || async {
        increment(alias, table, 1).await?;
        sqlx_atomic::on_commit(|| {
            hooks.fetch_add(1, Ordering::Relaxed);
        })
        .using(alias)
        .await
    };
    if retry {
        block.retry(Retry::new(1000)).run(body).await
    } else {
        block.run(body()).await
    }
}

#[test]
fn rule_11_3_postgres_serializable_increments_with_retry_all_count() {
    if !setup().postgres {
        return;
    }
    run(async {
        static HOOKS: AtomicU32 = AtomicU32::new(0);
        let table = "conflict_pg_retry";
        counter_table("pg", table).await;
        let errors = hot_row(500, || serializable_increment("pg", table, true, &HOOKS)).await;
        assert!(errors.is_empty(), "{:?}", errors.first());
        assert_eq!(read("pg", table, 1).await.unwrap(), 500);
        assert_eq!(
            HOOKS.load(Ordering::Relaxed),
            500,
            "one hook per committed call"
        );
    });
}

#[test]
fn rule_11_3_postgres_through_pgbouncer_serializable_increments_with_retry_all_count() {
    if !setup().pgbouncer {
        return;
    }
    run(async {
        static HOOKS: AtomicU32 = AtomicU32::new(0);
        let table = "conflict_pgb_retry";
        counter_table("pgb", table).await;
        let errors = hot_row(200, || serializable_increment("pgb", table, true, &HOOKS)).await;
        assert!(errors.is_empty(), "{:?}", errors.first());
        assert_eq!(read("pgb", table, 1).await.unwrap(), 200);
        assert_eq!(
            HOOKS.load(Ordering::Relaxed),
            200,
            "one hook per committed call"
        );
    });
}

#[test]
fn rule_11_3_postgres_serializable_increments_without_retry_fail_with_40001() {
    if !setup().postgres {
        return;
    }
    run(async {
        let table = "conflict_pg_no_retry";
        counter_table("pg", table).await;
        // First a round that cannot avoid the conflict: 16 transactions read the same value
        // before any of them writes, so one commits and fifteen fail.
        let barrier = Arc::new(Barrier::new(16));
        let mut round = Vec::new();
        for _ in 0..16 {
            let barrier = barrier.clone();
            round.push(tokio::spawn(async move {
                Atomic::new()
                    .using("pg")
                    .isolation(Isolation::Serializable)
                    .run(async {
                        let n = read("pg", table, 1).await?;
                        barrier.wait().await;
                        exec(
                            "pg",
                            &format!("UPDATE {table} SET n = {} WHERE id = 1", n + 1),
                        )
                        .await
                    })
                    .await
            }));
        }
        let mut failed = 0;
        for r in round {
            if let Err(e) = r.await.unwrap() {
                assert!(e.is_serialization_failure() && e.is_retryable(), "{e}");
                assert_eq!(e.code().as_deref(), Some("40001"));
                failed += 1;
            }
        }
        assert_eq!(failed, 15);
        static HOOKS: AtomicU32 = AtomicU32::new(0);
        let errors = hot_row(484, || serializable_increment("pg", table, false, &HOOKS)).await;
        for e in &errors {
            assert!(e.is_serialization_failure(), "{e}");
        }
        let successes = 484 - errors.len() as u32;
        assert_eq!(
            read("pg", table, 1).await.unwrap(),
            1 + i64::from(successes)
        );
        assert_eq!(HOOKS.load(Ordering::Relaxed), successes);
    });
}

/// Two transactions lock rows 1 and 2 in opposite orders, each waiting at `barrier` after its
/// first lock (on the first attempt only), so that their second locks deadlock. `nested`: the
/// second update runs in a nested block whose error the outer body catches.
async fn deadlock_pair(table: &'static str, retry: bool, nested: bool) -> [Result<u32, Error>; 2] {
    let barrier = Arc::new(Barrier::new(2));
    let mut tasks = Vec::new();
    for (first, second) in [(1, 2), (2, 1)] {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let attempts = Arc::new(AtomicU32::new(0));
            let body = || {
                let attempts = attempts.clone();
                let barrier = barrier.clone();
                async move {
                    if attempts.fetch_add(1, Ordering::Relaxed) == 0 {
                        bump("my", table, first).await?;
                        barrier.wait().await;
                    } else {
                        bump("my", table, first).await?;
                    }
                    if nested {
                        let inner = Atomic::new()
                            .using("my")
                            .run(bump("my", table, second))
                            .await;
                        // Caught, as an outer body that recovers from an inner failure does.
                        if let Err(e) = inner {
                            assert!(!e.to_string().contains("1305"), "{e}");
                        }
                        Ok::<_, Error>(())
                    } else {
                        bump("my", table, second).await
                    }
                }
            };
            let block = Atomic::new().using("my");
            let r = if retry {
                block.retry(Retry::new(10)).run(body).await
            } else {
                block.run(body()).await
            };
            r.map(|()| attempts.load(Ordering::Relaxed))
        }));
    }
    let b = tasks.pop().unwrap().await.unwrap();
    let a = tasks.pop().unwrap().await.unwrap();
    [a, b]
}

#[test]
fn rule_11_3_mariadb_deadlock_fails_one_transaction_and_retry_brings_it_through() {
    if !setup().mysql {
        return;
    }
    run(async {
        let table = "conflict_my_deadlock";
        counter_table("my", table).await;
        let [a, b] = deadlock_pair(table, false, false).await;
        let errors: Vec<Error> = [a, b].into_iter().filter_map(Result::err).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].is_deadlock() && errors[0].is_retryable(),
            "{}",
            errors[0]
        );
        // The survivor's two increments.
        assert_eq!(
            read("my", table, 1).await.unwrap() + read("my", table, 2).await.unwrap(),
            2
        );

        counter_table("my", table).await;
        let [a, b] = deadlock_pair(table, true, false).await;
        let attempts = a.unwrap() + b.unwrap();
        assert_eq!(attempts, 3, "the victim ran a second time");
        assert_eq!(read("my", table, 1).await.unwrap(), 2);
        assert_eq!(read("my", table, 2).await.unwrap(), 2);
    });
}

#[test]
fn rule_11_2_mariadb_deadlock_in_a_nested_block_fails_the_outer_block_with_1213() {
    if !setup().mysql {
        return;
    }
    run(async {
        let table = "conflict_my_nested";
        counter_table("my", table).await;
        let [a, b] = deadlock_pair(table, false, true).await;
        let errors: Vec<Error> = [a, b].into_iter().filter_map(Result::err).collect();
        // The server rolled the victim's whole transaction back: its outer body caught the
        // nested block's error and returned Ok, but the block reports the deadlock, never a
        // 1305 about a savepoint the server dropped, and never Ok.
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert!(matches!(e.kind(), ErrorKind::RolledBack(_)), "{e}");
        assert_eq!(e.conflict(), Some(Conflict::Deadlock), "{e}");
        assert_eq!(e.code().as_deref(), Some("40001"));
        assert!(!e.to_string().contains("1305"), "{e}");
        assert_eq!(
            read("my", table, 1).await.unwrap() + read("my", table, 2).await.unwrap(),
            2
        );

        counter_table("my", table).await;
        let [a, b] = deadlock_pair(table, true, true).await;
        assert_eq!(a.unwrap() + b.unwrap(), 3);
        assert_eq!(read("my", table, 1).await.unwrap(), 2);
        assert_eq!(read("my", table, 2).await.unwrap(), 2);
    });
}

#[test]
fn rule_11_4_sqlite_immediate_writers_all_succeed() {
    setup();
    let _file = lite_file();
    run(async {
        let table = "conflict_lite_immediate";
        counter_table("lite", table).await;
        let mut tasks = Vec::new();
        for _ in 0..8 {
            tasks.push(tokio::spawn(async move {
                for _ in 0..20 {
                    Atomic::new()
                        .using("lite")
                        .lock(LockMode::Immediate)
                        .run(increment("lite", table, 1))
                        .await?;
                }
                Ok::<_, Error>(())
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(read("lite", table, 1).await.unwrap(), 160);
    });
}

/// A deferred transaction reads, another connection writes and commits, then the first tries
/// to write: SQLite refuses the upgrade of its stale snapshot with `SQLITE_BUSY_SNAPSHOT` (517).
async fn stale_upgrade(table: &'static str, retry: bool) -> Result<u32, Error> {
    let (read_tx, read_rx) = oneshot::channel::<()>();
    let (wrote_tx, wrote_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        read_rx.await.unwrap();
        // Outside any block: an autocommit write on another connection.
        exec(
            "lite",
            &format!("UPDATE {table} SET n = n + 100 WHERE id = 1"),
        )
        .await
        .unwrap();
        wrote_tx.send(()).unwrap();
    });
    let attempts = AtomicU32::new(0);
    let signals = std::sync::Mutex::new(Some((read_tx, wrote_rx)));
    let body = || async {
        attempts.fetch_add(1, Ordering::Relaxed);
        let n = read("lite", table, 1).await?;
        let first = signals.lock().unwrap().take();
        if let Some((read_tx, wrote_rx)) = first {
            read_tx.send(()).unwrap();
            wrote_rx.await.unwrap();
        }
        exec(
            "lite",
            &format!("UPDATE {table} SET n = {} WHERE id = 1", n + 1),
        )
        .await
    };
    let block = Atomic::new().using("lite").lock(LockMode::Deferred);
    let r = if retry {
        block.retry(3).run(body).await
    } else {
        block.run(body()).await
    };
    writer.await.unwrap();
    r.map(|()| attempts.load(Ordering::Relaxed))
}

#[test]
fn rule_11_3_sqlite_a_stale_deferred_upgrade_is_busy_and_retry_recovers() {
    setup();
    let _file = lite_file();
    run(async {
        let table = "conflict_lite_deferred";
        counter_table("lite", table).await;
        let e = stale_upgrade(table, false).await.unwrap_err();
        assert_eq!(e.conflict(), Some(Conflict::Busy), "{e}");
        assert_eq!(e.code().as_deref(), Some("517"));
        assert!(e.is_retryable());
        assert_eq!(
            read("lite", table, 1).await.unwrap(),
            100,
            "only the other write"
        );

        counter_table("lite", table).await;
        assert_eq!(stale_upgrade(table, true).await.unwrap(), 2);
        assert_eq!(read("lite", table, 1).await.unwrap(), 101);
    });
}

#[test]
fn rule_11_3_retry_gives_up_after_its_attempts_and_counts_them() {
    setup();
    let _file = lite_file();
    run(async {
        let table = "conflict_lite_exhausted";
        counter_table("lite", table).await;
        // Every attempt meets a stale snapshot: each reads, then lets another connection write.
        let attempts = AtomicU32::new(0);
        let e = Atomic::new()
            .using("lite")
            .retry(Retry::new(2).backoff(Duration::ZERO, Duration::ZERO))
            .run(|| async {
                attempts.fetch_add(1, Ordering::Relaxed);
                let n = read("lite", table, 1).await?;
                let pool = sqlx_atomic::pool::<sqlx::Sqlite>("lite").unwrap();
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE {table} SET n = n + 100 WHERE id = 1"
                )))
                .execute(&pool)
                .await?;
                exec(
                    "lite",
                    &format!("UPDATE {table} SET n = {} WHERE id = 1", n + 1),
                )
                .await
            })
            .await
            .unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::RetriesExhausted { attempts: 3, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("3 attempts"), "{e}");
        assert_eq!(e.conflict(), Some(Conflict::Busy));
        assert_eq!(attempts.load(Ordering::Relaxed), 3);
        // A body that fails with anything but a conflict runs once.
        let once = AtomicU32::new(0);
        let e = Atomic::new()
            .using("lite")
            .retry(5)
            .run(|| async {
                once.fetch_add(1, Ordering::Relaxed);
                exec(
                    "lite",
                    &format!("INSERT INTO {table} (id, n) VALUES (1, 0)"),
                )
                .await
            })
            .await
            .unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        assert_eq!(once.load(Ordering::Relaxed), 1);
    });
}

/// A block whose connection the server ends just before its COMMIT: the COMMIT's outcome is
/// unknown to the client, so the block reports `CommitUnknown` and `retry` does not run it again.
async fn commit_cut_off(alias: &'static str) {
    let table = if alias == "pg" {
        "conflict_pg_cut"
    } else {
        "conflict_my_cut"
    };
    counter_table(alias, table).await;
    let attempts = AtomicU32::new(0);
    let e = Atomic::new()
        .using(alias)
        .retry(3)
        .run(|| async {
            attempts.fetch_add(1, Ordering::Relaxed);
            bump(alias, table, 1).await?;
            // The server ends this block's session from another connection.
            if alias == "pg" {
                let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(sqlx_atomic::postgres(alias))
                    .await?;
                let pool = sqlx_atomic::pool::<sqlx::Postgres>(alias)?;
                sqlx::query("SELECT pg_terminate_backend($1)")
                    .bind(pid)
                    .execute(&pool)
                    .await?;
                // The signal is handled asynchronously: wait until the session is gone.
                while sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = $1",
                )
                .bind(pid)
                .fetch_one(&pool)
                .await?
                    > 0
                {}
            } else {
                let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
                    .fetch_one(sqlx_atomic::mysql(alias))
                    .await?;
                let pool = sqlx_atomic::pool::<sqlx::MySql>(alias)?;
                sqlx::query(AssertSqlSafe(format!("KILL CONNECTION {id}")))
                    .execute(&pool)
                    .await?;
                while sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM information_schema.processlist WHERE id = ?",
                )
                .bind(id)
                .fetch_one(&pool)
                .await?
                    > 0
                {}
            }
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert!(e.is_commit_unknown(), "{e}");
    assert!(!e.is_retryable());
    assert_eq!(
        attempts.load(Ordering::Relaxed),
        1,
        "an unknown outcome is never retried"
    );
    // The server had not committed it (the session ended first): reconciling finds no change.
    assert_eq!(read(alias, table, 1).await.unwrap(), 0);
}

#[test]
fn rule_11_3_a_commit_cut_off_by_the_server_is_unknown_and_not_retried() {
    let s = setup();
    run(async move {
        if s.postgres {
            commit_cut_off("pg").await;
        }
        if s.mysql {
            commit_cut_off("my").await;
        }
    });
}
