//! The error type of sqlx-atomic.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::classify::{Cause, Conflict, conflict_of};

/// A boxed error, as returned by hooks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in sqlx-atomic.
///
/// Every error names the database alias it concerns (when there is one) and says what happened
/// and what to do, so that a message read in a log is enough to find the cause. Database errors from sqlx
/// are kept as they are ([`ErrorKind::Sqlx`]); [`Error::as_sqlx`] gives them back.
///
/// ```
/// let err = sqlx_atomic::Error::from(sqlx::Error::RowNotFound);
/// assert!(err.as_sqlx().is_some());
/// ```
pub struct Error(Box<Inner>);

/// An error's contents, boxed: `Error` is one pointer, so that a `Result<T, Error>` is hardly
/// larger than `T` and moves cheaply through the futures of every block and query.
struct Inner {
    alias: Option<Arc<str>>,
    kind: ErrorKind,
}

const _: () = assert!(
    std::mem::size_of::<Result<(), Error>>() == std::mem::size_of::<usize>(),
    "a Result<(), Error> is one pointer"
);

/// What went wrong; see [`Error::kind`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An error from sqlx or the database server.
    Sqlx(sqlx::Error),
    /// No [`Databases`](crate::Databases) were installed in this process.
    NotInstalled,
    /// [`Databases::install`](crate::Databases::install) was called a second time.
    AlreadyInstalled,
    /// The alias is not configured.
    UnknownAlias,
    /// The same alias was added twice to one [`Databases`](crate::Databases).
    DuplicateAlias,
    /// The configuration of an alias is invalid (a malformed URL, say).
    InvalidConfig(String),
    /// The alias is configured for another backend than the one asked for.
    WrongBackend {
        /// The backend that was asked for.
        expected: &'static str,
        /// The backend the alias is configured with.
        actual: &'static str,
    },
    /// An earlier error doomed the transaction: queries are refused until the end of the nearest
    /// block with a savepoint, or of the outermost block (docs/semantics.md §3).
    Doomed,
    /// A `durable` block was entered while another block is open (§1.8).
    DurableNested,
    /// The operation needs an open atomic block (§2.1).
    OutsideBlock(&'static str),
    /// The operation is forbidden while an atomic block is active (§4.3).
    InsideBlock(&'static str),
    /// `on_commit` outside any block while autocommit is off (§5.3).
    OnCommitInManualMode,
    /// Autocommit cannot be turned back on while a manual transaction is open: commit or roll
    /// back first.
    TransactionOpen,
    /// The operation needs an ambient context (an atomic block or [`scope`](crate::scope)).
    NoContext(&'static str),
    /// The alias's connection is held by a result stream that is still open in this task.
    Busy,
    /// Two branches of one task (`join!`, `select!`) used atomic blocks of one alias at once.
    ConcurrentBlocks,
    /// The connection was closed because a statement was cancelled while in flight; the
    /// transaction on it is gone.
    ConnectionLost,
    /// The server had aborted the transaction (PostgreSQL) after an error, so COMMIT would have
    /// rolled back: it was rolled back and reported as an error (§7.2).
    Aborted,
    /// A savepoint id that is not open in the current transaction.
    InvalidSavepoint(u64),
    /// A result stream was still open when its atomic block ended.
    StreamOutlivedBlock,
    /// A handler could not opt out of its per-request transaction (8.2); the reason.
    OptOut(&'static str),
    /// The block was rolled back, not committed (or its savepoint rolled back), because a statement
    /// in it failed, although its body returned `Ok`: the body ignored that error. The cause is
    /// the first error that doomed the block; its code is [`Error::code`].
    RolledBack(Cause),
    /// The block was run [`retry`](crate::Atomic::retry) times more after its first attempt, and
    /// the last attempt failed with a conflict too.
    RetriesExhausted {
        /// How many attempts were made in all.
        attempts: u32,
        /// The conflict that failed the last attempt.
        cause: Cause,
    },
    /// The connection failed while COMMIT was in flight: whether the transaction was committed
    /// is unknown. It is never retried; reconcile with the database.
    CommitUnknown(sqlx::Error),
    /// The block's `timeout` passed: its body was cancelled and the transaction rolled back.
    TimedOut(Duration),
    /// `retry` on a block that is not an outermost one (it is nested in another block of the
    /// alias, or in a per-request transaction): only a whole transaction can be run again.
    RetryNested,
    /// A transaction option the alias's backend cannot honour; the option and the backend.
    Unsupported {
        /// The option, as written in `#[atomic(..)]`.
        option: &'static str,
        /// The alias's backend.
        backend: &'static str,
    },
    /// A database could not be reached (see [`check_databases`](crate::check_databases)).
    Unreachable {
        /// The database's URL, password hidden.
        database: String,
        /// Why: the connection error, or that the server did not answer in time.
        cause: String,
    },
    /// No connection could be taken from the alias's pool within its acquire timeout.
    PoolTimedOut {
        /// Why a new connection could not be opened either, when that was the reason; `None`
        /// when the server answers and every connection of the pool was in use.
        cause: Option<String>,
    },
    /// [`pool`](crate::pool) was called by a task that holds the only connection of the alias's
    /// pool (in an atomic block, after its first query): a query through the pool would wait for
    /// a second connection that nothing can give back. (With a larger, full pool, `pool` logs
    /// this as a warning instead.)
    PoolHeldByTask {
        /// The pool's `max_connections`.
        max_connections: u32,
    },
    /// A nested block's transaction option differs from the outermost block's: options belong
    /// to the transaction, so a nested block must repeat them or leave them out.
    OptionMismatch(&'static str),
    /// A statement that keeps state in the server session, refused on an alias in
    /// transaction-pooling mode ([`Database::transaction_pooling`](crate::Database::transaction_pooling)),
    /// where the next transaction may run on another server connection.
    SessionState {
        /// What the statement does (`LISTEN`, a session `SET`, …).
        statement: &'static str,
        /// What to use instead.
        instead: &'static str,
    },
    /// A query to an alias the running test did not name (`#[sqlx_atomic::test(using = ..)]`,
    /// `testing::rollback_after`): it would have written for real, outside the test's
    /// transactions (docs/semantics.md §10.3).
    NotAllowedInTest {
        /// The aliases the test named.
        allowed: Vec<String>,
    },
    /// An on_commit hook failed (§5.7). The transaction had been committed.
    Hook {
        /// The hook's name, when it was given one.
        name: Option<String>,
        /// The hook's error.
        source: BoxError,
    },
}

impl Error {
    /// The one constructor; its callers are the cold, out-of-line ones below.
    fn make(alias: Option<Arc<str>>, kind: ErrorKind) -> Self {
        Error(Box::new(Inner { alias, kind }))
    }

    pub(crate) fn new(alias: Option<&Arc<str>>, kind: ErrorKind) -> Self {
        Error::make(alias.cloned(), kind)
    }

    pub(crate) fn at(alias: &Arc<str>, kind: ErrorKind) -> Self {
        Error::make(Some(alias.clone()), kind)
    }

    pub(crate) fn named(alias: &str, kind: ErrorKind) -> Self {
        Error::make(Some(Arc::from(alias)), kind)
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    /// The database alias the error concerns, if any.
    pub fn alias(&self) -> Option<&str> {
        self.0.alias.as_deref()
    }

    /// The sqlx error inside, if this is one.
    pub fn as_sqlx(&self) -> Option<&sqlx::Error> {
        match &self.0.kind {
            ErrorKind::Sqlx(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is a database error (from the server).
    pub fn is_database(&self) -> bool {
        matches!(&self.0.kind, ErrorKind::Sqlx(sqlx::Error::Database(_)))
    }

    /// Turns this error into an `sqlx::Error`: the sqlx error itself (a database error keeps the
    /// alias, see [`AliasedDatabaseError`](crate::AliasedDatabaseError)), or, for the library's
    /// own error, an `sqlx::Error::Database` that carries it (see [`Error::downcast_ref`]),
    /// recovered by `From<sqlx::Error> for Error`.
    pub fn into_sqlx(self) -> sqlx::Error {
        match self.0.kind {
            ErrorKind::Sqlx(_) => {
                let Inner { alias, kind } = *self.0;
                let ErrorKind::Sqlx(e) = kind else {
                    unreachable!("matched above")
                };
                match alias {
                    Some(alias) => crate::aliased::with_alias(e, &alias),
                    None => e,
                }
            }
            _ => sqlx::Error::Database(Box::new(Carried::new(self))),
        }
    }

    /// The library's error inside an `sqlx::Error`, which is how it reaches code that speaks
    /// `sqlx::Error` (the ambient handle is an `sqlx::Executor`; an atomic function may return
    /// `Result<T, sqlx::Error>`). `None` for any other error.
    ///
    /// sqlx 0.9 has one variant that carries an error of any type and shows its message,
    /// `sqlx::Error::Database`, so the library's error travels in it: the `sqlx::Error` displays
    /// as `error returned from database: ` followed by this error's message (never
    /// `error with configuration`), its `DatabaseError::message()` is the message alone, its
    /// `kind()` is `Other` and its `code()` is `None` (the library refused, not the server; this
    /// error's [`code`](Error::code) gives the code of a server error behind it). `Error::from`
    /// takes it back out by value.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
    /// # sqlx_atomic::Databases::new().add("default", sqlx_atomic::Database::connect_lazy("sqlite::memory:")?).install()?;
    /// use sqlx_atomic::{Error, ErrorKind};
    /// // A PostgreSQL handle on a SQLite alias: the library refuses the query.
    /// let err: sqlx::Error = sqlx::query("SELECT 1")
    ///     .execute(sqlx_atomic::postgres("default"))
    ///     .await
    ///     .unwrap_err();
    /// let ours = Error::downcast_ref(&err).expect("the library's error");
    /// assert!(matches!(ours.kind(), ErrorKind::WrongBackend { .. }));
    /// assert!(!err.to_string().contains("configuration"), "{err}");
    /// assert_eq!(Error::from(err).alias(), Some("default"));
    /// # Ok(()) }
    /// ```
    pub fn downcast_ref(e: &sqlx::Error) -> Option<&Error> {
        match e {
            sqlx::Error::Database(db) => Error::downcast_ref_db(&**db),
            _ => None,
        }
    }

    /// The library's error carried by a database error, if it is one.
    pub(crate) fn downcast_ref_db(db: &dyn sqlx::error::DatabaseError) -> Option<&Error> {
        db.try_downcast_ref::<Carried>().map(|c| &c.error)
    }

    /// The first error that doomed a block that was rolled back, when this error reports one
    /// ([`ErrorKind::RolledBack`], [`ErrorKind::RetriesExhausted`]).
    pub fn cause(&self) -> Option<&Cause> {
        match &self.0.kind {
            ErrorKind::RolledBack(c) | ErrorKind::RetriesExhausted { cause: c, .. } => Some(c),
            _ => None,
        }
    }

    /// The database error's code: the SQLSTATE on PostgreSQL and MySQL/MariaDB, the extended
    /// result code on SQLite; for a block rolled back by an ignored error, that error's code.
    ///
    /// ```
    /// let err = sqlx_atomic::Error::from(sqlx::Error::RowNotFound);
    /// assert_eq!(err.code(), None);
    /// ```
    pub fn code(&self) -> Option<Cow<'_, str>> {
        match &self.0.kind {
            ErrorKind::Sqlx(sqlx::Error::Database(db)) => db.code(),
            _ => self.cause().and_then(Cause::code).map(Cow::Borrowed),
        }
    }

    /// The conflict between transactions this error reports, if any.
    pub fn conflict(&self) -> Option<Conflict> {
        match &self.0.kind {
            ErrorKind::Sqlx(e) => conflict_of(e),
            _ => self.cause().and_then(Cause::conflict),
        }
    }

    /// Whether this is a serialization failure (PostgreSQL's SQLSTATE 40001).
    pub fn is_serialization_failure(&self) -> bool {
        self.conflict() == Some(Conflict::Serialization)
    }

    /// Whether this is a deadlock (PostgreSQL's 40P01, MySQL/MariaDB's 1213, a Galera
    /// certification failure).
    pub fn is_deadlock(&self) -> bool {
        self.conflict() == Some(Conflict::Deadlock)
    }

    /// Whether running the whole transaction again may succeed: a serialization failure, a
    /// deadlock, SQLite's busy family, or a lock wait timeout after which the server rolled the
    /// transaction back. A lock wait timeout seen on its own (MySQL's 1205, which may have
    /// failed only the statement) is not.
    pub fn is_retryable(&self) -> bool {
        match self.conflict() {
            Some(Conflict::LockTimeout) => self.cause().is_some(),
            Some(_) => true,
            None => false,
        }
    }

    /// Whether COMMIT's outcome is unknown (the connection failed while it was in flight).
    pub fn is_commit_unknown(&self) -> bool {
        matches!(self.0.kind, ErrorKind::CommitUnknown(_))
    }

    pub(crate) fn kind_owned(self) -> ErrorKind {
        self.0.kind
    }

    pub(crate) fn with_alias(mut self, alias: &Arc<str>) -> Self {
        if self.0.alias.is_none() {
            self.0.alias = Some(alias.clone());
        }
        self
    }
}

impl From<sqlx::Error> for Error {
    /// Recovers the library's own error that passed through sqlx, and the alias of a statement's
    /// database error ([`AliasedDatabaseError`](crate::AliasedDatabaseError)).
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(db) if db.try_downcast_ref::<Carried>().is_some() => {
                match db.try_downcast::<Carried>() {
                    Ok(carried) => carried.error,
                    // Unreachable (the type was just checked), and still an error, never a panic.
                    Err(other) => Error::make(None, ErrorKind::Sqlx(sqlx::Error::Database(other))),
                }
            }
            e => {
                let (e, alias) = crate::aliased::split(e);
                Error::make(alias, ErrorKind::Sqlx(e))
            }
        }
    }
}

/// Lets a function that returns `Result<T, sqlx::Error>`, the most common signature in sqlx
/// code, be an atomic block, and use `?` on the library's errors. An sqlx error comes out as it
/// went in; the library's own error travels in `sqlx::Error::Database` (see
/// [`Error::downcast_ref`]) and comes back out with `Error::from`.
///
/// ```
/// let ours = sqlx_atomic::Error::from(sqlx::Error::RowNotFound);
/// let theirs: sqlx::Error = ours.into();
/// assert!(matches!(theirs, sqlx::Error::RowNotFound));
/// ```
impl From<Error> for sqlx::Error {
    fn from(e: Error) -> Self {
        e.into_sqlx()
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Sqlx(e) => write!(f, "{e}"),
            ErrorKind::NotInstalled => f.write_str(
                "no databases are configured: call `Databases::new().add(..).install()` at startup",
            ),
            ErrorKind::AlreadyInstalled => {
                f.write_str("the databases were already installed; `install` may be called once per process")
            }
            ErrorKind::UnknownAlias => f.write_str("this alias is not configured (see `Databases::add`)"),
            ErrorKind::DuplicateAlias => f.write_str("this alias was added twice"),
            ErrorKind::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            ErrorKind::WrongBackend { expected, actual } => write!(
                f,
                "a {expected} handle was asked for, but the alias is configured for {actual}"
            ),
            ErrorKind::Doomed => f.write_str(
                "an earlier error in this atomic block doomed it, so this query was refused: let the \
                 block end (return its error), or catch the failure in a nested block, whose \
                 savepoint undoes it (docs/semantics.md §3)",
            ),
            ErrorKind::DurableNested => f.write_str(
                "a durable block was entered inside another atomic block of the alias; call it \
                 outside any block, or drop `durable` (docs/semantics.md §1.8)",
            ),
            ErrorKind::OutsideBlock(op) => write!(
                f,
                "`{op}` was called outside any atomic block of the alias; the rollback flag \
                 belongs to a block (docs/semantics.md §2)"
            ),
            ErrorKind::InsideBlock(op) => {
                write!(
                    f,
                    "`{op}` was called inside an atomic block, where the block controls the \
                     transaction; call it outside any block (docs/semantics.md §4)"
                )
            }
            ErrorKind::OnCommitInManualMode => f.write_str(
                "on_commit was called with autocommit off and no atomic block open, so no commit \
                 would run the hook; open a block, or turn autocommit on (docs/semantics.md §5)",
            ),
            ErrorKind::TransactionOpen => f.write_str(
                "a manual transaction is open: call `commit` or `rollback` before turning autocommit on",
            ),
            ErrorKind::NoContext(op) => write!(
                f,
                "`{op}` needs a task context: call it inside an atomic block or `sqlx_atomic::scope`"
            ),
            ErrorKind::Busy => f.write_str(
                "the connection is held by a result stream that is still open in this task; finish or \
                 drop the stream before the next query",
            ),
            ErrorKind::ConcurrentBlocks => f.write_str(
                "two branches of one task (join!/select!) used atomic blocks of this alias at the same \
                 time; run them one after the other, or in separate tasks (docs/semantics.md §7.4)",
            ),
            ErrorKind::ConnectionLost => f.write_str(
                "the connection was closed because a statement was cancelled in flight; the server \
                 rolled its transaction back (docs/semantics.md §7.1)",
            ),
            ErrorKind::Aborted => f.write_str(
                "the server had aborted the transaction after an earlier error, so it was rolled back \
                 instead of committed (docs/semantics.md §7.2)",
            ),
            ErrorKind::InvalidSavepoint(id) => {
                write!(f, "savepoint {id} is not open in the current transaction")
            }
            ErrorKind::StreamOutlivedBlock => f.write_str(
                "a result stream was still open when its atomic block ended; the transaction was rolled \
                 back and the connection closed",
            ),
            ErrorKind::OptOut(why) => write!(
                f,
                "non_atomic_requests: cannot opt this handler out of the request transaction: {why}"
            ),
            ErrorKind::RolledBack(cause) => write!(
                f,
                "rolled back, not committed: a statement in the block failed and the block's body \
                 returned Ok anyway; the first error was: {cause}"
            ),
            ErrorKind::RetriesExhausted { attempts, cause } => write!(
                f,
                "gave up after {attempts} attempts; the last one failed with a conflict: {cause}"
            ),
            ErrorKind::CommitUnknown(e) => write!(
                f,
                "the connection failed while COMMIT was in flight, so whether the transaction was \
                 committed is unknown (it was not retried): {e}"
            ),
            ErrorKind::TimedOut(after) => write!(
                f,
                "the block's timeout ({after:?}) passed: its body was cancelled and the transaction \
                 rolled back"
            ),
            ErrorKind::RetryNested => f.write_str(
                "`retry` needs an outermost block, but this block is nested in another block of \
                 the alias or in a per-request transaction; retry the outermost block instead \
                 (for a request, opt the handler out with #[non_atomic_requests])",
            ),
            ErrorKind::Unsupported { option, backend } => {
                write!(f, "the transaction option `{option}` is not supported by {backend}")
            }
            ErrorKind::Unreachable { database, cause } => {
                write!(f, "cannot connect to {database}: {cause}")
            }
            ErrorKind::PoolTimedOut { cause: Some(cause) } => write!(
                f,
                "no connection could be taken from the pool in time: a new connection fails: {cause}"
            ),
            ErrorKind::PoolHeldByTask { max_connections } => write!(
                f,
                "`pool()` was called while this task holds one of the alias's connections (in an \
                 atomic block) and all {max_connections} connections of the pool are in use: a \
                 query through the pool would wait for a second connection while holding the \
                 first, which deadlocks once every task does the same; query through the \
                 ambient handle inside the block, take the pool's connection before entering the \
                 block, or give the pool more connections than the tasks that hold one at once"
            ),
            ErrorKind::PoolTimedOut { cause: None } => f.write_str(
                "no connection could be taken from the pool in time: every connection was in use \
                 (a larger pool, or shorter transactions; a task that holds one while it waits for \
                 another waits for itself)",
            ),
            ErrorKind::OptionMismatch(option) => write!(
                f,
                "a nested block's `{option}` differs from its transaction's: options belong to the \
                 outermost block, so a nested block must repeat them or leave them out"
            ),
            ErrorKind::NotAllowedInTest { allowed } => write!(
                f,
                "queries to this alias are not allowed in this test, which runs in rolled-back \
                 transactions on {} only, so the query would have written for real; add the alias \
                 to the test's aliases (`#[sqlx_atomic::test(using = [..])]`, \
                 `testing::rollback_after([..], ..)`)",
                allowed.join(", ")
            ),
            ErrorKind::SessionState { statement, instead } => write!(
                f,
                "{statement} keeps state in the server session, but this alias is in \
                 transaction-pooling mode, where the pooler may run the next transaction on \
                 another server connection: {instead}"
            ),
            ErrorKind::Hook { name, source } => match name {
                Some(n) => write!(f, "on_commit hook `{n}` failed after the commit: {source}"),
                None => write!(f, "an on_commit hook failed after the commit: {source}"),
            },
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.alias {
            // The configured aliases, and the closest one when the alias looks like a typo.
            Some(a) if matches!(self.0.kind, ErrorKind::UnknownAlias) => write!(
                f,
                "database `{a}`: this alias is not configured{}",
                crate::registry::unknown_alias_hint(a)
            ),
            Some(a) => write!(f, "database `{a}`: {}", self.0.kind),
            None => write!(f, "{}", self.0.kind),
        }
    }
}

/// `Debug` is the `Display` message, which names the alias and says what to do, because that is
/// what `unwrap()`, `expect()` and a `main` returning `Result` print; `{:#?}` gives the fields.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !f.alternate() {
            return fmt::Display::fmt(self, f);
        }
        f.debug_struct("Error")
            .field("alias", &self.0.alias)
            .field("kind", &self.0.kind)
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0.kind {
            ErrorKind::Sqlx(e) | ErrorKind::CommitUnknown(e) => Some(e),
            ErrorKind::Hook { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

/// The library's error on its way through an `sqlx::Error` (see [`Error::downcast_ref`]).
struct Carried {
    error: Error,
    /// The error's message, rendered once: `DatabaseError::message` returns a borrowed string.
    message: String,
}

impl Carried {
    fn new(error: Error) -> Self {
        Carried {
            message: error.to_string(),
            error,
        }
    }
}

impl fmt::Display for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Carried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.error, f)
    }
}

impl std::error::Error for Carried {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl sqlx::error::DatabaseError for Carried {
    fn message(&self) -> &str {
        &self.message
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}
