//! The test harness: one process-wide runtime, the databases by alias, a table per test, a hook
//! log, and the server-side checks that no pooled connection is left inside a transaction.
#![allow(dead_code)]

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use sqlx_atomic::{Database, Databases};

/// The backends the suite runs on: SQLite, PostgreSQL and MariaDB, and two deployments of the
/// servers: PostgreSQL through pgbouncer in transaction pooling mode (aliases in
/// transaction-pooling mode) and one node of a MariaDB Galera cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
    PgBouncer,
    Galera,
}

impl Backend {
    /// The database this backend speaks: PostgreSQL behind pgbouncer is PostgreSQL, a Galera
    /// node is MariaDB.
    pub fn kind(self) -> Backend {
        match self {
            Backend::PgBouncer => Backend::Postgres,
            Backend::Galera => Backend::MySql,
            b => b,
        }
    }

    /// The alias the suite uses for this backend.
    pub fn alias(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "pg",
            Backend::MySql => "my",
            Backend::PgBouncer => "pgb",
            Backend::Galera => "gal",
        }
    }

    /// A second alias of the same backend, with a pool of one connection.
    pub fn single(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite1",
            Backend::Postgres => "pg1",
            Backend::MySql => "my1",
            Backend::PgBouncer => "pgb1",
            Backend::Galera => "gal1",
        }
    }

    /// An alias of this backend with a pool of 4, for tests that kill connections.
    pub fn faults(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite_faults",
            Backend::Postgres => "pg_faults",
            Backend::MySql => "my_faults",
            Backend::PgBouncer => "pgb_faults",
            Backend::Galera => "gal_faults",
        }
    }

    /// An alias of a server with a pool of 4 whose idle connections one test ends from the
    /// server's side (its own, so that it ends no other test's connections).
    pub fn idle_faults(self) -> &'static str {
        match self {
            Backend::Sqlite => panic!("SQLite connections cannot be ended from outside"),
            Backend::Postgres => "pg_idle_faults",
            Backend::MySql => "my_idle_faults",
            Backend::PgBouncer => "pgb_idle_faults",
            Backend::Galera => "gal_idle_faults",
        }
    }

    /// An alias of this backend with a pool of 10, for load tests.
    pub fn ten(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite10",
            Backend::Postgres => "pg10",
            Backend::MySql => "my10",
            Backend::PgBouncer => "pgb10",
            Backend::Galera => "gal10",
        }
    }

    /// The URL of this backend's server: its environment variable, or the default.
    pub fn url(self) -> String {
        // The Galera variable lists the cluster's nodes; the suite runs against the first.
        std::env::var(self.env())
            .ok()
            .and_then(|v| v.split(',').next().map(str::to_owned))
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| self.default_url().to_owned())
    }

    fn env(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => "SQLX_ATOMIC_TEST_POSTGRES_URL",
            Backend::MySql => "SQLX_ATOMIC_TEST_MYSQL_URL",
            Backend::PgBouncer => "SQLX_ATOMIC_TEST_PGBOUNCER_URL",
            Backend::Galera => "SQLX_ATOMIC_TEST_GALERA_URLS",
        }
    }

    pub fn default_url(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => "postgres://postgres@127.0.0.1:5432/test",
            Backend::MySql => "mysql://root@127.0.0.1:3306/test",
            Backend::PgBouncer => "postgres://postgres@127.0.0.1:6432/test",
            Backend::Galera => "mysql://root@127.0.0.1:3311/test",
        }
    }
}

/// One runtime for the whole test binary: pools hold sockets registered with it.
pub static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_stack_size(8 << 20)
        .enable_all()
        .build()
        .expect("runtime")
});

struct Setup {
    available: Vec<Backend>,
}

static SETUP: OnceLock<Setup> = OnceLock::new();

fn sqlite_path(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("sqlx-atomic-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{name}.db"));
    format!("sqlite://{}?mode=rwc", path.display())
}

/// The SQLite files already switched to WAL in this process.
static WAL_FILES: tokio::sync::Mutex<Vec<String>> = tokio::sync::Mutex::const_new(Vec::new());

