//! A model-based property test. Random programs of atomic blocks, savepoints, transaction
//! options, failing statements, rollback flags, hooks, errors, panics and cancellations run for
//! real through the public API, on two aliases at once, and the rows committed, the hooks run
//! and what each block returned are compared with the reference model (tests/model/mod.rs).
//!
//! Alias A is the backend under test ("sqlite", "pg" or "my"), alias B is "other" (SQLite).
//! Default: 2,000 programs on SQLite and 300 on each server; `SQLX_ATOMIC_PROPTEST_SCALE=25`
//! multiplies these counts for long runs.

mod common;
mod model;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Once};

use common::{Backend, Fx};
use futures::FutureExt;
use model::{Alias, Block, BlockResult, Exit, Flavor, Isolation, Op, Program, Why, expected};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};
use sqlx::AssertSqlSafe;
use sqlx_atomic::{Atomic, Error, ErrorKind};

// ---------------------------------------------------------------------------------------------
// Generation

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

/// A leaf operation; values and labels are numbered by [`Program::normalize`].
fn arb_leaf(top_level: bool) -> BoxedStrategy<Op> {
    let plain = prop_oneof![
        5 => arb_alias().prop_map(|a| Op::Insert(a, 0)),
        2 => arb_alias().prop_map(Op::FailingStatement),
        3 => arb_alias().prop_map(|a| Op::OnCommit(a, 0)),
    ];
    if top_level {
        plain.boxed()
    } else {
        prop_oneof![
            10 => plain,
            3 => (arb_alias(), any::<bool>()).prop_map(|(a, f)| Op::SetRollback(a, f)),
        ]
        .boxed()
    }
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

/// How often the blocks of each alias (index by [`Alias::index`]) give `read_only`, in percent.
/// SQLite refuses the option, and the body of a refused block does not run: a few such blocks
/// show the refusal, more would only take blocks away from the rest of the model.
fn read_only_percent(backend: Backend) -> [u32; 2] {
    const ON_SQLITE: u32 = 4;
    match backend {
        Backend::Sqlite => [ON_SQLITE, ON_SQLITE],
        Backend::Postgres | Backend::MySql => [24, ON_SQLITE],
    }
}

/// `isolation`, kept only where `read_only` is; it changes nothing for a single task.
fn arb_isolation() -> impl Strategy<Value = Option<Isolation>> {
    prop_oneof![
        4 => Just(None),
        1 => Just(Some(Isolation::ReadUncommitted)),
        1 => Just(Some(Isolation::ReadCommitted)),
        1 => Just(Some(Isolation::RepeatableRead)),
        1 => Just(Some(Isolation::Serializable)),
    ]
}

/// A block whose body nests blocks `levels - 1` deep at most.
fn arb_block(levels: u32, read_only: [u32; 2]) -> BoxedStrategy<Block> {
    let op = if levels <= 1 {
        arb_leaf(false)
    } else {
        prop_oneof![
            3 => arb_leaf(false),
            1 => arb_block(levels - 1, read_only).prop_map(Op::Block),
        ]
        .boxed()
    };
    (
        arb_alias().prop_flat_map(move |a| (Just(a), arb_read_only(read_only[a.index()]))),
        proptest::bool::weighted(0.75),
        arb_isolation(),
        vec(op, 0..=6),
        arb_exit(),
    )
        .prop_map(
            |((alias, read_only), savepoint, isolation, body, exit)| Block {
                alias,
                savepoint,
                read_only,
                isolation,
                body,
                exit,
            },
        )
        .boxed()
}

/// A top-level program: up to 4 operations, blocks nested up to 4 deep.
fn arb_program(read_only: [u32; 2]) -> impl Strategy<Value = Program> {
    vec(
        prop_oneof![
            1 => arb_leaf(true),
            3 => arb_block(4, read_only).prop_map(Op::Block),
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

struct Env {
    backend: Backend,
    /// The fixture of alias A (its table and the hook log).
    fx: Fx,
    /// The same table on alias B ("other", SQLite), sharing the hook log.
    fx_b: Fx,
    /// The values of the current program are `base + 0..n`.
    base: AtomicI64,
    next_base: AtomicI64,
    /// API calls that should have succeeded and did not, or panics that are not ours.
    unexpected: Mutex<Vec<String>>,
    /// What each block returned, in the order the blocks ended.
    results: Mutex<Vec<BlockResult>>,
    /// Programs run, shrinking included.
    runs: AtomicI64,
    /// The model's coverage counts over every program run.
    stats: Mutex<model::Stats>,
}

/// The model's name for the error, of code `code` on `backend`, behind a block's `RolledBack`.
fn why(backend: Backend, code: Option<&str>) -> Option<Why> {
    match (backend, code?) {
        (Backend::Sqlite, "1299") | (Backend::Postgres, "23502") | (Backend::MySql, "23000") => {
            Some(Why::NotNull)
        }
        (Backend::Postgres, "25P02") => Some(Why::InAbortedTransaction),
        (Backend::Postgres | Backend::MySql, "25006") => Some(Why::ReadOnly),
        _ => None,
    }
}

type BoxFut<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

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
        Env {
            backend: fx.backend,
            fx,
            fx_b,
            base: AtomicI64::new(0),
            next_base: AtomicI64::new(0),
            unexpected: Mutex::new(Vec::new()),
            results: Mutex::new(Vec::new()),
            runs: AtomicI64::new(0),
            stats: Mutex::new(model::Stats::default()),
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
            Backend::Postgres => Flavor::POSTGRES,
            Backend::MySql => Flavor::MYSQL,
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
        let backend = self.fx_of(a).backend;
        match e.kind() {
            // The body's own.
            ErrorKind::Sqlx(sqlx::Error::RowNotFound) => BlockResult::Err,
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
            _ => {
                self.unexpected(format!("block on {a}: {e}"));
                BlockResult::Err
            }
        }
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
            Backend::Postgres => {
                let sql = AssertSqlSafe(format!("INSERT INTO {} (v) VALUES ($1)", fx.table));
                sqlx::query(sql)
                    .bind(v.map(|v| v as i32))
                    .execute(sqlx_atomic::postgres(fx.alias))
                    .await?;
            }
            Backend::MySql => {
                let sql = AssertSqlSafe(format!("INSERT INTO {} (v) VALUES (?)", fx.table));
                sqlx::query(sql)
                    .bind(v)
                    .execute(sqlx_atomic::mysql(fx.alias))
                    .await?;
            }
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
            Backend::Postgres => {
                let sql = AssertSqlSafe(format!(
                    "SELECT CAST(v AS BIGINT) FROM {} WHERE v >= $1 AND v < $2 ORDER BY v",
                    fx.table
                ));
                let p = sqlx_atomic::pool::<sqlx::Postgres>(fx.alias).unwrap();
                sqlx::query_scalar(sql)
                    .bind(lo)
                    .bind(hi)
                    .fetch_all(&p)
                    .await
                    .unwrap()
            }
            Backend::MySql => {
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
                    Op::Block(b) => self.run_block(b).await,
                }
            }
        })
    }

    fn run_block<'a>(&'a self, b: &'a Block) -> BoxFut<'a> {
        Box::pin(async move {
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
            let body = async move {
                self.run_ops(&b.body).await;
                match b.exit {
                    Exit::Ok => Ok(()),
                    Exit::Err => Err(Error::from(sqlx::Error::RowNotFound)),
                    Exit::Panic => std::panic::panic_any(ModelPanic),
                    Exit::Cancel => {
                        // Dropped at this await point by the select below.
                        let _ = ready_tx.send(());
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
            let block = atomic.run(body);
            let block = AssertUnwindSafe(block).catch_unwind();
            let result = if b.exit == Exit::Cancel {
                tokio::select! {
                    r = block => r,
                    // Only once the body sent it: if the body panicked, the sender is
                    // dropped while the block is still rolling back, and the panic must go on.
                    Ok(()) = ready_rx => {
                        self.record(BlockResult::Cancelled);
                        return;
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
        })
    }

    async fn run_program(&self, p: &Program) {
        for op in &p.ops {
            // A panic stops at the top-level operation; the program goes on.
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
        let t0 = std::time::Instant::now();
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
            let programs = arb_program(read_only_percent(backend));
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
        env.fx_b
            .raw(&format!("DROP TABLE {}", env.fx_b.table))
            .await;
        match result {
            Ok(()) => {}
            Err(TestError::Fail(why, p)) => {
                panic!("{why}\nminimal program:\n{p}\n{p:?}")
            }
            Err(TestError::Abort(why)) => panic!("proptest aborted: {why}"),
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
