//! A model-based property test. Random programs of atomic blocks, savepoints, transaction
//! options, `retry`, failing statements, conflicts with a second transaction, rollback flags,
//! hooks, errors, panics and cancellations run for real through the public API, on two aliases
//! at once, and the rows committed, the hooks run and what each block returned are compared with
//! the reference model (tests/model/mod.rs).
//!
//! Alias A is the backend under test ("sqlite", "pg" or "my"), alias B is "other" (SQLite).
//! On a server, alias A's `Conflict` operations meet real conflicts made by a connection the
//! runner owns (the model's header says how). Default: 2,000 programs on SQLite and 300 on each
//! server; `SQLX_ATOMIC_PROPTEST_SCALE=25` multiplies these counts for long runs.

mod common;
mod model;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use common::{Backend, Fx};
use futures::FutureExt;
use model::{
    Alias, Block, BlockResult, Exit, Flavor, Isolation, Op, Program, Retry, Why, expected,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};
use sqlx::{AssertSqlSafe, Connection};
use sqlx_atomic::{Atomic, Conflict, Error, ErrorKind};

// ---------------------------------------------------------------------------------------------
// Generation

/// What the programs of a backend carry.
#[derive(Debug, Clone, Copy)]
struct Gen {
    /// How often the blocks of each alias (index by [`Alias::index`]) give `read_only`, in
    /// percent.
    read_only: [u32; 2],
    /// The weight of REPEATABLE READ, and that of SERIALIZABLE, among the isolation levels of
    /// each alias's blocks (no level weighs 4, each other level 1).
    snapshot: [u32; 2],
    /// Alias A is a server's: its blocks carry `Conflict` operations.
    conflicts: bool,
}

impl Gen {
    fn of(backend: Backend) -> Gen {
        // SQLite refuses `read_only`, and the body of a refused block does not run: a few such
        // blocks show the refusal, more would only take blocks away from the rest of the model.
        const ON_SQLITE: u32 = 4;
        match backend {
            Backend::Sqlite => Gen {
                read_only: [ON_SQLITE, ON_SQLITE],
                snapshot: [1, 1],
                conflicts: false,
            },
            // PostgreSQL meets a `Conflict` only under a snapshot level: about half of its
            // transactions take one, so that the conflicts and their misses both show.
            Backend::Postgres | Backend::PgBouncer => Gen {
                read_only: [24, ON_SQLITE],
                snapshot: [3, 1],
                conflicts: true,
            },
            Backend::MySql => Gen {
                read_only: [24, ON_SQLITE],
                snapshot: [1, 1],
                conflicts: true,
            },
            // A Galera node chooses its deadlock victims by its own rules, so the helper's
            // deadlock does not always pick the program: conflicts between the nodes are
            // tested for real in tests/galera.rs instead.
            Backend::Galera => Gen {
                read_only: [24, ON_SQLITE],
                snapshot: [1, 1],
                conflicts: false,
            },
        }
    }
}

fn arb_alias() -> impl Strategy<Value = Alias> + Clone {
    prop_oneof![2 => Just(Alias::A), 1 => Just(Alias::B)]
}

fn arb_exit() -> impl Strategy<Value = Exit> {
    prop_oneof![
        6 => Just(Exit::Ok),
        2 => Just(Exit::Err),
        1 => Just(Exit::Panic),
        1 => Just(Exit::Cancel),
    ]
}

/// A leaf operation; values, labels and rows are numbered by [`Program::normalize`].
fn arb_leaf(top_level: bool, conflicts: bool) -> BoxedStrategy<Op> {
    let plain = prop_oneof![
        5 => arb_alias().prop_map(|a| Op::Insert(a, 0)),
        2 => arb_alias().prop_map(Op::FailingStatement),
        3 => arb_alias().prop_map(|a| Op::OnCommit(a, 0)),
    ];
    if top_level {
        return plain.boxed();
    }
    let set_rollback = (arb_alias(), any::<bool>()).prop_map(|(a, f)| Op::SetRollback(a, f));
    if !conflicts {
        return prop_oneof![10 => plain, 3 => set_rollback].boxed();
    }
    // On alias A only: alias B is SQLite (see the model's header).
    let conflict = proptest::bool::weighted(0.3).prop_map(|raise| Op::Conflict {
        alias: Alias::A,
        row: 0,
        raise,
    });
    prop_oneof![10 => plain, 3 => set_rollback, 3 => conflict].boxed()
}

/// `read_only` in `percent` of the blocks, mostly `true`; it is kept only on a block that is the
/// outermost of its alias ([`Program::normalize`] drops it elsewhere).
fn arb_read_only(percent: u32) -> impl Strategy<Value = Option<bool>> {
    prop_oneof![
        100 - percent => Just(None),
        percent - percent / 4 => Just(Some(true)),
        percent / 4 => Just(Some(false)),
    ]
}

/// `isolation`, kept only where `read_only` is; `snapshot` weighs each level that takes one
/// snapshot for the whole transaction.
fn arb_isolation(snapshot: u32) -> impl Strategy<Value = Option<Isolation>> {
    prop_oneof![
        4 => Just(None),
        1 => Just(Some(Isolation::ReadUncommitted)),
        1 => Just(Some(Isolation::ReadCommitted)),
        snapshot => Just(Some(Isolation::RepeatableRead)),
        snapshot => Just(Some(Isolation::Serializable)),
    ]
}

/// `retry` on `percent` of the blocks (kept where `read_only` is): up to 2 retries, and up to 3
/// attempts that meet the conflicts, so that some blocks give up.
fn arb_retry(percent: u32) -> impl Strategy<Value = Option<Retry>> {
    prop_oneof![
        100 - percent => Just(None),
        percent => (0..=2u32, 0..=3u32).prop_map(|(retries, conflicts)| Some(Retry { retries, conflicts })),
    ]
}

/// A block whose body nests blocks `levels - 1` deep at most; `top`: a top-level operation,
/// so the outermost block of its alias, which keeps its `retry`.
fn arb_block(levels: u32, g: Gen, top: bool) -> BoxedStrategy<Block> {
    let op = if levels <= 1 {
        arb_leaf(false, g.conflicts)
    } else {
        prop_oneof![
            3 => arb_leaf(false, g.conflicts),
            1 => arb_block(levels - 1, g, false).prop_map(Op::Block),
        ]
        .boxed()
    };
    (
        arb_alias().prop_flat_map(move |a| {
            (
                Just(a),
                arb_read_only(g.read_only[a.index()]),
                arb_isolation(g.snapshot[a.index()]),
            )
        }),
        proptest::bool::weighted(0.75),
        arb_retry(if top { 50 } else { 20 }),
        vec(op, 0..=6),
        arb_exit(),
    )
        .prop_map(
            |((alias, read_only, isolation), savepoint, retry, body, exit)| Block {
                alias,
                savepoint,
                read_only,
                isolation,
                retry,
                body,
                exit,
            },
        )
        .boxed()
}

/// A top-level program: up to 4 operations, blocks nested up to 4 deep.
fn arb_program(g: Gen) -> impl Strategy<Value = Program> {
    vec(
        prop_oneof![
            1 => arb_leaf(true, false),
            3 => arb_block(4, g, true).prop_map(Op::Block),
        ],
        1..=4,
    )
    .prop_map(|ops| Program { ops }.normalize())
}

