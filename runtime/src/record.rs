//! The statement recorder of a [`Scope`](crate::Scope): every statement a context's aliases send,
//! in order.

use std::sync::{Arc, Mutex};

use crate::sync::lock;

/// A statement recorded by [`Scope::record_statements`](crate::Scope::record_statements).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedStatement {
    /// The alias it was sent to.
    pub alias: String,
    /// Its SQL text.
    pub sql: String,
    /// The read replica it was sent to (where it is, never its password), or `None` for the
    /// primary (docs/semantics.md §12).
    pub replica: Option<String>,
}

/// The recorded statements, shared by a context and its alias contexts.
#[derive(Clone, Default)]
pub(crate) struct Recorder(Arc<Mutex<Vec<RecordedStatement>>>);

impl Recorder {
    pub(crate) fn record(&self, alias: &str, sql: &str, replica: Option<&str>) {
        lock(&self.0).push(RecordedStatement {
            alias: alias.to_owned(),
            sql: sql.to_owned(),
            replica: replica.map(str::to_owned),
        });
    }

    /// Takes what was recorded so far.
    pub(crate) fn take(&self) -> Vec<RecordedStatement> {
        std::mem::take(&mut *lock(&self.0))
    }
}
