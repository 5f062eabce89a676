//! Crash tests of the outbox (feature `outbox`, docs/semantics.md §13) with real processes, on
//! SQLite, PostgreSQL and MariaDB: what survives a SIGKILL.
//!
//! A child process commits orders in a loop, each with a durable job, every seventh rolled back
//! on purpose, while a relay in the same process applies the jobs; the parent kills it with
//! SIGKILL at varied points (at start-up, right after a commit, in the middle of a delivery),
//! several times, then runs a relay until nothing is pending. Every committed order's job is
//! then applied at least once, none of a rolled-back order ever is, and the delivery ids let the
//! consumer apply each exactly once. The same loop with plain `on_commit` hooks, killed at the
//! same points, shows what a hook (at most once, §5.10) loses.
//!
//! The broker modes (features `outbox-redis`, `outbox-amqp`, `outbox-nats`; on SQLite) kill a
//! child whose relay publishes the jobs to a Redis stream, a RabbitMQ queue or a NATS JetStream
//! stream of the run's own, the same way; after the final relay the parent reads everything back
//! with the broker's client: every committed order's job reached the broker at least once, under
//! its delivery id, none of a rolled-back order did, and the duplicates are counted. The brokers'
//! URLs come from `SQLX_ATOMIC_TEST_REDIS_URL`, `SQLX_ATOMIC_TEST_AMQP_URL` and
//! `SQLX_ATOMIC_TEST_NATS_URL` (defaults: the local servers); a broker that does not answer fails
//! its test under `CI=true`, and skips it loudly otherwise.
//!
//! The test binary runs itself as the child: `<backend>::child` (`broker::child` for the broker
//! modes) is ignored in a normal run and does its work only when `SQLX_ATOMIC_CRASH_CHILD` is
//! set. The kill points come from a seeded
//! generator; the seed is printed, and `SQLX_ATOMIC_CRASH_SEED` replays it.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant};

use sqlx::AssertSqlSafe;
use sqlx_atomic::outbox::{self, Handlers, Job, Relay};
use sqlx_atomic::{Atomic, BoxError, Database, Databases, Error, Handle, on_commit};

/// Set in the child's environment: what the child runs (`durable` or `plain`).
const CHILD_ENV: &str = "SQLX_ATOMIC_CRASH_CHILD";
/// The child's database URL.
const URL_ENV: &str = "SQLX_ATOMIC_CRASH_URL";
/// The suffix of the run's table names.
const TABLES_ENV: &str = "SQLX_ATOMIC_CRASH_TABLES";
/// The child's round, from which its order ids are derived.
const ROUND_ENV: &str = "SQLX_ATOMIC_CRASH_ROUND";
/// The seed of the kill points, to replay a run.
const SEED_ENV: &str = "SQLX_ATOMIC_CRASH_SEED";

/// The prefix of the child's progress lines (the test harness prints its own lines too).
const LINE: &str = "CRASH";
/// Start-up and kill rounds per mode.
const ROUNDS: usize = 8;
/// Start-up and kill rounds of each broker mode (on SQLite only, so fewer suffice).
const BROKER_ROUNDS: usize = 5;
/// The tag of the in-process mode's SQLite file.
const SQLITE_TAG: &str = "sqlite";
/// The order ids of round `r` are `(r + 1) * ROUND_IDS + i`, distinct across rounds.
const ROUND_IDS: i64 = 100_000;
/// A child stops on its own after this many orders (far beyond any kill point).
const MAX_ORDERS: i64 = 5_000;
/// Every seventh order of a round rolls back after enqueueing its job.
const REJECT_EVERY: i64 = 7;
/// How long a round may take to reach its kill point before the test fails.
const ROUND_LIMIT: Duration = Duration::from_secs(90);
/// How long the final relay may take to deliver what the killed children left.
const DRAIN_LIMIT: Duration = Duration::from_secs(90);
/// A killed SQLite relay's claim lasts this long: short, so that the next relay takes its jobs
/// over soon. There is never more than one relay at a time, so a claim never needs to outlast
/// a batch.
const LEASE: Duration = Duration::from_secs(1);
/// Connections per pool, in the parent and in each child.
const POOL: u32 = 8;

/// Whether the order `id` is one the child rolls back on purpose.
fn is_rejected(id: i64) -> bool {
    (id % ROUND_IDS) % REJECT_EVERY == REJECT_EVERY - 1
}

/// A progress line of the child, read by the parent.
fn say(what: &str, id: i64) {
    let mut out = std::io::stdout().lock();
    // The parent may already be gone (its test failed): the child's progress is then unread.
    let _ = writeln!(out, "{LINE} {what} {id}");
    let _ = out.flush();
}

/// The databases the crash tests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
    MySql,
}

impl Kind {
    fn alias(self) -> &'static str {
        match self {
            Kind::Sqlite => "crash_sqlite",
            Kind::Postgres => "crash_pg",
            Kind::MySql => "crash_my",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Sqlite => "SQLite",
            Kind::Postgres => "PostgreSQL",
            Kind::MySql => "MariaDB",
        }
    }

    /// The variable naming the server's URL (the test suite's own).
    fn env(self) -> &'static str {
        match self {
            Kind::Sqlite => "",
            Kind::Postgres => "SQLX_ATOMIC_TEST_POSTGRES_URL",
            Kind::MySql => "SQLX_ATOMIC_TEST_MYSQL_URL",
        }
    }

    fn default_url(self) -> &'static str {
        match self {
            Kind::Sqlite => "",
            Kind::Postgres => "postgres://postgres@127.0.0.1:5432/test",
            Kind::MySql => "mysql://root@127.0.0.1:3306/test",
        }
    }

    /// `sql` with this backend's placeholders (`?` becomes `$n` on PostgreSQL).
    fn q(self, sql: &str) -> String {
        if self != Kind::Postgres {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len() + 8);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// An INSERT of `(delivery_id, order_id)` into `table` that ignores a delivery id already
    /// there: how an idempotent consumer drops a duplicate delivery.
    fn insert_once(self, table: &str) -> String {
        match self {
            Kind::Sqlite => {
                format!("INSERT OR IGNORE INTO {table} (delivery_id, order_id) VALUES (?, ?)")
            }
            Kind::Postgres => format!(
                "INSERT INTO {table} (delivery_id, order_id) VALUES ($1, $2) \
                 ON CONFLICT (delivery_id) DO NOTHING"
            ),
            Kind::MySql => {
                format!("INSERT IGNORE INTO {table} (delivery_id, order_id) VALUES (?, ?)")
            }
        }
    }

    /// A database of `max` connections at `url`, connecting on first use (in a tokio runtime).
    fn database(self, url: &str, max: u32) -> Database {
        use std::str::FromStr;
        match self {
            Kind::Sqlite => {
                let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                    .unwrap_or_else(|e| panic!("the SQLite URL of the crash tests: {e}"))
                    .busy_timeout(Duration::from_secs(60));
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(max)
                    .connect_lazy_with(opts);
                // Writers take the lock at BEGIN, so the order loop and the relay queue for it.
                Database::from_pool(pool).begin_statement("BEGIN IMMEDIATE")
            }
            Kind::Postgres => Database::from_pool(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(max)
                    .connect_lazy(url)
                    .unwrap_or_else(|_| panic!("the URL in {} does not parse", self.env())),
            ),
            Kind::MySql => Database::from_pool(
                sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(max)
                    .connect_lazy(url)
                    .unwrap_or_else(|_| panic!("the URL in {} does not parse", self.env())),
            ),
        }
    }

    /// Whether a connection to the server at `url` opens within 5 s.
    async fn reachable(self, url: &str) -> Result<(), String> {
        use sqlx::Connection;
        let t = Duration::from_secs(5);
        let r = match self {
            Kind::Sqlite => return Ok(()),
            Kind::Postgres => {
                tokio::time::timeout(t, async {
                    sqlx::PgConnection::connect(url).await?.close().await
                })
                .await
            }
            Kind::MySql => {
                tokio::time::timeout(t, async {
                    sqlx::MySqlConnection::connect(url).await?.close().await
                })
                .await
            }
        };
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// The server's URL when it answers. When it does not: with `CI=true`, a panic; otherwise
    /// `None`, after saying loudly (past the harness's capture) that its test is skipped.
    async fn server_url(self) -> Option<String> {
        let url = std::env::var(self.env())
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| self.default_url().to_owned());
        let why = match self.reachable(&url).await {
            Ok(()) => return Some(url),
            Err(why) => why,
        };
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI=true and the {} server does not answer ({why}); set {} or start it",
                self.name(),
                self.env()
            );
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n*** sqlx-atomic crash tests: SKIPPING {}, whose server does not answer (set {} to \
             a reachable URL; tried it and got: {why}) ***\n",
            self.name(),
            self.env()
        );
        None
    }
}