// ---------------------------------------------------------------------------------------------
// Running a program for real

/// The payload of the panics the programs raise on purpose (silenced in the panic hook).
struct ModelPanic;

fn quiet_model_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<ModelPanic>() {
                prev(info);
            }
        }));
    });
}

/// The runner's own connections to alias A's server, outside the library's pools: the helper,
/// whose transactions make the program's `Conflict` operations meet real conflicts, and on
/// MariaDB the watcher, which sees when the helper waits for a lock.
enum Helper {
    /// None: SQLite carries no `Conflict` (see the model's header).
    Sqlite,
    Postgres(sqlx::PgConnection),
    MySql {
        conn: sqlx::MySqlConnection,
        /// The helper's connection id, which `SHOW ENGINE INNODB STATUS` names its
        /// transaction by.
        id: u64,
        watcher: sqlx::MySqlConnection,
    },
}

impl Helper {
    async fn connect(backend: Backend) -> Helper {
        // The helper is another client of the same server: through the pooler its plain sqlx
        // statements would be shared between server connections, so it connects to the server
        // itself (on Galera, to the program's node).
        let url = match backend {
            Backend::PgBouncer => Backend::Postgres.url(),
            b => b.url(),
        };
        match backend {
            Backend::Sqlite => Helper::Sqlite,
            Backend::Postgres | Backend::PgBouncer => Helper::Postgres(
                sqlx::PgConnection::connect(&url)
                    .await
                    .expect("the helper connection"),
            ),
            Backend::MySql | Backend::Galera => {
                let mut conn = sqlx::MySqlConnection::connect(&url)
                    .await
                    .expect("the helper connection");
                let id = sqlx::query_scalar("SELECT CONNECTION_ID()")
                    .fetch_one(&mut conn)
                    .await
                    .expect("the helper's connection id");
                let watcher = sqlx::MySqlConnection::connect(&url)
                    .await
                    .expect("the watcher connection");
                Helper::MySql { conn, id, watcher }
            }
        }
    }
}

/// Makes the `Conflict` operations meet their conflict again once a retried block of alias A
/// ends, however it ends: a block without `retry` has one attempt, which meets them.
struct ClashesReset<'a>(&'a AtomicBool);

impl Drop for ClashesReset<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

struct Env {
    backend: Backend,
    /// The fixture of alias A (its table and the hook log).
    fx: Fx,
    /// The same table on alias B ("other", SQLite), sharing the hook log.
    fx_b: Fx,
    /// The values of the current program are `base + 0..n`.
    base: AtomicI64,
    next_base: AtomicI64,
    /// On a server, alias A's scratch table (`id`, `n`) of the `Conflict` operations, holding
    /// rows `0..scratch_rows`; those of the current program start at `row_base`. Each program
    /// has rows of its own: an earlier program's transaction may hold its rows' locks a moment
    /// longer (a cancelled block's ROLLBACK goes out in the background, 7.1), and the helper
    /// must wait for the current program's locks alone.
    scratch: String,
    scratch_rows: AtomicI64,
    row_base: AtomicI64,
    next_row: AtomicI64,
    /// On MariaDB, the rows the helper updates first, so that its transaction is the heavier
    /// one and InnoDB picks the program's as the deadlock's victim: `weight` of them for the
    /// current program, `weight_rows` in the table.
    weights: String,
    weight: AtomicI64,
    weight_rows: AtomicI64,
    helper: tokio::sync::Mutex<Helper>,
    /// The current attempt of alias A's transaction meets the conflicts (see `model::Retry`).
    clashes: AtomicBool,
    /// API calls that should have succeeded and did not, or panics that are not ours.
    unexpected: Mutex<Vec<String>>,
    /// What each block returned, in the order the blocks ended.
    results: Mutex<Vec<BlockResult>>,
    /// Programs run, shrinking included.
    runs: AtomicI64,
    /// The model's coverage counts over every program run.
    stats: Mutex<model::Stats>,
}

/// The model's name for the error, of code `code` on `backend`, behind a block's `RolledBack`
/// or raised by its body.
fn why(backend: Backend, code: Option<&str>) -> Option<Why> {
    match (backend.kind(), code?) {
        (Backend::Sqlite, "1299") | (Backend::Postgres, "23502") | (Backend::MySql, "23000") => {
            Some(Why::NotNull)
        }
        (Backend::Postgres, "25P02") => Some(Why::InAbortedTransaction),
        (Backend::Postgres | Backend::MySql, "25006") => Some(Why::ReadOnly),
        // PostgreSQL's serialization failure; MariaDB's deadlock (1213) has this SQLSTATE too.
        (Backend::Postgres | Backend::MySql, "40001") => Some(Why::Conflict),
        _ => None,
    }
}

/// The conflict `Error::conflict` must name for a `Conflict` operation's error on `backend`.
fn conflict_kind(backend: Backend) -> Option<Conflict> {
    match backend {
        Backend::Postgres | Backend::PgBouncer => Some(Conflict::Serialization),
        Backend::MySql | Backend::Galera => Some(Conflict::Deadlock),
        Backend::Sqlite => None,
    }
}

type BoxFut<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

impl Env {
    async fn new(fx: Fx) -> Env {
        let fx_b = Fx {
            backend: Backend::Sqlite,
            alias: "other",
            table: fx.table.clone(),
            log: fx.log.clone(),
        };
        fx_b.raw(&format!("CREATE TABLE {} (v INTEGER NOT NULL)", fx.table))
            .await;
        for f in [&fx, &fx_b] {
            f.raw(&format!("CREATE INDEX {0}_v ON {0} (v)", f.table))
                .await;
        }
        let scratch = format!("{}_c", fx.table);
        let weights = format!("{}_w", fx.table);
        if fx.backend != Backend::Sqlite {
            for table in [&scratch, &weights] {
                fx.raw(&format!(
                    "CREATE TABLE {table} (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"
                ))
                .await;
            }
        }
        Env {
            backend: fx.backend,
            helper: tokio::sync::Mutex::new(Helper::connect(fx.backend).await),
            fx,
            fx_b,
            base: AtomicI64::new(0),
            next_base: AtomicI64::new(0),
            scratch,
            scratch_rows: AtomicI64::new(0),
            row_base: AtomicI64::new(0),
            next_row: AtomicI64::new(0),
            weights,
            weight: AtomicI64::new(0),
            weight_rows: AtomicI64::new(0),
            clashes: AtomicBool::new(true),
            unexpected: Mutex::new(Vec::new()),
            results: Mutex::new(Vec::new()),
            runs: AtomicI64::new(0),
            stats: Mutex::new(model::Stats::default()),
        }
    }

    /// Drops the tables `new` made, but alias A's own (the harness drops it).
    async fn drop_tables(&self) {
        self.fx_b
            .raw(&format!("DROP TABLE {}", self.fx_b.table))
            .await;
        if self.backend != Backend::Sqlite {
            self.fx
                .raw(&format!("DROP TABLE {}, {}", self.scratch, self.weights))
                .await;
        }
    }

    fn fx_of(&self, a: Alias) -> &Fx {
        match a {
            Alias::A => &self.fx,
            Alias::B => &self.fx_b,
        }
    }

