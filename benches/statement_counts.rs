//! Statement counts (not a timing benchmark): the 14 programs whose statements were measured on
//! Django 5.2 and a loop of 1,000 sibling nested blocks, each run through
//! sqlx-atomic with `Scope::new().record_statements()` on SQLite and on PostgreSQL, beside
//! Django 5.2's measured counts and beside the same programs written with sqlx's nested
//! `begin()` (counted by hand: each `begin`, `commit`, `rollback` and `execute` called is one
//! statement; a nested `begin` is a SAVEPOINT, its `commit` a RELEASE, its `rollback` a
//! ROLLBACK TO).
//!
//! `cargo bench --all-features --bench statement_counts` prints a markdown table.

mod common;
#[path = "../tests/suite/django_programs.rs"]
mod django_programs;

use sqlx::{Acquire, Postgres, Sqlite, Transaction};
use sqlx_atomic::{Atomic, Database, Databases, Error, RecordedStatement, Scope, on_commit};

const SQ: &str = "sqlite";
const PG: &str = "pg";
const TABLE: &str = "bench_counts";

/// Django 5.2's measured counts: (program, SQLite, PostgreSQL).
const DJANGO: [(&str, usize, usize); 14] = [
    ("P1 atomic { ins }", 3, 3),
    ("P2 atomic { }", 2, 0),
    ("P3 atomic { ins; ins; ins }", 5, 5),
    ("P4 atomic { ins; atomic { ins } }", 6, 6),
    ("P5 atomic { ins; atomic { } }", 5, 5),
    ("P6 atomic { atomic { atomic { ins } } }", 7, 7),
    ("P7 atomic { ins; atomic { ins; fail } }", 7, 7),
    ("P8 atomic { ins; atomic(savepoint=False) { ins } }", 4, 4),
    (
        "P9 atomic { ins; atomic(savepoint=False) { ins; fail } }",
        4,
        4,
    ),
    ("P10 atomic { ins; fail }", 3, 3),
    (
        "P11 atomic { ins; on_commit; atomic { ins; on_commit } }",
        6,
        6,
    ),
    ("P12 atomic { atomic { ins } ×5 }", 17, 17),
    ("P13 atomic { count() }", 3, 3),
    ("P14 ins (autocommit)", 1, 1),
];

#[derive(Clone, Copy)]
enum Bk {
    Sqlite,
    Postgres,
}

impl Bk {
    fn alias(self) -> &'static str {
        match self {
            Bk::Sqlite => SQ,
            Bk::Postgres => PG,
        }
    }
}

// ---------------------------------------------------------------- sqlx-atomic

fn atomic(b: Bk) -> Atomic {
    Atomic::new().using(b.alias())
}

async fn ins(b: Bk) -> Result<(), Error> {
    match b {
        Bk::Sqlite => {
            sqlx::query("INSERT INTO bench_counts (v) VALUES (1)")
                .execute(sqlx_atomic::sqlite(SQ))
                .await?;
        }
        Bk::Postgres => {
            sqlx::query("INSERT INTO bench_counts (v) VALUES (1)")
                .execute(sqlx_atomic::postgres(PG))
                .await?;
        }
    }
    Ok(())
}

async fn count(b: Bk) -> Result<i64, Error> {
    Ok(match b {
        Bk::Sqlite => {
            sqlx::query_scalar("SELECT COUNT(*) FROM bench_counts")
                .fetch_one(sqlx_atomic::sqlite(SQ))
                .await?
        }
        Bk::Postgres => {
            sqlx::query_scalar("SELECT COUNT(*) FROM bench_counts")
                .fetch_one(sqlx_atomic::postgres(PG))
                .await?
        }
    })
}

/// Runs `fut` recording the statements sent, and returns how many went to `b`'s alias.
async fn recorded<F: Future>(b: Bk, fut: F) -> usize {
    let (_, log): (_, Vec<RecordedStatement>) = Scope::new().record_statements().run(fut).await;
    log.iter().filter(|s| s.alias == b.alias()).count()
}

impl django_programs::Ops for Bk {
    fn atomic(&self) -> Atomic {
        atomic(*self)
    }
    fn ins(&self) -> impl Future<Output = Result<(), Error>> + Send + '_ {
        ins(*self)
    }
    fn count(&self) -> impl Future<Output = Result<i64, Error>> + Send + '_ {
        count(*self)
    }
    fn on_commit(&self) -> sqlx_atomic::OnCommit {
        on_commit(|| ()).using(self.alias())
    }
}

