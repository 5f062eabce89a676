//! Two databases by alias, each with its own per-request transaction, routed by `using`, and a
//! handler opted out of one alias's request transaction.
//!
//! `default` is SQLite; `reports` is PostgreSQL when `DATABASE_URL_REPORTS` is set (for example
//! `postgres://postgres@127.0.0.1:5432/test`), else a second SQLite database.
//!
//! Run with `cargo run --example multi_db --features postgres` (the feature is needed to build the
//! PostgreSQL handle; the example itself uses PostgreSQL only when the variable is set).

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use sqlx::AssertSqlSafe;
use sqlx_atomic::{AtomicRequestsLayer, Database, Databases, Error, atomic, non_atomic_requests};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs a statement on an alias, whichever backend it is.
async fn exec(alias: &'static str, sql: String) -> Result<(), Error> {
    let sql = AssertSqlSafe(sql);
    if alias == "reports" && std::env::var("DATABASE_URL_REPORTS").is_ok() {
        sqlx::query(sql)
            .execute(sqlx_atomic::postgres(alias))
            .await?;
    } else {
        sqlx::query(sql).execute(sqlx_atomic::sqlite(alias)).await?;
    }
    Ok(())
}

async fn count(alias: &'static str, table: &str) -> Result<i64, Error> {
    let sql = AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
    Ok(
        if alias == "reports" && std::env::var("DATABASE_URL_REPORTS").is_ok() {
            sqlx::query_scalar(sql)
                .fetch_one(sqlx_atomic::postgres(alias))
                .await?
        } else {
            sqlx::query_scalar(sql)
                .fetch_one(sqlx_atomic::sqlite(alias))
                .await?
        },
    )
}

/// Writes to both databases inside both request transactions: all or nothing on each.
async fn order(fail: bool) -> StatusCode {
    exec(
        "default",
        "INSERT INTO orders (item) VALUES ('book')".into(),
    )
    .await
    .unwrap();
    exec(
        "reports",
        "INSERT INTO audit (what) VALUES ('order')".into(),
    )
    .await
    .unwrap();
    if fail {
        StatusCode::CONFLICT
    } else {
        StatusCode::CREATED
    }
}

/// The audit trail must survive a failed request: this handler runs outside the `reports`
/// request transaction (autocommit there), but still inside the `default` one.
#[non_atomic_requests(using = "reports")]
async fn order_with_audit(fail: bool) -> StatusCode {
    exec(
        "reports",
        "INSERT INTO audit (what) VALUES ('attempt')".into(),
    )
    .await
    .unwrap();
    exec(
        "default",
        "INSERT INTO orders (item) VALUES ('lamp')".into(),
    )
    .await
    .unwrap();
    // An explicit block on an opted-out alias is an outermost block: it commits on its own.
    record_outcome(fail).await.unwrap();
    if fail {
        StatusCode::CONFLICT
    } else {
        StatusCode::CREATED
    }
}

#[atomic(using = "reports")]
async fn record_outcome(fail: bool) -> Result<(), Error> {
    let what = if fail { "failed" } else { "succeeded" };
    exec(
        "reports",
        format!("INSERT INTO audit (what) VALUES ('{what}')"),
    )
    .await
}

async fn post_to(addr: std::net::SocketAddr, path: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("sqlx-atomic-multi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sqlite_url = |name: &str| format!("sqlite://{}?mode=rwc", dir.join(name).display());
    let reports_url =
        std::env::var("DATABASE_URL_REPORTS").unwrap_or_else(|_| sqlite_url("reports.db"));
    Databases::new()
        .add(
            "default",
            Database::connect_lazy(&sqlite_url("app.db"))?.atomic_requests(true),
        )
        .add(
            "reports",
            Database::connect_lazy(&reports_url)?.atomic_requests(true),
        )
        .install()?;
    let reports_backend = if std::env::var("DATABASE_URL_REPORTS").is_ok() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!("default: SQLite; reports: {reports_backend}; both with per-request transactions");
    exec("default", "CREATE TABLE orders (item TEXT NOT NULL)".into()).await?;
    exec("reports", "DROP TABLE IF EXISTS audit".into()).await?;
    exec("reports", "CREATE TABLE audit (what TEXT NOT NULL)".into()).await?;

    let app = Router::new()
        .route("/order/ok", post(|| order(false)))
        .route("/order/fail", post(|| order(true)))
        .route("/audited/ok", post(|| order_with_audit(false)))
        .route("/audited/fail", post(|| order_with_audit(true)))
        .layer(AtomicRequestsLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });

    for path in ["/order/ok", "/order/fail", "/audited/ok", "/audited/fail"] {
        let status = post_to(addr, path).await;
        println!(
            "POST {path:<14} -> {status}; rows now: orders (default) = {}, audit (reports) = {}",
            count("default", "orders").await?,
            count("reports", "audit").await?
        );
    }
    println!("A failed request rolled back both databases, except the audit rows written by the");
    println!("handler that opted out of the `reports` request transaction.");
    exec("reports", "DROP TABLE audit".into()).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
