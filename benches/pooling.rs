//! PostgreSQL behind pgbouncer in transaction pooling mode (`.ci/pgbouncer start`), paired
//! (A B B A rounds, see `common::paired`):
//!
//! - `pgbouncer/one_insert`: an outermost block with one INSERT on an alias in
//!   transaction-pooling mode, beside the same transaction on plain sqlx through the same
//!   pgbouncer with `persistent(false)` (what sqlx needs there to be correct);
//! - `pgbouncer/request_one_insert`: a request whose handler does one INSERT under
//!   `AtomicRequestsLayer`, beside the same handler with that hand-written transaction;
//! - `pgbouncer/autocommit_select`: a statement with a parameter outside any block (the mode
//!   runs it in a transaction of its own), beside the same on plain sqlx;
//! - `pgbouncer_vs_direct/one_insert`: the block through pgbouncer beside the same block on the
//!   server directly (both in the mode), the pooler's own cost;
//! - `unnamed_vs_named/one_insert`: on the server directly, a block in the mode (unnamed
//!   statements) beside one without (sqlx's cached named statements), the cost of the mode
//!   where it is not needed.
//!
//! `cargo bench --all-features --bench pooling` (`SQLX_ATOMIC_PAIRED_ROUNDS`, default 100;
//! `SQLX_ATOMIC_TEST_PGBOUNCER_URL`, default postgres://postgres@127.0.0.1:6432/test).
mod common;

use std::str::FromStr;
use std::sync::LazyLock;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx_atomic::{Atomic, AtomicRequestsLayer, Databases, Error};
use tower::ServiceExt;

const INSERT: &str = "INSERT INTO bench_pooling (v) VALUES ($1)";
const POOL: u32 = 4;

struct Env {
    rt: tokio::runtime::Runtime,
    /// Plain sqlx through pgbouncer.
    bouncer: PgPool,
    ours_app: Router,
    hand_app: Router,
}

fn pgbouncer_url() -> String {
    std::env::var("SQLX_ATOMIC_TEST_PGBOUNCER_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:6432/test".into())
}

static ENV: LazyLock<Env> = LazyLock::new(|| {
    let rt = common::runtime(0);
    let (bouncer, ours_app, hand_app) = rt.block_on(async {
        let direct = common::pg_pool(POOL).await;
        common::pg_table(&direct, "bench_pooling").await;
        let options = PgConnectOptions::from_str(&pgbouncer_url())
            .expect("pgbouncer url")
            .extra_float_digits(None);
        let bouncer = PgPoolOptions::new()
            .max_connections(POOL)
            .connect_lazy_with(options.clone());
        sqlx::query("SELECT 1")
            .persistent(false)
            .execute(&bouncer)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "pgbouncer at {} does not answer ({e}); run .ci/pgbouncer start",
                    pgbouncer_url()
                )
            });
        // The library's side gets pools of its own of the same size and kind.
        let pooled = PgPoolOptions::new()
            .max_connections(POOL)
            .connect_lazy_with(options);
        Databases::new()
            .add(
                "pgb",
                common::database(pooled)
                    .transaction_pooling(true)
                    .atomic_requests(true),
            )
            .add(
                "direct_unnamed",
                common::database(common::pg_pool(POOL).await).transaction_pooling(true),
            )
            .add(
                "direct_named",
                common::database(common::pg_pool(POOL).await),
            )
            .install()
            .expect("install");
        let ours_app = Router::new()
            .route("/", get(ours_handler))
            .layer(AtomicRequestsLayer::new());
        let hand_app = Router::new()
            .route("/", get(hand_handler))
            .with_state(bouncer.clone());
        (bouncer, ours_app, hand_app)
    });
    // The pools hold sockets of this runtime: the measurements run on it too.
    Env {
        rt,
        bouncer,
        ours_app,
        hand_app,
    }
});

async fn ours_insert(alias: &'static str) -> Result<(), Error> {
    sqlx::query(INSERT)
        .bind(1i64)
        .execute(sqlx_atomic::postgres(alias))
        .await?;
    Ok(())
}

async fn ours_block(alias: &'static str) {
    Atomic::new()
        .using(alias)
        .run(ours_insert(alias))
        .await
        .expect("block");
}

async fn hand_block(pool: &PgPool) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(INSERT)
        .bind(1i64)
        .persistent(false)
        .execute(&mut *tx)
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
}

async fn ours_handler() -> StatusCode {
    match ours_insert("pgb").await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn hand_handler(State(pool): State<PgPool>) -> StatusCode {
    let r = async {
        let mut tx = pool.begin().await?;
        sqlx::query(INSERT)
            .bind(1i64)
            .persistent(false)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
    .await;
    match r {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn request(app: &Router) {
    let response = app
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).expect("request"))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
}

async fn ours_select() {
    let n: i64 = sqlx::query_scalar("SELECT $1::BIGINT")
        .bind(7i64)
        .fetch_one(sqlx_atomic::postgres("pgb"))
        .await
        .expect("select");
    assert_eq!(n, 7);
}

async fn hand_select(pool: &PgPool) {
    let mut tx = pool.begin().await.expect("begin");
    let n: i64 = sqlx::query_scalar("SELECT $1::BIGINT")
        .bind(7i64)
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .expect("select");
    tx.commit().await.expect("commit");
    assert_eq!(n, 7);
}

fn main() {
    let env = &*ENV;
    let rounds = common::env_number("SQLX_ATOMIC_PAIRED_ROUNDS", 100);
    common::paired(
        &env.rt,
        "pgbouncer/one_insert: sqlx_atomic in the mode (A) vs sqlx persistent(false) (B)",
        rounds,
        10,
        || ours_block("pgb"),
        || hand_block(&env.bouncer),
    );
    common::paired(
        &env.rt,
        "pgbouncer/request_one_insert: AtomicRequestsLayer in the mode (A) vs hand-written (B)",
        rounds,
        10,
        || request(&env.ours_app),
        || request(&env.hand_app),
    );
    common::paired(
        &env.rt,
        "pgbouncer/autocommit_select: sqlx_atomic in the mode (A) vs sqlx in its own transaction (B)",
        rounds,
        10,
        ours_select,
        || hand_select(&env.bouncer),
    );
    common::paired(
        &env.rt,
        "pgbouncer_vs_direct/one_insert: through pgbouncer (A) vs direct (B), both in the mode",
        rounds,
        10,
        || ours_block("pgb"),
        || ours_block("direct_unnamed"),
    );
    common::paired(
        &env.rt,
        "unnamed_vs_named/one_insert: direct, in the mode (A) vs without it (B)",
        rounds,
        10,
        || ours_block("direct_unnamed"),
        || ours_block("direct_named"),
    );
}
