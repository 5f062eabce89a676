//! Throughput under concurrency: 1, 10, 100 and 1,000 tasks on a pool of 10 PostgreSQL
//! connections, each task running one-INSERT transactions back to back, through sqlx-atomic and
//! through plain sqlx (`pool.begin()`, INSERT, `commit()`) at the same concurrency.
//!
//! One criterion iteration is one transaction per task (so `tasks` transactions); criterion
//! reports the time per iteration and transactions/s. `benches/plot_scale.py` draws
//! `benches/scale.svg` from criterion's results.
//!
//! `cargo bench --all-features --bench scale` (BENCHMARKS.md has the numbers).
mod common;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group};
use sqlx::postgres::PgPool;
use sqlx_atomic::{Atomic, Databases, Error};

const PG: &str = "pg";
const INSERT: &str = "INSERT INTO bench_scale (v) VALUES ($1)";
const POOL: u32 = 10;

struct Env {
    rt: tokio::runtime::Runtime,
    pool: PgPool,
}

static ENV: LazyLock<Env> = LazyLock::new(|| {
    let rt = common::runtime(2);
    let pool = rt.block_on(async {
        let pool = common::pg_pool(POOL).await;
        common::pg_table(&pool, "bench_scale").await;
        Databases::new()
            .add(PG, common::database(pool.clone()))
            .install()
            .expect("install");
        pool
    });
    Env { rt, pool }
});

async fn ours_tx() {
    Atomic::new()
        .using(PG)
        .run(async {
            sqlx::query(INSERT)
                .bind(1i64)
                .execute(sqlx_atomic::postgres(PG))
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .expect("block");
}

async fn sqlx_tx(pool: &PgPool) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(INSERT)
        .bind(1i64)
        .execute(&mut *tx)
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
}

/// `tasks` tasks each running `iters` transactions; the elapsed time.
async fn run(tasks: usize, iters: u64, ours: bool) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let pool = ENV.pool.clone();
            tokio::spawn(async move {
                for _ in 0..iters {
                    if ours {
                        ours_tx().await;
                    } else {
                        sqlx_tx(&pool).await;
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("task");
    }
    start.elapsed()
}

fn scale(c: &mut Criterion) {
    let env = &*ENV;
    let mut g = c.benchmark_group("scale_pg_pool10");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    for tasks in [1usize, 10, 100, 1000] {
        g.throughput(Throughput::Elements(tasks as u64));
        g.bench_function(BenchmarkId::new("sqlx_atomic", tasks), |b| {
            b.to_async(&env.rt)
                .iter_custom(|iters| run(tasks, iters, true));
        });
        g.bench_function(BenchmarkId::new("sqlx", tasks), |b| {
            b.to_async(&env.rt)
                .iter_custom(|iters| run(tasks, iters, false));
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = scale
}

/// Profiling mode (`SQLX_ATOMIC_PROFILE=tasks<N>_ours|tasks<N>_sqlx`,
/// `SQLX_ATOMIC_PROFILE_ITERS=<n>`): `N` tasks each running 100 + n transactions, without
/// criterion, to run under `perf stat` or valgrind; prints the time per transaction.
fn profile(case: &str, iters: u64) {
    let parsed = case
        .strip_prefix("tasks")
        .and_then(|rest| rest.split_once('_'))
        .and_then(|(n, side)| Some((n.parse::<usize>().ok()?, side)));
    let Some((tasks, side @ ("ours" | "sqlx"))) = parsed else {
        panic!("unknown profile case {case:?}: tasks<N>_ours or tasks<N>_sqlx");
    };
    let n = 100 + iters;
    let took = ENV.rt.block_on(run(tasks, n, side == "ours"));
    println!(
        "{case}: {:.1} µs per transaction",
        took.as_secs_f64() * 1e6 / (n as f64 * tasks as f64)
    );
}

/// Paired mode (`SQLX_ATOMIC_PAIRED=1`, `SQLX_ATOMIC_PAIRED_ROUNDS=<n>`, default 100): at each
/// concurrency, rounds of A B B A (see `common::paired`), each arm `tasks` tasks running a few
/// transactions each. With one task the criterion means swing by ±20 % from run to run (which of
/// the two workers runs the task, and the pool's return of the connection, varies); the paired
/// rounds put that swing on both sides alike. The ratio is of times: throughput is its inverse.
fn paired() {
    let rounds = common::env_number("SQLX_ATOMIC_PAIRED_ROUNDS", 100);
    for (tasks, each) in [(1usize, 20u64), (10, 10), (100, 2), (1000, 1)] {
        common::paired(
            &ENV.rt,
            &format!("scale/{tasks} tasks x {each} transactions: sqlx_atomic (A) vs sqlx (B)"),
            rounds,
            1,
            || async move {
                run(tasks, each, true).await;
            },
            || async move {
                run(tasks, each, false).await;
            },
        );
    }
}

fn main() {
    common::main(
        paired,
        |case| profile(case, common::env_number("SQLX_ATOMIC_PROFILE_ITERS", 1000)),
        benches,
    );
}
