//! Per-request transactions over real HTTP (SEMANTICS 8): an axum server on 127.0.0.1:0 under
//! `AtomicRequestsLayer`, driven by a plain HTTP/1.1 client, on every backend.

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use common::{Backend, Fx};
use sqlx::AssertSqlSafe;
use sqlx_atomic::{AtomicRequestsLayer, Error, on_commit};

static HOOKS: Mutex<Vec<String>> = Mutex::new(Vec::new());

async fn insert(alias: &str, table: &str, v: i64) -> Result<(), Error> {
    let sql = AssertSqlSafe(format!("INSERT INTO {table} (v) VALUES ({v})"));
    match alias {
        "sqlite" => {
            sqlx::query(sql)
                .execute(sqlx_atomic::sqlite("sqlite"))
                .await?
        }
        "pg" => {
            sqlx::query(sql)
                .execute(sqlx_atomic::postgres("pg"))
                .await?;
            return Ok(());
        }
        _ => {
            sqlx::query(sql).execute(sqlx_atomic::mysql("my")).await?;
            return Ok(());
        }
    };
    Ok(())
}

async fn hook(alias: &'static str, label: String) {
    on_commit(move || HOOKS.lock().unwrap().push(label))
        .using(alias)
        .await
        .unwrap();
}

fn app(alias: &'static str) -> Router {
    Router::new()
        .route(
            "/ok/{t}/{v}",
            get(move |Path((t, v)): Path<(String, i64)>| async move {
                insert(alias, &t, v).await.unwrap();
                hook(alias, format!("{t}:{v}")).await;
                "ok"
            }),
        )
        .route(
            "/status/{code}/{t}/{v}",
            get(
                move |Path((code, t, v)): Path<(u16, String, i64)>| async move {
                    insert(alias, &t, v).await.unwrap();
                    hook(alias, format!("{t}:{v}")).await;
                    StatusCode::from_u16(code).unwrap()
                },
            ),
        )
        .route(
            "/panic/{t}/{v}",
            get(move |Path((t, v)): Path<(String, i64)>| async move {
                insert(alias, &t, v).await.unwrap();
                hook(alias, format!("{t}:{v}")).await;
                if v > 0 {
                    panic!("handler panics");
                }
                "unreachable"
            }),
        )
        .route(
            "/set_rollback/{t}/{v}",
            get(move |Path((t, v)): Path<(String, i64)>| async move {
                insert(alias, &t, v).await.unwrap();
                sqlx_atomic::using(alias).set_rollback(true).unwrap();
                "rolled back"
            }),
        )
        .route(
            "/opted_out/{t}/{v}",
            get(move |Path((t, v)): Path<(String, i64)>| {
                sqlx_atomic::__private::non_atomic_requests(&[alias], async move {
                    // Autocommit: stays even though the handler answers 500.
                    insert(alias, &t, v).await.unwrap();
                    // A block inside commits on its own.
                    sqlx_atomic::Atomic::new()
                        .using(alias)
                        .run(async { insert(alias, &t, v + 1).await })
                        .await
                        .unwrap();
                    StatusCode::INTERNAL_SERVER_ERROR
                })
            }),
        )
        .route(
            "/opted_out_late/{t}/{v}",
            get(move |Path((t, v)): Path<(String, i64)>| async move {
                // The request transaction is used before the opt-out: a clear error, a 500, and
                // nothing committed.
                insert(alias, &t, v).await.unwrap();
                sqlx_atomic::__private::non_atomic_requests(&[alias], async move {
                    insert(alias, &t, v + 1).await.unwrap();
                    "ok"
                })
                .await
            }),
        )
        .route(
            "/opt_out_unknown/{t}/{v}",
            get(move |Path((t, v)): Path<(String, i64)>| {
                sqlx_atomic::__private::non_atomic_requests(&["no_such_alias"], async move {
                    insert(alias, &t, v).await.unwrap();
                    "ok"
                })
            }),
        )
        .route(
            "/hook_panics/{t}/{v}",
            get(move |Path((t, v)): Path<(String, i64)>| async move {
                insert(alias, &t, v).await.unwrap();
                on_commit(move || {
                    if !alias.is_empty() {
                        panic!("hook panics");
                    }
                })
                .using(alias)
                .await
                .unwrap();
                "ok"
            }),
        )
        .route("/idle", get(|| async { "no query" }))
        .layer(AtomicRequestsLayer::new())
}

async fn serve(alias: &'static str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app(alias)).await.unwrap() });
    addr
}

/// A minimal HTTP/1.1 GET; returns the status code.
async fn get_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn hooks_of(table: &str) -> Vec<String> {
    HOOKS
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.starts_with(&format!("{table}:")))
        .cloned()
        .collect()
}

