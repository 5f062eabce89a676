//! One configured database (`Database`): its pool, how the library builds it, and its
//! transaction settings. The registry of aliases is `registry.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Pool;

use crate::backend::{AnyPool, Backend};
use crate::error::{Error, ErrorKind};
use crate::pool_config::PoolConfig;
use crate::redact::{redact_url, scrub};

/// One configured database: its pool and its transaction settings.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// use sqlx_atomic::Database;
/// let db = Database::connect_lazy("sqlite::memory:")?.atomic_requests(true);
/// assert!(format!("{db:?}").contains("sqlite"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Database {
    pub(crate) pool: AnyPool,
    pub(crate) atomic_requests: bool,
    pub(crate) autocommit: bool,
    pub(crate) begin: Option<String>,
    pub(crate) test_with_begin: bool,
    pub(crate) transaction_pooling: bool,
    /// Its read replicas (`read_replica`), and the bound on waiting for them.
    pub(crate) replicas: Vec<Database>,
    pub(crate) replica_wait: Option<Duration>,
    /// The pool's settings, when the library built it.
    config: Option<PoolConfig>,
    pub(crate) display: String,
}

impl Database {
    /// Configures a database from a URL (`sqlite:`, `postgres://`/`postgresql://`,
    /// `mysql://`/`mariadb://`), with a pool that connects on first use.
    ///
    /// Must be called inside a tokio runtime. The URL's password never appears in any output.
    pub fn connect_lazy(url: &str) -> Result<Self, Error> {
        Self::connect_lazy_with(url, PoolConfig::default())
    }

