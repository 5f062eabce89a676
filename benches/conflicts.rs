//! Conflicts and transaction options on PostgreSQL.
//!
//! 1. Throughput on a hot row: 16 tasks make SERIALIZABLE read-modify-write increments of one
//!    row, so that most attempts fail with a serialization failure and run again. sqlx-atomic's
//!    `retry` beside a hand-written retry loop on plain sqlx with the same backoff (full jitter,
//!    2 ms base, 100 ms cap). Rounds alternate A B B A; each side's increments per second and
//!    the median of the per-round ratio are printed.
//! 2. In the paired harness: a block with options (`isolation = read_committed`, the server's
//!    default, and `read_only = false`) beside one without: the options ride with the BEGIN, so
//!    both send the same statements; the same two BEGINs on plain sqlx, to see what the longer
//!    BEGIN costs without the library; and a SERIALIZABLE block beside the same transaction on
//!    plain sqlx (`begin_with`).
//!
//! `cargo bench --all-features --bench conflicts`; `SQLX_ATOMIC_CONFLICT_ROUNDS` (default 6; 0
//! skips the hot row), `SQLX_ATOMIC_CONFLICT_CALLS` (default 400), `SQLX_ATOMIC_PAIRED_ROUNDS`
//! (default 200).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx_atomic::{Atomic, Databases, Error, Isolation, Retry};

const TASKS: usize = 16;
const BASE: Duration = Duration::from_millis(2);
const CAP: Duration = Duration::from_millis(100);

/// The same full-jitter backoff as `Retry`'s: a random wait up to `min(cap, base × 2ⁿ⁻¹)`.
fn backoff(made: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let ceiling = BASE
        .saturating_mul(1 << made.saturating_sub(1).min(20))
        .min(CAP);
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(0);
    Duration::from_nanos(h.finish() % (ceiling.as_nanos() as u64 + 1))
}

/// One increment through sqlx-atomic, retried.
async fn ours(table: &'static str) {
    Atomic::new()
        .isolation(Isolation::Serializable)
        .retry(Retry::new(1000).backoff(BASE, CAP))
        .run(|| async {
            let db = sqlx_atomic::postgres("default");
            let n: i64 =
                sqlx::query_scalar(common::sql(format!("SELECT n FROM {table} WHERE id = 1")))
                    .fetch_one(&db)
                    .await?;
            sqlx::query(common::sql(format!(
                "UPDATE {table} SET n = {} WHERE id = 1",
                n + 1
            )))
            .execute(&db)
            .await?;
            Ok::<_, Error>(())
        })
        .await
        .expect("retried to success");
}

/// One increment on plain sqlx, with a hand-written retry loop.
async fn plain(pool: &PgPool, table: &'static str) {
    let mut made = 0;
    loop {
        made += 1;
        let attempt = async {
            let mut tx = pool
                .begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE")
                .await?;
            let n: i64 =
                sqlx::query_scalar(common::sql(format!("SELECT n FROM {table} WHERE id = 1")))
                    .fetch_one(&mut *tx)
                    .await?;
            sqlx::query(common::sql(format!(
                "UPDATE {table} SET n = {} WHERE id = 1",
                n + 1
            )))
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        };
        match attempt.await {
            Ok(()) => return,
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("40001" | "40P01")) && made <= 1000 =>
            {
                tokio::time::sleep(backoff(made)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// `calls` increments shared by 16 tasks; returns the time they took.
async fn hot_row<F, Fut>(calls: u32, one: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicU32::new(0));
    let t = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (next, one) = (next.clone(), one.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < calls {
                    one().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    t.elapsed()
}

fn main() {
    let rt = common::runtime(2);
    let pool = rt.block_on(common::pg_pool(TASKS as u32));
    Databases::new()
        .add("default", common::database(pool.clone()))
        .install()
        .unwrap();
    let table = "bench_hot_row";
    rt.block_on(async {
        for sql in [
            format!("DROP TABLE IF EXISTS {table}"),
            format!("CREATE TABLE {table} (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)"),
            format!("INSERT INTO {table} VALUES (1, 0)"),
        ] {
            sqlx::query(common::sql(sql)).execute(&pool).await.unwrap();
        }
    });

    let rounds: usize = common::env_number("SQLX_ATOMIC_CONFLICT_ROUNDS", 6);
    let calls: u32 = common::env_number("SQLX_ATOMIC_CONFLICT_CALLS", 400);
    let (mut ta, mut tb) = (Duration::ZERO, Duration::ZERO);
    let mut ratios = Vec::new();
    rt.block_on(async {
        for _ in 0..rounds {
            let p = pool.clone();
            let a1 = hot_row(calls, move || ours(table)).await;
            let b1 = hot_row(calls, move || {
                let p = p.clone();
                async move { plain(&p, table).await }
            })
            .await;
            let p = pool.clone();
            let b2 = hot_row(calls, move || {
                let p = p.clone();
                async move { plain(&p, table).await }
            })
            .await;
            let a2 = hot_row(calls, move || ours(table)).await;
            ta += a1 + a2;
            tb += b1 + b2;
            // Throughput ratio A/B = time(B) / time(A).
            ratios.push((b1 + b2).as_secs_f64() / (a1 + a2).as_secs_f64());
        }
    });
    ratios.sort_by(f64::total_cmp);
    let n = f64::from(calls) * 2.0 * rounds as f64;
    if rounds > 0 {
        println!(
            "hot row, 16 tasks, SERIALIZABLE: retry {:.0} increments/s, hand-written loop {:.0} \
         increments/s; throughput A/B per round: median {:.3} (min {:.3}, max {:.3}); \
         {rounds} rounds of A B B A × {calls} increments",
            n / ta.as_secs_f64(),
            n / tb.as_secs_f64(),
            ratios[ratios.len() / 2],
            ratios[0],
            ratios[ratios.len() - 1],
        );
    }

    let rounds: usize = common::env_number("SQLX_ATOMIC_PAIRED_ROUNDS", 200);
    // READ COMMITTED is PostgreSQL's default: the server does the same work on both sides, and
    // only the BEGIN's text (and the library's handling of the options) differs.
    common::paired(
        &rt,
        "block with isolation read_committed and read_only false (A) vs plain block (B)",
        rounds,
        20,
        || async {
            Atomic::new()
                .isolation(Isolation::ReadCommitted)
                .read_only(false)
                .run(select_one())
                .await
                .unwrap()
        },
        || async { Atomic::new().run(select_one()).await.unwrap() },
    );
    common::paired(
        &rt,
        "plain sqlx begin_with READ COMMITTED, READ WRITE (A) vs plain sqlx begin (B)",
        rounds,
        20,
        || async {
            let mut tx = pool
                .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE")
                .await
                .unwrap();
            sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
        },
        || async {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
        },
    );
    common::paired(
        &rt,
        "SERIALIZABLE block (A) vs plain sqlx begin_with (B)",
        rounds,
        20,
        || async {
            Atomic::new()
                .isolation(Isolation::Serializable)
                .run(select_one())
                .await
                .unwrap()
        },
        || async {
            let mut tx = pool
                .begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE")
                .await
                .unwrap();
            sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
        },
    );
}

async fn select_one() -> Result<(), Error> {
    sqlx::query("SELECT 1")
        .execute(sqlx_atomic::postgres("default"))
        .await?;
    Ok(())
}
