//! The test helpers (feature `testing`) on every backend: rolled-back test transactions and
//! on_commit capture (docs/semantics.md §10).

mod common;

macro_rules! helpers_suite {
    ($module:ident, $db:ty, $backend:expr) => {
        mod $module {
            use crate::common::{Backend, Fx};
            use sqlx::AssertSqlSafe;
            use sqlx_atomic::{Atomic, Error, Handle, testing};
            type DB = $db;
            const B: Backend = $backend;

            async fn ins(fx: &Fx, v: i64) -> Result<(), Error> {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {} (v) VALUES ({v})",
                    fx.table
                )))
                .execute(Handle::<DB>::new(B.alias()))
                .await?;
                Ok(())
            }

            fn on_commit<M, H: sqlx_atomic::IntoHook<M>>(h: H) -> sqlx_atomic::OnCommit {
                sqlx_atomic::on_commit(h).using(B.alias())
            }

            #[test]
            fn rule_10_1_rows_written_in_a_test_body_are_gone() {
                crate::common::run(B, |fx: Fx| async move {
                    let seen = testing::rollback_after([B.alias()], async {
                        ins(&fx, 1).await.unwrap();
                        Atomic::new()
                            .using(B.alias())
                            .run(ins(&fx, 2))
                            .await
                            .unwrap();
                        // Invisible to other connections while the test runs.
                        fx.committed().await
                    })
                    .await;
                    assert_eq!(seen, Vec::<i64>::new());
                    assert_eq!(fx.committed().await, Vec::<i64>::new());
                });
            }

            #[test]
            fn rule_10_1_a_blocks_options_and_deadline_apply_inside_a_test() {
                crate::common::run(B, |fx: Fx| async move {
                    let limit = std::time::Duration::from_millis(100);
                    let r = testing::rollback_after([B.alias()], async {
                        Atomic::new()
                            .using(B.alias())
                            .timeout(limit)
                            .run(async {
                                ins(&fx, 1).await?;
                                std::future::pending::<()>().await;
                                Ok::<_, sqlx_atomic::Error>(())
                            })
                            .await
                    })
                    .await;
                    let e = r.unwrap_err();
                    assert!(
                        matches!(e.kind(), sqlx_atomic::ErrorKind::TimedOut(t) if *t == limit),
                        "{e}"
                    );
                    assert_eq!(fx.committed().await, Vec::<i64>::new());
                });
            }

            #[test]
            fn rule_10_1_a_panicking_test_body_still_rolls_back() {
                crate::common::run(B, |fx: Fx| async move {
                    let f2 = fx.clone();
                    let r = tokio::spawn(testing::rollback_after([B.alias()], async move {
                        ins(&f2, 1).await.unwrap();
                        panic!("test body panics");
                    }))
                    .await;
                    assert!(r.unwrap_err().is_panic());
                    assert_eq!(fx.committed().await, Vec::<i64>::new());
                });
            }

            #[test]
            fn rule_1_8_durable_blocks_run_inside_a_test_transaction() {
                crate::common::run(B, |fx: Fx| async move {
                    testing::rollback_after([B.alias()], async {
                        Atomic::new()
                            .using(B.alias())
                            .durable(true)
                            .run(ins(&fx, 1))
                            .await
                            .unwrap();
                        // A durable block nested in a real block is still refused.
                        let e = Atomic::new()
                            .using(B.alias())
                            .run(async {
                                Atomic::new()
                                    .using(B.alias())
                                    .durable(true)
                                    .run(ins(&fx, 2))
                                    .await
                            })
                            .await
                            .unwrap_err();
                        assert!(e.to_string().contains("durable"), "{e}");
                    })
                    .await;
                    assert_eq!(fx.committed().await, Vec::<i64>::new());
                });
            }

            #[test]
            fn rule_10_2_captured_hooks_listed_in_order_and_run_only_with_execute() {
                crate::common::run(B, |fx: Fx| async move {
                    testing::rollback_after([B.alias()], async {
                        let (_, captured) = testing::capture_on_commit(B.alias(), false, async {
                            on_commit(fx.hook("a")).name("a").await.unwrap();
                            Atomic::new()
                                .using(B.alias())
                                .run(async { on_commit(fx.hook("b")).name("b").await })
                                .await
                                .unwrap();
                            on_commit(fx.hook("c")).await.unwrap();
                        })
                        .await;
                        assert_eq!(captured.names(), ["a", "b", "<unnamed>"]);
                        assert!(
                            captured.hooks[2].type_name.contains("hook"),
                            "{:?}",
                            captured.hooks[2]
                        );
                        assert!(fx.ran().is_empty(), "not executed");

                        let f2 = fx.clone();
                        let (_, captured) = testing::capture_on_commit(B.alias(), true, async {
                            on_commit(fx.hook("x")).name("x").await.unwrap();
                            on_commit(move || async move {
                                f2.log.lock().unwrap().push("y".into());
                                // A hook registered by a hook is captured and run too.
                                on_commit(f2.hook("z")).name("z").await
                            })
                            .name("y")
                            .await
                            .unwrap();
                        })
                        .await;
                        assert_eq!(captured.names(), ["x", "y", "z"]);
                        assert_eq!(fx.ran(), ["x", "y", "z"]);
                    })
                    .await;
                });
            }

            #[test]
            fn rule_10_2_nested_captures() {
                crate::common::run(B, |fx: Fx| async move {
                    let (_, outer) = testing::capture_on_commit(B.alias(), false, async {
                        on_commit(fx.hook("outer")).name("outer").await.unwrap();
                        let (_, inner) = testing::capture_on_commit(B.alias(), false, async {
                            on_commit(fx.hook("inner")).name("inner").await.unwrap();
                        })
                        .await;
                        assert_eq!(inner.names(), ["inner"]);
                    })
                    .await;
                    assert_eq!(outer.names(), ["outer"]);
                    assert!(fx.ran().is_empty());
                });
            }
        }
    };
}

helpers_suite!(sqlite, sqlx::Sqlite, Backend::Sqlite);
helpers_suite!(postgres, sqlx::Postgres, Backend::Postgres);
helpers_suite!(mysql, sqlx::MySql, Backend::MySql);
helpers_suite!(pgbouncer, sqlx::Postgres, Backend::PgBouncer);