/// The brokers of the broker modes, where the child's relay publishes the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Redis,
    Amqp,
    Nats,
}

impl Sink {
    const ALL: [Sink; 3] = [Sink::Redis, Sink::Amqp, Sink::Nats];

    /// The mode's word, in the child's environment and its SQLite file's name.
    fn tag(self) -> &'static str {
        match self {
            Sink::Redis => "redis",
            Sink::Amqp => "amqp",
            Sink::Nats => "nats",
        }
    }

    /// The alias of the mode's SQLite database.
    fn alias(self) -> &'static str {
        match self {
            Sink::Redis => "crash_redis",
            Sink::Amqp => "crash_amqp",
            Sink::Nats => "crash_nats",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Sink::Redis => "Redis stream",
            Sink::Amqp => "RabbitMQ queue",
            Sink::Nats => "NATS JetStream",
        }
    }

    /// The variable naming the broker's URL (the test suite's own).
    fn env(self) -> &'static str {
        match self {
            Sink::Redis => "SQLX_ATOMIC_TEST_REDIS_URL",
            Sink::Amqp => "SQLX_ATOMIC_TEST_AMQP_URL",
            Sink::Nats => "SQLX_ATOMIC_TEST_NATS_URL",
        }
    }

    /// The broker's URL: its variable, or the local server's.
    fn url(self) -> String {
        let default = match self {
            Sink::Redis => "redis://127.0.0.1:6379/",
            Sink::Amqp => "amqp://guest:guest@127.0.0.1:5672/%2f",
            Sink::Nats => "nats://127.0.0.1:4222",
        };
        std::env::var(self.env())
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| default.to_owned())
    }

    fn from_tag(tag: &str) -> Option<Sink> {
        Sink::ALL.into_iter().find(|s| s.tag() == tag)
    }
}

/// The parent's runtime: the pools hold sockets registered with it.
static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(8 << 20)
        .enable_all()
        .build()
        .expect("runtime")
});

/// The parent's databases, installed once per process, and the URL of each available one.
static SETUP: OnceLock<Vec<(Kind, String)>> = OnceLock::new();

/// The SQLite file `tag` of this process's crash tests, shared with their children.
fn sqlite_file(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("sqlx-atomic-crash-{tag}-{}.db", std::process::id()))
}

/// The URL of the SQLite file `tag`.
fn sqlite_url(tag: &str) -> String {
    format!("sqlite://{}?mode=rwc", sqlite_file(tag).display())
}

/// Creates the SQLite file `tag` afresh, in WAL mode.
async fn create_sqlite_file(tag: &str) {
    use sqlx::{ConnectOptions, Connection};
    use std::str::FromStr;
    remove_sqlite_files(tag);
    // WAL is switched on once, by one connection, before any pool opens the file (switching
    // takes a lock that busy_timeout does not wait for); the file keeps it.
    sqlx::sqlite::SqliteConnectOptions::from_str(&sqlite_url(tag))
        .expect("sqlite url")
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .connect()
        .await
        .expect("creating a crash test's SQLite file")
        .close()
        .await
        .expect("closing the WAL setup connection");
}

/// Removes the SQLite file `tag` and its WAL files.
fn remove_sqlite_files(tag: &str) {
    let db = sqlite_file(tag);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
}

/// The URL of `kind` for this process, installing the databases on first use; `None` when its
/// server does not answer (and `CI` is not `true`).
fn setup(kind: Kind) -> Option<String> {
    let available = SETUP.get_or_init(|| {
        RT.block_on(async {
            // A file of its own: the outbox table is one per database. Each broker mode has a
            // file of its own too. The files are created when their tests start (the pools
            // connect on first use), so that a filtered run leaves none behind.
            let url = sqlite_url(SQLITE_TAG);
            let mut dbs =
                Databases::new().add(Kind::Sqlite.alias(), Kind::Sqlite.database(&url, POOL));
            for sink in Sink::ALL {
                dbs = dbs.add(
                    sink.alias(),
                    Kind::Sqlite.database(&sqlite_url(sink.tag()), POOL),
                );
            }
            let mut available = vec![(Kind::Sqlite, url)];
            for kind in [Kind::Postgres, Kind::MySql] {
                if let Some(url) = kind.server_url().await {
                    dbs = dbs.add(kind.alias(), kind.database(&url, POOL));
                    available.push((kind, url));
                }
            }
            dbs.install()
                .expect("installing the crash tests' databases");
            available
        })
    });
    available
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, url)| url.clone())
}

/// A child's runtime (the child is its own process, with its own pools).
fn child_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(8 << 20)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A run's tables and job name, distinct per run.
#[derive(Debug, Clone)]
struct Tables {
    /// The durable mode's orders.
    orders: String,
    /// Every application of a durable job, duplicates included.
    applications: String,
    /// The applied deliveries, one row per delivery id.
    consumed: String,
    /// The plain mode's orders.
    orders_plain: String,
    /// The orders whose on_commit hook ran.
    consumed_plain: String,
    /// The outbox job's name: the outbox table is shared, the run's jobs are told apart by it.
    job: String,
}

impl Tables {
    fn new(suffix: &str) -> Self {
        Tables {
            orders: format!("crash_orders_{suffix}"),
            applications: format!("crash_applications_{suffix}"),
            consumed: format!("crash_consumed_{suffix}"),
            orders_plain: format!("crash_orders_plain_{suffix}"),
            consumed_plain: format!("crash_consumed_plain_{suffix}"),
            job: format!("crash_order_{suffix}"),
        }
    }