/// The 14 programs (the behavioural suite's, `tests/suite/django_programs.rs`) and the 1,000-block
/// loop through sqlx-atomic.
async fn ours(b: Bk) -> Vec<usize> {
    let mut n = Vec::new();
    for program in django_programs::programs(&b) {
        n.push(recorded(b, program).await);
    }
    n.push(
        recorded(
            b,
            atomic(b).run(async {
                for _ in 0..1000 {
                    atomic(b).run(ins(b)).await?;
                }
                Ok::<_, Error>(())
            }),
        )
        .await,
    );
    n
}

// ---------------------------------------------------------------- sqlx by hand

/// The hand-written side: every sqlx call that sends a statement goes through here and is
/// counted once.
struct Counted<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    n: usize,
}

macro_rules! counted_impl {
    ($db:ty) => {
        impl Counted<$db> {
            async fn begin(&mut self) -> Transaction<'static, $db> {
                self.n += 1;
                self.pool.begin().await.expect("begin")
            }
            async fn nested<'t>(
                &mut self,
                tx: &'t mut Transaction<'_, $db>,
            ) -> Transaction<'t, $db> {
                self.n += 1; // SAVEPOINT
                tx.begin().await.expect("savepoint")
            }
            async fn commit(&mut self, tx: Transaction<'_, $db>) {
                self.n += 1; // COMMIT, or RELEASE for a nested one
                tx.commit().await.expect("commit")
            }
            async fn rollback(&mut self, tx: Transaction<'_, $db>) {
                self.n += 1; // ROLLBACK, or ROLLBACK TO for a nested one
                tx.rollback().await.expect("rollback")
            }
            async fn ins(&mut self, tx: &mut Transaction<'_, $db>) {
                self.n += 1;
                sqlx::query("INSERT INTO bench_counts (v) VALUES (1)")
                    .execute(&mut **tx)
                    .await
                    .expect("insert");
            }
            async fn ins_autocommit(&mut self) {
                self.n += 1;
                sqlx::query("INSERT INTO bench_counts (v) VALUES (1)")
                    .execute(&self.pool)
                    .await
                    .expect("insert");
            }
            async fn count(&mut self, tx: &mut Transaction<'_, $db>) -> i64 {
                self.n += 1;
                sqlx::query_scalar("SELECT COUNT(*) FROM bench_counts")
                    .fetch_one(&mut **tx)
                    .await
                    .expect("count")
            }
            fn take(&mut self) -> usize {
                std::mem::take(&mut self.n)
            }

            /// The same programs as `ours`, as one would write them with sqlx: `fail` is an error
            /// the code sees and answers with `rollback()`; `savepoint=False` is just running on
            /// the same transaction; sqlx has no on_commit, so P11 only counts its statements.
            async fn programs(&mut self) -> Vec<usize> {
                let mut n = Vec::new();
                // P1
                let mut tx = self.begin().await;
                self.ins(&mut tx).await;
                self.commit(tx).await;
                n.push(self.take());
                // P2
                let tx = self.begin().await;
                self.commit(tx).await;
                n.push(self.take());
                // P3
                let mut tx = self.begin().await;
                for _ in 0..3 {
                    self.ins(&mut tx).await;
                }
                self.commit(tx).await;
                n.push(self.take());
                // P4
                let mut tx = self.begin().await;
                self.ins(&mut tx).await;
                let mut sp = self.nested(&mut tx).await;
                self.ins(&mut sp).await;
                self.commit(sp).await;
                self.commit(tx).await;
                n.push(self.take());
                // P5
                let mut tx = self.begin().await;
                self.ins(&mut tx).await;
                let sp = self.nested(&mut tx).await;
                self.commit(sp).await;
                self.commit(tx).await;
                n.push(self.take());
                // P6
                let mut tx = self.begin().await;
                let mut sp1 = self.nested(&mut tx).await;
                let mut sp2 = self.nested(&mut sp1).await;
                self.ins(&mut sp2).await;
                self.commit(sp2).await;
                self.commit(sp1).await;
                self.commit(tx).await;
                n.push(self.take());
                // P7
                let mut tx = self.begin().await;
                self.ins(&mut tx).await;
                let mut sp = self.nested(&mut tx).await;
                self.ins(&mut sp).await;
                self.rollback(sp).await;
                self.commit(tx).await;
                n.push(self.take());
                // P8
                let mut tx = self.begin().await;
                self.ins(&mut tx).await;
                self.ins(&mut tx).await;
                self.commit(tx).await;
                n.push(self.take());
                // P9
                let mut tx = self.begin().await;
                self.ins(&mut tx).await;
                self.ins(&mut tx).await;
                self.rollback(tx).await;
                n.push(self.take());
                // P10
                let mut tx = self.begin().await;
                self.ins(&mut tx).await;
                self.rollback(tx).await;
                n.push(self.take());
                // P11
                let mut tx = self.begin().await;
                self.ins(&mut tx).await;
                let mut sp = self.nested(&mut tx).await;
                self.ins(&mut sp).await;
                self.commit(sp).await;
                self.commit(tx).await;
                n.push(self.take());
                // P12
                let mut tx = self.begin().await;
                for _ in 0..5 {
                    let mut sp = self.nested(&mut tx).await;
                    self.ins(&mut sp).await;
                    self.commit(sp).await;
                }
                self.commit(tx).await;
                n.push(self.take());
                // P13
                let mut tx = self.begin().await;
                self.count(&mut tx).await;
                self.commit(tx).await;
                n.push(self.take());
                // P14
                self.ins_autocommit().await;
                n.push(self.take());
                // 1,000 sibling nested blocks
                let mut tx = self.begin().await;
                for _ in 0..1000 {
                    let mut sp = self.nested(&mut tx).await;
                    self.ins(&mut sp).await;
                    self.commit(sp).await;
                }
                self.commit(tx).await;
                n.push(self.take());
                n
            }
        }
    };
}
counted_impl!(Sqlite);
counted_impl!(Postgres);

