//! The cost of sqlx-atomic's blocks and hooks against the same work written by hand with sqlx.
//!
//! - `one_insert/*`: one outermost block with one INSERT, beside `pool.begin()`, the INSERT and
//!   `commit()` on the same pool (SQLite in a temp file with WAL, and PostgreSQL).
//! - `nesting_*/*`: blocks nested 1, 2, 4 and 8 deep, every level running one INSERT (`query`)
//!   or none (`empty`), beside sqlx's own nested `begin()` (savepoints) on the transaction.
//! - `hooks/*`: 10,000 `on_commit` hooks registered and run in one transaction (SQLite), beside
//!   a plain `Vec<Box<dyn FnOnce() + Send>>` of 10,000 closures pushed and then run.
//!
//! `cargo bench --all-features --bench overhead` (BENCHMARKS.md has the numbers).
mod common;

use std::hint::black_box;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BenchmarkId, Criterion, criterion_group};
use futures::future::BoxFuture;
use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;
use sqlx::{Connection, Executor};
use sqlx_atomic::{Atomic, Databases, Error, on_commit};

const SQ: &str = "sqlite";
const PG: &str = "pg";
const SQ_INSERT: &str = "INSERT INTO bench_overhead (v) VALUES (?)";
const PG_INSERT: &str = "INSERT INTO bench_overhead (v) VALUES ($1)";
const HOOKS: u64 = 10_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bk {
    Sqlite,
    Postgres,
}

impl Bk {
    fn name(self) -> &'static str {
        match self {
            Bk::Sqlite => "sqlite",
            Bk::Postgres => "postgres",
        }
    }
    fn alias(self) -> &'static str {
        match self {
            Bk::Sqlite => SQ,
            Bk::Postgres => PG,
        }
    }
}

struct Env {
    rt: tokio::runtime::Runtime,
    sqlite: SqlitePool,
    pg: PgPool,
}

static ENV: LazyLock<Env> = LazyLock::new(|| {
    // One thread: the client side of every comparison runs on the same single core.
    let rt = common::runtime(0);
    let (sqlite, pg) = rt.block_on(async {
        let sqlite = common::sqlite_pool("overhead", 4);
        let pg = common::pg_pool(4).await;
        common::sqlite_table(&sqlite, "bench_overhead").await;
        common::pg_table(&pg, "bench_overhead").await;
        Databases::new()
            .add(SQ, common::database(sqlite.clone()))
            .add(PG, common::database(pg.clone()))
            .install()
            .expect("install");
        (sqlite, pg)
    });
    Env { rt, sqlite, pg }
});

/// One INSERT through the ambient handle of the alias (the block's transaction).
async fn ours_insert(b: Bk) -> Result<(), Error> {
    match b {
        Bk::Sqlite => {
            sqlx::query(SQ_INSERT)
                .bind(1i64)
                .execute(sqlx_atomic::sqlite(SQ))
                .await?;
        }
        Bk::Postgres => {
            sqlx::query(PG_INSERT)
                .bind(1i64)
                .execute(sqlx_atomic::postgres(PG))
                .await?;
        }
    }
    Ok(())
}

async fn ours_one(b: Bk) {
    Atomic::new()
        .using(b.alias())
        .run(async { ours_insert(b).await })
        .await
        .expect("block");
}

async fn sqlx_one(env: &Env, b: Bk) {
    match b {
        Bk::Sqlite => {
            let mut tx = env.sqlite.begin().await.expect("begin");
            sqlx::query(SQ_INSERT)
                .bind(1i64)
                .execute(&mut *tx)
                .await
                .expect("insert");
            tx.commit().await.expect("commit");
        }
        Bk::Postgres => {
            let mut tx = env.pg.begin().await.expect("begin");
            sqlx::query(PG_INSERT)
                .bind(1i64)
                .execute(&mut *tx)
                .await
                .expect("insert");
            tx.commit().await.expect("commit");
        }
    }
}

