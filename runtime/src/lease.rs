//! A lease: a task's exclusive use of an alias's connection slot for one statement or stream,
//! and the sending of the transaction-control statements a block owes.

use std::sync::Arc;

use crate::alias::{AliasCtx, Slot};
use crate::backend::{AnyConn, Backend};
use crate::error::{Error, ErrorKind};
use crate::registry::AliasEntry;
use crate::state::Control;
use crate::sync::lock;

/// Taking a lease of an alias context's slot.
impl AliasCtx {
    /// Takes the task's connection slot at once; `None` if another branch of this task holds it
    /// (then wait with [`lease`](Self::lease)), and the `Busy` error if a result stream holds it
    /// (waiting would deadlock). The hot paths call this first, so that an uncontended lease
    /// runs no future.
    #[inline]
    pub(crate) fn try_lease(self: &Arc<Self>) -> Option<Result<Lease, Error>> {
        self.take_slot(&mut lock(&self.slot))
    }

    /// What the slot answers now (see `try_lease`), under its lock.
    fn take_slot(self: &Arc<Self>, slot: &mut Slot) -> Option<Result<Lease, Error>> {
        if slot.held {
            return slot.streaming.then(|| Err(self.err(ErrorKind::Busy)));
        }
        slot.held = true;
        Some(Ok(Lease {
            conn: slot.conn.take(),
            untested: slot.untested,
            actx: self.clone(),
            phase: Phase::Idle,
        }))
    }

    /// Takes the task's connection slot, waiting for another branch of this task to finish its
    /// statement; fails fast if a result stream holds it (that would deadlock).
    pub(crate) async fn lease(self: &Arc<Self>) -> Result<Lease, Error> {
        loop {
            let freed = {
                let mut slot = lock(&self.slot);
                if let Some(leased) = self.take_slot(&mut slot) {
                    return leased;
                }
                slot.waiting = true;
                // Made under the lock, before the holder can let go: `notify_waiters` wakes
                // every `Notified` made before it, polled or not, so no wake-up is lost.
                self.freed.notified()
            };
            freed.await;
        }
    }
}

/// What a lease is doing, for what its drop must clean up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    /// A transaction-control statement is in flight: if dropped, the connection's state is unknown.
    Control,
    /// A user statement is in flight: if dropped, its outcome is unknown.
    Query,
    /// A result stream holds the connection.
    Stream,
}

/// Exclusive use of an alias's connection slot within a task.
pub(crate) struct Lease {
    /// The task's connection, taken out of the slot for the lease; put back when it ends.
    pub(crate) conn: Option<AnyConn>,
    /// `Slot::untested`, for the lease.
    pub(crate) untested: bool,
    pub(crate) actx: Arc<AliasCtx>,
    pub(crate) phase: Phase,
}

impl Lease {
    pub(crate) fn set_phase(&mut self, phase: Phase) {
        if (phase == Phase::Stream) != (self.phase == Phase::Stream) {
            lock(&self.actx.slot).streaming = phase == Phase::Stream;
        }
        self.phase = phase;
    }

    /// Fills the lease with a connection from the pool (call it when `!has_conn()`): an idle
    /// one at once when the first statement sent on it tests it (`Database::test_with_begin`).
    /// Not an `ensure_conn` that checks first: the check is the callers' own, so that a lease
    /// that has its connection (the usual case) polls no future for it.
    pub(crate) async fn fill_conn(&mut self) -> Result<(), Error> {
        let db = &self.actx.entry.db;
        if db.test_with_begin
            && let Some(conn) = db.pool.try_acquire()
        {
            self.conn = Some(conn);
            self.untested = true;
            return Ok(());
        }
        self.acquire().await
    }

