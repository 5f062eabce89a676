//! The bug this library exists for, its fix, and the durable fix, over real HTTP.
//!
//! An axum app runs every request in a transaction (`atomic_requests(true)`, like Django's
//! ATOMIC_REQUESTS) on SQLite in a temp file. The handler inserts an order and hands a job about
//! it to a background worker, which looks the order up. Three modes, one per URL
//! (`POST /orders/{mode}`):
//!
//! - `direct`: the job is handed over at once. The worker often looks before the request's
//!   COMMIT and finds no row (the bug).
//! - `on_commit`: the job is handed over by an `on_commit` hook, after the COMMIT: the worker
//!   always finds the row (the fix). The hook lives in the process's memory: if the process dies
//!   between the COMMIT and the hand-over, the job is gone.
//! - `outbox`: the job is a row of the outbox table, written in the request's transaction
//!   (`outbox::enqueue`, feature `outbox`), and a relay in the app delivers it after the COMMIT,
//!   at least once, with a `delivery_id` to drop duplicates by (the durable fix).
//!
//! **Without flags** (`cargo run --example seed_race`), everything runs in one process: the
//! worker is a task reading a channel (and, for the outbox, the relay's in-process handler).
//! Nothing to set up. The outbox mode needs the `outbox` feature, which is on by default. It prints, per
//! mode: `orders` placed (requests answered 200), `found` and `missing` (the worker's lookups
//! that found the order, or found no row), and for the outbox `delivered` (deliveries, counting
//! repeats) and `duplicates` (repeated deliveries of one job, dropped by `delivery_id`).
//!
//! **With `--redis <url>`** (`cargo run --example seed_race --features outbox-redis -- --redis
//! redis://127.0.0.1:6379`), this program is a driver starting two more processes of itself: the
//! app (`--app`) and a worker (`--worker`), which consumes jobs from Redis as a Celery worker
//! would. The app pushes `direct` and `on_commit` jobs onto a Redis list (`RPUSH`; the worker
//! `BLPOP`s), and its outbox relay adds `outbox` jobs to a Redis stream (`RedisStream`, `XADD`;
//! the worker reads it with `XREADGROUP`, acknowledges each entry with `XACK` and drops repeats
//! by `delivery_id`). The worker looks each order up in the SQLite file, from its own process.
//! The driver sends the requests over HTTP and runs two rounds, the three modes interleaved:
//!
//! 1. the app stays up;
//! 2. the driver kills the app with SIGKILL while requests are in flight, starts it again (its
//!    relay then delivers what the killed one left), and waits for the worker to catch up.
//!
//! For each round and mode it prints: `committed` (orders in the database), `received` (orders
//! whose job reached the worker), `no row` (jobs whose lookup found no row: too early, or about
//! an order that never committed), `lost` (committed orders whose job never reached the worker),
//! `duplicates` (repeated deliveries of a job), and `unprocessed` (committed orders the worker
//! never found in the database: lost jobs plus jobs that looked too early).
//!
//! What a kill shows: `direct` jobs look too early whether or not the app dies; an `on_commit`
//! job is lost only when the kill falls between a COMMIT and the job reaching Redis, a window of
//! well under a millisecond with a local Redis, so most kills lose none (tests/outbox_crash.rs
//! kills right after COMMITs and shows the loss); the outbox loses none, and the jobs the killed
//! relay had added to the stream but not yet recorded come again, as duplicates the worker drops.
//!
//! The driver knows the worker caught up without waiting blindly: it sends a marker job through
//! the app's queue (after every job before it) and one onto the stream once the outbox has no
//! pending job, and polls the worker's counters (`GET /stats`) until both markers arrived, for at
//! most a minute.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Sqlite, SqlitePool};
use sqlx_atomic::{AtomicRequestsLayer, Database, Databases, on_commit, sqlite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The name of the outbox job about an order.
#[cfg(feature = "outbox")]
const JOB: &str = "order_placed";

/// How long the driver waits for the worker to catch up, at most.
const CATCH_UP: Duration = Duration::from_secs(60);

/// How the handler hands its job to the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    OnCommit,
    Outbox,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Direct, Mode::OnCommit, Mode::Outbox];

    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::OnCommit => "on_commit",
            Mode::Outbox => "outbox",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the app puts on its job queue: a job about an order, or a marker that tells the worker
