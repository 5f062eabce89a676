//! The pool settings of a database the library connects to, from code and from the URL.

use std::time::Duration;

/// The size, timeouts and connection settings of a pool that
/// [`Database::connect_lazy_with`](crate::Database::connect_lazy_with) builds; what is not set
/// keeps sqlx's default (at most 10 connections, none kept open, a 30 s acquire timeout, idle
/// connections closed after 10 minutes, every connection after 30 minutes).
///
/// Every setting can also come from the database URL, so that a deployment changes it without a
/// code change ([`Databases::from_env`](crate::Databases::from_env) reads such URLs from
/// `DATABASE_URL` and `DATABASE_URL_<ALIAS>`). These query parameters are the library's: it
/// takes them out of the URL before sqlx reads it, and a value given in the URL wins over the
/// one given in code.
///
/// | URL parameter | setting |
/// |---|---|
/// | `atomic_max_connections=20` | [`max_connections`](Self::max_connections) |
/// | `atomic_min_connections=2` | [`min_connections`](Self::min_connections) |
/// | `atomic_acquire_timeout=5s` | [`acquire_timeout`](Self::acquire_timeout) (`5`, `5s`, `500ms`) |
/// | `atomic_idle_timeout=10m` | [`idle_timeout`](Self::idle_timeout) (`none`: never) |
/// | `atomic_max_lifetime=30m` | [`max_lifetime`](Self::max_lifetime) (`none`: for ever) |
/// | `atomic_pooling=transaction` | [`transaction_pooling`](Self::transaction_pooling) (`session`: off) |
/// | `atomic_session_sql=SET%20wsrep_sync_wait%3D1` | [`session_sql`](Self::session_sql), percent-encoded |
/// | `atomic_replica=postgres%3A%2F%2Fapp%40replica%2Fapp` | [`Database::read_replica`](crate::Database::read_replica) of a database connected to that URL, percent-encoded (repeatable; its own `atomic_*` parameters apply to it) |
/// | `atomic_replica_wait=250ms` | [`Database::replica_wait`](crate::Database::replica_wait) |
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// use std::time::Duration;
/// use sqlx_atomic::{Database, PoolConfig};
/// let db = Database::connect_lazy_with(
///     "sqlite::memory:?atomic_max_connections=4",
///     PoolConfig::new().acquire_timeout(Duration::from_secs(5)),
/// )?;
/// assert!(format!("{db:?}").contains("max_connections: Some(4)"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolConfig {
    pub(crate) max_connections: Option<u32>,
    pub(crate) min_connections: Option<u32>,
    pub(crate) acquire_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Option<Duration>>,
    pub(crate) max_lifetime: Option<Option<Duration>>,
    pub(crate) transaction_pooling: Option<bool>,
    pub(crate) session_sql: Vec<String>,
    /// The URLs of `atomic_replica=` parameters.
    pub(crate) replicas: Vec<String>,
    pub(crate) replica_wait: Option<Duration>,
}

impl PoolConfig {
    /// sqlx's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most connections the pool opens.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// The connections the pool keeps open even when idle.
    pub fn min_connections(mut self, min: u32) -> Self {
        self.min_connections = Some(min);
        self
    }

    /// How long taking a connection may wait before it fails (`PoolTimedOut`, naming the alias).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = Some(timeout);
        self
    }

    /// How long a connection may stay idle before it is closed; `None`: never.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// How long a connection may live before it is closed; `None`: for ever.
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.max_lifetime = Some(lifetime);
        self
    }

    /// The database sits behind a transaction pooler (pgbouncer's `pool_mode = transaction`):
    /// see [`Database::transaction_pooling`](crate::Database::transaction_pooling).
    pub fn transaction_pooling(mut self, on: bool) -> Self {
        self.transaction_pooling = Some(on);
        self
    }

    /// SQL run on every new connection before it is used, in order: session settings such as
    /// Galera's causal reads (`SET SESSION wsrep_sync_wait = 1`), a PostgreSQL `search_path`, or
    /// SQLite `PRAGMA`s. A failing statement fails the connection, and the error names it.
    /// Refused together with transaction pooling, where a session setting would leak to other
    /// clients and vanish for this one.
    pub fn session_sql(mut self, sql: impl Into<String>) -> Self {
        self.session_sql.push(sql.into());
        self
    }

    /// Takes the library's parameters (`atomic_*`) out of `url`: the URL sqlx is given, and this
    /// configuration with the URL's values over the code's.
    pub(crate) fn with_url(mut self, url: &str) -> Result<(String, Self), String> {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), self));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(name) = key.strip_prefix("atomic_") else {
                kept.push(pair);
                continue;
            };
            let bad = |what: &str| format!("URL parameter `{key}={value}`: {what}");
            match name {
                "max_connections" => {
                    self.max_connections = Some(value.parse().map_err(|_| bad("not a count"))?)
                }
                "min_connections" => {
                    self.min_connections = Some(value.parse().map_err(|_| bad("not a count"))?)
                }
                "acquire_timeout" => {
                    self.acquire_timeout = Some(duration(value).ok_or_else(|| bad(DURATION))?)
                }
                "idle_timeout" => self.idle_timeout = Some(optional_duration(value, &bad)?),
                "max_lifetime" => self.max_lifetime = Some(optional_duration(value, &bad)?),
                "pooling" => {
                    self.transaction_pooling = Some(match value {
                        "transaction" => true,
                        "session" => false,
                        _ => return Err(bad("expected `transaction` or `session`")),
                    })
                }
                "session_sql" => self
                    .session_sql
                    .push(percent_decode(value).ok_or_else(|| bad("bad percent-encoding"))?),
                // The replica's URL is not quoted in the error: it may hold a password.
                "replica" => self.replicas.push(
                    percent_decode(value)
                        .ok_or_else(|| format!("URL parameter `{key}`: bad percent-encoding"))?,
                ),
                "replica_wait" => {
                    self.replica_wait = Some(duration(value).ok_or_else(|| bad(DURATION))?)
                }
                _ => {
                    return Err(format!(
                        "unknown URL parameter `{key}` (the library's are atomic_max_connections, \
                         atomic_min_connections, atomic_acquire_timeout, atomic_idle_timeout, \
                         atomic_max_lifetime, atomic_pooling, atomic_session_sql, atomic_replica, \
                         atomic_replica_wait)"
                    ));
                }
            }
        }
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((url, self))
    }

    /// sqlx's pool options with these settings (the session SQL is the caller's: it needs the
    /// backend's connection type).
    pub(crate) fn options<DB: sqlx::Database>(&self) -> sqlx::pool::PoolOptions<DB> {
        let mut options = sqlx::pool::PoolOptions::new();
        if let Some(max) = self.max_connections {
            options = options.max_connections(max);
        }
        if let Some(min) = self.min_connections {
            options = options.min_connections(min);
        }
        if let Some(timeout) = self.acquire_timeout {
            options = options.acquire_timeout(timeout);
        }
        if let Some(timeout) = self.idle_timeout {
            options = options.idle_timeout(timeout);
        }
        if let Some(lifetime) = self.max_lifetime {
            options = options.max_lifetime(lifetime);
        }
        options
    }
}