    /// Takes a connection from the pool, with the pool's checks.
    async fn acquire(&mut self) -> Result<(), Error> {
        let conn = self
            .actx
            .entry
            .db
            .pool
            .acquire()
            .await
            .map_err(|e| Error::from(e).with_alias(self.actx.name()));
        let conn = match conn {
            Ok(conn) => conn,
            Err(e) if matches!(e.as_sqlx(), Some(sqlx::Error::PoolTimedOut)) => {
                return Err(Box::pin(pool_timed_out(&self.actx)).await);
            }
            Err(e) => return Err(e),
        };
        self.conn = Some(conn);
        self.untested = false;
        Ok(())
    }

    /// The first control statement on an untested connection failed with `e`: if the connection
    /// is gone, close it and take another with the pool's checks (the caller sends the statement
    /// again); otherwise `e` stands.
    async fn replace_dead(&mut self, e: sqlx::Error) -> Result<(), Error> {
        if !crate::backend::connection_gone(&e) {
            return Err(Error::from(e).with_alias(self.actx.name()));
        }
        tracing::debug!(target: "sqlx_atomic", alias = %self.actx.entry.name, error = %e, "an idle connection failed its first statement; retrying on another connection");
        if let Some(mut dead) = self.conn.take() {
            dead.close_on_drop();
        }
        self.acquire().await
    }

    /// The lease's connection, if it has one.
    pub(crate) fn conn_mut(&mut self) -> Option<&mut AnyConn> {
        self.conn.as_mut()
    }

    pub(crate) fn has_conn(&self) -> bool {
        self.conn.is_some()
    }

    pub(crate) fn typed<DB: Backend>(
        &mut self,
    ) -> Result<&mut sqlx::pool::PoolConnection<DB>, Error> {
        let kind = self.actx.entry.kind;
        self.conn.as_mut().and_then(DB::__conn).ok_or_else(|| {
            self.actx.err(ErrorKind::WrongBackend {
                expected: DB::BACKEND_NAME,
                actual: kind.name(),
            })
        })
    }

    /// Sends control statements in order on the lease's connection, which the callers take
    /// first (`fill_conn`: a query) or find there (an exit); a lease without one lost it, and
    /// nothing is sent. Not filled here: a statement owed to a transaction belongs on its
    /// connection, never on a fresh one.
    pub(crate) async fn send(&mut self, stmts: &[Control]) -> Result<(), Error> {
        if stmts.is_empty() {
            return Ok(());
        }
        if !self.has_conn() {
            return Err(self.actx.err(ErrorKind::ConnectionLost));
        }
        self.set_phase(Phase::Control);
        // On an alias with read replicas the COMMIT also reads the commit's WAL position, in the
        // same round trip (§12.3). sqlx's transaction manager sends a plain `COMMIT` and counts
        // the transactions it opened, so on such an alias BEGIN, COMMIT and ROLLBACK all go past
        // it, as plain statements: its count stays 0 and agrees with the server once the COMMIT
        // with the position query has ended the transaction.
        let plain = self.actx.entry.replicas.is_some();
        for &stmt in stmts {
            // A BEGIN with options is written for this transaction; the alias's own BEGIN, if
            // any, otherwise (the two never meet: `TxnOpts::check`).
            let with_options = match stmt {
                Control::Begin(opts) if !opts.is_empty() => opts.begin_sql(self.actx.entry.kind),
                _ => None,
            };
            let begin = with_options
                .as_deref()
                .or(self.actx.entry.db.begin.as_deref());
            let text = crate::backend::ControlText { stmt, begin };
            let conn = self.conn.as_mut().expect("checked above");
            let mut sent = if plain && stmt == Control::Commit {
                announce(&self.actx, &crate::wal::COMMIT_AND_POSITION);
                crate::wal::commit_and_capture(conn, self.actx.entry).await
            } else {
                announce(&self.actx, &text);
                conn.control(stmt, begin, plain).await
            };
            // The connection was taken idle without a ping: this statement was its test.
            let tested_now = std::mem::take(&mut self.untested);
            if tested_now && let Err(e) = sent {
                // Boxed, so that every send's future does not carry the rare retry's state.
                if let Err(e) = Box::pin(self.retry(e, stmt, begin)).await {
                    self.set_phase(Phase::Idle);
                    return Err(e);
                }
                sent = Ok(());
            }
            if let Err(e) = sent {
                self.set_phase(Phase::Idle);
                return Err(Error::from(e).with_alias(self.actx.name()));
            }
        }
        self.set_phase(Phase::Idle);
        Ok(())
    }