    fn create(&self) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE {} (id BIGINT NOT NULL PRIMARY KEY)",
                self.orders
            ),
            format!(
                "CREATE TABLE {} (delivery_id VARCHAR(64) NOT NULL, order_id BIGINT NOT NULL)",
                self.applications
            ),
            format!(
                "CREATE TABLE {} (delivery_id VARCHAR(64) NOT NULL PRIMARY KEY, \
                 order_id BIGINT NOT NULL)",
                self.consumed
            ),
            format!(
                "CREATE TABLE {} (id BIGINT NOT NULL PRIMARY KEY)",
                self.orders_plain
            ),
            format!(
                "CREATE TABLE {} (order_id BIGINT NOT NULL)",
                self.consumed_plain
            ),
        ]
    }

    fn drop(&self) -> Vec<String> {
        [
            &self.orders,
            &self.applications,
            &self.consumed,
            &self.orders_plain,
            &self.consumed_plain,
        ]
        .iter()
        .map(|t| format!("DROP TABLE {t}"))
        .collect()
    }
}

/// A run's table suffix: the process and the time, so that runs never share a table (nor a
/// broker's stream, queue or subject).
fn unique_suffix(alias: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}_{}_{nanos}",
        alias.trim_start_matches("crash_"),
        std::process::id()
    )
}

/// The order id a job's payload names.
fn order_of(job: &Job) -> Result<i64, BoxError> {
    let payload: serde_json::Value = job.payload()?;
    payload["order"].as_i64().ok_or_else(|| {
        format!(
            "the job {} names no order: {}",
            job.delivery_id, job.payload
        )
        .into()
    })
}

/// What a child runs: orders with durable jobs (applied in the process, or published to a
/// broker), or with plain on_commit hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Durable,
    Plain,
    Broker(Sink),
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Durable => "durable",
            Mode::Plain => "plain",
            Mode::Broker(sink) => sink.tag(),
        }
    }
}

/// How an order's block ends: rejected on purpose (rolled back), or failed.
#[derive(Debug)]
enum Outcome {
    Rejected,
    Failed(Error),
}

impl From<Error> for Outcome {
    fn from(e: Error) -> Self {
        Outcome::Failed(e)
    }
}

impl From<sqlx::Error> for Outcome {
    fn from(e: sqlx::Error) -> Self {
        Outcome::Failed(Error::from(e))
    }
}

/// Where the parent kills a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillAt {
    /// Early: when the child has committed this many orders (0: once it is ready).
    Early(u32),
    /// Right after the child reports this many committed orders.
    AfterCommit(u32),
    /// When the child has started this many deliveries (a job applied, or a hook running).
    MidDelivery(u32),
}

impl KillAt {
    fn reached(self, ready: bool, committed: u32, delivering: u32) -> bool {
        match self {
            KillAt::Early(n) | KillAt::AfterCommit(n) => ready && committed >= n,
            KillAt::MidDelivery(n) => delivering >= n,
        }
    }
}

impl fmt::Display for KillAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KillAt::Early(0) => f.write_str("early, at start-up"),
            KillAt::Early(n) => write!(f, "early, after commit {n}"),
            KillAt::AfterCommit(n) => write!(f, "right after commit {n}"),
            KillAt::MidDelivery(n) => write!(f, "as delivery {n} starts"),
        }
    }
}

/// A xorshift64 generator: the kill points, reproducible from the printed seed.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // Any seed, zero included, gives a non-zero state.
        XorShift(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `lo..=hi`.
    fn between(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next() % u64::from(hi - lo + 1)) as u32
    }
}

/// The run's seed: `SQLX_ATOMIC_CRASH_SEED`, or one from the clock.
fn seed() -> u64 {
    std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id())
        })
}

/// The kill points of `rounds` rounds of the test numbered `test`: one of each kind, the rest
/// random, shuffled.
fn schedule(seed: u64, test: u64, rounds: usize) -> Vec<KillAt> {
    let mut rng = XorShift::new(seed ^ (test + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let pick = |which: u64, rng: &mut XorShift| match which {
        0 => KillAt::Early(rng.between(0, 2)),
        1 => KillAt::AfterCommit(rng.between(5, 120)),
        _ => KillAt::MidDelivery(rng.between(1, 60)),
    };
    let mut points: Vec<KillAt> = (0..rounds as u64)
        .map(|i| {
            let which = if i < 3 { i } else { rng.next() % 3 };
            pick(which, &mut rng)
        })
        .collect();
    for i in (1..points.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        points.swap(i, j);
    }
    points
}

/// A running child, killed (and reaped) if the parent's test fails while it runs.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the parent saw of one round before it killed the child.
#[derive(Debug)]
struct Round {
    kill: KillAt,
    committed: u32,
    delivering: u32,
}

/// Runs the child `test` (`<backend>::child`) in `mode` until `kill`, then kills it with SIGKILL.
fn crash_round(
    test: &str,
    mode: Mode,
    url: &str,
    suffix: &str,
    round: usize,
    kill: KillAt,
) -> Round {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            test,
            "--nocapture",
            "--include-ignored",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, mode.arg())
        .env(URL_ENV, url)
        .env(TABLES_ENV, suffix)
        .env(ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the child process");
    let stdout = child.stdout.take().expect("the child's stdout");
    let mut child = ChildGuard(child);
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + ROUND_LIMIT;
    let (mut ready, mut committed, mut delivering) = (false, 0u32, 0u32);
    let context = |committed: u32, delivering: u32| {
        format!(
            "{} child, round {round}, to be killed {kill}: {committed} orders committed, \
             {delivering} deliveries started",
            mode.arg()
        )
    };
    while !kill.reached(ready, committed, delivering) {
        let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{}; the kill point was not reached within {ROUND_LIMIT:?}",
                context(committed, delivering)
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let status = child.0.wait();
                panic!(
                    "{}; the child stopped on its own ({status:?}) before its kill point",
                    context(committed, delivering)
                );
            }
        };
        // The harness may have begun the line ("test <name> ... " before the test runs).
        let Some(at) = line.find(LINE) else {
            continue;
        };
        let mut words = line[at + LINE.len()..].split_whitespace();
        match words.next() {
            Some("ready") => ready = true,
            Some("committed") => committed += 1,
            Some("delivering") => delivering += 1,
            _ => {}
        }
    }
    // Child::kill sends SIGKILL: no destructor, no flush, no ROLLBACK runs in the child.
    child.0.kill().expect("killing the child");
    let status = child.0.wait().expect("reaping the child");
    assert_eq!(
        status.signal(),
        Some(9),
        "{}; the child ended otherwise than by SIGKILL: {status}",
        context(committed, delivering)
    );
    drop(rx);
    reader.join().expect("the child's reader thread");
    Round {
        kill,
        committed,
        delivering,
    }
}

/// What the durable mode left, checked.
#[derive(Debug)]
struct Durable {
    committed: usize,
    unapplied: usize,
    applications: usize,
    unique: usize,
}

