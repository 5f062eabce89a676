//! Commit positions: where in a PostgreSQL primary's write-ahead log a task's last write ended,
//! kept per alias and task, and the scopes that read at or after a position handed over from
//! another task (docs/semantics.md §12).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use smallvec::SmallVec;

use crate::sync::lock;

/// A position in the write-ahead log of a PostgreSQL primary (an LSN), at or after the end of a
/// commit: a replica that has replayed up to it sees everything that commit wrote.
///
/// A task's position on an alias with read replicas is taken at each of its commits (and after
/// each write outside a block); [`commit_position`](crate::commit_position) gives it, for instance to an on_commit hook
/// that hands a job to a worker, and [`read_at`] makes the worker's replica reads wait for it.
/// It is a plain `Copy` value: `Display` writes PostgreSQL's own notation (`16/B374D848`, as
/// `pg_current_wal_lsn()` shows it) and `FromStr` reads it back, so a job payload can carry it
/// as text.
///
/// ```
/// use sqlx_atomic::CommitPosition;
/// let p: CommitPosition = "16/B374D848".parse().unwrap();
/// assert_eq!(p.to_string(), "16/B374D848");
/// assert_eq!(p.lsn(), 0x16_B374_D848);
/// assert!(p < "17/0".parse().unwrap());
/// assert!("16-B374".parse::<CommitPosition>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitPosition(u64);

impl CommitPosition {
    /// The position of the 64-bit LSN `lsn`.
    ///
    /// ```
    /// let p = sqlx_atomic::CommitPosition::from_lsn(0x1_0000_0020);
    /// assert_eq!(p.to_string(), "1/20");
    /// ```
    pub const fn from_lsn(lsn: u64) -> Self {
        CommitPosition(lsn)
    }

    /// The position as a 64-bit LSN (what `pg_wal_lsn_diff(position, '0/0')` gives).
    ///
    /// ```
    /// assert_eq!(sqlx_atomic::CommitPosition::from_lsn(42).lsn(), 42);
    /// ```
    pub const fn lsn(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CommitPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl fmt::Debug for CommitPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitPosition({self})")
    }
}

/// Text that is not a position in PostgreSQL's notation (`X/Y`, two hexadecimal numbers of at
/// most 8 digits).
///
/// ```
/// let e = "nope".parse::<sqlx_atomic::CommitPosition>().unwrap_err();
/// assert!(e.to_string().contains("nope"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPosition(String);

impl fmt::Display for InvalidPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a WAL position (expected `X/Y` in hexadecimal, as `16/B374D848`)",
            self.0
        )
    }
}

impl std::error::Error for InvalidPosition {}

