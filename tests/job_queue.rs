//! A PostgreSQL job queue on sqlx 0.9 (graphile_worker), enqueued through
//! `Handle::with_connection` on the block's own connection: the job row commits with the
//! block's data, and a rolled-back block leaves no job.

mod common;

use common::{Backend, Fx};
use graphile_worker::{JobSpec, WorkerUtils};
use sqlx::AssertSqlSafe;
use sqlx_atomic::{Atomic, Error, postgres};

/// The queue's schema, of this test alone.
const SCHEMA: &str = "sqlx_atomic_job_queue";

/// The jobs of `task` in the queue, read outside any transaction.
async fn jobs(task: &str) -> i64 {
    let pool = sqlx_atomic::pool::<sqlx::Postgres>("pg").unwrap();
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {SCHEMA}.jobs WHERE task_identifier = $1"
    )))
    .bind(task)
    .fetch_one(&pool)
    .await
    .unwrap()
}

/// Adds a job for `order` on the connection the block's queries use.
async fn enqueue(utils: &WorkerUtils, task: &str, order: i64) -> Result<(), Error> {
    let utils = utils.clone();
    let task = task.to_owned();
    postgres("pg")
        .with_connection(move |conn| {
            Box::pin(async move {
                utils
                    .with_executor(conn)
                    .add_raw_job(
                        &task,
                        serde_json::json!({ "order": order }),
                        JobSpec::default(),
                    )
                    .await
                    .map(drop)
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))
            })
        })
        .await
}

#[test]
fn a_queued_job_commits_and_rolls_back_with_the_block() {
    common::run(Backend::Postgres, |fx: Fx| async move {
        let utils = WorkerUtils::new(sqlx_atomic::pool::<sqlx::Postgres>("pg").unwrap(), SCHEMA);
        utils.migrate().await.unwrap();
        let task = format!("ship_{}", fx.table);
        let insert = |v: i64| {
            let sql = format!("INSERT INTO {} (v) VALUES ({v})", fx.table);
            async move {
                sqlx::query(AssertSqlSafe(sql))
                    .execute(postgres("pg"))
                    .await?;
                Ok::<_, Error>(())
            }
        };
        Atomic::new()
            .using("pg")
            .run(async {
                insert(1).await?;
                enqueue(&utils, &task, 1).await?;
                // In the block's transaction: nobody else sees the job yet.
                assert_eq!(jobs(&task).await, 0);
                Ok::<_, Error>(())
            })
            .await
            .unwrap();
        assert_eq!(jobs(&task).await, 1, "the job committed with the order");
        let r = Atomic::new()
            .using("pg")
            .run(async {
                insert(2).await?;
                enqueue(&utils, &task, 2).await?;
                Err::<(), _>(Error::from(sqlx::Error::RowNotFound))
            })
            .await;
        assert!(r.is_err());
        assert_eq!(jobs(&task).await, 1, "no job for the rolled-back order");
        assert_eq!(fx.committed().await, [1]);
    });
}
