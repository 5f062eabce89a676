//! Reliability: cancellation at every await point, real faults, and load, on every backend.

mod common;

macro_rules! reliability_suite {
    ($module:ident, $db:ty, $backend:expr) => {
        mod $module {
            use std::pin::Pin;
            use std::sync::Arc;
            use std::task::{Context, Wake, Waker};

            use crate::common::{Backend, Fx};
            use sqlx::AssertSqlSafe;
            use sqlx_atomic::{Atomic, Error, Handle};
            type DB = $db;
            const B: Backend = $backend;

            async fn ins(alias: &'static str, fx: &Fx, v: i64) -> Result<(), Error> {
                sqlx::query(AssertSqlSafe(format!("INSERT INTO {} (v) VALUES ({v})", fx.table)))
                    .execute(Handle::<DB>::new(alias))
                    .await?;
                Ok(())
            }

            /// outer { 1; hook a; inner { 2; hook b }; failing inner { 3 }; 4 }
            async fn scenario(alias: &'static str, fx: Fx) -> Result<(), Error> {
                let a = || Atomic::new().using(alias);
                a().run(async {
                    ins(alias, &fx, 1).await?;
                    sqlx_atomic::on_commit(fx.hook("a")).using(alias).await?;
                    a().run(async {
                        ins(alias, &fx, 2).await?;
                        sqlx_atomic::on_commit(fx.hook("b")).using(alias).await
                    })
                    .await?;
                    let _ = a()
                        .run(async {
                            ins(alias, &fx, 3).await?;
                            sqlx_atomic::on_commit(fx.hook("c")).using(alias).await?;
                            Err::<(), _>(Error::from(sqlx::Error::RowNotFound))
                        })
                        .await;
                    ins(alias, &fx, 4).await
                })
                .await
            }

            struct Noop;
            impl Wake for Noop {
                fn wake(self: Arc<Self>) {}
            }

            /// Polls `fut` up to `k` times, yielding to the runtime between polls so its I/O goes
            /// on, and drops it after the `k`-th poll if it has not completed: with k = 1, 2, 3, …
            /// the cut lands at every suspension point, and also while statements are in flight.
            /// Returns whether it completed.
            async fn drop_at<F: Future>(fut: F, k: usize) -> bool {
                let waker = Waker::from(Arc::new(Noop));
                let mut fut: Pin<Box<F>> = Box::pin(fut);
                for _ in 0..k {
                    let polled = fut.as_mut().poll(&mut Context::from_waker(&waker));
                    if polled.is_ready() {
                        return true;
                    }
                    tokio::task::yield_now().await;
                }
                false
            }

            #[test]
            fn rule_7_1_cancellation_at_every_await_point() {
                crate::common::run(B, |fx: Fx| async move {
                    let alias = B.single();
                    // How many suspension points a run has depends on how fast the server answers
                    // (a reply that is already there does not suspend), so sweeps are repeated
                    // until at least 30 cuts were made, each sweep cutting at every point it had.
                    let (mut points, mut sweeps) = (0, 0);
                    while points < 30 && sweeps < 200 {
                        sweeps += 1;
                        for k in 1..20_000 {
                            let completed = drop_at(scenario(alias, fx.clone()), k).await;
                            crate::common::settle::<DB>(alias).await;
                            fx.assert_pool_clean(alias).await;
                            let rows = fx.committed().await;
                            let ran = fx.ran();
                            if completed {
                                assert_eq!(rows, [1, 2, 4]);
                                assert_eq!(ran, ["a", "b"]);
                                points += k - 1;
                                fx.raw(&format!("DELETE FROM {}", fx.table)).await;
                                fx.log.lock().unwrap().clear();
                                break;
                            }
                            // Cut before the end: nothing of the transaction is visible and no
                            // hook ran (a cut while COMMIT is in flight may have committed on the
                            // server: then the rows are whole, still without hooks).
                            assert!(rows.is_empty() || rows == [1, 2, 4], "after drop at {k}: {rows:?}");
                            assert!(ran.is_empty(), "after drop at {k}: hooks {ran:?}");
                            // The next transaction on the same single connection works.
                            Atomic::new().using(alias).run(ins(alias, &fx, 99)).await.unwrap();
                            fx.raw(&format!("DELETE FROM {}", fx.table)).await;
                            fx.log.lock().unwrap().clear();
                        }
                    }
                    assert!(points >= 30, "only {points} cuts in {sweeps} sweeps");
                    let _ = std::io::Write::write_all(
                        &mut std::io::stderr(),
                        format!("\n[cancellation {B:?}] {points} cuts in {sweeps} sweeps, all clean\n").as_bytes(),
                    );
                });
            }

            #[test]
            fn fault_pool_timeout_is_a_clear_error() {
                crate::common::run(B, |fx: Fx| async move {
                    let alias = B.single();
                    let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
                    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
                    let f2 = fx.clone();
                    let holder = tokio::spawn(Atomic::new().using(alias).run(async move {
                        ins(alias, &f2, 1).await?;
                        let _ = held_tx.send(());
                        let _ = done_rx.await;
                        Ok::<_, Error>(())
                    }));
                    held_rx.await.unwrap();
                    let hooks = fx.clone();
                    let r = tokio::time::timeout(
                        std::time::Duration::from_millis(300),
                        Atomic::new().using(alias).run(async {
                            sqlx_atomic::on_commit(hooks.hook("never")).using(alias).await?;
                            ins(alias, &hooks, 2).await
                        }),
                    )
                    .await;
                    // Either our own timeout cut it (a cancellation) or the pool's: both clean.
                    if let Ok(inner) = r {
                        assert!(inner.is_err());
                    }
                    let _ = done_tx.send(());
                    holder.await.unwrap().unwrap();
                    assert_eq!(fx.committed().await, [1]);
                    assert!(fx.ran().is_empty());
                });
            }

            #[test]
            fn load_many_tasks_nested_blocks_and_hooks() {
                crate::common::run(B, |fx: Fx| async move {
                    let alias = B.ten();
                    let n: i64 = if B == Backend::Postgres { 10_000 } else { 2_000 };
                    let started = std::time::Instant::now();
                    let mut tasks = Vec::new();
                    for v in 0..n {
                        let fx = fx.clone();
                        tasks.push(tokio::spawn(async move {
                            Atomic::new()
                                .using(alias)
                                .run(async {
                                    ins(alias, &fx, v).await?;
                                    let fails = v % 5 == 0;
                                    let _ = Atomic::new()
                                        .using(alias)
                                        .run(async {
                                            sqlx_atomic::on_commit(fx.hook(&format!("in{v}"))).using(alias).await?;
                                            if fails {
                                                return Err(Error::from(sqlx::Error::RowNotFound));
                                            }
                                            Ok(())
                                        })
                                        .await;
                                    sqlx_atomic::on_commit(fx.hook(&format!("out{v}"))).using(alias).await
                                })
                                .await
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap().unwrap();
                    }
                    let ours = started.elapsed();
                    assert_eq!(fx.committed().await, (0..n).collect::<Vec<_>>());
                    let ran = fx.ran();
                    assert_eq!(ran.len() as i64, n + n - n / 5, "each committed row's hooks ran exactly once");
                    let mut uniq = ran.clone();
                    uniq.sort();
                    uniq.dedup();
                    assert_eq!(uniq.len(), ran.len());
                    // The same writes with plain sqlx transactions, for the note.
                    let pool = sqlx_atomic::pool::<DB>(alias).unwrap();
                    let started = std::time::Instant::now();
                    let mut tasks = Vec::new();
                    for v in 0..n {
                        let pool = pool.clone();
                        let sql = format!("INSERT INTO {} (v) VALUES ({v})", fx.table);
                        tasks.push(tokio::spawn(async move {
                            let mut tx = pool.begin().await?;
                            // Unnamed behind the transaction pooler, as plain sqlx needs there.
                            sqlx::query(AssertSqlSafe(sql))
                                .persistent(B != Backend::PgBouncer)
                                .execute(&mut *tx)
                                .await?;
                            tx.commit().await
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap().unwrap();
                    }
                    let plain = started.elapsed();
                    crate::common::settle::<DB>(alias).await;
                    fx.assert_pool_clean(alias).await;
                    let _ = std::io::Write::write_all(
                        &mut std::io::stderr(),
                        format!(
                            "\n[load {B:?}] {n} tasks, pool of 10: sqlx-atomic {:.0} tx/s (nested block + 2 hooks), plain sqlx {:.0} tx/s\n",
                            n as f64 / ours.as_secs_f64(),
                            n as f64 / plain.as_secs_f64()
                        )
                        .as_bytes(),
                    );
                });
            }
        }
    };
}

reliability_suite!(sqlite, sqlx::Sqlite, Backend::Sqlite);
reliability_suite!(postgres, sqlx::Postgres, Backend::Postgres);
reliability_suite!(mysql, sqlx::MySql, Backend::MySql);
reliability_suite!(pgbouncer, sqlx::Postgres, Backend::PgBouncer);

mod faults {
    use crate::common::{self, Backend, Fx};
    use sqlx::AssertSqlSafe;
    use sqlx_atomic::{Atomic, Error, Handle};

    #[test]
    fn postgres_backend_terminated_mid_transaction() {
        common::run(Backend::Postgres, |fx: Fx| async move {
            let alias = Backend::Postgres.faults();
            let db = sqlx_atomic::postgres(alias);
            let admin = sqlx_atomic::pool::<sqlx::Postgres>("pg").unwrap();
            let ins = |v: i64| AssertSqlSafe(format!("INSERT INTO {} (v) VALUES ({v})", fx.table));
            let r = Atomic::new()
                .using(alias)
                .run(async {
                    sqlx::query(ins(1)).execute(&db).await?;
                    sqlx_atomic::on_commit(fx.hook("never"))
                        .using(alias)
                        .await?;
                    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                        .fetch_one(&db)
                        .await?;
                    sqlx::query("SELECT pg_terminate_backend($1)")
                        .bind(pid)
                        .execute(&admin)
                        .await?;
                    sqlx::query(ins(2)).execute(&db).await?;
                    Ok::<_, Error>(())
                })
                .await;
            let e = r.unwrap_err();
            assert!(!e.to_string().is_empty());
            assert!(fx.ran().is_empty());
            assert_eq!(fx.committed().await, Vec::<i64>::new());
            Atomic::new()
                .using(alias)
                .run(async { sqlx::query(ins(3)).execute(&db).await.map_err(Error::from) })
                .await
                .unwrap();
            assert_eq!(fx.committed().await, [3]);
        });
    }

    #[test]
    fn mysql_connection_killed_mid_transaction() {
        common::run(Backend::MySql, |fx: Fx| async move {
            let alias = Backend::MySql.faults();
            let db = sqlx_atomic::mysql(alias);
            let admin = sqlx_atomic::pool::<sqlx::MySql>("my").unwrap();
            let ins = |v: i64| AssertSqlSafe(format!("INSERT INTO {} (v) VALUES ({v})", fx.table));
            let r = Atomic::new()
                .using(alias)
                .run(async {
                    sqlx::query(ins(1)).execute(&db).await?;
                    sqlx_atomic::on_commit(fx.hook("never"))
                        .using(alias)
                        .await?;
                    let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
                        .fetch_one(&db)
                        .await?;
                    sqlx::query(AssertSqlSafe(format!("KILL {id}")))
                        .execute(&admin)
                        .await?;
                    sqlx::query(ins(2)).execute(&db).await?;
                    Ok::<_, Error>(())
                })
                .await;
            assert!(r.is_err());
            assert!(fx.ran().is_empty());
            assert_eq!(fx.committed().await, Vec::<i64>::new());
            Atomic::new()
                .using(alias)
                .run(async { sqlx::query(ins(3)).execute(&db).await.map_err(Error::from) })
                .await
                .unwrap();
            assert_eq!(fx.committed().await, [3]);
        });
    }

    /// `test_with_begin`: a transaction takes an idle connection without a ping, and its BEGIN is
    /// the test. When the server has ended every idle connection of the pool, each following
    /// block still commits: the failed BEGIN is sent again on a fresh connection, and the block
    /// never sees it. `$id` reads a connection's id, `$kill(id)` ends it, `$alive(ids)` counts
    /// those of `ids` the server still has. Each server has its own alias for this test, so that
    /// it ends no other test's connections.
    macro_rules! dead_idle_connection_test {
        ($name:ident, $db:ty, $b:expr, $id:literal, $kill:expr, $alive:expr) => {
            #[test]
            fn $name() {
                type DB = $db;
                let b: Backend = $b;
                common::run(b, move |fx: Fx| async move {
                    let alias = b.idle_faults();
                    let insert = |v: i64| {
                        let sql =
                            AssertSqlSafe(format!("INSERT INTO {} (v) VALUES ({v})", fx.table));
                        Atomic::new().using(alias).run(async move {
                            sqlx::query(sql).execute(Handle::<DB>::new(alias)).await?;
                            Ok::<_, Error>(())
                        })
                    };
                    let pool = sqlx_atomic::pool::<DB>(alias).unwrap();
                    let admin = sqlx_atomic::pool::<DB>(b.alias()).unwrap();
                    for round in 0..3i64 {
                        // At least one idle connection. The server ends them while they sit
                        // idle: sqlx pings a connection when it goes back to the pool, so one
                        // ended while held would be noticed then.
                        insert(10 * round).await.unwrap();
                        common::settle::<DB>(alias).await;
                        let mut held = Vec::new();
                        let mut ids = Vec::new();
                        while let Some(mut c) = pool.try_acquire() {
                            let id: i64 = sqlx::query_scalar($id).fetch_one(&mut *c).await.unwrap();
                            ids.push(id);
                            held.push(c);
                        }
                        drop(held);
                        common::settle::<DB>(alias).await;
                        assert!(!ids.is_empty(), "no idle connection to end");
                        for id in &ids {
                            sqlx::query(AssertSqlSafe($kill(*id)))
                                .execute(&admin)
                                .await
                                .unwrap();
                        }
                        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
                        let mut polls = 0;
                        loop {
                            let alive: i64 = sqlx::query_scalar(AssertSqlSafe($alive(&list)))
                                .fetch_one(&admin)
                                .await
                                .unwrap();
                            if alive == 0 {
                                break;
                            }
                            polls += 1;
                            assert!(polls < 100_000, "the server did not end {list}");
                            tokio::task::yield_now().await;
                        }
                        for k in 1..=3 {
                            insert(10 * round + k).await.unwrap_or_else(|e| {
                                panic!(
                                    "block {k} after {} connections ended failed: {e}",
                                    ids.len()
                                )
                            });
                        }
                    }
                    assert_eq!(fx.committed().await.len(), 12);
                });
            }
        };
    }

    dead_idle_connection_test!(
        postgres_a_dead_idle_connection_is_replaced_at_its_begin,
        sqlx::Postgres,
        Backend::Postgres,
        "SELECT pg_backend_pid()::int8",
        |id| format!("SELECT pg_terminate_backend({id})"),
        |list| format!("SELECT COUNT(*) FROM pg_stat_activity WHERE pid IN ({list})")
    );

    dead_idle_connection_test!(
        mysql_a_dead_idle_connection_is_replaced_at_its_begin,
        sqlx::MySql,
        Backend::MySql,
        "SELECT CAST(CONNECTION_ID() AS SIGNED)",
        |id| format!("KILL {id}"),
        |list| format!(
            "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.PROCESSLIST WHERE ID IN ({list})"
        )
    );

    #[test]
    fn postgres_all_pooled_connections_end_between_requests() {
        // What a server restart looks like to the pool: every idle connection is gone.
        common::run(Backend::Postgres, |fx: Fx| async move {
            let alias = Backend::Postgres.faults();
            let db = sqlx_atomic::postgres(alias);
            let ins = |v: i64| AssertSqlSafe(format!("INSERT INTO {} (v) VALUES ({v})", fx.table));
            let once = |v: i64| {
                let db = db.clone();
                let sql = ins(v);
                Atomic::new().using(alias).run(async move {
                    sqlx::query(sql)
                        .execute(&db)
                        .await
                        .map(drop)
                        .map_err(Error::from)
                })
            };
            once(1).await.unwrap();
            let pool = sqlx_atomic::pool::<sqlx::Postgres>(alias).unwrap();
            let mut pids = Vec::new();
            while let Some(mut c) = pool.try_acquire() {
                let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut *c)
                    .await
                    .unwrap();
                pids.push((pid, c));
            }
            let admin = sqlx_atomic::pool::<sqlx::Postgres>("pg").unwrap();
            for (pid, _) in &pids {
                sqlx::query("SELECT pg_terminate_backend($1)")
                    .bind(pid)
                    .execute(&admin)
                    .await
                    .unwrap();
            }
            drop(pids);
            // The next requests work: the pool notices the dead connections and reconnects, or
            // the request fails cleanly and the one after works.
            let mut ok = 0;
            for v in 2..6 {
                if once(v).await.is_ok() {
                    ok += 1;
                }
            }
            assert!(ok >= 3, "only {ok} of 4 requests worked after the restart");
            assert_eq!(fx.committed().await.first(), Some(&1));
        });
    }
}
