//! Minimal programs on which the library and the reference model of SEMANTICS.md
//! (tests/model/mod.rs) disagree, found by tests/model_props.rs. Each test states the program,
//! what the contract expects and what the library did when it was found. They may fail until
//! the library is fixed.

mod common;
mod model;

use common::{Backend, Fx};
use model::{Alias, Block, BlockResult, Exit, Flavor, Op, Program, expected};
use sqlx::AssertSqlSafe;
use sqlx_atomic::{Atomic, Error};

/// PostgreSQL, rule 7.2. The program (alias A = "pg"):
///
/// ```text
/// block A {
///     insert A 0
///     block A savepoint=false {
///         failing statement A      -- PostgreSQL aborts the transaction; needs-rollback is set
///     } exit Ok                    -- fails: needs-rollback passes to the outer block
///     set_rollback A false         -- the user clears the flag (2.3)
///     block A {
///         insert A 1               -- its owed SAVEPOINT is refused by the aborted server
///     } exit Ok
///     set_rollback A false         -- the user clears the flag again
/// } exit Ok
/// ```
///
/// Expected: nothing committed, no hook, and the outermost block reports an error: its body
/// returned `Ok` with needs-rollback clear, so it leaves normally (1.3) on a transaction the
/// server aborted, and 7.2 forbids reporting success there (as the library does when the inner
/// block is left out: `Aborted`). Actual (when found): nothing committed, but the outermost block
/// returns `Ok(())`: the refused SAVEPOINT marked the transaction as only fit for a rollback, and
/// that rollback is reported as success.
#[test]
fn postgres_rule_7_2_refused_savepoint_then_cleared_flag_reports_success() {
    let program = Program {
        ops: vec![Op::Block(Block {
            alias: Alias::A,
            savepoint: true,
            exit: Exit::Ok,
            body: vec![
                Op::Insert(Alias::A, 0),
                Op::Block(Block {
                    alias: Alias::A,
                    savepoint: false,
                    exit: Exit::Ok,
                    body: vec![Op::FailingStatement(Alias::A)],
                }),
                Op::SetRollback(Alias::A, false),
                Op::Block(Block {
                    alias: Alias::A,
                    savepoint: true,
                    exit: Exit::Ok,
                    body: vec![Op::Insert(Alias::A, 0)],
                }),
                Op::SetRollback(Alias::A, false),
            ],
        })],
    }
    .normalize();
    let want = expected(&program, Flavor::POSTGRES, Flavor::SQLITE);
    assert!(want.rows.iter().all(Vec::is_empty));
    assert_eq!(
        want.results,
        [BlockResult::Ok, BlockResult::Ok, BlockResult::Err]
    );

    common::run(Backend::Postgres, |fx: Fx| async move {
        let db = sqlx_atomic::postgres("pg");
        let ins = |v: &str| AssertSqlSafe(format!("INSERT INTO {} (v) VALUES ({v})", fx.table));
        let r = Atomic::new()
            .using("pg")
            .run(async {
                let _ = sqlx::query(ins("0")).execute(&db).await;
                let _ = Atomic::new()
                    .using("pg")
                    .savepoint(false)
                    .run(async {
                        sqlx::query(ins("NULL"))
                            .execute(&db)
                            .await
                            .map_err(Error::from)
                    })
                    .await;
                sqlx_atomic::using("pg").set_rollback(false)?;
                let inner = Atomic::new()
                    .using("pg")
                    .run(async {
                        let _ = sqlx::query(ins("1")).execute(&db).await;
                        Ok::<_, Error>(())
                    })
                    .await;
                assert!(inner.is_ok(), "{inner:?}");
                sqlx_atomic::using("pg").set_rollback(false)?;
                Ok::<_, Error>(())
            })
            .await;
        assert_eq!(fx.committed().await, Vec::<i64>::new());
        assert!(
            r.is_err(),
            "the outermost block rolled back a transaction PostgreSQL had aborted, yet reported \
             success"
        );
    });
}