/// A pool of `max` connections to the suite's SQLite file `name` (per process).
///
/// The file is switched to WAL once, by one connection, before any pool opens it: switching a
/// file into WAL takes an exclusive lock that `busy_timeout` does not wait for, so pools whose
/// first connections race to set `journal_mode = WAL` on a new file fail now and then with
/// "database is locked" (seen in CI; about 1 run in 30 with four connections racing). WAL is
/// kept in the file, so the pools' own connections do not set it again.
pub async fn sqlite_db(name: &str, max: u32) -> Database {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    use sqlx::{ConnectOptions, Connection};
    use std::str::FromStr;
    let opts = SqliteConnectOptions::from_str(&sqlite_path(name))
        .expect("sqlite url")
        .busy_timeout(Duration::from_secs(60));
    {
        let mut done = WAL_FILES.lock().await;
        if !done.iter().any(|n| n == name) {
            let conn = opts
                .clone()
                .journal_mode(SqliteJournalMode::Wal)
                .connect()
                .await
                .expect("switching the test database to WAL");
            conn.close()
                .await
                .expect("closing the WAL setup connection");
            done.push(name.to_owned());
        }
    }
    let pool = SqlitePoolOptions::new()
        .max_connections(max)
        .connect_lazy_with(opts);
    // Writers take the lock at BEGIN, so parallel tests queue instead of failing with BUSY_SNAPSHOT.
    // As for the pools sqlx-atomic builds, a transaction's BEGIN tests its idle connection.
    Database::from_pool(pool)
        .begin_statement("BEGIN IMMEDIATE")
        .atomic_requests(name == "main")
        .test_with_begin(true)
}

/// Whether a connection to `url` opens within 5 s.
pub async fn reachable(b: Backend, url: &str) -> Result<(), String> {
    let t = Duration::from_secs(5);
    let r = match b {
        Backend::Postgres | Backend::PgBouncer => {
            tokio::time::timeout(t, async {
                use sqlx::ConnectOptions;
                pg_options(b, url)?.connect().await.map(drop)
            })
            .await
        }
        Backend::MySql | Backend::Galera => {
            tokio::time::timeout(t, async {
                use sqlx::Connection;
                sqlx::MySqlConnection::connect(url).await.map(drop)
            })
            .await
        }
        _ => return Ok(()),
    };
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

fn setup() -> &'static Setup {
    SETUP.get_or_init(|| {
        RT.block_on(async {
            let (dbs, available) = configure().await;
            dbs.install().expect("install");
            Setup { available }
        })
    })
}

/// The suite's databases, not installed, and the backends they include: SQLite always, and each
/// server whose [`server_url`] answers.
pub async fn configure() -> (Databases, Vec<Backend>) {
    let mut dbs = Databases::new()
        .add("sqlite", sqlite_db("main", 8).await)
        .add("sqlite1", sqlite_db("main", 1).await)
        .add("sqlite_busy", {
            use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
            use std::str::FromStr;
            let opts = SqliteConnectOptions::from_str(&sqlite_path("main"))
                .expect("sqlite url")
                .busy_timeout(Duration::from_millis(100));
            Database::from_pool(
                SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_lazy_with(opts),
            )
        })
        .add("default", sqlite_db("default", 4).await)
        .add("other", sqlite_db("other", 4).await)
        .add("sqlite_faults", sqlite_db("main", 4).await)
        .add("sqlite10", sqlite_db("main", 10).await);
    let mut available = vec![Backend::Sqlite];
    for b in [
        Backend::Postgres,
        Backend::MySql,
        Backend::PgBouncer,
        Backend::Galera,
    ] {
        if let Some(url) = server_url(b).await {
            dbs = dbs
                .add(b.alias(), server_db(b, &url, 16).atomic_requests(true))
                // One alias per server keeps sqlx's own test (a ping) on each acquire.
                .add(b.single(), server_db(b, &url, 1).test_with_begin(false))
                .add(format!("{}_count", b.alias()), server_db(b, &url, 1))
                .add(format!("{}10", b.alias()), server_db(b, &url, 10))
                .add(format!("{}_faults", b.alias()), server_db(b, &url, 4))
                .add(b.idle_faults(), server_db(b, &url, 4));
            available.push(b);
        }
    }
    (dbs, available)
}

/// The URL of the server of `b` (PostgreSQL or MariaDB) when it answers. When it does not: with
/// `CI=true`, a panic; otherwise `None`, after saying loudly (past the harness's capture) that the
/// backend's tests are skipped.
pub async fn server_url(b: Backend) -> Option<String> {
    let url = b.url();
    let why = match reachable(b, &url).await {
        Ok(()) => return Some(url),
        Err(why) => why,
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true and the {b:?} server does not answer ({why}); set {} or start it",
            b.env()
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** sqlx-atomic tests: SKIPPING {b:?}, whose server does not answer (set {} to a \
         reachable URL; tried it and got: {why}) ***\n",
        b.env()
    );
    None
}

