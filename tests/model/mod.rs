//! A reference model of the library's semantics (docs/semantics.md) as plain Rust, with no I/O.
//! Rules are cited by their number in that document, as in the names of the rule tests
//! (tests/suite/rules.rs, runtime/src/state/tests.rs).
//!
//! A [`Program`] is a tree of operations run by one task starting at top level (autocommit on,
//! no block open on any alias). [`expected`] returns what must hold afterwards: the rows
//! committed on each alias, the on_commit hooks that ran, in order, and what each block returned
//! to its caller.
//!
//! What the model encodes, rule by rule:
//!
//! * Each alias has its own state (6.2): its stack of open blocks, the needs-rollback flag, the
//!   first error behind that flag (if an error set it), the error that made the whole
//!   transaction fatal (if one did), the rows and hooks of its open transaction (each remembered
//!   with the position it was made at, so that rolling back to a savepoint discards exactly what
//!   was done since: 5.4), whether the transaction is read-only, its isolation level, and, on
//!   PostgreSQL, whether the server aborted the transaction (7.2).
//! * 1.1: an outermost block clears needs-rollback and starts a transaction, with the block's
//!   options. 1.2: a nested block gets a savepoint unless `savepoint = false` or needs-rollback
//!   is set.
//! * Transaction options belong to the outermost block of an alias (the programs give them
//!   nowhere else). `read_only(true)` makes every write of the transaction fail with SQLSTATE
//!   25006 on PostgreSQL and MySQL/MariaDB (its INSERTs, and the UPDATEs of a `Conflict`); such
//!   a failure dooms the block like any failed statement (3.2) and, on PostgreSQL, aborts the
//!   transaction (7.2); `read_only(false)` changes nothing. SQLite refuses `read_only` (either
//!   value) before anything is sent: the block returns `Unsupported` at once and its body never
//!   runs. `isolation` matters only to a `Conflict` on PostgreSQL (below); elsewhere the programs
//!   give it to show that it changes nothing for a single task.
//! * 1.3/1.4/2.2: a block fails when its body returns `Err`, panics, is cancelled, or ends with
//!   needs-rollback set (so `set_rollback(true)` then `Ok` fails), or when its transaction is
//!   fatal (below). On failure needs-rollback is cleared; a nested block with a savepoint rolls
//!   back to it (its rows and hooks are discarded, and so is the error behind the flag); one
//!   without discards the hooks registered in it and sets needs-rollback again on the enclosing
//!   block, which keeps the error behind it; the outermost block rolls back everything. An
//!   `Err` or a cancellation is ignored by the enclosing body, which goes on; a panic goes
//!   through every enclosing block (each of them fails) up to the top-level operation, where the
//!   runner catches it and the program goes on.
//! * 3.1: while needs-rollback is set or the transaction is fatal, an `Insert`, a
//!   `FailingStatement` or a `Conflict` is refused and does nothing. 3.2: a statement that fails
//!   inside a block sets needs-rollback, and becomes the error behind it unless one is there
//!   already (the first error wins). Outside any block (of that alias) an insert commits at once
//!   (4.1) and a failing statement does nothing.
//! * 2.1/2.3: `set_rollback(true)` or `set_rollback(false)` sets the flag as asked and clears the
//!   error behind it: the caller decided. A fatal transaction stays fatal.
//! * 5.1–5.6: inside a block a hook is kept; rolling back to a savepoint, or failing without
//!   one, discards the hooks registered in the block; rolling back the transaction discards all;
//!   after the outermost COMMIT the hooks run in registration order; outside any block of its
//!   alias a hook runs at once.
//! * 7.2 (PostgreSQL only): a failing statement also aborts the server transaction. While it is
//!   aborted every statement fails with SQLSTATE 25P02 (an `Insert` then inserts nothing and,
//!   being a failed statement, sets needs-rollback: 3.2), including a SAVEPOINT still owed by an
//!   open block (9.1: savepoints are sent lazily, before the first query inside the block). A
//!   ROLLBACK TO a savepoint that reached the server (necessarily before the error) ends the
//!   abort. An outermost block whose body ends `Ok` with needs-rollback clear but the
//!   transaction still aborted does not commit: it rolls back, nothing of it stays and no hook
//!   runs.
//! * 11.2: a failed control statement (here the owed SAVEPOINT refused by the aborted server)
//!   or a whole-transaction abort by the server (a MariaDB deadlock, below) makes the whole
//!   transaction fatal: every later query of it is refused, every open block of the alias that
//!   exits afterwards fails, nested or outermost, whatever the rollback flag says, no savepoint
//!   is rolled back to, and nothing commits.
//! * Conflicts. A `Conflict` operation meets a real conflict with a second transaction, made on
//!   scratch rows of its own by a connection the runner owns outside the library's pools (the
//!   helper connection). Its statements are queries like the others (3.1, 3.2, 9.1), and the
//!   conflict is a failed statement whose error is a conflict (`Why::Conflict`):
//!   - PostgreSQL (`Clash::Serialization`): the program reads its row (the first statement of a
//!     transaction takes its snapshot), the helper updates the row and commits, and the program
//!     updates it. Under REPEATABLE READ or SERIALIZABLE that update fails with 40001 ("could not
//!     serialize access due to concurrent update"); under READ COMMITTED (the server's default)
//!     or READ UNCOMMITTED (which PostgreSQL runs as READ COMMITTED) it succeeds. Only the
//!     statement fails: the transaction is aborted (7.2) and a savepoint that reached the server
//!     still recovers it, so a nested block with a savepoint catches the conflict (11.2).
//!   - MySQL/MariaDB (`Clash::Deadlock`): the program updates its first row, the helper updates
//!     many rows of its own (so that InnoDB, which rolls back the transaction that modified
//!     fewer rows, picks the program as the victim), then the program's second row, then waits
//!     for the program's first row; once the server shows it waiting, the program updates its
//!     second row: a deadlock, 1213, and InnoDB rolls the program's whole transaction back and
//!     drops its savepoints (11.2: fatal, as above).
//!   - The harness's SQLite aliases never carry one: they begin with `BEGIN IMMEDIATE`, so their
//!     transaction holds the write lock from its first statement and no other connection can
//!     make its snapshot stale (`SQLITE_BUSY_SNAPSHOT` needs a deferred transaction, and a block
//!     cannot ask for one there: it would replace the alias's own begin statement, 11.4); another
//!     connection's lock would only make the BEGIN wait out the busy timeout, which is no
//!     deterministic conflict.
//!
//!   A `Conflict` meets its conflict only on the attempts the program says (see [`Retry`]); on
//!   the others the helper stays away and its statements succeed.
//! * 11.3, `retry` (outermost blocks only): an attempt whose body returned (`Ok` or `Err`; not
//!   a panic, not a cancellation) and that rolled back because a conflict doomed its transaction
//!   (the error that made it fatal, or else the first error behind needs-rollback, is the
//!   conflict) is run again, as a new transaction: the attempt's rows and hooks on its alias are
//!   gone, while what it committed on the other alias stays committed (6.2), and the blocks
//!   nested in it report what they returned like any other block. The library decides by that
//!   error, not by the body's `Err`, whose type it cannot see into: a body that ignored the
//!   conflict and returned an `Err` of its own is run again too. Once `retries` attempts have
//!   followed the first, one more such attempt makes the block return `RetriesExhausted` with
//!   the number of attempts, in place of the body's `Ok` or `Err`. A conflict caught by a
//!   savepoint, or forgotten by `set_rollback` (2.2, 2.3; not in a fatal transaction), dooms no
//!   attempt, and an attempt that rolls back for another error is not run again.
//! * 1.5, 11.1, 7.2, 11.2, what a block returns: its body's `Err` or panic, always, but for
//!   `RetriesExhausted` (above); a body that raises the error of a `Conflict` returns it
//!   (`Raised`). When the body returns `Ok`, the block reports any error that undid its work:
//!   - in a fatal transaction every block, nested or outermost, returns `RolledBack` with the
//!     error that made it fatal;
//!   - otherwise a nested block whose savepoint is rolled back, and an outermost block that rolls
//!     back, return `RolledBack` with the first error behind needs-rollback when an error is
//!     behind it, and the body's `Ok` when none is (the caller asked for the rollback with
//!     `set_rollback`, or a savepoint-less block inside failed by its body's `Err`, panic or
//!     cancellation);
//!   - a nested block without a savepoint that fails returns the body's `Ok`: the flag, and the
//!     error behind it, pass to the enclosing block, which reports them;
//!   - an outermost block that would commit on a transaction PostgreSQL aborted (the flag was
//!     cleared) rolls back and returns `Aborted`;
//!   - a block that commits, or releases its savepoint, returns the body's `Ok`.
//!
//!   An enclosing body ignores a nested block's error, as it ignores any `Err`.