fn one_insert(c: &mut Criterion) {
    let env = &*ENV;
    let mut g = c.benchmark_group("one_insert");
    for b in [Bk::Sqlite, Bk::Postgres] {
        g.bench_function(BenchmarkId::new("sqlx_atomic", b.name()), |bench| {
            bench.to_async(&env.rt).iter(|| ours_one(b))
        });
        g.bench_function(BenchmarkId::new("sqlx_begin_commit", b.name()), |bench| {
            bench.to_async(&env.rt).iter(|| sqlx_one(env, b))
        });
    }
    g.finish();
}

/// `depth` blocks nested in one another, each running one INSERT first when `query`.
fn ours_nested(b: Bk, depth: usize, query: bool) -> BoxFuture<'static, Result<(), Error>> {
    Box::pin(Atomic::new().using(b.alias()).run(async move {
        if query {
            ours_insert(b).await?;
        }
        if depth > 1 {
            ours_nested(b, depth - 1, query).await?;
        }
        Ok(())
    }))
}

/// The same with sqlx's own nesting: `begin()` on a connection already in a transaction makes a
/// savepoint, `commit()` releases it.
fn sqlx_nested<'c, C>(conn: &'c mut C, depth: usize, query: bool) -> BoxFuture<'c, ()>
where
    C: Connection + Send,
    for<'e> &'e mut C: Executor<'e, Database = C::Database>,
    C::Database: SqlxInsert,
{
    Box::pin(async move {
        let mut tx = conn.begin().await.expect("begin");
        if query {
            <C::Database as SqlxInsert>::insert(&mut *tx).await;
        }
        if depth > 1 {
            sqlx_nested::<C>(&mut *tx, depth - 1, query).await;
        }
        tx.commit().await.expect("commit");
    })
}

/// The INSERT of each backend, on a plain sqlx connection.
trait SqlxInsert: sqlx::Database {
    fn insert(conn: &mut <Self as sqlx::Database>::Connection) -> BoxFuture<'_, ()>;
}

impl SqlxInsert for sqlx::Sqlite {
    fn insert(conn: &mut sqlx::SqliteConnection) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query(SQ_INSERT)
                .bind(1i64)
                .execute(conn)
                .await
                .expect("insert");
        })
    }
}

impl SqlxInsert for sqlx::Postgres {
    fn insert(conn: &mut sqlx::PgConnection) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query(PG_INSERT)
                .bind(1i64)
                .execute(conn)
                .await
                .expect("insert");
        })
    }
}

async fn sqlx_nested_from_pool(env: &Env, b: Bk, depth: usize, query: bool) {
    match b {
        Bk::Sqlite => {
            let mut conn = env.sqlite.acquire().await.expect("acquire");
            sqlx_nested(&mut *conn, depth, query).await;
        }
        Bk::Postgres => {
            let mut conn = env.pg.acquire().await.expect("acquire");
            sqlx_nested(&mut *conn, depth, query).await;
        }
    }
}

fn nesting(c: &mut Criterion) {
    let env = &*ENV;
    for b in [Bk::Sqlite, Bk::Postgres] {
        let mut g = c.benchmark_group(format!("nesting_{}", b.name()));
        for query in [true, false] {
            let kind = if query { "query" } else { "empty" };
            for depth in [1usize, 2, 4, 8] {
                g.bench_function(
                    BenchmarkId::new(format!("sqlx_atomic_{kind}"), depth),
                    |bench| {
                        bench.to_async(&env.rt).iter(|| async move {
                            ours_nested(b, depth, query).await.expect("nested")
                        })
                    },
                );
                g.bench_function(
                    BenchmarkId::new(format!("sqlx_begin_{kind}"), depth),
                    |bench| {
                        bench
                            .to_async(&env.rt)
                            .iter(|| sqlx_nested_from_pool(env, b, depth, query))
                    },
                );
            }
        }
        g.finish();
    }
}

static SINK: AtomicU64 = AtomicU64::new(0);

/// What each hook and each closure does: capture a number and add it somewhere.
fn work(i: u64) {
    SINK.fetch_add(black_box(i), Ordering::Relaxed);
}