/// A pool of `max` connections to the server of `b` at `url`, connecting on first use; as for the
/// pools sqlx-atomic builds, a transaction's BEGIN tests its idle connection.
pub fn server_db(b: Backend, url: &str, max: u32) -> Database {
    let db = match b {
        Backend::Postgres | Backend::PgBouncer => Database::from_pool(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(max)
                .connect_lazy_with(pg_options(b, url).expect("postgres url")),
        )
        .transaction_pooling(b == Backend::PgBouncer),
        Backend::MySql | Backend::Galera => Database::from_pool(
            sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(max)
                .connect_lazy(url)
                .expect("mysql url"),
        ),
        _ => panic!("server_db is for PostgreSQL and MariaDB"),
    };
    db.test_with_begin(true)
}

/// The connect options of a PostgreSQL URL; through pgbouncer without the startup parameter
/// it refuses by default.
fn pg_options(b: Backend, url: &str) -> Result<sqlx::postgres::PgConnectOptions, sqlx::Error> {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
    Ok(if b == Backend::PgBouncer {
        options.extra_float_digits(None)
    } else {
        options
    })
}

/// Waits until every connection of `alias`'s pool is back and idle: a connection goes back to
/// the pool in the background (sqlx pings it first, sending a queued ROLLBACK with the ping).
/// It checks the pool's own count, yielding at first and then once a millisecond so that a
/// loaded machine's background work gets the CPU, and fails after 30 s.
pub async fn settle<DB: sqlx_atomic::Backend>(alias: &str) {
    let pool = sqlx_atomic::pool::<DB>(alias).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for round in 0u32.. {
        if pool.num_idle() as u32 == pool.size() {
            return;
        }
        if std::time::Instant::now() > deadline {
            break;
        }
        if round < 1_000 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    panic!(
        "the pool of {alias} did not settle in 30 s: {} idle of {}",
        pool.num_idle(),
        pool.size()
    );
}

/// Runs a test body on a backend, or skips it (loudly, once) when its server is not available.
pub fn run<F, Fut>(b: Backend, f: F)
where
    F: FnOnce(Fx) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let s = setup();
    if !s.available.contains(&b) {
        return;
    }
    // On a worker thread (8 MiB stacks): debug-build futures are large.
    let task = RT.spawn(async move {
        let t0 = std::time::Instant::now();
        let fx = Fx::new(b).await;
        let t1 = t0.elapsed();
        f(fx.clone()).await;
        let t2 = t0.elapsed();
        fx.assert_pool_clean(b.alias()).await;
        let t3 = t0.elapsed();
        fx.drop_table().await;
        if std::env::var("SQLX_ATOMIC_TEST_TIMING").is_ok() {
            eprintln!(
                "TIMING new {t1:?} body {t2:?} clean {t3:?} drop {:?}",
                t0.elapsed()
            );
        }
    });
    if let Err(e) = RT.block_on(task) {
        match e.try_into_panic() {
            // Re-raised on the test thread, so the harness shows the message (a worker thread's
            // own panic output goes to whichever test first started the runtime).
            Ok(p) => panic!("{}", panic_message(&*p)),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A test's fixture: its own table and hook log.
#[derive(Clone)]
pub struct Fx {
    pub backend: Backend,
    pub alias: &'static str,
    pub table: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Fx {
    /// A fixture with a new table, created outside any transaction.
    pub async fn new(backend: Backend) -> Fx {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let table = format!("t_{}_{}_{}", std::process::id(), n, nanos);
        let fx = Fx {
            backend,
            alias: backend.alias(),
            table,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        fx.raw(&format!("CREATE TABLE {} (v INTEGER NOT NULL)", fx.table))
            .await;
        fx
    }

    /// Runs a statement on a fresh pooled connection, outside any context.
    pub async fn raw(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.backend {
            Backend::Sqlite => {
                let p = sqlx_atomic::pool::<sqlx::Sqlite>(self.alias).unwrap();
                sqlx::raw_sql(sql).execute(&p).await.unwrap();
            }
            Backend::Postgres | Backend::PgBouncer => {
                let p = sqlx_atomic::pool::<sqlx::Postgres>(self.alias).unwrap();
                sqlx::raw_sql(sql).execute(&p).await.unwrap();
            }
            Backend::MySql | Backend::Galera => {
                let p = sqlx_atomic::pool::<sqlx::MySql>(self.alias).unwrap();
                sqlx::raw_sql(sql).execute(&p).await.unwrap();
            }
        }
    }

    /// The values in the table, read from a fresh connection outside any transaction.
    pub async fn committed(&self) -> Vec<i64> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT CAST(v AS {}) FROM {} ORDER BY v",
            self.bigint(),
            self.table
        ));
        match self.backend {
            Backend::Sqlite => {
                let p = sqlx_atomic::pool::<sqlx::Sqlite>(self.alias).unwrap();
                sqlx::query_scalar(sql).fetch_all(&p).await.unwrap()
            }
            Backend::Postgres | Backend::PgBouncer => {
                // The simple protocol (one message) reads correctly through a transaction pooler
                // too, where a prepared statement would not.
                let p = sqlx_atomic::pool::<sqlx::Postgres>(self.alias).unwrap();
                let rows = sqlx::raw_sql(sql).fetch_all(&p).await.unwrap();
                rows.iter()
                    .map(|r| sqlx::Row::get::<i64, _>(r, 0))
                    .collect()
            }
            Backend::MySql | Backend::Galera => {
                let p = sqlx_atomic::pool::<sqlx::MySql>(self.alias).unwrap();
                sqlx::query_scalar(sql).fetch_all(&p).await.unwrap()
            }
        }
    }

    /// PostgreSQL: a parent table and a child table whose foreign key is checked only at
    /// COMMIT, so inserting an orphan child makes COMMIT itself fail. Returns (parent, child);
    /// dropped by [`drop_deferred`](Self::drop_deferred).
    pub async fn deferred_fk(&self) -> (String, String) {
        let p = format!("{}_p", self.table);
        let c = format!("{}_c", self.table);
        self.raw(&format!("CREATE TABLE {p} (id INT PRIMARY KEY)"))
            .await;
        self.raw(&format!(
            "CREATE TABLE {c} (pid INT REFERENCES {p}(id) DEFERRABLE INITIALLY DEFERRED)"
        ))
        .await;
        (p, c)
    }

    /// Drops the tables of [`deferred_fk`](Self::deferred_fk).
    pub async fn drop_deferred(&self, (p, c): (String, String)) {
        self.raw(&format!("DROP TABLE {c}; DROP TABLE {p}")).await;
    }

    fn bigint(&self) -> &'static str {
        match self.backend {
            Backend::MySql | Backend::Galera => "SIGNED",
            _ => "BIGINT",
        }
    }

    /// A hook that appends `name` to the log.
    pub fn hook(&self, name: &str) -> impl FnOnce() + Send + 'static {
        let log = self.log.clone();
        let name = name.to_owned();
        move || log.lock().unwrap().push(name)
    }

    /// The hooks that ran, in order.
    pub fn ran(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Drops the fixture's table.
    pub async fn drop_table(&self) {
        self.raw(&format!("DROP TABLE {}", self.table)).await;
    }

    /// Rule 7.3: every idle pooled connection of `alias` is outside any transaction, as the server
    /// sees it.
    pub async fn assert_pool_clean(&self, alias: &str) {
        match self.backend {
            Backend::Postgres | Backend::PgBouncer => {
                let p = sqlx_atomic::pool::<sqlx::Postgres>(alias).unwrap();
                let mut held = Vec::new();
                while let Some(mut c) = p.try_acquire() {
                    // Simple protocol, one statement: outside a transaction it starts its own,
                    // so the transaction started with this query (also through a transaction
                    // pooler, which keeps a client inside a transaction on its server
                    // connection).
                    let row = sqlx::raw_sql("SELECT (now() = statement_timestamp())::int")
                        .fetch_one(&mut *c)
                        .await
                        .unwrap();
                    let clean = sqlx::Row::get::<i32, _>(&row, 0) == 1;
                    assert!(
                        clean,
                        "a pooled PostgreSQL connection is idle in transaction"
                    );
                    held.push(c);
                }
            }
            Backend::MySql | Backend::Galera => {
                let p = sqlx_atomic::pool::<sqlx::MySql>(alias).unwrap();
                let mut held = Vec::new();
                while let Some(mut c) = p.try_acquire() {
                    let in_tx: i64 = sqlx::query_scalar("SELECT CAST(@@in_transaction AS SIGNED)")
                        .fetch_one(&mut *c)
                        .await
                        .unwrap();
                    assert_eq!(
                        in_tx, 0,
                        "a pooled MariaDB connection is inside a transaction"
                    );
                    held.push(c);
                }
            }
            _ => {
                let p = sqlx_atomic::pool::<sqlx::Sqlite>(alias).unwrap();
                let mut held = Vec::new();
                while let Some(mut c) = p.try_acquire() {
                    // BEGIN fails inside a transaction.
                    let began = sqlx::raw_sql("BEGIN").execute(&mut *c).await;
                    assert!(
                        began.is_ok(),
                        "a pooled SQLite connection is inside a transaction"
                    );
                    sqlx::raw_sql("ROLLBACK").execute(&mut *c).await.unwrap();
                    held.push(c);
                }
            }
        }
    }
}