#![allow(dead_code)]

use std::fmt;

/// One of the two aliases of a program; the runner maps them to real aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alias {
    A,
    B,
}

impl Alias {
    pub fn index(self) -> usize {
        match self {
            Alias::A => 0,
            Alias::B => 1,
        }
    }
}

/// How a block's body ends, after its operations ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Returns `Ok(())`.
    Ok,
    /// Returns `Err(..)`; the enclosing body ignores it.
    Err,
    /// `panic!`: the panic goes through every enclosing block.
    Panic,
    /// The block's future is dropped at its next await point; the enclosing body goes on.
    Cancel,
}

/// A transaction isolation level; the runner maps it to `sqlx_atomic::Isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadUncommitted,
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

/// An operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `INSERT INTO t (v) VALUES (value)` on the alias; errors are ignored.
    Insert(Alias, i64),
    /// `INSERT INTO t (v) VALUES (NULL)`: rejected by the server (NOT NULL); the error is ignored.
    FailingStatement(Alias),
    /// `using(alias).set_rollback(flag)`; only generated where a block of the alias is open.
    SetRollback(Alias, bool),
    /// `on_commit(hook).using(alias)`, the hook logging `label`.
    OnCommit(Alias, u32),
    /// A conflict with the runner's helper connection on the scratch rows numbered `row` (see
    /// the module's header and [`Clash`]). Only generated on a server's alias, and kept only
    /// inside a block of its alias ([`Program::normalize`]). With `raise` the body returns the
    /// error of the operation's first failed (or refused) statement at once, as `?` does;
    /// otherwise the error is ignored.
    Conflict { alias: Alias, row: u32, raise: bool },
    /// An atomic block.
    Block(Block),
}

