//! A query taken apart, for the paths that must read it before sqlx sends it: routing to a read
//! replica by its text, and transaction-pooling mode (unnamed, session statements refused).

use sqlx::{Database, Execute, SqlStr};

use crate::alias::AliasCtx;

/// A query taken apart, so that its text can be read before it is sent (`Execute::sql` consumes
/// the query): its SQL, its arguments, the statement it was prepared as and whether sqlx may cache
/// it, handed back to sqlx unchanged.
pub(crate) struct Parts<DB: Database> {
    sql: SqlStr,
    arguments: Option<DB::Arguments>,
    statement: Option<DB::Statement>,
    persistent: bool,
}

impl<DB: Database> Parts<DB> {
    pub(crate) fn new<'q>(mut query: impl Execute<'q, DB>) -> Result<Self, sqlx::Error> {
        let statement = query.statement().cloned();
        let persistent = query.persistent();
        let arguments = query.take_arguments().map_err(sqlx::Error::Encode)?;
        Ok(Parts {
            sql: query.sql(),
            arguments,
            statement,
            persistent,
        })
    }

    /// The SQL text (not `sql`, which is `Execute`'s and consumes the query).
    pub(crate) fn text(&self) -> &str {
        self.sql.as_str()
    }

    /// The same query, sent unnamed (sqlx's `persistent(false)`): no prepared statement is named
    /// or cached for it.
    pub(crate) fn unnamed(mut self) -> Self {
        self.persistent = false;
        self
    }

    /// Whether the statement is sent with the extended protocol (Parse, then Bind and Execute,
    /// each followed by a Sync), whose messages a transaction pooler may route to different
    /// server connections outside a transaction. Without arguments sqlx sends one simple Query.
    pub(crate) fn spans_messages(&self) -> bool {
        self.arguments.is_some()
    }

    /// Records the statement when the scope records statements; `replica`: where it goes.
    pub(crate) fn record(&self, actx: Option<&AliasCtx>, replica: Option<&str>) {
        if let Some(a) = actx {
            a.record_on(self.sql.as_str(), replica);
        }
    }
}

impl<'q, DB: Database> Execute<'q, DB> for Parts<DB> {
    fn sql(self) -> SqlStr {
        self.sql
    }

    fn statement(&self) -> Option<&DB::Statement> {
        self.statement.as_ref()
    }

    fn take_arguments(&mut self) -> Result<Option<DB::Arguments>, sqlx::error::BoxDynError> {
        Ok(self.arguments.take())
    }

    fn persistent(&self) -> bool {
        self.persistent
    }
}
