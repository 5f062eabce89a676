//! One alias in one task: its transaction state and its connection slot.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::AnyConn;
use crate::error::{Error, ErrorKind};
use crate::hook::Hook;
use crate::record::Recorder;
use crate::registry::AliasEntry;
use crate::state::{Control, Outcome, TxState};
use crate::sync::lock;

/// One alias in one task.
pub(crate) struct AliasCtx {
    pub(crate) entry: &'static Arc<AliasEntry>,
    pub(crate) recorder: Option<Recorder>,
    pub(crate) state: Mutex<TxState<Hook>>,
    /// The task's connection of the alias, and who holds it. A std mutex, held only for a few
    /// loads and stores: a lease takes the connection out and puts it back when dropped.
    pub(crate) slot: Mutex<Slot>,
    /// Wakes the branches of this task waiting for the slot (`Slot::waiting`).
    pub(crate) freed: tokio::sync::Notify,
}

/// The connection slot of one alias in one task.
#[derive(Default)]
pub(crate) struct Slot {
    /// The connection, when no lease holds it.
    pub(crate) conn: Option<AnyConn>,
    /// The connection was taken idle without the pool's test: the first control statement
    /// sent on it is the test (see `Database::test_with_begin`).
    pub(crate) untested: bool,
    /// A lease holds the slot (and the connection, if any).
    pub(crate) held: bool,
    /// The lease is a result stream's.
    pub(crate) streaming: bool,
    /// Another branch of the task waits for the slot.
    pub(crate) waiting: bool,
    /// The transaction the leased connection was in is gone: close it when the lease ends.
    pub(crate) revoked: bool,
}

impl AliasCtx {
    /// Leaves block `id` in failure without waiting, because its future was dropped (7.1): blocks
    /// opened inside it whose own guards have not run yet go first; an ended transaction's connection
    /// is rolled back or closed in the background.
    pub(crate) fn cancel_block(self: &Arc<Self>, id: u64) {
        let plan = {
            let mut st = self.state();
            while let Some(top) = st.top_block() {
                if top == id {
                    break;
                }
                let _ = st.exit(top, Outcome::Failed);
            }
            st.exit(id, Outcome::Failed)
        };
        tracing::debug!(target: "sqlx_atomic", alias = %self.name(), "atomic block cancelled");
        if let Ok(plan) = plan
            && plan.ends_transaction
        {
            let rollback = plan.stmts.contains(&Control::Rollback);
            self.release_now(rollback, plan.close_connection);
        }
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.entry.name
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, TxState<Hook>> {
        lock(&self.state)
    }

    pub(crate) fn err(&self, kind: ErrorKind) -> Error {
        Error::at(&self.entry.name, kind)
    }

    pub(crate) fn record(&self, sql: &str) {
        self.record_on(sql, None);
    }

    /// Records a statement sent to `replica` (`None`: the primary).
    pub(crate) fn record_on(&self, sql: &str, replica: Option<&str>) {
        if let Some(recorder) = &self.recorder {
            recorder.record(&self.entry.name, sql, replica);
        }
    }

    pub(crate) fn recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// Gives the connection back (or closes it) when a transaction ended while the slot may be
    /// held elsewhere; used from `Drop`, so it never waits.
    pub(crate) fn release_now(&self, rollback: bool, close: bool) {
        let conn = {
            let mut slot = lock(&self.slot);
            if slot.held {
                slot.revoked = true;
                return;
            }
            slot.conn.take()
        };
        if let Some(mut conn) = conn {
            if rollback {
                if conn.sqlx_depth() > 0 {
                    conn.start_rollback();
                } else {
                    conn.close_on_drop();
                }
            }
            if close {
                conn.close_on_drop();
            }
        }
    }
}

impl Drop for AliasCtx {
    fn drop(&mut self) {
        // The scope ended: an open manual transaction is rolled back (4.2).
        let must_rollback = lock(&self.state).scope_end();
        self.release_now(must_rollback, false);
    }
}