/// `retry` of an outermost block, and on which of its attempts the program's `Conflict`
/// operations meet their conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// `Atomic::retry(retries)`: how many attempts may follow the first.
    pub retries: u32,
    /// The first `conflicts` attempts meet a conflict at each `Conflict` operation; the later
    /// ones run clean. Without `retry`, a block's only attempt meets them.
    pub conflicts: u32,
}

/// `Atomic::new().using(alias).savepoint(savepoint)`, with `.read_only(..)`, `.isolation(..)`
/// and `.retry(..)` when given, `.run(body then exit)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub alias: Alias,
    pub savepoint: bool,
    /// Only on a block that is the outermost of its alias (see [`Program::normalize`]).
    pub read_only: Option<bool>,
    /// Only on a block that is the outermost of its alias (see [`Program::normalize`]).
    pub isolation: Option<Isolation>,
    /// Only on a block that is the outermost of its alias (see [`Program::normalize`]).
    pub retry: Option<Retry>,
    pub body: Vec<Op>,
    pub exit: Exit,
}

impl Block {
    /// A block without transaction options.
    pub fn new(alias: Alias, savepoint: bool, exit: Exit, body: Vec<Op>) -> Block {
        Block {
            alias,
            savepoint,
            read_only: None,
            isolation: None,
            retry: None,
            body,
            exit,
        }
    }
}

/// A top-level program: operations run in autocommit, outside any block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Program {
    pub ops: Vec<Op>,
}

/// What the model predicts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expected {
    /// Committed rows per alias (index by [`Alias::index`]), sorted.
    pub rows: [Vec<i64>; 2],
    /// Labels of the hooks that ran, in order.
    pub hooks: Vec<u32>,
    /// What each block returned to its caller, in the order the blocks ended.
    pub results: Vec<BlockResult>,
    /// What the program exercised (not part of the prediction).
    pub stats: Stats,
}

/// The first error behind a rollback that a block reports (`ErrorKind::RolledBack`), or the
/// error a body raised, as the model knows it; the runner recognizes it by its code on each
/// backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The `FailingStatement`: NOT NULL violated.
    NotNull,
    /// A statement, or an owed SAVEPOINT, sent to a transaction PostgreSQL had aborted (25P02).
    InAbortedTransaction,
    /// A write in a read-only transaction (25006).
    ReadOnly,
    /// The conflict of a `Conflict` operation: PostgreSQL's serialization failure (40001), or
    /// MySQL/MariaDB's deadlock (1213, SQLSTATE 40001).
    Conflict,
    /// A query the library refused before sending it (`ErrorKind::Doomed`, 3.1); only ever
    /// raised by a body, never the cause of a rollback.
    Refused,
}

/// What a block returned to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockResult {
    /// `Ok`: the body's own.
    Ok,
    /// The body's own `Err`.
    Err,
    /// The body's own `Err`: the error of a `Conflict` operation's statement, raised as is.
    Raised(Why),
    /// `ErrorKind::RolledBack` with this first error, although the body returned `Ok`.
    RolledBack(Why),
    /// `ErrorKind::Aborted`: the body returned `Ok` on a transaction PostgreSQL had aborted.
    Aborted,
    /// `ErrorKind::Unsupported`: SQLite refused the block's `read_only` before its body ran.
    Unsupported,
    /// `ErrorKind::RetriesExhausted` after this many attempts, each doomed by a conflict.
    RetriesExhausted(u32),
    Panicked,
    Cancelled,
}