macro_rules! web_suite {
    ($module:ident, $backend:expr) => {
        mod $module {
            use super::*;
            const B: Backend = $backend;

            #[test]
            fn rule_8_1_commit_on_success_hooks_after_commit() {
                common::run(B, |fx: Fx| async move {
                    let addr = serve(B.alias()).await;
                    let t = &fx.table;
                    assert_eq!(get_status(addr, &format!("/ok/{t}/1")).await, 200);
                    assert_eq!(fx.committed().await, [1]);
                    assert_eq!(hooks_of(t), [format!("{t}:1")]);
                    assert_eq!(get_status(addr, "/idle").await, 200);
                });
            }

            #[test]
            fn rule_8_3_rollback_on_4xx_5xx_panic_and_set_rollback() {
                common::run(B, |fx: Fx| async move {
                    let addr = serve(B.alias()).await;
                    let t = &fx.table;
                    assert_eq!(get_status(addr, &format!("/status/404/{t}/1")).await, 404);
                    assert_eq!(get_status(addr, &format!("/status/500/{t}/2")).await, 500);
                    assert_eq!(get_status(addr, &format!("/panic/{t}/3")).await, 500);
                    assert_eq!(get_status(addr, &format!("/set_rollback/{t}/4")).await, 200);
                    assert_eq!(get_status(addr, &format!("/status/201/{t}/5")).await, 201);
                    assert_eq!(fx.committed().await, [5]);
                    assert_eq!(hooks_of(t), [format!("{t}:5")]);
                    // The server keeps serving after the panic.
                    assert_eq!(get_status(addr, &format!("/ok/{t}/6")).await, 200);
                });
            }

            #[test]
            fn rule_8_2_opted_out_handler_autocommits() {
                common::run(B, |fx: Fx| async move {
                    let addr = serve(B.alias()).await;
                    let t = &fx.table;
                    assert_eq!(get_status(addr, &format!("/opted_out/{t}/10")).await, 500);
                    assert_eq!(fx.committed().await, [10, 11]);
                });
            }

            #[test]
            fn rule_8_2_late_or_unknown_opt_out_is_an_error_and_rolls_back() {
                common::run(B, |fx: Fx| async move {
                    let addr = serve(B.alias()).await;
                    let t = &fx.table;
                    assert_eq!(
                        get_status(addr, &format!("/opted_out_late/{t}/1")).await,
                        500
                    );
                    assert_eq!(
                        get_status(addr, &format!("/opt_out_unknown/{t}/5")).await,
                        500
                    );
                    assert_eq!(fx.committed().await, Vec::<i64>::new());
                    assert_eq!(get_status(addr, &format!("/ok/{t}/7")).await, 200);
                    assert_eq!(fx.committed().await, [7]);
                });
            }

            #[test]
            fn rule_8_3_panicking_hook_is_a_500_and_the_server_goes_on() {
                common::run(B, |fx: Fx| async move {
                    let addr = serve(B.alias()).await;
                    let t = &fx.table;
                    assert_eq!(get_status(addr, &format!("/hook_panics/{t}/1")).await, 500);
                    // The data was committed before the hook ran.
                    assert_eq!(fx.committed().await, [1]);
                    assert_eq!(get_status(addr, &format!("/ok/{t}/2")).await, 200);
                });
            }

            #[test]
            fn rule_8_1_two_thousand_concurrent_requests_keep_their_own_state() {
                common::run(B, |fx: Fx| async move {
                    let addr = serve(B.alias()).await;
                    let t = Arc::new(fx.table.clone());
                    let mut tasks = Vec::new();
                    for v in 0..2000i64 {
                        let t = t.clone();
                        tasks.push(tokio::spawn(async move {
                            // Every third request fails with a 400 and must leave nothing.
                            let path = if v % 3 == 0 {
                                format!("/status/400/{t}/{v}")
                            } else {
                                format!("/ok/{t}/{v}")
                            };
                            (v, get_status(addr, &path).await)
                        }));
                    }
                    let mut expected = Vec::new();
                    for task in tasks {
                        let (v, status) = task.await.unwrap();
                        assert_eq!(status, if v % 3 == 0 { 400 } else { 200 }, "request {v}");
                        if v % 3 != 0 {
                            expected.push(v);
                        }
                    }
                    assert_eq!(fx.committed().await, expected);
                    let mut ran: Vec<i64> = hooks_of(&t)
                        .iter()
                        .map(|h| h.rsplit(':').next().unwrap().parse().unwrap())
                        .collect();
                    ran.sort();
                    assert_eq!(
                        ran, expected,
                        "each committed request's hook ran exactly once"
                    );
                });
            }
        }
    };
}

web_suite!(sqlite, Backend::Sqlite);
web_suite!(postgres, Backend::Postgres);
web_suite!(mysql, Backend::MySql);

#[test]
fn rule_8_3_failing_commit_is_a_500_without_hooks() {
    common::run(Backend::Postgres, |fx: Fx| async move {
        let tables = fx.deferred_fk().await;
        let c = tables.1.clone();
        let app = Router::new()
            .route(
                "/{c}",
                get(|Path(c): Path<String>| async move {
                    sqlx::query(AssertSqlSafe(format!("INSERT INTO {c} VALUES (42)")))
                        .execute(sqlx_atomic::postgres("pg"))
                        .await
                        .unwrap();
                    hook("pg", format!("{c}:hook")).await;
                    "ok"
                }),
            )
            .layer(AtomicRequestsLayer::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        assert_eq!(get_status(addr, &format!("/{c}")).await, 500);
        assert!(hooks_of(&c).is_empty());
        fx.drop_deferred(tables).await;
    });
}
