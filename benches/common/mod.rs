//! Shared set-up of the benchmarks: the runtime, the pools and the tables.
//!
//! Every bench binary installs its databases once (`Databases::install` can run once per
//! process) and hands the same sqlx pools to the hand-written baselines, so both sides of each
//! comparison use the same connections and the same statement.
#![allow(dead_code)]

use std::str::FromStr;
use std::time::Duration;

use criterion::Criterion;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

/// The PostgreSQL server: `SQLX_ATOMIC_BENCH_POSTGRES_URL`, else the one the tests use.
pub fn pg_url() -> String {
    std::env::var("SQLX_ATOMIC_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("SQLX_ATOMIC_TEST_POSTGRES_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A runtime with `workers` worker threads, or a current-thread runtime for `0`.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    let mut b = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    b.enable_all().build().expect("tokio runtime")
}

/// A pool on a fresh SQLite file in the temp dir (or `SQLX_ATOMIC_BENCH_SQLITE_DIR`), WAL journal, `synchronous = NORMAL` (the usual
/// setting with WAL: a commit appends to the WAL without an fsync, so the library's own cost is
/// not hidden behind the disk).
pub fn sqlite_pool(name: &str, max: u32) -> SqlitePool {
    let base = std::env::var_os("SQLX_ATOMIC_BENCH_SQLITE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("sqlx-atomic-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{name}.db"));
    let _ = std::fs::remove_file(&path);
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}?mode=rwc", path.display()))
        .expect("sqlite url")
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(30));
    SqlitePoolOptions::new()
        .max_connections(max)
        .connect_lazy_with(opts)
}

/// A pool of `max` connections on the PostgreSQL server.
pub async fn pg_pool(max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(120))
        .connect(&pg_url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} does not answer ({e}); set SQLX_ATOMIC_BENCH_POSTGRES_URL",
                pg_url()
            )
        })
}

/// The bench's database over `pool`, the pool the plain-sqlx side uses too. As for any
/// `Database::from_pool`, a transaction takes its connection with the pool's own checks (with
/// sqlx's defaults, a ping); `SQLX_ATOMIC_BENCH_TEST_WITH_BEGIN=1` turns on `test_with_begin`
/// (the default of the pools sqlx-atomic builds), where the BEGIN is the test instead.
pub fn database<DB: sqlx_atomic::Backend>(pool: sqlx::Pool<DB>) -> sqlx_atomic::Database {
    let on = env_number("SQLX_ATOMIC_BENCH_TEST_WITH_BEGIN", 0u8) == 1;
    sqlx_atomic::Database::from_pool(pool).test_with_begin(on)
}

/// The number in the environment variable `name`, or `default`.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Whether the paired mode was asked for its self-comparisons
/// (`SQLX_ATOMIC_PAIRED_ONLY=calibration`).
pub fn calibrating() -> bool {
    std::env::var("SQLX_ATOMIC_PAIRED_ONLY").is_ok_and(|o| o.contains("calibration"))
}

/// Creates (or empties) `table (id, v)` with the pool's dialect.
pub async fn sqlite_table(pool: &SqlitePool, table: &str) {
    sqlx::raw_sql(sql(format!(
        "DROP TABLE IF EXISTS {table}; \
         CREATE TABLE {table} (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)"
    )))
    .execute(pool)
    .await
    .expect("sqlite table");
}

/// Creates (or empties) `table (id, v)` on PostgreSQL.
pub async fn pg_table(pool: &PgPool, table: &str) {
    sqlx::raw_sql(sql(format!(
        "DROP TABLE IF EXISTS {table}; \
         CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, v BIGINT NOT NULL)"
    )))
    .execute(pool)
    .await
    .expect("postgres table");
}

/// SQL text built by the benchmarks themselves (table names only, never user input).
pub fn sql(text: String) -> SqlStr {
    AssertSqlSafe(text).into_sql_str()
}