/// Counts of the paths a program took through the model, to report coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub blocks: u64,
    pub max_depth: u64,
    pub commits: u64,
    pub rollbacks: u64,
    pub savepoint_rollbacks: u64,
    /// Failures of savepoint-less nested blocks passed up (1.4).
    pub doomed_parents: u64,
    /// Queries refused while needs-rollback was set or the transaction was fatal (3.1).
    pub refused: u64,
    pub panics: u64,
    pub cancels: u64,
    /// Blocks whose body returned `Ok` and that returned `RolledBack` (11.1, 11.2).
    pub rolled_back: u64,
    /// Outermost blocks that ended `Ok` on an aborted PostgreSQL transaction (7.2).
    pub aborted_commits: u64,
    /// Aborts ended by a ROLLBACK TO (7.2).
    pub aborts_cleared: u64,
    /// Owed SAVEPOINTs refused by an aborted server: the transaction became fatal (11.2).
    pub broken: u64,
    /// Hooks discarded by a rollback (5.4, 5.5).
    pub hooks_discarded: u64,
    /// Read-only transactions started.
    pub read_only: u64,
    /// Writes refused by a read-only transaction.
    pub read_only_failures: u64,
    /// Blocks refused with `Unsupported` (`read_only` on SQLite).
    pub unsupported: u64,
    /// Transactions started with an isolation level.
    pub isolation: u64,
    /// `Conflict` operations that met their conflict.
    pub conflicts: u64,
    /// `Conflict` operations whose statements all succeeded: a clean attempt, or PostgreSQL
    /// under READ COMMITTED.
    pub conflicts_missed: u64,
    /// Conflicts that rolled back the whole transaction (MariaDB's deadlocks, 11.2).
    pub whole_aborts: u64,
    /// Bodies that raised an operation's error.
    pub raised: u64,
    /// Attempts run again after a conflict (11.3).
    pub retries: u64,
    /// Retried blocks that gave up (`RetriesExhausted`).
    pub retries_exhausted: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Stats) {
        self.blocks += o.blocks;
        self.max_depth = self.max_depth.max(o.max_depth);
        self.commits += o.commits;
        self.rollbacks += o.rollbacks;
        self.savepoint_rollbacks += o.savepoint_rollbacks;
        self.doomed_parents += o.doomed_parents;
        self.refused += o.refused;
        self.panics += o.panics;
        self.cancels += o.cancels;
        self.rolled_back += o.rolled_back;
        self.aborted_commits += o.aborted_commits;
        self.aborts_cleared += o.aborts_cleared;
        self.broken += o.broken;
        self.hooks_discarded += o.hooks_discarded;
        self.read_only += o.read_only;
        self.read_only_failures += o.read_only_failures;
        self.unsupported += o.unsupported;
        self.isolation += o.isolation;
        self.conflicts += o.conflicts;
        self.conflicts_missed += o.conflicts_missed;
        self.whole_aborts += o.whole_aborts;
        self.raised += o.raised;
        self.retries += o.retries;
        self.retries_exhausted += o.retries_exhausted;
    }
}

/// How the helper connection makes a `Conflict` operation fail on a server (see the module's
/// header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clash {
    /// PostgreSQL: a serialization failure of one statement, met only under REPEATABLE READ or
    /// SERIALIZABLE.
    Serialization,
    /// MySQL/MariaDB: a deadlock whose victim is the program's transaction, rolled back whole.
    Deadlock,
}

/// The backend behind an alias, as far as the model cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavor {
    /// A failing statement aborts the whole server transaction (PostgreSQL).
    pub aborts_on_error: bool,
    /// The backend has read-only transactions (SQLite refuses the option).
    pub read_only: bool,
    /// How a `Conflict` operation fails; `None` where the programs carry none (SQLite).
    pub clash: Option<Clash>,
}