    /// Queues a ROLLBACK of the connection's transaction without waiting for it (sqlx sends it
    /// before the connection is used again); false, queueing nothing, when the lease has no
    /// connection or sqlx sees no transaction on it.
    pub(crate) fn queue_rollback(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut().filter(|c| c.sqlx_depth() > 0) else {
            return false;
        };
        let text = crate::backend::ControlText {
            stmt: Control::Rollback,
            begin: None,
        };
        announce(&self.actx, &text);
        conn.start_rollback();
        true
    }

    /// `stmt`, the first statement on an untested connection, failed with `e`: sends it again on
    /// a pinged connection if that one is gone.
    async fn retry(
        &mut self,
        e: sqlx::Error,
        stmt: Control,
        begin: Option<&str>,
    ) -> Result<(), Error> {
        self.replace_dead(e).await?;
        let conn = self.conn.as_mut().expect("replaced above");
        let plain = self.actx.entry.replicas.is_some();
        conn.control(stmt, begin, plain)
            .await
            .map_err(|e| Error::from(e).with_alias(self.actx.name()))
    }

    /// Takes the connection out of the slot, to give it back to the pool or close it.
    pub(crate) fn take_conn(&mut self) -> Option<AnyConn> {
        self.conn.take()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        match self.phase {
            Phase::Control => {
                if let Some(mut conn) = self.conn.take() {
                    conn.close_on_drop();
                }
                self.actx.state().connection_lost();
            }
            Phase::Query => self.actx.state().query_failed(
                crate::classify::Cause::refused(
                    "a statement was cancelled while in flight".to_owned(),
                ),
                Some(crate::classify::Effect::Statement),
            ),
            Phase::Idle | Phase::Stream => {}
        }
        let (closed, wake) = {
            let mut slot = lock(&self.actx.slot);
            let closed = if std::mem::take(&mut slot.revoked) {
                self.conn.take()
            } else {
                slot.conn = self.conn.take();
                None
            };
            slot.untested = self.untested;
            slot.held = false;
            slot.streaming = false;
            (closed, std::mem::take(&mut slot.waiting))
        };
        if let Some(mut conn) = closed {
            conn.close_on_drop();
        }
        if wake {
            self.actx.freed.notify_waiters();
        }
    }
}

/// A control statement about to go out: its DEBUG event (its depth is read only when a subscriber
/// wants it), and its text for the statement recorder, if the scope records.
fn announce(actx: &AliasCtx, text: &dyn std::fmt::Display) {
    if actx.recording() {
        actx.record(&text.to_string());
    }
    tracing::debug!(
        target: "sqlx_atomic",
        alias = %actx.entry.name,
        depth = actx.state().depth(),
        statement = %text,
        "transaction control"
    );
}

/// The alias's pool timed out: says why, by opening one connection outside the pool (within two
/// seconds): a server that cannot be reached names its error; one that answers means every
/// connection was in use.
async fn pool_timed_out(actx: &AliasCtx) -> Error {
    pool_timed_out_at(actx.entry).await
}

/// [`pool_timed_out`] for an alias, wherever its pool timed out (a block's connection, or a
/// statement outside any block).
pub(crate) async fn pool_timed_out_at(entry: &AliasEntry) -> Error {
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        entry.db.pool.try_connect(),
    )
    .await;
    let cause = match probe {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the server did not answer within 2 s".to_owned()),
    };
    Error::at(&entry.name, ErrorKind::PoolTimedOut { cause })
}
