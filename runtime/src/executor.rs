//! The ambient handle: an `sqlx::Executor` that sends each query on the task's connection of its
//! alias, after the statements the open blocks still owe, or on the pool in autocommit.

use std::borrow::Cow;
use std::sync::Arc;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use futures_util::TryStreamExt;
use sqlx::{Database, Either, Execute, Executor, Pool, SqlStr};

use crate::alias::AliasCtx;
use crate::aliased::with_alias;
use crate::backend::{Backend, connection_gone};
use crate::classify::{Cause, Effect, effect_of, is_lock_timeout};
use crate::error::{Error, ErrorKind};
use crate::frame::Frame;
use crate::handle::Handle;
use crate::lease::{Lease, Phase};
use crate::parts::Parts;
use crate::pooling::{
    CLEAR_LEFTOVERS, end_own_transaction, forget_statements, own_transaction, unnamed,
};
use crate::registry::{AliasEntry, lookup};
use crate::routing::routed;
use crate::state::Route;

/// Where a query runs.
enum Target<DB: Database> {
    Pool(Pool<DB>),
    Conn(Lease),
}

fn sqlx_err(e: Error) -> sqlx::Error {
    e.into_sqlx()
}

/// Resolves the alias, and for a query inside a transaction takes the task's connection and sends
/// what the open blocks owe.
async fn target<DB: Backend>(
    entry: &'static Arc<AliasEntry>,
) -> Result<(Target<DB>, Option<Arc<AliasCtx>>), Error> {
    let pool = DB::__pool(&entry.db.pool).ok_or_else(|| {
        Error::at(
            &entry.name,
            ErrorKind::WrongBackend {
                expected: DB::BACKEND_NAME,
                actual: entry.kind.name(),
            },
        )
    })?;
    // The alias's context and the innermost block of this alias the query runs in (fixed for
    // the frame), read without cloning the frame.
    let current = Frame::with_current(|frame| {
        let ctx = frame.ctx();
        if let Some(refused) = ctx.refuses(entry) {
            return Err(refused);
        }
        Ok((ctx.alias(entry), frame.innermost(entry.index)))
    });
    let Some(current) = current else {
        if !entry.db.autocommit {
            return Err(Error::at(
                &entry.name,
                ErrorKind::NoContext("a query on an alias configured with autocommit(false)"),
            ));
        }
        return Ok((Target::Pool(pool.clone()), None));
    };
    let (actx, innermost) = current?;
    {
        let st = actx.state();
        if !st.in_block() && st.autocommit() && !st.in_transaction() {
            drop(st);
            let rec = actx.recording().then_some(actx);
            return Ok((Target::Pool(pool.clone()), rec));
        }
    }
    let leased = match actx.try_lease() {
        Some(leased) => leased,
        None => actx.lease().await,
    };
    let mut lease = match leased {
        Ok(l) => l,
        Err(e) => {
            // A refused query still dooms the block (3.2): its caller may ignore the error.
            actx.state()
                .query_failed(Cause::refused(e.to_string()), None);
            return Err(e);
        }
    };
    // Take the connection before touching the state, so that a cancellation here leaves the
    // state as it was.
    if !lease.has_conn() {
        lease.fill_conn().await?;
    }
    let route = {
        let mut st = actx.state();
        if innermost != st.top_block() {
            let e = actx.err(ErrorKind::ConcurrentBlocks);
            st.query_failed(Cause::refused(e.to_string()), None);
            return Err(e);
        }
        st.before_query().map_err(|k| actx.err(k))?
    };
    match route {
        Route::Pool => {
            drop(lease);
            let rec = actx.recording().then_some(actx);
            Ok((Target::Pool(pool.clone()), rec))
        }
        Route::Conn(plan) => {
            if let Err(e) = lease.send(&plan).await {
                control_failed(&actx, &e);
                return Err(e);
            }
            Ok((Target::Conn(lease), Some(actx)))
        }
    }
}

/// Wraps a query to record its SQL when the scope records statements.
struct Tap<E> {
    inner: E,
    actx: Option<Arc<AliasCtx>>,
}

impl<'q, DB: Database, E: Execute<'q, DB>> Execute<'q, DB> for Tap<E> {
    fn sql(self) -> SqlStr {
        let sql = self.inner.sql();
        if let Some(a) = &self.actx {
            a.record(sql.as_str());
        }
        sql
    }
    fn statement(&self) -> Option<&DB::Statement> {
        self.inner.statement()
    }
    fn take_arguments(
        &mut self,
    ) -> Result<Option<<DB as Database>::Arguments>, sqlx::error::BoxDynError> {
        self.inner.take_arguments()
    }
    fn persistent(&self) -> bool {
        self.inner.persistent()
    }
}

