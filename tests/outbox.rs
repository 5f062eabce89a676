//! Durable jobs (feature `outbox`, docs/semantics.md §13) on every backend: written in the
//! transaction, delivered after the commit, at least once, in order per key.

mod common;

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Backend, Fx};
use sqlx::AssertSqlSafe;
use sqlx_atomic::outbox::{self, Handlers, Job, Relay};
use sqlx_atomic::{Atomic, Error, Handle};

/// The outbox table is one per database: the tests of a backend take it one at a time, and
/// start from an empty table.
static TABLE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a handler saw: the jobs it was given, in order.
type Seen = Arc<Mutex<Vec<Job>>>;

fn recording(name: &str, seen: &Seen) -> Handlers {
    let seen = seen.clone();
    Handlers::new().on(name, move |job: Job| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(job);
            Ok::<_, std::io::Error>(())
        }
    })
}

macro_rules! outbox_suite {
    ($module:ident, $db:ty, $backend:expr) => {
        mod $module {
            use super::*;
            type DB = $db;
            const B: Backend = $backend;

            fn db() -> Handle<DB> {
                Handle::new(B.alias())
            }

            fn atomic() -> Atomic {
                Atomic::new().using(B.alias())
            }

            fn enqueue(name: &'static str, v: i64) -> outbox::Enqueue {
                outbox::enqueue(name, &serde_json::json!({ "v": v })).using(B.alias())
            }

            async fn ins(fx: &Fx, v: i64) -> Result<(), Error> {
                sqlx::query(AssertSqlSafe(format!("INSERT INTO {} (v) VALUES ({v})", fx.table)))
                    .execute(db())
                    .await?;
                Ok(())
            }

            /// The outbox rows' (name, state), read from the pool outside any transaction.
            async fn rows() -> Vec<(String, i16)> {
                let p = sqlx_atomic::pool::<DB>(B.alias()).unwrap();
                let rows = sqlx::raw_sql(AssertSqlSafe(
                    "SELECT name, CAST(state AS SIGNED) FROM sqlx_atomic_outbox ORDER BY id"
                        .replace("SIGNED", if B.alias() == "pg" { "SMALLINT" } else if B.alias() == "sqlite" { "INTEGER" } else { "SIGNED" }),
                ))
                .fetch_all(&p)
                .await
                .unwrap();
                rows.iter()
                    .map(|r| {
                        use sqlx::Row;
                        let state: i64 = match B.alias() {
                            "pg" => i64::from(r.get::<i16, _>(1)),
                            _ => r.get::<i64, _>(1),
                        };
                        (r.get::<String, _>(0), state as i16)
                    })
                    .collect()
            }

            /// Runs `f` with the outbox table to itself, created and emptied.
            fn run<F, Fut>(f: F)
            where
                F: FnOnce(Fx) -> Fut + Send + 'static,
                Fut: Future<Output = ()> + Send + 'static,
            {
                common::run(B, |fx: Fx| async move {
                    let _table = TABLE.lock().await;
                    outbox::create_table(B.alias()).await.unwrap();
                    fx.raw("DELETE FROM sqlx_atomic_outbox").await;
                    f(fx).await;
                })
            }

            fn payload_v(job: &Job) -> i64 {
                job.payload::<serde_json::Value>().unwrap()["v"].as_i64().unwrap()
            }

            #[test]
            fn rule_13_1_jobs_are_written_in_the_transaction_and_delivered_after_it() {
                run(|fx| async move {
                    atomic()
                        .run(async {
                            ins(&fx, 1).await?;
                            enqueue("receipt", 1).await?;
                            enqueue("receipt", 2).await?;
                            // Not committed yet: no other connection sees the jobs.
                            assert!(rows().await.is_empty());
                            Ok::<_, Error>(())
                        })
                        .await
                        .unwrap();
                    assert_eq!(rows().await, [("receipt".into(), 0), ("receipt".into(), 0)]);
                    let seen = Seen::default();
                    let relay = Relay::new(B.alias(), recording("receipt", &seen));
                    assert_eq!(relay.run_once().await.unwrap(), 2);
                    assert_eq!(relay.run_once().await.unwrap(), 0, "delivered once");
                    let seen = seen.lock().unwrap().clone();
                    let mut vs: Vec<i64> = seen.iter().map(payload_v).collect();
                    vs.sort_unstable();
                    assert_eq!(vs, [1, 2]);
                    assert_ne!(seen[0].delivery_id, seen[1].delivery_id);
                    assert_eq!(rows().await, [("receipt".into(), 1), ("receipt".into(), 1)]);
                });
            }

            #[test]
            fn rule_13_1_rolled_back_jobs_are_never_written() {
                run(|fx| async move {
                    let r = atomic()
                        .run(async {
                            enqueue("lost", 1).await?;
                            Err::<(), _>(Error::from(sqlx::Error::RowNotFound))
                        })
                        .await;
                    assert!(r.is_err());
                    atomic()
                        .run(async {
                            enqueue("kept", 1).await?;
                            let inner = atomic()
                                .run(async {
                                    ins(&fx, 1).await?;
                                    enqueue("lost", 2).await?;
                                    Err::<(), _>(Error::from(sqlx::Error::RowNotFound))
                                })
                                .await;
                            assert!(inner.is_err());
                            atomic().run(enqueue("kept", 3).into_future()).await?;
                            Ok::<_, Error>(())
                        })
                        .await
                        .unwrap();
                    assert_eq!(rows().await, [("kept".into(), 0), ("kept".into(), 0)]);
                });
            }

            #[test]
            fn rule_13_1_outside_a_block_a_job_is_written_at_once() {
                run(|_fx| async move {
                    enqueue("now", 1).await.unwrap();
                    assert_eq!(rows().await, [("now".into(), 0)]);
                });
            }

            #[test]
            fn rule_13_1_a_transaction_pays_one_statement_for_all_its_jobs() {
                run(|fx| async move {
                    let count = |jobs: i64| {
                        let fx = fx.clone();
                        async move {
                            let (r, stmts) = sqlx_atomic::Scope::new()
                                .record_statements()
                                .run(atomic().run(async {
                                    ins(&fx, 1).await?;
                                    for v in 0..jobs {
                                        enqueue("many", v).await?;
                                    }
                                    Ok::<_, Error>(())
                                }))
                                .await;
                            r.unwrap();
                            stmts
                        }
                    };
                    let without = count(0).await;
                    let with = count(300).await;
                    assert_eq!(with.len(), without.len() + 1, "{with:#?}");
                    assert_eq!(
                        with.iter().filter(|s| s.sql.contains("sqlx_atomic_outbox")).count(),
                        1
                    );
                    assert_eq!(rows().await.len(), 300);
                });
            }

            #[test]
            fn rule_13_2_failed_deliveries_are_retried_then_dead_lettered_and_replayed() {
                run(|_fx| async move {
                    enqueue("flaky", 1).await.unwrap();
                    let failing = Relay::new(
                        B.alias(),
                        Handlers::new().on("flaky", |_job: Job| async {
                            Err::<(), _>(std::io::Error::other("the mail server is down"))
                        }),
                    )
                    .max_attempts(2)
                    .backoff(Duration::ZERO, Duration::ZERO);
                    assert_eq!(failing.run_once().await.unwrap(), 1);
                    assert_eq!(rows().await, [("flaky".into(), 0)], "retried later");
                    assert_eq!(failing.run_once().await.unwrap(), 1);
                    assert_eq!(rows().await, [("flaky".into(), 2)], "dead after 2 attempts");
                    assert_eq!(failing.run_once().await.unwrap(), 0, "a dead job is not delivered");
                    let dead = outbox::dead_jobs(B.alias()).await.unwrap();
                    assert_eq!(dead.len(), 1);
                    assert_eq!(dead[0].attempts, 2);
                    // A job without a handler is never lost silently either.
                    assert!(outbox::replay(B.alias(), dead[0].id).await.unwrap());
                    let seen = Seen::default();
                    let relay = Relay::new(B.alias(), recording("flaky", &seen));
                    assert_eq!(relay.run_once().await.unwrap(), 1);
                    assert_eq!(seen.lock().unwrap()[0].delivery_id, dead[0].delivery_id);
                    assert_eq!(rows().await, [("flaky".into(), 1)]);
                    assert_eq!(outbox::clean(B.alias(), Duration::ZERO).await.unwrap(), 1);
                    assert!(rows().await.is_empty());
                });
            }

            #[test]
            fn rule_13_1_jobs_of_one_key_go_out_one_at_a_time_in_order() {
                run(|_fx| async move {
                    atomic()
                        .run(async {
                            enqueue("step", 1).key("order-1").await?;
                            enqueue("step", 2).key("order-1").await?;
                            enqueue("step", 3).key("order-2").await?;
                            enqueue("step", 4).await
                        })
                        .await
                        .unwrap();
                    let seen = Seen::default();
                    let relay = Relay::new(B.alias(), recording("step", &seen));
                    assert_eq!(relay.run_once().await.unwrap(), 3);
                    let mut first: Vec<i64> = seen.lock().unwrap().iter().map(payload_v).collect();
                    first.sort_unstable();
                    assert_eq!(first, [1, 3, 4], "the second job of order-1 waits for the first");
                    assert_eq!(relay.run_once().await.unwrap(), 1);
                    assert_eq!(payload_v(&seen.lock().unwrap()[3]), 2);
                });
            }

            #[test]
            fn rule_13_2_a_relay_may_deliver_only_some_names() {
                run(|_fx| async move {
                    atomic()
                        .run(async {
                            enqueue("email", 1).await?;
                            enqueue("sms", 2).await?;
                            enqueue("email", 3).await
                        })
                        .await
                        .unwrap();
                    let seen = Seen::default();
                    let emails = Relay::new(B.alias(), recording("email", &seen)).only(["email"]);
                    assert_eq!(emails.run_once().await.unwrap(), 2);
                    assert_eq!(emails.run_once().await.unwrap(), 0);
                    assert_eq!(
                        rows().await,
                        [("email".into(), 1), ("sms".into(), 0), ("email".into(), 1)]
                    );
                });
            }

            #[test]
            fn rule_13_2_a_claimed_job_is_not_delivered_by_another_relay() {
                run(|_fx| async move {
                    // The second job of the key waits for the first, which the first relay
                    // holds: the second relay delivers neither.
                    atomic()
                        .run(async {
                            enqueue("slow", 1).key("k").await?;
                            enqueue("slow", 2).key("k").await
                        })
                        .await
                        .unwrap();
                    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
                    let (release, released) = tokio::sync::oneshot::channel::<()>();
                    let gate = Arc::new(Mutex::new((Some(started_tx), Some(released))));
                    let first = Relay::new(
                        B.alias(),
                        Handlers::new().on("slow", move |_job: Job| {
                            let gate = gate.clone();
                            async move {
                                let (tx, rx) = {
                                    let mut g = gate.lock().unwrap();
                                    (g.0.take(), g.1.take())
                                };
                                let _ = tx.unwrap().send(());
                                let _ = rx.unwrap().await;
                                Ok::<_, std::io::Error>(())
                            }
                        }),
                    );
                    let delivering = tokio::spawn(async move { first.run_once().await });
                    started.await.unwrap();
                    // The first relay holds the job while it delivers it.
                    let seen = Seen::default();
                    let second = Relay::new(B.alias(), recording("slow", &seen));
                    assert_eq!(second.run_once().await.unwrap(), 0);
                    release.send(()).unwrap();
                    assert_eq!(delivering.await.unwrap().unwrap(), 1);
                    // Now the second job of the key is due, and only it.
                    assert_eq!(second.run_once().await.unwrap(), 1);
                    assert_eq!(payload_v(&seen.lock().unwrap()[0]), 2);
                    assert_eq!(rows().await, [("slow".into(), 1), ("slow".into(), 1)]);
                });
            }

            #[test]
            fn rule_13_2_a_relay_holding_a_claim_never_blocks_a_writer() {
                run(|fx| async move {
                    atomic().run(enqueue("held", 1).into_future()).await.unwrap();
                    // The handler writes an order with its job and waits for that commit while
                    // the relay holds its claim. On MySQL/MariaDB a claim taken under REPEATABLE
                    // READ locks the gap where new jobs go: the writer's INSERT then waits for
                    // the relay, and the relay's UPDATE for the writer, a deadlock.
                    let (done_tx, done) = tokio::sync::oneshot::channel();
                    let fx_in = fx.clone();
                    let writer = Arc::new(Mutex::new(Some((fx_in, done_tx))));
                    let relay = Relay::new(
                        B.alias(),
                        Handlers::new().on("held", move |_job: Job| {
                            let (fx, done_tx) = writer.lock().unwrap().take().unwrap();
                            async move {
                                let wrote = tokio::spawn(async move {
                                    atomic()
                                        .run(async {
                                            ins(&fx, 2).await?;
                                            enqueue("later", 2).await
                                        })
                                        .await
                                });
                                let wrote = tokio::time::timeout(Duration::from_secs(20), wrote)
                                    .await
                                    .map_err(|_| std::io::Error::other("the writer is blocked"))?
                                    .unwrap();
                                let _ = done_tx.send(wrote);
                                Ok::<_, std::io::Error>(())
                            }
                        }),
                    )
                    .only(["held"]);
                    assert_eq!(relay.run_once().await.unwrap(), 1);
                    done.await
                        .expect("the writer is not blocked by the relay's claim")
                        .expect("the writer commits while the claim is held");
                    assert_eq!(rows().await, [("held".into(), 1), ("later".into(), 0)]);
                    assert_eq!(fx.committed().await, [2]);
                });
            }

            #[test]
            fn rule_13_2_a_spawned_relay_delivers_soon_after_the_commit() {
                run(|_fx| async move {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                    let relay = Relay::new(
                        B.alias(),
                        Handlers::new().on("wake", move |job: Job| {
                            let tx = tx.clone();
                            async move { tx.send(job).map_err(|_| std::io::Error::other("closed")) }
                        }),
                    )
                    // A poll too slow to deliver within the test's wait: the commit wakes it.
                    .poll_interval(Duration::from_secs(3600))
                    .spawn();
                    atomic().run(enqueue("wake", 7).into_future()).await.unwrap();
                    let job = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                        .await
                        .expect("delivered after the commit, without waiting for a poll")
                        .unwrap();
                    assert_eq!(payload_v(&job), 7);
                    relay.stop().await;
                });
            }
        }
    };
}

