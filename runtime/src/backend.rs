//! Per-backend glue: the pool and connection enums, and the SQL text of transaction control.

use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, SqlSafeStr};
use sqlx::{Database, Executor, Pool};
use sqlx_core::transaction::TransactionManager;

#[cfg(any(feature = "postgres", feature = "mysql"))]
use std::fmt::Write as _;

use crate::error::ErrorKind;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use crate::options::Isolation;
#[cfg(feature = "sqlite")]
use crate::options::LockMode;
use crate::options::TxnOpts;
use crate::state::{Control, SpId};

/// A pool of any enabled backend.
#[derive(Clone)]
#[doc(hidden)]
pub enum AnyPool {
    #[cfg(feature = "sqlite")]
    Sqlite(Pool<sqlx::Sqlite>),
    #[cfg(feature = "postgres")]
    Postgres(Pool<sqlx::Postgres>),
    #[cfg(feature = "mysql")]
    MySql(Pool<sqlx::MySql>),
}

/// A pooled connection of any enabled backend.
#[doc(hidden)]
pub enum AnyConn {
    #[cfg(feature = "sqlite")]
    Sqlite(PoolConnection<sqlx::Sqlite>),
    #[cfg(feature = "postgres")]
    Postgres(PoolConnection<sqlx::Postgres>),
    #[cfg(feature = "mysql")]
    MySql(PoolConnection<sqlx::MySql>),
}

/// Dispatches one generic expression over the enabled variants of `AnyPool`/`AnyConn`.
macro_rules! dispatch {
    ($ty:ident, $value:expr, $bind:ident => $body:expr) => {
        match $value {
            #[cfg(feature = "sqlite")]
            $ty::Sqlite($bind) => $body,
            #[cfg(feature = "postgres")]
            $ty::Postgres($bind) => $body,
            #[cfg(feature = "mysql")]
            $ty::MySql($bind) => $body,
        }
    };
}
#[allow(unused_imports)]
pub(crate) use dispatch;

mod sealed {
    pub trait Sealed {}
}

/// A database backend sqlx-atomic supports: `sqlx::Sqlite`, `sqlx::Postgres` or `sqlx::MySql`
/// (each behind the cargo feature of the same name).
pub trait Backend: Database + sqlx_core::database::HasStatementCache + sealed::Sealed {
    /// The backend's name, for error messages.
    const BACKEND_NAME: &'static str;
    #[doc(hidden)]
    fn __pool(pool: &AnyPool) -> Option<&Pool<Self>>;
    #[doc(hidden)]
    fn __wrap_pool(pool: Pool<Self>) -> AnyPool;
    #[doc(hidden)]
    fn __conn(conn: &mut AnyConn) -> Option<&mut PoolConnection<Self>>;
    #[doc(hidden)]
    fn __wrap_conn(conn: PoolConnection<Self>) -> AnyConn;
}

macro_rules! backend {
    ($feature:literal, $db:ty, $variant:ident, $name:literal) => {
        #[cfg(feature = $feature)]
        impl sealed::Sealed for $db {}
        #[cfg(feature = $feature)]
        impl Backend for $db {
            const BACKEND_NAME: &'static str = $name;
            fn __pool(pool: &AnyPool) -> Option<&Pool<Self>> {
                #[allow(unreachable_patterns)]
                match pool {
                    AnyPool::$variant(p) => Some(p),
                    _ => None,
                }
            }
            fn __wrap_pool(pool: Pool<Self>) -> AnyPool {
                AnyPool::$variant(pool)
            }
            fn __conn(conn: &mut AnyConn) -> Option<&mut PoolConnection<Self>> {
                #[allow(unreachable_patterns)]
                match conn {
                    AnyConn::$variant(c) => Some(c),
                    _ => None,
                }
            }
            fn __wrap_conn(conn: PoolConnection<Self>) -> AnyConn {
                AnyConn::$variant(conn)
            }
        }
    };
}
backend!("sqlite", sqlx::Sqlite, Sqlite, "SQLite");
backend!("postgres", sqlx::Postgres, Postgres, "PostgreSQL");
backend!("mysql", sqlx::MySql, MySql, "MySQL");

