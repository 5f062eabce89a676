//! The bug this library exists for, and its fix, over real HTTP.
//!
//! An axum app runs every request in a transaction (`atomic_requests(true)`, like Django's
//! ATOMIC_REQUESTS). The handler inserts an order and hands its id to a background worker. Sent
//! directly, the job often runs before the request's COMMIT and finds no row; sent through
//! `on_commit`, it runs after the COMMIT and always finds it.
//!
//! Run with `cargo run --example seed_race --features tower` (SQLite in a temp file, no setup).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::post;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx_atomic::{AtomicRequestsLayer, Database, Databases, Error, on_commit, sqlite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

#[derive(Clone)]
struct AppState {
    jobs: mpsc::UnboundedSender<i64>,
}

/// The view: insert an order, enqueue a job for it, then finish rendering the response.
async fn place_order(
    State(app): State<AppState>,
    Path(mode): Path<String>,
) -> Result<String, String> {
    let id: i64 = sqlx::query_scalar("INSERT INTO orders (item) VALUES ('book') RETURNING id")
        .fetch_one(sqlite("default"))
        .await
        .map_err(|e| e.to_string())?;
    if mode == "direct" {
        // BUG: the worker may look the order up before this request's transaction commits.
        let _ = app.jobs.send(id);
    } else {
        // FIX: the job is enqueued after the COMMIT succeeds, and never if it rolls back.
        let jobs = app.jobs.clone();
        on_commit(move || {
            let _ = jobs.send(id);
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    // The rest of the view (rendering, other calls) takes a moment before the COMMIT.
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(format!("order {id}"))
}

/// The background worker: looks each order up, outside any transaction, and counts the misses.
async fn worker(
    mut jobs: mpsc::UnboundedReceiver<i64>,
    done: Arc<AtomicUsize>,
    missing: Arc<AtomicUsize>,
) {
    let pool = sqlx_atomic::pool::<sqlx::Sqlite>("default").expect("configured");
    while let Some(id) = jobs.recv().await {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM orders WHERE id = ?")
            .bind(id)
            .fetch_optional(&pool)
            .await
            .expect("query");
        if found.is_none() {
            missing.fetch_add(1, Ordering::SeqCst);
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
}

async fn send_post(addr: std::net::SocketAddr, path: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
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
    let dir = std::env::temp_dir().join(format!("sqlx-atomic-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let opts = SqliteConnectOptions::new()
        .filename(dir.join("app.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_lazy_with(opts);
    Databases::new()
        .add(
            "default",
            Database::from_pool(pool)
                .begin_statement("BEGIN IMMEDIATE")
                .atomic_requests(true),
        )
        .install()?;
    sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL)")
        .execute(sqlite("default"))
        .await?;

    let (tx, rx) = mpsc::unbounded_channel();
    let (done, missing) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    tokio::spawn(worker(rx, done.clone(), missing.clone()));

    let app = Router::new()
        .route("/orders/{mode}", post(place_order))
        .layer(AtomicRequestsLayer::new())
        .with_state(AppState { jobs: tx });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });

    const REQUESTS: usize = 300;
    println!("{REQUESTS} requests per mode to http://{addr}, 20 at a time, each in a transaction:");
    for mode in ["direct", "on_commit"] {
        let before_missing = missing.load(Ordering::SeqCst);
        let before_done = done.load(Ordering::SeqCst);
        let mut ok = 0;
        for chunk in 0..REQUESTS / 20 {
            let mut tasks = Vec::new();
            for _ in 0..20 {
                let path = format!("/orders/{mode}");
                tasks.push(tokio::spawn(async move { send_post(addr, &path).await }));
            }
            for t in tasks {
                ok += usize::from(t.await.expect("task") == 200);
            }
            let _ = chunk;
        }
        while done.load(Ordering::SeqCst) - before_done < ok {
            tokio::task::yield_now().await;
        }
        let lost = missing.load(Ordering::SeqCst) - before_missing;
        println!("  {mode:>9}: {ok} orders placed, {lost} jobs found no row");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
