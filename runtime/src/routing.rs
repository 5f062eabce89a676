//! The ambient handle's path for a statement outside any block on an alias with read replicas
//! (docs/semantics.md §12): to a replica that has replayed what the task needs, or to the
//! primary, reading the primary's position after a statement that may have written.

use std::sync::Arc;

use futures_core::stream::BoxStream;
use futures_util::TryStreamExt;
use sqlx::{Database, Either, Executor, Pool};

use crate::alias::AliasCtx;
use crate::backend::Backend;
use crate::parts::Parts;
use crate::registry::AliasEntry;
use crate::replica::{Routed, route};
use crate::replica_set::ReplicaSet;
use crate::wal::{Then, position_after};

/// Runs `$query` with the one-shot method `$method` outside any block of `$entry` (whose replicas
/// are `$set`), for the handle `$handle`; `$pool` is the primary's pool and `$actx` the recording
/// context, if any.
macro_rules! routed {
    ($entry:expr, $set:expr, $handle:expr, $query:expr, $actx:expr, $pool:expr, $method:ident) => {{
        let (entry, set) = ($entry, $set);
        let query = crate::parts::Parts::<DB>::new($query)?;
        let rec = $actx.as_deref();
        match crate::replica::route(entry, set, query.text(), $handle.primary, rec).await {
            crate::replica::Routed::Replica { mut conn, replica } => {
                query.record(rec, Some(replica));
                let conn = DB::__conn(&mut conn).ok_or_else(crate::routing::wrong_backend)?;
                (&mut **conn).$method(query).await
            }
            crate::replica::Routed::Primary(crate::wal::Then::Nothing) => {
                query.record(rec, None);
                $pool.$method(query).await
            }
            crate::replica::Routed::Primary(then) => {
                query.record(rec, None);
                let mut unread = crate::wal::Unread {
                    set,
                    armed: then == crate::wal::Then::Capture,
                };
                let mut conn = entry.db.pool.acquire().await?;
                let result = match DB::__conn(&mut conn) {
                    Some(c) => (&mut **c).$method(query).await,
                    None => Err(crate::routing::wrong_backend()),
                };
                if result.is_ok() {
                    crate::wal::position_after(entry, set, &mut conn, then, rec).await;
                }
                unread.armed = false;
                result
            }
        }
    }};
}
pub(crate) use routed;

/// What `fetch_many` yields.
type Results<DB> = BoxStream<
    'static,
    Result<Either<<DB as Database>::QueryResult, <DB as Database>::Row>, sqlx::Error>,
>;

/// `fetch_many` outside any block of `entry`, whose replicas are `set`: as [`routed`], the
/// position read once the statement's results are all read.
pub(crate) fn stream<DB>(
    entry: &'static AliasEntry,
    set: &'static ReplicaSet,
    forced: bool,
    query: Parts<DB>,
    pool: Pool<DB>,
    actx: Option<Arc<AliasCtx>>,
) -> Results<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    Box::pin(async_stream::try_stream! {
        let rec = actx.as_deref();
        match route(entry, set, query.text(), forced, rec).await {
            Routed::Replica { mut conn, replica } => {
                query.record(rec, Some(replica));
                let conn = DB::__conn(&mut conn).ok_or_else(wrong_backend)?;
                let mut results = (&mut **conn).fetch_many(query);
                while let Some(v) = results.try_next().await? {
                    yield v;
                }
            }
            Routed::Primary(Then::Nothing) => {
                query.record(rec, None);
                let mut results = pool.fetch_many(query);
                while let Some(v) = results.try_next().await? {
                    yield v;
                }
            }
            Routed::Primary(then) => {
                query.record(rec, None);
                let mut unread = crate::wal::Unread { set, armed: then == Then::Capture };
                let mut conn = entry.db.pool.acquire().await?;
                {
                    let c = DB::__conn(&mut conn).ok_or_else(wrong_backend)?;
                    let mut results = (&mut **c).fetch_many(query);
                    while let Some(v) = results.try_next().await? {
                        yield v;
                    }
                }
                position_after(entry, set, &mut conn, then, rec).await;
                unread.armed = false;
            }
        }
    })
}

/// A connection of the alias that is not of the handle's backend: the alias's own pool was checked
/// first, and its replicas are of its backend (`Databases::install`), so this is never met.
pub(crate) fn wrong_backend() -> sqlx::Error {
    sqlx::Error::Configuration("a read replica of another backend than its alias".into())
}
