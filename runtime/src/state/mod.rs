//! The transaction state machine of one alias in one task, with no I/O.
//!
//! It decides; the block runner and the executor perform. Every method is synchronous and returns
//! what must be sent to the server (a list of [`Control`] statements) and which hooks to run or
//! drop. Statements are lazy (docs/semantics.md §9): entering a block owes a BEGIN or a SAVEPOINT, which is
//! only sent before the next query; RELEASE is bookkeeping and is owed, not sent.

use smallvec::SmallVec;

use crate::classify::Cause;
use crate::error::ErrorKind;
use crate::options::TxnOpts;

pub(crate) use plan::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Outermost,
    /// The outermost block entered in manual mode: it acts as a nested block (4.2).
    ManualOutermost,
    Nested,
    Test,
}

#[derive(Debug)]
struct OpenBlock {
    id: u64,
    kind: BlockKind,
    savepoint: Option<SpId>,
    /// Hooks registered before this block opened; rolling back to its savepoint keeps only these.
    hooks_mark: usize,
}

#[derive(Debug, Clone, Copy)]
struct ServerSp {
    id: SpId,
    /// Its block has ended: the savepoint is kept only because its RELEASE is owed.
    closed: bool,
}

/// Where a transaction stands on the server. One value instead of flags, so that a transaction
/// cannot be, say, both lost and begun.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Server {
    /// No transaction is open.
    Idle,
    /// A transaction is open, logically: its BEGIN is owed, sent before the next query.
    Owed,
    /// BEGIN was sent; the transaction is usable.
    Open,
    /// PostgreSQL aborted the transaction after a failed statement: every statement fails until
    /// a ROLLBACK TO, and COMMIT would roll back.
    Aborted,
    /// The server rolled the whole transaction back on its own (a deadlock on MySQL/MariaDB):
    /// none of its savepoints exist.
    Gone,
    /// A control statement failed: the connection's state is unknown, so the transaction can only
    /// be rolled back and its connection closed.
    Broken,
    /// The connection was closed under the transaction (7.1): the server rolled it back.
    Lost,
}

impl Server {
    /// Whether BEGIN was sent on a connection the task still holds.
    fn begun(self) -> bool {
        matches!(
            self,
            Server::Open | Server::Aborted | Server::Gone | Server::Broken
        )
    }

    /// Whether only a full rollback is safe because of the connection (broken or lost).
    fn broken(self) -> bool {
        matches!(self, Server::Broken | Server::Lost)
    }
}

/// The state of one alias in one task.
#[derive(Debug)]
pub(crate) struct TxState<H> {
    autocommit: bool,
    blocks: SmallVec<[OpenBlock; 4]>,
    needs_rollback: bool,
    /// Where the transaction stands on the server.
    server: Server,
    server_sps: SmallVec<[ServerSp; 4]>,
    owed_sps: SmallVec<[SpId; 4]>,
    owed_rollback_to: Option<SpId>,
    manual_sps: Vec<(SpId, usize)>,
    hooks: Vec<H>,
    next_sp: u64,
    reset_sp_counter: bool,
    /// The backend aborts a transaction on any failed statement (PostgreSQL).
    tracks_abort: bool,
    /// The per-request block a handler opted out of (`non_atomic_requests`).
    opted_out: Option<u64>,
    /// The first error behind `needs_rollback`, when an error (not `set_rollback`) set it.
    doom: Option<Cause>,
    /// An error that doomed the whole transaction (the server rolled it back, a control
    /// statement failed, the connection was lost): every open block fails with it.
    fatal: Option<Cause>,
    /// The options of the open transaction.
    txn_opts: TxnOpts,
}

impl<H> TxState<H> {
    /// A fresh state. `tracks_abort`: the backend aborts a transaction on any error (PostgreSQL).
    pub(crate) fn new(autocommit: bool, tracks_abort: bool) -> Self {
        TxState {
            autocommit,
            blocks: SmallVec::new(),
            needs_rollback: false,
            server: Server::Idle,
            server_sps: SmallVec::new(),
            owed_sps: SmallVec::new(),
            owed_rollback_to: None,
            manual_sps: Vec::new(),
            hooks: Vec::new(),
            next_sp: 0,
            reset_sp_counter: false,
            tracks_abort,
            opted_out: None,
            doom: None,
            fatal: None,
            txn_opts: TxnOpts::default(),
        }
    }

