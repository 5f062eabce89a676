//! Per-request transactions over real HTTP (docs/semantics.md §8): an axum server on 127.0.0.1:0
//! under `AtomicRequestsLayer`, driven by a plain HTTP/1.1 client, on every backend.

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::get;
use common::{Backend, Fx};
use sqlx::AssertSqlSafe;
use sqlx_atomic::{
    AtomicRequestsLayer, Error, ErrorBody, HookFailure, NonAtomicRequestsLayer, atomic,
    non_atomic_requests, on_commit,
};

static HOOKS: Mutex<Vec<String>> = Mutex::new(Vec::new());

async fn insert(alias: &str, table: &str, v: i64) -> Result<(), Error> {
    let sql = AssertSqlSafe(format!("INSERT INTO {table} (v) VALUES ({v})"));
    match alias {
        "sqlite" => {
            sqlx::query(sql)
                .execute(sqlx_atomic::sqlite("sqlite"))
                .await?
        }
        "pg" | "pgb" => {
            sqlx::query(sql)
                .execute(sqlx_atomic::postgres(alias.to_owned()))
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

/// An extractor that writes through the ambient handle (an audit row, as an authentication
/// extractor might write a login): the last three path segments are the alias, the table and
/// the value.
struct Audited;

impl<S: Send + Sync> FromRequestParts<S> for Audited {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        let mut segments = parts.uri.path().rsplit('/');
        let (Some(v), Some(t), Some(alias)) = (segments.next(), segments.next(), segments.next())
        else {
            return Err(StatusCode::BAD_REQUEST);
        };
        let v: i64 = v.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
        insert(alias, t, v).await.unwrap();
        Ok(Audited)
    }
}

/// A handler whose extractor wrote, and which then fails.
async fn audited_then_fails(_: Audited) -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

/// Runs one statement through the alias's ambient handle.
async fn exec(alias: &str, sql: String) -> Result<(), Error> {
    let sql = AssertSqlSafe(sql);
    match alias {
        "sqlite" => {
            sqlx::query(sql)
                .execute(sqlx_atomic::sqlite("sqlite"))
                .await?;
        }
        "pg" | "pgb" => {
            sqlx::query(sql)
                .execute(sqlx_atomic::postgres(alias.to_owned()))
                .await?;
        }
        _ => {
            sqlx::query(sql).execute(sqlx_atomic::mysql("my")).await?;
        }
    }
    Ok(())
}

/// Registers, on `alias`, a hook that logs `{label}:a`, a named hook that fails, an unnamed
/// hook that panics, and a hook that logs `{label}:b`.
async fn failing_hooks(alias: &'static str, label: &str) {
    hook(alias, format!("{label}:a")).await;
    on_commit(|| Err(std::io::Error::other("the mail server is down")))
        .name(format!("mailer-{label}"))
        .using(alias)
        .await
        .unwrap();
    on_commit(move || {
        if !alias.is_empty() {
            panic!("hook panics");
        }
    })
    .using(alias)
    .await
    .unwrap();
    hook(alias, format!("{label}:b")).await;
}

/// The ERROR lines the library logged, captured by a process-wide subscriber installed on
/// first use.
fn errors_logged() -> &'static Mutex<Vec<u8>> {
    #[derive(Clone)]
    struct Sink(&'static Mutex<Vec<u8>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("sqlx_atomic=error"))
            .with_writer(move || Sink(logs))
            .with_ansi(false)
            .init();
        logs
    })
}

