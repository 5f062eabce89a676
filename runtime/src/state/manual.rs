//! The rollback flag, on_commit registration and manual transaction control (docs/semantics.md
//! §2, §4 and §5), on the state of one alias.

use super::{Control, ExitPlan, HookDisposition, Server, SpId, TxState};
use crate::error::ErrorKind;

impl<H> TxState<H> {
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
        if on && self.in_transaction() {
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
        if !self.in_transaction() {
            return Ok(plan);
        }
        plan.ends_transaction = true;
        if self.server == Server::Lost {
            plan.error = Some(ErrorKind::ConnectionLost);
        } else if self.server.broken()
            || self.needs_rollback
            || self.server == Server::Aborted
            || self.fatal.is_some()
        {
            if self.server.begun() {
                plan.stmts.push(Control::Rollback);
            }
            plan.error = Some(match self.fatal.clone().or_else(|| self.doom.clone()) {
                Some(cause) => ErrorKind::RolledBack(cause),
                None if self.server == Server::Aborted => ErrorKind::Aborted,
                None => ErrorKind::Doomed,
            });
            plan.close_connection = self.server.broken();
        } else {
            if self.server.begun() {
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
        if self.in_transaction() {
            if self.server.begun() {
                plan.stmts.push(Control::Rollback);
            }
            plan.close_connection = self.server == Server::Broken;
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
        self.open();
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
        let must_rollback = self.server.begun();
        self.hooks.clear();
        self.blocks.clear();
        self.end_transaction();
        must_rollback
    }
}