    /// The id of the innermost open block.
    pub(crate) fn top_block(&self) -> Option<u64> {
        self.blocks.last().map(|b| b.id)
    }

    /// Whether the innermost block is the first real block of its transaction: the outermost
    /// block, or the first block inside a test helper's always-rolled-back one. Its options
    /// (its deadline) are the transaction's.
    pub(crate) fn innermost_is_first(&self) -> bool {
        match self.blocks.as_slice() {
            [_] => true,
            [outer, _] => outer.kind == BlockKind::Test,
            _ => false,
        }
    }

    /// Number of open blocks, test-helper blocks included.
    pub(crate) fn depth(&self) -> usize {
        self.blocks.len()
    }

    pub(crate) fn in_block(&self) -> bool {
        !self.blocks.is_empty()
    }

    /// Whether the task holds (or must hold) a connection: a transaction is open.
    pub(crate) fn in_transaction(&self) -> bool {
        self.server != Server::Idle
    }

    /// A transaction is open from now on, if none was: its BEGIN is owed.
    fn open(&mut self) {
        if self.server == Server::Idle {
            self.server = Server::Owed;
        }
    }

    pub(crate) fn autocommit(&self) -> bool {
        self.autocommit
    }

    fn alloc_sp(&mut self) -> SpId {
        self.next_sp += 1;
        let id = SpId(self.next_sp);
        self.owed_sps.push(id);
        id
    }

    /// Enters a block (1.1, 1.2, 1.8, 4.2).
    pub(crate) fn enter(&mut self, id: u64, opts: BlockOpts) -> Result<(), ErrorKind> {
        let nested_in_real_block = self.blocks.iter().any(|b| b.kind != BlockKind::Test);
        if opts.durable && nested_in_real_block {
            return Err(ErrorKind::DurableNested);
        }
        if opts.retry && (nested_in_real_block || (self.blocks.is_empty() && !self.autocommit)) {
            return Err(ErrorKind::RetryNested);
        }
        match self.blocks.first() {
            // An outermost block sets the options; in manual mode the transaction is begun
            // without any, so a block cannot choose them.
            None if self.autocommit => {}
            None => {
                if let Some(option) = TxnOpts::default().mismatch(&opts.txn) {
                    return Err(ErrorKind::OptionMismatch(option));
                }
            }
            // A test's transaction takes the options of the first block that gives them, while
            // its BEGIN is still owed: the code under test runs as it would outside the test.
            Some(outer) if outer.kind == BlockKind::Test && !self.server.begun() => {
                if let Some(option) = self.txn_opts.conflict(&opts.txn) {
                    return Err(ErrorKind::OptionMismatch(option));
                }
                self.txn_opts.adopt(&opts.txn);
            }
            Some(_) => {
                if let Some(option) = self.txn_opts.mismatch(&opts.txn) {
                    return Err(ErrorKind::OptionMismatch(option));
                }
            }
        }
        let hooks_mark = self.hooks.len();
        let (kind, savepoint) = if self.blocks.is_empty() {
            self.needs_rollback = false;
            if opts.test {
                (BlockKind::Test, None)
            } else if self.autocommit {
                (BlockKind::Outermost, None)
            } else {
                (BlockKind::ManualOutermost, None)
            }
        } else {
            (BlockKind::Nested, None)
        };
        if kind == BlockKind::Outermost || kind == BlockKind::Test {
            self.txn_opts = opts.txn;
            if self.reset_sp_counter {
                self.next_sp = 0;
                self.reset_sp_counter = false;
            }
            self.open();
        }
        let savepoint = match kind {
            BlockKind::Nested | BlockKind::ManualOutermost
                if opts.savepoint && !self.needs_rollback =>
            {
                if kind == BlockKind::ManualOutermost {
                    self.open();
                }
                Some(self.alloc_sp())
            }
            _ => savepoint,
        };
        self.blocks.push(OpenBlock {
            id,
            kind,
            savepoint,
            hooks_mark,
        });
        Ok(())
    }

    /// Decides where a query goes and what must be sent first (3.1, 9.1).
    pub(crate) fn before_query(&mut self) -> Result<Route, ErrorKind> {
        if self.server == Server::Lost {
            return Err(ErrorKind::ConnectionLost);
        }
        if self.server.broken() || self.fatal.is_some() || (self.in_block() && self.needs_rollback)
        {
            return Err(ErrorKind::Doomed);
        }
        if self.blocks.is_empty() && self.autocommit {
            return Ok(Route::Pool);
        }
        self.open();
        Ok(Route::Conn(self.flush()))
    }