/// What the plain mode left, checked.
#[derive(Debug)]
struct Plain {
    committed: usize,
    lost: usize,
}

/// Panics when `got` and `want` differ, naming a few ids on each side.
fn same_ids(what: &str, got: &BTreeSet<i64>, want: &BTreeSet<i64>) {
    if got == want {
        return;
    }
    let extra: Vec<&i64> = got.difference(want).take(10).collect();
    let missing: Vec<&i64> = want.difference(got).take(10).collect();
    panic!(
        "{what}: {} ids, expected {}; unexpected (first 10): {extra:?}; missing (first 10): \
         {missing:?}",
        got.len(),
        want.len()
    );
}

fn print_report(kind: Kind, seed: u64, durable: &[Round], d: &Durable, plain: &[Round], p: &Plain) {
    let name = kind.name();
    let mut out = format!("\n[{name}] seed {seed} ({SEED_ENV}={seed} replays these kill points)\n");
    for (mode, rounds) in [("outbox   ", durable), ("on_commit", plain)] {
        for (i, r) in rounds.iter().enumerate() {
            out.push_str(&format!(
                "[{name}] {mode} round {i}: killed {}: {} orders committed, {} deliveries started\n",
                r.kill, r.committed, r.delivering
            ));
        }
    }
    out.push_str(&format!(
        "[{name}] outbox lost {} of {} jobs; {} applications of {} unique deliveries: {} \
         duplicates, each dropped by its delivery id\n",
        d.unapplied,
        d.committed,
        d.applications,
        d.unique,
        d.applications - d.unique
    ));
    out.push_str(&format!(
        "[{name}] on_commit lost {} of {} jobs\n",
        p.lost, p.committed
    ));
    println!("{out}");
}