    fn name(&self, a: Alias) -> &'static str {
        self.fx_of(a).alias
    }

    fn flavor(&self) -> Flavor {
        match self.backend {
            Backend::Sqlite => Flavor::SQLITE,
            Backend::Postgres | Backend::PgBouncer => Flavor::POSTGRES,
            Backend::MySql | Backend::Galera => Flavor::MYSQL,
        }
    }

    fn record(&self, r: BlockResult) {
        self.results.lock().unwrap().push(r);
    }

    fn unexpected(&self, what: String) {
        self.unexpected.lock().unwrap().push(what);
    }

    /// What a block of alias `a` returned, when it returned an error.
    fn classify(&self, a: Alias, e: &Error) -> BlockResult {
        // A body raises the error of a `Conflict` operation, which is alias A's whatever the
        // block's alias.
        let backend = match e.kind() {
            ErrorKind::Sqlx(_) | ErrorKind::Doomed => self.backend,
            _ => self.fx_of(a).backend,
        };
        let result = match e.kind() {
            // The body's own.
            ErrorKind::Sqlx(sqlx::Error::RowNotFound) => BlockResult::Err,
            // Raised by the body.
            ErrorKind::Sqlx(sqlx::Error::Database(_)) => match why(backend, e.code().as_deref()) {
                Some(why) => BlockResult::Raised(why),
                None => {
                    self.unexpected(format!("block on {a}: the body raised {e}"));
                    BlockResult::Err
                }
            },
            ErrorKind::Doomed => BlockResult::Raised(Why::Refused),
            ErrorKind::Aborted => BlockResult::Aborted,
            ErrorKind::Unsupported {
                option: "read_only",
                ..
            } => BlockResult::Unsupported,
            ErrorKind::RolledBack(cause) => match why(backend, cause.code()) {
                Some(why) => BlockResult::RolledBack(why),
                None => {
                    self.unexpected(format!("block on {a}: a rollback for another cause: {e}"));
                    BlockResult::Err
                }
            },
            ErrorKind::RetriesExhausted { attempts, cause }
                if why(backend, cause.code()) == Some(Why::Conflict) =>
            {
                BlockResult::RetriesExhausted(*attempts)
            }
            _ => {
                self.unexpected(format!("block on {a}: {e}"));
                BlockResult::Err
            }
        };
        // 11.3: the error of a conflict, and it alone, says so, and is worth a new attempt.
        let conflict = matches!(
            result,
            BlockResult::Raised(Why::Conflict)
                | BlockResult::RolledBack(Why::Conflict)
                | BlockResult::RetriesExhausted(_)
        );
        let want = if conflict {
            conflict_kind(backend)
        } else {
            None
        };
        if e.conflict() != want || e.is_retryable() != conflict {
            self.unexpected(format!(
                "block on {a}: conflict() is {:?} and is_retryable() {}, for {e}",
                e.conflict(),
                e.is_retryable()
            ));
        }
        result
    }

    /// `INSERT INTO t (v) VALUES (base + value)`, or `(NULL)` (rejected: NOT NULL).
    async fn insert(&self, a: Alias, value: Option<i64>) -> Result<(), sqlx::Error> {
        let fx = self.fx_of(a);
        let v = value.map(|v| self.base.load(Ordering::Relaxed) + v);
        match fx.backend {
            Backend::Sqlite => {
                let sql = AssertSqlSafe(format!("INSERT INTO {} (v) VALUES ($1)", fx.table));
                sqlx::query(sql)
                    .bind(v)
                    .execute(sqlx_atomic::sqlite(fx.alias))
                    .await?;
            }
            Backend::Postgres | Backend::PgBouncer => {
                let sql = AssertSqlSafe(format!("INSERT INTO {} (v) VALUES ($1)", fx.table));
                sqlx::query(sql)
                    .bind(v.map(|v| v as i32))
                    .execute(sqlx_atomic::postgres(fx.alias))
                    .await?;
            }
            Backend::MySql | Backend::Galera => {
                let sql = AssertSqlSafe(format!("INSERT INTO {} (v) VALUES (?)", fx.table));
                sqlx::query(sql)
                    .bind(v)
                    .execute(sqlx_atomic::mysql(fx.alias))
                    .await?;
            }
        }
        Ok(())
    }

    /// `UPDATE` of the scratch row whose `id` is bound: the statement a conflict interrupts.
    /// Bound, so that each connection prepares it once.
    fn bump(&self) -> AssertSqlSafe<String> {
        let id = match self.backend {
            Backend::Postgres | Backend::PgBouncer => "$1",
            _ => "?",
        };
        AssertSqlSafe(format!(
            "UPDATE {} SET n = n + 1 WHERE id = {id}",
            self.scratch
        ))
    }

    /// Gives the current program scratch rows of its own for its `Conflict` operations, and on
    /// MariaDB enough rows for the helper to outweigh any transaction of the program.
    async fn prepare_conflicts(&self, p: &Program) {
        let per_op = match self.backend {
            Backend::Sqlite => return,
            Backend::Postgres | Backend::PgBouncer => 1,
            Backend::MySql | Backend::Galera => 2,
        };
        let rows = p.conflicts() * per_op;
        if rows == 0 {
            return;
        }
        let lo = self.next_row.fetch_add(rows, Ordering::Relaxed);
        self.row_base.store(lo, Ordering::Relaxed);
        self.grow(&self.scratch, &self.scratch_rows, lo + rows)
            .await;
        if self.backend == Backend::MySql {
            // InnoDB rolls back the transaction that modified fewer rows: the program's modify
            // at most its inserts and its scratch rows, on any attempt.
            let weight = p.inserts() + rows + 64;
            self.weight.store(weight, Ordering::Relaxed);
            self.grow(&self.weights, &self.weight_rows, weight).await;
        }
    }

    /// Makes scratch table `table`, which holds rows `0..*have`, hold rows `0..need` at least;
    /// in batches, so that few programs pay for a statement (and on MariaDB, its commit).
    async fn grow(&self, table: &str, have: &AtomicI64, need: i64) {
        let lo = have.load(Ordering::Relaxed);
        if need <= lo {
            return;
        }
        let hi = need.max(lo + 1024) - 1;
        let rows = match self.backend {
            Backend::Postgres | Backend::PgBouncer => {
                format!("SELECT g, 0 FROM generate_series({lo}, {hi}) g")
            }
            _ => format!("SELECT seq, 0 FROM seq_{lo}_to_{hi}"),
        };
        self.fx
            .raw(&format!("INSERT INTO {table} (id, n) {rows}"))
            .await;
        have.store(hi + 1, Ordering::Relaxed);
    }

    /// A `Conflict` operation on alias `a` (the model's header says what it does on each
    /// server): the program's statements go through the ambient handle, the helper's through its
    /// own connection. Returns the error of the program's first statement that failed.
    async fn conflict(&self, a: Alias, row: u32) -> Result<(), Error> {
        let fx = self.fx_of(a);
        let clashes = self.clashes.load(Ordering::Relaxed);
        let base = self.row_base.load(Ordering::Relaxed);
        match fx.backend {
            Backend::Postgres | Backend::PgBouncer => {
                let id = i32::try_from(base + i64::from(row)).expect("a scratch row's id");
                let db = sqlx_atomic::postgres(fx.alias);
                let read = format!("SELECT n FROM {} WHERE id = $1", self.scratch);
                sqlx::query(AssertSqlSafe(read))
                    .bind(id)
                    .execute(&db)
                    .await?;
                if clashes {
                    let mut guard = self.helper.lock().await;
                    let Helper::Postgres(conn) = &mut *guard else {
                        unreachable!("PostgreSQL's helper")
                    };
                    if let Err(e) = sqlx::query(self.bump()).bind(id).execute(conn).await {
                        self.unexpected(format!("the helper's UPDATE failed: {e}"));
                    }
                }
                sqlx::query(self.bump()).bind(id).execute(&db).await?;
            }
            Backend::MySql | Backend::Galera => {
                let mine = base + 2 * i64::from(row);
                let theirs = mine + 1;
                let db = sqlx_atomic::mysql(fx.alias);
                sqlx::query(self.bump()).bind(mine).execute(&db).await?;
                if !clashes {
                    sqlx::query(self.bump()).bind(theirs).execute(&db).await?;
                    return Ok(());
                }
                let mut guard = self.helper.lock().await;
                let Helper::MySql { conn, id, watcher } = &mut *guard else {
                    unreachable!("MariaDB's helper")
                };
                let weight = self.weight.load(Ordering::Relaxed);
                let heavy = format!("UPDATE {} SET n = n + 1 WHERE id < ?", self.weights);
                let helper = async {
                    let steps = async {
                        sqlx::query("BEGIN").execute(&mut *conn).await?;
                        sqlx::query(AssertSqlSafe(heavy))
                            .bind(weight)
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query(self.bump())
                            .bind(theirs)
                            .execute(&mut *conn)
                            .await?;
                        // Waits for the program's lock on `mine`.
                        sqlx::query(self.bump())
                            .bind(mine)
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("COMMIT").execute(&mut *conn).await
                    };
                    let r = steps.await;
                    if r.is_err() {
                        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    }
                    r
                };
                let (program, stuck) = {
                    let mut helper = std::pin::pin!(helper);
                    let waiting = tokio::select! {
                        r = &mut helper => Err(format!(
                            "the helper's transaction ended without waiting for the program: {r:?}"
                        )),
                        r = lock_wait(watcher, *id) => r,
                    };
                    let program = sqlx::query(self.bump()).bind(theirs).execute(&db);
                    match waiting {
                        Ok(()) => {
                            let (program, helped) = tokio::join!(program, helper);
                            if let Err(e) = helped {
                                self.unexpected(format!("the helper's transaction failed: {e}"));
                            }
                            (program, false)
                        }
                        Err(why) => {
                            self.unexpected(why);
                            (program.await, true)
                        }
                    }
                };
                if stuck {
                    // The helper may still wait for the program, which this operation must not
                    // wait for: closing its connection rolls its transaction back, so the
                    // program fails rather than hangs.
                    *guard = Helper::connect(self.backend).await;
                }
                program?;
            }
            Backend::Sqlite => unreachable!("no Conflict on SQLite"),
        }
        Ok(())
    }

    /// The committed values of the current program on alias `a`, minus the base, sorted.
    async fn committed(&self, a: Alias, n: i64) -> Vec<i64> {
        let fx = self.fx_of(a);
        let lo = self.base.load(Ordering::Relaxed);
        let hi = lo + n;
        let rows: Vec<i64> = match fx.backend {
            Backend::Sqlite => {
                let sql = AssertSqlSafe(format!(
                    "SELECT CAST(v AS BIGINT) FROM {} WHERE v >= $1 AND v < $2 ORDER BY v",
                    fx.table
                ));
                let p = sqlx_atomic::pool::<sqlx::Sqlite>(fx.alias).unwrap();
                sqlx::query_scalar(sql)
                    .bind(lo)
                    .bind(hi)
                    .fetch_all(&p)
                    .await
                    .unwrap()
            }
            Backend::Postgres | Backend::PgBouncer => {
                // The simple protocol (one message), which reads correctly through a
                // transaction pooler too.
                let sql = AssertSqlSafe(format!(
                    "SELECT CAST(v AS BIGINT) FROM {} WHERE v >= {lo} AND v < {hi} ORDER BY v",
                    fx.table
                ));
                let p = sqlx_atomic::pool::<sqlx::Postgres>(fx.alias).unwrap();
                let rows = sqlx::raw_sql(sql).fetch_all(&p).await.unwrap();
                rows.iter()
                    .map(|r| sqlx::Row::get::<i64, _>(r, 0))
                    .collect()
            }
            Backend::MySql | Backend::Galera => {
                let sql = AssertSqlSafe(format!(
                    "SELECT CAST(v AS SIGNED) FROM {} WHERE v >= ? AND v < ? ORDER BY v",
                    fx.table
                ));
                let p = sqlx_atomic::pool::<sqlx::MySql>(fx.alias).unwrap();
                sqlx::query_scalar(sql)
                    .bind(lo)
                    .bind(hi)
                    .fetch_all(&p)
                    .await
                    .unwrap()
            }
        };
        rows.into_iter().map(|v| v - lo).collect()
    }

    /// Runs `ops`; `Err` when a `Conflict` operation raised its error, which ends the body.
    fn run_ops<'a>(&'a self, ops: &'a [Op]) -> BoxFut<'a> {
        Box::pin(async move {
            for op in ops {
                match op {
                    // Errors are ignored: the program goes on (3.1, 3.2).
                    Op::Insert(a, v) => {
                        let _ = self.insert(*a, Some(*v)).await;
                    }
                    Op::FailingStatement(a) => {
                        if self.insert(*a, None).await.is_ok() {
                            self.unexpected(format!("INSERT NULL on {} succeeded", self.name(*a)));
                        }
                    }
                    Op::SetRollback(a, f) => {
                        if let Err(e) = sqlx_atomic::using(self.name(*a)).set_rollback(*f) {
                            self.unexpected(format!("set_rollback({f}) on {a}: {e}"));
                        }
                    }
                    Op::OnCommit(a, l) => {
                        let hook = self.fx.hook(&format!("h{l}"));
                        if let Err(e) = sqlx_atomic::on_commit(hook).using(self.name(*a)).await {
                            self.unexpected(format!("on_commit on {a}: {e}"));
                        }
                    }
                    Op::Conflict { alias, row, raise } => {
                        let r = self.conflict(*alias, *row).await;
                        if *raise {
                            r?;
                        }
                    }
                    Op::Block(b) => self.run_block(b).await?,
                }
            }
            Ok(())
        })
    }

    /// Runs block `b` and records what it returned; only a panic goes through (its enclosing
    /// body ignores any other result).
    fn run_block<'a>(&'a self, b: &'a Block) -> BoxFut<'a> {
        Box::pin(async move {
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
            let ready_tx = Mutex::new(Some(ready_tx));
            let ready_tx = &ready_tx;
            // The body of one attempt.
            let body = move || async move {
                self.run_ops(&b.body).await?;
                match b.exit {
                    Exit::Ok => Ok(()),
                    Exit::Err => Err(Error::from(sqlx::Error::RowNotFound)),
                    Exit::Panic => std::panic::panic_any(ModelPanic),
                    Exit::Cancel => {
                        // Dropped at this await point by the select below.
                        let ready = ready_tx.lock().unwrap().take();
                        if let Some(ready) = ready {
                            let _ = ready.send(());
                        }
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                }
            };
            let mut atomic = Atomic::new()
                .using(self.name(b.alias))
                .savepoint(b.savepoint);
            if let Some(read_only) = b.read_only {
                atomic = atomic.read_only(read_only);
            }
            if let Some(level) = b.isolation {
                atomic = atomic.isolation(match level {
                    Isolation::ReadUncommitted => sqlx_atomic::Isolation::ReadUncommitted,
                    Isolation::ReadCommitted => sqlx_atomic::Isolation::ReadCommitted,
                    Isolation::RepeatableRead => sqlx_atomic::Isolation::RepeatableRead,
                    Isolation::Serializable => sqlx_atomic::Isolation::Serializable,
                });
            }
            let attempts = AtomicU32::new(0);
            let _reset =
                (b.retry.is_some() && b.alias == Alias::A).then(|| ClashesReset(&self.clashes));
            let block: BoxFut<'_> = match b.retry {
                None => Box::pin(atomic.run(body())),
                Some(r) => {
                    // No wait between attempts: the conflicts are the runner's, not a load's.
                    let retry =
                        sqlx_atomic::Retry::new(r.retries).backoff(Duration::ZERO, Duration::ZERO);
                    let attempts = &attempts;
                    Box::pin(atomic.retry(retry).run(move || {
                        let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
                        if b.alias == Alias::A {
                            self.clashes
                                .store(attempt <= r.conflicts, Ordering::Relaxed);
                        }
                        body()
                    }))
                }
            };
            let block = AssertUnwindSafe(block).catch_unwind();
            let result = if b.exit == Exit::Cancel {
                tokio::select! {
                    r = block => r,
                    // Only once the body sent it: if the body panicked, the sender is
                    // dropped while the block is still rolling back, and the panic must go on.
                    Ok(()) = ready_rx => {
                        self.record(BlockResult::Cancelled);
                        return Ok(());
                    }
                }
            } else {
                block.await
            };
            match result {
                // The enclosing body ignores the block's result.
                Ok(Ok(())) => self.record(BlockResult::Ok),
                Ok(Err(e)) => self.record(self.classify(b.alias, &e)),
                // A panic goes through.
                Err(panic) => {
                    self.record(BlockResult::Panicked);
                    std::panic::resume_unwind(panic)
                }
            }
            Ok(())
        })
    }

    async fn run_program(&self, p: &Program) {
        for op in &p.ops {
            // A panic stops at the top-level operation; the program goes on. No `Conflict` is
            // left at top level to raise an error (see `Program::normalize`).
            if let Err(panic) = AssertUnwindSafe(self.run_ops(std::slice::from_ref(op)))
                .catch_unwind()
                .await
                && !panic.is::<ModelPanic>()
            {
                let msg = common::panic_message(&*panic);
                self.unexpected(format!("unexpected panic: {msg}"));
            }
        }
    }

    /// Runs one program and compares with the model.
    async fn case(&self, p: &Program) -> Result<(), TestCaseError> {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let n = p.inserts();
        let base = self.next_base.fetch_add(n.max(1), Ordering::Relaxed);
        self.base.store(base, Ordering::Relaxed);
        self.prepare_conflicts(p).await;
        self.clashes.store(true, Ordering::Relaxed);
        self.fx.log.lock().unwrap().clear();
        self.unexpected.lock().unwrap().clear();
        self.results.lock().unwrap().clear();

        self.run_program(p).await;

        let want = expected(p, self.flavor(), Flavor::SQLITE);
        *self.stats.lock().unwrap() += want.stats;
        let got_rows = [
            self.committed(Alias::A, n).await,
            self.committed(Alias::B, n).await,
        ];
        let got_hooks = self.fx.ran();
        let want_hooks: Vec<String> = want.hooks.iter().map(|l| format!("h{l}")).collect();
        let unexpected = std::mem::take(&mut *self.unexpected.lock().unwrap());
        let got_results = std::mem::take(&mut *self.results.lock().unwrap());
        if got_rows != want.rows
            || got_hooks != want_hooks
            || got_results != want.results
            || !unexpected.is_empty()
        {
            return Err(TestCaseError::fail(format!(
                "{:?}: the library and the model disagree\nprogram (A = {}, B = {}):\n{p}\
                 expected rows A {:?} B {:?}, hooks {want_hooks:?}\n\
                 actual   rows A {:?} B {:?}, hooks {got_hooks:?}\n\
                 expected block results {:?}\n\
                 actual   block results {got_results:?}\n\
                 unexpected: {unexpected:?}",
                self.backend,
                self.name(Alias::A),
                self.name(Alias::B),
                want.rows[0],
                want.rows[1],
                got_rows[0],
                got_rows[1],
                want.results,
            )));
        }
        // 7.3, on both aliases.
        self.fx.assert_pool_clean(self.fx.alias).await;
        self.fx_b.assert_pool_clean(self.fx_b.alias).await;
        Ok(())
    }
}

