//! Configuration of several databases by alias, like Django's `DATABASES`, and the
//! process-wide registry they are installed into.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::Pool;

use crate::backend::{AnyPool, Backend, BackendKind};
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
    /// [`Databases::from_env`]) and off for [`from_pool`](Self::from_pool) unless turned on.
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
    ///   [`PoolConfig::session_sql`] is refused at [`Databases::install`];
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
        let postgres = self.pool.kind() == BackendKind::Postgres;
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

/// The set of databases of a process, by alias, like Django's `DATABASES`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// use sqlx_atomic::{Database, Databases};
/// Databases::new()
///     .add("default", Database::connect_lazy("sqlite::memory:")?)
///     .install()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Databases {
    entries: Vec<(String, Database)>,
}

impl Databases {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a database under `alias`. Adding an alias twice is reported by [`install`](Self::install).
    pub fn add(mut self, alias: impl Into<String>, database: Database) -> Self {
        self.entries.push((alias.into(), database));
        self
    }

    /// Reads `DATABASE_URL` (alias `default`) and every `DATABASE_URL_<ALIAS>` (alias in lower
    /// case) from the environment. Empty values are skipped. Must run inside a tokio runtime.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(std::env::vars())
    }

    /// [`from_env`](Self::from_env) over any list of `(name, value)` pairs.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
    /// let dbs = sqlx_atomic::Databases::from_vars([
    ///     ("DATABASE_URL".to_string(), "sqlite::memory:".to_string()),
    ///     ("DATABASE_URL_REPORTS".to_string(), "sqlite::memory:".to_string()),
    ///     ("HOME".to_string(), "/root".to_string()),
    /// ])?;
    /// assert_eq!(dbs.aliases().collect::<Vec<_>>(), ["default", "reports"]);
    /// let bad = sqlx_atomic::Databases::from_vars([
    ///     ("DATABASE_URL_X".to_string(), "nosuch://u:pw@h/db".to_string()),
    /// ]);
    /// assert!(bad.unwrap_err().to_string().contains("`x`"));
    /// # Ok(()) }
    /// ```
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, Error> {
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .filter_map(|(k, v)| {
                let alias = if k == "DATABASE_URL" {
                    "default".to_owned()
                } else {
                    k.strip_prefix("DATABASE_URL_")?.to_ascii_lowercase()
                };
                (!v.is_empty() && !alias.is_empty()).then_some((alias, v))
            })
            .collect();
        vars.sort();
        let mut dbs = Databases::new();
        for (alias, url) in vars {
            let db = Database::connect_lazy(&url)
                .map_err(|e| e.with_alias(&Arc::from(alias.as_str())))?;
            dbs = dbs.add(alias, db);
        }
        Ok(dbs)
    }

    /// The aliases added so far.
    pub fn aliases(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(a, _)| a.as_str())
    }

    /// Installs these databases for the whole process. May be called once.
    pub fn install(self) -> Result<(), Error> {
        let mut by_name = HashMap::new();
        let mut entries = Vec::new();
        for (index, (name, db)) in self.entries.into_iter().enumerate() {
            if name.is_empty() {
                return Err(Error::named(
                    "",
                    ErrorKind::InvalidConfig("an alias cannot be empty".into()),
                ));
            }
            if let Some(why) = db.invalid() {
                return Err(Error::named(&name, ErrorKind::InvalidConfig(why)));
            }
            if by_name.insert(name.clone(), index).is_some() {
                return Err(Error::named(&name, ErrorKind::DuplicateAlias));
            }
            entries.push(Arc::new(AliasEntry {
                index,
                name: Arc::from(name.as_str()),
                kind: db.pool.kind(),
                replicas: crate::replica_set::ReplicaSet::build(
                    db.replicas.iter().map(|r| (&r.pool, r.display.as_str())),
                    db.replica_wait,
                ),
                db,
            }));
        }
        let request_aliases = entries
            .iter()
            .filter(|e| e.db.atomic_requests)
            .map(|e| e.index)
            .collect();
        let registry = Registry {
            entries,
            by_name,
            request_aliases,
        };
        REGISTRY
            .set(registry)
            .map_err(|_| Error::new(None, ErrorKind::AlreadyInstalled))
    }
}