    /// Takes the owed statements that must precede the next statement on the connection.
    fn flush(&mut self) -> Stmts {
        let mut plan = Stmts::new();
        if self.server == Server::Owed {
            plan.push(Control::Begin(self.txn_opts));
            self.server = Server::Open;
        }
        if let Some(sp) = self.owed_rollback_to.take() {
            plan.push(Control::RollbackTo(sp));
            if self.server == Server::Aborted {
                self.server = Server::Open;
            }
        }
        for sp in std::mem::take(&mut self.owed_sps) {
            let run = self
                .server_sps
                .iter()
                .rev()
                .take_while(|s| s.closed)
                .count();
            if run > RELEASE_BOUND {
                let lowest = self.server_sps.len() - run;
                plan.push(Control::Release(self.server_sps[lowest].id));
                self.server_sps.truncate(lowest);
            }
            plan.push(Control::Savepoint(sp));
            self.server_sps.push(ServerSp {
                id: sp,
                closed: false,
            });
        }
        plan
    }

    fn rollback_to(&mut self, sp: SpId, hooks_mark: usize) -> Result<(), ErrorKind> {
        self.hooks.truncate(hooks_mark);
        let Some(pos) = self.forget_or_find(sp)? else {
            return Ok(());
        };
        self.server_sps.truncate(pos + 1);
        self.server_sps[pos].closed = true;
        self.owed_sps.clear();
        self.owed_rollback_to = Some(sp);
        Ok(())
    }

    /// Ends savepoint `sp` and the newer ones: if it was never sent, it is simply forgotten
    /// (`None`); otherwise its position on the server's stack is returned.
    fn forget_or_find(&mut self, sp: SpId) -> Result<Option<usize>, ErrorKind> {
        self.manual_sps.retain(|(id, _)| *id < sp);
        if let Some(pos) = self.owed_sps.iter().position(|s| *s == sp) {
            self.owed_sps.truncate(pos);
            return Ok(None);
        }
        self.server_sps
            .iter()
            .position(|s| s.id == sp)
            .map(Some)
            .ok_or(ErrorKind::InvalidSavepoint(sp.0))
    }

    fn release(&mut self, sp: SpId) -> Result<(), ErrorKind> {
        let Some(pos) = self.forget_or_find(sp)? else {
            return Ok(());
        };
        // Releasing a savepoint destroys the newer ones too; they are closed already or owed.
        for s in &mut self.server_sps[pos..] {
            s.closed = true;
        }
        Ok(())
    }

    fn end_transaction(&mut self) {
        self.server = Server::Idle;
        self.server_sps.clear();
        self.owed_sps.clear();
        self.owed_rollback_to = None;
        self.manual_sps.clear();
        self.needs_rollback = false;
        self.doom = None;
        self.fatal = None;
        self.txn_opts = TxnOpts::default();
    }