/// The backends, as a plain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BackendKind {
    #[cfg(feature = "sqlite")]
    Sqlite,
    #[cfg(feature = "postgres")]
    Postgres,
    #[cfg(feature = "mysql")]
    MySql,
}

impl BackendKind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            BackendKind::Sqlite => "SQLite",
            #[cfg(feature = "postgres")]
            BackendKind::Postgres => "PostgreSQL",
            #[cfg(feature = "mysql")]
            BackendKind::MySql => "MySQL",
        }
    }
}

impl AnyPool {
    pub(crate) fn kind(&self) -> BackendKind {
        match self {
            #[cfg(feature = "sqlite")]
            AnyPool::Sqlite(_) => BackendKind::Sqlite,
            #[cfg(feature = "postgres")]
            AnyPool::Postgres(_) => BackendKind::Postgres,
            #[cfg(feature = "mysql")]
            AnyPool::MySql(_) => BackendKind::MySql,
        }
    }

    /// An idle connection, taken at once without the pool's checks (no ping, no
    /// `before_acquire`); `None` when none is idle or other tasks are waiting for one.
    pub(crate) fn try_acquire(&self) -> Option<AnyConn> {
        dispatch!(AnyPool, self, p => p.try_acquire().map(Backend::__wrap_conn))
    }

    /// Opens one connection with the pool's connect options, outside the pool, and closes it:
    /// whether the server can be reached and logged into now, and if not, why.
    pub(crate) async fn try_connect(&self) -> Result<(), sqlx::Error> {
        async fn go<DB: Database>(pool: &Pool<DB>) -> Result<(), sqlx::Error> {
            use sqlx::{ConnectOptions, Connection};
            pool.connect_options().connect().await?.close().await
        }
        dispatch!(AnyPool, self, p => go(p).await)
    }

    // sqlx's futures are large (kilobytes) and every backend's would sit side by side in the
    // futures of the blocks that await them, copied at each move: they are boxed here, where they
    // are made (one allocation beside a round trip to the server).
    pub(crate) async fn acquire(&self) -> Result<AnyConn, sqlx::Error> {
        Ok(dispatch!(AnyPool, self, p => Backend::__wrap_conn(boxed(|| p.acquire()).await?)))
    }
}

/// Boxes the future `make` returns. The box is allocated first, so that the compiler builds the
/// future in it rather than on the stack and then copying it over (sqlx's acquire future is
/// 8.6 KB: `Box::pin(pool.acquire())` copied all of it on every transaction).
#[inline(always)]
pub(crate) fn boxed<F: Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// Whether `e`, the error of the first statement sent on a connection, says that the connection
/// is gone (rather than that the server refused the statement).
pub(crate) fn connection_gone(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P: the server ended the session (PostgreSQL);
            // 70100: the connection was killed (MySQL/MariaDB).
            code.starts_with("08") || code.starts_with("57P") || code == "70100"
        }),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// The name of savepoint `id`: generated by the library, never taken from user text.
pub(crate) fn savepoint_name(id: SpId) -> String {
    format!("sqlx_atomic_sp{}", id.0)
}

/// The text of a savepoint statement.
fn savepoint_text(stmt: Control) -> String {
    ControlText { stmt, begin: None }.to_string()
}

/// A control statement's text, written only when shown (a log line that is enabled, the
/// statement recorder): sending BEGIN or COMMIT allocates no string. `begin`: the text of a
/// BEGIN other than the backend's plain one (the alias's own, or one with options).
pub(crate) struct ControlText<'a> {
    pub(crate) stmt: Control,
    pub(crate) begin: Option<&'a str>,
}

impl std::fmt::Display for ControlText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.stmt {
            Control::Begin(_) => f.write_str(self.begin.unwrap_or("BEGIN")),
            Control::Commit => f.write_str("COMMIT"),
            Control::Rollback => f.write_str("ROLLBACK"),
            Control::Savepoint(id) => write!(f, "SAVEPOINT {}", savepoint_name(id)),
            Control::Release(id) => write!(f, "RELEASE SAVEPOINT {}", savepoint_name(id)),
            Control::RollbackTo(id) => write!(f, "ROLLBACK TO SAVEPOINT {}", savepoint_name(id)),
        }
    }
}