const DURATION: &str =
    "expected seconds (`5`, `2.5`, `5s`), milliseconds (`500ms`) or minutes (`10m`)";

/// `5`, `2.5`, `5s`, `500ms`, `10m`.
fn duration(value: &str) -> Option<Duration> {
    let (number, scale) = if let Some(ms) = value.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = value.strip_suffix('s') {
        (s, 1.0)
    } else if let Some(m) = value.strip_suffix('m') {
        (m, 60.0)
    } else {
        (value, 1.0)
    };
    let seconds: f64 = number.parse().ok()?;
    Duration::try_from_secs_f64(seconds * scale).ok()
}

fn optional_duration(
    value: &str,
    bad: &dyn Fn(&str) -> String,
) -> Result<Option<Duration>, String> {
    if value == "none" {
        return Ok(None);
    }
    duration(value).map(Some).ok_or_else(|| bad(DURATION))
}

/// Decodes `%XX` escapes and `+` (a space, as in a form-encoded query).
pub(crate) fn percent_decode(value: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        match b {
            b'%' => {
                let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &tail[2..];
            }
            b'+' => {
                bytes.push(b' ');
                rest = tail;
            }
            _ => {
                bytes.push(b);
                rest = tail;
            }
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_are_taken_out_and_win_over_code() {
        let code = PoolConfig::new().max_connections(3).min_connections(1);
        let (url, config) = code
            .with_url(
                "postgres://u:pw@h/db?sslmode=disable&atomic_max_connections=7\
                 &atomic_acquire_timeout=500ms&atomic_idle_timeout=none&atomic_max_lifetime=10m\
                 &atomic_pooling=transaction&atomic_session_sql=SET+a%3D1&application_name=x\
                 &atomic_replica=postgres%3A%2F%2Fr1%2Fdb&atomic_replica=postgres%3A%2F%2Fr2%2Fdb\
                 &atomic_replica_wait=250ms",
            )
            .unwrap();
        assert_eq!(
            url,
            "postgres://u:pw@h/db?sslmode=disable&application_name=x"
        );
        assert_eq!(config.max_connections, Some(7));
        assert_eq!(config.min_connections, Some(1), "kept from code");
        assert_eq!(config.acquire_timeout, Some(Duration::from_millis(500)));
        assert_eq!(config.idle_timeout, Some(None));
        assert_eq!(config.max_lifetime, Some(Some(Duration::from_secs(600))));
        assert_eq!(config.transaction_pooling, Some(true));
        assert_eq!(config.session_sql, ["SET a=1"]);
        assert_eq!(config.replicas, ["postgres://r1/db", "postgres://r2/db"]);
        assert_eq!(config.replica_wait, Some(Duration::from_millis(250)));
        let (url, _) = PoolConfig::new()
            .with_url("sqlite::memory:?atomic_pooling=session")
            .unwrap();
        assert_eq!(url, "sqlite::memory:");
    }

    #[test]
    fn bad_url_parameters_say_which_and_why() {
        for (url, expected) in [
            ("sqlite::memory:?atomic_max_connections=many", "not a count"),
            (
                "sqlite::memory:?atomic_acquire_timeout=soon",
                "expected seconds",
            ),
            (
                "sqlite::memory:?atomic_pooling=statement",
                "`transaction` or `session`",
            ),
            ("sqlite::memory:?atomic_session_sql=%zz", "percent-encoding"),
            ("sqlite::memory:?atomic_replica=%zz", "percent-encoding"),
            (
                "sqlite::memory:?atomic_replica_wait=soon",
                "expected seconds",
            ),
            (
                "sqlite::memory:?atomic_max_conections=4",
                "unknown URL parameter",
            ),
        ] {
            let e = PoolConfig::new().with_url(url).unwrap_err();
            assert!(e.contains(expected), "{url}: {e}");
        }
    }
}
