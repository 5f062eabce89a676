//! Minimal programs, found by tests/model_props.rs, on which the library and the reference model
//! (tests/model/mod.rs) are easy to get wrong. Each test states the program and what must hold,
//! checks the model's prediction, then runs the program for real.

mod common;
mod model;

use common::{Backend, Fx};
use model::{Alias, Block, BlockResult, Exit, Flavor, Op, Program, Why, expected};
use sqlx::AssertSqlSafe;
use sqlx_atomic::{Atomic, Error, ErrorKind};

/// PostgreSQL, rules 7.2 and 11.2. The program (alias A = "pg"):
///
/// ```text
/// block A {
///     insert A 0
///     block A savepoint=false {
///         failing statement A      -- PostgreSQL aborts the transaction; needs-rollback is set
///     } exit Ok                    -- returns Ok: needs-rollback passes to the outer block
///     set_rollback A false         -- the user clears the flag, and the error behind it (2.3)
///     block A {
///         insert A 1               -- its owed SAVEPOINT is refused by the aborted server (25P02)
///     } exit Ok                    -- the transaction is fatal: returns RolledBack (25P02)
///     set_rollback A false         -- the user clears the flag again: the transaction stays fatal
/// } exit Ok                        -- rolls back and returns RolledBack (25P02)
/// ```
///
/// Expected: nothing committed, no hook; the savepoint-less block returns its body's `Ok`, and
/// every block that exits after the refused SAVEPOINT, the nested one and the outermost,
/// returns `RolledBack` with the refused statement's error (SQLSTATE 25P02), whatever the flag
/// says: a block never returns `Ok` for work that was not kept.
#[test]
fn postgres_rule_11_2_refused_savepoint_fails_every_open_block_despite_a_cleared_flag() {
    let program = Program {
        ops: vec![Op::Block(Block::new(
            Alias::A,
            true,
            Exit::Ok,
            vec![
                Op::Insert(Alias::A, 0),
                Op::Block(Block::new(
                    Alias::A,
                    false,
                    Exit::Ok,
                    vec![Op::FailingStatement(Alias::A)],
                )),
                Op::SetRollback(Alias::A, false),
                Op::Block(Block::new(
                    Alias::A,
                    true,
                    Exit::Ok,
                    vec![Op::Insert(Alias::A, 0)],
                )),
                Op::SetRollback(Alias::A, false),
            ],
        ))],
    }
    .normalize();
    let want = expected(&program, Flavor::POSTGRES, Flavor::SQLITE);
    assert!(want.rows.iter().all(Vec::is_empty));
    assert!(want.hooks.is_empty());
    assert_eq!(
        want.results,
        [
            BlockResult::Ok,
            BlockResult::RolledBack(Why::InAbortedTransaction),
            BlockResult::RolledBack(Why::InAbortedTransaction),
        ]
    );

    common::run(Backend::Postgres, |fx: Fx| async move {
        let db = sqlx_atomic::postgres("pg");
        let ins = |v: &str| AssertSqlSafe(format!("INSERT INTO {} (v) VALUES ({v})", fx.table));
        let rolled_back_by_25p02 = |r: &Result<(), Error>| {
            matches!(r, Err(e) if matches!(e.kind(), ErrorKind::RolledBack(_))
                && e.code().as_deref() == Some("25P02"))
        };
        let r = Atomic::new()
            .using("pg")
            .run(async {
                let _ = sqlx::query(ins("0")).execute(&db).await;
                let savepointless = Atomic::new()
                    .using("pg")
                    .savepoint(false)
                    .run(async {
                        let _ = sqlx::query(ins("NULL")).execute(&db).await;
                        Ok::<_, Error>(())
                    })
                    .await;
                assert!(savepointless.is_ok(), "{savepointless:?}");
                sqlx_atomic::using("pg").set_rollback(false)?;
                let inner = Atomic::new()
                    .using("pg")
                    .run(async {
                        let _ = sqlx::query(ins("1")).execute(&db).await;
                        Ok::<_, Error>(())
                    })
                    .await;
                assert!(rolled_back_by_25p02(&inner), "{inner:?}");
                sqlx_atomic::using("pg").set_rollback(false)?;
                Ok::<_, Error>(())
            })
            .await;
        assert_eq!(fx.committed().await, Vec::<i64>::new());
        assert!(
            rolled_back_by_25p02(&r),
            "the outermost block rolled back a transaction whose SAVEPOINT PostgreSQL refused: \
             it must return RolledBack with that error, got {r:?}"
        );
    });
}
