//! Requests sent through `AtomicRequestsLayer` from inside a test's rolled-back transaction
//! (docs/semantics.md §10.3), and queries to aliases a test did not name, on every backend.

mod common;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use common::{Backend, Fx};
use sqlx::AssertSqlSafe;
use sqlx_atomic::{AtomicRequestsLayer, Error, ErrorKind, Handle, testing};
use tower::ServiceExt;

macro_rules! in_tests_suite {
    ($module:ident, $db:ty, $backend:expr, $alias:literal) => {
        mod $module {
            use super::*;
            type DB = $db;
            const B: Backend = $backend;

            fn db() -> Handle<DB> {
                Handle::new(B.alias())
            }

            async fn ins(t: &str, v: i64) -> Result<(), Error> {
                sqlx::query(AssertSqlSafe(format!("INSERT INTO {t} (v) VALUES ({v})")))
                    .execute(db())
                    .await?;
                Ok(())
            }

            /// What the test's own transaction sees.
            async fn seen(t: &str) -> Vec<i64> {
                let sql = format!("SELECT v FROM {t} ORDER BY v");
                let rows: Vec<(i32,)> = sqlx::query_as(AssertSqlSafe(sql))
                    .fetch_all(db())
                    .await
                    .unwrap();
                rows.into_iter().map(|(v,)| i64::from(v)).collect()
            }

            async fn created(Path((t, v)): Path<(String, i64)>) -> StatusCode {
                ins(&t, v).await.unwrap();
                sqlx_atomic::on_commit(|| panic!("a hook of a test's request never runs"))
                    .using(B.alias())
                    .name("notify")
                    .await
                    .unwrap();
                StatusCode::CREATED
            }

            async fn fails(Path((t, v)): Path<(String, i64)>) -> StatusCode {
                ins(&t, v).await.unwrap();
                StatusCode::INTERNAL_SERVER_ERROR
            }

            async fn panics(Path((t, v)): Path<(String, i64)>) -> StatusCode {
                ins(&t, v).await.unwrap();
                panic!("the handler panics");
            }

            /// Ignores a failed statement and answers 200: the request is doomed.
            async fn ignores(Path((t, v)): Path<(String, i64)>) -> StatusCode {
                ins(&t, v).await.unwrap();
                let failed = sqlx::query(AssertSqlSafe(format!("INSERT INTO {t} (v) VALUES (NULL)")))
                    .execute(db())
                    .await;
                assert!(failed.is_err());
                StatusCode::OK
            }

            /// Opted out: its write is not undone by its own 500.
            #[sqlx_atomic::non_atomic_requests(using = $alias)]
            async fn opted_out(Path((t, v)): Path<(String, i64)>) -> StatusCode {
                ins(&t, v).await.unwrap();
                StatusCode::INTERNAL_SERVER_ERROR
            }

            fn app() -> Router {
                Router::new()
                    .route("/created/{t}/{v}", post(created))
                    .route("/fails/{t}/{v}", post(fails))
                    .route("/panics/{t}/{v}", post(panics))
                    .route("/ignores/{t}/{v}", post(ignores))
                    .route("/opted_out/{t}/{v}", post(opted_out))
                    .layer(AtomicRequestsLayer::new())
            }

            async fn send(path: &str, fx: &Fx, v: i64) -> StatusCode {
                let req = Request::post(format!("/{path}/{}/{v}", fx.table))
                    .body(Body::empty())
                    .unwrap();
                app().oneshot(req).await.unwrap().status()
            }

            #[test]
            fn rule_10_4_a_request_from_a_test_runs_in_its_transaction() {
                common::run(B, |fx: Fx| async move {
                    testing::rollback_after([B.alias()], async {
                        let (status, hooks) = testing::capture_on_commit(B.alias(), false, async {
                            send("created", &fx, 1).await
                        })
                        .await;
                        assert_eq!(status, StatusCode::CREATED);
                        // The test's transaction sees the row; no other connection does.
                        assert_eq!(seen(&fx.table).await, [1]);
                        assert_eq!(fx.committed().await, Vec::<i64>::new());
                        assert_eq!(hooks.names(), ["notify"]);
                        // The commit rule: a 5xx rolls back the request's savepoint only.
                        assert_eq!(send("fails", &fx, 2).await, StatusCode::INTERNAL_SERVER_ERROR);
                        assert_eq!(seen(&fx.table).await, [1]);
                        // A panic is a 500, and the test's transaction goes on.
                        assert_eq!(send("panics", &fx, 3).await, StatusCode::INTERNAL_SERVER_ERROR);
                        assert_eq!(seen(&fx.table).await, [1]);
                        // A request doomed by an ignored error is rolled back and answered 500.
                        assert_eq!(send("ignores", &fx, 4).await, StatusCode::INTERNAL_SERVER_ERROR);
                        assert_eq!(seen(&fx.table).await, [1]);
                        // An opted-out handler runs in the test's transaction, outside the
                        // request's savepoint: its 500 does not undo its write.
                        assert_eq!(
                            send("opted_out", &fx, 5).await,
                            StatusCode::INTERNAL_SERVER_ERROR
                        );
                        assert_eq!(seen(&fx.table).await, [1, 5]);
                        assert_eq!(fx.committed().await, Vec::<i64>::new());
                    })
                    .await;
                    // The test rolled everything back.
                    assert_eq!(fx.committed().await, Vec::<i64>::new());
                });
            }

            #[test]
            fn rule_10_3_an_alias_the_test_did_not_name_is_refused() {
                common::run(B, |fx: Fx| async move {
                    // A table on the alias "other" (SQLite), created outside the test.
                    let other = Handle::<sqlx::Sqlite>::new("other");
                    let table = format!("{}_other", fx.table);
                    sqlx::query(AssertSqlSafe(format!("CREATE TABLE {table} (v INTEGER)")))
                        .execute(&other)
                        .await
                        .unwrap();
                    let insert = AssertSqlSafe(format!("INSERT INTO {table} (v) VALUES (1)"));
                    testing::rollback_after([B.alias()], async {
                        let e = Error::from(sqlx::query(insert).execute(&other).await.unwrap_err());
                        assert_eq!(e.alias(), Some("other"));
                        assert!(
                            matches!(e.kind(), ErrorKind::NotAllowedInTest { allowed } if allowed == &[B.alias()]),
                            "{e}"
                        );
                        assert!(e.to_string().contains("not allowed in this test"), "{e}");
                        // The test's own alias works.
                        ins(&fx.table, 1).await.unwrap();
                    })
                    .await;
                    let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                        .fetch_one(&other)
                        .await
                        .unwrap();
                    assert_eq!(n, 0, "nothing was written to the alias the test did not name");
                    sqlx::query(AssertSqlSafe(format!("DROP TABLE {table}")))
                        .execute(&other)
                        .await
                        .unwrap();
                });
            }
        }
    };
}

in_tests_suite!(sqlite, sqlx::Sqlite, Backend::Sqlite, "sqlite");
in_tests_suite!(postgres, sqlx::Postgres, Backend::Postgres, "pg");
in_tests_suite!(mysql, sqlx::MySql, Backend::MySql, "my");