/// Waits until the server shows the helper's transaction (connection `id`) waiting for a lock.
/// Each poll is a query of its own, so the wait follows the server, never a sleep; 30 s without
/// the wait showing is a failure. The poll reads `SHOW ENGINE INNODB STATUS`, which InnoDB
/// writes anew for each call: `information_schema.innodb_trx` is a cache that InnoDB refreshes
/// only when nobody read it for 100 ms, so a poll that reads it without pausing never sees the
/// wait begin.
async fn lock_wait(watcher: &mut sqlx::MySqlConnection, id: u64) -> Result<(), String> {
    use sqlx::Row;
    let deadline = Instant::now() + Duration::from_secs(30);
    let thread = format!(" thread id {id},");
    loop {
        let status: String = sqlx::raw_sql("SHOW ENGINE INNODB STATUS")
            .fetch_one(&mut *watcher)
            .await
            .and_then(|row| row.try_get("Status"))
            .map_err(|e| format!("watching the helper: {e}"))?;
        // One section per open transaction, the helper's naming its connection; the report
        // of the latest deadlock, above them, names the helper too and must not count.
        let open = status
            .split_once("\nTRANSACTIONS\n")
            .map_or("", |(_, open)| open);
        let waiting = open
            .split("---TRANSACTION ")
            .any(|trx| trx.contains(&thread) && trx.contains("\nLOCK WAIT "));
        if waiting {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the helper's transaction never waited for the program's lock".into());
        }
        tokio::task::yield_now().await;
    }
}