impl Flavor {
    pub const SQLITE: Flavor = Flavor {
        aborts_on_error: false,
        read_only: false,
        clash: None,
    };
    pub const POSTGRES: Flavor = Flavor {
        aborts_on_error: true,
        read_only: true,
        clash: Some(Clash::Serialization),
    };
    pub const MYSQL: Flavor = Flavor {
        aborts_on_error: false,
        read_only: true,
        clash: Some(Clash::Deadlock),
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sp {
    /// The block made no savepoint.
    None,
    /// The block's savepoint is owed: no query ran since the block opened (9.1).
    Owed,
    /// The SAVEPOINT reached the server.
    Sent,
}

#[derive(Debug)]
struct Frame {
    sp: Sp,
    rows_mark: usize,
    hooks_mark: usize,
}

#[derive(Debug)]
struct AliasState {
    blocks: Vec<Frame>,
    needs_rollback: bool,
    /// The first error behind `needs_rollback`, when an error (not `set_rollback`) set it.
    doom: Option<Why>,
    /// The error that made the whole transaction fatal: a failed control statement, or the
    /// server's rollback of the whole transaction.
    fatal: Option<Why>,
    /// Rows of the open transaction, in order.
    rows: Vec<i64>,
    /// Hooks of the open transaction, in registration order.
    hooks: Vec<u32>,
    /// The open transaction is read-only.
    read_only: bool,
    /// The isolation level the open transaction asked for.
    isolation: Option<Isolation>,
    /// The `Conflict` operations of the open transaction meet their conflict: the attempt is one
    /// of its block's first `conflicts` (see [`Retry`]).
    clashes: bool,
    /// The server aborted the transaction (PostgreSQL).
    aborted: bool,
}

impl Default for AliasState {
    fn default() -> Self {
        AliasState {
            blocks: Vec::new(),
            needs_rollback: false,
            doom: None,
            fatal: None,
            rows: Vec::new(),
            hooks: Vec::new(),
            read_only: false,
            isolation: None,
            clashes: true,
            aborted: false,
        }
    }
}

struct Model {
    flavors: [Flavor; 2],
    aliases: [AliasState; 2],
    committed: [Vec<i64>; 2],
    hooks_ran: Vec<u32>,
    depth: u64,
    results: Vec<BlockResult>,
    stats: Stats,
}

/// How a body ended, seen from the enclosing body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// The body (or block) ended, successfully or not: the enclosing body goes on.
    Continue,
    /// A panic is unwinding.
    Panic,
    /// The body returns this error of an operation at once (`?`).
    Raise(Why),
}

/// What became of a statement sent inside a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Refused before it was sent (3.1).
    Refused,
    /// Failed with this error (3.2).
    Failed(Why),
    Done,
}

/// How one attempt of a block ended.
struct Attempt {
    /// For the enclosing body.
    flow: Flow,
    /// What the block returns if this attempt is its last.
    result: BlockResult,
    /// The attempt rolled back because a conflict doomed its transaction, and its body
    /// returned: `retry` runs it again (11.3).
    conflicted: bool,
}

impl Model {
    fn query(&mut self, alias: Alias, fails: bool, value: Option<i64>) {
        let i = alias.index();
        if self.aliases[i].blocks.is_empty() {
            // 4.1: autocommit.
            if !fails && let Some(v) = value {
                self.committed[i].push(v);
            }
            return;
        }
        let sent = self.statement(i, true, fails.then_some(Why::NotNull));
        if sent == Sent::Done
            && let Some(v) = value
        {
            self.aliases[i].rows.push(v);
        }
    }

    /// A statement of alias `i` inside a block of it: refused (3.1), or sent after the owed
    /// SAVEPOINTs (9.1); it fails with `error` unless the server refuses it first (an aborted
    /// transaction, 7.2; a write, `writes`, in a read-only transaction).
    fn statement(&mut self, i: usize, writes: bool, error: Option<Why>) -> Sent {
        let aborts = self.flavors[i].aborts_on_error;
        let st = &mut self.aliases[i];
        debug_assert!(!st.blocks.is_empty(), "a statement in autocommit");
        if st.needs_rollback || st.fatal.is_some() {
            // 3.1: refused, nothing sent.
            self.stats.refused += 1;
            return Sent::Refused;
        }
        // 9.1: the owed SAVEPOINTs go first.
        for f in st.blocks.iter_mut() {
            if f.sp == Sp::Owed {
                if st.aborted {
                    // 11.2: a failed control statement.
                    self.stats.broken += 1;
                    st.fatal.get_or_insert(Why::InAbortedTransaction);
                    st.needs_rollback = true;
                    return Sent::Failed(Why::InAbortedTransaction);
                }
                f.sp = Sp::Sent;
            }
        }
        let error = if st.aborted {
            Some(Why::InAbortedTransaction) // 7.2
        } else if writes && st.read_only {
            self.stats.read_only_failures += 1;
            Some(Why::ReadOnly)
        } else {
            error
        };
        let Some(why) = error else {
            return Sent::Done;
        };
        // 3.2; on PostgreSQL the server aborts the transaction (7.2).
        st.needs_rollback = true;
        st.doom.get_or_insert(why);
        if aborts {
            st.aborted = true;
        }
        Sent::Failed(why)
    }