    /// [`connect_lazy`](Self::connect_lazy) with the pool's size and timeouts. The pool keeps the
    /// library's connection test (a transaction's BEGIN tests its idle connection).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
    /// use std::time::Duration;
    /// use sqlx_atomic::{Database, PoolConfig};
    /// let db = Database::connect_lazy_with(
    ///     "sqlite::memory:",
    ///     PoolConfig::new().max_connections(4).acquire_timeout(Duration::from_secs(5)),
    /// )?;
    /// # let _ = db; Ok(()) }
    /// ```
    pub fn connect_lazy_with(url: &str, config: PoolConfig) -> Result<Self, Error> {
        let display = redact_url(url);
        let fail = |why: String| Error::new(None, ErrorKind::InvalidConfig(scrub(&why, url)));
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(fail(format!(
                "`Database::connect_lazy({display})` must be called inside a tokio runtime"
            )));
        }
        let (sqlx_url, mut config) = config
            .with_url(url)
            .map_err(|why| fail(format!("{display}: {why}")))?;
        let scheme = sqlx_url
            .split(':')
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        let connect_failed = |e: sqlx::Error| fail(format!("{display}: {e}"));
        let pool = match scheme.as_str() {
            #[cfg(feature = "sqlite")]
            "sqlite" => AnyPool::Sqlite(
                with_session_sql(config.options(), &config)
                    .connect_lazy(&sqlx_url)
                    .map_err(connect_failed)?,
            ),
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => AnyPool::Postgres(
                with_session_sql(config.options(), &config)
                    .connect_lazy(&sqlx_url)
                    .map_err(connect_failed)?,
            ),
            #[cfg(feature = "mysql")]
            "mysql" | "mariadb" => {
                let sqlx_url = if scheme == "mariadb" {
                    format!("mysql{}", &sqlx_url["mariadb".len()..])
                } else {
                    sqlx_url
                };
                AnyPool::MySql(
                    with_session_sql(config.options(), &config)
                        .connect_lazy(&sqlx_url)
                        .map_err(connect_failed)?,
                )
            }
            _ => {
                return Err(fail(format!(
                    "unsupported or disabled database URL scheme in {display} (enabled: {})",
                    enabled_backends()
                )));
            }
        };
        let pooling = config.transaction_pooling.unwrap_or(false);
        // The replicas' URLs become databases here, and are not kept (they may hold passwords).
        let mut replicas = Vec::new();
        for replica in std::mem::take(&mut config.replicas) {
            let replica = Database::connect_lazy(&replica).map_err(|e| {
                let why = match e.kind() {
                    ErrorKind::InvalidConfig(why) => why.clone(),
                    _ => e.to_string(),
                };
                fail(format!("{display}: a read replica in its URL: {why}"))
            })?;
            replicas.push(replica);
        }
        let db = Database {
            pool,
            atomic_requests: false,
            autocommit: true,
            begin: None,
            test_with_begin: true,
            transaction_pooling: false,
            replicas,
            replica_wait: config.replica_wait,
            config: Some(config),
            display,
        };
        Ok(db.transaction_pooling(pooling))
    }

    /// Configures a database from an existing sqlx pool.
    ///
    /// The pool's own checks run on every connection it hands out, so
    /// [`test_with_begin`](Self::test_with_begin) is off: turn it on if the pool has no
    /// `before_acquire` hook.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// let db = sqlx_atomic::Database::from_pool(pool);
    /// # let _ = db; }
    /// ```
    pub fn from_pool<DB: Backend>(pool: Pool<DB>) -> Self {
        Database {
            pool: DB::__wrap_pool(pool),
            atomic_requests: false,
            autocommit: true,
            begin: None,
            test_with_begin: false,
            transaction_pooling: false,
            replicas: Vec::new(),
            replica_wait: None,
            config: None,
            display: format!("{} pool", DB::BACKEND_NAME),
        }
    }

    /// Wrap every request handled under the web layer in a transaction on this database
    /// (Django's `ATOMIC_REQUESTS`). Off by default.
    pub fn atomic_requests(mut self, on: bool) -> Self {
        self.atomic_requests = on;
        self
    }

    /// Whether connections of this alias start in autocommit mode (the default, `true`).
    /// With `false`, every task starts in manual mode (see [`set_autocommit`](crate::set_autocommit)).
    pub fn autocommit(mut self, on: bool) -> Self {
        self.autocommit = on;
        self
    }

    /// Let a transaction's BEGIN test the idle connection it runs on, instead of a separate ping.
    ///
    /// With sqlx's default `test_before_acquire(true)`, every connection taken from the pool
    /// costs a round trip (a ping) before the transaction's BEGIN. With this option a transaction
    /// takes an idle connection without the ping, and its BEGIN is the test: if the BEGIN fails
    /// because the connection is gone (an I/O error, or the server's "connection ended" errors,
    /// SQLSTATE classes 08 and 57P and MySQL's 70100), that connection is closed and the BEGIN is
    /// sent again on a connection acquired the usual way (pinged). Nothing was sent on the dead
    /// connection but the BEGIN, so the retry is safe, and the block never sees the failure.
    ///
    /// Connections taken this way skip the pool's `before_acquire` hook, which sqlx-atomic cannot
    /// see; so the option is on for the pools it builds ([`connect_lazy`](Self::connect_lazy),
    /// [`Databases::from_env`](crate::Databases::from_env)) and off for [`from_pool`](Self::from_pool) unless turned on.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
    /// // This pool has no `before_acquire` hook: its transactions may skip the ping.
    /// let db = sqlx_atomic::Database::from_pool(pool).test_with_begin(true);
    /// # let _ = db; }
    /// ```
    pub fn test_with_begin(mut self, on: bool) -> Self {
        self.test_with_begin = on;
        self
    }

    /// The database sits behind a transaction pooler, such as pgbouncer with
    /// `pool_mode = transaction`, which hands each transaction (and each statement outside one)
    /// to whichever server connection is free. PostgreSQL only. In this mode:
    ///
    /// - every statement is sent unnamed (sqlx's `persistent(false)`), because the pooler would
    ///   share sqlx's named prepared statements (`sqlx_s_1`, …) between its clients: without
    ///   the mode, errors such as `prepared statement "sqlx_s_2" does not exist`, and worse,
    ///   statements run with another client's;
    /// - a statement with bind parameters outside any block runs in a transaction of its own
    ///   (`BEGIN`, the statement, `COMMIT`), because the protocol messages of one unnamed
    ///   statement could otherwise reach different server connections; a statement without
    ///   parameters is one message and is sent alone;
    /// - a statement that keeps state in the server session is refused with
    ///   [`ErrorKind::SessionState`], naming what to use instead: `SET` without `LOCAL`,
    ///   `RESET`, `DISCARD`, `LISTEN`/`UNLISTEN`, session advisory locks, temporary tables
    ///   without `ON COMMIT DROP`, `PREPARE`, cursors `WITH HOLD`, `LOAD`;
    ///   [`PoolConfig::session_sql`] is refused at [`Databases::install`](crate::Databases::install);
    /// - the pool sends no `extra_float_digits` startup parameter, which pgbouncer refuses by
    ///   default (this changes the connect options of the pool, also one given to
    ///   [`from_pool`](Self::from_pool)).
    ///
    /// The mode is not needed behind pgbouncer 1.21 or later with `max_prepared_statements` set,
    /// which tracks prepared statements per client (not tested here: the tests run pgbouncer
    /// 1.18), nor behind a pooler in session mode. The URL parameter `atomic_pooling=transaction`
    /// turns it on without a code change ([`PoolConfig`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
    /// use sqlx_atomic::Database;
    /// let db = Database::connect_lazy("postgres://app@127.0.0.1:6432/app?atomic_pooling=transaction")?;
    /// assert!(format!("{db:?}").contains("transaction_pooling: true"));
    /// # Ok(()) }
    /// ```
    pub fn transaction_pooling(mut self, on: bool) -> Self {
        self.transaction_pooling = on;
        #[cfg(feature = "postgres")]
        if on && let AnyPool::Postgres(pool) = &self.pool {
            let options = (*pool.connect_options()).clone().extra_float_digits(None);
            pool.set_connect_options(options);
        }
        self
    }

    /// What the checks of its replicas need to know of this database.
    fn facts(&self) -> crate::replica_set::Facts<'_> {
        crate::replica_set::Facts {
            pool: &self.pool,
            display: &self.display,
            transaction_pooling: self.transaction_pooling,
            has_replicas: !self.replicas.is_empty(),
        }
    }

    /// Why this database cannot be installed as configured, if it cannot.
    pub(crate) fn invalid(&self) -> Option<String> {
        let replicas: Vec<_> = self.replicas.iter().map(Database::facts).collect();
        if let Some(why) = crate::replica_set::invalid(self.facts(), &replicas) {
            return Some(why);
        }
        if !self.transaction_pooling {
            return None;
        }
        #[cfg(feature = "postgres")]
        let postgres = self.pool.kind() == crate::backend::BackendKind::Postgres;
        #[cfg(not(feature = "postgres"))]
        let postgres = false;
        if !postgres {
            return Some(format!(
                "transaction pooling is a PostgreSQL mode (for pgbouncer), but this database is {}",
                self.pool.kind().name()
            ));
        }
        if self
            .config
            .as_ref()
            .is_some_and(|c| !c.session_sql.is_empty())
        {
            return Some(
                "session SQL cannot be used with transaction pooling: the pooler gives each \
                 transaction any server connection, so a session setting would reach other \
                 clients and miss this one; set it per transaction instead (`SET LOCAL` inside \
                 the block)"
                    .to_owned(),
            );
        }
        None
    }

    /// The statement that opens a transaction, instead of `BEGIN`; for SQLite, for example,
    /// `"BEGIN IMMEDIATE"` takes the write lock at once and avoids `SQLITE_BUSY` on upgrade.
    pub fn begin_statement(mut self, statement: &str) -> Self {
        self.begin = Some(statement.to_owned());
        self
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Database");
        d.field("url", &self.display)
            .field("backend", &self.pool.kind().name())
            .field("atomic_requests", &self.atomic_requests)
            .field("autocommit", &self.autocommit)
            .field("test_with_begin", &self.test_with_begin)
            .field("transaction_pooling", &self.transaction_pooling);
        if !self.replicas.is_empty() {
            let replicas: Vec<String> = (self.replicas.iter())
                .map(|r| crate::replica_set::describe(&r.pool, &r.display))
                .collect();
            d.field("replicas", &replicas).field(
                "replica_wait",
                &self
                    .replica_wait
                    .unwrap_or(crate::replica_set::DEFAULT_WAIT),
            );
        }
        if let Some(c) = &self.config {
            d.field("max_connections", &c.max_connections)
                .field("min_connections", &c.min_connections)
                .field("acquire_timeout", &c.acquire_timeout)
                .field("idle_timeout", &c.idle_timeout)
                .field("max_lifetime", &c.max_lifetime)
                // The statements are the user's and may name anything: count them only.
                .field("session_sql", &c.session_sql.len());
        }
        d.finish()
    }
}