outbox_suite!(sqlite, sqlx::Sqlite, Backend::Sqlite);
outbox_suite!(postgres, sqlx::Postgres, Backend::Postgres);
outbox_suite!(mysql, sqlx::MySql, Backend::MySql);

/// Runs `f` on PostgreSQL with the outbox table to itself, created and emptied, and the alias's
/// pool.
fn pg_run<F, Fut>(f: F)
where
    F: FnOnce(sqlx::PgPool) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    common::run(Backend::Postgres, |_fx: Fx| async move {
        let _table = TABLE.lock().await;
        outbox::create_table("pg").await.unwrap();
        let pool = sqlx_atomic::pool::<sqlx::Postgres>("pg").unwrap();
        sqlx::raw_sql("DELETE FROM sqlx_atomic_outbox")
            .execute(&pool)
            .await
            .unwrap();
        f(pool).await;
    });
}

/// PostgreSQL: a commit that wrote jobs is announced on the outbox channel after the COMMIT, so
/// that a listener woken by it finds the jobs committed.
#[test]
fn rule_13_2_a_postgres_commit_with_jobs_notifies_listeners_after_it() {
    pg_run(|pool| async move {
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
            .await
            .unwrap();
        listener.listen("sqlx_atomic_outbox").await.unwrap();
        for round in 0..3 {
            Atomic::new()
                .using("pg")
                .run(async {
                    for i in 0..10 {
                        outbox::enqueue("announced", &(round * 10 + i))
                            .using("pg")
                            .await?;
                    }
                    Ok::<_, Error>(())
                })
                .await
                .unwrap();
            tokio::time::timeout(Duration::from_secs(20), listener.recv())
                .await
                .expect("a notification after the commit")
                .unwrap();
            // Whatever the listener reads after the notification includes this commit's jobs.
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM sqlx_atomic_outbox WHERE name = 'announced'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            assert!(n >= (round + 1) * 10, "round {round}: {n} jobs visible");
        }
    });
}