/// that every job queued before it was sent.
#[derive(Debug)]
enum Msg {
    Order(Mode, i64),
    #[cfg_attr(not(feature = "outbox-redis"), allow(dead_code))]
    Marker(u64),
}

#[derive(Clone)]
struct AppState {
    jobs: mpsc::UnboundedSender<Msg>,
}

type Reply = Result<String, (StatusCode, String)>;

fn failed(e: impl std::fmt::Display) -> (StatusCode, String) {
    // An error response rolls the request's transaction back.
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The view: insert an order, hand a job about it to the worker, then finish rendering.
async fn place_order(State(app): State<AppState>, Path(mode): Path<String>) -> Reply {
    let Some(mode) = Mode::parse(&mode) else {
        return Err((StatusCode::NOT_FOUND, format!("no mode `{mode}`")));
    };
    let id: i64 =
        sqlx::query_scalar("INSERT INTO orders (item, mode) VALUES ('book', ?) RETURNING id")
            .bind(mode.name())
            .fetch_one(sqlite("default"))
            .await
            .map_err(failed)?;
    match mode {
        // BUG: the worker may look the order up before this request's transaction commits.
        Mode::Direct => {
            let _ = app.jobs.send(Msg::Order(mode, id));
        }
        // FIX: the job is handed over after the COMMIT succeeds, and never if it rolls back.
        Mode::OnCommit => {
            let jobs = app.jobs.clone();
            on_commit(move || {
                let _ = jobs.send(Msg::Order(mode, id));
            })
            .await
            .map_err(failed)?;
        }
        // DURABLE FIX: the job is a row written in this transaction; the relay delivers it.
        Mode::Outbox => {
            #[cfg(feature = "outbox")]
            sqlx_atomic::outbox::enqueue(JOB, &serde_json::json!({ "order": id }))
                .await
                .map_err(failed)?;
            #[cfg(not(feature = "outbox"))]
            return Err((StatusCode::NOT_FOUND, "built without `outbox`".into()));
        }
    }
    // The rest of the view (rendering, other calls) takes a moment before the COMMIT.
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(format!("order {id}"))
}

/// Installs the `"default"` alias on the SQLite file `db`, one request one transaction.
fn install(db: &FsPath) -> Result<(), sqlx_atomic::Error> {
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_lazy_with(sqlite_options(db));
    Databases::new()
        .add(
            "default",
            Database::from_pool(pool)
                .begin_statement("BEGIN IMMEDIATE")
                .atomic_requests(true),
        )
        .install()
}

fn sqlite_options(db: &FsPath) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30))
}

/// Creates the orders table (and the outbox table, when built with `outbox`).
async fn create_tables() -> Result<(), BoxError> {
    sqlx::query(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL, mode TEXT NOT NULL)",
    )
    .execute(sqlite("default"))
    .await?;
    #[cfg(feature = "outbox")]
    sqlx_atomic::outbox::create_table("default").await?;
    Ok(())
}

/// Whether the order `id` is in the database, as a worker outside any transaction sees it.
async fn order_exists(pool: &SqlitePool, id: i64) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM orders WHERE id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// What the worker saw of one mode's jobs.
#[derive(Debug, Default, Clone)]
struct ModeTally {
    /// Deliveries per order (more than one: a duplicate).
    deliveries: BTreeMap<i64, u32>,
    /// Orders the lookup found.
    found: BTreeSet<i64>,
    /// Orders the lookup did not find.
    missing: BTreeSet<i64>,
}

impl ModeTally {
    fn looked_up(&self) -> usize {
        self.found.len() + self.missing.len()
    }

    fn delivered(&self) -> u32 {
        self.deliveries.values().sum()
    }

    fn duplicates(&self) -> u32 {
        self.deliveries.values().map(|n| n - 1).sum()
    }
}

/// What the worker saw, per mode, and the last markers it received.
#[derive(Debug, Default, Clone)]
struct Tallies {
    modes: [ModeTally; 3],
    /// The delivery ids of the outbox jobs applied, to drop repeats by.
    seen: HashSet<String>,
    /// The last markers the worker received from the list and the stream (over Redis only).
    #[cfg_attr(not(feature = "outbox-redis"), allow(dead_code))]
    list_marker: u64,
    #[cfg_attr(not(feature = "outbox-redis"), allow(dead_code))]
    stream_marker: u64,
}

