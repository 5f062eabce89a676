//! Read replicas with read-your-writes (docs/semantics.md §12) on a real PostgreSQL streaming
//! replica of the local server (`.ci/replica start`; `SQLX_ATOMIC_TEST_REPLICA_URL` points at it),
//! with its WAL replay paused and resumed by the tests (`pg_wal_replay_pause()`).
//!
//! Aliases, all on the same primary: `replicated` (its replica from the URL parameter, the default
//! 100 ms bound), `patient` (its replica from code, a 30 s bound, its own application name on the
//! replica), `counted` (for the statement counts: a cache of its own), `requested` (with
//! per-request transactions), `down` (a replica on a port where nothing listens), `single` (a
//! primary pool of one connection), and `plain` (no replica). The tests run one at a time: pausing replay is visible to all of them.

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::RT;
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx_atomic::{
    Atomic, CommitPosition, Database, Databases, Error, ErrorKind, RecordedStatement, Scope,
    commit_position, postgres, read_at, using,
};

const ENV: &str = "SQLX_ATOMIC_TEST_REPLICA_URL";
const COMMIT_AND_POSITION: &str = "SELECT pg_current_xact_id_if_assigned() IS NOT NULL; COMMIT; \
                                   SELECT pg_current_wal_insert_lsn()::text";
const POSITION: &str = "SELECT pg_current_wal_insert_lsn()::text";
const REPLAYED: &str = "SELECT pg_last_wal_replay_lsn()::text";
/// The application name of the `patient` alias's replica connections.
const PATIENT: &str = "sqlx_atomic_patient";

struct Setup {
    /// The replica itself, for pausing and resuming replay and reading how far it got.
    replica: PgPool,
    /// How the replica shows in logs and recorded statements.
    replica_shown: String,
}

/// What the library logged (target `sqlx_atomic`, INFO and above) since the binary started.
static LOGS: Mutex<String> = Mutex::new(String::new());

struct Captured;

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged_lines(containing: &[&str]) -> Vec<String> {
    LOGS.lock()
        .unwrap()
        .lines()
        .filter(|l| containing.iter().all(|c| l.contains(c)))
        .map(str::to_owned)
        .collect()
}

fn encode(s: &str) -> String {
    s.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// Installs the aliases once; `None` (after saying so loudly) when the primary or its replica
/// does not answer, a failure under `CI=true`.
fn setup() -> Option<&'static Setup> {
    static SETUP: OnceLock<Option<Setup>> = OnceLock::new();
    SETUP
        .get_or_init(|| {
            RT.block_on(async {
                let primary = common::server_url(common::Backend::Postgres).await?;
                let url = std::env::var(ENV)
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/test".into());
                let probe = async {
                    let pool = PgPoolOptions::new()
                        .max_connections(2)
                        .acquire_timeout(Duration::from_secs(5))
                        .connect(&url)
                        .await
                        .map_err(|e| e.to_string())?;
                    let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                        .fetch_one(&pool)
                        .await
                        .map_err(|e| e.to_string())?;
                    if !standby {
                        return Err("it answers but is not in recovery".to_owned());
                    }
                    Ok(pool)
                };
                let replica = match probe.await {
                    Ok(pool) => pool,
                    Err(why) => {
                        assert!(
                            std::env::var("CI").as_deref() != Ok("true"),
                            "CI=true and the replica at {url} is not usable ({why}): run \
                             `.ci/replica start` and set {ENV}"
                        );
                        let _ = writeln!(
                            std::io::stderr(),
                            "\n*** sqlx-atomic tests: SKIPPING read replicas ({url}: {why}; start \
                             one with .ci/replica start) ***\n"
                        );
                        return None;
                    }
                };
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new("sqlx_atomic=info"))
                    .with_writer(|| Captured)
                    .with_ansi(false)
                    .try_init()
                    .expect("the only subscriber of this binary");
                let down_port = {
                    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    listener.local_addr().unwrap().port()
                };
                let lazy = |u: &str| Database::connect_lazy(u).unwrap();
                Databases::new()
                    .add(
                        "replicated",
                        lazy(&with_param(
                            &primary,
                            &format!("atomic_replica={}", encode(&url)),
                        )),
                    )
                    .add(
                        "patient",
                        lazy(&primary)
                            .read_replica(lazy(&with_param(
                                &url,
                                &format!("application_name={PATIENT}&atomic_max_connections=8"),
                            )))
                            .replica_wait(Duration::from_secs(30)),
                    )
                    .add(
                        "counted",
                        lazy(&primary)
                            .read_replica(lazy(&url))
                            .replica_wait(Duration::from_secs(30)),
                    )
                    .add(
                        "requested",
                        lazy(&primary)
                            .read_replica(lazy(&url))
                            .atomic_requests(true),
                    )
                    .add(
                        "down",
                        lazy(&primary).read_replica(lazy(&format!(
                            "postgres://postgres:hunter2@127.0.0.1:{down_port}/test"
                        ))),
                    )
                    .add(
                        "single",
                        lazy(&with_param(&primary, "atomic_max_connections=1"))
                            .read_replica(lazy(&url)),
                    )
                    .add("plain", lazy(&primary))
                    .install()
                    .unwrap();
                Some(Setup {
                    replica,
                    replica_shown: shown(&url),
                })
            })
        })
        .as_ref()
}