async fn finish<T>(lease: &mut Lease, result: &Result<T, sqlx::Error>) {
    lease.set_phase(Phase::Idle);
    if let Err(e) = result {
        Box::pin(query_failed(lease, e)).await;
    }
}

/// A query on the task's connection failed with `e` (3.2): its block is doomed, and what the
/// error did on the server decides what is left of the transaction. Boxed by its caller, so
/// that every query's future does not carry this rare one's state.
async fn query_failed(lease: &mut Lease, e: &sqlx::Error) {
    let effect = match e {
        sqlx::Error::Database(_) => {
            // Only a lock wait timeout needs to ask the server what it did.
            let rolled_back = if is_lock_timeout(e) {
                match lease.conn_mut() {
                    Some(conn) => conn.rollback_on_timeout().await,
                    None => false,
                }
            } else {
                false
            };
            Some(effect_of(e, || rolled_back))
        }
        _ if connection_gone(e) => Some(Effect::Connection),
        // Not the server's error (a row was missing, a value did not decode): the block is
        // doomed all the same, but the server's transaction is as it was.
        _ => None,
    };
    if effect == Some(Effect::Connection)
        && let Some(mut conn) = lease.take_conn()
    {
        conn.close_on_drop();
    }
    let cause = Cause::of(e, effect.unwrap_or(Effect::Statement));
    lease.actx.state().query_failed(cause, effect);
}

/// An owed control statement failed with `e` before a query.
fn control_failed(actx: &AliasCtx, e: &Error) {
    let (cause, effect) = match e.as_sqlx() {
        Some(sqlx_error) => {
            let effect = effect_of(sqlx_error, || false);
            (Cause::of(sqlx_error, effect), effect)
        }
        None => (Cause::refused(e.to_string()), Effect::Connection),
    };
    actx.state().control_failed(cause, effect);
}

/// Runs `$query` with `$method` on a resolved target: on the pool, or on the task's connection,
/// marking the block on failure (3.2).
macro_rules! run_on {
    ($target:expr, $query:expr, $method:ident) => {
        match $target {
            Target::Pool(pool) => pool.$method($query).await,
            Target::Conn(mut lease) => {
                lease.set_phase(Phase::Query);
                let conn = lease.typed::<DB>().map_err(sqlx_err)?;
                let result = (&mut **conn).$method($query).await;
                finish(&mut lease, &result).await;
                result
            }
        }
    };
}

/// The body of the one-shot `Executor` methods: run on the pool, or on the task's connection after
/// the owed statements, marking the block on failure (3.2). In transaction-pooling mode the query
/// is sent unnamed, and outside a transaction in one of its own when it spans several messages.
macro_rules! one_shot {
    ($handle:expr, $query:expr, $method:ident) => {
        Box::pin(async move {
            let alias = &$handle.alias;
            let entry = lookup(alias).map_err(sqlx_err)?;
            let result = if entry.db.transaction_pooling {
                // Refused before anything is sent, so nothing is owed or doomed.
                let query = unnamed($query, alias)?;
                let (target, actx) = target::<DB>(entry).await.map_err(sqlx_err)?;
                let actx = actx.as_deref();
                match target {
                    Target::Pool(pool) if query.spans_messages() => {
                        match own_transaction(&pool, actx).await {
                            Ok(mut tx) => {
                                query.record(actx, None);
                                let result = (&mut *tx).$method(query).await;
                                end_own_transaction(tx, result, actx).await
                            }
                            Err(e) => Err(e),
                        }
                    }
                    target => {
                        query.record(actx, None);
                        run_on!(target, query, $method)
                    }
                }
            } else {
                let (target, actx) = target::<DB>(entry).await.map_err(sqlx_err)?;
                match (target, entry.replicas.as_deref()) {
                    // Outside any block of an alias with read replicas (§12).
                    (Target::Pool(pool), Some(set)) => {
                        routed!(entry, set, $handle, $query, actx, pool, $method)
                    }
                    (target, _) => run_on!(
                        target,
                        Tap {
                            inner: $query,
                            actx
                        },
                        $method
                    ),
                }
            };
            match result {
                Ok(v) => Ok(v),
                Err(e) => Err(statement_error(e, entry).await),
            }
        })
    };
}

/// The error a statement outside the task's connection returns: a database error with its
/// alias; a pool time-out as the library's, which names the alias and why no connection could
/// be opened (boxed: it is rare, and every query's future would otherwise carry it).
async fn statement_error(e: sqlx::Error, entry: &AliasEntry) -> sqlx::Error {
    match e {
        sqlx::Error::PoolTimedOut => Box::pin(crate::lease::pool_timed_out_at(entry))
            .await
            .into_sqlx(),
        e => with_alias(e, &entry.name),
    }
}