async fn ours_hooks(insert: bool) {
    Atomic::new()
        .using(SQ)
        .run(async move {
            if insert {
                ours_insert(Bk::Sqlite).await?;
            }
            for i in 0..HOOKS {
                on_commit(move || work(i)).using(SQ).await?;
            }
            Ok::<_, Error>(())
        })
        .await
        .expect("block");
}

fn vec_hooks() {
    let mut v: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
    for i in 0..HOOKS {
        v.push(Box::new(move || work(i)));
    }
    for f in black_box(v) {
        f();
    }
}

async fn sqlx_then_vec(env: &Env) {
    let mut v: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
    let mut tx = env.sqlite.begin().await.expect("begin");
    sqlx::query(SQ_INSERT)
        .bind(1i64)
        .execute(&mut *tx)
        .await
        .expect("insert");
    for i in 0..HOOKS {
        v.push(Box::new(move || work(i)));
    }
    tx.commit().await.expect("commit");
    for f in black_box(v) {
        f();
    }
}

fn hooks(c: &mut Criterion) {
    let env = &*ENV;
    let mut g = c.benchmark_group("hooks_10000");
    // The block never queries, so it sends nothing: this is the hook machinery alone.
    g.bench_function("sqlx_atomic_on_commit", |bench| {
        bench.to_async(&env.rt).iter(|| ours_hooks(false))
    });
    g.bench_function("vec_of_boxed_closures", |bench| bench.iter(vec_hooks));
    // The same with one INSERT, so that the hooks really wait for a COMMIT.
    g.bench_function("sqlx_atomic_on_commit_with_insert", |bench| {
        bench.to_async(&env.rt).iter(|| ours_hooks(true))
    });
    g.bench_function("sqlx_tx_with_insert_then_vec", |bench| {
        bench.to_async(&env.rt).iter(|| sqlx_then_vec(env))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = one_insert, nesting, hooks
}

/// Profiling mode, for `valgrind --tool=callgrind` (no criterion, a fixed iteration count):
/// `SQLX_ATOMIC_PROFILE=<case> SQLX_ATOMIC_PROFILE_ITERS=<n> target/release/deps/overhead-…`
/// runs 100 warm-up iterations, then `n`, in one `block_on`. Cases:
/// `one_insert_{sqlite,postgres}_{ours,sqlx}`, `nesting8_{sqlite,postgres}_{ours,sqlx}`,
/// `hooks_{ours,vec}`. Per-iteration cost = (cost with `n` - cost with 0) / `n`.
fn profile(case: &str, iters: u64) {
    let env = &*ENV;
    let n = 100 + iters;
    macro_rules! run {
        ($e:expr) => {
            env.rt.block_on(async {
                for _ in 0..n {
                    $e;
                }
            })
        };
    }
    match case {
        "one_insert_sqlite_ours" => run!(ours_one(Bk::Sqlite).await),
        "one_insert_sqlite_sqlx" => run!(sqlx_one(env, Bk::Sqlite).await),
        "one_insert_postgres_ours" => run!(ours_one(Bk::Postgres).await),
        "one_insert_postgres_sqlx" => run!(sqlx_one(env, Bk::Postgres).await),
        "nesting8_sqlite_ours" => run!(ours_nested(Bk::Sqlite, 8, true).await.expect("nested")),
        "nesting8_sqlite_sqlx" => run!(sqlx_nested_from_pool(env, Bk::Sqlite, 8, true).await),
        "nesting8_postgres_ours" => {
            run!(ours_nested(Bk::Postgres, 8, true).await.expect("nested"))
        }
        "nesting8_postgres_sqlx" => run!(sqlx_nested_from_pool(env, Bk::Postgres, 8, true).await),
        "hooks_ours" => run!(ours_hooks(false).await),
        "hooks_vec" => run!(vec_hooks()),
        "sizes" => {
            // The size of the futures each side builds (what every move of them copies).
            let _g = env.rt.enter();
            let sizes = [
                (
                    "Atomic::run(one INSERT) future",
                    size_of_val(&ours_one(Bk::Sqlite)),
                ),
                (
                    "sqlx begin+INSERT+commit future",
                    size_of_val(&sqlx_one(env, Bk::Sqlite)),
                ),
                ("ours_insert future", size_of_val(&ours_insert(Bk::Sqlite))),
                ("PgPool::acquire future", size_of_val(&env.pg.acquire())),
                (
                    "PoolConnection<Postgres>",
                    size_of::<sqlx::pool::PoolConnection<sqlx::Postgres>>(),
                ),
                (
                    "PoolConnection<Sqlite>",
                    size_of::<sqlx::pool::PoolConnection<sqlx::Sqlite>>(),
                ),
            ];
            for (what, n) in sizes {
                println!("{what}: {n} bytes");
            }
        }
        other => panic!("unknown SQLX_ATOMIC_PROFILE case {other:?}"),
    }
}

/// Paired mode (`SQLX_ATOMIC_PAIRED=1`, `SQLX_ATOMIC_PAIRED_ROUNDS=<n>`, default 100): the
/// ratios of `one_insert`, `nesting_*` and `hooks_10000` measured A B B A in alternating batches instead of one benchmark after the other, so that
/// the load of a shared machine falls on both sides alike. Prints one line per comparison.
fn paired() {
    let env = &*ENV;
    let rounds = common::env_number("SQLX_ATOMIC_PAIRED_ROUNDS", 100);
    common::paired(
        &env.rt,
        "one_insert/sqlite: sqlx_atomic (A) vs sqlx_begin_commit (B)",
        rounds,
        25,
        || ours_one(Bk::Sqlite),
        || sqlx_one(env, Bk::Sqlite),
    );
    common::paired(
        &env.rt,
        "one_insert/postgres: sqlx_atomic (A) vs sqlx_begin_commit (B)",
        rounds,
        10,
        || ours_one(Bk::Postgres),
        || sqlx_one(env, Bk::Postgres),
    );
    // Calibration (run only when asked, `SQLX_ATOMIC_PAIRED_ONLY=calibration`): the same side on
    // both arms, to see how far from 1.00 the harness itself lands.
    if common::calibrating() {
        for b in [Bk::Sqlite, Bk::Postgres] {
            common::paired(
                &env.rt,
                &format!("calibration/{}: sqlx (A) vs sqlx (B)", b.name()),
                rounds,
                if b == Bk::Sqlite { 25 } else { 10 },
                || sqlx_one(env, b),
                || sqlx_one(env, b),
            );
            common::paired(
                &env.rt,
                &format!(
                    "calibration/{}: sqlx_atomic (A) vs sqlx_atomic (B)",
                    b.name()
                ),
                rounds,
                if b == Bk::Sqlite { 25 } else { 10 },
                || ours_one(b),
                || ours_one(b),
            );
        }
    }
    for b in [Bk::Sqlite, Bk::Postgres] {
        for query in [true, false] {
            let kind = if query { "query" } else { "empty" };
            for depth in [1usize, 2, 4, 8] {
                common::paired(
                    &env.rt,
                    &format!(
                        "nesting_{}/{kind}/{depth}: sqlx_atomic (A) vs sqlx nested begin (B)",
                        b.name()
                    ),
                    rounds / 4,
                    5,
                    || async move { ours_nested(b, depth, query).await.expect("nested") },
                    || sqlx_nested_from_pool(env, b, depth, query),
                );
            }
        }
    }
    common::paired(
        &env.rt,
        "hooks_10000: sqlx_atomic_on_commit (A) vs vec_of_boxed_closures (B)",
        rounds / 4,
        3,
        || ours_hooks(false),
        || async { vec_hooks() },
    );
}

fn main() {
    common::main(
        paired,
        |case| profile(case, common::env_number("SQLX_ATOMIC_PROFILE_ITERS", 1000)),
        benches,
    );
}
