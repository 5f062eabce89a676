//! Reading through a PostgreSQL streaming replica (`.ci/replica start`), paired (A B B A rounds,
//! see `common::paired`), on an alias with the replica beside an alias of the same primary
//! without one:
//!
//! - `replica/read`: a statement outside any block, which goes to the replica (A) or to the
//!   primary (B), in a task that has written nothing: no position to wait for;
//! - `replica/one_insert`: a block with one INSERT, whose COMMIT also reads the commit's WAL
//!   position on the replica alias (A), in the same round trip;
//! - `replica/insert_then_read`: that block and then a read in the same task, which waits until
//!   the replica has replayed the commit (A), beside the same on the primary (B): the price of
//!   read-your-writes on a replica that keeps up.
//!
//! `cargo bench --all-features --bench replica` (`SQLX_ATOMIC_PAIRED_ROUNDS`, default 100;
//! `SQLX_ATOMIC_TEST_REPLICA_URL`, default postgres://postgres@127.0.0.1:5433/test).
mod common;

use std::sync::LazyLock;

use sqlx_atomic::{Atomic, Databases, Error};

const INSERT: &str = "INSERT INTO bench_replica (v) VALUES ($1)";
const POOL: u32 = 4;

fn replica_url() -> String {
    std::env::var("SQLX_ATOMIC_TEST_REPLICA_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/test".into())
}

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    let rt = common::runtime(0);
    rt.block_on(async {
        let primary = common::pg_pool(POOL).await;
        common::pg_table(&primary, "bench_replica").await;
        let replica = sqlx::postgres::PgPoolOptions::new()
            .max_connections(POOL)
            .connect(&replica_url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the replica at {} does not answer ({e}); run .ci/replica start",
                    replica_url()
                )
            });
        Databases::new()
            .add(
                "rep",
                common::database(common::pg_pool(POOL).await)
                    .read_replica(common::database(replica)),
            )
            .add("prim", common::database(primary))
            .install()
            .expect("install");
    });
    rt
});

async fn read(alias: &'static str) {
    let n: i64 = sqlx::query_scalar("SELECT $1::BIGINT")
        .bind(7i64)
        .fetch_one(sqlx_atomic::postgres(alias))
        .await
        .expect("read");
    assert_eq!(n, 7);
}

async fn insert(alias: &'static str) {
    Atomic::new()
        .using(alias)
        .run(async {
            sqlx::query(INSERT)
                .bind(1i64)
                .execute(sqlx_atomic::postgres(alias))
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .expect("insert");
}

fn main() {
    let rt = &*RT;
    let rounds = common::env_number("SQLX_ATOMIC_PAIRED_ROUNDS", 100);
    // Each side runs in a task of its own per run, so that a position from one run's commit does
    // not follow the next run's read.
    common::paired(
        rt,
        "replica/read: through the replica (A) vs the primary (B)",
        rounds,
        20,
        || async { tokio::spawn(read("rep")).await.unwrap() },
        || async { tokio::spawn(read("prim")).await.unwrap() },
    );
    common::paired(
        rt,
        "replica/one_insert: alias with a replica (A) vs without (B)",
        rounds,
        10,
        || async { tokio::spawn(insert("rep")).await.unwrap() },
        || async { tokio::spawn(insert("prim")).await.unwrap() },
    );
    common::paired(
        rt,
        "replica/insert_then_read: read-your-writes on the replica (A) vs the primary (B)",
        rounds,
        10,
        || async {
            tokio::spawn(async {
                insert("rep").await;
                read("rep").await;
            })
            .await
            .unwrap()
        },
        || async {
            tokio::spawn(async {
                insert("prim").await;
                read("prim").await;
            })
            .await
            .unwrap()
        },
    );
}