/// Pool options that run the configuration's session SQL on every new connection.
fn with_session_sql<DB: sqlx::Database>(
    options: sqlx::pool::PoolOptions<DB>,
    config: &PoolConfig,
) -> sqlx::pool::PoolOptions<DB>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    if config.session_sql.is_empty() {
        return options;
    }
    let statements: Arc<[String]> = config.session_sql.clone().into();
    options.after_connect(move |conn, _| {
        let statements = statements.clone();
        Box::pin(async move {
            for sql in statements.iter() {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| {
                        sqlx::Error::Configuration(
                            format!("session SQL `{sql}` failed on a new connection: {e}").into(),
                        )
                    })?;
            }
            Ok(())
        })
    })
}

fn enabled_backends() -> String {
    [
        cfg!(feature = "sqlite").then_some("sqlite"),
        cfg!(feature = "postgres").then_some("postgres"),
        cfg!(feature = "mysql").then_some("mysql"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_pool_config_reaches_the_pool() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _in_runtime = rt.enter();
        let config = PoolConfig::new()
            .max_connections(3)
            .min_connections(1)
            .acquire_timeout(Duration::from_millis(1500))
            .idle_timeout(None)
            .max_lifetime(Some(Duration::from_secs(60)));
        let db = Database::connect_lazy_with("sqlite::memory:", config).unwrap();
        let AnyPool::Sqlite(pool) = &db.pool else {
            panic!("a SQLite pool");
        };
        let options = pool.options();
        assert_eq!(options.get_max_connections(), 3);
        assert_eq!(options.get_min_connections(), 1);
        assert_eq!(options.get_acquire_timeout(), Duration::from_millis(1500));
        assert_eq!(options.get_idle_timeout(), None);
        assert_eq!(options.get_max_lifetime(), Some(Duration::from_secs(60)));
        assert!(db.test_with_begin, "the BEGIN stays the connection test");
        // Unset, sqlx's defaults.
        let db = Database::connect_lazy("sqlite::memory:").unwrap();
        let AnyPool::Sqlite(pool) = &db.pool else {
            panic!("a SQLite pool");
        };
        assert_eq!(pool.options().get_max_connections(), 10);
    }
}