/// `postgres://user@host:port/database` of a URL, as the library shows a replica.
fn shown(url: &str) -> String {
    let o: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    format!(
        "postgres://{}@{}:{}/{}",
        o.get_username(),
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap_or("")
    )
}

/// One test at a time: paused replay is seen by every alias.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs a test body in a task of its own (as application code runs), one test at a time.
fn replica_test<F, Fut>(body: F)
where
    F: FnOnce(&'static Setup) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(s) = setup() else { return };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let task = RT.spawn(body(s));
    if let Err(e) = RT.block_on(task) {
        match e.try_into_panic() {
            Ok(p) => panic!("{}", common::panic_message(&*p)),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

/// Runs `fut` in a fresh task: one that has written nothing, so has no position to wait for.
async fn fresh<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    tokio::spawn(fut).await.unwrap()
}

/// Runs `body` with the replica's WAL replay paused, and resumes it afterwards, also when `body`
/// fails.
async fn paused<Fut>(s: &'static Setup, body: Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&s.replica)
        .await
        .unwrap();
    let outcome = tokio::spawn(body).await;
    resume(s).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn resume(s: &Setup) {
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&s.replica)
        .await
        .unwrap();
}

async fn lsn(pool: &PgPool, sql: &'static str) -> u64 {
    let text: String = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
    text.parse::<CommitPosition>().unwrap().lsn()
}

/// Until the replica has replayed `target`, within 30 s.
async fn replayed_to(s: &Setup, target: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lsn(&s.replica, "SELECT pg_last_wal_replay_lsn()::text").await < target {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica did not replay {} within 30 s",
            CommitPosition::from_lsn(target)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Until the replica has replayed everything the primary has flushed so far.
async fn caught_up(s: &Setup) {
    let primary = sqlx_atomic::pool::<sqlx::Postgres>("plain").unwrap();
    replayed_to(s, lsn(&primary, "SELECT pg_current_wal_lsn()::text").await).await;
}

async fn exec(alias: &'static str, sql: String) {
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(postgres(alias))
        .await
        .unwrap();
}

/// A table of its own for one test, on the primary and (once replayed) on the replica.
async fn table(s: &Setup, name: &str) -> String {
    let table = format!("replica_{name}_{}", std::process::id());
    exec(
        "plain",
        format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id BIGINT PRIMARY KEY)"),
    )
    .await;
    caught_up(s).await;
    table
}

async fn in_recovery(handle: sqlx_atomic::Handle<sqlx::Postgres>) -> bool {
    sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(handle)
        .await
        .unwrap()
}

#[test]
fn rule_12_1_reads_outside_blocks_go_to_a_replica_and_everything_else_to_the_primary() {
    replica_test(|s| async move {
        let t = table(s, "routing").await;
        exec("plain", format!("INSERT INTO {t} VALUES (1)")).await;
        exec(
            "plain",
            format!(
                "CREATE OR REPLACE FUNCTION {t}_add(v BIGINT) RETURNS BIGINT LANGUAGE sql \
                 AS 'INSERT INTO {t} VALUES (v) RETURNING v'"
            ),
        )
        .await;
        caught_up(s).await;
        // Reads outside any block, one-shot and streamed, in tasks that wrote nothing.
        assert!(fresh(in_recovery(postgres("replicated"))).await);
        assert!(
            fresh(async {
                use futures::TryStreamExt;
                sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()")
                    .fetch(postgres("replicated"))
                    .try_collect::<Vec<_>>()
                    .await
                    .unwrap()
            })
            .await[0]
        );
        // The primary on request, and for everything inside a block.
        assert!(!in_recovery(postgres("replicated").primary()).await);
        let inside = Atomic::new()
            .using("replicated")
            .run(async { Ok::<_, Error>(in_recovery(postgres("replicated")).await) })
            .await
            .unwrap();
        assert!(!inside, "a block's statements go to the primary");
        // Statements that write or lock go to the primary, outside blocks too.
        for sql in [
            format!("INSERT INTO {t} VALUES (2) RETURNING pg_is_in_recovery()"),
            format!("SELECT pg_is_in_recovery() FROM {t} WHERE id = 1 FOR UPDATE"),
            format!(
                "WITH i AS (INSERT INTO {t} VALUES (3) RETURNING id) \
                 SELECT pg_is_in_recovery() FROM i"
            ),
            "SELECT pg_is_in_recovery() AND txid_current() > 0".to_owned(),
        ] {
            let on_replica: bool = sqlx::query_scalar(AssertSqlSafe(sql.clone()))
                .fetch_one(postgres("replicated"))
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(!on_replica, "{sql}");
        }
        // A write the SQL text does not show goes to the replica, which refuses it: loudly.
        let e = fresh({
            let t = t.clone();
            async move {
                sqlx::query(AssertSqlSafe(format!("SELECT {t}_add(4)")))
                    .execute(postgres("replicated"))
                    .await
                    .unwrap_err()
            }
        })
        .await;
        assert_eq!(sqlx_atomic::alias_of(&e), Some("replicated"), "{e}");
        assert_eq!(Error::from(e).code().as_deref(), Some("25006"));
        exec("plain", format!("DROP FUNCTION {t}_add; DROP TABLE {t}")).await;
    });
}

/// Jobs handed over in on_commit by blocks that each insert a row: how many the worker did not
/// find, and how many it read on the replica. `positioned`: each job carries its commit's
/// position and the worker reads at it.
async fn seed_race(table: &str, jobs: i64, positioned: bool) -> (usize, usize) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Option<CommitPosition>)>();
    let worker = {
        let table = table.to_owned();
        tokio::spawn(async move {
            let (mut missed, mut on_replica) = (0, 0);
            while let Some((id, position)) = rx.recv().await {
                let read = sqlx::query_as::<_, (i64, bool)>(AssertSqlSafe(format!(
                    "SELECT id, pg_is_in_recovery() FROM {table} WHERE id = $1"
                )))
                .bind(id)
                .fetch_optional(postgres("replicated"));
                let found = if positioned {
                    read_at(position).using("replicated").run(read).await
                } else {
                    read.await
                };
                match found.unwrap() {
                    None => missed += 1,
                    Some((_, replica)) => on_replica += usize::from(replica),
                }
            }
            (missed, on_replica)
        })
    };
    let mut producers = Vec::new();
    for p in 0..4 {
        let (tx, table) = (tx.clone(), table.to_owned());
        producers.push(tokio::spawn(async move {
            for id in (0..jobs).filter(|i| i % 4 == p) {
                let tx = tx.clone();
                let table = table.clone();
                Atomic::new()
                    .using("replicated")
                    .run(async move {
                        sqlx::query(AssertSqlSafe(format!("INSERT INTO {table} VALUES ($1)")))
                            .bind(id + if positioned { 1_000_000 } else { 0 })
                            .execute(postgres("replicated"))
                            .await?;
                        using("replicated")
                            .on_commit(move || {
                                let position = commit_position("replicated")?;
                                assert!(position.is_some(), "a commit that wrote has a position");
                                let id = id + if positioned { 1_000_000 } else { 0 };
                                tx.send((id, position)).unwrap();
                                Ok::<_, Error>(())
                            })
                            .await
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    drop(tx);
    for p in producers {
        p.await.unwrap();
    }
    worker.await.unwrap()
}

#[test]
fn rule_12_3_the_seed_race_through_a_paused_replica() {
    replica_test(|s| async move {
        let t = table(s, "seed").await;
        paused(s, {
            let t = t.clone();
            async move {
                const JOBS: i64 = 100;
                let (plain_missed, _) = seed_race(&t, JOBS, false).await;
                let (positioned_missed, on_replica) = seed_race(&t, JOBS, true).await;
                eprintln!(
                    "replica seed race, replay paused: {plain_missed} of {JOBS} jobs read without \
                     a position missed their row; {positioned_missed} of {JOBS} read at their \
                     commit's position did ({on_replica} read on the replica, the rest on the \
                     primary after the bound)"
                );
                assert_eq!(
                    plain_missed, JOBS as usize,
                    "with replay paused, no row committed after the pause is on the replica"
                );
                assert_eq!(positioned_missed, 0, "read-your-writes never misses");
                assert_eq!(on_replica, 0, "the paused replica never reached a position");
                let lines = logged_lines(&[
                    "WARN",
                    "read replica is lagging past the bound",
                    "alias=replicated",
                ]);
                assert!(
                    lines.iter().any(|l| l.contains(&s.replica_shown)),
                    "the fallback is logged, naming the replica: {lines:?}"
                );

                // The committing task's own reads, with no job in between: after a block, and
                // after a write outside any block.
                let id: i64 = Atomic::new()
                    .using("replicated")
                    .run(async {
                        sqlx::query_scalar(AssertSqlSafe(format!(
                            "INSERT INTO {t} VALUES (5000000) RETURNING id"
                        )))
                        .fetch_one(postgres("replicated"))
                        .await
                        .map_err(Error::from)
                    })
                    .await
                    .unwrap();
                let found: Option<i64> =
                    sqlx::query_scalar(AssertSqlSafe(format!("SELECT id FROM {t} WHERE id = $1")))
                        .bind(id)
                        .fetch_optional(postgres("replicated"))
                        .await
                        .unwrap();
                assert_eq!(found, Some(id), "the task reads its own commit");
                exec("replicated", format!("INSERT INTO {t} VALUES (5000001)")).await;
                let found: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT id FROM {t} WHERE id = 5000001"
                )))
                .fetch_optional(postgres("replicated"))
                .await
                .unwrap();
                assert_eq!(
                    found,
                    Some(5000001),
                    "the task reads its own autocommit write"
                );
                // Another task, which wrote nothing, reads the replica as it is.
                let t2 = t.clone();
                let elsewhere: Option<i64> = fresh(async move {
                    sqlx::query_scalar(AssertSqlSafe(format!(
                        "SELECT id FROM {t2} WHERE id = 5000001"
                    )))
                    .fetch_optional(postgres("replicated"))
                    .await
                    .unwrap()
                })
                .await;
                assert_eq!(elsewhere, None, "the replica is still paused");
            }
        })
        .await;
        exec("plain", format!("DROP TABLE {t}")).await;
    });
}

#[test]
fn rule_12_4_positioned_reads_wait_for_replay_and_then_read_the_replica() {
    replica_test(|s| async move {
        let t = table(s, "wait").await;
        paused(s, {
            let t = t.clone();
            async move {
                // Fewer readers than the alias's replica pool has connections: all of them wait
                // on the replica at once.
                const READERS: i64 = 6;
                let mut jobs = Vec::new();
                for id in 0..READERS {
                    let position = Atomic::new()
                        .using("replicated")
                        .run(async {
                            sqlx::query(AssertSqlSafe(format!("INSERT INTO {t} VALUES ($1)")))
                                .bind(id)
                                .execute(postgres("replicated"))
                                .await?;
                            Ok::<_, Error>(())
                        })
                        .await
                        .map(|()| commit_position("replicated").unwrap().unwrap())
                        .unwrap();
                    jobs.push((id, position));
                }
                let done = Arc::new(AtomicUsize::new(0));
                let mut readers = Vec::new();
                for (id, position) in jobs {
                    let (t, done) = (t.clone(), done.clone());
                    readers.push(tokio::spawn(async move {
                        let (row, log) = Scope::new()
                            .record_statements()
                            .run(
                                read_at(position).using("patient").run(
                                    sqlx::query_as::<_, (i64, bool)>(AssertSqlSafe(format!(
                                        "SELECT id, pg_is_in_recovery() FROM {t} WHERE id = $1"
                                    )))
                                    .bind(id)
                                    .fetch_optional(postgres("patient")),
                                ),
                            )
                            .await;
                        done.fetch_add(1, Ordering::SeqCst);
                        (row.unwrap(), log)
                    }));
                }
                // Every reader is polling the paused replica, none has finished: then replay
                // resumes, and each finds its row on the replica.
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                loop {
                    let polling: i64 = sqlx::query_scalar(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE application_name = $1 AND query = $2",
                    )
                    .bind(PATIENT)
                    .bind(REPLAYED)
                    .fetch_one(&s.replica)
                    .await
                    .unwrap();
                    if polling >= READERS {
                        break;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{polling} readers poll"
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                assert_eq!(
                    done.load(Ordering::SeqCst),
                    0,
                    "no reader got past the pause"
                );
                resume(s).await;
                let (mut polls, mut on_replica) = (0, 0);
                for r in readers {
                    let (row, log) = r.await.unwrap();
                    let (_, replica) = row.expect("read-your-writes never misses");
                    on_replica += usize::from(replica);
                    polls += log.iter().filter(|st| st.sql == REPLAYED).count();
                }
                eprintln!(
                    "replica waits: {READERS} readers at their commits' positions read \
                     {on_replica} rows on the replica after replay resumed ({polls} polls)"
                );
                assert_eq!(on_replica, READERS as usize, "all read on the replica");
            }
        })
        .await;
        exec("plain", format!("DROP TABLE {t}")).await;
    });
}

#[test]
fn check_databases_checks_the_replicas_too() {
    replica_test(|_| async move {
        // Every alias answers but `down`, whose primary answers and whose replica does not.
        let e = sqlx_atomic::check_databases(Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.alias(), Some("down"), "{e}");
        assert!(
            matches!(e.kind(), sqlx_atomic::ErrorKind::Unreachable { .. }),
            "{e}"
        );
        let text = format!("{e} {e:?}");
        assert!(text.contains("postgres://postgres@127.0.0.1:"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    });
}

#[test]
fn rule_12_4_a_replica_that_is_down_is_skipped_with_a_log_line() {
    replica_test(|_| async move {
        for _ in 0..3 {
            assert!(
                !fresh(in_recovery(postgres("down"))).await,
                "the read went to the primary"
            );
        }
        let lines = logged_lines(&["WARN", "read replica is down", "alias=down"]);
        assert_eq!(lines.len(), 1, "logged once while it stays down: {lines:?}");
        assert!(
            lines[0].contains("replica=postgres://postgres@127.0.0.1:"),
            "{lines:?}"
        );
        assert!(
            !LOGS.lock().unwrap().contains("hunter2"),
            "no password in the logs"
        );
    });
}

fn sent(log: &[RecordedStatement]) -> Vec<(&str, bool)> {
    log.iter()
        .map(|s| (s.sql.as_str(), s.replica.is_some()))
        .collect()
}

#[test]
fn rule_12_5_statements_sent_with_and_without_replicas_are_pinned() {
    replica_test(|s| async move {
        let t = table(s, "counts").await;
        let insert = format!("INSERT INTO {t} VALUES ($1)");
        let select = format!("SELECT id FROM {t} WHERE id = $1");
        for alias in ["plain", "counted"] {
            let replicas = alias == "counted";
            let (ins, sel) = (insert.clone(), select.clone());
            let (block, autocommit, reads) = fresh(async move {
                let add = |id: i64| {
                    let insert = ins.clone();
                    async move {
                        sqlx::query(AssertSqlSafe(insert))
                            .bind(id)
                            .execute(postgres(alias))
                            .await
                            .unwrap();
                    }
                };
                let read = |id: i64| {
                    let select = sel.clone();
                    async move {
                        sqlx::query_scalar::<_, i64>(AssertSqlSafe(select))
                            .bind(id)
                            .fetch_one(postgres(alias))
                            .await
                            .unwrap();
                    }
                };
                let id = if replicas { 10 } else { 0 };
                let (_, block) = Scope::new()
                    .record_statements()
                    .run(Atomic::new().using(alias).run(async {
                        add(id).await;
                        Ok::<_, Error>(())
                    }))
                    .await;
                let (_, autocommit) = Scope::new().record_statements().run(add(id + 1)).await;
                // Once the replica has replayed the task's writes, its first read learns so with
                // one poll, and the next reads know it already.
                let position = commit_position(alias).unwrap();
                assert_eq!(position.is_some(), replicas);
                if let Some(p) = position {
                    replayed_to(setup().unwrap(), p.lsn()).await;
                }
                let (_, reads) = Scope::new()
                    .record_statements()
                    .run(async {
                        read(id).await;
                        read(id + 1).await;
                    })
                    .await;
                (block, autocommit, reads)
            })
            .await;
            let commit = if replicas {
                COMMIT_AND_POSITION
            } else {
                "COMMIT"
            };
            assert_eq!(
                sent(&block),
                [("BEGIN", false), (&*insert, false), (commit, false)],
                "{alias}: a block costs no more statements with replicas"
            );
            let mut expected = vec![(&*insert, false)];
            if replicas {
                expected.push((POSITION, false));
            }
            assert_eq!(
                sent(&autocommit),
                expected,
                "{alias}: a write outside a block"
            );
            let expected = if replicas {
                vec![(REPLAYED, true), (&*select, true), (&*select, true)]
            } else {
                vec![(&*select, false), (&*select, false)]
            };
            assert_eq!(
                sent(&reads),
                expected,
                "{alias}: the task's reads after it wrote"
            );
        }
        // A task that wrote nothing reads on the replica at once, and a read-only block leaves
        // nothing to wait for; the primary's handle reads there with nothing added.
        let select2 = select.clone();
        let (read_only, after, primary) = fresh(async move {
            let read = || {
                sqlx::query_scalar::<_, i64>(AssertSqlSafe(select2.clone()))
                    .bind(10i64)
                    .fetch_one(postgres("counted"))
            };
            let (_, read_only) = Scope::new()
                .record_statements()
                .run(Atomic::new().using("counted").run(async {
                    read().await?;
                    Ok::<_, Error>(())
                }))
                .await;
            let (_, after) = Scope::new().record_statements().run(read()).await;
            let (_, primary) = Scope::new()
                .record_statements()
                .run(
                    sqlx::query_scalar::<_, i64>(AssertSqlSafe(select2.clone()))
                        .bind(10i64)
                        .fetch_one(postgres("counted").primary()),
                )
                .await;
            assert_eq!(commit_position("counted").unwrap(), None);
            (read_only, after, primary)
        })
        .await;
        assert_eq!(
            sent(&read_only),
            [
                ("BEGIN", false),
                (&*select, false),
                (COMMIT_AND_POSITION, false)
            ]
        );
        assert_eq!(sent(&after), [(&*select, true)]);
        assert_eq!(sent(&primary), [(&*select, false)]);
        let replicas: Vec<_> = after.iter().filter_map(|s| s.replica.as_deref()).collect();
        assert_eq!(replicas, [s.replica_shown.as_str()]);
        exec("plain", format!("DROP TABLE {t}")).await;
    });
}

#[test]
fn rule_12_3_plain_transaction_control_still_rolls_back_failed_and_cancelled_blocks() {
    // On an alias with replicas BEGIN, COMMIT and ROLLBACK are plain statements: a failed block's
    // ROLLBACK is sent and awaited, and a cancelled block's connection is closed, never pooled
    // inside its transaction (with one connection in the pool, the next block would otherwise
    // run in it and commit the cancelled row).
    replica_test(|s| async move {
        let t = table(s, "rollback").await;
        let insert = format!("INSERT INTO {t} VALUES ($1)");
        let add = |id: i64| {
            sqlx::query(AssertSqlSafe(insert.clone()))
                .bind(id)
                .execute(postgres("single"))
        };
        let (failed, log) = Scope::new()
            .record_statements()
            .run(Atomic::new().using("single").run(async {
                add(1).await?;
                Err::<(), Error>(Error::from(sqlx::Error::RowNotFound))
            }))
            .await;
        assert!(failed.is_err());
        assert_eq!(
            sent(&log),
            [("BEGIN", false), (&*insert, false), ("ROLLBACK", false)]
        );
        let (inserted, was_inserted) = tokio::sync::oneshot::channel();
        let cancelled = Atomic::new().using("single").run(async {
            add(2).await?;
            inserted.send(()).unwrap();
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        });
        tokio::select! {
            _ = cancelled => unreachable!("the block never ends by itself"),
            _ = was_inserted => {}
        }
        // Manual mode commits with the position too.
        let (position, log) = Scope::new()
            .record_statements()
            .run(async {
                using("single").set_autocommit(false).unwrap();
                add(3).await.unwrap();
                using("single").commit().await.unwrap();
                commit_position("single").unwrap()
            })
            .await;
        assert!(position.is_some());
        assert_eq!(
            sent(&log),
            [
                ("BEGIN", false),
                (&*insert, false),
                (COMMIT_AND_POSITION, false)
            ]
        );
        let kept: Vec<i64> =
            sqlx::query_scalar(AssertSqlSafe(format!("SELECT id FROM {t} ORDER BY id")))
                .fetch_all(postgres("plain"))
                .await
                .unwrap();
        assert_eq!(kept, [3], "only the committed row");
        exec("plain", format!("DROP TABLE {t}")).await;
    });
}

#[test]
fn rule_12_3_a_write_whose_position_is_unknown_sends_the_next_read_to_the_primary() {
    // A write streamed and dropped before its end leaves its position unread: the task's next
    // read goes to the primary and reads the position there, and the reads after it wait for
    // that one.
    replica_test(|s| async move {
        use futures::TryStreamExt;
        let t = table(s, "unknown").await;
        let insert =
            format!("INSERT INTO {t} SELECT g FROM generate_series(100, 102) g RETURNING id");
        let select = format!("SELECT id FROM {t} WHERE id = 100");
        let (ins, sel) = (insert.clone(), select.clone());
        let (written, resolving, resolved) = fresh(async move {
            let read = || sqlx::query_scalar::<_, i64>(AssertSqlSafe(sel.clone()));
            let (_, written) = Scope::new()
                .record_statements()
                .run(async {
                    let mut rows =
                        sqlx::query_scalar::<_, i64>(AssertSqlSafe(ins)).fetch(postgres("counted"));
                    assert_eq!(rows.try_next().await.unwrap(), Some(100));
                })
                .await;
            let unknown = commit_position("counted").unwrap().unwrap();
            assert_eq!(unknown.lsn(), u64::MAX, "{unknown}");
            let (_, resolving) = Scope::new()
                .record_statements()
                .run(read().fetch_one(postgres("counted")))
                .await;
            let position = commit_position("counted").unwrap().unwrap();
            assert!(position < unknown, "{position}");
            replayed_to(setup().unwrap(), position.lsn()).await;
            let (_, resolved) = Scope::new()
                .record_statements()
                .run(read().fetch_one(postgres("counted")))
                .await;
            (written, resolving, resolved)
        })
        .await;
        assert_eq!(sent(&written), [(&*insert, false)]);
        assert_eq!(sent(&resolving), [(&*select, false), (POSITION, false)]);
        assert_eq!(sent(&resolved), [(REPLAYED, true), (&*select, true)]);
        exec("plain", format!("DROP TABLE {t}")).await;
    });
}

#[test]
fn rule_12_6_a_request_reads_its_own_commit_in_its_hooks() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;
    static SEEN: Mutex<Vec<(Option<i64>, bool, bool)>> = Mutex::new(Vec::new());
    async fn order(axum::extract::Path((t, id)): axum::extract::Path<(String, i64)>) -> StatusCode {
        let inside: bool = sqlx::query_scalar(AssertSqlSafe(format!(
            "INSERT INTO {t} VALUES ({id}) RETURNING pg_is_in_recovery()"
        )))
        .fetch_one(postgres("requested"))
        .await
        .unwrap();
        assert!(!inside, "the request's transaction is on the primary");
        using("requested")
            .on_commit(move || async move {
                let positioned = commit_position("requested")?.is_some();
                let found: Option<(i64, bool)> = sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT id, pg_is_in_recovery() FROM {t} WHERE id = {id}"
                )))
                .fetch_optional(postgres("requested"))
                .await?;
                let on_replica = found.is_some_and(|(_, r)| r);
                SEEN.lock()
                    .unwrap()
                    .push((found.map(|(i, _)| i), on_replica, positioned));
                Ok::<_, Error>(())
            })
            .await
            .unwrap();
        StatusCode::CREATED
    }
    replica_test(|s| async move {
        let t = table(s, "request").await;
        paused(s, {
            let t = t.clone();
            async move {
                let app = axum::Router::new()
                    .route("/order/{t}/{id}", axum::routing::post(order))
                    .layer(sqlx_atomic::AtomicRequestsLayer::new());
                let response = app
                    .oneshot(
                        Request::post(format!("/order/{t}/7"))
                            .body(Body::empty())
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::CREATED);
            }
        })
        .await;
        assert_eq!(
            *SEEN.lock().unwrap(),
            [(Some(7), false, true)],
            "the hook read the request's row, from the primary while the replica was paused"
        );
        exec("plain", format!("DROP TABLE {t}")).await;
    });
}

#[test]
fn rule_12_2_replicas_are_checked_at_install_and_never_show_a_password() {
    RT.block_on(async {
        let lazy = |u: &str| Database::connect_lazy(u).unwrap();
        let cases = [
            (
                lazy("sqlite::memory:").read_replica(lazy("postgres://u@h/db")),
                "a PostgreSQL feature",
            ),
            (
                lazy("postgres://u@h/db").read_replica(lazy("sqlite::memory:")),
                "not PostgreSQL like its primary",
            ),
            (
                lazy("postgres://u@h/db")
                    .read_replica(lazy("postgres://u@r/db?atomic_pooling=transaction")),
                "transaction-pooling mode",
            ),
            (
                lazy("postgres://u@h/db?atomic_pooling=transaction")
                    .read_replica(lazy("postgres://u@r/db")),
                "cannot be combined with transaction pooling",
            ),
            (
                lazy("postgres://u@h/db").read_replica(
                    lazy("postgres://u@r/db").read_replica(lazy("postgres://u@s/db")),
                ),
                "replicas of its own",
            ),
        ];
        for (db, why) in cases {
            let e = Databases::new()
                .add("with_replica", db)
                .install()
                .unwrap_err();
            assert_eq!(e.alias(), Some("with_replica"), "{e}");
            assert!(matches!(e.kind(), ErrorKind::InvalidConfig(_)), "{e}");
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
        let url = format!(
            "postgres://app:s3cret@db/app?atomic_replica={}&atomic_replica_wait=250ms",
            encode("postgres://ro:r3plica@replica:5433/app?application_name=ro")
        );
        let shown = format!("{:?}", lazy(&url));
        assert!(
            !shown.contains("s3cret") && !shown.contains("r3plica"),
            "{shown}"
        );
        assert!(shown.contains("postgres://ro@replica:5433/app"), "{shown}");
        assert!(shown.contains("replica_wait: 250ms"), "{shown}");
        let e = Database::connect_lazy(&format!(
            "postgres://app:s3cret@db/app?atomic_replica={}",
            encode("nosuch://ro:r3plica@replica/app")
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("read replica") && !e.contains("r3plica"), "{e}");
    });
}
