//! What the state machine hands its callers: the statements to send, where a query goes, the
//! plan of an exit, and the options of a block.

use smallvec::SmallVec;

use crate::classify::Cause;
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
    pub(super) fn nothing() -> Self {
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
