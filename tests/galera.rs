//! Write conflicts between the nodes of a MariaDB Galera cluster (`.ci/galera start`, URLs in
//! `SQLX_ATOMIC_TEST_GALERA_URLS`): Galera reports a conflict as a deadlock (1213), at any
//! statement or at COMMIT, and has then rolled the whole transaction back. With `retry`, every
//! call commits exactly once; no block returns Ok for work that was not kept, and no statement
//! names a savepoint the server dropped.

mod common;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use common::RT;
use sqlx::AssertSqlSafe;
use sqlx_atomic::{Atomic, Database, Databases, Error, PoolConfig, Retry};

const ENV: &str = "SQLX_ATOMIC_TEST_GALERA_URLS";

/// Installs aliases `g1` and `g2` on the cluster's first two nodes; `false` when no cluster is
/// configured (under `CI=true` that fails the run).
fn setup() -> bool {
    static SETUP: OnceLock<bool> = OnceLock::new();
    *SETUP.get_or_init(|| {
        let urls: Vec<String> = std::env::var(ENV)
            .unwrap_or_default()
            .split(',')
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.len() < 2 {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and no Galera cluster: run `.ci/galera start` and set {ENV}"
            );
            eprintln!("\n*** sqlx-atomic tests: SKIPPING Galera ({ENV} is not set) ***\n");
            return false;
        }
        RT.block_on(async {
            for url in &urls[..2] {
                common::reachable(common::Backend::MySql, url)
                    .await
                    .unwrap_or_else(|e| panic!("a Galera node does not answer: {e}"));
            }
            Databases::new()
                .add("g1", Database::connect_lazy(&urls[0]).unwrap())
                .add("g2", Database::connect_lazy(&urls[1]).unwrap())
                // Causal reads on every connection of the alias, from its session SQL.
                .add(
                    "g2_causal",
                    Database::connect_lazy_with(
                        &urls[1],
                        PoolConfig::new().session_sql("SET SESSION wsrep_sync_wait = 1"),
                    )
                    .unwrap(),
                )
                .install()
                .unwrap();
        });
        true
    })
}

async fn exec(alias: &'static str, sql: &str) -> Result<(), Error> {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .execute(sqlx_atomic::mysql(alias))
        .await?;
    Ok(())
}

/// The counter (row 1), read as `row` does.
async fn counter(alias: &'static str, table: &str) -> i64 {
    row(alias, table, 1).await
}

/// Row `id`'s counter, read on `alias`'s node once it has applied everything committed before
/// (`wsrep_sync_wait` for this one statement).
async fn row(alias: &'static str, table: &str, id: i64) -> i64 {
    let n: i32 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SET STATEMENT wsrep_sync_wait = 1 FOR SELECT n FROM {table} WHERE id = {id}"
    )))
    .fetch_one(sqlx_atomic::mysql(alias))
    .await
    .unwrap();
    n.into()
}