/// The captured log lines that contain `needle`.
fn logged(needle: &str) -> Vec<String> {
    String::from_utf8_lossy(&errors_logged().lock().unwrap())
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

/// Whether a log line names `alias` in its `alias` field.
fn names_alias(line: &str, alias: &str) -> bool {
    line.contains(&format!("alias=\"{alias}\"")) || line.contains(&format!("alias={alias} "))
}

/// The handlers opted out with `#[non_atomic_requests(using = ..)]`, one per backend's alias (the
/// attribute takes literal aliases).
macro_rules! opted_out_handlers {
    ($($alias:literal => $out:ident, $late:ident, $retried:ident;)*) => {
        $(
            #[non_atomic_requests(using = $alias)]
            async fn $out(Path((t, v)): Path<(String, i64)>) -> StatusCode {
                // Autocommit: stays even though the handler answers 500.
                insert($alias, &t, v).await.unwrap();
                // A block inside commits on its own.
                atomic_insert($alias, &t, v + 1).await.unwrap();
                StatusCode::INTERNAL_SERVER_ERROR
            }

            #[non_atomic_requests(using = $alias)]
            async fn $late(t: String, v: i64) -> &'static str {
                insert($alias, &t, v).await.unwrap();
                "ok"
            }

            /// The supported way to retry a request's work: out of the request transaction,
            /// a retried block is an outermost block.
            #[non_atomic_requests(using = $alias)]
            async fn $retried(Path((t, v)): Path<(String, i64)>) -> StatusCode {
                sqlx_atomic::Atomic::new()
                    .using($alias)
                    .retry(3)
                    .run(|| insert($alias, &t, v))
                    .await
                    .unwrap();
                StatusCode::OK
            }
        )*

        /// The opted-out handler with a retried block for `alias`.
        fn retried_of(
            alias: &str,
        ) -> fn(Path<(String, i64)>) -> std::pin::Pin<Box<dyn Future<Output = StatusCode> + Send>> {
            match alias {
                $($alias => |p| Box::pin($retried(p)),)*
                _ => unreachable!("no such test alias {alias}"),
            }
        }

        /// The opted-out handler for `alias`.
        fn opted_out_of(
            alias: &str,
        ) -> fn(Path<(String, i64)>) -> std::pin::Pin<Box<dyn Future<Output = StatusCode> + Send>> {
            match alias {
                $($alias => |p| Box::pin($out(p)),)*
                _ => unreachable!("no such test alias {alias}"),
            }
        }

        /// Opts out of `alias` after the request transaction already sent a statement.
        async fn opted_out_late(alias: &str, t: String, v: i64) -> &'static str {
            match alias {
                $($alias => $late(t, v + 1).await,)*
                _ => unreachable!("no such test alias {alias}"),
            }
        }
    };
}

opted_out_handlers! {
    "sqlite" => opted_out_sqlite, opted_out_late_sqlite, retried_sqlite;
    "pg" => opted_out_pg, opted_out_late_pg, retried_pg;
    "pgb" => opted_out_pgb, opted_out_late_pgb, retried_pgb;
    "my" => opted_out_my, opted_out_late_my, retried_my;
}

#[atomic(using = "sqlite")]
async fn atomic_insert_sqlite(t: &str, v: i64) -> Result<(), Error> {
    insert("sqlite", t, v).await
}

#[atomic(using = "pg")]
async fn atomic_insert_pg(t: &str, v: i64) -> Result<(), Error> {
    insert("pg", t, v).await
}

#[atomic(using = "pgb")]
async fn atomic_insert_pgb(t: &str, v: i64) -> Result<(), Error> {
    insert("pgb", t, v).await
}

#[atomic(using = "my")]
async fn atomic_insert_my(t: &str, v: i64) -> Result<(), Error> {
    insert("my", t, v).await
}

async fn atomic_insert(alias: &str, t: &str, v: i64) -> Result<(), Error> {
    match alias {
        "sqlite" => atomic_insert_sqlite(t, v).await,
        "pg" => atomic_insert_pg(t, v).await,
        "pgb" => atomic_insert_pgb(t, v).await,
        _ => atomic_insert_my(t, v).await,
    }
}