/// Default program count times `SQLX_ATOMIC_PROPTEST_SCALE` (a multiplier, default 1).
fn cases(default: u32) -> u32 {
    let scale: f64 = std::env::var("SQLX_ATOMIC_PROPTEST_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((f64::from(default) * scale).round() as u32).max(1)
}

fn model_test(backend: Backend, default_cases: u32) {
    quiet_model_panics();
    let cases = cases(default_cases);
    common::run(backend, move |fx| async move {
        let env = Arc::new(Env::new(fx).await);
        let e2 = env.clone();
        let t0 = Instant::now();
        // The proptest runner is synchronous: it runs on a blocking thread and drives each
        // program on the shared runtime.
        let result = tokio::task::spawn_blocking(move || {
            let handle = tokio::runtime::Handle::current();
            let config = Config {
                cases,
                failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
                    "proptest-regressions/model_props.txt",
                ))),
                source_file: Some(file!()),
                max_shrink_iters: 4096,
                ..Config::default()
            };
            let mut runner = TestRunner::new(config);
            let programs = arb_program(Gen::of(backend));
            runner.run(&programs, |p| handle.block_on(e2.case(&p)))
        })
        .await
        .expect("the proptest runner");
        eprintln!(
            "model_props {backend:?}: {} programs run ({cases} asked) in {:.1?}; model coverage: {:?}",
            env.runs.load(Ordering::Relaxed),
            t0.elapsed(),
            env.stats.lock().unwrap()
        );
        env.drop_tables().await;
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, p)) => {
                panic!("{why}\nminimal program:\n{p}\n{p:?}")
            }
            Err(TestError::Abort(why)) => panic!("proptest aborted: {why}"),
        }
    });
}