    /// A `Conflict` operation on `alias`: its statements, and the conflict when the attempt
    /// meets one. Returns what became of the first statement that did not succeed, if one did
    /// not.
    fn conflict(&mut self, alias: Alias) -> Sent {
        let i = alias.index();
        let clash = self.flavors[i]
            .clash
            .expect("a Conflict operation runs on a server's alias");
        if self.aliases[i].blocks.is_empty() {
            // Dropped by `Program::normalize`; in autocommit nothing would wait for the helper.
            return Sent::Done;
        }
        let clashes = self.aliases[i].clashes;
        let sent = match clash {
            Clash::Serialization => {
                // The SELECT that takes the snapshot (a read: a read-only transaction allows it).
                match self.statement(i, false, None) {
                    Sent::Done => {}
                    other => return other,
                }
                // The helper's committed UPDATE is seen by a snapshot older than it.
                let snapshot = matches!(
                    self.aliases[i].isolation,
                    Some(Isolation::RepeatableRead | Isolation::Serializable)
                );
                self.statement(i, true, (clashes && snapshot).then_some(Why::Conflict))
            }
            Clash::Deadlock => {
                // The UPDATE of the program's first row, which the helper will wait for.
                match self.statement(i, true, None) {
                    Sent::Done => {}
                    other => return other,
                }
                let sent = self.statement(i, true, clashes.then_some(Why::Conflict));
                if sent == Sent::Failed(Why::Conflict) {
                    // 11.2: InnoDB rolled the whole transaction back.
                    self.stats.whole_aborts += 1;
                    self.aliases[i].fatal.get_or_insert(Why::Conflict);
                }
                sent
            }
        };
        match sent {
            Sent::Failed(Why::Conflict) => self.stats.conflicts += 1,
            Sent::Done => self.stats.conflicts_missed += 1,
            _ => {}
        }
        sent
    }

    fn on_commit(&mut self, alias: Alias, label: u32) {
        let st = &mut self.aliases[alias.index()];
        if st.blocks.is_empty() {
            self.hooks_ran.push(label); // 5.2
        } else {
            st.hooks.push(label); // 5.1
        }
    }

    fn set_rollback(&mut self, alias: Alias, flag: bool) {
        let st = &mut self.aliases[alias.index()];
        if !st.blocks.is_empty() {
            // 2.1, 2.3: the caller decided; no error is behind the flag any more.
            st.needs_rollback = flag;
            st.doom = None;
        }
    }

    fn ops(&mut self, ops: &[Op]) -> Flow {
        for op in ops {
            match op {
                Op::Insert(a, v) => self.query(*a, false, Some(*v)),
                Op::FailingStatement(a) => self.query(*a, true, None),
                Op::SetRollback(a, f) => self.set_rollback(*a, *f),
                Op::OnCommit(a, l) => self.on_commit(*a, *l),
                Op::Conflict { alias, raise, .. } => match self.conflict(*alias) {
                    Sent::Done => {}
                    Sent::Refused if *raise => return Flow::Raise(Why::Refused),
                    Sent::Failed(why) if *raise => return Flow::Raise(why),
                    // Ignored, like any statement's error.
                    Sent::Refused | Sent::Failed(_) => {}
                },
                Op::Block(b) => {
                    if self.block(b) == Flow::Panic {
                        return Flow::Panic;
                    }
                }
            }
        }
        Flow::Continue
    }

    fn block(&mut self, b: &Block) -> Flow {
        let i = b.alias.index();
        let outermost = self.aliases[i].blocks.is_empty();
        debug_assert!(
            outermost || (b.read_only.is_none() && b.isolation.is_none() && b.retry.is_none()),
            "options on a nested block"
        );
        if outermost && b.read_only.is_some() && !self.flavors[i].read_only {
            // Refused before anything is sent; the body never runs.
            self.stats.unsupported += 1;
            self.results.push(BlockResult::Unsupported);
            return Flow::Continue;
        }
        let mut attempts = 1;
        let (flow, result) = loop {
            // Without `retry` the only attempt meets the conflicts.
            let clashes = b.retry.is_none_or(|r| attempts <= r.conflicts);
            let attempt = self.attempt(b, outermost, clashes);
            match b.retry {
                // 11.3: a new transaction.
                Some(r) if attempt.conflicted && attempts <= r.retries => {
                    self.stats.retries += 1;
                    attempts += 1;
                }
                Some(_) if attempt.conflicted => {
                    self.stats.retries_exhausted += 1;
                    break (attempt.flow, BlockResult::RetriesExhausted(attempts));
                }
                _ => break (attempt.flow, attempt.result),
            }
        };
        if matches!(result, BlockResult::RolledBack(_)) {
            self.stats.rolled_back += 1;
        }
        self.results.push(result);
        flow
    }

