//! Per-request transactions: an axum handler doing one INSERT (PostgreSQL) under
//! `AtomicRequestsLayer`, beside the same handler with a hand-written sqlx transaction and beside
//! `axum-sqlx-tx`; and a handler that never queries, under the layer, with no layer at all and
//! under the floor of any such layer (a task-local scope and `catch_unwind`, nothing else).
//!
//! Each is measured in-process (`tower::ServiceExt::oneshot` on the `Router`, one request at a
//! time) and over loopback HTTP/1.1 with keep-alive (one connection, one request at a time; and
//! 10 connections at once). Criterion reports the time per request and requests/s.
//!
//! `cargo bench --all-features --bench requests` (BENCHMARKS.md has the numbers).
mod common;

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use sqlx::postgres::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tower::ServiceExt;

use sqlx_atomic::{AtomicRequests, AtomicRequestsLayer, Databases};
use tower::Layer;

const PG: &str = "pg";
const INSERT: &str = "INSERT INTO bench_requests (v) VALUES ($1)";
const POOL: u32 = 10;
const CONNECTIONS: usize = 10;

type AxTx = axum_sqlx_tx::Tx<sqlx::Postgres>;

/// One INSERT through sqlx-atomic's ambient handle: the layer's transaction.
async fn ours_insert() -> StatusCode {
    match sqlx::query(INSERT)
        .bind(1i64)
        .execute(sqlx_atomic::postgres(PG))
        .await
    {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The same, with the transaction written by hand.
async fn hand_insert(State(pool): State<PgPool>) -> StatusCode {
    let r = async {
        let mut tx = pool.begin().await?;
        sqlx::query(INSERT).bind(1i64).execute(&mut *tx).await?;
        tx.commit().await
    }
    .await;
    match r {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The same with axum-sqlx-tx's extractor (its layer commits on a 2xx/3xx response).
async fn axtx_insert(mut tx: AxTx) -> StatusCode {
    match sqlx::query(INSERT).bind(1i64).execute(&mut tx).await {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn idle() -> StatusCode {
    StatusCode::OK
}

/// An app under test: a `Router` (with its layers applied by `Router::layer`, which axum boxes
/// per route), or a whole `Router` wrapped in sqlx-atomic's service or in the floor service (no
/// boxing by axum).
#[derive(Clone)]
enum App {
    Router(Router),
    Wrapped(AtomicRequests<Router>),
    Floor(Floor<Router>),
    /// A bare `Router` served as the two above are (`into_make_service`), not as `Router`s are.
    Served(Router),
}

impl App {
    /// Serves the app on `listener` until the process ends.
    fn serve(self, listener: tokio::net::TcpListener) {
        tokio::spawn(async move {
            match self {
                App::Router(r) => axum::serve(listener, r).await,
                App::Wrapped(w) => serve_service(listener, w).await,
                App::Floor(f) => serve_service(listener, f).await,
                App::Served(r) => serve_service(listener, r).await,
            }
            .expect("serve")
        });
    }
}

/// Serves a service wrapped around a whole `Router`, as the README shows for the layer.
async fn serve_service<S>(listener: tokio::net::TcpListener, service: S) -> std::io::Result<()>
where
    S: tower::Service<
            Request<Body>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    axum::serve(
        listener,
        axum::ServiceExt::<Request<Body>>::into_make_service(service),
    )
    .await
}

tokio::task_local! {
    /// The task-local of the floor service: a value with drop glue, as the layer's frame has.
    static FLOOR: Option<std::sync::Arc<()>>;
}

/// The floor of a per-request transaction layer around the router, for a handler that never
/// queries: the two things such a layer cannot skip, and nothing else. It runs the handler in a
/// task-local scope (where the handler's queries would find the request) and catches its panic
/// (to roll the request back and answer 500).
#[derive(Clone)]
struct Floor<S>(S);

impl<S> tower::Service<Request<Body>> for Floor<S>
where
    S: tower::Service<Request<Body>, Response = axum::response::Response>,
    S::Future: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = futures::future::Map<
        tokio::task::futures::TaskLocalFuture<
            Option<std::sync::Arc<()>>,
            futures::future::CatchUnwind<std::panic::AssertUnwindSafe<S::Future>>,
        >,
        fn(
            Result<Result<axum::response::Response, S::Error>, Box<dyn std::any::Any + Send>>,
        ) -> Result<axum::response::Response, S::Error>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        use futures::FutureExt;
        FLOOR
            .scope(
                None,
                std::panic::AssertUnwindSafe(self.0.call(req)).catch_unwind(),
            )
            .map(floor_answer::<S::Error> as _)
    }
}

/// The floor service's answer: the handler's, or an empty 500 if it panicked.
fn floor_answer<E>(
    outcome: Result<Result<axum::response::Response, E>, Box<dyn std::any::Any + Send>>,
) -> Result<axum::response::Response, E> {
    match outcome {
        Ok(result) => result,
        Err(_) => Ok(axum::response::IntoResponse::into_response(
            StatusCode::INTERNAL_SERVER_ERROR,
        )),
    }
}

struct Env {
    rt: tokio::runtime::Runtime,
    /// (name, app, path), in the order of the tables.
    apps: Vec<(&'static str, App, &'static str)>,
    addrs: Vec<SocketAddr>,
}

static ENV: LazyLock<Env> = LazyLock::new(|| {
    // Server and client share the process: two workers, the machine's two cores.
    let rt = common::runtime(2);
    let (apps, addrs) = rt.block_on(async {
        let pool = common::pg_pool(POOL).await;
        common::pg_table(&pool, "bench_requests").await;
        Databases::new()
            .add(PG, common::database(pool.clone()).atomic_requests(true))
            .install()
            .expect("install");
        let (ax_state, ax_layer) = AxTx::setup(pool.clone());
        // Every app ends in `with_state`, as `axum::serve` does for each connection: a
        // `Router<()>` called directly (the in-process `oneshot`) would otherwise turn its
        // handlers into routes, and apply its layers to them, again on every request.
        let apps: Vec<(&'static str, App, &'static str)> = vec![
            (
                "sqlx_atomic_layer",
                App::Router(
                    Router::new()
                        .route("/insert", get(ours_insert))
                        .layer(AtomicRequestsLayer::new())
                        .with_state(()),
                ),
                "/insert",
            ),
            (
                "hand_written_tx",
                App::Router(
                    Router::new()
                        .route("/insert", get(hand_insert))
                        .with_state(pool.clone()),
                ),
                "/insert",
            ),
            (
                "axum_sqlx_tx",
                App::Router(
                    Router::new()
                        .route("/insert", get(axtx_insert))
                        .layer(ax_layer)
                        .with_state(ax_state),
                ),
                "/insert",
            ),
            (
                "idle_sqlx_atomic_layer",
                App::Router(
                    Router::new()
                        .route("/idle", get(idle))
                        .layer(AtomicRequestsLayer::new())
                        .with_state(()),
                ),
                "/idle",
            ),
            (
                "idle_no_layer",
                App::Router(Router::new().route("/idle", get(idle)).with_state(())),
                "/idle",
            ),
            // The same app on its own listener: its comparison with `idle_no_layer` is the
            // harness's calibration for two different servers.
            (
                "idle_no_layer_copy",
                App::Router(Router::new().route("/idle", get(idle)).with_state(())),
                "/idle",
            ),
            // The floor of any layer: one that returns the service it wraps. axum still wraps
            // the route in its own boxed service, as for every layer.
            (
                "idle_identity_layer",
                App::Router(
                    Router::new()
                        .route("/idle", get(idle))
                        .layer(tower::layer::layer_fn(|s| s))
                        .with_state(()),
                ),
                "/idle",
            ),
            // The layer around the whole router (`AtomicRequestsLayer::new().layer(router)`):
            // the form the README recommends, without axum's per-route boxing.
            (
                "sqlx_atomic_service",
                App::Wrapped(
                    AtomicRequestsLayer::new().layer(
                        Router::new()
                            .route("/insert", get(ours_insert))
                            .with_state(()),
                    ),
                ),
                "/insert",
            ),
            (
                "idle_sqlx_atomic_service",
                App::Wrapped(
                    AtomicRequestsLayer::new()
                        .layer(Router::new().route("/idle", get(idle)).with_state(())),
                ),
                "/idle",
            ),
            // The floor of such a service: a task-local scope and a caught panic, nothing else.
            (
                "idle_floor_service",
                App::Floor(Floor(
                    Router::new().route("/idle", get(idle)).with_state(()),
                )),
                "/idle",
            ),
            // No layer, served as the two above are: what that way of serving costs by itself.
            (
                "idle_no_layer_service",
                App::Served(Router::new().route("/idle", get(idle)).with_state(())),
                "/idle",
            ),
        ];
        let mut addrs = Vec::new();
        for (_, app, path) in &apps {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            addrs.push(listener.local_addr().expect("addr"));
            app.clone().serve(listener);
            // Every app answers before measuring.
            let mut c = Client::connect(*addrs.last().expect("addr")).await;
            assert_eq!(c.get(path).await, 200, "{path}");
        }
        (apps, addrs)
    });
    Env { rt, apps, addrs }
});

async fn oneshot(app: &App, path: &'static str) {
    let req = Request::get(path).body(Body::empty()).expect("request");
    let resp = match app {
        App::Router(r) | App::Served(r) => r.clone().oneshot(req).await,
        App::Wrapped(w) => w.clone().oneshot(req).await,
        App::Floor(f) => f.clone().oneshot(req).await,
    }
    .expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
}

/// A minimal HTTP/1.1 client on one keep-alive connection.
struct Client {
    r: BufReader<TcpStream>,
    line: String,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        Client {
            r: BufReader::new(s),
            line: String::new(),
        }
    }

    /// Sends `GET path` and reads the whole response; returns the status.
    async fn get(&mut self, path: &str) -> u16 {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.r
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .expect("write");
        self.line.clear();
        self.r.read_line(&mut self.line).await.expect("status line");
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status");
        let mut len = 0usize;
        loop {
            self.line.clear();
            self.r.read_line(&mut self.line).await.expect("header");
            let h = self.line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().expect("content-length");
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).await.expect("body");
        status
    }
}

/// `iters` requests spread over `conns` keep-alive connections, all at once; the elapsed time.
async fn http_run(addr: SocketAddr, path: &'static str, conns: usize, iters: u64) -> Duration {
    let mut clients = Vec::new();
    for _ in 0..conns {
        clients.push(Client::connect(addr).await);
    }
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let n = iters / conns as u64 + u64::from((i as u64) < iters % conns as u64);
            tokio::spawn(async move {
                for _ in 0..n {
                    assert_eq!(c.get(path).await, 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    start.elapsed()
}

fn in_process(c: &mut Criterion) {
    let env = &*ENV;
    let mut g = c.benchmark_group("requests_in_process");
    g.throughput(Throughput::Elements(1));
    for (name, app, path) in &env.apps {
        g.bench_function(*name, |b| {
            b.to_async(&env.rt).iter(|| oneshot(app, path));
        });
    }
    g.finish();
}

fn over_http(c: &mut Criterion) {
    let env = &*ENV;
    for conns in [1, CONNECTIONS] {
        let mut g = c.benchmark_group(format!("requests_http_{conns}conn"));
        g.throughput(Throughput::Elements(1));
        for ((name, _, path), addr) in env.apps.iter().zip(&env.addrs) {
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.to_async(&env.rt)
                    .iter_custom(|iters| http_run(*addr, path, conns, iters));
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = in_process, over_http
}

/// The label suffix of a self-comparison (an app against itself, or against its copy on another
/// listener), so that the calibration filter selects it.
fn calibration(a: &str, b: &str) -> &'static str {
    if b.starts_with(a) {
        " [calibration]"
    } else {
        ""
    }
}

/// Paired mode (`SQLX_ATOMIC_PAIRED=1`, `SQLX_ATOMIC_PAIRED_ROUNDS=<n>`, default 100): each
/// comparison measured A B B A in alternating batches (see `common::paired`), in-process and over
/// one loopback HTTP connection, so that the load of a shared machine falls on both sides alike.
fn paired() {
    let env = &*ENV;
    let rounds = common::env_number("SQLX_ATOMIC_PAIRED_ROUNDS", 100);
    let mut pairs = vec![
        ("sqlx_atomic_layer", "hand_written_tx", 10),
        ("sqlx_atomic_layer", "axum_sqlx_tx", 10),
        ("idle_sqlx_atomic_layer", "idle_no_layer", 200),
        ("idle_sqlx_atomic_layer", "idle_identity_layer", 200),
        ("sqlx_atomic_service", "hand_written_tx", 10),
        ("sqlx_atomic_service", "axum_sqlx_tx", 10),
        ("idle_sqlx_atomic_service", "idle_no_layer", 200),
        ("idle_floor_service", "idle_no_layer", 200),
        ("idle_sqlx_atomic_service", "idle_floor_service", 200),
        ("idle_sqlx_atomic_service", "idle_no_layer_service", 200),
    ];
    // Calibration (`SQLX_ATOMIC_PAIRED_ONLY=calibration`): each side against itself.
    if common::calibrating() {
        pairs = [
            ("sqlx_atomic_layer", 10),
            ("hand_written_tx", 10),
            ("axum_sqlx_tx", 10),
            ("idle_no_layer", 200),
        ]
        .into_iter()
        .map(|(a, batch)| (a, a, batch))
        .collect();
        pairs.push(("idle_no_layer", "idle_no_layer_copy", 200));
    }
    for (a, b, batch) in pairs {
        let (app_a, path_a, addr_a) = app(a);
        let (app_b, path_b, addr_b) = app(b);
        common::paired(
            &env.rt,
            &format!("in-process: {a} (A) vs {b} (B){}", calibration(a, b)),
            rounds,
            batch,
            || oneshot(app_a, path_a),
            || oneshot(app_b, path_b),
        );
        let (ca, cb) = env.rt.block_on(async {
            (
                tokio::sync::Mutex::new(Client::connect(addr_a).await),
                tokio::sync::Mutex::new(Client::connect(addr_b).await),
            )
        });
        let (ca, cb) = (&ca, &cb);
        common::paired(
            &env.rt,
            &format!(
                "http, 1 connection: {a} (A) vs {b} (B){}",
                calibration(a, b)
            ),
            rounds,
            batch,
            || async {
                let mut c = ca.lock().await;
                assert_eq!(c.get(path_a).await, 200);
            },
            || async {
                let mut c = cb.lock().await;
                assert_eq!(c.get(path_b).await, 200);
            },
        );
    }
    if !common::calibrating() {
        controlled(rounds);
    }
}

/// Comparisons with a control (see `common::with_control`): A against B, with C, a side that
/// does B's work, timed in the same rounds, so that A/B is read against what the harness finds
/// between two sides that do not differ. For the idle handler C is no layer's copy on its own
/// listener; for the requests that insert, C is B itself (in-process the same app, over HTTP
/// another connection to it). Labels end in "[control]" (`SQLX_ATOMIC_PAIRED_ONLY=control`).
fn controlled(rounds: usize) {
    let env = &*ENV;
    let triples = [
        (
            "idle_sqlx_atomic_service",
            "idle_no_layer",
            "idle_no_layer_copy",
            200,
        ),
        (
            "idle_sqlx_atomic_layer",
            "idle_no_layer",
            "idle_no_layer_copy",
            200,
        ),
        // The floor of a layer around the router, timed the same way: what any layer that runs
        // the handler in a task-local scope and catches its panic costs.
        (
            "idle_floor_service",
            "idle_no_layer",
            "idle_no_layer_copy",
            200,
        ),
        // What serving a service around the router costs by itself (the router with no layer,
        // served as they are), timed the same way: the part of the rows above no layer can avoid.
        (
            "idle_no_layer_service",
            "idle_no_layer",
            "idle_no_layer_copy",
            200,
        ),
        ("sqlx_atomic_service", "axum_sqlx_tx", "axum_sqlx_tx", 10),
        ("sqlx_atomic_layer", "axum_sqlx_tx", "axum_sqlx_tx", 10),
        (
            "sqlx_atomic_service",
            "hand_written_tx",
            "hand_written_tx",
            10,
        ),
    ];
    for (a, b, c, batch) in triples {
        let ((app_a, path_a, addr_a), (app_b, path_b, addr_b), (app_c, path_c, addr_c)) =
            (app(a), app(b), app(c));
        common::with_control(
            &env.rt,
            &format!("in-process: {a} (A) vs {b} (B), {c} (C) [control]"),
            rounds,
            batch,
            || oneshot(app_a, path_a),
            || oneshot(app_b, path_b),
            || oneshot(app_c, path_c),
        );
        let clients = env.rt.block_on(async {
            [
                tokio::sync::Mutex::new(Client::connect(addr_a).await),
                tokio::sync::Mutex::new(Client::connect(addr_b).await),
                tokio::sync::Mutex::new(Client::connect(addr_c).await),
            ]
        });
        let get = |i: usize, path: &'static str| {
            let client = &clients[i];
            async move {
                assert_eq!(client.lock().await.get(path).await, 200);
            }
        };
        common::with_control(
            &env.rt,
            &format!("http, 1 connection: {a} (A) vs {b} (B), {c} (C) [control]"),
            rounds,
            batch,
            || get(0, path_a),
            || get(1, path_b),
            || get(2, path_c),
        );
    }
}

/// The app named `name` in the tables: the app, the path it serves, and its listener's address.
fn app(name: &str) -> (&'static App, &'static str, SocketAddr) {
    let env = &*ENV;
    let i = env
        .apps
        .iter()
        .position(|(n, ..)| *n == name)
        .unwrap_or_else(|| panic!("unknown app {name:?}"));
    (&env.apps[i].1, env.apps[i].2, env.addrs[i])
}

/// Profiling mode, for `valgrind --tool=callgrind` or `perf`: `SQLX_ATOMIC_PROFILE=<app>` (a name
/// of the tables, e.g. `idle_sqlx_atomic_layer`) sends `SQLX_ATOMIC_PROFILE_ITERS` (default
/// 10,000) requests in-process to that app, one at a time.
/// `SQLX_ATOMIC_PROFILE=http:<app>` sends them over one loopback keep-alive connection instead
/// (the client, the server and the handler, all in this process).
fn profile(name: &str) {
    let env = &*ENV;
    let iters: u64 = common::env_number("SQLX_ATOMIC_PROFILE_ITERS", 10_000);
    let (http, name) = match name.strip_prefix("http:") {
        Some(n) => (true, n),
        None => (false, name),
    };
    let (app, path, addr) = app(name);
    env.rt.block_on(async {
        if http {
            let mut c = Client::connect(addr).await;
            for _ in 0..iters {
                assert_eq!(c.get(path).await, 200);
            }
        } else {
            for _ in 0..iters {
                oneshot(app, path).await;
            }
        }
    });
}

fn main() {
    common::main(paired, profile, benches);
}
