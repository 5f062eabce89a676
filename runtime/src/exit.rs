//! Carrying out an exit plan: sending what the end of a transaction owes, giving the connection
//! back (or closing it), and running the committed hooks. One executor for the blocks, the
//! requests' blocks, and manual `commit`/`rollback`.

use std::sync::Arc;

use crate::alias::AliasCtx;
use crate::backend::connection_gone;
use crate::classify::{Cause, Effect, conflict_of};
use crate::error::{Error, ErrorKind};
use crate::hook::Hook;
use crate::lease::Lease;
use crate::on_commit::run_hooks;
use crate::state::{Control, ExitPlan};

/// How a block ended: the error it fails with, if any, and the conflict that kept an outermost
/// block from committing, if one did (running it again may succeed).
pub(crate) struct Ended {
    pub(crate) error: Option<Error>,
    pub(crate) conflict: Option<Cause>,
}

impl Ended {
    pub(crate) fn failed(error: Error) -> Self {
        Ended {
            error: Some(error),
            conflict: None,
        }
    }
}

/// Carries out `plan`, the exit of a transaction (`plan.ends_transaction`): `body_ok` says
/// whether the caller's body returned `Ok`, for the log.
pub(crate) async fn execute(actx: &Arc<AliasCtx>, plan: ExitPlan<Hook>, body_ok: bool) -> Ended {
    let (ended, hooks) = execute_keeping_hooks(actx, plan, body_ok).await;
    if !hooks.is_empty()
        && let Err(e) = run_hooks(actx.name(), hooks).await
    {
        return Ended::failed(e);
    }
    ended
}

/// [`execute`], handing back the hooks of a transaction that committed instead of running them.
pub(crate) async fn execute_keeping_hooks(
    actx: &Arc<AliasCtx>,
    mut plan: ExitPlan<Hook>,
    body_ok: bool,
) -> (Ended, Vec<Hook>) {
    let ended = end_transaction(actx, &mut plan, body_ok).await;
    let hooks = if plan.commits && ended.error.is_none() {
        std::mem::take(&mut plan.hooks)
    } else {
        Vec::new()
    };
    (ended, hooks)
}

/// Sends what the end of the transaction owes (with its jobs before a COMMIT) and gives the
/// connection back.
async fn end_transaction(actx: &Arc<AliasCtx>, plan: &mut ExitPlan<Hook>, body_ok: bool) -> Ended {
    let error = plan.error.take().map(|k| actx.err(k));
    if !plan.stmts.is_empty() || plan.close_connection {
        let mut exit_guard = ExitGuard { actx, armed: true };
        let leased = match actx.try_lease() {
            // Only a result stream's hold refuses at once.
            Some(Err(_)) => {
                exit_guard.armed = false;
                return Ended::failed(stream_outlived_block(actx));
            }
            Some(leased) => leased,
            None => actx.lease().await,
        };
        let mut lease = match leased {
            Ok(l) => l,
            Err(e) => return Ended::failed(e),
        };
        exit_guard.armed = false;
        let mut close = plan.close_connection;
        // A transaction that ends in ROLLBACK on a sound connection does not wait for it: the
        // ROLLBACK is queued on the connection, and the pool sends it (with its ping on release)
        // before anyone else can take the connection, as for sqlx's own dropped `Transaction`.
        let queued =
            !close && plan.stmts.as_slice() == [Control::Rollback] && lease.queue_rollback();
        // The transaction's durable jobs are written in it just before its COMMIT, after what
        // else it owes (a ROLLBACK TO owed by a failed savepoint must not undo them).
        #[cfg(feature = "outbox")]
        let mut stmts = plan.stmts.as_slice();
        #[cfg(not(feature = "outbox"))]
        let stmts = plan.stmts.as_slice();
        #[cfg(feature = "outbox")]
        if plan.commits
            && stmts.last() == Some(&Control::Commit)
            && lease.has_conn()
            && crate::outbox::has_jobs(&plan.hooks)
        {
            let (owed, commit) = stmts.split_at(stmts.len() - 1);
            let written = match lease.send(owed).await {
                Ok(()) => {
                    crate::outbox::write_on_conn(&mut lease, crate::outbox::jobs(&plan.hooks)).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                return commit_failed(lease, e).await;
            }
            stmts = commit;
        }
        if !queued
            && lease.has_conn()
            && let Err(e) = lease.send(stmts).await
        {
            if stmts.contains(&Control::Commit) {
                // 1.7: the commit failed; roll back, or close the connection.
                return commit_failed(lease, e).await;
            }
            rollback_failed(actx, &e);
            close = true;
        }
        if let Some(mut conn) = lease.take_conn()
            && close
        {
            conn.close_on_drop();
        }
        drop(lease);
    } else {
        // Nothing to send (the block never queried); a connection may still be held if the
        // block only prepared one.
        actx.release_now(false, false);
        // A transaction that never began has its jobs written on their own, in autocommit.
        #[cfg(feature = "outbox")]
        if plan.commits
            && let Err(e) =
                crate::outbox::write_on_pool(actx.entry, crate::outbox::jobs(&plan.hooks)).await
        {
            return Ended::failed(e);
        }
    }
    transaction_ended(actx, plan.commits, body_ok, error.as_ref());
    Ended {
        error,
        conflict: plan.conflict.take(),
    }
}

/// Rolls back (without waiting) a transaction whose exit was cut short by cancellation.
struct ExitGuard<'a> {
    actx: &'a Arc<AliasCtx>,
    armed: bool,
}

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.actx.release_now(true, false);
        }
    }
}