impl FromStr for CommitPosition {
    type Err = InvalidPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidPosition(s.chars().take(40).collect());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let half = |h: &str| {
            if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u32::from_str_radix(h, 16).ok()
        };
        let (hi, lo) = (half(hi).ok_or_else(bad)?, half(lo).ok_or_else(bad)?);
        Ok(CommitPosition((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// Parses PostgreSQL's text of an LSN, as the position queries return it.
#[cfg(feature = "postgres")]
pub(crate) fn parse_lsn(text: &str) -> Result<u64, sqlx::Error> {
    text.parse::<CommitPosition>()
        .map(CommitPosition::lsn)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// Whose position an entry is: a tokio task, or the thread of a `block_on` (whose future is no
/// task, and never leaves its thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TaskKey {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

fn current_task() -> TaskKey {
    match tokio::task::try_id() {
        Some(id) => TaskKey::Task(id),
        None => TaskKey::Thread(std::thread::current().id()),
    }
}

/// Above this many entries, recording a position first drops those every replica has replayed.
const PRUNE_AT: usize = 1024;
/// Above this many entries after pruning (replicas down or far behind), every entry is folded into
/// the floor that all tasks wait for: the table stays bounded, and waiting longer is never wrong.
const FOLD_AT: usize = 16 * 1024;

/// The positions of the tasks that wrote on one alias. A task's context does not outlive its
/// outermost block, so the table is keyed by the task itself; an entry of a task that has ended
/// stays until the replicas have replayed it (or it is folded into the floor), which is harmless:
/// a task that gets a reused id waits for a position it did not need, never less.
#[derive(Default)]
pub(crate) struct Positions {
    by_task: Mutex<Table>,
    /// `by_task.len()`, read without the lock: reads on an alias nobody wrote on take no lock.
    held: AtomicUsize,
    /// Every task's reads wait for at least this position.
    floor: AtomicU64,
}

/// The positions by task, and the size at which the next record prunes them.
#[derive(Default)]
struct Table {
    map: HashMap<TaskKey, u64>,
    /// Pruning doubles this past what it leaves, so that pruning stays amortised when the
    /// replicas are behind and little can be dropped.
    prune_at: usize,
}

/// A position that is not known (it could not be read after a write): the task's reads go to the
/// primary, and the first of them reads the primary's position in its place.
pub(crate) const UNKNOWN: u64 = u64::MAX;

impl Positions {
    /// Records `lsn` as the current task's position; `replayed` gives the lowest position every
    /// replica is known to have replayed, for pruning.
    pub(crate) fn record(&self, lsn: u64, replayed: impl FnOnce() -> u64) {
        let mut table = lock(&self.by_task);
        let Table { map, prune_at } = &mut *table;
        let entry = map.entry(current_task()).or_insert(0);
        *entry = (*entry).max(lsn);
        if map.len() > (*prune_at).max(PRUNE_AT) {
            let replayed = replayed();
            map.retain(|_, p| *p > replayed);
            if map.len() > FOLD_AT {
                // Unknown positions stay their tasks' own: folded, they would send every task's
                // reads to the primary for good.
                let highest = map.values().copied().filter(|&p| p != UNKNOWN).max();
                self.floor
                    .fetch_max(highest.unwrap_or(0), Ordering::Relaxed);
                map.retain(|_, p| *p == UNKNOWN);
            }
            *prune_at = 2 * map.len();
        }
        self.held.store(map.len(), Ordering::Relaxed);
    }

    /// Replaces the current task's unknown position with `lsn`, read on the primary after the
    /// unknown one was taken.
    pub(crate) fn resolve(&self, lsn: u64) {
        if let Some(p) = lock(&self.by_task).map.get_mut(&current_task())
            && *p == UNKNOWN
        {
            *p = lsn;
        }
    }

    /// The position the current task's reads must wait for (0: none).
    pub(crate) fn own(&self) -> u64 {
        let floor = self.floor.load(Ordering::Relaxed);
        if self.held.load(Ordering::Relaxed) == 0 {
            return floor;
        }
        let own = lock(&self.by_task).map.get(&current_task()).copied();
        own.unwrap_or(0).max(floor)
    }
}

tokio::task_local! {
    static READ_AT: ReadAtSet;
}

/// The positions the reads of a [`read_at`] scope wait for, by alias.
#[derive(Clone, Default)]
struct ReadAtSet(SmallVec<[(Arc<str>, u64); 2]>);

/// The position the reads on `alias` of the current [`read_at`] scope wait for (0: none).
pub(crate) fn read_at_position(alias: &str) -> u64 {
    READ_AT
        .try_with(|set| {
            set.0
                .iter()
                .filter(|(a, _)| &**a == alias)
                .map(|&(_, p)| p)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Reads at or after a position: the replica reads of the future given to [`ReadAt::run`] wait
/// until the replica has replayed `position`, as the committing task's own reads do; `None` adds
/// nothing, so a job that may or may not carry a position is read the same way. The alias is
/// `"default"` unless [`ReadAt::using`] names another; scopes nest, and a read waits for the
/// highest position given for its alias.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// # sqlx_atomic::Databases::new().add("default", sqlx_atomic::Database::connect_lazy("sqlite::memory:")?).install()?;
/// use sqlx_atomic::{read_at, CommitPosition};
/// // A worker, given a job that carries the position of the commit that made it:
/// let position: Option<CommitPosition> = Some("0/16B3748".parse().unwrap());
/// let n: i64 = read_at(position)
///     .using("default")
///     .run(sqlx::query_scalar("SELECT 41 + 1").fetch_one(sqlx_atomic::sqlite("default")))
///     .await?;
/// assert_eq!(n, 42);
/// # Ok(()) }
/// ```
pub fn read_at(position: impl Into<Option<CommitPosition>>) -> ReadAt {
    ReadAt {
        alias: Cow::Borrowed("default"),
        position: position.into(),
    }
}

/// A scope whose replica reads wait for a position; see [`read_at`].
#[derive(Debug, Clone)]
#[must_use = "a ReadAt does nothing until `run` is awaited"]
pub struct ReadAt {
    alias: Cow<'static, str>,
    position: Option<CommitPosition>,
}

impl ReadAt {
    /// The alias whose replica reads wait (default `"default"`).
    ///
    /// ```
    /// let scope = sqlx_atomic::read_at(None).using("reports");
    /// # let _ = scope;
    /// ```
    pub fn using(mut self, alias: impl Into<Cow<'static, str>>) -> Self {
        self.alias = alias.into();
        self
    }

    /// Runs `fut` with its replica reads on the alias waiting for the position.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let out = sqlx_atomic::read_at(sqlx_atomic::CommitPosition::from_lsn(1)).run(async { 7 }).await;
    /// assert_eq!(out, 7);
    /// # }
    /// ```
    pub async fn run<F: Future>(self, fut: F) -> F::Output {
        let Some(position) = self.position else {
            return fut.await;
        };
        let mut set = READ_AT.try_with(ReadAtSet::clone).unwrap_or_default();
        set.0.push((Arc::from(&*self.alias), position.0));
        READ_AT.scope(set, fut).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_and_write_postgres_notation() {
        for (text, lsn) in [
            ("0/0", 0u64),
            ("0/16B3748", 0x16B_3748),
            ("16/B374D848", 0x16_B374_D848),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
        ] {
            let p: CommitPosition = text.parse().unwrap();
            assert_eq!(p.lsn(), lsn, "{text}");
            assert_eq!(p.to_string(), text);
        }
        assert_eq!(
            "a/b".parse::<CommitPosition>().unwrap().lsn(),
            0xA_0000_000B
        );
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "1/2/3",
            "x/1",
            "123456789/0",
            "+1/0",
            " 1/0",
        ] {
            assert!(bad.parse::<CommitPosition>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_task_waits_for_its_own_position_and_the_floor() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let positions = Arc::new(Positions::default());
        rt.block_on(async {
            assert_eq!(positions.own(), 0);
            positions.record(10, || 0);
            positions.record(7, || 0);
            assert_eq!(positions.own(), 10, "a position never moves back");
            let other = positions.clone();
            let seen = tokio::spawn(async move {
                let before = other.own();
                other.record(5, || 0);
                (before, other.own())
            });
            assert_eq!(seen.await.unwrap(), (0, 5), "each task has its own");
        });
        // Past the pruning threshold, entries the replicas have replayed are dropped; past the
        // folding one, the rest become a floor for everyone.
        let positions = Arc::new(Positions::default());
        let record = |positions: &Arc<Positions>, lsn: u64, replayed: u64| {
            let p = positions.clone();
            async move {
                tokio::spawn(async move { p.record(lsn, || replayed) })
                    .await
                    .unwrap()
            }
        };
        rt.block_on(async {
            for lsn in 1..=(PRUNE_AT as u64 + 1) {
                record(&positions, lsn, PRUNE_AT as u64).await;
            }
            assert_eq!(positions.held.load(Ordering::Relaxed), 1);
            assert_eq!(positions.own(), 0);
            // With the replicas behind, the table grows to the folding size (pruning at doubling
            // sizes), then folds.
            let mut lsn = 1000;
            while positions.floor.load(Ordering::Relaxed) == 0 {
                lsn += 1;
                record(&positions, lsn, 0).await;
                assert!(lsn < 1000 + 4 * FOLD_AT as u64, "the table folds");
            }
            assert!(
                lsn > 1000 + FOLD_AT as u64 - 1,
                "not before the folding size"
            );
            assert_eq!(positions.held.load(Ordering::Relaxed), 0);
            assert_eq!(positions.own(), lsn);
        });
        // An unknown position is never folded into the floor, and is resolved by its task only.
        let positions = Arc::new(Positions::default());
        rt.block_on(async {
            positions.record(UNKNOWN, || 0);
            let mut lsn = 0;
            while positions.floor.load(Ordering::Relaxed) == 0 {
                lsn += 1;
                record(&positions, lsn, 0).await;
            }
            assert_eq!(positions.floor.load(Ordering::Relaxed), lsn);
            assert_eq!(
                positions.held.load(Ordering::Relaxed),
                1,
                "the unknown one is kept"
            );
            assert_eq!(positions.own(), UNKNOWN);
            let p = positions.clone();
            tokio::spawn(async move { p.resolve(7) }).await.unwrap();
            assert_eq!(positions.own(), UNKNOWN, "another task resolves nothing");
            positions.resolve(lsn + 5);
            assert_eq!(positions.own(), lsn + 5);
            positions.resolve(1);
            assert_eq!(positions.own(), lsn + 5, "a known position stays");
        });
    }
}
