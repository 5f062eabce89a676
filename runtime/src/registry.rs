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

/// The miss path of [`lookup`], out of line so that the hit stays a pointer comparison or two.
#[cold]
#[inline(never)]
fn lookup_failed(alias: &str) -> Error {
    match registry() {
        Err(e) => Error::named(alias, e.kind_owned()),
        Ok(_) => Error::named(alias, ErrorKind::UnknownAlias),
    }
}

/// At most this many configured aliases are listed in an unknown alias's message.
const LISTED_ALIASES: usize = 12;

/// What follows "this alias is not configured" in the message of an unknown `alias`: the closest
/// configured alias, if one is close enough to be a typo, and the configured ones.
///
/// The aliases are fixed once installed, so the hint is made when the message is shown, and an
/// unknown alias costs nothing more until then.
pub(crate) fn unknown_alias_hint(alias: &str) -> String {
    let Some(registry) = REGISTRY.get() else {
        return " (see `Databases::add`)".to_owned();
    };
    let names: Vec<&str> = registry.entries.iter().map(|e| &*e.name).collect();
    let mut hint = String::new();
    if let Some(near) = closest(alias, &names) {
        hint.push_str(&format!("; did you mean `{near}`?"));
    }
    let mut listed = names
        .iter()
        .take(LISTED_ALIASES)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LISTED_ALIASES {
        listed.push_str(&format!(" and {} more", names.len() - LISTED_ALIASES));
    }
    hint.push_str(&format!(" (configured: {listed}; see `Databases::add`)"));
    hint
}