/// Runs one program for real on `backend` and compares it with the model, as the property test
/// does (nothing when the server is not available: the harness says so).
fn run_for_real(backend: Backend, p: &Program) {
    quiet_model_panics();
    let p = p.clone();
    common::run(backend, move |fx| async move {
        let env = Env::new(fx).await;
        let outcome = env.case(&p).await;
        env.drop_tables().await;
        if let Err(e) = outcome {
            panic!("{e}");
        }
    });
}

#[test]
fn model_sqlite() {
    model_test(Backend::Sqlite, 2000);
}

#[test]
fn model_postgres() {
    model_test(Backend::Postgres, 300);
}

#[test]
fn model_mysql() {
    model_test(Backend::MySql, 300);
}

#[test]
fn model_postgres_through_pgbouncer() {
    model_test(Backend::PgBouncer, 300);
}

#[test]
fn model_mariadb_galera_node() {
    model_test(Backend::Galera, 100);
}

// ---------------------------------------------------------------------------------------------
// The model itself, on programs whose outcome the contract spells out.

fn block(alias: Alias, savepoint: bool, exit: Exit, body: Vec<Op>) -> Op {
    Op::Block(Block::new(alias, savepoint, exit, body))
}

fn read_only_block(alias: Alias, exit: Exit, body: Vec<Op>) -> Op {
    Op::Block(Block {
        read_only: Some(true),
        ..Block::new(alias, true, exit, body)
    })
}

fn prog(ops: Vec<Op>) -> Program {
    Program { ops }.normalize()
}

use Alias::{A, B};
use Op::{FailingStatement as Fail, Insert as Ins, OnCommit as Hook, SetRollback as SetRb};

#[test]
fn model_rule_1_4_savepointless_failure_dooms_the_parent() {
    let p = prog(vec![block(
        A,
        true,
        Exit::Ok,
        vec![
            Ins(A, 0),
            block(A, false, Exit::Err, vec![Ins(A, 0)]),
            Ins(A, 0), // refused (3.1)
            Hook(A, 0),
        ],
    )]);
    let e = expected(&p, Flavor::SQLITE, Flavor::SQLITE);
    assert!(e.rows.iter().all(Vec::is_empty));
    assert!(e.hooks.is_empty());
}

#[test]
fn model_rule_5_4_savepoint_rollback_discards_its_rows_and_hooks() {
    let p = prog(vec![block(
        A,
        true,
        Exit::Ok,
        vec![
            Ins(A, 0),
            Hook(A, 0),
            block(A, true, Exit::Cancel, vec![Ins(A, 0), Hook(A, 0)]),
            block(A, true, Exit::Ok, vec![Ins(A, 0), Hook(A, 0)]),
            Hook(A, 0),
        ],
    )]);
    let e = expected(&p, Flavor::SQLITE, Flavor::SQLITE);
    assert_eq!(e.rows, [vec![0, 2], vec![]]);
    assert_eq!(e.hooks, [0, 2, 3]);
}

#[test]
fn model_rule_6_2_aliases_are_independent_and_panics_go_through() {
    let p = prog(vec![
        block(
            A,
            true,
            Exit::Ok,
            vec![
                Ins(A, 0),
                block(B, true, Exit::Ok, vec![Ins(B, 0), Hook(B, 0)]),
                Hook(A, 0),
                block(B, true, Exit::Ok, vec![block(A, true, Exit::Panic, vec![])]),
            ],
        ),
        Ins(B, 0),
        Hook(A, 0),
    ]);
    let e = expected(&p, Flavor::SQLITE, Flavor::SQLITE);
    assert_eq!(e.rows, [vec![], vec![1, 2]]);
    assert_eq!(e.hooks, [0, 2]);
}

#[test]
fn model_rule_7_2_cleared_flag_after_an_abort_does_not_commit_on_postgres() {
    let p = prog(vec![block(
        A,
        true,
        Exit::Ok,
        vec![
            Ins(A, 0),
            Hook(A, 0),
            block(A, false, Exit::Ok, vec![Fail(A)]),
            SetRb(A, false),
        ],
    )]);
    let e = expected(&p, Flavor::POSTGRES, Flavor::SQLITE);
    assert!(e.rows.iter().all(Vec::is_empty));
    assert!(e.hooks.is_empty());
    assert_eq!(e.stats.aborted_commits, 1);
    // Elsewhere the statement failure does not abort the transaction.
    let e = expected(&p, Flavor::SQLITE, Flavor::SQLITE);
    assert_eq!(e.rows, [vec![0], vec![]]);
    assert_eq!(e.hooks, [0]);
}

#[test]
fn model_rule_7_2_rollback_to_an_earlier_savepoint_ends_the_abort() {
    let p = prog(vec![block(
        A,
        true,
        Exit::Ok,
        vec![
            Ins(A, 0),
            block(
                A,
                true,
                Exit::Ok,
                vec![
                    Ins(A, 0),
                    block(A, false, Exit::Ok, vec![Fail(A)]),
                    SetRb(A, false),
                    Ins(A, 0), // fails on PostgreSQL: the savepoint rolls back
                ],
            ),
            Ins(A, 0),
        ],
    )]);
    let e = expected(&p, Flavor::POSTGRES, Flavor::SQLITE);
    assert_eq!(e.rows, [vec![0, 3], vec![]]);
    let e = expected(&p, Flavor::SQLITE, Flavor::SQLITE);
    assert_eq!(e.rows, [vec![0, 1, 2, 3], vec![]]);
}

#[test]
fn model_rule_11_1_an_ignored_error_is_reported_with_the_first_cause() {
    use BlockResult::{Ok as Kept, RolledBack};
    let p = prog(vec![block(
        A,
        true,
        Exit::Ok,
        vec![
            Ins(A, 0),
            // Its savepoint is rolled back for an error: it reports it; the outer body goes on.
            block(A, true, Exit::Ok, vec![Ins(A, 0), Fail(A)]),
            // No savepoint: its body's `Ok` stands, the error passes to the outer block.
            block(A, false, Exit::Ok, vec![Fail(A)]),
            Fail(A), // refused (3.1)
        ],
    )]);
    let e = expected(&p, Flavor::SQLITE, Flavor::SQLITE);
    assert!(e.rows.iter().all(Vec::is_empty));
    assert_eq!(
        e.results,
        [RolledBack(Why::NotNull), Kept, RolledBack(Why::NotNull)]
    );
    // On PostgreSQL the second error is the first statement sent after the savepoint's
    // ROLLBACK TO: the abort had ended, so it is the NOT NULL violation again.
    let e = expected(&p, Flavor::POSTGRES, Flavor::SQLITE);
    assert_eq!(
        e.results,
        [RolledBack(Why::NotNull), Kept, RolledBack(Why::NotNull)]
    );
}

