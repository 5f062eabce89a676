//! The transaction state machine of one alias in one task, with no I/O.
//!
//! It decides; the block runner and the executor perform. Every method is synchronous and returns
//! what must be sent to the server (a list of [`Control`] statements) and which hooks to run or
//! drop. Statements are lazy (docs/semantics.md §9): entering a block owes a BEGIN or a SAVEPOINT, which is
//! only sent before the next query; RELEASE is bookkeeping and is owed, not sent.

use smallvec::SmallVec;

use crate::classify::{Cause, Effect};
use crate::error::ErrorKind;
use crate::options::TxnOpts;

/// A savepoint id, unique within a transaction; its SQL name is generated from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpId(pub u64);

/// A transaction-control statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// BEGIN, with the transaction's options.
    Begin(TxnOpts),
    Commit,
    Rollback,
    Savepoint(SpId),
    Release(SpId),
    RollbackTo(SpId),
}

/// How many closed-but-unreleased savepoints may pile up on the server before one RELEASE pays
/// for all of them (9.4).
pub(crate) const RELEASE_BOUND: usize = 32;

/// How a block's body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The body returned `Ok`.
    Ok,
    /// The body returned `Err`, panicked or was cancelled.
    Failed,
}

/// Options of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockOpts {
    pub savepoint: bool,
    pub durable: bool,
    /// A test helper's outermost block: always rolled back, not counted by the durable rule.
    pub test: bool,
    /// The block is run again after a conflict: it must be an outermost block.
    pub retry: bool,
    /// The transaction's options (outermost block), or what a nested block expects of them.
    pub txn: TxnOpts,
}

impl Default for BlockOpts {
    /// `#[atomic]` with no arguments.
    fn default() -> Self {
        BlockOpts {
            savepoint: true,
            durable: false,
            test: false,
            retry: false,
            txn: TxnOpts::default(),
        }
    }
}

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

/// Control statements to send, in order: a few at most, kept inline.
pub(crate) type Stmts = SmallVec<[Control; 4]>;

/// Where a query goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Straight to the pool, in autocommit.
    Pool,
    /// To the task's connection, after these owed statements.
    Conn(Stmts),
}

/// What a block's exit, `commit` or `rollback` asks for.
#[derive(Debug)]
pub(crate) struct ExitPlan<H> {
    /// Statements to send, in order.
    pub stmts: Stmts,
    /// Hooks to run once the statements succeeded (the transaction committed).
    pub hooks: Vec<H>,
    /// The transaction ended: give the connection back afterwards.
    pub ends_transaction: bool,
    /// The exit fails with this error even if the statements succeed.
    pub error: Option<ErrorKind>,
    /// The connection's state is unknown: close it rather than pool it.
    pub close_connection: bool,
    /// An outermost block that did not commit because of this conflict: running it again may
    /// succeed.
    pub conflict: Option<Cause>,
    /// The transaction commits (COMMIT is among `stmts`, or nothing was sent to commit).
    pub commits: bool,
}

impl<H> ExitPlan<H> {
    fn nothing() -> Self {
        ExitPlan {
            stmts: Stmts::new(),
            hooks: Vec::new(),
            ends_transaction: false,
            error: None,
            close_connection: false,
            conflict: None,
            commits: false,
        }
    }
}

/// What `on_commit` must do with a hook.
#[derive(Debug)]
pub(crate) enum HookDisposition<H> {
    /// Kept until the outermost commit.
    Registered,
    /// No block is open and autocommit is on: run it now.
    RunNow(H),
}

