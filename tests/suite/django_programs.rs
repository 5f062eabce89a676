//! The 14 reference programs of docs/semantics.md §9.5 (whose statements were measured on Django
//! 5.2), written once: the behavioural suite pins what they send (`rule_9_5_…`, `rule_9_2_…` in
//! `rules.rs`) and `benches/statement_counts.rs` prints it beside Django's counts.

use std::future::Future;
use std::pin::Pin;

use sqlx_atomic::{Atomic, Error, OnCommit};

/// One program, not started: it does nothing until awaited.
pub type Program<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// The pieces the programs are made of, on one alias.
pub trait Ops: Sync {
    /// A block on the alias.
    fn atomic(&self) -> Atomic;
    /// One INSERT through the alias's ambient handle.
    fn ins(&self) -> impl Future<Output = Result<(), Error>> + Send + '_;
    /// `SELECT COUNT(*)` through the alias's ambient handle.
    fn count(&self) -> impl Future<Output = Result<i64, Error>> + Send + '_;
    /// A hook that does nothing, on the alias.
    fn on_commit(&self) -> OnCommit;
}

fn boom() -> Error {
    Error::from(sqlx::Error::RowNotFound)
}

/// `atomic { ins; atomic(savepoint) { ins; fail } }`, the inner failure caught: P7 with a
/// savepoint, P9 without one.
fn ins_then_failing_inner<O: Ops>(o: &O, savepoint: bool) -> Program<'_> {
    Box::pin(o.atomic().run(async move {
        o.ins().await?;
        let _ = o
            .atomic()
            .savepoint(savepoint)
            .run(async {
                o.ins().await?;
                Err::<(), _>(boom())
            })
            .await;
        Ok::<_, Error>(())
    }))
}

/// P1 … P14, in the order of the table in docs/semantics.md §9.5.
pub fn programs<O: Ops>(o: &O) -> Vec<Program<'_>> {
    vec![
        // P1 atomic { ins }
        Box::pin(o.atomic().run(o.ins())),
        // P2 atomic { }
        Box::pin(o.atomic().run(async { Ok::<_, Error>(()) })),
        // P3 atomic { ins; ins; ins }
        Box::pin(o.atomic().run(async {
            o.ins().await?;
            o.ins().await?;
            o.ins().await
        })),
        // P4 atomic { ins; atomic { ins } }
        Box::pin(o.atomic().run(async {
            o.ins().await?;
            o.atomic().run(o.ins()).await
        })),
        // P5 atomic { ins; atomic { } }
        Box::pin(o.atomic().run(async {
            o.ins().await?;
            o.atomic().run(async { Ok::<_, Error>(()) }).await
        })),
        // P6 atomic { atomic { atomic { ins } } }
        Box::pin(
            o.atomic()
                .run(async { o.atomic().run(o.atomic().run(o.ins())).await }),
        ),
        // P7 atomic { ins; atomic { ins; fail } }
        ins_then_failing_inner(o, true),
        // P8 atomic { ins; atomic(savepoint=False) { ins } }
        Box::pin(o.atomic().run(async {
            o.ins().await?;
            o.atomic().savepoint(false).run(o.ins()).await
        })),
        // P9 atomic { ins; atomic(savepoint=False) { ins; fail } }
        ins_then_failing_inner(o, false),
        // P10 atomic { ins; fail }
        Box::pin(o.atomic().run(async {
            o.ins().await?;
            Err::<(), _>(boom())
        })),
        // P11 atomic { ins; on_commit; atomic { ins; on_commit } }
        Box::pin(o.atomic().run(async {
            o.ins().await?;
            o.on_commit().await?;
            o.atomic()
                .run(async {
                    o.ins().await?;
                    o.on_commit().await
                })
                .await
        })),
        // P12 atomic { atomic { ins } ×5 }
        Box::pin(o.atomic().run(async {
            for _ in 0..5 {
                o.atomic().run(o.ins()).await?;
            }
            Ok::<_, Error>(())
        })),
        // P13 atomic { count() }
        Box::pin(o.atomic().run(async { o.count().await.map(drop) })),
        // P14 ins (autocommit)
        Box::pin(o.ins()),
    ]
}