#[test]
fn model_rule_2_3_set_rollback_clears_the_error_behind_the_flag() {
    let asked = prog(vec![block(
        A,
        true,
        Exit::Ok,
        vec![Ins(A, 0), Fail(A), SetRb(A, true)],
    )]);
    let cleared = prog(vec![block(
        A,
        true,
        Exit::Ok,
        vec![Ins(A, 0), Fail(A), SetRb(A, false), Hook(A, 0)],
    )]);
    for flavor in [Flavor::SQLITE, Flavor::MYSQL] {
        let e = expected(&asked, flavor, Flavor::SQLITE);
        assert_eq!(e.results, [BlockResult::Ok]);
        assert!(e.rows.iter().all(Vec::is_empty));
        let e = expected(&cleared, flavor, Flavor::SQLITE);
        assert_eq!(e.results, [BlockResult::Ok]);
        assert_eq!((e.rows, e.hooks), ([vec![0], vec![]], vec![0]));
    }
    let e = expected(&asked, Flavor::POSTGRES, Flavor::SQLITE);
    assert_eq!(e.results, [BlockResult::Ok]);
    // The aborted transaction cannot commit.
    let e = expected(&cleared, Flavor::POSTGRES, Flavor::SQLITE);
    assert_eq!(e.results, [BlockResult::Aborted]);
    assert!(e.rows.iter().all(Vec::is_empty) && e.hooks.is_empty());
}

#[test]
fn model_rule_11_2_a_refused_savepoint_fails_every_open_block() {
    let p = prog(vec![block(
        A,
        true,
        Exit::Ok,
        vec![
            Fail(A),
            SetRb(A, false),
            block(
                A,
                true,
                Exit::Ok,
                vec![
                    block(A, true, Exit::Ok, vec![Ins(A, 0)]), // its SAVEPOINTs are refused
                    SetRb(A, false),
                ],
            ),
            SetRb(A, false),
            block(A, false, Exit::Ok, vec![]), // opened afterwards: fails too
        ],
    )]);
    let e = expected(&p, Flavor::POSTGRES, Flavor::SQLITE);
    assert_eq!(
        e.results,
        [BlockResult::RolledBack(Why::InAbortedTransaction); 4]
    );
    assert_eq!(e.stats.broken, 1);
    // Without the abort, the cleared flag lets everything commit.
    let e = expected(&p, Flavor::MYSQL, Flavor::SQLITE);
    assert_eq!(e.results, [BlockResult::Ok; 4]);
    assert_eq!(e.rows, [vec![0], vec![]]);
}