    /// Runs the block's body once; `clashes`: its `Conflict` operations meet their conflict
    /// (only an outermost block decides that, for its transaction).
    fn attempt(&mut self, b: &Block, outermost: bool, clashes: bool) -> Attempt {
        let i = b.alias.index();
        self.depth += 1;
        self.stats.blocks += 1;
        self.stats.max_depth = self.stats.max_depth.max(self.depth);
        {
            let st = &mut self.aliases[i];
            let sp = if outermost {
                // 1.1: a new transaction, with the block's options.
                *st = AliasState::default();
                st.read_only = b.read_only == Some(true);
                st.isolation = b.isolation;
                st.clashes = clashes;
                self.stats.read_only += u64::from(st.read_only);
                self.stats.isolation += u64::from(b.isolation.is_some());
                Sp::None
            } else if b.savepoint && !st.needs_rollback {
                Sp::Owed // 1.2, 9.1
            } else {
                Sp::None
            };
            st.blocks.push(Frame {
                sp,
                rows_mark: st.rows.len(),
                hooks_mark: st.hooks.len(),
            });
        }
        let flow = self.ops(&b.body);
        self.depth -= 1;
        let (exit, raised) = match flow {
            Flow::Panic => (Exit::Panic, None),
            Flow::Raise(why) => {
                self.stats.raised += 1;
                (Exit::Err, Some(why))
            }
            Flow::Continue => (b.exit, None),
        };
        match exit {
            Exit::Panic => self.stats.panics += 1,
            Exit::Cancel => self.stats.cancels += 1,
            _ => {}
        }
        let st = &mut self.aliases[i];
        let frame = st.blocks.pop().expect("the block's frame");
        // 1.3, 1.4, 2.2, 11.2
        let failed = exit != Exit::Ok || st.needs_rollback || st.fatal.is_some();
        // The error the block returns instead of its body's `Ok` (11.1, 7.2, 11.2).
        let mut error = None;
        let mut conflicted = false;
        if !st.blocks.is_empty() {
            if failed {
                st.needs_rollback = false;
                if frame.sp != Sp::None && st.fatal.is_none() {
                    // Rolled back to the savepoint (5.4), and with it the error behind the flag.
                    self.stats.savepoint_rollbacks += 1;
                    self.stats.hooks_discarded += (st.hooks.len() - frame.hooks_mark) as u64;
                    st.rows.truncate(frame.rows_mark);
                    st.hooks.truncate(frame.hooks_mark);
                    if frame.sp == Sp::Sent && st.aborted {
                        self.stats.aborts_cleared += 1;
                        st.aborted = false;
                    }
                    error = st.doom.take().map(BlockResult::RolledBack);
                } else {
                    // The flag, and the error behind it, pass to the enclosing block (1.4); the
                    // block's hooks go.
                    self.stats.doomed_parents += 1;
                    self.stats.hooks_discarded += (st.hooks.len() - frame.hooks_mark) as u64;
                    st.hooks.truncate(frame.hooks_mark);
                    st.needs_rollback = true;
                    error = st.fatal.map(BlockResult::RolledBack);
                }
            }
        } else {
            if !failed && !st.aborted {
                // 1.3, 5.6
                self.stats.commits += 1;
                self.committed[i].append(&mut st.rows);
                self.hooks_ran.append(&mut st.hooks);
            } else {
                self.stats.rollbacks += 1;
                self.stats.hooks_discarded += st.hooks.len() as u64;
                if failed {
                    let doomed_by = st.fatal.or(st.doom);
                    error = doomed_by.map(BlockResult::RolledBack);
                    // 11.3: a panic or a cancellation leaves the block for good.
                    conflicted =
                        matches!(exit, Exit::Ok | Exit::Err) && doomed_by == Some(Why::Conflict);
                } else {
                    // 7.2: COMMIT would roll back.
                    self.stats.aborted_commits += 1;
                    error = Some(BlockResult::Aborted);
                }
            }
            // 5.5, 7.2: anything left was rolled back.
            *st = AliasState::default();
        }
        let result = match exit {
            Exit::Ok => error.unwrap_or(BlockResult::Ok),
            Exit::Err => raised.map_or(BlockResult::Err, BlockResult::Raised),
            Exit::Panic => BlockResult::Panicked,
            Exit::Cancel => BlockResult::Cancelled,
        };
        Attempt {
            flow: match exit {
                Exit::Panic => Flow::Panic,
                _ => Flow::Continue,
            },
            result,
            conflicted,
        }
    }
}

/// What must hold after `program` ran at top level, alias A on `a` and alias B on `b`.
pub fn expected(program: &Program, a: Flavor, b: Flavor) -> Expected {
    let mut m = Model {
        flavors: [a, b],
        aliases: Default::default(),
        committed: Default::default(),
        hooks_ran: Vec::new(),
        depth: 0,
        results: Vec::new(),
        stats: Stats::default(),
    };
    for op in &program.ops {
        // A panic stops at the top-level operation; the program goes on.
        let _ = m.ops(std::slice::from_ref(op));
    }
    let [mut ra, mut rb] = m.committed;
    ra.sort_unstable();
    rb.sort_unstable();
    Expected {
        rows: [ra, rb],
        hooks: m.hooks_ran,
        results: m.results,
        stats: m.stats,
    }
}