/// One installed alias.
pub(crate) struct AliasEntry {
    pub(crate) index: usize,
    pub(crate) name: Arc<str>,
    pub(crate) kind: BackendKind,
    /// Its read replicas, if it has any: then statements outside blocks may go to them, and
    /// transaction control is sent as plain statements (see `Lease::send`).
    pub(crate) replicas: Option<Box<crate::replica_set::ReplicaSet>>,
    pub(crate) db: Database,
}

impl AliasEntry {
    /// Whether the backend aborts a whole transaction on any error (PostgreSQL).
    pub(crate) fn tracks_abort(&self) -> bool {
        #[cfg(feature = "postgres")]
        if self.kind == BackendKind::Postgres {
            return true;
        }
        false
    }
}

pub(crate) struct Registry {
    pub(crate) entries: Vec<Arc<AliasEntry>>,
    by_name: HashMap<String, usize>,
    /// The indices of the aliases with `atomic_requests(true)`, in the order they were added.
    pub(crate) request_aliases: Box<[usize]>,
}

impl Registry {
    /// The entry of `alias`. With the usual handful of aliases, comparing the names is several
    /// times cheaper than hashing one.
    #[inline]
    fn find(&'static self, alias: &str) -> Option<&'static Arc<AliasEntry>> {
        if self.entries.len() <= LINEAR_LOOKUP {
            self.entries.iter().find(|e| &*e.name == alias)
        } else {
            self.by_name.get(alias).map(|&i| &self.entries[i])
        }
    }
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// Up to this many aliases, [`lookup`] compares names instead of hashing.
const LINEAR_LOOKUP: usize = 8;

pub(crate) fn registry() -> Result<&'static Registry, Error> {
    REGISTRY
        .get()
        .ok_or_else(|| Error::new(None, ErrorKind::NotInstalled))
}

/// Whether [`Databases::install`] has been called.
#[inline]
pub fn is_installed() -> bool {
    REGISTRY.get().is_some()
}

/// The aliases installed, in the order they were added.
pub fn installed_aliases() -> Vec<String> {
    REGISTRY
        .get()
        .map(|r| r.entries.iter().map(|e| e.name.to_string()).collect())
        .unwrap_or_default()
}

/// Checks at start-up that every installed database can be connected to now, each within
/// `timeout` and all at once: the first failure names the alias, the database (password hidden)
/// and the cause, instead of a pool time-out at the first query.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// use std::time::Duration;
/// sqlx_atomic::Databases::new()
///     .add("default", sqlx_atomic::Database::connect_lazy("sqlite::memory:")?)
///     .install()?;
/// sqlx_atomic::check_databases(Duration::from_secs(5)).await?;
/// # Ok(()) }
/// ```
pub async fn check_databases(timeout: Duration) -> Result<(), Error> {
    let registry = registry()?;
    let checks = registry.entries.iter().map(|entry| async move {
        let cause = match tokio::time::timeout(timeout, entry.db.pool.try_connect()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {timeout:?}"),
        };
        Err(Error::at(
            &entry.name,
            ErrorKind::Unreachable {
                database: entry.db.display.clone(),
                cause,
            },
        ))
    });
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .collect()
}

#[inline]
pub(crate) fn lookup(alias: &str) -> Result<&'static Arc<AliasEntry>, Error> {
    // Every query and hook looks its alias up: the hit returns a pointer.
    match REGISTRY.get() {
        Some(reg) => match reg.find(alias) {
            Some(entry) => Ok(entry),
            None => Err(lookup_failed(alias)),
        },
        None => Err(lookup_failed(alias)),
    }
}

fn lookup_failed(alias: &str) -> Error {
    match registry() {
        Err(e) => Error::named(alias, e.kind_owned()),
        Ok(_) => Error::named(alias, ErrorKind::UnknownAlias),
    }
}

/// The sqlx pool of `alias`, for work that must bypass the ambient transaction (a fresh
/// connection in a test, a migration).
pub fn pool<DB: Backend>(alias: &str) -> Result<Pool<DB>, Error> {
    let entry = lookup(alias)?;
    DB::__pool(&entry.db.pool).cloned().ok_or_else(|| {
        Error::at(
            &entry.name,
            ErrorKind::WrongBackend {
                expected: DB::BACKEND_NAME,
                actual: entry.kind.name(),
            },
        )
    })
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