async fn rows(b: Bk) -> i64 {
    count(b).await.expect("count")
}

fn main() {
    let rt = common::runtime(0);
    rt.block_on(async {
        let sqlite = common::sqlite_pool("statement_counts", 4);
        let pg = common::pg_pool(4).await;
        common::sqlite_table(&sqlite, TABLE).await;
        common::pg_table(&pg, TABLE).await;
        Databases::new()
            .add(SQ, Database::from_pool(sqlite.clone()))
            .add(PG, Database::from_pool(pg.clone()))
            .install()
            .expect("install");

        let ours_sq = ours(Bk::Sqlite).await;
        let ours_pg = ours(Bk::Postgres).await;
        let rows_ours = (rows(Bk::Sqlite).await, rows(Bk::Postgres).await);
        common::sqlite_table(&sqlite, TABLE).await;
        common::pg_table(&pg, TABLE).await;
        let sqlx_sq = Counted { pool: sqlite, n: 0 }.programs().await;
        let sqlx_pg = Counted { pool: pg, n: 0 }.programs().await;
        let rows_sqlx = (rows(Bk::Sqlite).await, rows(Bk::Postgres).await);

        println!(
            "| Program | Django SQLite | Django PostgreSQL | sqlx-atomic SQLite | \
             sqlx-atomic PostgreSQL | sqlx nested `begin()` |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        let mut totals = [0usize; 5];
        for (i, (name, dj_sq, dj_pg)) in DJANGO.iter().enumerate() {
            assert_eq!(sqlx_sq[i], sqlx_pg[i], "sqlx counts differ by backend");
            let row = [*dj_sq, *dj_pg, ours_sq[i], ours_pg[i], sqlx_sq[i]];
            for (t, v) in totals.iter_mut().zip(row) {
                *t += v;
            }
            println!(
                "| {name} | {} | {} | {} | {} | {} |",
                row[0], row[1], row[2], row[3], row[4]
            );
        }
        println!(
            "| **Total P1–P14** | **{}** | **{}** | **{}** | **{}** | **{}** |",
            totals[0], totals[1], totals[2], totals[3], totals[4]
        );
        // Django's loop is P12's pattern ×1000: BEGIN, 1000 × (SAVEPOINT, INSERT, RELEASE), COMMIT.
        println!(
            "| 1,000 sibling blocks `atomic {{ atomic {{ ins }} ×1000 }}` | 3002* | 3002* | {} | {} | {} |",
            ours_sq[14], ours_pg[14], sqlx_sq[14]
        );
        println!();
        println!(
            "\\* not measured in the Django reference: P12's sequence extended to 1,000 blocks."
        );
        println!(
            "Rows left: sqlx-atomic {} (SQLite) / {} (PostgreSQL); sqlx by hand {} / {} \
             (Django: 19 + 1,000).",
            rows_ours.0, rows_ours.1, rows_sqlx.0, rows_sqlx.1
        );
    });
}