impl Program {
    /// Number of `Insert` operations (their values are `0..n`, see [`Program::normalize`]).
    pub fn inserts(&self) -> i64 {
        self.count(|op| matches!(op, Op::Insert(..)))
    }

    /// Number of `Conflict` operations (their rows are `0..n`, see [`Program::normalize`]).
    pub fn conflicts(&self) -> i64 {
        self.count(|op| matches!(op, Op::Conflict { .. }))
    }

    fn count(&self, counted: impl Fn(&Op) -> bool + Copy) -> i64 {
        fn count(ops: &[Op], counted: impl Fn(&Op) -> bool + Copy) -> i64 {
            ops.iter()
                .map(|op| match op {
                    Op::Block(b) => count(&b.body, counted),
                    op => i64::from(counted(op)),
                })
                .sum()
        }
        count(&self.ops, counted)
    }

    /// Numbers the inserts' values, the hooks' labels and the conflicts' rows in program order
    /// from 0, gives every `SetRollback` an alias with an open block (the innermost block's
    /// alias when its own has none), and takes the transaction options and `retry` off every
    /// block nested in a block of its own alias; a `SetRollback` at top level is dropped, and so
    /// is a `Conflict` outside any block of its alias (in autocommit its first statement
    /// commits at once and nothing makes the helper wait).
    pub fn normalize(mut self) -> Program {
        #[derive(Default)]
        struct Next {
            value: i64,
            hook: u32,
            row: u32,
        }
        fn walk(ops: &mut Vec<Op>, open: &mut Vec<Alias>, next: &mut Next) {
            ops.retain(|op| match op {
                Op::SetRollback(..) => !open.is_empty(),
                Op::Conflict { alias, .. } => open.contains(alias),
                _ => true,
            });
            for op in ops.iter_mut() {
                match op {
                    Op::Insert(_, v) => {
                        *v = next.value;
                        next.value += 1;
                    }
                    Op::OnCommit(_, l) => {
                        *l = next.hook;
                        next.hook += 1;
                    }
                    Op::Conflict { row, .. } => {
                        *row = next.row;
                        next.row += 1;
                    }
                    Op::SetRollback(a, _) => {
                        if !open.contains(a) {
                            *a = *open.last().expect("inside a block");
                        }
                    }
                    Op::FailingStatement(_) => {}
                    Op::Block(b) => {
                        if open.contains(&b.alias) {
                            b.read_only = None;
                            b.isolation = None;
                            b.retry = None;
                        }
                        open.push(b.alias);
                        walk(&mut b.body, open, next);
                        open.pop();
                    }
                }
            }
        }
        walk(&mut self.ops, &mut Vec::new(), &mut Next::default());
        self
    }
}

impl fmt::Display for Alias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Alias::A => "A",
            Alias::B => "B",
        })
    }
}

fn fmt_ops(f: &mut fmt::Formatter<'_>, ops: &[Op], indent: usize) -> fmt::Result {
    for op in ops {
        let pad = "    ".repeat(indent);
        match op {
            Op::Insert(a, v) => writeln!(f, "{pad}insert {a} {v}")?,
            Op::FailingStatement(a) => writeln!(f, "{pad}failing statement {a}")?,
            Op::SetRollback(a, b) => writeln!(f, "{pad}set_rollback {a} {b}")?,
            Op::OnCommit(a, l) => writeln!(f, "{pad}on_commit {a} h{l}")?,
            Op::Conflict { alias, row, raise } => {
                let raise = if *raise { " raise" } else { "" };
                writeln!(f, "{pad}conflict {alias} r{row}{raise}")?
            }
            Op::Block(b) => {
                write!(f, "{pad}block {}", b.alias)?;
                if let Some(ro) = b.read_only {
                    write!(f, " read_only={ro}")?;
                }
                if let Some(level) = b.isolation {
                    write!(f, " isolation={level:?}")?;
                }
                if let Some(r) = b.retry {
                    write!(f, " retry={} conflicts={}", r.retries, r.conflicts)?;
                }
                if !b.savepoint {
                    write!(f, " savepoint=false")?;
                }
                writeln!(f, " {{")?;
                fmt_ops(f, &b.body, indent + 1)?;
                writeln!(f, "{pad}}} exit {:?}", b.exit)?;
            }
        }
    }
    Ok(())
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_ops(f, &self.ops, 0)
    }
}