/// The transaction's end, as it happened: a WARN when an error rolled it back although the
/// body returned `Ok` (the caller is told by the block's error; the log says so too), DEBUG
/// otherwise.
fn transaction_ended(actx: &AliasCtx, committed: bool, body_ok: bool, error: Option<&Error>) {
    match error {
        Some(e) if body_ok => {
            tracing::warn!(target: "sqlx_atomic", alias = %actx.name(), committed, error = %e, "transaction rolled back")
        }
        Some(e) => {
            tracing::debug!(target: "sqlx_atomic", alias = %actx.name(), committed, error = %e, "transaction rolled back")
        }
        None if committed => {
            tracing::debug!(target: "sqlx_atomic", alias = %actx.name(), committed, "transaction committed")
        }
        None => {
            tracing::debug!(target: "sqlx_atomic", alias = %actx.name(), committed, "transaction rolled back")
        }
    }
}

/// A result stream still held the connection when its transaction ended.
fn stream_outlived_block(actx: &Arc<AliasCtx>) -> Error {
    actx.release_now(true, true);
    actx.err(ErrorKind::StreamOutlivedBlock)
}

/// 1.7: the COMMIT failed: roll back, or close the connection if that fails too. A COMMIT cut
/// off by a failed connection has an unknown outcome; one the server refused with a conflict
/// rolled back, and running the block again may succeed.
async fn commit_failed(mut lease: Lease, e: Error) -> Ended {
    let unknown = e.as_sqlx().is_none_or(connection_gone);
    let close = unknown || lease.send(&[Control::Rollback]).await.is_err();
    if unknown {
        tracing::error!(target: "sqlx_atomic", alias = %lease.actx.name(), error = %e, "the connection failed during COMMIT; whether the transaction committed is unknown");
    } else {
        tracing::warn!(target: "sqlx_atomic", alias = %lease.actx.name(), error = %e, "COMMIT failed; rolled back");
    }
    if let Some(mut conn) = lease.take_conn()
        && close
    {
        conn.close_on_drop();
    }
    let alias = lease.actx.name().clone();
    match e.kind_owned() {
        ErrorKind::Sqlx(sqlx_error) if unknown => {
            Ended::failed(Error::at(&alias, ErrorKind::CommitUnknown(sqlx_error)))
        }
        ErrorKind::Sqlx(sqlx_error) => {
            let conflict = conflict_of(&sqlx_error)
                .is_some()
                .then(|| Cause::of(&sqlx_error, Effect::Transaction));
            Ended {
                error: Some(Error::at(&alias, ErrorKind::Sqlx(sqlx_error))),
                conflict,
            }
        }
        other => Ended::failed(Error::at(&alias, other)),
    }
}

/// 1.5: a failed rollback is logged and the connection closed.
fn rollback_failed(actx: &Arc<AliasCtx>, e: &Error) {
    tracing::error!(target: "sqlx_atomic", alias = %actx.name(), error = %e, "ROLLBACK failed; closing the connection");
}
