//! The transactional outbox on PostgreSQL, with Redis as the broker.
//!
//! 1. Statements per transaction: a block with one INSERT and 0, 1, 10 and 100 jobs, recorded
//!    with `Scope::record_statements`. The jobs of a transaction are written with one INSERT.
//! 2. Latency from COMMIT to delivery, over `SQLX_ATOMIC_OUTBOX_LATENCY_N` (default 500)
//!    sequential transactions of one INSERT and one job, each waiting for its delivery before the
//!    next: (a) to a spawned relay's in-process `Handlers`, (b) through a spawned relay's
//!    `RedisStream` to a consumer reading the stream with `XREAD BLOCK` on a connection of its
//!    own. The latency is the receipt's instant minus the instant the block returned (after its
//!    COMMIT); jobs are matched to their transaction by an id in the payload. p50, p99 and max.
//! 3. Throughput: `SQLX_ATOMIC_OUTBOX_ORDERS` (default 8000) orders from
//!    `SQLX_ATOMIC_OUTBOX_TASKS` (default 8) concurrent tasks, each a transaction inserting a row
//!    and producing one message with the same fields, timed from the first transaction to the
//!    consumer's receipt of the last message: (a) a job through the outbox and a spawned relay to
//!    a Redis stream, (b) an async `on_commit` hook sending the `XADD` itself. Rounds alternate
//!    A B B A (`SQLX_ATOMIC_OUTBOX_ROUNDS`, default 5); each side's jobs per second and the median
//!    per-round ratio outbox / direct are printed. The outbox table is emptied of this run's jobs
//!    before every run, so that each side starts from the same state.
//! 4. Where the CPU goes (Linux, servers on this machine): `SQLX_ATOMIC_OUTBOX_CPU_ORDERS`
//!    (default 8000) orders of each of four kinds, in turn, twice: the order's transaction alone;
//!    with its job written but no relay running; through the outbox and a relay to Redis (as in
//!    3a); with the hook's `XADD` (3b). For each, jobs per second and the CPU time per order of
//!    this process, of the processes named `postgres` and of `redis-server`, read from `/proc`
//!    before and after the run.
//!
//! The bench empties `sqlx_atomic_outbox` before each part: no test or other program may use the
//! outbox of this database while it runs. Its relays deliver only the job name of this run
//! (`Relay::only`), and its tables and streams are its own.
//!
//! `cargo bench --all-features --bench outbox`; PostgreSQL at `SQLX_ATOMIC_BENCH_POSTGRES_URL`
//! (else the tests' URL, else 127.0.0.1:5432), Redis at `SQLX_ATOMIC_BENCH_REDIS_URL` (else
//! `SQLX_ATOMIC_TEST_REDIS_URL`, else `redis://127.0.0.1:6379/`).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx_atomic::outbox::brokers::{RedisStream, redis};
use sqlx_atomic::outbox::{self, Handlers, Job, Relay};
use sqlx_atomic::{Atomic, Databases, Error, Scope, on_commit};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

const TABLE: &str = "bench_outbox_orders";
/// How long one message may take before the bench gives up on it.
const GIVE_UP: Duration = Duration::from_secs(60);