async fn control_on<DB>(
    conn: &mut PoolConnection<DB>,
    stmt: Control,
    begin: Option<&str>,
    plain: bool,
) -> Result<(), sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    match stmt {
        // Sent as plain statements, past sqlx's transaction manager, so that sqlx's count of open
        // transactions stays 0 whatever the COMMIT is sent with (see `Lease::send`).
        Control::Begin(_) | Control::Commit | Control::Rollback if plain => {
            sqlx::raw_sql(AssertSqlSafe(ControlText { stmt, begin }.to_string()))
                .execute(&mut **conn)
                .await
                .map(drop)
        }
        // BEGIN/COMMIT/ROLLBACK go through sqlx's own transaction manager, so its depth counter is
        // right and `start_rollback` (used when a block is dropped) works as for sqlx's Transaction.
        Control::Begin(_) => {
            let custom = begin.map(|b| AssertSqlSafe(b.to_owned()).into_sql_str());
            DB::TransactionManager::begin(&mut **conn, custom).await
        }
        Control::Commit => DB::TransactionManager::commit(&mut **conn).await,
        Control::Rollback => DB::TransactionManager::rollback(&mut **conn).await,
        other => sqlx::raw_sql(AssertSqlSafe(savepoint_text(other)))
            .execute(&mut **conn)
            .await
            .map(drop),
    }
}

impl AnyConn {
    /// Sends a control statement; `plain`: BEGIN, COMMIT and ROLLBACK as plain statements, not
    /// through sqlx's transaction manager (an alias with read replicas).
    pub(crate) async fn control(
        &mut self,
        stmt: Control,
        begin: Option<&str>,
        plain: bool,
    ) -> Result<(), sqlx::Error> {
        // Not boxed, unlike `AnyPool::acquire`: sqlx boxes the statement's own future, and what
        // remains is a few hundred bytes, cheaper to carry than to allocate twice a transaction.
        dispatch!(AnyConn, self, c => control_on(c, stmt, begin, plain).await)
    }

    /// Queues a ROLLBACK that sqlx sends before the connection is reused (it pings on release).
    pub(crate) fn start_rollback(&mut self) {
        fn go<DB: Database>(c: &mut PoolConnection<DB>) {
            DB::TransactionManager::start_rollback(&mut **c)
        }
        dispatch!(AnyConn, self, c => go(c))
    }

    /// Whether sqlx believes a transaction is open on this connection.
    pub(crate) fn sqlx_depth(&self) -> usize {
        fn go<DB: Database>(c: &PoolConnection<DB>) -> usize {
            DB::TransactionManager::get_transaction_depth(&**c)
        }
        dispatch!(AnyConn, self, c => go(c))
    }

    pub(crate) fn close_on_drop(&mut self) {
        dispatch!(AnyConn, self, c => c.close_on_drop())
    }
}

