//! `testing::restore_after` on every backend: a body that commits for real, and the named tables
//! put back as they were afterwards, however the body ends.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A table name of this test process's own, short enough for the snapshot's name to keep it.
fn table_name(tag: &str) -> String {
    format!(
        "rs_{}_{}_{tag}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

macro_rules! restore_suite {
    ($module:ident, $db:ty, $backend:expr, auto_id = $auto_id:expr, bigint = $bigint:expr,
     scratch_tables = $scratch_tables:expr) => {
        mod $module {
            use crate::common::{Backend, Fx};
            use crate::table_name;
            use sqlx::AssertSqlSafe;
            use sqlx_atomic::{Atomic, Error, ErrorKind, Handle, testing};
            type DB = $db;
            const B: Backend = $backend;

            /// Runs a statement through the library, as application code does.
            async fn exec(sql: String) -> Result<(), Error> {
                sqlx::query(AssertSqlSafe(sql))
                    .execute(Handle::<DB>::new(B.alias()))
                    .await?;
                Ok(())
            }

            /// The rows of a two-column query, read on a connection of the pool outside any
            /// transaction: what is committed.
            async fn pairs(sql: String) -> Vec<(i64, i64)> {
                let pool = sqlx_atomic::pool::<DB>(B.alias()).unwrap();
                sqlx::query_as::<DB, (i64, i64)>(AssertSqlSafe(sql))
                    .fetch_all(&pool)
                    .await
                    .unwrap()
            }

            /// `(id, v)` of a table, by id.
            async fn rows(table: &str) -> Vec<(i64, i64)> {
                pairs(format!(
                    "SELECT CAST(id AS {b}), CAST(v AS {b}) FROM {table} ORDER BY id",
                    b = $bigint
                ))
                .await
            }

            /// The snapshot tables of `table` in the database.
            async fn scratch_of(table: &str) -> Vec<String> {
                let pool = sqlx_atomic::pool::<DB>(B.alias()).unwrap();
                let names: Vec<String> = sqlx::query_scalar::<DB, String>($scratch_tables)
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                let suffix = format!("_{table}");
                names.into_iter().filter(|n| n.ends_with(&suffix)).collect()
            }

            /// A table with an auto-increment id, a value and a generated column, holding
            /// (1, 10), (2, 20), (3, 30).
            async fn orders(fx: &Fx) -> String {
                let t = table_name("o");
                fx.raw(&format!(
                    "CREATE TABLE {t} (id {}, v INT NOT NULL, \
                     twice INT GENERATED ALWAYS AS (v * 2) STORED)",
                    $auto_id
                ))
                .await;
                fx.raw(&format!("INSERT INTO {t} (v) VALUES (10), (20), (30)"))
                    .await;
                t
            }

            const ORIGINAL: [(i64, i64); 3] = [(1, 10), (2, 20), (3, 30)];

            #[test]
            fn rows_inserted_updated_and_deleted_by_a_committing_body_are_put_back() {
                crate::common::run(B, |fx: Fx| async move {
                    let t = orders(&fx).await;
                    let out = testing::restore_after(B.alias(), [t.as_str()], async {
                        Atomic::new()
                            .using(B.alias())
                            .run(async {
                                exec(format!("INSERT INTO {t} (v) VALUES (40)")).await?;
                                exec(format!("UPDATE {t} SET v = 11 WHERE id = 1")).await?;
                                exec(format!("DELETE FROM {t} WHERE id = 2")).await?;
                                sqlx_atomic::on_commit(fx.hook("sent"))
                                    .using(B.alias())
                                    .await
                            })
                            .await
                            .unwrap();
                        // Committed for real: the hook ran, and the pool's connections see it.
                        assert_eq!(fx.ran(), ["sent"]);
                        assert_eq!(rows(&t).await, [(1, 11), (3, 30), (4, 40)]);
                        assert_eq!(scratch_of(&t).await.len(), 1, "the snapshot exists");
                        "the body's output"
                    })
                    .await
                    .unwrap();
                    assert_eq!(out, "the body's output");
                    assert_eq!(rows(&t).await, ORIGINAL);
                    assert_eq!(
                        pairs(format!(
                            "SELECT CAST(id AS {b}), CAST(twice AS {b}) FROM {t} ORDER BY id",
                            b = $bigint
                        ))
                        .await,
                        [(1, 20), (2, 40), (3, 60)]
                    );
                    // The counter is back too: the next row gets the id the body's row had.
                    fx.raw(&format!("INSERT INTO {t} (v) VALUES (50)")).await;
                    assert_eq!(rows(&t).await.last(), Some(&(4, 50)));
                    assert_eq!(scratch_of(&t).await, Vec::<String>::new());
                    fx.raw(&format!("DROP TABLE {t}")).await;
                });
            }

            #[test]
            fn a_panicking_body_is_restored_and_the_panic_resumed() {
                crate::common::run(B, |fx: Fx| async move {
                    let t = orders(&fx).await;
                    let t2 = t.clone();
                    let r = tokio::spawn(testing::restore_after(B.alias(), [t.clone()], async move {
                        exec(format!("INSERT INTO {t2} (v) VALUES (40)")).await.unwrap();
                        exec(format!("DELETE FROM {t2} WHERE id = 1")).await.unwrap();
                        panic!("the body panics");
                    }))
                    .await;
                    let panic = r.unwrap_err().into_panic();
                    assert_eq!(
                        crate::common::panic_message(&*panic),
                        "the body panics"
                    );
                    assert_eq!(rows(&t).await, ORIGINAL);
                    assert_eq!(scratch_of(&t).await, Vec::<String>::new());
                    fx.raw(&format!("DROP TABLE {t}")).await;
                });
            }

            #[test]
            fn a_body_returning_err_is_restored_and_its_err_returned() {
                crate::common::run(B, |fx: Fx| async move {
                    let t = orders(&fx).await;
                    let out = testing::restore_after(B.alias(), [&t], async {
                        exec(format!("UPDATE {t} SET v = 0")).await?;
                        Err::<(), _>(sqlx_atomic::Error::from(sqlx::Error::RowNotFound))
                    })
                    .await
                    .unwrap();
                    assert!(matches!(out, Err(e) if e.as_sqlx().is_some()));
                    assert_eq!(rows(&t).await, ORIGINAL);
                    fx.raw(&format!("DROP TABLE {t}")).await;
                });
            }

            /// A parent and a child table referencing it; (parent ids, child (id, parent id)).
            async fn parent_and_child(fx: &Fx) -> (String, String) {
                let p = table_name("p");
                let c = table_name("c");
                fx.raw(&format!("CREATE TABLE {p} (id INT PRIMARY KEY, v INT NOT NULL)"))
                    .await;
                fx.raw(&format!(
                    "CREATE TABLE {c} (id INT PRIMARY KEY, v INT NOT NULL, \
                     FOREIGN KEY (v) REFERENCES {p} (id))"
                ))
                .await;
                fx.raw(&format!("INSERT INTO {p} (id, v) VALUES (1, 100), (2, 200)"))
                    .await;
                fx.raw(&format!("INSERT INTO {c} (id, v) VALUES (1, 1), (2, 2)"))
                    .await;
                (p, c)
            }

            #[test]
            fn a_parent_and_its_child_table_are_put_back_in_order() {
                crate::common::run(B, |fx: Fx| async move {
                    let (p, c) = parent_and_child(&fx).await;
                    testing::restore_after(B.alias(), [&p, &c], async {
                        Atomic::new()
                            .using(B.alias())
                            .run(async {
                                exec(format!("DELETE FROM {c} WHERE id = 2")).await?;
                                exec(format!("DELETE FROM {p} WHERE id = 2")).await?;
                                exec(format!("INSERT INTO {p} (id, v) VALUES (3, 300)")).await?;
                                exec(format!("INSERT INTO {c} (id, v) VALUES (3, 3)")).await?;
                                exec(format!("UPDATE {c} SET v = 3 WHERE id = 1")).await
                            })
                            .await
                            .unwrap();
                        assert_eq!(rows(&c).await, [(1, 3), (3, 3)]);
                    })
                    .await
                    .unwrap();
                    assert_eq!(rows(&p).await, [(1, 100), (2, 200)]);
                    assert_eq!(rows(&c).await, [(1, 1), (2, 2)]);
                    fx.raw(&format!("DROP TABLE {c}")).await;
                    fx.raw(&format!("DROP TABLE {p}")).await;
                });
            }

            #[test]
            fn a_failed_restore_rolls_back_and_keeps_the_snapshot() {
                crate::common::run(B, |fx: Fx| async move {
                    let (p, c) = parent_and_child(&fx).await;
                    // The child named first: its parent's rows are deleted first, which the
                    // child's foreign key refuses.
                    let e = testing::restore_after(B.alias(), [&c, &p], async {
                        exec(format!("INSERT INTO {p} (id, v) VALUES (3, 300)"))
                            .await
                            .unwrap();
                    })
                    .await
                    .unwrap_err();
                    let msg = e.to_string();
                    let kept = [scratch_of(&c).await, scratch_of(&p).await].concat();
                    assert_eq!(kept.len(), 2, "{kept:?}");
                    assert!(msg.contains(&format!("`{}`", B.alias())), "{msg}");
                    assert!(msg.contains("restoring the tables failed"), "{msg}");
                    for name in &kept {
                        assert!(msg.contains(name.as_str()), "{msg} names {name}");
                    }
                    // Rolled back: what the body left is still there.
                    assert_eq!(rows(&p).await, [(1, 100), (2, 200), (3, 300)]);
                    for name in kept {
                        fx.raw(&format!("DROP TABLE {name}")).await;
                    }
                    fx.raw(&format!("DROP TABLE {c}")).await;
                    fx.raw(&format!("DROP TABLE {p}")).await;
                });
            }

            #[test]
            fn names_that_are_not_plain_tables_are_refused_before_the_body() {
                crate::common::run(B, |fx: Fx| async move {
                    let t = orders(&fx).await;
                    let missing = table_name("missing");
                    let dup = t.to_uppercase();
                    let cases: [(Vec<&str>, &str, &str); 6] = [
                        (vec!["orders; DROP TABLE x"], "orders; DROP TABLE x", "not a plain table name"),
                        (vec!["a.b.c"], "a.b.c", "not a plain table name"),
                        (vec!["1orders"], "1orders", "not a plain table name"),
                        (vec![""], "\"\"", "not a plain table name"),
                        (vec![&missing], &missing, "is not a table of this database"),
                        (vec![&t, &dup], &dup, "named twice"),
                    ];
                    for (tables, named, why) in cases {
                        let mut ran = false;
                        let e = testing::restore_after(B.alias(), tables, async { ran = true })
                            .await
                            .unwrap_err();
                        let msg = e.to_string();
                        assert!(!ran, "{msg}");
                        assert_eq!(e.alias(), Some(B.alias()));
                        assert!(msg.contains(&format!("`{}`", B.alias())), "{msg}");
                        assert!(msg.contains(named), "{msg} names {named}");
                        assert!(msg.contains(why), "{msg}");
                    }
                    assert_eq!(scratch_of(&t).await, Vec::<String>::new());
                    fx.raw(&format!("DROP TABLE {t}")).await;
                });
            }

            #[test]
            fn inside_a_test_transaction_it_refuses() {
                crate::common::run(B, |fx: Fx| async move {
                    let t = orders(&fx).await;
                    let mut ran = false;
                    let e = testing::rollback_after([B.alias()], async {
                        exec(format!("DELETE FROM {t}")).await.unwrap();
                        testing::restore_after(B.alias(), [&t], async { ran = true }).await
                    })
                    .await
                    .unwrap_err();
                    assert!(!ran);
                    assert!(matches!(e.kind(), ErrorKind::InsideBlock(_)), "{e}");
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("`{}`", B.alias())), "{msg}");
                    assert!(msg.contains("restore_after"), "{msg}");
                    // Refused in a plain block of the alias too.
                    let e = Atomic::new()
                        .using(B.alias())
                        .run(async {
                            Ok::<_, Error>(
                                testing::restore_after(B.alias(), [&t], async {}).await,
                            )
                        })
                        .await
                        .unwrap()
                        .unwrap_err();
                    assert!(matches!(e.kind(), ErrorKind::InsideBlock(_)), "{e}");
                    assert_eq!(rows(&t).await, ORIGINAL);
                    fx.raw(&format!("DROP TABLE {t}")).await;
                });
            }

            #[test]
            fn a_dropped_call_restores_in_the_background() {
                crate::common::run(B, |fx: Fx| async move {
                    let t = orders(&fx).await;
                    let (started, wait) = tokio::sync::oneshot::channel();
                    let call = testing::restore_after(B.alias(), [&t], async {
                        exec(format!("DELETE FROM {t}")).await.unwrap();
                        started.send(()).unwrap();
                        std::future::pending::<()>().await
                    });
                    tokio::select! {
                        _ = call => unreachable!("the body never ends"),
                        _ = wait => {}
                    }
                    // The call's future is dropped: its restore runs on a task of its own.
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                    while rows(&t).await != ORIGINAL || !scratch_of(&t).await.is_empty() {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "not restored in 30 s"
                        );
                        tokio::task::yield_now().await;
                    }
                    crate::common::settle::<DB>(B.alias()).await;
                    fx.raw(&format!("DROP TABLE {t}")).await;
                });
            }
        }
    };
}

restore_suite!(
    sqlite,
    sqlx::Sqlite,
    Backend::Sqlite,
    auto_id = "INTEGER PRIMARY KEY AUTOINCREMENT",
    bigint = "BIGINT",
    scratch_tables = "SELECT name FROM sqlite_master WHERE type = 'table' \
                      AND name LIKE 'sqlx_atomic_snapshot%'"
);
restore_suite!(
    postgres,
    sqlx::Postgres,
    Backend::Postgres,
    auto_id = "INT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    bigint = "BIGINT",
    scratch_tables = "SELECT tablename::text FROM pg_tables \
                      WHERE tablename LIKE 'sqlx_atomic_snapshot%'"
);
restore_suite!(
    mysql,
    sqlx::MySql,
    Backend::MySql,
    auto_id = "INT AUTO_INCREMENT PRIMARY KEY",
    bigint = "SIGNED",
    scratch_tables = "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES \
                      WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'sqlx_atomic_snapshot%'"
);
