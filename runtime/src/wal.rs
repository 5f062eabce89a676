//! The PostgreSQL statements that read WAL positions (docs/semantics.md §12.3): the COMMIT that
//! reads its own in its round trip, the read after a write outside a block, and a replica's
//! replay position.

use crate::alias::AliasCtx;
use crate::backend::AnyConn;
use crate::position::UNKNOWN;
use crate::registry::AliasEntry;
use crate::replica_set::ReplicaSet;

/// Sent instead of `COMMIT` on an alias with replicas, in one round trip: whether the transaction
/// wrote (it has a transaction id), the COMMIT, and the primary's WAL insert position after it,
/// which is at or after the end of the commit record (with `synchronous_commit = off` the commit
/// record may not be flushed yet, so the flushed position, `pg_current_wal_lsn()`, could be
/// before it; the insert position never is).
pub(crate) const COMMIT_AND_POSITION: &str = "SELECT pg_current_xact_id_if_assigned() IS NOT NULL; \
     COMMIT; SELECT pg_current_wal_insert_lsn()::text";
/// Sent after a statement outside any block that may have written.
pub(crate) const POSITION: &str = "SELECT pg_current_wal_insert_lsn()::text";
/// Sent to a replica to learn how far it has replayed.
pub(crate) const REPLAYED: &str = "SELECT pg_last_wal_replay_lsn()::text";

/// What follows a statement sent to the primary outside any block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// Nothing.
    Nothing,
    /// The statement may write: the primary's position is read after it, on its connection.
    Capture,
    /// The task's position is unknown: the primary's position, read after the statement, takes
    /// its place (it is later than the write whose position could not be read).
    Resolve,
}

/// Reads the primary's position after a statement outside any block (on the connection it ran
/// on): after one that may have written, as the current task's position on `entry`
/// ([`Then::Capture`]), or in place of the task's unknown position ([`Then::Resolve`]).
pub(crate) async fn position_after(
    entry: &AliasEntry,
    set: &ReplicaSet,
    conn: &mut AnyConn,
    then: Then,
    rec: Option<&AliasCtx>,
) {
    if then == Then::Nothing {
        return;
    }
    if let Some(a) = rec {
        a.record_on(POSITION, None);
    }
    match (scalar_lsn(conn, POSITION).await, then) {
        (Ok(Some(lsn)), Then::Resolve) => set.positions.resolve(lsn),
        (Ok(Some(lsn)), _) => set.record(lsn),
        // An unknown position stays unknown until a later read finds it.
        (_, Then::Resolve) => {}
        (outcome, _) => {
            let error = match outcome {
                Err(e) => e.to_string(),
                _ => "no position".to_owned(),
            };
            tracing::warn!(target: "sqlx_atomic", alias = %entry.name, %error, "the primary's WAL position could not be read after a write; the task's next read goes to the primary");
            set.record(UNKNOWN);
        }
    }
}

/// Sends [`COMMIT_AND_POSITION`] on `conn` and records the position when the transaction wrote.
/// Fails only when the COMMIT did not complete: a failure after it (reading the position) leaves
/// the position unknown, so that the task's reads go to the primary.
pub(crate) async fn commit_and_capture(
    conn: &mut AnyConn,
    entry: &AliasEntry,
) -> Result<(), sqlx::Error> {
    let Some(set) = entry.replicas.as_deref() else {
        return Err(not_postgres());
    };
    match conn {
        #[cfg(feature = "postgres")]
        AnyConn::Postgres(c) => {
            use futures_util::TryStreamExt;
            use sqlx::{Either, Executor, Row};
            // Cancelled while the COMMIT is in flight, the transaction may have committed: the
            // task's next read goes to the primary and reads the position there.
            let mut unread = Unread { set, armed: true };
            // Each statement's completion is one `Left`: the first the SELECT's, the second the
            // COMMIT's.
            let mut completed = 0;
            let (mut wrote, mut lsn) = (None, None);
            let failure = {
                let mut results = (&mut **c).fetch_many(sqlx::raw_sql(COMMIT_AND_POSITION));
                loop {
                    match results.try_next().await {
                        Ok(Some(Either::Left(_))) => completed += 1,
                        Ok(Some(Either::Right(row))) if completed == 0 => {
                            wrote = row.try_get::<Option<bool>, _>(0).ok().flatten();
                        }
                        Ok(Some(Either::Right(row))) => {
                            lsn = row.try_get::<Option<String>, _>(0).ok().flatten();
                        }
                        Ok(None) => break None,
                        Err(e) => break Some(e),
                    }
                }
            };
            unread.armed = false;
            match failure {
                Some(e) if completed < 2 => return Err(e),
                _ if wrote == Some(false) => return Ok(()),
                _ => {}
            }
            let lsn = match lsn.as_deref().map(crate::position::parse_lsn) {
                Some(Ok(lsn)) => lsn,
                _ => {
                    tracing::warn!(target: "sqlx_atomic", alias = %entry.name, error = ?failure, "the commit's WAL position could not be read; the task's next read goes to the primary");
                    UNKNOWN
                }
            };
            set.record(lsn);
            Ok(())
        }
        #[allow(unreachable_patterns)]
        _ => {
            let _ = set;
            Err(not_postgres())
        }
    }
}

/// Makes the task's position unknown when a statement that may write is cancelled before its
/// position was read (or a stream of one is dropped before its end, or fails), so that the task's
/// next read goes to the primary and reads its position there.
pub(crate) struct Unread<'a> {
    pub(crate) set: &'a ReplicaSet,
    pub(crate) armed: bool,
}

impl Drop for Unread<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.set.record(UNKNOWN);
        }
    }
}

/// One LSN read with the simple query `sql` (one round trip; `None` for SQL NULL).
pub(crate) async fn scalar_lsn(
    conn: &mut AnyConn,
    sql: &'static str,
) -> Result<Option<u64>, sqlx::Error> {
    match conn {
        #[cfg(feature = "postgres")]
        AnyConn::Postgres(c) => {
            use sqlx::Row;
            let row = sqlx::raw_sql(sql).fetch_one(&mut **c).await?;
            let text: Option<String> = row.try_get(0)?;
            text.as_deref().map(crate::position::parse_lsn).transpose()
        }
        #[allow(unreachable_patterns)]
        _ => {
            let _ = sql;
            Err(not_postgres())
        }
    }
}

fn not_postgres() -> sqlx::Error {
    sqlx::Error::Configuration("read replicas need a PostgreSQL alias".into())
}
