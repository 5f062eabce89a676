//! Writing a transaction's jobs: one INSERT (per 5,000 jobs), on the transaction's connection
//! just before its COMMIT, or on the pool in autocommit outside a transaction.

use std::sync::atomic::Ordering;

use sqlx::AssertSqlSafe;

use super::{PendingJob, jobs_of, sql};
use crate::backend::AnyConn;
use crate::error::Error;
use crate::hook::Hook;
use crate::lease::Lease;
use crate::registry::AliasEntry;

/// Binds the columns of `jobs`, in the order of `sql::insert`.
macro_rules! bound {
    ($sql:expr, $jobs:expr, $persistent:expr) => {{
        let mut q = sqlx::query(AssertSqlSafe($sql)).persistent($persistent);
        for job in $jobs {
            q = q
                .bind(job.delivery_id.as_str())
                .bind(job.name.as_str())
                .bind(job.key.as_deref())
                .bind(job.payload.as_str())
                .bind(job.created_at)
                .bind(job.created_at);
        }
        q
    }};
}

/// The jobs among a committing transaction's hooks, taken out before any await (a hook is not
/// `Sync`, a job is).
pub(crate) fn jobs(hooks: &[Hook]) -> Vec<&PendingJob> {
    jobs_of(hooks).collect()
}

/// Writes `jobs` on the lease's connection, inside its transaction.
pub(crate) async fn write_on_conn(lease: &mut Lease, jobs: Vec<&PendingJob>) -> Result<(), Error> {
    if jobs.is_empty() {
        return Ok(());
    }
    let entry = lease.actx.entry;
    let persistent = !entry.db.transaction_pooling;
    let name = lease.actx.name().clone();
    for chunk in jobs.chunks(sql::ROWS_PER_INSERT) {
        let text = sql::insert(entry.kind, chunk.len());
        if lease.actx.recording() {
            lease.actx.record(&text);
        }
        let Some(conn) = lease.conn.as_mut() else {
            return Err(lease.actx.err(crate::error::ErrorKind::ConnectionLost));
        };
        let result = match conn {
            #[cfg(feature = "sqlite")]
            AnyConn::Sqlite(c) => bound!(text, chunk.iter().copied(), persistent)
                .execute(&mut **c)
                .await
                .map(drop),
            #[cfg(feature = "postgres")]
            AnyConn::Postgres(c) => bound!(text, chunk.iter().copied(), persistent)
                .execute(&mut **c)
                .await
                .map(drop),
            #[cfg(feature = "mysql")]
            AnyConn::MySql(c) => bound!(text, chunk.iter().copied(), persistent)
                .execute(&mut **c)
                .await
                .map(drop),
        };
        result.map_err(|e| Error::from(e).with_alias(&name))?;
        super::WRITTEN.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    tracing::debug!(target: "sqlx_atomic", alias = %name, jobs = jobs.len(), "outbox jobs written before the COMMIT");
    Ok(())
}

/// Writes `jobs` on the alias's pool, in autocommit (each INSERT is atomic).
pub(crate) async fn write_on_pool(entry: &AliasEntry, jobs: Vec<&PendingJob>) -> Result<(), Error> {
    if jobs.is_empty() {
        return Ok(());
    }
    let persistent = !entry.db.transaction_pooling;
    for chunk in jobs.chunks(sql::ROWS_PER_INSERT) {
        let text = sql::insert(entry.kind, chunk.len());
        let result = on_pool!(&entry.db.pool, |p| bound!(
            text,
            chunk.iter().copied(),
            persistent
        )
        .execute(p)
        .await
        .map(drop));
        result.map_err(|e| Error::from(e).with_alias(&entry.name))?;
        super::WRITTEN.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// Runs one statement of the library's own on the alias's pool.
pub(crate) async fn raw(entry: &AliasEntry, stmt: &str) -> Result<(), Error> {
    let stmt = AssertSqlSafe(stmt.to_owned());
    let result = on_pool!(&entry.db.pool, |p| sqlx::raw_sql(stmt)
        .execute(p)
        .await
        .map(drop));
    result.map_err(|e| Error::from(e).with_alias(&entry.name))
}