fn redis_url() -> String {
    std::env::var("SQLX_ATOMIC_BENCH_REDIS_URL")
        .or_else(|_| std::env::var("SQLX_ATOMIC_TEST_REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// A receipt: the run, the order id, and when it arrived.
type Receipt = (u64, u64, Instant);

/// The payload of order `id` of run `run`.
fn payload(run: u64, id: u64) -> serde_json::Value {
    serde_json::json!({ "run": run, "order": id, "total_cents": 1999 })
}

fn ids_of(payload: &str) -> Option<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    Some((v["run"].as_u64()?, v["order"].as_u64()?))
}

/// The order's row, inside the caller's block.
async fn insert_row(id: u64) -> Result<(), Error> {
    sqlx::query(common::sql(format!("INSERT INTO {TABLE} (v) VALUES ($1)")))
        .bind(id as i64)
        .execute(sqlx_atomic::postgres("default"))
        .await?;
    Ok(())
}

/// One order through the outbox: the row and its job, in one transaction.
async fn order_outbox(job: &'static str, run: u64, id: u64) {
    Atomic::new()
        .run(async {
            insert_row(id).await?;
            outbox::enqueue(job, &payload(run, id)).await
        })
        .await
        .expect("order with a job");
}

/// One order with an async on_commit hook sending the same stream entry straight to Redis.
async fn order_direct(
    con: &redis::aio::MultiplexedConnection,
    stream: &'static str,
    job: &'static str,
    run: u64,
    id: u64,
) {
    let mut con = con.clone();
    Atomic::new()
        .run(async {
            insert_row(id).await?;
            on_commit(move || async move {
                redis::cmd("XADD")
                    .arg(stream)
                    .arg("*")
                    .arg("delivery_id")
                    .arg(format!("direct-{run}-{id}"))
                    .arg("name")
                    .arg(job)
                    .arg("key")
                    .arg("")
                    .arg("payload")
                    .arg(payload(run, id).to_string())
                    .query_async::<String>(&mut con)
                    .await
                    .map(drop)
            })
            .await
        })
        .await
        .expect("order with a hook");
}

/// Reads `stream` from its start with `XREAD BLOCK` until `stop`, sending each entry's ids and
/// the instant its reply arrived.
async fn consume(
    client: redis::Client,
    stream: &'static str,
    tx: UnboundedSender<Receipt>,
    stop: Arc<AtomicBool>,
) {
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("consumer's Redis connection");
    let mut last = "0-0".to_owned();
    while !stop.load(Ordering::Relaxed) {
        // Below the client's 500 ms response timeout, so that an empty wait is not an error.
        let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(100)
            .arg("STREAMS")
            .arg(stream)
            .arg(&last)
            .query_async(&mut con)
            .await
            .expect("XREAD");
        let at = Instant::now();
        for key in reply.iter().flat_map(|r| &r.keys) {
            for entry in &key.ids {
                last.clone_from(&entry.id);
                let p: String = entry.get("payload").expect("a payload field");
                if let Some((run, id)) = ids_of(&p) {
                    let _ = tx.send((run, id, at));
                }
            }
        }
    }
}

/// Empties the outbox table (part boundaries) or only this run's jobs (between runs), and
/// vacuums it.
async fn empty_outbox(pool: &PgPool, job: Option<&str>) {
    let q = match job {
        Some(name) => sqlx::query("DELETE FROM sqlx_atomic_outbox WHERE name = $1").bind(name),
        None => sqlx::query("DELETE FROM sqlx_atomic_outbox"),
    };
    q.execute(pool).await.expect("empty the outbox");
    // Every run starts from a table without dead rows, whether or not the server runs
    // autovacuum (the one this bench was written on does not): the relay's updates leave one
    // dead row version per job, and a claim steps over those still in the pending jobs' index.
    sqlx::query("VACUUM sqlx_atomic_outbox")
        .execute(pool)
        .await
        .expect("vacuum the outbox");
}

async fn del_stream(con: &mut redis::aio::MultiplexedConnection, stream: &str) {
    let _: i64 = redis::cmd("DEL")
        .arg(stream)
        .query_async(con)
        .await
        .expect("DEL");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `n` sequential one-job transactions, each waiting for its receipt; the latencies, sorted, and
/// the index of the slowest transaction.
async fn latencies(
    job: &'static str,
    run: u64,
    n: u64,
    rx: &mut UnboundedReceiver<Receipt>,
) -> (Vec<Duration>, usize) {
    let mut out = Vec::with_capacity(n as usize);
    for id in 0..n {
        order_outbox(job, run, id).await;
        let committed = Instant::now();
        let at = loop {
            let (r, i, at) = tokio::time::timeout(GIVE_UP, rx.recv())
                .await
                .expect("delivered within a minute")
                .expect("the receiver is open");
            if r == run && i == id {
                break at;
            }
        };
        // The receipt can only follow the COMMIT; an instant before the block's return is the
        // scheduler running the receiver first, counted as zero.
        out.push(at.saturating_duration_since(committed));
    }
    let slowest = (0..out.len()).max_by_key(|&i| out[i]).unwrap_or(0);
    out.sort();
    (out, slowest)
}

fn print_latency(what: &str, (v, slowest): &(Vec<Duration>, usize)) {
    println!(
        "latency COMMIT -> {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (transaction #{slowest}), mean {:.2} ms ({} transactions)",
        ms(percentile(v, 0.50)),
        ms(percentile(v, 0.99)),
        ms(v[v.len() - 1]),
        ms(v.iter().sum::<Duration>() / v.len() as u32),
        v.len(),
    );
}

#[derive(Clone, Copy)]
enum Side {
    /// A job through the outbox, delivered by a relay to the stream.
    Outbox,
    /// An `on_commit` hook sending the `XADD`.
    Direct,
    /// A job written to the outbox, with no relay running: what the order's transaction pays.
    JobOnly,
    /// The order's transaction alone.
    Plain,
}

struct Throughput {
    pool: PgPool,
    client: redis::Client,
    con: redis::aio::MultiplexedConnection,
    stream: &'static str,
    job: &'static str,
    orders: u64,
    tasks: usize,
}

impl Throughput {
    /// One run: from the first transaction to the consumer's receipt of the last order.
    async fn run(&self, side: Side, run: u64) -> Duration {
        empty_outbox(&self.pool, Some(self.job)).await;
        del_stream(&mut self.con.clone(), self.stream).await;
        let (tx, mut rx) = unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let consumer = tokio::spawn(consume(self.client.clone(), self.stream, tx, stop.clone()));
        let next = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let workers: Vec<_> = (0..self.tasks)
            .map(|_| {
                let (next, con) = (next.clone(), self.con.clone());
                let (orders, stream, job) = (self.orders, self.stream, self.job);
                tokio::spawn(async move {
                    loop {
                        let id = next.fetch_add(1, Ordering::Relaxed);
                        if id >= orders {
                            break;
                        }
                        match side {
                            Side::Outbox | Side::JobOnly => order_outbox(job, run, id).await,
                            Side::Direct => order_direct(&con, stream, job, run, id).await,
                            Side::Plain => Atomic::new()
                                .run(insert_row(id))
                                .await
                                .expect("an order without a job"),
                        }
                    }
                })
            })
            .collect();
        if matches!(side, Side::JobOnly | Side::Plain) {
            // Nothing reaches the stream: timed to the last commit.
            for w in workers {
                w.await.unwrap();
            }
            let done = t0.elapsed();
            stop.store(true, Ordering::Relaxed);
            consumer.await.unwrap();
            return done;
        }
        let mut seen = HashSet::new();
        let mut last = t0;
        while (seen.len() as u64) < self.orders {
            let (r, id, at) = tokio::time::timeout(GIVE_UP, rx.recv())
                .await
                .expect("every order arrives")
                .expect("the consumer runs");
            if r == run && seen.insert(id) {
                last = last.max(at);
            }
        }
        for w in workers {
            w.await.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        consumer.await.unwrap();
        last - t0
    }
}

/// CPU time (user and system) so far, in clock ticks, of this process (`None`) or of every
/// process whose command name starts with `comm`; `None` without a readable `/proc`.
fn cpu_ticks(comm: Option<&str>) -> Option<u64> {
    let me = std::process::id().to_string();
    let mut total = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue; // ended meanwhile
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let wanted = match comm {
            Some(c) => stat[open + 1..close].starts_with(c),
            None => pid == me,
        };
        if !wanted {
            continue;
        }
        // After the command: state, then fields 4 to 13; utime and stime are fields 14 and 15.
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total += tick(11) + tick(12);
    }
    Some(total)
}

/// This process's, PostgreSQL's and Redis's CPU ticks so far.
fn cpu_now() -> Option<[u64; 3]> {
    Some([
        cpu_ticks(None)?,
        cpu_ticks(Some("postgres"))?,
        cpu_ticks(Some("redis-server"))?,
    ])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: u64 = common::env_number("SQLX_ATOMIC_OUTBOX_LATENCY_N", 500);
    let orders: u64 = common::env_number("SQLX_ATOMIC_OUTBOX_ORDERS", 8000);
    let tasks: usize = common::env_number("SQLX_ATOMIC_OUTBOX_TASKS", 8);
    let rounds: usize = common::env_number("SQLX_ATOMIC_OUTBOX_ROUNDS", 5);
    let pid = std::process::id();
    let job: &'static str = format!("bench_outbox_order_{pid}").leak();
    let stream: &'static str = format!("sqlx_atomic_bench_outbox_{pid}").leak();

    let rt = common::runtime(2);
    let pool = rt.block_on(common::pg_pool(tasks as u32 + 4));
    Databases::new()
        .add("default", common::database(pool.clone()))
        .install()
        .unwrap();
    let client = redis::Client::open(redis_url()).expect("a Redis URL");
    rt.block_on(async {
        outbox::create_table("default").await.unwrap();
        common::pg_table(&pool, TABLE).await;
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis does not answer ({e}); set SQLX_ATOMIC_BENCH_REDIS_URL"));

        // 1. Statements per transaction.
        empty_outbox(&pool, None).await;
        let mut counts = Vec::new();
        for jobs in [0u64, 1, 10, 100] {
            let (r, stmts) = Scope::new()
                .record_statements()
                .run(Atomic::new().run(async {
                    insert_row(0).await?;
                    for i in 0..jobs {
                        outbox::enqueue(job, &payload(0, i)).await?;
                    }
                    Ok::<_, Error>(())
                }))
                .await;
            r.unwrap();
            let writes = stmts
                .iter()
                .filter(|s| s.sql.contains("sqlx_atomic_outbox"))
                .count();
            counts.push((jobs, stmts.len(), writes));
        }
        let base = counts[0].1;
        println!(
            "statements per transaction (one INSERT and n jobs): {}; most added by jobs: +{}",
            counts
                .iter()
                .map(|(j, s, w)| format!("{j} jobs: {s} ({w} to the outbox)"))
                .collect::<Vec<_>>()
                .join(", "),
            counts.iter().map(|c| c.1 - base).max().unwrap_or(0),
        );

        // 2a. Latency to an in-process handler.
        empty_outbox(&pool, None).await;
        let (tx, mut rx) = unbounded_channel::<Receipt>();
        let relay = Relay::new(
            "default",
            Handlers::new().on(job, move |j: Job| {
                let at = Instant::now();
                let tx = tx.clone();
                async move {
                    if let Some((run, id)) = ids_of(&j.payload) {
                        let _ = tx.send((run, id, at));
                    }
                    Ok::<_, std::convert::Infallible>(())
                }
            }),
        )
        .only([job])
        .spawn();
        let v = latencies(job, 1, n, &mut rx).await;
        relay.stop().await;
        print_latency("in-process handler", &v);

        // 2b. Latency through Redis to a consumer.
        empty_outbox(&pool, None).await;
        del_stream(&mut con, stream).await;
        let (tx, mut rx) = unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let consumer = tokio::spawn(consume(client.clone(), stream, tx, stop.clone()));
        let relay = Relay::new("default", RedisStream::new(client.clone(), stream).unwrap())
            .only([job])
            .spawn();
        let v = latencies(job, 2, n, &mut rx).await;
        relay.stop().await;
        stop.store(true, Ordering::Relaxed);
        consumer.await.unwrap();
        print_latency("Redis consumer (XREAD BLOCK)", &v);
        let p99 = percentile(&v.0, 0.99);
        println!(
            "target p99 <= 50 ms to the Redis consumer: {} ({:.2} ms)",
            if p99 <= Duration::from_millis(50) { "met" } else { "missed" },
            ms(p99)
        );

        // 3. Throughput, A B B A.
        empty_outbox(&pool, None).await;
        let relay = Relay::new("default", RedisStream::new(client.clone(), stream).unwrap())
            .only([job])
            .spawn();
        let bench = Throughput {
            pool: pool.clone(),
            client: client.clone(),
            con: con.clone(),
            stream,
            job,
            orders,
            tasks,
        };
        let (mut ta, mut tb) = (Duration::ZERO, Duration::ZERO);
        let mut ratios = Vec::new();
        let mut run = 10;
        for _ in 0..rounds {
            let mut times = [Duration::ZERO; 4];
            for (k, side) in [Side::Outbox, Side::Direct, Side::Direct, Side::Outbox]
                .into_iter()
                .enumerate()
            {
                run += 1;
                times[k] = bench.run(side, run).await;
            }
            let (a, b) = (times[0] + times[3], times[1] + times[2]);
            ta += a;
            tb += b;
            // Throughput ratio outbox/direct = time(direct) / time(outbox).
            ratios.push(b.as_secs_f64() / a.as_secs_f64());
            println!(
                "  round: outbox {:.0} + {:.0} jobs/s, direct {:.0} + {:.0} jobs/s, ratio {:.3}",
                orders as f64 / times[0].as_secs_f64(),
                orders as f64 / times[3].as_secs_f64(),
                orders as f64 / times[1].as_secs_f64(),
                orders as f64 / times[2].as_secs_f64(),
                b.as_secs_f64() / a.as_secs_f64(),
            );
        }
        relay.stop().await;
        if rounds > 0 {
            let total = orders as f64 * 2.0 * rounds as f64;
            let (lo, hi) = ratios
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
            let med = median(ratios);
            println!(
                "throughput, {orders} orders from {tasks} tasks to a Redis consumer: outbox + relay \
                 {:.0} jobs/s, on_commit XADD {:.0} jobs/s; outbox/direct per round: median {med:.3} \
                 (min {lo:.3}, max {hi:.3}); {rounds} rounds of A B B A; target >= 0.8: {}",
                total / ta.as_secs_f64(),
                total / tb.as_secs_f64(),
                if med >= 0.8 { "met" } else { "missed" },
            );
        }

        // 4. Where the CPU goes.
        let cpu_orders: u64 = common::env_number("SQLX_ATOMIC_OUTBOX_CPU_ORDERS", 8000);
        if cpu_now().is_some() && cpu_orders > 0 {
            let bench = Throughput {
                orders: cpu_orders,
                ..bench
            };
            // Clock ticks per second: 100 on Linux.
            let tick_ms = 10.0;
            for _ in 0..2 {
                for (side, what) in [
                    (Side::Plain, "order alone"),
                    (Side::JobOnly, "order + job, no relay"),
                    (Side::Outbox, "outbox + relay"),
                    (Side::Direct, "on_commit XADD"),
                ] {
                    empty_outbox(&pool, None).await;
                    let relay = matches!(side, Side::Outbox | Side::Direct).then(|| {
                        Relay::new("default", RedisStream::new(client.clone(), stream).unwrap())
                            .only([job])
                            .spawn()
                    });
                    run += 1;
                    let before = cpu_now().unwrap();
                    let took = bench.run(side, run).await;
                    let after = cpu_now().unwrap();
                    if let Some(r) = relay {
                        r.stop().await;
                    }
                    let per = |i: usize| (after[i] - before[i]) as f64 * tick_ms / cpu_orders as f64;
                    println!(
                        "cpu per order, {what}: {:.0} jobs/s; ms: bench {:.3}, postgres {:.3}, \
                         redis {:.3}, total {:.3}",
                        cpu_orders as f64 / took.as_secs_f64(),
                        per(0),
                        per(1),
                        per(2),
                        per(0) + per(1) + per(2),
                    );
                }
            }
        }

        empty_outbox(&pool, Some(job)).await;
        del_stream(&mut con, stream).await;
        sqlx::query(common::sql(format!("DROP TABLE IF EXISTS {TABLE}")))
            .execute(&pool)
            .await
            .unwrap();
    });
}