/// What `fetch_many` yields.
type ResultStream<DB> = BoxStream<
    'static,
    Result<Either<<DB as Database>::QueryResult, <DB as Database>::Row>, sqlx::Error>,
>;

/// `fetch_many` in transaction-pooling mode: like the other path, with the query sent unnamed,
/// and outside a transaction in one of its own when it spans several messages.
fn unnamed_stream<DB>(
    entry: &'static Arc<AliasEntry>,
    query: Parts<DB>,
    alias: Cow<'static, str>,
) -> ResultStream<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    Box::pin(async_stream::try_stream! {
        let (target, actx) = target::<DB>(entry).await.map_err(sqlx_err)?;
        let actx = actx.as_deref();
        if !(matches!(target, Target::Pool(_)) && query.spans_messages()) {
            query.record(actx, None);
        }
        let result: Result<(), sqlx::Error> = match target {
            Target::Pool(pool) if query.spans_messages() => {
                let mut tx = own_transaction(&pool, actx)
                    .await
                    .map_err(|e| with_alias(e, &alias))?;
                query.record(actx, None);
                let result = {
                    let mut s = (&mut *tx).fetch_many(query);
                    loop {
                        match s.try_next().await {
                            Ok(Some(v)) => yield v,
                            Ok(None) => break Ok(()),
                            Err(e) => break Err(e),
                        }
                    }
                };
                end_own_transaction(tx, result, actx).await
            }
            Target::Pool(pool) => {
                let mut s = pool.fetch_many(query);
                loop {
                    match s.try_next().await {
                        Ok(Some(v)) => yield v,
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
            }
            Target::Conn(mut lease) => {
                lease.set_phase(Phase::Stream);
                let result = {
                    let conn = lease.typed::<DB>().map_err(sqlx_err)?;
                    let mut s = (&mut **conn).fetch_many(query);
                    loop {
                        match s.try_next().await {
                            Ok(Some(v)) => yield v,
                            Ok(None) => break Ok(()),
                            Err(e) => break Err(e),
                        }
                    }
                };
                finish(&mut lease, &result).await;
                result
            }
        };
        result.map_err(|e| with_alias(e, &alias))?;
    })
}

/// The pool of `alias`, and whether it is in transaction-pooling mode.
fn pool_of<DB: Backend>(alias: &str) -> Result<(Pool<DB>, bool), Error> {
    let entry = lookup(alias)?;
    Ok((
        crate::registry::entry_pool::<DB>(entry)?,
        entry.db.transaction_pooling,
    ))
}

impl<DB> Executor<'static> for Handle<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    type Database = DB;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<DB::QueryResult, DB::Row>, sqlx::Error>>
    where
        E: 'q + Execute<'q, DB>,
    {
        Box::pin(async_stream::try_stream! {
            let entry = lookup(&self.alias).map_err(sqlx_err)?;
            if entry.db.transaction_pooling {
                let query = unnamed(query, &self.alias)?;
                let mut s = unnamed_stream::<DB>(entry, query, self.alias);
                while let Some(v) = s.try_next().await? {
                    yield v;
                }
                return;
            }
            let (target, actx) = target::<DB>(entry).await.map_err(sqlx_err)?;
            let target = match (target, entry.replicas.as_deref()) {
                // Outside any block of an alias with read replicas (§12).
                (Target::Pool(pool), Some(set)) => {
                    let query = Parts::new(query)?;
                    let mut s = crate::routing::stream(entry, set, self.primary, query, pool, actx);
                    while let Some(v) = s.try_next().await.map_err(|e| with_alias(e, &self.alias))? {
                        yield v;
                    }
                    return;
                }
                (target, _) => target,
            };
            let query = Tap { inner: query, actx };
            match target {
                Target::Pool(pool) => {
                    let mut s = pool.fetch_many(query);
                    while let Some(v) = s.try_next().await.map_err(|e| with_alias(e, &self.alias))? {
                        yield v;
                    }
                }
                Target::Conn(mut lease) => {
                    lease.set_phase(Phase::Stream);
                    let result: Result<(), sqlx::Error> = {
                        let conn = lease.typed::<DB>().map_err(sqlx_err)?;
                        let mut s = (&mut **conn).fetch_many(query);
                        loop {
                            match s.try_next().await {
                                Ok(Some(v)) => yield v,
                                Ok(None) => break Ok(()),
                                Err(e) => break Err(e),
                            }
                        }
                    };
                    finish(&mut lease, &result).await;
                    result.map_err(|e| with_alias(e, &self.alias))?;
                }
            }
        })
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<DB::Row>, sqlx::Error>>
    where
        E: 'q + Execute<'q, DB>,
    {
        one_shot!(self, query, fetch_optional)
    }

    fn execute<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<DB::QueryResult, sqlx::Error>>
    where
        E: 'q + Execute<'q, DB>,
    {
        one_shot!(self, query, execute)
    }

    fn fetch_all<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Vec<DB::Row>, sqlx::Error>>
    where
        E: 'q + Execute<'q, DB>,
    {
        one_shot!(self, query, fetch_all)
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [<DB as Database>::TypeInfo],
    ) -> BoxFuture<'e, Result<<DB as Database>::Statement, sqlx::Error>>
    where
        'static: 'e,
    {
        Box::pin(async move {
            // Preparing needs no transaction: the statement is prepared on a pooled connection,
            // never on the task's own.
            let (pool, pooled) = pool_of::<DB>(&self.alias).map_err(sqlx_err)?;
            let result = if pooled {
                let mut tx = pool.begin().await?;
                let result = match sqlx::raw_sql(CLEAR_LEFTOVERS).execute(&mut *tx).await {
                    Ok(_) => (&mut *tx).prepare_with(sql, parameters).await,
                    Err(e) => Err(e),
                };
                forget_statements(tx, result).await
            } else {
                pool.prepare_with(sql, parameters).await
            };
            result.map_err(|e| with_alias(e, &self.alias))
        })
    }

    #[doc(hidden)]
    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<sqlx::Describe<DB>, sqlx::Error>> {
        Box::pin(async move {
            let (pool, pooled) = pool_of::<DB>(&self.alias).map_err(sqlx_err)?;
            let result = if pooled {
                let mut tx = pool.begin().await?;
                let result = match sqlx::raw_sql(CLEAR_LEFTOVERS).execute(&mut *tx).await {
                    Ok(_) => (&mut *tx).describe(sql).await,
                    Err(e) => Err(e),
                };
                forget_statements(tx, result).await
            } else {
                pool.describe(sql).await
            };
            result.map_err(|e| with_alias(e, &self.alias))
        })
    }
}

impl<DB: Backend> Handle<DB> {
    /// Runs `f` with the connection this handle's next query would use: inside a block, the
    /// task's transaction connection, after the statements the open blocks owe (BEGIN,
    /// SAVEPOINT); outside any block, a connection of the pool, in autocommit. For libraries that
    /// take a `&mut PgConnection` (or `SqliteConnection`, `MySqlConnection`) rather than an
    /// executor, such as a job queue whose job row must commit with the block's data.
    ///
    /// An `Err` from `f` dooms the block as a failed statement does (docs/semantics.md §3.2):
    /// what `f` sent is not known to the library, so it assumes the worst. `f` must leave the
    /// connection as it found it: no COMMIT, ROLLBACK or session setting of its own. A cancelled
    /// `f` closes the connection, as a cancelled query does (§7.1). On an alias in
    /// transaction-pooling mode ([`Database::transaction_pooling`](crate::Database::transaction_pooling))
    /// the library cannot make `f`'s statements unnamed: send them with `persistent(false)`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
    /// # sqlx_atomic::Databases::new().add("default", sqlx_atomic::Database::connect_lazy("sqlite::memory:")?).install()?;
    /// use sqlx_atomic::{Atomic, sqlite};
    /// use sqlx::SqliteConnection;
    /// /// A library function that wants a connection.
    /// async fn count(conn: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    ///     sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(conn).await
    /// }
    /// sqlx::query("CREATE TABLE t (x INTEGER)").execute(sqlite("default")).await?;
    /// Atomic::new()
    ///     .run(async {
    ///         sqlx::query("INSERT INTO t VALUES (1)").execute(sqlite("default")).await?;
    ///         // In the block's transaction: the uncommitted row is seen.
    ///         let n = sqlite("default")
    ///             .with_connection(|conn| Box::pin(count(conn)))
    ///             .await?;
    ///         assert_eq!(n, 1);
    ///         Ok::<_, sqlx_atomic::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn with_connection<F, T>(&self, f: F) -> Result<T, Error>
    where
        F: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<T, sqlx::Error>>,
    {
        let entry = lookup(&self.alias)?;
        let (target, _) = target::<DB>(entry).await?;
        let result = match target {
            Target::Pool(pool) => {
                let mut conn = pool
                    .acquire()
                    .await
                    .map_err(|e| Error::from(e).with_alias(&entry.name))?;
                f(&mut conn).await
            }
            Target::Conn(mut lease) => {
                lease.set_phase(Phase::Query);
                let conn = lease.typed::<DB>()?;
                let result = f(&mut **conn).await;
                finish(&mut lease, &result).await;
                result
            }
        };
        result.map_err(|e| Error::from(with_alias(e, &entry.name)))
    }
}