/// `tasks` tasks, alternately on `g1` and `g2`, each making `calls` retried read-modify-write
/// increments of one row with `SELECT … FOR UPDATE`; `nested`: the UPDATE runs in a nested
/// block whose error the outer body catches and ignores. Returns (calls that returned Ok,
/// hooks run, attempts made).
async fn contend(table: &'static str, tasks: u32, calls: u32, nested: bool) -> (u32, u32, u32) {
    exec("g1", &format!("DROP TABLE IF EXISTS {table}"))
        .await
        .unwrap();
    exec(
        "g1",
        &format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"),
    )
    .await
    .unwrap();
    exec("g1", &format!("INSERT INTO {table} VALUES (1, 0)"))
        .await
        .unwrap();
    // The row exists on g2 once g2 has applied the INSERT: its workers' first locking read
    // must find it.
    assert_eq!(row("g2", table, 1).await, 0);
    static HOOKS: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
    static ATTEMPTS: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];
    let hooks = &HOOKS[usize::from(nested)];
    let attempts = &ATTEMPTS[usize::from(nested)];
    let mut workers = Vec::new();
    for k in 0..tasks {
        let alias = if k % 2 == 0 { "g1" } else { "g2" };
        workers.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..calls {
                let r = Atomic::new()
                    .using(alias)
                    .retry(Retry::new(100))
                    .run(|| async move {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        let n: i32 = sqlx::query_scalar(AssertSqlSafe(format!(
                            "SELECT n FROM {table} WHERE id = 1 FOR UPDATE"
                        )))
                        .fetch_one(sqlx_atomic::mysql(alias))
                        .await?;
                        let update = format!("UPDATE {table} SET n = {} WHERE id = 1", n + 1);
                        if nested {
                            let inner = Atomic::new().using(alias).run(exec(alias, &update)).await;
                            if let Err(e) = inner {
                                assert!(!e.to_string().contains("does not exist"), "{e}");
                            }
                        } else {
                            exec(alias, &update).await?;
                        }
                        sqlx_atomic::on_commit(move || {
                            hooks.fetch_add(1, Ordering::Relaxed);
                        })
                        .using(alias)
                        .await
                    })
                    .await;
                match r {
                    Ok(()) => ok += 1,
                    Err(e) => panic!("a retried call failed: {e}"),
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for w in workers {
        ok += w.await.unwrap();
    }
    let attempts = attempts.load(Ordering::Relaxed);
    eprintln!("galera {table}: {ok} calls, {attempts} attempts");
    (ok, hooks.load(Ordering::Relaxed), attempts)
}

#[test]
fn rule_11_3_galera_conflicts_across_nodes_are_retried_to_an_exact_count() {
    if !setup() {
        return;
    }
    RT.block_on(RT.spawn(async {
        let (ok, hooks, attempts) = contend("galera_flat", 8, 25, false).await;
        assert_eq!((ok, hooks), (200, 200));
        assert!(
            attempts > ok,
            "the nodes' writes conflicted ({attempts} attempts)"
        );
        assert_eq!(counter("g1", "galera_flat").await, 200);
        assert_eq!(counter("g2", "galera_flat").await, 200);
    }))
    .unwrap();
}

#[test]
fn rule_11_2_galera_conflicts_in_nested_blocks_never_return_ok_without_committing() {
    if !setup() {
        return;
    }
    RT.block_on(RT.spawn(async {
        let (ok, hooks, attempts) = contend("galera_nested", 8, 25, true).await;
        // Every Ok is a committed increment, and every committed increment ran its hook.
        assert_eq!((ok, hooks), (200, 200));
        assert!(
            attempts > ok,
            "the nodes' writes conflicted ({attempts} attempts)"
        );
        assert_eq!(counter("g2", "galera_nested").await, 200);
    }))
    .unwrap();
}

/// With `innodb_rollback_on_timeout` (set on the cluster's nodes), a lock wait timeout (1205)
/// rolls the whole transaction back: the library asks the server, fails every open block with
/// the 1205, sends no ROLLBACK TO a savepoint that is gone, and `retry` runs the block again.
#[test]
fn rule_11_2_a_lock_wait_timeout_that_rolled_back_ends_the_transaction() {
    if !setup() {
        return;
    }
    RT.block_on(RT.spawn(async {
        let table = "galera_lock_timeout";
        exec("g1", &format!("DROP TABLE IF EXISTS {table}")).await.unwrap();
        exec("g1", &format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
            .await
            .unwrap();
        exec("g1", &format!("INSERT INTO {table} VALUES (1, 0), (2, 0)")).await.unwrap();
        let (locked_tx, locked_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        // Holds row 1's lock until told to let go.
        let holder = tokio::spawn(Atomic::new().using("g1").run(async move {
            exec("g1", &format!("UPDATE {table} SET n = n + 1 WHERE id = 1")).await?;
            locked_tx.send(()).unwrap();
            done_rx.await.unwrap();
            Ok::<_, Error>(())
        }));
        locked_rx.await.unwrap();
        let attempts = AtomicU32::new(0);
        let wait_for_row_1 = format!(
            "SET STATEMENT innodb_lock_wait_timeout = 1 FOR UPDATE {table} SET n = n + 1 WHERE id = 1"
        );
        let r = Atomic::new()
            .using("g1")
            .run(async {
                attempts.fetch_add(1, Ordering::Relaxed);
                exec("g1", &format!("UPDATE {table} SET n = n + 1 WHERE id = 2")).await?;
                let inner = Atomic::new().using("g1").run(exec("g1", &wait_for_row_1)).await;
                let e = inner.expect_err("the lock wait times out");
                assert!(!e.to_string().contains("does not exist"), "{e}");
                // Caught: the outer body says Ok, but its transaction is gone.
                Ok::<_, Error>(())
            })
            .await;
        let e = r.expect_err("never Ok for work that was not kept");
        assert_eq!(e.conflict(), Some(sqlx_atomic::Conflict::LockTimeout), "{e}");
        assert!(e.is_retryable(), "{e}");
        done_tx.send(()).unwrap();
        holder.await.unwrap().unwrap();
        // Row 2's update went with the transaction.
        assert_eq!(row("g1", table, 2).await, 0);
        assert_eq!(attempts.load(Ordering::Relaxed), 1);
    }))
    .unwrap();
}

#[test]
fn causal_reads_from_session_sql_see_every_commit_of_another_node() {
    // A job handed off in on_commit reads the row its transaction wrote on node 1, at once,
    // through node 2: without causal reads node 2 may not have applied the write set yet; with
    // `wsrep_sync_wait = 1`, set on every new connection by the alias's session SQL, it waits
    // until it has.
    if !setup() {
        return;
    }
    RT.block_on(async {
        let sync_wait: u64 = sqlx::query_scalar("SELECT @@session.wsrep_sync_wait")
            .fetch_one(sqlx_atomic::mysql("g2_causal"))
            .await
            .unwrap();
        assert_eq!(sync_wait, 1, "the session SQL ran on the connection");
        let table = "galera_causal";
        exec("g1", &format!("DROP TABLE IF EXISTS {table}"))
            .await
            .unwrap();
        exec("g1", &format!("CREATE TABLE {table} (id INT PRIMARY KEY)"))
            .await
            .unwrap();
        let (plain_missed, causal_missed) = (
            std::sync::Arc::new(AtomicU32::new(0)),
            std::sync::Arc::new(AtomicU32::new(0)),
        );
        const TASKS: i32 = 8;
        const JOBS: i32 = 400;
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let (plain_missed, causal_missed) = (plain_missed.clone(), causal_missed.clone());
            tasks.push(tokio::spawn(async move {
                for id in (0..JOBS / TASKS).map(|i| task * 1000 + i) {
                    let (plain, causal) = (plain_missed.clone(), causal_missed.clone());
                    Atomic::new()
                        .using("g1")
                        .run(async move {
                            exec("g1", &format!("INSERT INTO {table} (id) VALUES ({id})")).await?;
                            sqlx_atomic::using("g1")
                                .on_commit(move || async move {
                                    for (alias, missed) in [("g2", plain), ("g2_causal", causal)] {
                                        let found: Option<i32> = sqlx::query_scalar(AssertSqlSafe(
                                            format!("SELECT id FROM {table} WHERE id = {id}"),
                                        ))
                                        .fetch_optional(sqlx_atomic::mysql(alias))
                                        .await?;
                                        if found.is_none() {
                                            missed.fetch_add(1, Ordering::Relaxed);
                                        }
                                    }
                                    Ok::<_, Error>(())
                                })
                                .await
                        })
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let plain = plain_missed.load(Ordering::Relaxed);
        eprintln!(
            "galera causal reads: {plain} of {JOBS} plain reads on another node missed the row"
        );
        assert_eq!(
            causal_missed.load(Ordering::Relaxed),
            0,
            "causal reads never miss"
        );
        exec("g1", &format!("DROP TABLE {table}")).await.unwrap();
    });
}