macro_rules! crash_suite {
    ($module:ident, $db:ty, $kind:expr) => {
        mod $module {
            use super::*;
            type DB = $db;
            const K: Kind = $kind;
            /// This module's child test, as the harness names it.
            const CHILD: &str = concat!(stringify!($module), "::child");

            fn pool() -> sqlx::Pool<DB> {
                sqlx_atomic::pool::<DB>(K.alias()).expect("the crash alias is installed")
            }

            async fn exec(sql: &str) {
                sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                    .execute(&pool())
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }

            async fn ids(sql: &str) -> Vec<i64> {
                sqlx::query_scalar::<DB, i64>(AssertSqlSafe(sql.to_owned()))
                    .fetch_all(&pool())
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }

            async fn pairs(sql: &str) -> Vec<(String, i64)> {
                sqlx::query_as::<DB, (String, i64)>(AssertSqlSafe(sql.to_owned()))
                    .fetch_all(&pool())
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }

            async fn count(sql: &str, job: &str) -> i64 {
                sqlx::query_scalar::<DB, i64>(AssertSqlSafe(K.q(sql)))
                    .bind(job.to_owned())
                    .fetch_one(&pool())
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }

            /// The consumer: records every application, then applies the delivery once per
            /// delivery id (in autocommit, outside the relay's own statements).
            async fn apply(t: &Tables, job: Job, report: bool) -> Result<(), BoxError> {
                let order = order_of(&job)?;
                if report {
                    say("delivering", order);
                }
                let p = pool();
                sqlx::query(AssertSqlSafe(K.q(&format!(
                    "INSERT INTO {} (delivery_id, order_id) VALUES (?, ?)",
                    t.applications
                ))))
                .bind(job.delivery_id.clone())
                .bind(order)
                .execute(&p)
                .await?;
                sqlx::query(AssertSqlSafe(K.insert_once(&t.consumed)))
                    .bind(job.delivery_id.clone())
                    .bind(order)
                    .execute(&p)
                    .await?;
                if report {
                    say("applied", order);
                }
                Ok(())
            }

            fn handlers(t: &Tables, report: bool) -> Handlers {
                let tables = t.clone();
                Handlers::new().on(t.job.clone(), move |job: Job| {
                    let t = tables.clone();
                    async move { apply(&t, job, report).await }
                })
            }

            /// Places order `id` (inserting its row, then `then` inside the block) and rolls
            /// it back on purpose when it is one of the rejected; reports the outcome.
            async fn place<F, Fut>(orders: &str, id: i64, then: F)
            where
                F: FnOnce() -> Fut,
                Fut: std::future::Future<Output = Result<(), Outcome>>,
            {
                let db = Handle::<DB>::new(K.alias());
                let insert = K.q(&format!("INSERT INTO {orders} (id) VALUES (?)"));
                let r = Atomic::new()
                    .using(K.alias())
                    .run(async {
                        sqlx::query(AssertSqlSafe(insert)).bind(id).execute(&db).await?;
                        then().await?;
                        if is_rejected(id) {
                            return Err(Outcome::Rejected);
                        }
                        Ok(())
                    })
                    .await;
                match r {
                    Ok(()) => say("committed", id),
                    Err(Outcome::Rejected) => say("rolledback", id),
                    Err(Outcome::Failed(e)) => panic!("order {id} failed: {e}"),
                }
            }

            /// The durable child: orders with an outbox job each, and a relay applying them.
            async fn child_durable(t: Tables, base: i64) {
                let relay = Relay::new(K.alias(), handlers(&t, true)).lease(LEASE).spawn();
                say("ready", 0);
                for id in base..base + MAX_ORDERS {
                    place(&t.orders, id, || async {
                        outbox::enqueue(t.job.clone(), &serde_json::json!({ "order": id }))
                            .using(K.alias())
                            .await?;
                        Ok(())
                    })
                    .await;
                }
                relay.stop().await;
            }

            /// The plain child: orders with an on_commit hook each, applying the order.
            async fn child_plain(t: Tables, base: i64) {
                say("ready", 0);
                for id in base..base + MAX_ORDERS {
                    let table = t.consumed_plain.clone();
                    place(&t.orders_plain, id, || async move {
                        on_commit(move || async move {
                            say("delivering", id);
                            sqlx::query(AssertSqlSafe(K.q(&format!(
                                "INSERT INTO {table} (order_id) VALUES (?)"
                            ))))
                            .bind(id)
                            .execute(&pool())
                            .await?;
                            say("applied", id);
                            Ok::<(), sqlx::Error>(())
                        })
                        .using(K.alias())
                        .await?;
                        Ok(())
                    })
                    .await;
                }
            }

            /// The child process: runs only when the parent started it (with its variables).
            #[test]
            #[ignore = "the child process of the crash test, which starts it"]
            fn child() {
                let Ok(mode) = std::env::var(CHILD_ENV) else {
                    return;
                };
                let var = |name: &str| {
                    std::env::var(name).unwrap_or_else(|_| panic!("the child needs {name}"))
                };
                let url = var(URL_ENV);
                let t = Tables::new(&var(TABLES_ENV));
                let round: i64 = var(ROUND_ENV).parse().expect("a round number");
                let base = (round + 1) * ROUND_IDS;
                child_runtime().block_on(async {
                    Databases::new()
                        .add(K.alias(), K.database(&url, POOL))
                        .install()
                        .expect("installing the child's database");
                    match mode.as_str() {
                        "durable" => child_durable(t, base).await,
                        "plain" => child_plain(t, base).await,
                        other => panic!("unknown child mode {other:?}"),
                    }
                });
            }

            async fn prepare(t: &Tables) {
                outbox::create_table(K.alias()).await.expect("creating the outbox table");
                if K != Kind::Sqlite {
                    // The outbox table is one per database: the run starts from an empty one.
                    exec("DELETE FROM sqlx_atomic_outbox").await;
                }
                for stmt in t.create() {
                    exec(&stmt).await;
                }
            }

            async fn cleanup(t: &Tables) {
                for stmt in t.drop() {
                    exec(&stmt).await;
                }
                sqlx::query(AssertSqlSafe(K.q("DELETE FROM sqlx_atomic_outbox WHERE name = ?")))
                    .bind(t.job.clone())
                    .execute(&pool())
                    .await
                    .expect("deleting the run's jobs");
            }

            /// A relay in a new process (this one) delivers what the killed children left,
            /// until no job of the run is pending.
            async fn drain(t: &Tables) {
                let relay = Relay::new(K.alias(), handlers(t, false)).lease(LEASE);
                let deadline = Instant::now() + DRAIN_LIMIT;
                loop {
                    let handled = relay.run_once().await.expect("the final relay");
                    let pending = count(
                        "SELECT COUNT(*) FROM sqlx_atomic_outbox WHERE name = ? AND state = 0",
                        &t.job,
                    )
                    .await;
                    if handled == 0 && pending == 0 {
                        return;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{pending} jobs still pending {DRAIN_LIMIT:?} after the last kill"
                    );
                    if handled == 0 {
                        // The rest is held by a killed relay until its claim lapses: a SQLite
                        // lease runs out on the clock, a server's row lock when the server sees
                        // the connection closed.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }

            async fn check_durable(t: &Tables) -> Durable {
                let committed: BTreeSet<i64> =
                    ids(&format!("SELECT id FROM {}", t.orders)).await.into_iter().collect();
                let rejected: Vec<&i64> = committed.iter().filter(|id| is_rejected(**id)).collect();
                assert!(rejected.is_empty(), "rolled-back orders are in the table: {rejected:?}");

                // The jobs exist exactly for the committed orders, one each, all delivered.
                let mut job_of: BTreeMap<i64, String> = BTreeMap::new();
                let jobs = sqlx::query_as::<DB, (String, String)>(AssertSqlSafe(K.q(
                    "SELECT delivery_id, payload FROM sqlx_atomic_outbox WHERE name = ?",
                )))
                .bind(t.job.clone())
                .fetch_all(&pool())
                .await
                .expect("reading the run's jobs");
                for (delivery_id, payload) in jobs {
                    let v: serde_json::Value = serde_json::from_str(&payload).expect("JSON");
                    let order = v["order"].as_i64().expect("an order id");
                    if let Some(other) = job_of.insert(order, delivery_id.clone()) {
                        panic!("order {order} has two jobs: {other} and {delivery_id}");
                    }
                }
                same_ids(
                    "the orders with a job (the committed ones, none rolled back)",
                    &job_of.keys().copied().collect(),
                    &committed,
                );
                let undelivered = count(
                    "SELECT COUNT(*) FROM sqlx_atomic_outbox WHERE name = ? AND state <> 1",
                    &t.job,
                )
                .await;
                assert_eq!(undelivered, 0, "jobs left undelivered or dead-lettered");

                // Applied at least once each; once per delivery id, which is the job's.
                let consumed =
                    pairs(&format!("SELECT delivery_id, order_id FROM {}", t.consumed)).await;
                let mut applied: BTreeMap<i64, String> = BTreeMap::new();
                for (delivery_id, order) in &consumed {
                    if let Some(other) = applied.insert(*order, delivery_id.clone()) {
                        panic!("order {order} was applied under two delivery ids: {other} and {delivery_id}");
                    }
                    assert_eq!(
                        job_of.get(order),
                        Some(delivery_id),
                        "order {order} was applied under a delivery id not its job's"
                    );
                }
                let unapplied: BTreeSet<i64> =
                    committed.difference(&applied.keys().copied().collect()).copied().collect();
                same_ids("the applied orders", &applied.keys().copied().collect(), &committed);

                // Every application, duplicates included, is of a committed order's delivery.
                let applications =
                    pairs(&format!("SELECT delivery_id, order_id FROM {}", t.applications)).await;
                for (delivery_id, order) in &applications {
                    assert!(!is_rejected(*order), "rolled-back order {order} was delivered");
                    assert_eq!(
                        applied.get(order),
                        Some(delivery_id),
                        "an application of order {order} under an unknown delivery id"
                    );
                }
                assert!(applications.len() >= consumed.len());
                Durable {
                    committed: committed.len(),
                    unapplied: unapplied.len(),
                    applications: applications.len(),
                    unique: consumed.len(),
                }
            }

            async fn check_plain(t: &Tables) -> Plain {
                let committed: BTreeSet<i64> =
                    ids(&format!("SELECT id FROM {}", t.orders_plain)).await.into_iter().collect();
                let rejected: Vec<&i64> = committed.iter().filter(|id| is_rejected(**id)).collect();
                assert!(rejected.is_empty(), "rolled-back orders are in the table: {rejected:?}");
                let ran = ids(&format!("SELECT order_id FROM {}", t.consumed_plain)).await;
                let ran_once: BTreeSet<i64> = ran.iter().copied().collect();
                assert_eq!(ran_once.len(), ran.len(), "a hook ran twice: hooks are at most once");
                let uncommitted: Vec<&i64> = ran_once.difference(&committed).collect();
                assert!(
                    uncommitted.is_empty(),
                    "hooks ran for orders that were not committed (rolled back, or killed \
                     before the COMMIT): {uncommitted:?}"
                );
                Plain {
                    committed: committed.len(),
                    lost: committed.difference(&ran_once).count(),
                }
            }

            /// Kills a child committing orders with durable jobs at varied points, several
            /// times, then lets one relay finish: every committed order's job is applied, no
            /// rolled-back order's ever is, and the delivery ids make each apply exactly once.
            /// The same kills of a child using on_commit hooks show what hooks lose (printed;
            /// a lucky run loses nothing, so it is not asserted).
            #[test]
            fn sigkill_loses_no_committed_outbox_job() {
                let Some(url) = setup(K) else {
                    return;
                };
                let seed = seed();
                let points = schedule(seed, K as u64, ROUNDS);
                let suffix = unique_suffix(K.alias());
                let t = Tables::new(&suffix);
                if K == Kind::Sqlite {
                    RT.block_on(create_sqlite_file(SQLITE_TAG));
                }
                RT.block_on(prepare(&t));

                let durable_rounds: Vec<Round> = points
                    .iter()
                    .enumerate()
                    .map(|(i, kill)| crash_round(CHILD, Mode::Durable, &url, &suffix, i, *kill))
                    .collect();
                let durable = RT.block_on(async {
                    drain(&t).await;
                    check_durable(&t).await
                });

                let plain_rounds: Vec<Round> = points
                    .iter()
                    .enumerate()
                    .map(|(i, kill)| crash_round(CHILD, Mode::Plain, &url, &suffix, i, *kill))
                    .collect();
                let plain = RT.block_on(check_plain(&t));

                print_report(K, seed, &durable_rounds, &durable, &plain_rounds, &plain);
                assert_eq!(durable.unapplied, 0, "the outbox lost committed jobs");
                assert!(durable.committed > 0, "no order was committed before the kills");
                RT.block_on(cleanup(&t));
                if K == Kind::Sqlite {
                    RT.block_on(pool().close());
                    remove_sqlite_files(SQLITE_TAG);
                }
            }
        }
    };
}

crash_suite!(sqlite, sqlx::Sqlite, Kind::Sqlite);
crash_suite!(postgres, sqlx::Postgres, Kind::Postgres);
crash_suite!(mysql, sqlx::MySql, Kind::MySql);

/// The broker modes, on SQLite: the same kills of a child committing orders with durable jobs,
/// its relay publishing each job to a broker (a Redis stream, a RabbitMQ queue, a NATS JetStream
/// stream) instead of applying it; then a relay in the parent publishes what is left, and the
/// parent reads everything back from the broker with the broker's own client.
mod broker {
    use super::*;
    use futures::StreamExt;
    use sqlx_atomic::outbox::brokers::{Amqp, JetStream, RedisStream, async_nats, lapin, redis};
    use sqlx_atomic::outbox::{Deliver, DeliverFuture};

    type DB = sqlx::Sqlite;
    /// This module's child test, as the harness names it.
    const CHILD: &str = "broker::child";
    /// How long the parent waits for each message as it reads a queue or a stream back.
    const READ_LIMIT: Duration = Duration::from_secs(30);

    fn pool(sink: Sink) -> sqlx::SqlitePool {
        sqlx_atomic::pool::<DB>(sink.alias()).expect("the broker mode's alias is installed")
    }

    async fn exec(sink: Sink, sql: &str) {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(&pool(sink))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn count(sink: Sink, sql: &str, job: &str) -> i64 {
        sqlx::query_scalar::<DB, i64>(AssertSqlSafe(sql.to_owned()))
            .bind(job.to_owned())
            .fetch_one(&pool(sink))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The run's Redis stream, RabbitMQ exchange and queue, NATS stream and subject prefix.
    fn broker_name(suffix: &str) -> String {
        format!("sqlx_atomic_crash_{suffix}")
    }

    /// The adapter publishing the run's jobs to `sink`.
    fn adapter(sink: Sink, name: &str) -> Box<dyn Deliver> {
        let url = sink.url();
        let adapter: Result<Box<dyn Deliver>, _> = match sink {
            Sink::Redis => RedisStream::new(url, name).map(|a| Box::new(a) as Box<dyn Deliver>),
            Sink::Amqp => Amqp::new(url, name).map(|a| Box::new(a) as Box<dyn Deliver>),
            Sink::Nats => JetStream::new(url, name).map(|a| Box::new(a) as Box<dyn Deliver>),
        };
        adapter.unwrap_or_else(|e| panic!("the {} adapter: {e}", sink.name()))
    }

    /// A broker adapter that, in the child, reports each delivery as it starts and once the
    /// broker acknowledged it: the parent's kill points.
    struct Publish {
        adapter: Box<dyn Deliver>,
        report: bool,
    }

    impl Deliver for Publish {
        fn deliver<'a>(&'a self, job: &'a Job) -> DeliverFuture<'a> {
            Box::pin(async move {
                let order = order_of(job)?;
                if self.report {
                    say("delivering", order);
                }
                self.adapter.deliver(job).await?;
                if self.report {
                    say("applied", order);
                }
                Ok(())
            })
        }
    }

    /// Places order `id` with its job, rolling it back on purpose when it is one of the
    /// rejected; reports the outcome.
    async fn place(sink: Sink, t: &Tables, id: i64) {
        let db = Handle::<DB>::new(sink.alias());
        let insert = format!("INSERT INTO {} (id) VALUES (?)", t.orders);
        let r = Atomic::new()
            .using(sink.alias())
            .run(async {
                sqlx::query(AssertSqlSafe(insert))
                    .bind(id)
                    .execute(&db)
                    .await?;
                outbox::enqueue(t.job.clone(), &serde_json::json!({ "order": id }))
                    .using(sink.alias())
                    .await?;
                if is_rejected(id) {
                    return Err(Outcome::Rejected);
                }
                Ok(())
            })
            .await;
        match r {
            Ok(()) => say("committed", id),
            Err(Outcome::Rejected) => say("rolledback", id),
            Err(Outcome::Failed(e)) => panic!("order {id} failed: {e}"),
        }
    }

    /// The child process: runs only when the parent started it (with its variables).
    #[test]
    #[ignore = "the child process of the broker crash tests, which start it"]
    fn child() {
        let Ok(mode) = std::env::var(CHILD_ENV) else {
            return;
        };
        let sink = Sink::from_tag(&mode).unwrap_or_else(|| panic!("unknown child mode {mode:?}"));
        let var =
            |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("the child needs {name}"));
        let url = var(URL_ENV);
        let suffix = var(TABLES_ENV);
        let t = Tables::new(&suffix);
        let round: i64 = var(ROUND_ENV).parse().expect("a round number");
        let base = (round + 1) * ROUND_IDS;
        child_runtime().block_on(async {
            Databases::new()
                .add(sink.alias(), Kind::Sqlite.database(&url, POOL))
                .install()
                .expect("installing the child's database");
            let publish = Publish {
                adapter: adapter(sink, &broker_name(&suffix)),
                report: true,
            };
            let relay = Relay::new(sink.alias(), publish).lease(LEASE).spawn();
            say("ready", 0);
            for id in base..base + MAX_ORDERS {
                place(sink, &t, id).await;
            }
            relay.stop().await;
        });
    }

    /// The parent's client of a broker.
    enum Client {
        Redis(redis::aio::MultiplexedConnection),
        Amqp(lapin::Connection, lapin::Channel),
        Nats(async_nats::jetstream::Context),
    }

    /// The parent's client of `sink` when the broker answers within 10 s. When it does not:
    /// under `CI=true` a panic; otherwise `None`, after saying loudly (past the harness's
    /// capture) that the test is skipped.
    async fn connect(sink: Sink) -> Option<Client> {
        let url = sink.url();
        let connect = async {
            match sink {
                Sink::Redis => {
                    let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
                    let con = client
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(Client::Redis(con))
                }
                Sink::Amqp => {
                    let connection =
                        lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
                            .await
                            .map_err(|e| e.to_string())?;
                    let channel = connection
                        .create_channel()
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(Client::Amqp(connection, channel))
                }
                Sink::Nats => {
                    let client = async_nats::connect(url.as_str())
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(Client::Nats(async_nats::jetstream::new(client)))
                }
            }
        };
        let why = match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(client)) => return Some(client),
            Ok(Err(e)) => e,
            Err(_) => "no answer within 10 s".to_owned(),
        };
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "CI=true and the {} broker does not answer ({why}); set {} or start it \
                 (.ci/brokers)",
                sink.name(),
                sink.env()
            );
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n*** sqlx-atomic crash tests: SKIPPING the {} mode, whose broker does not answer \
             (set {} to a reachable URL or run .ci/brokers; tried it and got: {why}) ***\n",
            sink.name(),
            sink.env()
        );
        None
    }

    /// The run's objects on a broker, created, and removed when dropped (the test failed or
    /// not).
    struct Objects {
        client: Client,
        name: String,
    }

    impl Objects {
        /// Creates what the adapter publishes to: nothing for Redis (`XADD` creates the
        /// stream); a durable topic exchange and a durable queue bound to all of its messages
        /// for RabbitMQ (the publication is mandatory: it must reach a queue); a stream
        /// capturing the run's subjects for NATS.
        async fn create(client: Client, name: String) -> Self {
            use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
            use lapin::types::FieldTable;
            match &client {
                Client::Redis(_) => {}
                Client::Amqp(_, channel) => {
                    channel
                        .exchange_declare(
                            name.as_str().into(),
                            lapin::ExchangeKind::Topic,
                            ExchangeDeclareOptions {
                                durable: true,
                                ..ExchangeDeclareOptions::default()
                            },
                            FieldTable::default(),
                        )
                        .await
                        .expect("declaring the run's exchange");
                    channel
                        .queue_declare(
                            name.as_str().into(),
                            QueueDeclareOptions {
                                durable: true,
                                ..QueueDeclareOptions::default()
                            },
                            FieldTable::default(),
                        )
                        .await
                        .expect("declaring the run's queue");
                    channel
                        .queue_bind(
                            name.as_str().into(),
                            name.as_str().into(),
                            "#".into(),
                            QueueBindOptions::default(),
                            FieldTable::default(),
                        )
                        .await
                        .expect("binding the run's queue");
                }
                Client::Nats(js) => {
                    js.create_stream(async_nats::jetstream::stream::Config {
                        name: name.clone(),
                        subjects: vec![format!("{name}.>")],
                        ..Default::default()
                    })
                    .await
                    .expect("creating the run's stream");
                }
            }
            Objects { client, name }
        }

        /// Every message the broker holds, as `(delivery id, order id)`, duplicates included.
        async fn read_all(&mut self) -> Vec<(String, i64)> {
            let order = |payload: &[u8]| -> i64 {
                let v: serde_json::Value = serde_json::from_slice(payload).expect("JSON");
                v["order"].as_i64().expect("an order id")
            };
            let name = self.name.as_str();
            match &mut self.client {
                Client::Redis(con) => {
                    let entries: redis::streams::StreamRangeReply =
                        redis::AsyncCommands::xrange_all(con, name)
                            .await
                            .expect("reading the run's stream");
                    entries
                        .ids
                        .iter()
                        .map(|e| {
                            let id: String = e.get("delivery_id").expect("a delivery_id field");
                            let payload: String = e.get("payload").expect("a payload field");
                            (id, order(payload.as_bytes()))
                        })
                        .collect()
                }
                Client::Amqp(_, channel) => {
                    use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
                    use lapin::types::FieldTable;
                    // Confirmed means enqueued: the queue holds every publication.
                    let ready = channel
                        .queue_declare(
                            name.into(),
                            QueueDeclareOptions {
                                passive: true,
                                ..QueueDeclareOptions::default()
                            },
                            FieldTable::default(),
                        )
                        .await
                        .expect("the run's queue")
                        .message_count();
                    let mut consumer = channel
                        .basic_consume(
                            name.into(),
                            "".into(),
                            BasicConsumeOptions {
                                no_ack: true,
                                ..BasicConsumeOptions::default()
                            },
                            FieldTable::default(),
                        )
                        .await
                        .expect("consuming the run's queue");
                    let mut out = Vec::new();
                    for i in 0..ready {
                        let delivery = tokio::time::timeout(READ_LIMIT, consumer.next())
                            .await
                            .unwrap_or_else(|_| panic!("message {i} of {ready} not received"))
                            .expect("the consumer ended")
                            .expect("a message");
                        let id = delivery
                            .properties
                            .message_id()
                            .as_ref()
                            .expect("a message_id")
                            .to_string();
                        out.push((id, order(&delivery.data)));
                    }
                    out
                }
                Client::Nats(js) => {
                    use async_nats::jetstream::consumer;
                    let mut stream = js.get_stream(name).await.expect("the run's stream");
                    let stored = stream
                        .info()
                        .await
                        .expect("the stream's state")
                        .state
                        .messages;
                    let reader = stream
                        .create_consumer(consumer::pull::Config {
                            ack_policy: consumer::AckPolicy::Explicit,
                            ..Default::default()
                        })
                        .await
                        .expect("a consumer of the run's stream");
                    let mut messages = reader.messages().await.expect("the stream's messages");
                    let mut out = Vec::new();
                    for i in 0..stored {
                        let message = tokio::time::timeout(READ_LIMIT, messages.next())
                            .await
                            .unwrap_or_else(|_| panic!("message {i} of {stored} not received"))
                            .expect("the consumer ended")
                            .expect("a message");
                        let id = message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get("Nats-Msg-Id"))
                            .expect("a Nats-Msg-Id header")
                            .as_str()
                            .to_owned();
                        out.push((id, order(&message.payload)));
                        message.ack().await.expect("acknowledging a message");
                    }
                    out
                }
            }
        }

        /// Removes the run's objects from the broker; says on stderr what could not be
        /// removed (a failed test is already failing, and must not panic again).
        async fn remove(&mut self) {
            use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
            let name = self.name.as_str();
            let failed: Vec<String> = match &mut self.client {
                Client::Redis(con) => {
                    let r: Result<usize, _> = redis::AsyncCommands::del(con, name).await;
                    r.err()
                        .map(|e| format!("the stream: {e}"))
                        .into_iter()
                        .collect()
                }
                Client::Amqp(connection, channel) => {
                    let queue = channel
                        .queue_delete(name.into(), QueueDeleteOptions::default())
                        .await
                        .err()
                        .map(|e| format!("the queue: {e}"));
                    let exchange = channel
                        .exchange_delete(name.into(), ExchangeDeleteOptions::default())
                        .await
                        .err()
                        .map(|e| format!("the exchange: {e}"));
                    let _ = connection.close(200, "done".into()).await;
                    queue.into_iter().chain(exchange).collect()
                }
                Client::Nats(js) => js
                    .delete_stream(name)
                    .await
                    .err()
                    .map(|e| format!("the stream: {e}"))
                    .into_iter()
                    .collect(),
            };
            for what in failed {
                let _ = writeln!(
                    std::io::stderr(),
                    "sqlx-atomic crash tests: could not remove {what} ({name})"
                );
            }
        }
    }

    impl Drop for Objects {
        fn drop(&mut self) {
            RT.block_on(self.remove());
        }
    }

    async fn prepare(sink: Sink, t: &Tables) {
        outbox::create_table(sink.alias())
            .await
            .expect("creating the outbox table");
        for stmt in t.create() {
            exec(sink, &stmt).await;
        }
    }

    /// A relay in a new process (this one) publishes what the killed children left, until no
    /// job of the run is pending.
    async fn drain(sink: Sink, t: &Tables, name: &str) {
        let publish = Publish {
            adapter: adapter(sink, name),
            report: false,
        };
        let relay = Relay::new(sink.alias(), publish).lease(LEASE);
        let deadline = Instant::now() + DRAIN_LIMIT;
        loop {
            let handled = relay.run_once().await.expect("the final relay");
            let pending = count(
                sink,
                "SELECT COUNT(*) FROM sqlx_atomic_outbox WHERE name = ? AND state = 0",
                &t.job,
            )
            .await;
            if handled == 0 && pending == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{pending} jobs still pending {DRAIN_LIMIT:?} after the last kill"
            );
            if handled == 0 {
                // The rest is held by a killed relay until its SQLite lease runs out.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// What a broker mode left, checked.
    #[derive(Debug)]
    struct Published {
        committed: usize,
        lost: usize,
        messages: usize,
        unique: usize,
    }

    async fn check(sink: Sink, t: &Tables, objects: &mut Objects) -> Published {
        let committed: BTreeSet<i64> =
            sqlx::query_scalar::<DB, i64>(AssertSqlSafe(format!("SELECT id FROM {}", t.orders)))
                .fetch_all(&pool(sink))
                .await
                .expect("reading the run's orders")
                .into_iter()
                .collect();
        let rejected: Vec<&i64> = committed.iter().filter(|id| is_rejected(**id)).collect();
        assert!(
            rejected.is_empty(),
            "rolled-back orders are in the table: {rejected:?}"
        );

        // The jobs exist exactly for the committed orders, one each, all delivered.
        let mut job_of: BTreeMap<i64, String> = BTreeMap::new();
        let jobs = sqlx::query_as::<DB, (String, String)>(AssertSqlSafe(
            "SELECT delivery_id, payload FROM sqlx_atomic_outbox WHERE name = ?",
        ))
        .bind(t.job.clone())
        .fetch_all(&pool(sink))
        .await
        .expect("reading the run's jobs");
        for (delivery_id, payload) in jobs {
            let v: serde_json::Value = serde_json::from_str(&payload).expect("JSON");
            let order = v["order"].as_i64().expect("an order id");
            if let Some(other) = job_of.insert(order, delivery_id.clone()) {
                panic!("order {order} has two jobs: {other} and {delivery_id}");
            }
        }
        same_ids(
            "the orders with a job (the committed ones, none rolled back)",
            &job_of.keys().copied().collect(),
            &committed,
        );
        let undelivered = count(
            sink,
            "SELECT COUNT(*) FROM sqlx_atomic_outbox WHERE name = ? AND state <> 1",
            &t.job,
        )
        .await;
        assert_eq!(undelivered, 0, "jobs left undelivered or dead-lettered");

        // Every message is a committed order's job, under that job's delivery id; each job
        // reached the broker at least once.
        let messages = objects.read_all().await;
        let mut reached: BTreeMap<i64, &str> = BTreeMap::new();
        for (delivery_id, order) in &messages {
            assert!(
                !is_rejected(*order),
                "rolled-back order {order} reached the broker"
            );
            assert_eq!(
                job_of.get(order),
                Some(delivery_id),
                "order {order} reached the broker under a delivery id not its job's"
            );
            reached.insert(*order, delivery_id);
        }
        let lost = committed
            .iter()
            .filter(|o| !reached.contains_key(o))
            .count();
        same_ids(
            &format!("the orders whose job reached the {}", sink.name()),
            &reached.keys().copied().collect(),
            &committed,
        );
        let unique: BTreeSet<&String> = messages.iter().map(|(id, _)| id).collect();
        Published {
            committed: committed.len(),
            lost,
            messages: messages.len(),
            unique: unique.len(),
        }
    }

    fn print_report(sink: Sink, seed: u64, rounds: &[Round], p: &Published) {
        let name = format!("SQLite -> {}", sink.name());
        let mut out =
            format!("\n[{name}] seed {seed} ({SEED_ENV}={seed} replays these kill points)\n");
        for (i, r) in rounds.iter().enumerate() {
            out.push_str(&format!(
                "[{name}] outbox round {i}: killed {}: {} orders committed, {} publications started\n",
                r.kill, r.committed, r.delivering
            ));
        }
        let by = match sink {
            Sink::Redis => "its field `delivery_id`",
            Sink::Amqp => "its `message_id`",
            Sink::Nats => {
                "its `Nats-Msg-Id` (JetStream itself drops a duplicate within its window)"
            }
        };
        out.push_str(&format!(
            "[{name}] outbox lost {} of {} jobs; {} messages of {} unique deliveries: {} \
             duplicates, each told apart by {by}\n",
            p.lost,
            p.committed,
            p.messages,
            p.unique,
            p.messages - p.unique
        ));
        println!("{out}");
    }

    /// Kills a child publishing its committed orders' jobs to `sink` at varied points, several
    /// times, then lets one relay finish: every committed order's job reaches the broker at
    /// least once, no rolled-back order's ever does, under the job's delivery id.
    fn sigkill_loses_no_job_on_the_way_to(sink: Sink) {
        // Installs the databases, the broker modes' among them.
        assert!(setup(Kind::Sqlite).is_some(), "SQLite is always available");
        let Some(client) = RT.block_on(connect(sink)) else {
            return;
        };
        let seed = seed();
        let points = schedule(seed, 3 + sink as u64, BROKER_ROUNDS);
        let suffix = unique_suffix(sink.alias());
        let t = Tables::new(&suffix);
        let url = sqlite_url(sink.tag());
        let mut objects = RT.block_on(async {
            create_sqlite_file(sink.tag()).await;
            prepare(sink, &t).await;
            Objects::create(client, broker_name(&suffix)).await
        });

        let rounds: Vec<Round> = points
            .iter()
            .enumerate()
            .map(|(i, kill)| crash_round(CHILD, Mode::Broker(sink), &url, &suffix, i, *kill))
            .collect();
        let published = RT.block_on(async {
            drain(sink, &t, &objects.name).await;
            check(sink, &t, &mut objects).await
        });
        print_report(sink, seed, &rounds, &published);
        assert_eq!(published.lost, 0, "the outbox lost committed jobs");
        assert!(
            published.committed > 0,
            "no order was committed before the kills"
        );
        drop(objects);
        RT.block_on(pool(sink).close());
        remove_sqlite_files(sink.tag());
    }

    #[test]
    fn sigkill_loses_no_job_on_the_way_to_a_redis_stream() {
        sigkill_loses_no_job_on_the_way_to(Sink::Redis);
    }

    #[test]
    fn sigkill_loses_no_job_on_the_way_to_a_rabbitmq_queue() {
        sigkill_loses_no_job_on_the_way_to(Sink::Amqp);
    }

    #[test]
    fn sigkill_loses_no_job_on_the_way_to_nats_jetstream() {
        sigkill_loses_no_job_on_the_way_to(Sink::Nats);
    }
}