impl Tallies {
    /// Records a delivery of the job about `order`; true for the first delivery of the job
    /// (identified by `delivery_id` when it has one, else by its order), which is then looked up.
    fn delivery(&mut self, mode: Mode, order: i64, delivery_id: Option<&str>) -> bool {
        let count = self.modes[mode.index()]
            .deliveries
            .entry(order)
            .or_default();
        *count += 1;
        match delivery_id {
            Some(id) => self.seen.insert(id.to_owned()),
            None => *count == 1,
        }
    }

    fn lookup(&mut self, mode: Mode, order: i64, found: bool) {
        let t = &mut self.modes[mode.index()];
        if found {
            t.found.insert(order);
        } else {
            t.missing.insert(order);
        }
    }
}

/// Counts the lookups of the worker, and wakes whoever waits for them.
type Tally = Arc<watch::Sender<Tallies>>;

/// Receives one delivery, looks the order up if it is the job's first, and records the outcome.
async fn apply(
    tally: &Tally,
    pool: &SqlitePool,
    mode: Mode,
    order: i64,
    delivery_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    let mut first = false;
    tally.send_modify(|t| first = t.delivery(mode, order, delivery_id));
    if first {
        let found = order_exists(pool, order).await?;
        tally.send_modify(|t| t.lookup(mode, order, found));
    }
    Ok(())
}

/// Sends one request; its status, or `None` if it got no answer (the app is gone).
async fn http(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_owned()))
}

/// The modes this build runs.
fn modes() -> Vec<Mode> {
    Mode::ALL
        .into_iter()
        .filter(|m| cfg!(feature = "outbox") || *m != Mode::Outbox)
        .collect()
}

fn router(jobs: mpsc::UnboundedSender<Msg>) -> Router {
    Router::new()
        .route("/orders/{mode}", post(place_order))
        .layer(AtomicRequestsLayer::new())
        .with_state(AppState { jobs })
}

/// The whole demo in one process: the worker reads the job channel (and the outbox relay's
/// handler), no broker.
async fn in_process() -> Result<(), BoxError> {
    let dir = std::env::temp_dir().join(format!("sqlx-atomic-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    install(&dir.join("app.db"))?;
    create_tables().await?;
    let pool = sqlx_atomic::pool::<Sqlite>("default")?;
    let tally: Tally = Arc::new(watch::Sender::new(Tallies::default()));

    let (tx, mut rx) = mpsc::unbounded_channel();
    let (t, p) = (tally.clone(), pool.clone());
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if let Msg::Order(mode, id) = msg {
                apply(&t, &p, mode, id, None).await.expect("lookup");
            }
        }
    });
    #[cfg(feature = "outbox")]
    let relay = {
        use sqlx_atomic::outbox::{Handlers, Job, Relay};
        let (t, p) = (tally.clone(), pool.clone());
        let handlers = Handlers::new().on(JOB, move |job: Job| {
            let (t, p) = (t.clone(), p.clone());
            async move {
                let payload: serde_json::Value = job.payload()?;
                let order = payload["order"].as_i64().ok_or("no order in the payload")?;
                apply(&t, &p, Mode::Outbox, order, Some(&job.delivery_id)).await?;
                Ok::<_, BoxError>(())
            }
        });
        Relay::new("default", handlers).spawn()
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = router(tx);
    tokio::spawn(async move { axum::serve(listener, app).await });

    const REQUESTS: usize = 300;
    println!("{REQUESTS} requests per mode to http://{addr}, 20 at a time, each in a transaction:");
    println!(
        "  {:>9}  {:>6}  {:>6}  {:>7}  {:>9}  {:>10}",
        "mode", "orders", "found", "missing", "delivered", "duplicates"
    );
    for mode in modes() {
        let mut ok = 0;
        for _ in 0..REQUESTS / 20 {
            let path = format!("/orders/{}", mode.name());
            let batch: Vec<_> = (0..20).map(|_| http(addr, "POST", &path)).collect();
            for answer in futures::future::join_all(batch).await {
                ok += usize::from(matches!(answer, Some((200, _))));
            }
        }
        // Every answered order's job was handed over (the outbox's: committed); wait for the
        // worker to have looked each one up.
        let mut seen = tally.subscribe();
        tokio::time::timeout(
            CATCH_UP,
            seen.wait_for(|t| t.modes[mode.index()].looked_up() >= ok),
        )
        .await
        .map_err(|_| format!("{}: the worker did not catch up", mode.name()))??;
        let t = tally.borrow().modes[mode.index()].clone();
        let (delivered, duplicates) = if mode == Mode::Outbox {
            (t.delivered().to_string(), t.duplicates().to_string())
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "  {:>9}  {ok:>6}  {:>6}  {:>7}  {delivered:>9}  {duplicates:>10}",
            mode.name(),
            t.found.len(),
            t.missing.len()
        );
    }
    if !cfg!(feature = "outbox") {
        println!("  (the durable mode needs the `outbox` feature, on by default)");
    }
    #[cfg(feature = "outbox")]
    relay.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let Some(url) = value("--redis") else {
        if !args.is_empty() {
            return Err(
                format!("unknown arguments {args:?}; usage: seed_race [--redis <url>]").into(),
            );
        }
        return in_process().await;
    };
    // The driver starts the app and the worker as processes of this program, with their role.
    let role = |flag: &str| args.iter().any(|a| a == flag);
    let db = value("--db").map(std::path::PathBuf::from);
    let keys = value("--keys");
    #[cfg(feature = "outbox-redis")]
    match (role("--app"), role("--worker"), db, keys) {
        (true, _, Some(db), Some(keys)) => over_redis::app(&url, &db, &keys).await,
        (_, true, Some(db), Some(keys)) => over_redis::worker(&url, &db, &keys).await,
        _ => over_redis::drive(&url).await,
    }
    #[cfg(not(feature = "outbox-redis"))]
    {
        let _ = (url, role, db, keys);
        Err("--redis needs the Redis adapter: \
             cargo run --example seed_race --features outbox-redis -- --redis <url>"
            .into())
    }
}