/// A handler opted out of an alias that is not configured: a clear error and a 500.
#[non_atomic_requests(using = "no_such_alias")]
async fn opt_out_unknown(alias: &'static str, t: String, v: i64) -> &'static str {
    insert(alias, &t, v).await.unwrap();
    "ok"
}

/// The test app's routes, without the layer.
fn routes(alias: &'static str) -> Router {
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
            "/panic_idle",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("handler panics before any query");
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
        .route("/opted_out/{t}/{v}", get(opted_out_of(alias)))
        .route("/retried/{t}/{v}", get(retried_of(alias)))
        .route(
            "/retried_inside/{t}/{v}",
            get(move |Path((t, v)): Path<(String, i64)>| async move {
                // The request transaction owns the outermost block: retry is refused before
                // anything is sent.
                let r = sqlx_atomic::Atomic::new()
                    .using(alias)
                    .retry(3)
                    .run(|| insert(alias, &t, v))
                    .await;
                match r {
                    Err(e) if matches!(e.kind(), sqlx_atomic::ErrorKind::RetryNested) => {
                        StatusCode::CONFLICT
                    }
                    _ => StatusCode::OK,
                }
            }),
        )
        .route(
            "/opted_out_late/{t}/{v}",
            get(move |Path((t, v)): Path<(String, i64)>| async move {
                // The request transaction is used before the opt-out: a clear error, a 500, and
                // nothing committed.
                insert(alias, &t, v).await.unwrap();
                opted_out_late(alias, t, v).await
            }),
        )
        .route(
            "/opt_out_unknown/{t}/{v}",
            get(move |Path((t, v)): Path<(String, i64)>| async move {
                opt_out_unknown(alias, t, v).await
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
        .route(
            "/hook_only/{code}/{t}/{v}",
            get(
                move |Path((code, t, v)): Path<(u16, String, i64)>| async move {
                    // No query: the request's context is first made here, by the hook.
                    hook(alias, format!("{t}:{v}")).await;
                    StatusCode::from_u16(code).unwrap()
                },
            ),
        )
        .route(
            "/swallowed/{t}/{v}",
            get(move |Path((t, v)): Path<(String, i64)>| async move {
                insert(alias, &t, v).await.unwrap();
                hook(alias, format!("{t}:{v}")).await;
                // A failing statement whose error the handler ignores: the request transaction
                // is rolled back, so the handler's 200 would be a lie.
                let failed = sqlx_atomic::Atomic::new()
                    .using(alias)
                    .savepoint(false)
                    .run(insert_null(alias, &t))
                    .await;
                assert!(failed.is_err());
                "ok"
            }),
        )
        .route("/idle", get(|| async { "no query" }))
        .route(
            "/hooks_fail/{t}/{v}",
            get(move |Path((t, v)): Path<(String, i64)>| async move {
                insert(alias, &t, v).await.unwrap();
                failing_hooks(alias, &t).await;
                "ok"
            }),
        )
        .route(
            "/deferred/{c}",
            get(move |Path(c): Path<String>| async move {
                // Violates a deferred foreign key: the COMMIT fails.
                exec(alias, format!("INSERT INTO {c} VALUES (42)"))
                    .await
                    .unwrap();
                hook(alias, format!("{c}:hook")).await;
                "ok"
            }),
        )
        // The extractor writes; the path rules of the layer (if any) decide whether it runs
        // in the request transaction.
        .route("/login/{a}/{t}/{v}", get(audited_then_fails))
        .route(
            "/login_route/{a}/{t}/{v}",
            get(audited_then_fails).layer(NonAtomicRequestsLayer::new([alias])),
        )
        .route(
            "/login_unknown/{a}/{t}/{v}",
            get(audited_then_fails).layer(NonAtomicRequestsLayer::new("no_such_alias")),
        )
}

/// A statement that fails on every backend (NOT NULL violation).
async fn insert_null(alias: &str, table: &str) -> Result<(), Error> {
    exec(alias, format!("INSERT INTO {table} (v) VALUES (NULL)")).await
}

/// How the layer is applied.
#[derive(Clone, Copy)]
enum Form {
    /// `Router::layer`: on each route.
    PerRoute,
    /// `AtomicRequestsLayer::new().layer(router)`: around the whole router, one service.
    AroundRouter,
}

async fn serve(alias: &'static str) -> std::net::SocketAddr {
    serve_as(alias, Form::PerRoute).await
}

async fn serve_as(alias: &'static str, form: Form) -> std::net::SocketAddr {
    serve_with(alias, form, AtomicRequestsLayer::new()).await
}

async fn serve_with(
    alias: &'static str,
    form: Form,
    layer: AtomicRequestsLayer,
) -> std::net::SocketAddr {
    // A backlog of 4,096 (tokio's `bind` uses 1,024): 2,000 clients connect at once, and a full
    // accept queue makes the kernel drop their handshakes (retried after 1 s, 3 s, …) or reset
    // them, which would test the kernel rather than the layer.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(4096).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        match form {
            Form::PerRoute => {
                let app = routes(alias).layer(layer);
                axum::serve(listener, app).await
            }
            Form::AroundRouter => {
                use tower::Layer;
                let app = layer.layer(routes(alias));
                let make = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
                axum::serve(listener, make).await
            }
        }
        .unwrap()
    });
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

/// A response as the client saw it.
#[derive(Debug, PartialEq)]
struct Reply {
    status: u16,
    content_type: Option<String>,
    body: String,
}

/// A minimal HTTP/1.1 GET; returns the status, the content type and the body.
async fn get_reply(addr: std::net::SocketAddr, path: &str) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body = if header("transfer-encoding").as_deref() == Some("chunked") {
        let mut rest = body;
        let mut out = String::new();
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    Reply {
        status: status.parse().unwrap(),
        content_type: header("content-type"),
        body,
    }
}

/// The layer's own 500 with its default text body.
fn text_500(body: &str) -> Reply {
    Reply {
        status: 500,
        content_type: Some("text/plain; charset=utf-8".into()),
        body: body.into(),
    }
}

const ROLLED_BACK: &str = "the request's database work failed and was rolled back";
const PANICKED: &str = "the request panicked; its changes were rolled back";
const OPT_OUT_FAILED: &str =
    "the request could not run outside its transaction; its changes were rolled back";
const HOOK_FAILED: &str =
    "the request's changes were committed, but an on_commit hook failed afterwards";
const COMMIT_FAILED: &str =
    "the request's transaction could not be committed; its changes were rolled back";

/// Asserts that a body the layer made says nothing of the database's own error.
fn assert_no_database_text(reply: &Reply, table: &str) {
    for leak in [
        table,
        "NULL",
        "null",
        "constraint",
        "foreign",
        "FOREIGN",
        "violates",
        "INSERT",
        "sqlite",
        "postgres",
        "mysql",
        "127.0.0.1",
    ] {
        assert!(
            !reply.body.contains(leak),
            "the body shows {leak:?}: {}",
            reply.body
        );
    }
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
            fn rule_8_1_a_request_that_only_registers_a_hook() {
                common::run(B, |fx: Fx| async move {
                    let addr = serve(B.alias()).await;
                    let t = &fx.table;
                    // Its hook runs when the request commits (it sent nothing to commit) and is
                    // discarded when the response rolls the request back.
                    assert_eq!(
                        get_status(addr, &format!("/hook_only/200/{t}/1")).await,
                        200
                    );
                    assert_eq!(
                        get_status(addr, &format!("/hook_only/500/{t}/2")).await,
                        500
                    );
                    assert_eq!(hooks_of(t), [format!("{t}:1")]);
                    assert_eq!(fx.committed().await, Vec::<i64>::new());
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
                    // A panic in a request that never touched a database is a 500 as well.
                    assert_eq!(get_status(addr, "/panic_idle").await, 500);
                    assert_eq!(get_status(addr, &format!("/set_rollback/{t}/4")).await, 200);
                    assert_eq!(get_status(addr, &format!("/status/201/{t}/5")).await, 201);
                    assert_eq!(fx.committed().await, [5]);
                    assert_eq!(hooks_of(t), [format!("{t}:5")]);
                    // The server keeps serving after the panic.
                    assert_eq!(get_status(addr, &format!("/ok/{t}/6")).await, 200);
                });
            }

            #[test]
            fn rule_8_3_a_swallowed_error_is_a_500_not_the_handlers_200() {
                common::run(B, |fx: Fx| async move {
                    let addr = serve(B.alias()).await;
                    let t = &fx.table;
                    assert_eq!(get_status(addr, &format!("/swallowed/{t}/1")).await, 500);
                    assert_eq!(fx.committed().await, Vec::<i64>::new());
                    assert!(hooks_of(t).is_empty());
                    // set_rollback(true) is asked for: the handler's answer stands.
                    assert_eq!(get_status(addr, &format!("/set_rollback/{t}/2")).await, 200);
                    assert_eq!(fx.committed().await, Vec::<i64>::new());
                });
            }

            #[test]
            fn rule_8_2_retry_needs_a_handler_opted_out_of_the_request_transaction() {
                common::run(B, |fx: Fx| async move {
                    let addr = serve(B.alias()).await;
                    let t = &fx.table;
                    assert_eq!(
                        get_status(addr, &format!("/retried_inside/{t}/1")).await,
                        409
                    );
                    assert_eq!(fx.committed().await, Vec::<i64>::new());
                    assert_eq!(get_status(addr, &format!("/retried/{t}/2")).await, 200);
                    assert_eq!(fx.committed().await, [2]);
                });
            }

            #[test]
            fn rule_8_3_the_layer_around_the_whole_router() {
                // The same rules when the layer wraps the router as one service instead of
                // each route (`Router::layer`).
                common::run(B, |fx: Fx| async move {
                    let addr = serve_as(B.alias(), Form::AroundRouter).await;
                    let t = &fx.table;
                    assert_eq!(get_status(addr, &format!("/status/500/{t}/1")).await, 500);
                    assert_eq!(get_status(addr, &format!("/panic/{t}/2")).await, 500);
                    assert_eq!(get_status(addr, "/panic_idle").await, 500);
                    assert_eq!(get_status(addr, &format!("/set_rollback/{t}/3")).await, 200);
                    assert_eq!(
                        get_status(addr, &format!("/hook_only/200/{t}/4")).await,
                        200
                    );
                    assert_eq!(get_status(addr, &format!("/opted_out/{t}/5")).await, 500);
                    assert_eq!(get_status(addr, &format!("/ok/{t}/7")).await, 200);
                    assert_eq!(get_status(addr, "/idle").await, 200);
                    // A path no route matches is answered by the router, under the layer.
                    assert_eq!(get_status(addr, "/no_such_route").await, 404);
                    // The opted-out handler committed its rows (5 in autocommit, 6 in its own
                    // block) although it answered 500.
                    assert_eq!(fx.committed().await, [5, 6, 7]);
                    assert_eq!(hooks_of(t), [format!("{t}:4"), format!("{t}:7")]);
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
            fn rule_8_3_a_failing_hook_keeps_the_committed_response_and_the_others_run() {
                common::run(B, |fx: Fx| async move {
                    errors_logged();
                    let addr = serve(B.alias()).await;
                    let t = &fx.table;
                    // A hook returns an error and another panics, after the COMMIT: the
                    // handler's answer stands, and the hooks after them still run.
                    let reply = get_reply(addr, &format!("/hooks_fail/{t}/1")).await;
                    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
                    assert_eq!(fx.committed().await, [1]);
                    assert_eq!(hooks_of(t), [format!("{t}:a"), format!("{t}:b")]);
                    // Each failure is logged with the alias and the hook's name.
                    let named = logged(&format!("mailer-{t}"));
                    assert_eq!(named.len(), 1, "{named:?}");
                    assert!(names_alias(&named[0], B.alias()), "{named:?}");
                    assert!(named[0].contains("the mail server is down"), "{named:?}");
                    assert!(named[0].contains("response stands"), "{named:?}");
                    let unnamed: Vec<String> = logged("hook panics")
                        .into_iter()
                        .filter(|l| names_alias(l, B.alias()) && l.contains("<unnamed>"))
                        .collect();
                    assert!(!unnamed.is_empty(), "no log of the panicking hook");
                    // The server goes on.
                    assert_eq!(get_status(addr, &format!("/ok/{t}/2")).await, 200);
                    assert_eq!(fx.committed().await, [1, 2]);
                });
            }

            #[test]
            fn rule_8_3_a_failing_hook_under_server_error_is_a_500_that_says_so() {
                common::run(B, |fx: Fx| async move {
                    let layer =
                        AtomicRequestsLayer::new().on_hook_failure(HookFailure::ServerError);
                    let addr = serve_with(B.alias(), Form::PerRoute, layer).await;
                    let t = &fx.table;
                    let reply = get_reply(addr, &format!("/hooks_fail/{t}/1")).await;
                    assert_eq!(reply, text_500(HOOK_FAILED));
                    // The data stays committed; the hooks after the failing one are dropped.
                    assert_eq!(fx.committed().await, [1]);
                    assert_eq!(hooks_of(t), [format!("{t}:a")]);
                });
            }

            #[test]
            fn rule_8_3_the_layers_own_500s_say_what_happened() {
                common::run(B, |fx: Fx| async move {
                    let addr = serve(B.alias()).await;
                    let t = &fx.table;
                    let swallowed = get_reply(addr, &format!("/swallowed/{t}/1")).await;
                    assert_eq!(swallowed, text_500(ROLLED_BACK));
                    assert_no_database_text(&swallowed, t);
                    let panicked = get_reply(addr, &format!("/panic/{t}/2")).await;
                    assert_eq!(panicked, text_500(PANICKED));
                    assert_eq!(get_reply(addr, "/panic_idle").await, text_500(PANICKED));
                    let late = get_reply(addr, &format!("/opted_out_late/{t}/3")).await;
                    assert_eq!(late, text_500(OPT_OUT_FAILED));
                    let unknown = get_reply(addr, &format!("/opt_out_unknown/{t}/5")).await;
                    assert_eq!(unknown, text_500(OPT_OUT_FAILED));
                    assert_eq!(fx.committed().await, Vec::<i64>::new());
                    // The handler's own error responses pass as they are.
                    let own = get_reply(addr, &format!("/status/500/{t}/6")).await;
                    assert_eq!((own.status, own.body.as_str()), (500, ""));
                });
            }

            #[test]
            fn rule_8_3_json_and_empty_error_bodies() {
                common::run(B, |fx: Fx| async move {
                    let t = &fx.table;
                    let json = AtomicRequestsLayer::new().error_body(ErrorBody::Json);
                    let addr = serve_with(B.alias(), Form::AroundRouter, json).await;
                    let reply = get_reply(addr, &format!("/swallowed/{t}/1")).await;
                    assert_eq!(
                        reply,
                        Reply {
                            status: 500,
                            content_type: Some("application/json".into()),
                            body: format!(r#"{{"error":"rolled_back","message":"{ROLLED_BACK}"}}"#),
                        }
                    );
                    assert_no_database_text(&reply, t);
                    let reply = get_reply(addr, &format!("/panic/{t}/2")).await;
                    assert_eq!(
                        reply.body,
                        format!(r#"{{"error":"panicked","message":"{PANICKED}"}}"#)
                    );
                    let empty = AtomicRequestsLayer::new().error_body(ErrorBody::Empty);
                    let addr = serve_with(B.alias(), Form::PerRoute, empty).await;
                    let reply = get_reply(addr, &format!("/swallowed/{t}/3")).await;
                    assert_eq!(
                        reply,
                        Reply {
                            status: 500,
                            content_type: None,
                            body: String::new(),
                        }
                    );
                    assert_eq!(fx.committed().await, Vec::<i64>::new());
                });
            }

            #[test]
            fn rule_8_3_a_failed_commit_is_a_500_that_says_so_without_hooks() {
                // InnoDB checks foreign keys at once: no constraint makes a MariaDB COMMIT
                // fail, so this case runs on SQLite and PostgreSQL.
                if B.kind() == Backend::MySql {
                    return;
                }
                common::run(B, |fx: Fx| async move {
                    let tables = fx.deferred_fk().await;
                    let c = tables.1.clone();
                    let addr = serve(B.alias()).await;
                    let reply = get_reply(addr, &format!("/deferred/{c}")).await;
                    assert_eq!(reply, text_500(COMMIT_FAILED));
                    assert_no_database_text(&reply, &c);
                    assert!(hooks_of(&c).is_empty());
                    fx.drop_deferred(tables).await;
                });
            }

            #[test]
            fn rule_8_5_a_route_layer_opts_out_before_extractors_run() {
                common::run(B, |fx: Fx| async move {
                    let a = B.alias();
                    let t = &fx.table;
                    for form in [Form::PerRoute, Form::AroundRouter] {
                        let addr = serve_as(a, form).await;
                        // In the request transaction, the extractor's write is rolled back
                        // with the handler's 500.
                        assert_eq!(get_status(addr, &format!("/login/{a}/{t}/1")).await, 500);
                        assert_eq!(fx.committed().await, Vec::<i64>::new());
                        // Opted out on the route, it commits on its own although the handler
                        // then fails.
                        let reply = get_reply(addr, &format!("/login_route/{a}/{t}/2")).await;
                        assert_eq!((reply.status, reply.body.as_str()), (500, ""));
                        assert_eq!(fx.committed().await, [2]);
                        fx.raw(&format!("DELETE FROM {t}")).await;
                        // An unknown alias opts out of nothing: the layer's 500, rolled back.
                        let reply = get_reply(addr, &format!("/login_unknown/{a}/{t}/3")).await;
                        assert_eq!(reply, text_500(OPT_OUT_FAILED));
                        assert_eq!(fx.committed().await, Vec::<i64>::new());
                    }
                    // `#[non_atomic_requests]` works as before beside it.
                    let addr = serve(a).await;
                    assert_eq!(get_status(addr, &format!("/opted_out/{t}/10")).await, 500);
                    assert_eq!(fx.committed().await, [10, 11]);
                });
            }

            #[test]
            fn rule_8_5_path_rules_opt_out_before_extractors_run() {
                common::run(B, |fx: Fx| async move {
                    let a = B.alias();
                    let t = &fx.table;
                    // A prefix rule, around the router and on each route.
                    for form in [Form::AroundRouter, Form::PerRoute] {
                        let layer = AtomicRequestsLayer::new().non_atomic_paths(["/login/*"], a);
                        let addr = serve_with(a, form, layer).await;
                        assert_eq!(get_status(addr, &format!("/login/{a}/{t}/1")).await, 500);
                        assert_eq!(fx.committed().await, [1]);
                        // Other paths keep their request transaction.
                        assert_eq!(get_status(addr, &format!("/status/500/{t}/2")).await, 500);
                        assert_eq!(fx.committed().await, [1]);
                        fx.raw(&format!("DELETE FROM {t}")).await;
                    }
                    // An exact rule matches its path only.
                    let exact = AtomicRequestsLayer::new()
                        .non_atomic_paths([format!("/login/{a}/{t}/3")], [a]);
                    let addr = serve_with(a, Form::AroundRouter, exact).await;
                    assert_eq!(get_status(addr, &format!("/login/{a}/{t}/3")).await, 500);
                    assert_eq!(get_status(addr, &format!("/login/{a}/{t}/33")).await, 500);
                    assert_eq!(fx.committed().await, [3]);
                    // A rule naming an unknown alias opts out of nothing: a 500, rolled back.
                    let unknown = AtomicRequestsLayer::new()
                        .non_atomic_paths(["/ok/*"], ["no_such_alias", a]);
                    let addr = serve_with(a, Form::AroundRouter, unknown).await;
                    let reply = get_reply(addr, &format!("/ok/{t}/4")).await;
                    assert_eq!(reply, text_500(OPT_OUT_FAILED));
                    assert_eq!(fx.committed().await, [3]);
                    assert!(hooks_of(t).is_empty());
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
web_suite!(pgbouncer, Backend::PgBouncer);

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

/// Two aliases in one request (SQLite, then PostgreSQL, in `Databases::add` order): each its own
/// transaction; they commit innermost (PostgreSQL) first, and a COMMIT that fails on PostgreSQL
/// rolls the SQLite transaction back: a 500, no hook on either.
#[test]
fn rule_8_4_mixed_aliases_commit_together_and_a_failed_commit_rolls_the_other_back() {
    common::run(Backend::Postgres, |pg: Fx| async move {
        let sq = Fx::new(Backend::Sqlite).await;
        let tables = pg.deferred_fk().await;
        let (sq_t, pg_t, child) = (sq.table.clone(), pg.table.clone(), tables.1.clone());
        let app = Router::new()
            .route(
                "/{code}/{bad}",
                get(move |Path((code, bad)): Path<(u16, bool)>| {
                    let (sq_t, pg_t, child) = (sq_t.clone(), pg_t.clone(), child.clone());
                    async move {
                        let v = i64::from(code);
                        insert("sqlite", &sq_t, v).await.unwrap();
                        hook("sqlite", format!("{sq_t}:{v}")).await;
                        if bad {
                            // Violates a deferred foreign key: PostgreSQL's COMMIT fails.
                            sqlx::query(AssertSqlSafe(format!("INSERT INTO {child} VALUES (42)")))
                                .execute(sqlx_atomic::postgres("pg"))
                                .await
                                .unwrap();
                        } else {
                            insert("pg", &pg_t, v).await.unwrap();
                        }
                        hook("pg", format!("{pg_t}:{v}")).await;
                        StatusCode::from_u16(code).unwrap()
                    }
                }),
            )
            .layer(AtomicRequestsLayer::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        assert_eq!(get_status(addr, "/200/false").await, 200);
        assert_eq!(
            (sq.committed().await, pg.committed().await),
            (vec![200], vec![200])
        );
        assert_eq!(
            (hooks_of(&sq.table), hooks_of(&pg.table)),
            (
                vec![format!("{}:200", sq.table)],
                vec![format!("{}:200", pg.table)]
            )
        );
        // A client error rolls both back.
        assert_eq!(get_status(addr, "/409/false").await, 409);
        // PostgreSQL's COMMIT fails: SQLite's transaction, still open around it, rolls back.
        assert_eq!(get_status(addr, "/201/true").await, 500);
        assert_eq!(
            (sq.committed().await, pg.committed().await),
            (vec![200], vec![200])
        );
        assert_eq!(
            (hooks_of(&sq.table).len(), hooks_of(&pg.table).len()),
            (1, 1)
        );
        sq.assert_pool_clean("sqlite").await;
        pg.assert_pool_clean("pg").await;
        pg.drop_deferred(tables).await;
        sq.drop_table().await;
    });
}

/// Two aliases in one request (SQLite outermost, then `server`): a hook failing on the server's
/// alias, which commits first, stops neither SQLite's COMMIT nor its hooks, nor the server's
/// later hooks; under `HookFailure::ServerError` it is a 500 and SQLite, not yet committed, rolls
/// back.
fn hook_failure_on_one_alias_of_two(server: Backend) {
    common::run(server, move |srv: Fx| async move {
        let sq = Fx::new(Backend::Sqlite).await;
        let alias = server.alias();
        let (sq_t, srv_t) = (sq.table.clone(), srv.table.clone());
        let routes = Router::new().route(
            "/{v}",
            get(move |Path(v): Path<i64>| {
                let (sq_t, srv_t) = (sq_t.clone(), srv_t.clone());
                async move {
                    insert("sqlite", &sq_t, v).await.unwrap();
                    hook("sqlite", format!("{sq_t}:{v}")).await;
                    insert(alias, &srv_t, v).await.unwrap();
                    failing_hooks(alias, &srv_t).await;
                    "ok"
                }
            }),
        );
        let keep = routes.clone().layer(AtomicRequestsLayer::new());
        let fail =
            routes.layer(AtomicRequestsLayer::new().on_hook_failure(HookFailure::ServerError));
        let mut addrs = Vec::new();
        for app in [keep, fail] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        }

        let reply = get_reply(addrs[0], "/1").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
        assert_eq!(
            (sq.committed().await, srv.committed().await),
            (vec![1], vec![1])
        );
        assert_eq!(hooks_of(&sq.table), [format!("{}:1", sq.table)]);
        assert_eq!(
            hooks_of(&srv.table),
            [format!("{}:a", srv.table), format!("{}:b", srv.table)]
        );

        let reply = get_reply(addrs[1], "/2").await;
        assert_eq!(reply, text_500(HOOK_FAILED));
        // The server's alias committed before its hook failed; SQLite rolled back.
        assert_eq!(
            (sq.committed().await, srv.committed().await),
            (vec![1], vec![1, 2])
        );
        assert_eq!(hooks_of(&sq.table).len(), 1);
        assert_eq!(hooks_of(&srv.table).len(), 3);
        sq.assert_pool_clean("sqlite").await;
        srv.assert_pool_clean(alias).await;
        sq.drop_table().await;
    });
}

#[test]
fn rule_8_4_a_failing_hook_on_postgres_spares_sqlite() {
    hook_failure_on_one_alias_of_two(Backend::Postgres);
}

#[test]
fn rule_8_4_a_failing_hook_on_mariadb_spares_sqlite() {
    hook_failure_on_one_alias_of_two(Backend::MySql);
}

/// Requests served one after another on one thread reuse the request context (it is recycled
/// when a request ends idle): a request that touches only one alias after one that touched both
/// sends nothing to the other, and a hook registered there without a query still runs after the
/// request commits.
#[test]
fn rule_8_4_requests_on_one_thread_touch_only_their_aliases() {
    common::run(Backend::Postgres, |pg: Fx| async move {
        let sq = Fx::new(Backend::Sqlite).await;
        let (sq_t, pg_t) = (sq.table.clone(), pg.table.clone());
        let (sq_t2, pg_t2) = (sq.table.clone(), pg.table.clone());
        let app = Router::new()
            .route(
                "/both/{v}",
                get(move |Path(v): Path<i64>| {
                    let (sq_t, pg_t) = (sq_t.clone(), pg_t.clone());
                    async move {
                        insert("sqlite", &sq_t, v).await.unwrap();
                        insert("pg", &pg_t, v).await.unwrap();
                        StatusCode::OK
                    }
                }),
            )
            .route(
                "/sqlite/{v}",
                get(move |Path(v): Path<i64>| {
                    let (sq_t, pg_t) = (sq_t2.clone(), pg_t2.clone());
                    async move {
                        insert("sqlite", &sq_t, v).await.unwrap();
                        hook("pg", format!("{pg_t}:{v}")).await;
                        StatusCode::OK
                    }
                }),
            )
            .route("/none", get(|| async { StatusCode::OK }))
            .layer(AtomicRequestsLayer::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        assert_eq!(get_status(addr, "/both/1").await, 200);
        assert_eq!(get_status(addr, "/sqlite/2").await, 200);
        assert_eq!(get_status(addr, "/none").await, 200);
        assert_eq!(get_status(addr, "/both/3").await, 200);
        assert_eq!(get_status(addr, "/sqlite/4").await, 200);
        assert_eq!(
            (sq.committed().await, pg.committed().await),
            (vec![1, 2, 3, 4], vec![1, 3])
        );
        assert_eq!(
            hooks_of(&pg.table),
            [format!("{}:2", pg.table), format!("{}:4", pg.table)]
        );
        sq.assert_pool_clean("sqlite").await;
        pg.assert_pool_clean("pg").await;
        sq.drop_table().await;
    });
}

/// A request whose future is dropped in the middle of the handler (the client went away, a
/// timeout layer fired): the request transaction is rolled back, no hook runs, and the pool ends
/// with every connection idle and outside any transaction.
#[test]
fn rule_8_1_a_dropped_request_rolls_back_and_leaves_the_pool_clean() {
    use tower::ServiceExt;
    common::run(Backend::Postgres, |fx: Fx| async move {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let t = fx.table.clone();
        let app = Router::new()
            .route(
                "/",
                get(move || async move {
                    insert("pg", &t, 1).await.unwrap();
                    hook("pg", format!("{t}:1")).await;
                    let inserted = tx.lock().unwrap().take();
                    inserted.unwrap().send(()).unwrap();
                    std::future::pending::<()>().await;
                    "never"
                }),
            )
            .layer(AtomicRequestsLayer::new());
        let request = axum::http::Request::get("/")
            .body(axum::body::Body::empty())
            .unwrap();
        let mut response = Box::pin(app.oneshot(request));
        tokio::select! {
            _ = &mut response => panic!("the handler never answers"),
            sent = rx => sent.unwrap(),
        }
        drop(response);
        // The rollback of a dropped request runs in the background: wait (without sleeping)
        // until every connection is back in the pool.
        common::settle::<sqlx::Postgres>("pg").await;
        fx.assert_pool_clean("pg").await;
        assert_eq!(fx.committed().await, Vec::<i64>::new());
        assert!(hooks_of(&fx.table).is_empty());
    });
}