/// Short runs: other engineers share the machine (override on the command line with
/// `--warm-up-time` / `--measurement-time`).
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args()
}

/// A paired comparison, robust to the load of a shared machine: `rounds` rounds, each timing
/// `batch` runs of `a`, `2 × batch` runs of `b`, then `batch` runs of `a` again (A B B A, so that
/// a drift within the round and the order both cancel). Prints the median and quartiles of the
/// per-round ratio time(A) / time(B), a 95 % confidence interval of that median, and the ratio of
/// the totals.
///
/// The interval makes no assumption about the ratios' distribution: the median of `n` rounds lies
/// between the order statistics of ranks `n/2 ∓ 1.96 √n / 2` with 95 % confidence (the sign
/// test's interval), if the rounds are independent. On a shared machine they are not quite (the
/// load drifts more slowly than a round), so the interval is narrower than the spread between
/// runs: the calibration (each side against itself) lands up to ±0.5 % from 1.00 with intervals
/// that exclude it. Read a ratio against both (BENCHMARKS.md, session 8).
pub fn paired<A, B, FA, FB>(
    rt: &tokio::runtime::Runtime,
    label: &str,
    rounds: usize,
    batch: usize,
    mut a: A,
    mut b: B,
) where
    A: FnMut() -> FA,
    B: FnMut() -> FB,
    FA: Future<Output = ()>,
    FB: Future<Output = ()>,
{
    use std::time::Instant;
    // `SQLX_ATOMIC_PAIRED_ONLY=<text>`: run only the comparisons whose label contains it.
    if let Ok(only) = std::env::var("SQLX_ATOMIC_PAIRED_ONLY")
        && !label.contains(&only)
    {
        return;
    }
    rt.block_on(async {
        // Warm-up.
        for _ in 0..batch {
            a().await;
            b().await;
        }
        let (mut ta, mut tb) = (Duration::ZERO, Duration::ZERO);
        let mut ratios = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let mut time_a = Duration::ZERO;
            let mut time_b = Duration::ZERO;
            for is_a in [true, false, false, true] {
                let t = Instant::now();
                for _ in 0..batch {
                    if is_a { a().await } else { b().await }
                }
                if is_a {
                    time_a += t.elapsed();
                } else {
                    time_b += t.elapsed();
                }
            }
            ta += time_a;
            tb += time_b;
            ratios.push(time_a.as_secs_f64() / time_b.as_secs_f64());
        }
        ratios.sort_by(f64::total_cmp);
        let q = |p: f64| ratios[((ratios.len() - 1) as f64 * p).round() as usize];
        let (lo, hi) = median_interval(&ratios);
        let n = (rounds * batch * 2) as f64;
        println!(
            "{label}: A {:.2} µs, B {:.2} µs per run (means); A/B per round: median {:.4} \
             (95 % interval {lo:.4}–{hi:.4}; quartiles {:.4}–{:.4}); A/B of totals {:.4}; \
             {rounds} rounds of A B B A × {batch} runs",
            ta.as_secs_f64() * 1e6 / n,
            tb.as_secs_f64() * 1e6 / n,
            q(0.5),
            q(0.25),
            q(0.75),
            ta.as_secs_f64() / tb.as_secs_f64(),
        );
    });
}

/// The distribution-free 95 % confidence interval of the median of `sorted` (ascending): the
/// order statistics of ranks `n/2 ∓ 1.96 √n / 2` (normal approximation of the binomial, good
/// from a few dozen rounds on).
pub fn median_interval(sorted: &[f64]) -> (f64, f64) {
    let n = sorted.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let half = 1.96 * (n as f64).sqrt() / 2.0;
    let mid = n as f64 / 2.0;
    let lo = (mid - half).floor().max(0.0) as usize;
    let hi = ((mid + half).ceil() as usize).min(n - 1);
    (sorted[lo], sorted[hi])
}