    /// Leaves the innermost block, which must be `id` (1.3–1.7, 5.4–5.6, 9.3, 9.4).
    pub(crate) fn exit(&mut self, id: u64, outcome: Outcome) -> Result<ExitPlan<H>, ErrorKind> {
        if self.opted_out == Some(id) {
            self.opted_out = None;
            return Ok(ExitPlan::nothing());
        }
        if self.top_block() != Some(id) {
            return Err(ErrorKind::ConcurrentBlocks);
        }
        let frame = self.blocks.pop().expect("checked above");
        let failed = outcome == Outcome::Failed || self.needs_rollback || self.fatal.is_some();
        let mut plan = ExitPlan::nothing();
        match frame.kind {
            BlockKind::Nested | BlockKind::ManualOutermost => {
                if !failed {
                    if let Some(sp) = frame.savepoint {
                        self.release(sp)?;
                    }
                } else {
                    self.needs_rollback = false;
                    match frame.savepoint {
                        Some(sp) if !self.server.broken() && self.fatal.is_none() => {
                            self.rollback_to(sp, frame.hooks_mark)?;
                            // The savepoint undid the failure: the enclosing block goes on, and
                            // this one reports what it rolled back.
                            plan.error = self.doom.take().map(ErrorKind::RolledBack);
                        }
                        _ => {
                            self.hooks.truncate(frame.hooks_mark);
                            self.needs_rollback = true;
                            plan.error = self.fatal.clone().map(ErrorKind::RolledBack);
                        }
                    }
                }
                if frame.kind == BlockKind::ManualOutermost && self.server == Server::Lost {
                    plan.error = Some(ErrorKind::ConnectionLost);
                }
            }
            BlockKind::Outermost | BlockKind::Test => {
                let commit = frame.kind == BlockKind::Outermost && !failed;
                plan.commits = commit && self.server != Server::Lost;
                // What dooms the transaction, when an error (not the body, not `set_rollback`)
                // does: the block must not report success.
                let doomed_by = self.fatal.clone().or_else(|| self.doom.clone());
                if self.server == Server::Lost {
                    plan.error = Some(match doomed_by {
                        Some(cause) if frame.kind == BlockKind::Outermost => {
                            ErrorKind::RolledBack(cause)
                        }
                        _ => ErrorKind::ConnectionLost,
                    });
                } else if commit && self.server.begun() {
                    if let Some(sp) = self.owed_rollback_to.take() {
                        plan.stmts.push(Control::RollbackTo(sp));
                        if self.server == Server::Aborted {
                            self.server = Server::Open;
                        }
                    }
                    if self.server == Server::Aborted {
                        plan.stmts = smallvec::smallvec![Control::Rollback];
                        plan.error = Some(ErrorKind::Aborted);
                        plan.commits = false;
                    } else {
                        plan.stmts.push(Control::Commit);
                        plan.hooks = std::mem::take(&mut self.hooks);
                    }
                } else if commit {
                    // Nothing was sent: the transaction commits trivially.
                    plan.hooks = std::mem::take(&mut self.hooks);
                } else {
                    if self.server.begun() {
                        // Also after the server rolled back on its own: harmless there, and
                        // it keeps sqlx's count of open transactions right.
                        plan.stmts.push(Control::Rollback);
                    }
                    if frame.kind == BlockKind::Outermost
                        && let Some(cause) = doomed_by
                    {
                        if cause.conflict().is_some() {
                            plan.conflict = Some(cause.clone());
                        }
                        plan.error = Some(ErrorKind::RolledBack(cause));
                    }
                }
                plan.close_connection = self.server == Server::Broken;
                self.hooks.clear();
                plan.ends_transaction = true;
                self.end_transaction();
            }
        }
        Ok(plan)
    }

    /// Takes the request block `id` away, as if it had never been entered (a handler opting out
    /// of its per-request block, 8.2): the task runs in autocommit, or, for a request sent from
    /// inside a test's transaction (10.3), in that transaction without the request's savepoint.
    /// Only possible while nothing was sent or registered in the block.
    pub(crate) fn opt_out(&mut self, id: u64) -> Result<(), ErrorKind> {
        self.opt_out_check(id)?;
        let block = self.blocks.pop().expect("checked above");
        if self.blocks.is_empty() {
            self.end_transaction();
        } else if block.savepoint.is_some() {
            // Still owed (checked above): it is never sent.
            self.owed_sps.pop();
        }
        self.opted_out = Some(id);
        Ok(())
    }

    /// Whether [`opt_out`](Self::opt_out) would succeed.
    pub(crate) fn opt_out_check(&self, id: u64) -> Result<(), ErrorKind> {
        let in_test = self.blocks.len() == 2 && self.blocks[0].kind == BlockKind::Test;
        if !(self.blocks.len() == 1 || in_test) || self.top_block() != Some(id) {
            return Err(ErrorKind::OptOut(
                "another atomic block is open around the handler",
            ));
        }
        let used = if in_test {
            let block = &self.blocks[1];
            let owed =
                block.savepoint.is_some() && self.owed_sps.last() == block.savepoint.as_ref();
            !owed || self.hooks.len() != block.hooks_mark
        } else {
            self.server.begun() || !self.hooks.is_empty()
        };
        if used {
            return Err(ErrorKind::OptOut(
                "the request transaction already sent statements or registered hooks before the \
                 handler ran (a middleware or an extractor used the database)",
            ));
        }
        Ok(())
    }

    /// Whether the outermost block is a test helper's always-rolled-back one (10.1).
    #[cfg(feature = "tower")]
    pub(crate) fn in_test(&self) -> bool {
        self.blocks
            .first()
            .is_some_and(|b| b.kind == BlockKind::Test)
    }
}

mod failure;
mod manual;
mod plan;
#[cfg(test)]
mod tests;
