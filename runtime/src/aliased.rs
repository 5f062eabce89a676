//! The alias on a database error that a statement sent through an ambient handle returned.
//!
//! The handle is an `sqlx::Executor`, so its errors are `sqlx::Error`s, and the only place an
//! `sqlx::Error` can carry more than sqlx put in it is the boxed `DatabaseError` of
//! `sqlx::Error::Database`. The wrapper here delegates every method to the server's error
//! (`code`, `kind`, `constraint`, and the hidden ones that sqlx's downcasts use), so code that
//! inspects or downcasts the error works as before, and it adds the alias to `Display`.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use sqlx::error::{DatabaseError, ErrorKind as SqlxErrorKind};

use crate::pooling::pooler_hint;

type DynStdError = dyn StdError + Send + Sync + 'static;

/// A database error returned by a statement on an alias: the server's error, with the alias it
/// ran on.
///
/// Every database error of a query sent through an ambient [`Handle`](crate::Handle) reaches the
/// caller as `sqlx::Error::Database` holding this type. It displays as
/// ``database `alias`: <the server's message>``; `code()`, `kind()`, `constraint()`,
/// `is_unique_violation()` and the rest answer for the server's error, and
/// `try_downcast_ref::<PgDatabaseError>()` (or the MySQL or SQLite type) finds the server's error
/// through it. [`alias_of`] reads the alias off an `sqlx::Error`, and converting the error into
/// an [`Error`](crate::Error) keeps it ([`Error::alias`](crate::Error::alias)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// # sqlx_atomic::Databases::new().add("default", sqlx_atomic::Database::connect_lazy("sqlite::memory:")?).install()?;
/// let db = sqlx_atomic::sqlite("default");
/// let err = sqlx::query("SELECT * FROM no_such_table").execute(&db).await.unwrap_err();
/// assert_eq!(sqlx_atomic::alias_of(&err), Some("default"));
/// assert!(err.to_string().contains("database `default`: "), "{err}");
/// let err = sqlx_atomic::Error::from(err);
/// assert_eq!(err.alias(), Some("default"));
/// # Ok(()) }
/// ```
pub struct AliasedDatabaseError {
    alias: Arc<str>,
    inner: Box<dyn DatabaseError>,
}

impl AliasedDatabaseError {
    /// The alias the statement ran on.
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// The server's error.
    pub fn database_error(&self) -> &dyn DatabaseError {
        &*self.inner
    }

    /// The server's error, without the alias.
    pub fn into_database_error(self) -> Box<dyn DatabaseError> {
        self.inner
    }
}

impl fmt::Display for AliasedDatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "database `{}`: {}", self.alias, self.inner)?;
        if let Some(hint) = pooler_hint(self.inner.code().as_deref(), self.inner.message()) {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for AliasedDatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AliasedDatabaseError")
            .field("alias", &self.alias)
            .field("error", &self.inner)
            .finish()
    }
}

impl StdError for AliasedDatabaseError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner.source()
    }
}

impl DatabaseError for AliasedDatabaseError {
    fn message(&self) -> &str {
        self.inner.message()
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        self.inner.code()
    }

    // sqlx downcasts through these three: answering with the server's error keeps
    // `try_downcast_ref::<PgDatabaseError>()` and its kin working through the wrapper.
    fn as_error(&self) -> &DynStdError {
        self.inner.as_error()
    }

    fn as_error_mut(&mut self) -> &mut DynStdError {
        self.inner.as_error_mut()
    }

    fn into_error(self: Box<Self>) -> Box<DynStdError> {
        self.inner.into_error()
    }

    fn is_transient_in_connect_phase(&self) -> bool {
        self.inner.is_transient_in_connect_phase()
    }

    fn constraint(&self) -> Option<&str> {
        self.inner.constraint()
    }

    fn table(&self) -> Option<&str> {
        self.inner.table()
    }

    fn kind(&self) -> SqlxErrorKind {
        self.inner.kind()
    }
}

/// The wrapper inside a database error, found through `StdError`'s own downcast (which knows the
/// box's real type) rather than `DatabaseError::as_error`, which the wrapper forwards.
fn wrapper(db: &dyn DatabaseError) -> Option<&AliasedDatabaseError> {
    let any: &DynStdError = db;
    any.downcast_ref()
}

/// Adds `alias` to a database error; any other error is returned as it is.
pub(crate) fn with_alias(e: sqlx::Error, alias: &str) -> sqlx::Error {
    match e {
        // The library's own errors name their alias already.
        sqlx::Error::Database(db)
            if wrapper(&*db).is_none() && crate::Error::downcast_ref_db(&*db).is_none() =>
        {
            sqlx::Error::Database(Box::new(AliasedDatabaseError {
                alias: Arc::from(alias),
                inner: db,
            }))
        }
        e => e,
    }
}

/// Splits the alias off a database error that carries one.
pub(crate) fn split(e: sqlx::Error) -> (sqlx::Error, Option<Arc<str>>) {
    match e {
        sqlx::Error::Database(db) if wrapper(&*db).is_some() => {
            let any: Box<DynStdError> = db;
            match any.downcast::<AliasedDatabaseError>() {
                Ok(w) => (sqlx::Error::Database(w.inner), Some(w.alias)),
                // Unreachable (the type was just checked), and still an error, never a panic.
                Err(other) => (sqlx::Error::Configuration(other), None),
            }
        }
        e => (e, None),
    }
}

/// The alias a statement's database error carries: that of the ambient handle the statement was
/// sent through. `None` for any other error.
///
/// ```
/// assert_eq!(sqlx_atomic::alias_of(&sqlx::Error::RowNotFound), None);
/// ```
pub fn alias_of(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) => wrapper(&**db).map(AliasedDatabaseError::alias),
        _ => None,
    }
}
