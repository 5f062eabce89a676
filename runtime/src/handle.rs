//! The ambient handle of an alias: the value users pass to sqlx as an executor. How it runs a
//! query is `executor`'s.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use sqlx::{Database, Either, Execute, Executor, SqlStr};

use crate::backend::Backend;

/// The ambient connection of a database alias: an [`sqlx::Executor`] to pass to
/// `sqlx::query(..).execute(..)`, `fetch_one`, `fetch_all`, `fetch` and the `query!` family.
///
/// Inside an atomic block it runs the query in the block's transaction (sending the owed BEGIN
/// and SAVEPOINTs first); outside any block it runs it on the pool, in autocommit (on an alias
/// with [read replicas](crate::Database::read_replica), a read goes to a replica). It is cheap to
/// create and to clone, and holds no connection itself: it finds the task's context when the
/// query runs. A handle moved into a `tokio::spawn`ed task therefore runs there in autocommit,
/// outside the spawner's transaction.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// # sqlx_atomic::Databases::new().add("default", sqlx_atomic::Database::connect_lazy("sqlite::memory:")?).install()?;
/// let db = sqlx_atomic::sqlite("default");
/// let n: i64 = sqlx::query_scalar("SELECT 1 + 1").fetch_one(&db).await?;
/// assert_eq!(n, 2);
/// # Ok(()) }
/// ```
pub struct Handle<DB> {
    pub(crate) alias: Cow<'static, str>,
    /// Reads go to the primary even outside blocks (`Handle::primary`).
    pub(crate) primary: bool,
    _db: PhantomData<fn() -> DB>,
}

impl<DB> Clone for Handle<DB> {
    fn clone(&self) -> Self {
        Handle {
            alias: self.alias.clone(),
            primary: self.primary,
            _db: PhantomData,
        }
    }
}

impl<DB: Backend> fmt::Debug for Handle<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("alias", &self.alias)
            .field("backend", &DB::BACKEND_NAME)
            .field("primary", &self.primary)
            .finish()
    }
}

impl<DB: Backend> Handle<DB> {
    /// The handle of `alias`. The alias is resolved when a query runs; an unknown alias or one
    /// configured for another backend makes that query fail with an error naming it.
    pub fn new(alias: impl Into<Cow<'static, str>>) -> Self {
        Handle {
            alias: alias.into(),
            primary: false,
            _db: PhantomData,
        }
    }

    /// The alias of this handle.
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// This handle sends its reads to the primary, also outside blocks, on an alias with read
    /// replicas ([`Database::read_replica`](crate::Database::read_replica)): for a read that must
    /// see what another task has just committed, when no [`CommitPosition`](crate::CommitPosition)
    /// of that commit is at hand. Inside a block every statement goes to the primary anyway; on
    /// an alias without replicas this changes nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
    /// # sqlx_atomic::Databases::new().add("default", sqlx_atomic::Database::connect_lazy("sqlite::memory:")?).install()?;
    /// let primary = sqlx_atomic::sqlite("default").primary();
    /// let n: i64 = sqlx::query_scalar("SELECT 1").fetch_one(&primary).await?;
    /// assert_eq!(n, 1);
    /// # Ok(()) }
    /// ```
    pub fn primary(mut self) -> Self {
        self.primary = true;
        self
    }
}

/// The ambient handle of a SQLite alias.
#[cfg(feature = "sqlite")]
pub fn sqlite(alias: impl Into<Cow<'static, str>>) -> Handle<sqlx::Sqlite> {
    Handle::new(alias)
}

/// The ambient handle of a PostgreSQL alias.
#[cfg(feature = "postgres")]
pub fn postgres(alias: impl Into<Cow<'static, str>>) -> Handle<sqlx::Postgres> {
    Handle::new(alias)
}

/// The ambient handle of a MySQL/MariaDB alias.
#[cfg(feature = "mysql")]
pub fn mysql(alias: impl Into<Cow<'static, str>>) -> Handle<sqlx::MySql> {
    Handle::new(alias)
}

/// A borrowed handle runs the query as the handle itself does.
impl<'h, DB> Executor<'h> for &'h Handle<DB>
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
        'h: 'e,
        E: 'q + Execute<'q, DB>,
    {
        self.clone().fetch_many(query)
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<DB::Row>, sqlx::Error>>
    where
        'h: 'e,
        E: 'q + Execute<'q, DB>,
    {
        self.clone().fetch_optional(query)
    }

    fn execute<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<DB::QueryResult, sqlx::Error>>
    where
        'h: 'e,
        E: 'q + Execute<'q, DB>,
    {
        self.clone().execute(query)
    }

    fn fetch_all<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Vec<DB::Row>, sqlx::Error>>
    where
        'h: 'e,
        E: 'q + Execute<'q, DB>,
    {
        self.clone().fetch_all(query)
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [<DB as Database>::TypeInfo],
    ) -> BoxFuture<'e, Result<<DB as Database>::Statement, sqlx::Error>>
    where
        'h: 'e,
    {
        self.clone().prepare_with(sql, parameters)
    }

    #[doc(hidden)]
    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<sqlx::Describe<DB>, sqlx::Error>>
    where
        'h: 'e,
    {
        self.clone().describe(sql)
    }
}
