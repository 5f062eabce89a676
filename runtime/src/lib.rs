//! The runtime of [sqlx-atomic](https://docs.rs/sqlx-atomic): the transaction state machine, the
//! per-task context, the alias registry, the hook registry and the executor.
//!
//! Use it through the `sqlx-atomic` crate, which re-exports everything here together with the
//! `#[atomic]` attribute.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod alias;
mod aliased;
mod backend;
mod block;
mod classify;
mod config;
mod context;
mod error;
mod executor;
mod exit;
mod frame;
mod handle;
mod hook;
mod lease;
mod on_commit;
mod options;
#[cfg(feature = "outbox")]
pub mod outbox;
mod parts;
mod pool_config;
mod pooling;
mod position;
mod reads;
mod record;
mod redact;
mod registry;
mod replica;
mod replica_set;
mod requests;
#[cfg(feature = "testing")]
mod restore;
mod routing;
mod spawn;
mod state;
mod sync;
#[cfg(feature = "testing")]
pub mod testing;
mod transaction;
mod wal;

pub use aliased::{AliasedDatabaseError, alias_of};
pub use backend::Backend;
#[doc(hidden)]
pub use block::atomic_fn_returns_result;
pub use block::{Atomic, AtomicResult, AtomicRetry, Attempts};
pub use classify::{Cause, Conflict};
pub use config::Database;
pub use error::{BoxError, Error, ErrorKind};
pub use handle::Handle;
#[cfg(feature = "mysql")]
pub use handle::mysql;
#[cfg(feature = "postgres")]
pub use handle::postgres;
#[cfg(feature = "sqlite")]
pub use handle::sqlite;
pub use hook::{AsyncHook, HookFn, HookResult, IntoHook, SyncHook};
pub use on_commit::{OnCommit, OnCommitFuture, on_commit};
pub use options::{Isolation, LockMode, Retry};
pub use pool_config::PoolConfig;
pub use position::{CommitPosition, InvalidPosition, ReadAt, read_at};
pub use record::RecordedStatement;
pub use registry::{Databases, check_databases, installed_aliases, is_installed, pool};
pub use replica::commit_position;
pub use spawn::spawn_on_commit;
pub use transaction::{
    Alias, SavepointId, Scope, clean_savepoints, commit, get_autocommit, get_rollback, rollback,
    savepoint, savepoint_commit, savepoint_rollback, scope, set_autocommit, set_rollback, using,
};

#[cfg(feature = "tower")]
pub use requests::{
    AliasNames, AtomicRequests, AtomicRequestsFuture, AtomicRequestsLayer, ErrorBody, HookFailure,
    NonAtomicRequests, NonAtomicRequestsLayer,
};

#[doc(hidden)]
pub mod __private {
    pub use crate::block::Atomic;
    pub use crate::requests::__non_atomic_requests as non_atomic_requests;
}
