//! The process-wide registry of databases by alias: `Databases` (Django's `DATABASES`) installs
//! them once; every query, hook and block looks its alias up here.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::Pool;

use crate::backend::{Backend, BackendKind};
use crate::config::Database;
use crate::error::{Error, ErrorKind};

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

/// Checks at start-up that every installed database, read replicas included, can be connected
/// to now, each within `timeout` and all at once: the first failure names the alias, the database
/// (password hidden) and the cause, instead of a pool time-out at the first query.
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
    // Every database of every alias: its primary and its read replicas.
    let databases = registry.entries.iter().flat_map(|entry| {
        let replicas = entry.replicas.iter().flat_map(|set| set.replicas.iter());
        std::iter::once((entry, &entry.db.pool, &entry.db.display))
            .chain(replicas.map(move |r| (entry, &r.pool, &r.display)))
    });
    let checks = databases.map(|(entry, pool, display)| async move {
        let cause = match tokio::time::timeout(timeout, pool.try_connect()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {timeout:?}"),
        };
        Err(Error::at(
            &entry.name,
            ErrorKind::Unreachable {
                database: display.clone(),
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
    entry_pool(lookup(alias)?)
}

/// The sqlx pool of an installed alias, for the backend `DB`.
pub(crate) fn entry_pool<DB: Backend>(entry: &AliasEntry) -> Result<Pool<DB>, Error> {
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