impl AnyConn {
    /// MySQL/MariaDB's `innodb_rollback_on_timeout`: whether a lock wait timeout rolled the whole
    /// transaction back. False on the other backends, and when it cannot be read.
    pub(crate) async fn rollback_on_timeout(&mut self) -> bool {
        match self {
            #[cfg(feature = "mysql")]
            AnyConn::MySql(c) => {
                sqlx::query_scalar::<_, i64>("SELECT CAST(@@innodb_rollback_on_timeout AS SIGNED)")
                    .fetch_one(&mut **c)
                    .await
                    .is_ok_and(|on| on != 0)
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// The SQL name of an isolation level.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn isolation_sql(level: Isolation) -> &'static str {
    match level {
        Isolation::ReadUncommitted => "READ UNCOMMITTED",
        Isolation::ReadCommitted => "READ COMMITTED",
        Isolation::RepeatableRead => "REPEATABLE READ",
        Isolation::Serializable => "SERIALIZABLE",
    }
}

/// What each backend is sent for a block's transaction options.
impl TxnOpts {
    /// An error for the first option `backend` cannot honour (checked before anything is sent).
    /// `custom_begin`: the alias begins its transactions with its own statement.
    pub(crate) fn check(&self, backend: BackendKind, custom_begin: bool) -> Result<(), ErrorKind> {
        let unsupported = |option| {
            Err(ErrorKind::Unsupported {
                option,
                backend: backend.name(),
            })
        };
        if custom_begin && self.begin_sql(backend).is_some() {
            return Err(ErrorKind::InvalidConfig(
                "the alias begins transactions with its own `begin_statement`, which a block's \
                 isolation, read_only or lock option would replace: use one or the other"
                    .into(),
            ));
        }
        match backend {
            #[cfg(feature = "sqlite")]
            BackendKind::Sqlite if self.read_only.is_some() => unsupported("read_only"),
            #[cfg(feature = "postgres")]
            BackendKind::Postgres if self.lock.is_some() => unsupported("lock"),
            #[cfg(feature = "mysql")]
            BackendKind::MySql if self.lock.is_some() => unsupported("lock"),
            _ => Ok(()),
        }
    }

    /// The statement that begins a transaction with these options on `backend`, or `None` for
    /// the backend's plain BEGIN. Options that need more than one statement are sent as one
    /// text, in one round trip.
    pub(crate) fn begin_sql(&self, backend: BackendKind) -> Option<String> {
        let mut sql = String::new();
        match backend {
            #[cfg(feature = "sqlite")]
            BackendKind::Sqlite => {
                // Isolation is SQLite's own (serializable), and the timeout is the client's.
                sql.push_str(match self.lock? {
                    LockMode::Deferred => "BEGIN DEFERRED",
                    LockMode::Immediate => "BEGIN IMMEDIATE",
                    LockMode::Exclusive => "BEGIN EXCLUSIVE",
                });
            }
            #[cfg(feature = "postgres")]
            BackendKind::Postgres => {
                if self.isolation.is_none() && self.read_only.is_none() && self.timeout.is_none() {
                    return None;
                }
                sql.push_str("BEGIN");
                let mut sep = " ";
                if let Some(level) = self.isolation {
                    let _ = write!(sql, "{sep}ISOLATION LEVEL {}", isolation_sql(level));
                    sep = ", ";
                }
                if let Some(ro) = self.read_only {
                    sql.push_str(sep);
                    sql.push_str(if ro { "READ ONLY" } else { "READ WRITE" });
                }
                if let Some(t) = self.timeout {
                    // Scoped to the transaction: the server ends a statement or a lock wait that
                    // outlives the block's deadline, even while the client waits.
                    // PostgreSQL counts these in an int of milliseconds; a longer deadline is the
                    // client's alone.
                    let ms = t.as_millis().clamp(1, i32::MAX as u128);
                    let _ = write!(
                        sql,
                        "; SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}"
                    );
                }
            }
            #[cfg(feature = "mysql")]
            BackendKind::MySql => {
                if self.isolation.is_none() && self.read_only.is_none() {
                    return None;
                }
                if let Some(level) = self.isolation {
                    // Applies to the next transaction only, so it never outlives this one.
                    let _ = write!(
                        sql,
                        "SET TRANSACTION ISOLATION LEVEL {}; ",
                        isolation_sql(level)
                    );
                }
                sql.push_str("START TRANSACTION");
                if let Some(ro) = self.read_only {
                    sql.push_str(if ro { " READ ONLY" } else { " READ WRITE" });
                }
            }
        }
        Some(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Isolation;

    #[test]
    fn options_ride_with_the_begin() {
        let opts = TxnOpts {
            isolation: Some(Isolation::Serializable),
            read_only: Some(true),
            ..TxnOpts::default()
        };
        #[cfg(feature = "postgres")]
        assert_eq!(
            opts.begin_sql(BackendKind::Postgres).as_deref(),
            Some("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY")
        );
        #[cfg(feature = "mysql")]
        assert_eq!(
            opts.begin_sql(BackendKind::MySql).as_deref(),
            Some("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; START TRANSACTION READ ONLY")
        );
        #[cfg(feature = "sqlite")]
        {
            assert_eq!(TxnOpts::default().begin_sql(BackendKind::Sqlite), None);
            let immediate = TxnOpts {
                lock: Some(LockMode::Immediate),
                ..TxnOpts::default()
            };
            assert_eq!(
                immediate.begin_sql(BackendKind::Sqlite).as_deref(),
                Some("BEGIN IMMEDIATE")
            );
            assert!(matches!(
                opts.check(BackendKind::Sqlite, false),
                Err(ErrorKind::Unsupported {
                    option: "read_only",
                    ..
                })
            ));
        }
    }
}