/// The state of one alias in one task.
#[derive(Debug)]
pub(crate) struct TxState<H> {
    autocommit: bool,
    blocks: SmallVec<[OpenBlock; 4]>,
    needs_rollback: bool,
    /// A control statement failed or the connection was lost: only a full rollback is safe.
    broken: bool,
    /// The connection was closed under an open transaction (7.1).
    lost: bool,
    /// A transaction is open, logically (its BEGIN may still be owed).
    txn_open: bool,
    /// BEGIN was sent.
    begun: bool,
    server_sps: SmallVec<[ServerSp; 4]>,
    owed_sps: SmallVec<[SpId; 4]>,
    owed_rollback_to: Option<SpId>,
    manual_sps: Vec<(SpId, usize)>,
    hooks: Vec<H>,
    next_sp: u64,
    reset_sp_counter: bool,
    /// The server aborted the transaction after an error (PostgreSQL): COMMIT would roll back.
    aborted: bool,
    tracks_abort: bool,
    /// The per-request block a handler opted out of (`non_atomic_requests`).
    opted_out: Option<u64>,
    /// The first error behind `needs_rollback`, when an error (not `set_rollback`) set it.
    doom: Option<Cause>,
    /// An error that doomed the whole transaction (the server rolled it back, a control
    /// statement failed, the connection was lost): every open block fails with it.
    fatal: Option<Cause>,
    /// The server rolled the transaction back on its own: none of its savepoints exist.
    gone: bool,
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
            broken: false,
            lost: false,
            txn_open: false,
            begun: false,
            server_sps: SmallVec::new(),
            owed_sps: SmallVec::new(),
            owed_rollback_to: None,
            manual_sps: Vec::new(),
            hooks: Vec::new(),
            next_sp: 0,
            reset_sp_counter: false,
            aborted: false,
            tracks_abort,
            opted_out: None,
            doom: None,
            fatal: None,
            gone: false,
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
        self.txn_open
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
            Some(outer) if outer.kind == BlockKind::Test && !self.begun => {
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
            self.txn_open = true;
        }
        let savepoint = match kind {
            BlockKind::Nested | BlockKind::ManualOutermost
                if opts.savepoint && !self.needs_rollback =>
            {
                if kind == BlockKind::ManualOutermost {
                    self.txn_open = true;
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
        if self.lost {
            return Err(ErrorKind::ConnectionLost);
        }
        if self.broken || self.fatal.is_some() || (self.in_block() && self.needs_rollback) {
            return Err(ErrorKind::Doomed);
        }
        if self.blocks.is_empty() && self.autocommit {
            return Ok(Route::Pool);
        }
        self.txn_open = true;
        Ok(Route::Conn(self.flush()))
    }

    /// Takes the owed statements that must precede the next statement on the connection.
    fn flush(&mut self) -> Stmts {
        let mut plan = Stmts::new();
        if !self.begun {
            plan.push(Control::Begin(self.txn_opts));
            self.begun = true;
        }
        if let Some(sp) = self.owed_rollback_to.take() {
            plan.push(Control::RollbackTo(sp));
            self.aborted = false;
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

    /// A query failed (3.2): the enclosing block is doomed. `effect`: what the failure did on
    /// the server (`None`: the query was refused before it was sent).
    #[cold]
    pub(crate) fn query_failed(&mut self, cause: Cause, effect: Option<Effect>) {
        if self.in_block() {
            self.needs_rollback = true;
            self.doom.get_or_insert_with(|| cause.clone());
        }
        match effect {
            None => {}
            Some(Effect::Statement) if self.tracks_abort && self.begun => self.aborted = true,
            Some(Effect::Statement) => {}
            Some(Effect::Transaction) => self.transaction_gone(cause),
            Some(Effect::Connection) => {
                if self.txn_open {
                    self.fatal.get_or_insert(cause);
                }
                self.connection_lost();
            }
        }
    }

    /// An owed control statement failed: unless the server says it rolled the transaction back,
    /// the connection's state is unknown and the transaction can only be rolled back whole.
    #[cold]
    pub(crate) fn control_failed(&mut self, cause: Cause, effect: Effect) {
        if self.in_block() {
            self.needs_rollback = true;
        }
        match effect {
            Effect::Transaction => self.transaction_gone(cause),
            Effect::Statement | Effect::Connection => {
                self.broken = true;
                self.fatal.get_or_insert(cause);
            }
        }
    }

    /// The server rolled the whole transaction back (a deadlock on MySQL/MariaDB, a Galera
    /// certification failure): its savepoints are gone, so none is rolled back to or released,
    /// and every open block fails with `cause`.
    fn transaction_gone(&mut self, cause: Cause) {
        if !self.txn_open {
            return;
        }
        self.fatal.get_or_insert(cause);
        self.gone = true;
        self.aborted = false;
        self.server_sps.clear();
        self.owed_sps.clear();
        self.owed_rollback_to = None;
    }

    /// The connection was closed under an open transaction (a statement cancelled in flight).
    pub(crate) fn connection_lost(&mut self) {
        if self.txn_open {
            self.lost = true;
            self.broken = true;
            if self.in_block() {
                self.needs_rollback = true;
            }
            self.begun = false;
            self.server_sps.clear();
            self.owed_sps.clear();
            self.owed_rollback_to = None;
        }
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
        self.txn_open = false;
        self.begun = false;
        self.server_sps.clear();
        self.owed_sps.clear();
        self.owed_rollback_to = None;
        self.manual_sps.clear();
        self.needs_rollback = false;
        self.broken = false;
        self.lost = false;
        self.aborted = false;
        self.doom = None;
        self.fatal = None;
        self.gone = false;
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
                        Some(sp) if !self.broken && self.fatal.is_none() => {
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
                if frame.kind == BlockKind::ManualOutermost && self.lost {
                    plan.error = Some(ErrorKind::ConnectionLost);
                }
            }
            BlockKind::Outermost | BlockKind::Test => {
                let commit = frame.kind == BlockKind::Outermost && !failed;
                plan.commits = commit && !self.lost;
                // What dooms the transaction, when an error (not the body, not `set_rollback`)
                // does: the block must not report success.
                let doomed_by = self.fatal.clone().or_else(|| self.doom.clone());
                if self.lost {
                    plan.error = Some(match doomed_by {
                        Some(cause) if frame.kind == BlockKind::Outermost => {
                            ErrorKind::RolledBack(cause)
                        }
                        _ => ErrorKind::ConnectionLost,
                    });
                } else if commit && self.begun {
                    if let Some(sp) = self.owed_rollback_to.take() {
                        plan.stmts.push(Control::RollbackTo(sp));
                        self.aborted = false;
                    }
                    if self.aborted {
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
                    if self.begun {
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
                plan.close_connection = self.broken && !self.lost;
                self.hooks.clear();
                plan.ends_transaction = true;
                self.end_transaction();
            }
        }
        Ok(plan)
    }

    /// Takes the outermost block `id` away, as if it had never been entered, so the task runs in
    /// autocommit (a handler opting out of its per-request block, 8.2). Only possible while
    /// it is the only block and nothing was sent or registered in it.
    pub(crate) fn opt_out(&mut self, id: u64) -> Result<(), ErrorKind> {
        self.opt_out_check(id)?;
        self.blocks.pop();
        self.end_transaction();
        self.opted_out = Some(id);
        Ok(())
    }

    /// Whether [`opt_out`](Self::opt_out) would succeed.
    pub(crate) fn opt_out_check(&self, id: u64) -> Result<(), ErrorKind> {
        if self.blocks.len() != 1 || self.top_block() != Some(id) {
            return Err(ErrorKind::OptOut(
                "another atomic block is open around the handler",
            ));
        }
        if self.begun || !self.hooks.is_empty() {
            return Err(ErrorKind::OptOut(
                "the request transaction already sent statements or registered hooks before the \
                 handler ran (a middleware or an extractor used the database)",
            ));
        }
        Ok(())
    }

    /// The block ended with `Ok`: does it leave in failure because of the rollback flag (2.2)?
    pub(crate) fn get_rollback(&self) -> Result<bool, ErrorKind> {
        if !self.in_block() {
            return Err(ErrorKind::OutsideBlock("get_rollback"));
        }
        Ok(self.needs_rollback || self.fatal.is_some())
    }

    /// 2.1, 2.3.
    pub(crate) fn set_rollback(&mut self, on: bool) -> Result<(), ErrorKind> {
        if !self.in_block() {
            return Err(ErrorKind::OutsideBlock("set_rollback"));
        }
        self.needs_rollback = on;
        // Asked for (`true`) or cleared (`false`, Django's way to go on after an error that the
        // body handled): either way, no error is behind the flag any more. A failure of the
        // whole transaction stays.
        self.doom = None;
        Ok(())
    }

    /// Number of pending hooks (for the capture helper).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn hooks_len(&self) -> usize {
        self.hooks.len()
    }

    /// Takes the pending hooks registered after the first `mark` (for the capture helper).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn take_hooks_from(&mut self, mark: usize) -> Vec<H> {
        if mark >= self.hooks.len() {
            return Vec::new();
        }
        self.hooks.split_off(mark)
    }

    /// Records a hook (5.1–5.3).
    pub(crate) fn on_commit(&mut self, hook: H) -> Result<HookDisposition<H>, ErrorKind> {
        if self.in_block() {
            self.hooks.push(hook);
            Ok(HookDisposition::Registered)
        } else if !self.autocommit {
            Err(ErrorKind::OnCommitInManualMode)
        } else {
            Ok(HookDisposition::RunNow(hook))
        }
    }

    /// 4.2, 4.3.
    pub(crate) fn set_autocommit(&mut self, on: bool) -> Result<(), ErrorKind> {
        if self.in_block() {
            return Err(ErrorKind::InsideBlock("set_autocommit"));
        }
        if on && self.txn_open {
            return Err(ErrorKind::TransactionOpen);
        }
        self.autocommit = on;
        Ok(())
    }

    /// Manual `commit()` (4.2, 4.3): commits the manual transaction, if any.
    pub(crate) fn commit(&mut self) -> Result<ExitPlan<H>, ErrorKind> {
        if self.in_block() {
            return Err(ErrorKind::InsideBlock("commit"));
        }
        let mut plan = ExitPlan::nothing();
        if !self.txn_open {
            return Ok(plan);
        }
        plan.ends_transaction = true;
        if self.lost {
            plan.error = Some(ErrorKind::ConnectionLost);
        } else if self.broken || self.needs_rollback || self.aborted || self.fatal.is_some() {
            if self.begun {
                plan.stmts.push(Control::Rollback);
            }
            plan.error = Some(match self.fatal.clone().or_else(|| self.doom.clone()) {
                Some(cause) => ErrorKind::RolledBack(cause),
                None if self.aborted => ErrorKind::Aborted,
                None => ErrorKind::Doomed,
            });
            plan.close_connection = self.broken;
        } else {
            if self.begun {
                if let Some(sp) = self.owed_rollback_to.take() {
                    plan.stmts.push(Control::RollbackTo(sp));
                }
                plan.stmts.push(Control::Commit);
            }
            plan.hooks = std::mem::take(&mut self.hooks);
            plan.commits = true;
        }
        self.hooks.clear();
        self.end_transaction();
        Ok(plan)
    }

    /// Manual `rollback()`.
    pub(crate) fn rollback(&mut self) -> Result<ExitPlan<H>, ErrorKind> {
        if self.in_block() {
            return Err(ErrorKind::InsideBlock("rollback"));
        }
        let mut plan = ExitPlan::nothing();
        if self.txn_open {
            if self.begun && !self.lost {
                plan.stmts.push(Control::Rollback);
            }
            plan.close_connection = self.broken && !self.lost;
            plan.ends_transaction = true;
            self.hooks.clear();
            self.end_transaction();
        }
        Ok(plan)
    }

    /// `savepoint()` (4.4): `None` when no transaction can hold one.
    pub(crate) fn savepoint(&mut self) -> Option<SpId> {
        if !self.in_block() && self.autocommit {
            return None;
        }
        self.txn_open = true;
        let sp = self.alloc_sp();
        self.manual_sps.push((sp, self.hooks.len()));
        Some(sp)
    }

    fn manual_sp(&self, sp: SpId) -> Result<usize, ErrorKind> {
        let floor = self
            .blocks
            .iter()
            .filter_map(|b| b.savepoint)
            .max()
            .unwrap_or(SpId(0));
        self.manual_sps
            .iter()
            .find(|(id, _)| *id == sp && *id > floor)
            .map(|(_, mark)| *mark)
            .ok_or(ErrorKind::InvalidSavepoint(sp.0))
    }

    /// `savepoint_rollback(id)` (4.4, 5.4).
    pub(crate) fn savepoint_rollback(&mut self, sp: SpId) -> Result<(), ErrorKind> {
        let mark = self.manual_sp(sp)?;
        self.rollback_to(sp, mark)
    }

    /// `savepoint_commit(id)` (4.4).
    pub(crate) fn savepoint_commit(&mut self, sp: SpId) -> Result<(), ErrorKind> {
        self.manual_sp(sp)?;
        self.release(sp)
    }

    /// `clean_savepoints()` (4.4): ids restart from the next transaction on.
    pub(crate) fn clean_savepoints(&mut self) {
        self.reset_sp_counter = true;
    }

    /// The task's scope ended: an open manual transaction must be rolled back.
    pub(crate) fn scope_end(&mut self) -> bool {
        let must_rollback = self.txn_open && self.begun && !self.lost;
        self.hooks.clear();
        self.blocks.clear();
        self.end_transaction();
        must_rollback
    }
}

#[cfg(test)]
mod tests;
