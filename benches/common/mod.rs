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

/// The `main` of a bench with a paired and a profiling mode: `SQLX_ATOMIC_PROFILE=<case>` runs
/// `profile(case)`, `SQLX_ATOMIC_PAIRED=1` runs `paired()`, and otherwise criterion runs
/// `benches` (the group `criterion_group!` made) and prints its summary.
pub fn main(paired: fn(), profile: impl FnOnce(&str), benches: fn()) {
    if let Ok(case) = std::env::var("SQLX_ATOMIC_PROFILE") {
        profile(&case);
    } else if std::env::var_os("SQLX_ATOMIC_PAIRED").is_some() {
        paired();
    } else {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
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
/// that exclude it. Read a ratio against both (BENCHMARKS.md, "How to read the numbers").
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
    if !selected(label) {
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
            time_a += time_batch(batch, &mut a).await;
            time_b += time_batch(batch, &mut b).await;
            time_b += time_batch(batch, &mut b).await;
            time_a += time_batch(batch, &mut a).await;
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

/// Whether the comparison `label` runs: `SQLX_ATOMIC_PAIRED_ONLY=<text>` runs only those whose
/// label contains `<text>`.
fn selected(label: &str) -> bool {
    std::env::var("SQLX_ATOMIC_PAIRED_ONLY").map_or(true, |only| label.contains(&only))
}

/// The time of `batch` runs of `f`, one after the other.
async fn time_batch<F, Fut>(batch: usize, f: &mut F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let t = std::time::Instant::now();
    for _ in 0..batch {
        f().await;
    }
    t.elapsed()
}

/// A paired comparison of `a` against `b` with a control: `c` does the same work as `b` (a copy
/// of it), so that the ratio C/B shows, in the same rounds, where the harness lands for two
/// sides that do not differ. Each round times `batch` runs of each side in the order
/// X Y Z Z Y X, the roles rotating from round to round (A B C, then B C A, then C A B), so that
/// every side is as often first, in the middle and last, and the two back-to-back batches of the
/// middle fall on each side alike.
///
/// Prints the medians of A/B and of C/B per round with their 95 % intervals, and the median of
/// the per-round difference A/B − C/B with its interval: when that interval holds 0, the harness
/// cannot tell A from B any better than it tells C from B.
pub fn with_control<A, B, C, FA, FB, FC>(
    rt: &tokio::runtime::Runtime,
    label: &str,
    rounds: usize,
    batch: usize,
    mut a: A,
    mut b: B,
    mut c: C,
) where
    A: FnMut() -> FA,
    B: FnMut() -> FB,
    C: FnMut() -> FC,
    FA: Future<Output = ()>,
    FB: Future<Output = ()>,
    FC: Future<Output = ()>,
{
    if !selected(label) {
        return;
    }
    rt.block_on(async {
        // Warm-up.
        for _ in 0..batch {
            a().await;
            b().await;
            c().await;
        }
        let (mut ab, mut cb, mut diff) = (Vec::new(), Vec::new(), Vec::new());
        let mut total = [Duration::ZERO; 3];
        for round in 0..rounds {
            let order = [round % 3, (round + 1) % 3, (round + 2) % 3];
            let mut t = [Duration::ZERO; 3];
            for side in order.into_iter().chain(order.into_iter().rev()) {
                t[side] += match side {
                    0 => time_batch(batch, &mut a).await,
                    1 => time_batch(batch, &mut b).await,
                    _ => time_batch(batch, &mut c).await,
                };
            }
            for (sum, one) in total.iter_mut().zip(t) {
                *sum += one;
            }
            let (x, y) = (
                t[0].as_secs_f64() / t[1].as_secs_f64(),
                t[2].as_secs_f64() / t[1].as_secs_f64(),
            );
            ab.push(x);
            cb.push(y);
            diff.push(x - y);
        }
        let n = (rounds * batch * 2) as f64;
        let [ta, tb, tc] = total.map(|d| d.as_secs_f64() * 1e6 / n);
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            let (lo, hi) = median_interval(v);
            (v[v.len() / 2], lo, hi)
        };
        let ((x, xl, xh), (y, yl, yh), (d, dl, dh)) =
            (median(&mut ab), median(&mut cb), median(&mut diff));
        println!(
            "{label}: A {ta:.2} µs, B {tb:.2} µs, C {tc:.2} µs per run (means); per round: A/B \
             median {x:.4} (95 % interval {xl:.4}–{xh:.4}), C/B {y:.4} ({yl:.4}–{yh:.4}), \
             A/B − C/B {d:+.4} ({dl:+.4} to {dh:+.4}); {rounds} rounds × 2 batches of {batch} \
             runs of each side"
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