/// The app, the worker and the driver of the run over Redis, each its own process.
#[cfg(feature = "outbox-redis")]
mod over_redis {
    use super::*;
    use futures::StreamExt;
    use sqlx_atomic::outbox::Relay;
    use sqlx_atomic::outbox::brokers::{RedisStream, redis};
    use tokio::io::AsyncBufReadExt;
    use tokio::process::{Child, Command};

    /// The consumer group of the worker on the stream.
    const GROUP: &str = "workers";

    /// The Redis keys of one run: the list of `direct`/`on_commit` jobs and the outbox's stream.
    struct Keys {
        list: String,
        stream: String,
    }

    impl Keys {
        fn of(prefix: &str) -> Keys {
            Keys {
                list: format!("{prefix}:jobs"),
                stream: format!("{prefix}:outbox"),
            }
        }
    }

    /// A connection for blocking commands: no response timeout (the client's default, 500 ms,
    /// would cut a blocked `BLPOP` short), one per blocked consumer.
    async fn blocking_connection(
        client: &redis::Client,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Announces the listening address on stdout, for the driver.
    fn announce(addr: SocketAddr) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    }

    /// The web process: the routes, a publisher forwarding its job queue to the Redis list in
    /// order, and a relay adding the outbox's jobs to the stream.
    pub async fn app(url: &str, db: &FsPath, prefix: &str) -> Result<(), BoxError> {
        let keys = Keys::of(prefix);
        install(db)?;
        let mut con = redis::Client::open(url)?
            .get_multiplexed_async_connection()
            .await?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let text = match msg {
                    Msg::Order(mode, id) => format!("{} {id}", mode.name()),
                    Msg::Marker(n) => format!("marker {n}"),
                };
                let pushed: redis::RedisResult<i64> = redis::cmd("RPUSH")
                    .arg(&keys.list)
                    .arg(&text)
                    .query_async(&mut con)
                    .await;
                if let Err(e) = pushed {
                    eprintln!("app: the job `{text}` was not pushed: {e}");
                }
            }
        });
        let _relay = Relay::new("default", RedisStream::new(url, Keys::of(prefix).stream)?)
            // The only relay: a short claim lets the restarted app take over a killed one's jobs.
            .lease(Duration::from_secs(1))
            .poll_interval(Duration::from_millis(200))
            .spawn();
        let marker_jobs = tx.clone();
        let app = router(tx).route(
            "/marker/{n}",
            post(move |Path(n): Path<u64>| async move {
                let _ = marker_jobs.send(Msg::Marker(n));
                "queued"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        announce(listener.local_addr()?);
        axum::serve(listener, app).await?;
        Ok(())
    }

    /// The worker process: consumes the list and the stream, looks each order up in the SQLite
    /// file, and shows its counters at `GET /stats`.
    pub async fn worker(url: &str, db: &FsPath, prefix: &str) -> Result<(), BoxError> {
        let keys = Keys::of(prefix);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(sqlite_options(db).create_if_missing(false))
            .await?;
        let tally: Tally = Arc::new(watch::Sender::new(Tallies::default()));
        let client = redis::Client::open(url)?;

        let mut con = blocking_connection(&client).await?;
        let (t, p, list) = (tally.clone(), pool.clone(), keys.list.clone());
        let lists = tokio::spawn(async move {
            loop {
                let (_, text): (String, String) = redis::cmd("BLPOP")
                    .arg(&list)
                    .arg(0)
                    .query_async(&mut con)
                    .await?;
                match text.split_once(' ') {
                    Some(("marker", n)) => {
                        let n = n.parse()?;
                        t.send_modify(|t| t.list_marker = n);
                    }
                    Some((mode, id)) => {
                        let mode = Mode::parse(mode).ok_or("a job of no known mode")?;
                        apply(&t, &p, mode, id.parse()?, None).await?;
                    }
                    None => return Err::<(), BoxError>(format!("a malformed job `{text}`").into()),
                }
            }
        });

        let mut con = blocking_connection(&client).await?;
        let (t, p, stream) = (tally.clone(), pool.clone(), keys.stream.clone());
        let streams = tokio::spawn(async move {
            // This consumer's unacknowledged entries first, then new ones.
            let mut from = "0";
            loop {
                let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg("worker-1")
                    .arg("COUNT")
                    .arg(100)
                    .arg("BLOCK")
                    .arg(0)
                    .arg("STREAMS")
                    .arg(&stream)
                    .arg(from)
                    .query_async(&mut con)
                    .await?;
                let entries = reply.map(|r| r.keys).unwrap_or_default();
                let entries: Vec<_> = entries.into_iter().flat_map(|k| k.ids).collect();
                if entries.is_empty() {
                    from = ">";
                }
                for e in entries {
                    let name: String = e.get("name").ok_or("an entry without a name")?;
                    let payload: String = e.get("payload").ok_or("an entry without payload")?;
                    if name == "marker" {
                        let n = payload.parse()?;
                        t.send_modify(|t| t.stream_marker = n);
                    } else {
                        let id: String = e.get("delivery_id").ok_or("no delivery_id")?;
                        let payload: serde_json::Value = serde_json::from_str(&payload)?;
                        let order = payload["order"].as_i64().ok_or("no order")?;
                        apply(&t, &p, Mode::Outbox, order, Some(&id)).await?;
                    }
                    // Acknowledged once applied: an entry of a worker that dies before is read
                    // again from the pending list.
                    let _: i64 = redis::cmd("XACK")
                        .arg(&stream)
                        .arg(GROUP)
                        .arg(&e.id)
                        .query_async(&mut con)
                        .await?;
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), BoxError>(())
        });

        let t = tally.clone();
        let app = Router::new().route(
            "/stats",
            axum::routing::get(move || async move { to_json(&t.borrow()).to_string() }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        announce(listener.local_addr()?);
        tokio::select! {
            r = axum::serve(listener, app) => r?,
            r = lists => r??,
            r = streams => r??,
        }
        Ok(())
    }

    fn to_json(t: &Tallies) -> serde_json::Value {
        let mut modes = serde_json::Map::new();
        for mode in Mode::ALL {
            let m = &t.modes[mode.index()];
            modes.insert(
                mode.name().into(),
                serde_json::json!({
                    "deliveries": m.deliveries.iter().collect::<Vec<_>>(),
                    "found": m.found,
                    "missing": m.missing,
                }),
            );
        }
        serde_json::json!({
            "modes": modes,
            "list_marker": t.list_marker,
            "stream_marker": t.stream_marker,
        })
    }

    fn from_json(v: &serde_json::Value) -> Option<Tallies> {
        let ids = |v: &serde_json::Value| -> Option<BTreeSet<i64>> {
            v.as_array()?
                .iter()
                .map(serde_json::Value::as_i64)
                .collect()
        };
        let mut t = Tallies {
            list_marker: v["list_marker"].as_u64()?,
            stream_marker: v["stream_marker"].as_u64()?,
            ..Tallies::default()
        };
        for mode in Mode::ALL {
            let m = &v["modes"][mode.name()];
            let tally = &mut t.modes[mode.index()];
            for pair in m["deliveries"].as_array()? {
                let n = u32::try_from(pair[1].as_u64()?).ok()?;
                tally.deliveries.insert(pair[0].as_i64()?, n);
            }
            tally.found = ids(&m["found"])?;
            tally.missing = ids(&m["missing"])?;
        }
        Some(t)
    }

    /// A process of this program in `role`, and the address it announced.
    async fn start(
        role: &str,
        url: &str,
        db: &FsPath,
        prefix: &str,
    ) -> Result<(Child, SocketAddr), BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .args([role, "--redis", url, "--keys", prefix, "--db"])
            .arg(db)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(CATCH_UP, lines.next_line())
            .await
            .map_err(|_| format!("{role} did not start"))??
            .ok_or_else(|| format!("{role} stopped before it listened"))?;
        let addr = line
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("{role} said `{line}`"))?
            .parse()?;
        Ok((child, addr))
    }

    /// Polls `ready` every 20 ms until it gives a value, for at most [`CATCH_UP`].
    async fn poll<T, F, Fut>(what: &str, mut ready: F) -> Result<T, BoxError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, BoxError>>,
    {
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        let mut every = tokio::time::interval(Duration::from_millis(20));
        loop {
            every.tick().await;
            if let Some(v) = ready().await? {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("{what} within {CATCH_UP:?}").into());
            }
        }
    }

    /// Waits until the worker has handled every job sent before now: a marker through the app's
    /// queue, then, once the outbox has no pending job, a marker on the stream.
    async fn catch_up(
        app: SocketAddr,
        worker: SocketAddr,
        con: &mut redis::aio::MultiplexedConnection,
        keys: &Keys,
        round: u64,
    ) -> Result<Tallies, BoxError> {
        match http(app, "POST", &format!("/marker/{round}")).await {
            Some((200, _)) => {}
            other => return Err(format!("the app refused the marker: {other:?}").into()),
        }
        poll("the outbox has pending jobs", || async {
            let pending: i64 =
                sqlx::query_scalar("SELECT count(*) FROM sqlx_atomic_outbox WHERE state = 0")
                    .fetch_one(sqlite("default"))
                    .await?;
            Ok((pending == 0).then_some(()))
        })
        .await?;
        let _: String = redis::cmd("XADD")
            .arg(&keys.stream)
            .arg("*")
            .arg("name")
            .arg("marker")
            .arg("payload")
            .arg(round)
            .query_async(con)
            .await?;
        poll("the worker did not catch up", || async {
            let Some((200, body)) = http(worker, "GET", "/stats").await else {
                return Err("the worker does not answer".into());
            };
            let t = from_json(&serde_json::from_str(&body)?).ok_or("unreadable stats")?;
            Ok((t.list_marker >= round && t.stream_marker >= round).then_some(t))
        })
        .await
    }

    /// The orders committed after `after`, per mode.
    async fn committed(after: i64) -> Result<[BTreeSet<i64>; 3], BoxError> {
        let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, mode FROM orders WHERE id > ?")
            .bind(after)
            .fetch_all(sqlite("default"))
            .await?;
        let mut by_mode: [BTreeSet<i64>; 3] = Default::default();
        for (id, mode) in rows {
            by_mode[Mode::parse(&mode).ok_or("a row of no known mode")?.index()].insert(id);
        }
        Ok(by_mode)
    }

    async fn last_order() -> Result<i64, BoxError> {
        let last: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM orders")
            .fetch_one(sqlite("default"))
            .await?;
        Ok(last.unwrap_or(0))
    }

    /// Prints one round's numbers: the orders after `after` and what the worker saw of them.
    fn report(after: i64, committed: &[BTreeSet<i64>; 3], t: &Tallies) {
        println!(
            "  {:>9}  {:>9}  {:>8}  {:>6}  {:>4}  {:>10}  {:>11}",
            "mode", "committed", "received", "no row", "lost", "duplicates", "unprocessed"
        );
        for mode in Mode::ALL {
            let m = &t.modes[mode.index()];
            let c = &committed[mode.index()];
            let ours = |id: &&i64| **id > after;
            let received: BTreeSet<i64> = m.deliveries.keys().filter(ours).copied().collect();
            let duplicates: u32 = m.deliveries.range(after + 1..).map(|(_, n)| n - 1).sum();
            let no_row = m
                .missing
                .iter()
                .filter(ours)
                .filter(|id| !m.found.contains(id))
                .count();
            let lost = c.difference(&received).count();
            let unprocessed = c.difference(&m.found).count();
            println!(
                "  {:>9}  {:>9}  {:>8}  {no_row:>6}  {lost:>4}  {duplicates:>10}  {unprocessed:>11}",
                mode.name(),
                c.len(),
                received.len()
            );
        }
    }

    /// Sends `per_mode` requests per mode, the modes interleaved, 20 at a time; with `kill`,
    /// kills the app with SIGKILL once that many requests were answered. Returns how many were
    /// answered 200.
    async fn send(
        app: SocketAddr,
        per_mode: usize,
        mut kill: Option<(usize, &mut Child)>,
    ) -> Result<usize, BoxError> {
        let paths = (0..per_mode).flat_map(|_| Mode::ALL.map(|m| format!("/orders/{}", m.name())));
        let mut answers = futures::stream::iter(paths)
            .map(|path| async move { http(app, "POST", &path).await })
            .buffer_unordered(20);
        let mut ok = 0;
        while let Some(answer) = answers.next().await {
            ok += usize::from(matches!(answer, Some((200, _))));
            if let Some((at, child)) = kill.as_mut()
                && ok == *at
            {
                // SIGKILL: no destructor, no flush, no ROLLBACK, no pending hook runs.
                child.kill().await?;
                kill = None;
            }
        }
        Ok(ok)
    }

    /// Runs both rounds over Redis and prints their numbers.
    pub async fn drive(url: &str) -> Result<(), BoxError> {
        let dir = std::env::temp_dir().join(format!("sqlx-atomic-seed-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let db = dir.join("app.db");
        install(&db)?;
        create_tables().await?;
        let prefix = format!("seed_race:{}", std::process::id());
        let keys = Keys::of(&prefix);
        let mut con = redis::Client::open(url)?
            .get_multiplexed_async_connection()
            .await?;
        // The group exists before any job: the worker reads every entry of the stream.
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&keys.stream)
            .arg(GROUP)
            .arg("$")
            .arg("MKSTREAM")
            .query_async(&mut con)
            .await?;

        let (mut worker, worker_addr) = start("--worker", url, &db, &prefix).await?;
        let (mut app, mut app_addr) = start("--app", url, &db, &prefix).await?;
        const PER_MODE: usize = 150;
        println!(
            "app at http://{app_addr}, worker process consuming {}, database {}",
            shown(url),
            db.display()
        );

        println!(
            "\nround 1: {PER_MODE} requests per mode, interleaved, 20 at a time; the app stays up"
        );
        let after = last_order().await?;
        send(app_addr, PER_MODE, None).await?;
        let t = catch_up(app_addr, worker_addr, &mut con, &keys, 1).await?;
        report(after, &committed(after).await?, &t);

        const KILL_AT: usize = 200;
        println!(
            "\nround 2: the same, but the app is killed (SIGKILL) after {KILL_AT} answers, \
             then started again"
        );
        let after = last_order().await?;
        let ok = send(app_addr, PER_MODE, Some((KILL_AT, &mut app))).await?;
        (app, app_addr) = start("--app", url, &db, &prefix).await?;
        let t = catch_up(app_addr, worker_addr, &mut con, &keys, 2).await?;
        println!("  ({ok} requests answered 200 before the kill; the rest got no answer)");
        report(after, &committed(after).await?, &t);

        app.kill().await?;
        worker.kill().await?;
        let _: i64 = redis::cmd("DEL")
            .arg(&keys.list)
            .arg(&keys.stream)
            .query_async(&mut con)
            .await?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// The URL without its password.
    fn shown(url: &str) -> String {
        match url
            .split_once("://")
            .and_then(|(s, r)| Some((s, r.rsplit_once('@')?.1)))
        {
            Some((scheme, host)) => format!("{scheme}://{host}"),
            None => url.to_owned(),
        }
    }
}
