//! What a failed statement means for its transaction, per backend: whether the server rolled the
//! whole transaction back, and whether the failure is a conflict that a new attempt may not meet.

use std::fmt;
use std::sync::Arc;

/// A conflict between concurrent transactions, which a new attempt of the same work may not meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Conflict {
    /// A serialization failure: PostgreSQL's SQLSTATE 40001.
    Serialization,
    /// A deadlock: PostgreSQL's 40P01; MySQL/MariaDB's 1213, which Galera also reports for a
    /// write conflict between nodes (certification failure).
    Deadlock,
    /// A lock wait that timed out and made the server roll the whole transaction back
    /// (MySQL/MariaDB's 1205 with `innodb_rollback_on_timeout`).
    LockTimeout,
    /// SQLite's `SQLITE_BUSY` family (5, 261, 517 `BUSY_SNAPSHOT`, 773): another connection
    /// holds the lock, or the snapshot went stale.
    Busy,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conflict::Serialization => "serialization failure",
            Conflict::Deadlock => "deadlock",
            Conflict::LockTimeout => "lock wait timeout",
            Conflict::Busy => "database busy",
        })
    }
}

/// What a failed statement did to the transaction it ran in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Only the statement failed; the transaction and its savepoints are still there
    /// (PostgreSQL marks the transaction aborted, which a savepoint rollback undoes).
    Statement,
    /// The server rolled the whole transaction back: no savepoint of it exists any more.
    Transaction,
    /// The connection is gone, and the transaction with it.
    Connection,
}

/// The first error that doomed a block or a transaction: kept by the state machine, so that the
/// block can report it even when its body ignored it. Cheap to clone.
#[derive(Clone)]
pub struct Cause(Arc<CauseInner>);

struct CauseInner {
    code: Option<String>,
    message: String,
    conflict: Option<Conflict>,
    whole: bool,
}

impl Cause {
    /// The cause of a failed statement.
    pub(crate) fn of(e: &sqlx::Error, effect: Effect) -> Self {
        let code = match e {
            sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
            _ => None,
        };
        let conflict = conflict_of(e).filter(|c| {
            // A lock wait timeout is a conflict to retry only when the server rolled back.
            *c != Conflict::LockTimeout || effect == Effect::Transaction
        });
        Cause(Arc::new(CauseInner {
            code,
            message: e.to_string(),
            conflict,
            whole: effect != Effect::Statement,
        }))
    }

    /// A cause that is not a database error (a query the library refused).
    pub(crate) fn refused(message: String) -> Self {
        Cause(Arc::new(CauseInner {
            code: None,
            message,
            conflict: None,
            whole: false,
        }))
    }

    /// A cause with `code` and `conflict`, for the state machine's own tests.
    #[cfg(test)]
    pub(crate) fn for_tests(code: &str, conflict: Option<Conflict>) -> Self {
        Cause(Arc::new(CauseInner {
            code: Some(code.to_owned()),
            message: format!("error {code}"),
            conflict,
            whole: false,
        }))
    }

    /// The database error's code, as `sqlx::error::DatabaseError::code` gives it: the SQLSTATE
    /// on PostgreSQL and MySQL/MariaDB, the extended result code on SQLite.
    pub fn code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }

    /// The error's message, as the server (or the library) gave it.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The conflict this error reports, if it is one.
    pub fn conflict(&self) -> Option<Conflict> {
        self.0.conflict
    }

    /// Whether the server rolled the whole transaction back (or the connection was lost).
    pub fn ended_transaction(&self) -> bool {
        self.0.whole
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cause")
            .field("code", &self.0.code)
            .field("message", &self.0.message)
            .field("conflict", &self.0.conflict)
            .finish()
    }
}

/// The conflict an error reports, whatever backend it comes from.
pub(crate) fn conflict_of(e: &sqlx::Error) -> Option<Conflict> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    #[cfg(feature = "mysql")]
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return match my.number() {
            1213 => Some(Conflict::Deadlock),
            1205 => Some(Conflict::LockTimeout),
            _ => None,
        };
    }
    #[cfg(feature = "sqlite")]
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        let code: i32 = db.code()?.parse().ok()?;
        return (code & 0xff == 5).then_some(Conflict::Busy);
    }
    match db.code()?.as_ref() {
        "40001" => Some(Conflict::Serialization),
        "40P01" => Some(Conflict::Deadlock),
        _ => None,
    }
}

/// What a failed statement did to its transaction. `rollback_on_timeout`: MySQL/MariaDB's
/// `innodb_rollback_on_timeout`, asked for only when a lock wait timed out.
pub(crate) fn effect_of(e: &sqlx::Error, rollback_on_timeout: impl FnOnce() -> bool) -> Effect {
    if crate::backend::connection_gone(e) {
        return Effect::Connection;
    }
    #[cfg(feature = "mysql")]
    if let sqlx::Error::Database(db) = e
        && let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
    {
        return match my.number() {
            // InnoDB (and Galera) roll back the whole transaction on a deadlock.
            1213 => Effect::Transaction,
            1205 if rollback_on_timeout() => Effect::Transaction,
            _ => Effect::Statement,
        };
    }
    let _ = rollback_on_timeout;
    Effect::Statement
}

/// Whether an error is a MySQL/MariaDB lock wait timeout, whose effect depends on the server's
/// `innodb_rollback_on_timeout`.
pub(crate) fn is_lock_timeout(e: &sqlx::Error) -> bool {
    conflict_of(e) == Some(Conflict::LockTimeout)
}
