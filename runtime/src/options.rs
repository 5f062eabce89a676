//! Transaction options of an outermost block (isolation level, read-only, SQLite's lock mode,
//! timeout) and the retry policy. What each backend is sent for them is in `backend`.

use std::time::Duration;

/// A transaction isolation level.
///
/// | level | PostgreSQL | MySQL/MariaDB | SQLite |
/// |---|---|---|---|
/// | any | `BEGIN ISOLATION LEVEL …` | `SET TRANSACTION ISOLATION LEVEL …; START TRANSACTION` | accepted: every SQLite transaction is serializable, which the SQL standard allows for any level |
///
/// On PostgreSQL and MySQL/MariaDB the level rides with the BEGIN in one round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isolation {
    /// `READ UNCOMMITTED` (PostgreSQL runs it as `READ COMMITTED`).
    ReadUncommitted,
    /// `READ COMMITTED`.
    ReadCommitted,
    /// `REPEATABLE READ`.
    RepeatableRead,
    /// `SERIALIZABLE`.
    Serializable,
}

/// How SQLite's BEGIN takes its lock.
///
/// `Deferred` (SQLite's default, and ours) takes no lock until the first read or write; a
/// transaction that read and then writes can then fail at once with `SQLITE_BUSY_SNAPSHOT` when
/// another connection wrote in between. `Immediate` takes the write lock at BEGIN, waiting up to
/// the connection's busy timeout, so later writes cannot fail that way: the right mode for
/// read-modify-write transactions. `Exclusive` also keeps readers out (in WAL mode it acts as
/// `Immediate`). PostgreSQL and MySQL/MariaDB refuse the option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// `BEGIN DEFERRED`.
    Deferred,
    /// `BEGIN IMMEDIATE`.
    Immediate,
    /// `BEGIN EXCLUSIVE`.
    Exclusive,
}

/// The options of one transaction, given on its outermost block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TxnOpts {
    pub(crate) isolation: Option<Isolation>,
    pub(crate) read_only: Option<bool>,
    pub(crate) lock: Option<LockMode>,
    pub(crate) timeout: Option<Duration>,
}

impl TxnOpts {
    pub(crate) fn is_empty(&self) -> bool {
        *self == TxnOpts::default()
    }

    /// The first option of a nested block that differs from its transaction's (`self`); an
    /// option the nested block leaves out agrees.
    pub(crate) fn mismatch(&self, nested: &TxnOpts) -> Option<&'static str> {
        self.first_difference(nested, false)
    }

    /// The first option that both `self` and `nested` give, with different values.
    pub(crate) fn conflict(&self, nested: &TxnOpts) -> Option<&'static str> {
        self.first_difference(nested, true)
    }

    /// The first option `nested` gives with another value than `self`'s; with `both`, only
    /// among the options `self` gives too.
    fn first_difference(&self, nested: &TxnOpts, both: bool) -> Option<&'static str> {
        fn differs<T: PartialEq>(outer: Option<T>, inner: Option<T>, both: bool) -> bool {
            inner.is_some() && inner != outer && (!both || outer.is_some())
        }
        if differs(self.isolation, nested.isolation, both) {
            Some("isolation")
        } else if differs(self.read_only, nested.read_only, both) {
            Some("read_only")
        } else if differs(self.lock, nested.lock, both) {
            Some("lock")
        } else if differs(self.timeout, nested.timeout, both) {
            Some("timeout")
        } else {
            None
        }
    }

    /// Fills in the options `self` leaves out from `nested`.
    pub(crate) fn adopt(&mut self, nested: &TxnOpts) {
        self.isolation = self.isolation.or(nested.isolation);
        self.read_only = self.read_only.or(nested.read_only);
        self.lock = self.lock.or(nested.lock);
        self.timeout = self.timeout.or(nested.timeout);
    }
}

/// How often, and how patiently, a block is run again after a conflict (see
/// [`Atomic::retry`](crate::Atomic::retry)).
///
/// The wait before attempt `n + 1` is a random duration between zero and
/// `min(cap, base × 2ⁿ⁻¹)` ("full jitter"), so that transactions that collided do not collide
/// again in step. The defaults are a 2 ms base and a 100 ms cap.
///
/// ```
/// use std::time::Duration;
/// use sqlx_atomic::Retry;
/// let policy = Retry::new(5).backoff(Duration::from_millis(1), Duration::from_millis(50));
/// assert_eq!(policy.retries(), 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    retries: u32,
    base: Duration,
    cap: Duration,
}

impl Retry {
    /// Up to `retries` attempts after the first one.
    pub fn new(retries: u32) -> Self {
        Retry {
            retries,
            base: Duration::from_millis(2),
            cap: Duration::from_millis(100),
        }
    }

    /// The backoff's base (the longest first wait) and cap (the longest wait).
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.base = base;
        self.cap = cap.max(base);
        self
    }

    /// How many attempts may follow the first.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The wait before the attempt that follows attempt `made` (1-based), drawn with `random`.
    pub(crate) fn delay(&self, made: u32, random: u64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << made.saturating_sub(1).min(20))
            .min(self.cap);
        let nanos = ceiling.as_nanos() as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(random % (nanos + 1))
    }
}

impl From<u32> for Retry {
    fn from(retries: u32) -> Self {
        Retry::new(retries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_grows_to_its_cap_and_stays_within_it() {
        let r = Retry::new(10).backoff(Duration::from_millis(2), Duration::from_millis(50));
        for made in 1..=10 {
            let ceiling = Duration::from_millis(2 << (made - 1)).min(Duration::from_millis(50));
            for random in [0, 1, 12345, u64::MAX] {
                assert!(r.delay(made, random) <= ceiling, "attempt {made}");
            }
        }
        assert_eq!(r.delay(3, 0), Duration::ZERO);
    }

    #[test]
    fn a_nested_block_agrees_when_it_repeats_or_omits_an_option() {
        let outer = TxnOpts {
            isolation: Some(Isolation::Serializable),
            ..TxnOpts::default()
        };
        assert_eq!(outer.mismatch(&TxnOpts::default()), None);
        assert_eq!(outer.mismatch(&outer), None);
        let other = TxnOpts {
            isolation: Some(Isolation::ReadCommitted),
            ..TxnOpts::default()
        };
        assert_eq!(outer.mismatch(&other), Some("isolation"));
        let ro = TxnOpts {
            read_only: Some(true),
            ..TxnOpts::default()
        };
        assert_eq!(outer.mismatch(&ro), Some("read_only"));
    }
}