#[test]
fn model_read_only_transactions_refuse_inserts_and_sqlite_refuses_the_option() {
    let p = prog(vec![
        read_only_block(
            A,
            Exit::Ok,
            vec![
                Hook(A, 0),
                block(A, true, Exit::Ok, vec![Ins(A, 0)]),
                Ins(A, 0),
            ],
        ),
        read_only_block(A, Exit::Ok, vec![Hook(A, 0)]),
        read_only_block(B, Exit::Panic, vec![Ins(B, 0)]),
    ]);
    for flavor in [Flavor::POSTGRES, Flavor::MYSQL] {
        let e = expected(&p, flavor, Flavor::SQLITE);
        assert!(e.rows.iter().all(Vec::is_empty));
        // A read-only transaction with no statement commits: its hook runs.
        assert_eq!(e.hooks, [1]);
        assert_eq!(
            e.results,
            [
                BlockResult::RolledBack(Why::ReadOnly),
                BlockResult::RolledBack(Why::ReadOnly),
                BlockResult::Ok,
                BlockResult::Unsupported,
            ]
        );
    }
    let e = expected(&p, Flavor::SQLITE, Flavor::SQLITE);
    assert_eq!(e.results, [BlockResult::Unsupported; 3]);
    assert!(e.rows.iter().all(Vec::is_empty) && e.hooks.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Conflicts and retry (11.2, 11.3): the model's prediction, then the same program for real.

fn conflict(raise: bool) -> Op {
    Op::Conflict {
        alias: A,
        row: 0,
        raise,
    }
}

/// A block with options, as only an outermost block carries them.
fn outer_block(
    isolation: Option<Isolation>,
    retry: Option<(u32, u32)>,
    exit: Exit,
    body: Vec<Op>,
) -> Op {
    Op::Block(Block {
        isolation,
        retry: retry.map(|(retries, conflicts)| Retry { retries, conflicts }),
        ..Block::new(A, true, exit, body)
    })
}

const REPEATABLE_READ: Option<Isolation> = Some(Isolation::RepeatableRead);

#[test]
fn model_rule_11_2_a_conflict_in_a_nested_block_fails_every_block_on_mariadb_only() {
    use BlockResult::{Ok as Kept, RolledBack};
    let p = prog(vec![outer_block(
        REPEATABLE_READ,
        None,
        Exit::Ok,
        vec![
            Ins(A, 0),
            Hook(A, 0),
            // The body ignores the conflict; the block's savepoint is there to catch it.
            block(A, true, Exit::Ok, vec![Ins(A, 0), conflict(false)]),
            Ins(A, 0),
            block(A, true, Exit::Ok, vec![Ins(A, 0)]),
        ],
    )]);
    // MariaDB rolled the whole transaction back: every block fails with the deadlock (never
    // with a 1305 about the savepoint the server dropped, never with Ok), and nothing stays.
    let e = expected(&p, Flavor::MYSQL, Flavor::SQLITE);
    assert_eq!(e.results, [RolledBack(Why::Conflict); 3]);
    assert!(e.rows.iter().all(Vec::is_empty) && e.hooks.is_empty());
    assert_eq!((e.stats.whole_aborts, e.stats.refused), (1, 2));
    run_for_real(Backend::MySql, &p);
    // PostgreSQL failed the statement only: the savepoint recovers, the rest commits.
    let e = expected(&p, Flavor::POSTGRES, Flavor::SQLITE);
    assert_eq!(e.results, [RolledBack(Why::Conflict), Kept, Kept]);
    assert_eq!((e.rows, e.hooks), ([vec![0, 2, 3], vec![]], vec![0]));
    run_for_real(Backend::Postgres, &p);
    // Under READ COMMITTED PostgreSQL's update sees the helper's row: no conflict at all.
    let Op::Block(mut read_committed) = p.ops[0].clone() else {
        unreachable!()
    };
    read_committed.isolation = None;
    let p = Program {
        ops: vec![Op::Block(read_committed)],
    };
    let e = expected(&p, Flavor::POSTGRES, Flavor::SQLITE);
    assert_eq!(e.results, [Kept; 3]);
    assert_eq!(e.rows, [vec![0, 1, 2, 3], vec![]]);
    assert_eq!(e.stats.conflicts_missed, 1);
    run_for_real(Backend::Postgres, &p);
}

#[test]
fn model_rule_11_3_retry_runs_the_block_again_as_a_new_transaction() {
    // The first attempt meets the conflict, the second runs clean.
    let p = prog(vec![outer_block(
        Some(Isolation::Serializable),
        Some((2, 1)),
        Exit::Ok,
        vec![
            Ins(A, 0),
            Hook(A, 0),
            block(B, true, Exit::Ok, vec![Ins(B, 0), Hook(B, 0)]),
            conflict(true),
            Ins(A, 0),
        ],
    )]);
    for flavor in [Flavor::POSTGRES, Flavor::MYSQL] {
        let e = expected(&p, flavor, Flavor::SQLITE);
        // The failed attempt's rows and hooks on A are gone; what it committed on B stays
        // committed (6.2), and the second attempt commits it again.
        assert_eq!(e.rows, [vec![0, 2], vec![1, 1]]);
        assert_eq!(e.hooks, [1, 1, 0]);
        assert_eq!(e.results, [BlockResult::Ok; 3]);
        assert_eq!(e.stats.retries, 1);
    }
    run_for_real(Backend::Postgres, &p);
    run_for_real(Backend::MySql, &p);
}

#[test]
fn model_rule_11_3_retries_exhausted_counts_the_attempts() {
    let body = |raise| vec![Ins(A, 0), Hook(A, 0), conflict(raise), Ins(A, 0)];
    // Every attempt meets the conflict: one retry, then the block gives up, whether the body
    // raised the conflict or ignored it.
    for raise in [true, false] {
        let p = prog(vec![outer_block(
            REPEATABLE_READ,
            Some((1, 3)),
            Exit::Ok,
            body(raise),
        )]);
        for flavor in [Flavor::POSTGRES, Flavor::MYSQL] {
            let e = expected(&p, flavor, Flavor::SQLITE);
            assert_eq!(e.results, [BlockResult::RetriesExhausted(2)]);
            assert!(e.rows.iter().all(Vec::is_empty) && e.hooks.is_empty());
        }
        run_for_real(Backend::Postgres, &p);
        run_for_real(Backend::MySql, &p);
    }
    // Without `retry` the conflict is returned as the body raised it, or as the cause of the
    // rollback when the body ignored it.
    for (raise, want) in [
        (true, BlockResult::Raised(Why::Conflict)),
        (false, BlockResult::RolledBack(Why::Conflict)),
    ] {
        let p = prog(vec![outer_block(
            REPEATABLE_READ,
            None,
            Exit::Ok,
            body(raise),
        )]);
        for flavor in [Flavor::POSTGRES, Flavor::MYSQL] {
            assert_eq!(expected(&p, flavor, Flavor::SQLITE).results, [want]);
        }
        run_for_real(Backend::Postgres, &p);
        run_for_real(Backend::MySql, &p);
    }
}

#[test]
fn model_rule_11_3_only_an_attempt_that_a_conflict_doomed_runs_again() {
    use BlockResult::{Ok as Kept, Panicked, RolledBack};
    // PostgreSQL's savepoint catches the conflict: the attempt commits and is not run again.
    // On MariaDB the conflict rolled the whole attempt back: it runs again until an attempt is
    // clean (three meet the conflict, three retries are allowed).
    let p = prog(vec![outer_block(
        REPEATABLE_READ,
        Some((3, 3)),
        Exit::Ok,
        vec![block(A, true, Exit::Ok, vec![conflict(false)]), Ins(A, 0)],
    )]);
    let e = expected(&p, Flavor::POSTGRES, Flavor::SQLITE);
    assert_eq!(e.results, [RolledBack(Why::Conflict), Kept]);
    assert_eq!((e.rows[0].clone(), e.stats.retries), (vec![0], 0));
    let e = expected(&p, Flavor::MYSQL, Flavor::SQLITE);
    assert_eq!(
        e.results,
        [
            RolledBack(Why::Conflict),
            RolledBack(Why::Conflict),
            RolledBack(Why::Conflict),
            Kept,
            Kept
        ]
    );
    assert_eq!((e.rows[0].clone(), e.stats.retries), (vec![0], 3));
    run_for_real(Backend::Postgres, &p);
    run_for_real(Backend::MySql, &p);

    // A panic leaves the block for good, conflict or not.
    let p = prog(vec![outer_block(
        REPEATABLE_READ,
        Some((3, 3)),
        Exit::Panic,
        vec![Ins(A, 0), conflict(false)],
    )]);
    for flavor in [Flavor::POSTGRES, Flavor::MYSQL] {
        assert_eq!(expected(&p, flavor, Flavor::SQLITE).results, [Panicked]);
    }
    run_for_real(Backend::Postgres, &p);
    run_for_real(Backend::MySql, &p);

    // `set_rollback(true)` forgets the conflict behind the flag (2.2): PostgreSQL's attempt
    // returns the body's `Ok` and is not run again. MariaDB's transaction is broken, and its
    // blocks fail with the conflict whatever the flag says (11.2): the attempt runs again, and
    // the clean one returns `Ok`, rolled back as asked.
    let p = prog(vec![outer_block(
        REPEATABLE_READ,
        Some((1, 1)),
        Exit::Ok,
        vec![Ins(A, 0), conflict(false), SetRb(A, true)],
    )]);
    for (flavor, retries) in [(Flavor::POSTGRES, 0), (Flavor::MYSQL, 1)] {
        let e = expected(&p, flavor, Flavor::SQLITE);
        assert_eq!((e.results, e.stats.retries), (vec![Kept], retries));
        assert!(e.rows.iter().all(Vec::is_empty));
    }
    run_for_real(Backend::Postgres, &p);
    run_for_real(Backend::MySql, &p);
}

#[test]
fn model_rule_11_3_a_body_that_returns_its_own_err_after_a_conflict_is_retried() {
    // The library cannot see into the body's error type: it reads what doomed the transaction.
    // A body that ignored the conflict and returned an `Err` of its own is run again like one
    // that raised the conflict, and `RetriesExhausted` takes the place of its last `Err`.
    let body = vec![Ins(A, 0), conflict(false)];
    let p = prog(vec![outer_block(
        REPEATABLE_READ,
        Some((1, 1)),
        Exit::Err,
        body.clone(),
    )]);
    for flavor in [Flavor::POSTGRES, Flavor::MYSQL] {
        let e = expected(&p, flavor, Flavor::SQLITE);
        // The clean second attempt rolls back for the body's `Err` alone, which it returns.
        assert_eq!((e.results, e.stats.retries), (vec![BlockResult::Err], 1));
    }
    run_for_real(Backend::Postgres, &p);
    run_for_real(Backend::MySql, &p);
    let p = prog(vec![outer_block(
        REPEATABLE_READ,
        Some((0, 1)),
        Exit::Err,
        body,
    )]);
    for flavor in [Flavor::POSTGRES, Flavor::MYSQL] {
        let e = expected(&p, flavor, Flavor::SQLITE);
        assert_eq!(e.results, [BlockResult::RetriesExhausted(1)]);
    }
    run_for_real(Backend::Postgres, &p);
    run_for_real(Backend::MySql, &p);
}