/// PostgreSQL: jobs that a relay spawned in this process delivers are not announced to other
/// processes; jobs it does not deliver are.
#[test]
fn rule_13_2_a_postgres_commit_announces_only_jobs_no_local_relay_delivers() {
    pg_run(|_pool| async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let relay = Relay::new(
            "pg",
            Handlers::new().on("here", move |job: Job| {
                let tx = tx.clone();
                async move { tx.send(job).map_err(|_| std::io::Error::other("closed")) }
            }),
        )
        .only(["here"])
        .poll_interval(Duration::from_secs(3600))
        .spawn();
        let commit = |name: &'static str| {
            Atomic::new()
                .using("pg")
                .run(outbox::enqueue(name, &1).using("pg").into_future())
        };
        let before = outbox::stats().announced;
        commit("here").await.unwrap();
        let job = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("the local relay delivers it")
            .unwrap();
        assert_eq!(job.name, "here");
        // Decided when the commit's hooks ran, before `run` returned.
        assert_eq!(
            outbox::stats().announced,
            before,
            "delivered here: no NOTIFY"
        );
        commit("elsewhere").await.unwrap();
        assert_eq!(
            outbox::stats().announced,
            before + 1,
            "no relay here delivers it"
        );
        relay.stop().await;
    });
}

/// PostgreSQL: a relay also wakes on another process's commit, through `LISTEN`. The job is
/// written here as another process would write it (a plain INSERT with its NOTIFY, on a
/// connection of its own), so that only the notification can wake the relay before its poll.
#[test]
fn rule_13_2_a_postgres_relay_wakes_on_another_process_commit() {
    pg_run(|pool| async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let before = outbox::stats();
        let relay = Relay::new(
            "pg",
            Handlers::new()
                .on("local", {
                    let tx = tx.clone();
                    move |job: Job| {
                        let tx = tx.clone();
                        async move { tx.send(job).map_err(|_| std::io::Error::other("closed")) }
                    }
                })
                .on("remote", move |job: Job| {
                    let tx = tx.clone();
                    async move { tx.send(job).map_err(|_| std::io::Error::other("closed")) }
                }),
        )
        .only(["local", "remote"])
        .poll_interval(Duration::from_secs(3600))
        .spawn();
        let wait = Duration::from_secs(20);
        // A job of this process, woken in-process: once it is delivered, the relay listens
        // (its LISTEN comes before its first pass) and has nothing left to do.
        Atomic::new()
            .using("pg")
            .run(outbox::enqueue("local", &1).using("pg").into_future())
            .await
            .unwrap();
        let local = tokio::time::timeout(wait, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(local.name, "local");
        // Another process's job: only its NOTIFY can wake the relay before the hour's poll.
        sqlx::raw_sql(
            "INSERT INTO sqlx_atomic_outbox (delivery_id, name, payload, next_attempt_at, \
             created_at) VALUES ('remote-1', 'remote', '{}', 0, 0); \
             SELECT pg_notify('sqlx_atomic_outbox', '')",
        )
        .execute(&pool)
        .await
        .unwrap();
        let remote = tokio::time::timeout(wait, rx.recv())
            .await
            .expect("the notification woke the relay")
            .unwrap();
        assert_eq!(remote.delivery_id, "remote-1");
        relay.stop().await;
        assert!(outbox::stats().delivered >= before.delivered + 2);
    });
}