/// The candidate closest to `typed` when it is close enough to be a typo of it: at most one
/// edit (insertion, deletion, substitution or swap of neighbours) per three characters, at least
/// one, ignoring case. The first of equally close candidates wins.
fn closest<'a>(typed: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let typed: Vec<char> = typed.chars().flat_map(char::to_lowercase).collect();
    let limit = typed.len().max(3) / 3;
    candidates
        .iter()
        .filter_map(|&candidate| {
            let lower: Vec<char> = candidate.chars().flat_map(char::to_lowercase).collect();
            // The distance is at least the difference in length: a long input is not compared.
            if lower.len().abs_diff(typed.len()) > limit {
                return None;
            }
            let distance = edit_distance(&typed, &lower);
            (distance <= limit).then_some((distance, candidate))
        })
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// The optimal string alignment distance between `a` and `b`: the fewest insertions, deletions,
/// substitutions and swaps of two neighbouring characters that turn one into the other (a swap
/// is the commonest typo, `defualt`, and counts as one edit, not two).
fn edit_distance(a: &[char], b: &[char]) -> usize {
    // Three rows of the table: the one before the previous (for swaps), the previous, the current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The sqlx pool of `alias`, for work that must bypass the ambient transaction (a fresh
/// connection in a test, a migration, a read that must not see the block's uncommitted writes).
///
/// # A task that holds a connection and asks the pool for another waits for itself
///
/// Inside an atomic block (or a request's transaction) the task holds one of the alias's
/// connections until the block ends. A query through the returned pool takes a *second* one. When
/// every task holds one and waits for a second (a pool of 2 and 20 concurrent requests doing
/// this), nothing is ever given back: the tasks wait until the pool's acquire timeout, and then
/// all fail. Instead:
///
/// - query through the ambient handle ([`sqlite`](crate::sqlite), [`postgres`](crate::postgres),
///   [`mysql`](crate::mysql)) inside the block: it uses the block's connection;
/// - or take the pool's connection before entering the block (`pool.acquire().await?`), so the
///   task never waits for one while it holds another;
/// - or size the pool for it: at least one more connection than the number of tasks that may
///   hold one at once.
///
/// # Errors
///
/// - [`ErrorKind::UnknownAlias`] and [`ErrorKind::WrongBackend`], as for any handle.
/// - [`ErrorKind::PoolHeldByTask`]: the pool has one connection and the current task holds it
///   (in a block, after its first query): a query through the pool would wait for ever. With a
///   larger pool that is full while the task holds one of its connections, another task may give
///   one back in a moment, so the pool is returned and a warning naming the alias is logged
///   (target `sqlx_atomic`): it deadlocks when every task does the same.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// use sqlx_atomic::{Database, Databases, PoolConfig};
/// Databases::new()
///     .add(
///         "default",
///         Database::connect_lazy_with("sqlite::memory:", PoolConfig::new().max_connections(1))?,
///     )
///     .install()?;
/// // Outside any block: the pool, whatever it holds.
/// let pool = sqlx_atomic::pool::<sqlx::Sqlite>("default")?;
/// sqlx::query("SELECT 1").execute(&pool).await?;
/// // Inside a block, after a query, the block holds the only connection: the pool would never
/// // give a second one.
/// let refused = sqlx_atomic::Atomic::new()
///     .run(async {
///         sqlx::query("SELECT 1").execute(sqlx_atomic::sqlite("default")).await?;
///         Ok::<_, sqlx_atomic::Error>(sqlx_atomic::pool::<sqlx::Sqlite>("default").is_err())
///     })
///     .await?;
/// assert!(refused);
/// # Ok(()) }
/// ```
pub fn pool<DB: Backend>(alias: &str) -> Result<Pool<DB>, Error> {
    let entry = lookup(alias)?;
    let pool = entry_pool::<DB>(entry)?;
    let max = pool.options().get_max_connections();
    if pool.num_idle() == 0 && pool.size() >= max && task_holds_connection(entry) {
        let error = Error::at(
            &entry.name,
            ErrorKind::PoolHeldByTask {
                max_connections: max,
            },
        );
        // With one connection, the one this task holds, nothing can ever free another: a
        // certain deadlock. With more, another task may give one back in a moment (or may be
        // doing the same): a warning, as refusing would fail ordinary calls under load.
        if max <= 1 {
            return Err(error);
        }
        tracing::warn!(target: "sqlx_atomic", error = %error, "pool() may deadlock");
    }
    Ok(pool)
}

/// Whether the current task holds a connection of `entry`'s alias: in its slot (a block's
/// transaction), or leased by a statement or a result stream in flight.
fn task_holds_connection(entry: &AliasEntry) -> bool {
    crate::frame::Frame::with_current(|frame| frame.ctx().existing_alias(entry.index))
        .flatten()
        .is_some_and(|actx| {
            let slot = crate::sync::lock(&actx.slot);
            slot.conn.is_some() || slot.held
        })
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

#[cfg(test)]
mod tests {
    use super::{closest, edit_distance};

    fn distance(a: &str, b: &str) -> usize {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        edit_distance(&a, &b)
    }

    #[test]
    fn a_swap_of_neighbours_is_one_edit() {
        assert_eq!(distance("defualt", "default"), 1);
        assert_eq!(distance("default", "default"), 0);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("reprots", "reports"), 1);
        assert_eq!(distance("ca", "abc"), 3);
    }

    #[test]
    fn the_closest_alias_within_one_edit_per_three_characters() {
        let configured = ["default", "other", "reports"];
        assert_eq!(closest("defualt", &configured), Some("default"));
        assert_eq!(closest("Default", &configured), Some("default"));
        assert_eq!(closest("defaults", &configured), Some("default"));
        assert_eq!(closest("reprot", &configured), Some("reports"));
        assert_eq!(closest("othr", &configured), Some("other"));
        assert_eq!(closest("analytics", &configured), None);
        assert_eq!(closest("", &configured), None);
        assert_eq!(closest(&"x".repeat(100_000), &configured), None);
        // Short names: one edit at most.
        assert_eq!(closest("pgg", &["pg", "my"]), Some("pg"));
        assert_eq!(closest("xy", &["pg", "my"]), Some("my"));
        assert_eq!(closest("ab", &["pg", "my"]), None);
    }
}
