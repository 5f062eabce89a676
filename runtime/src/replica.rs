//! Read replicas of a PostgreSQL alias (docs/semantics.md §12): configuring them, where a
//! statement outside any block goes, waiting for a replica to replay a position, leaving out a
//! replica that is down or lagging, and the task's position.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::alias::AliasCtx;
use crate::backend::AnyConn;
use crate::config::Database;
use crate::error::Error;
use crate::position::{CommitPosition, UNKNOWN, read_at_position};
use crate::reads::is_read;
use crate::registry::{AliasEntry, lookup};
use crate::replica_set::{DOWN_RETRY, LAG_RETRY, Replica, ReplicaSet, now_ms};
use crate::wal::{REPLAYED, Then, scalar_lsn};

/// The first and the longest pause between two reads of a replica's replay position.
const FIRST_POLL: Duration = Duration::from_micros(500);
const LONGEST_POLL: Duration = Duration::from_millis(16);

impl Database {
    /// Adds a read replica of this database (repeatable; PostgreSQL only): a hot standby that
    /// replays the primary's WAL, given as any [`Database`] of its own (its pool, its size). The
    /// URL parameter `atomic_replica=<percent-encoded URL>` does the same from the primary's URL
    /// ([`PoolConfig`](crate::PoolConfig)), so `DATABASE_URL` alone can configure replicas.
    ///
    /// Statements outside any block of the alias that read (as their SQL text shows:
    /// docs/semantics.md §12.1) then go to a replica, round-robin; everything else, and everything
    /// inside a block, goes to the primary. After the task commits (or writes outside a block),
    /// its replica reads wait until the replica has replayed that commit, up to
    /// [`replica_wait`](Self::replica_wait), and otherwise read from the primary. A replica that
    /// gives no connection in time is left out for a while, with a log line.
    /// [`Handle::primary`](crate::Handle::primary) reads from the primary.
    ///
    /// Checked by [`Databases::install`](crate::Databases::install): a primary or a replica of
    /// another backend, a replica in transaction-pooling mode or with replicas of its own, and
    /// replicas on an alias in transaction-pooling mode are an [`ErrorKind::InvalidConfig`]
    /// naming the alias.
    ///
    /// [`ErrorKind::InvalidConfig`]: crate::ErrorKind::InvalidConfig
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
    /// use sqlx_atomic::Database;
    /// let db = Database::connect_lazy("postgres://app:secret@db-primary/app")?
    ///     .read_replica(Database::connect_lazy("postgres://app:secret@db-replica-1/app")?)
    ///     .read_replica(Database::connect_lazy("postgres://app:secret@db-replica-2/app")?);
    /// let shown = format!("{db:?}");
    /// assert!(shown.contains("db-replica-2") && !shown.contains("secret"));
    /// # Ok(()) }
    /// ```
    pub fn read_replica(mut self, replica: Database) -> Self {
        self.replicas.push(replica);
        self
    }

    /// The longest a replica read waits for a replica to have replayed what the task needs
    /// (and for one of its connections) before it reads from the primary instead: 100 ms unless
    /// set here or by the URL parameter `atomic_replica_wait=` (`250ms`, `1s`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
    /// use std::time::Duration;
    /// use sqlx_atomic::Database;
    /// let db = Database::connect_lazy("postgres://app@db/app")?
    ///     .read_replica(Database::connect_lazy("postgres://app@db-replica/app")?)
    ///     .replica_wait(Duration::from_millis(250));
    /// assert!(format!("{db:?}").contains("250ms"));
    /// # Ok(()) }
    /// ```
    pub fn replica_wait(mut self, wait: Duration) -> Self {
        self.replica_wait = Some(wait);
        self
    }
}

/// Where a statement outside any block of an alias with replicas goes.
pub(crate) enum Routed {
    /// To this connection of a replica that has replayed what the task needs.
    Replica {
        conn: AnyConn,
        replica: &'static str,
    },
    /// To the primary, and then what the task's position needs.
    Primary(Then),
}

/// Where `sql`, a statement outside any block of `entry` (whose replicas are `set`), goes;
/// `forced`: the handle reads from the primary. `rec`: the recording context, if any.
pub(crate) async fn route(
    entry: &'static AliasEntry,
    set: &'static ReplicaSet,
    sql: &str,
    forced: bool,
    rec: Option<&AliasCtx>,
) -> Routed {
    if !is_read(sql) {
        return Routed::Primary(Then::Capture);
    }
    if forced {
        return Routed::Primary(Then::Nothing);
    }
    let own = set.positions.own();
    if own == UNKNOWN {
        tracing::debug!(target: "sqlx_atomic", alias = %entry.name, "the task's position is unknown; reading from the primary, and its position there");
        return Routed::Primary(Then::Resolve);
    }
    let need = own.max(read_at_position(&entry.name));
    if need == UNKNOWN {
        return Routed::Primary(Then::Nothing);
    }
    let n = set.replicas.len();
    let first = set.next.fetch_add(1, Ordering::Relaxed);
    let now = now_ms();
    let mut candidate = None;
    for k in 0..n {
        let replica = &set.replicas[(first + k) % n];
        if replica.down_until.load(Ordering::Relaxed) > now {
            continue;
        }
        if replica.replayed.load(Ordering::Relaxed) >= need {
            match replica.acquire(set.wait).await {
                Ok(conn) => {
                    return Routed::Replica {
                        conn,
                        replica: &replica.display,
                    };
                }
                Err(why) => {
                    replica.mark_down(entry, &why);
                    continue;
                }
            }
        }
        if replica.lagging_until.load(Ordering::Relaxed) > now {
            tracing::debug!(target: "sqlx_atomic", alias = %entry.name, replica = %replica.display, position = %CommitPosition::from_lsn(need), "read replica left out: it was lagging past the bound");
            continue;
        }
        candidate.get_or_insert(replica);
    }
    if let Some(replica) = candidate
        && let Some(conn) = replica.wait_for(entry, set.wait, need, rec).await
    {
        return Routed::Replica {
            conn,
            replica: &replica.display,
        };
    }
    tracing::debug!(target: "sqlx_atomic", alias = %entry.name, position = %CommitPosition::from_lsn(need), "no read replica has replayed the task's position; reading from the primary");
    Routed::Primary(Then::Nothing)
}

impl Replica {
    /// A connection of the replica within `bound`.
    async fn acquire(&self, bound: Duration) -> Result<AnyConn, String> {
        match tokio::time::timeout(bound, self.pool.acquire()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no connection within {bound:?} (the replica does not answer, or its pool is \
                 exhausted)"
            )),
        }
    }

    /// Waits until the replica has replayed `need`, reading its replay position with a growing
    /// pause, for at most `bound` (connecting included): the connection to read on, or `None`
    /// (logged) to read from the primary.
    async fn wait_for(
        &'static self,
        entry: &'static AliasEntry,
        bound: Duration,
        need: u64,
        rec: Option<&AliasCtx>,
    ) -> Option<AnyConn> {
        let started = Instant::now();
        let deadline = started + bound;
        let mut conn = match self.acquire(bound).await {
            Ok(conn) => conn,
            Err(why) => {
                self.mark_down(entry, &why);
                return None;
            }
        };
        let mut pause = FIRST_POLL;
        loop {
            // Another task may have seen it get there meanwhile.
            if self.replayed.load(Ordering::Relaxed) >= need {
                return Some(conn);
            }
            if let Some(a) = rec {
                a.record_on(REPLAYED, Some(&self.display));
            }
            match scalar_lsn(&mut conn, REPLAYED).await {
                Ok(Some(replayed)) => {
                    self.replayed.fetch_max(replayed, Ordering::Relaxed);
                    if replayed >= need {
                        return Some(conn);
                    }
                }
                Ok(None) => {
                    self.lagging_until
                        .store(now_ms() + LAG_RETRY.as_millis() as u64, Ordering::Relaxed);
                    tracing::warn!(target: "sqlx_atomic", alias = %entry.name, replica = %self.display, "read replica is not in recovery (not a standby, or promoted): it cannot show that it replayed a position; reading from the primary");
                    return None;
                }
                Err(e) => {
                    drop(conn);
                    self.mark_down(entry, &e);
                    return None;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                self.lagging_until
                    .store(now_ms() + LAG_RETRY.as_millis() as u64, Ordering::Relaxed);
                tracing::warn!(
                    target: "sqlx_atomic",
                    alias = %entry.name,
                    replica = %self.display,
                    position = %CommitPosition::from_lsn(need),
                    replayed = %CommitPosition::from_lsn(self.replayed.load(Ordering::Relaxed)),
                    waited = ?now - started,
                    "read replica is lagging past the bound: it has not replayed the position the read needs; reading from the primary"
                );
                return None;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(LONGEST_POLL);
        }
    }

    /// Leaves the replica out for a while, says so once (until it is back), and probes it in the
    /// background so that it comes back as soon as it answers.
    fn mark_down(&'static self, entry: &'static AliasEntry, why: &dyn fmt::Display) {
        self.down_until
            .store(now_ms() + DOWN_RETRY.as_millis() as u64, Ordering::Relaxed);
        if !self.down_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(target: "sqlx_atomic", alias = %entry.name, replica = %self.display, error = %why, "read replica is down: its reads go to the primary or another replica until it answers again");
        } else {
            tracing::debug!(target: "sqlx_atomic", alias = %entry.name, replica = %self.display, error = %why, "read replica is still down");
        }
        if self.probing.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.probing.store(false, Ordering::Relaxed);
            return;
        };
        // The probe waits as long as the replica's pool lets an acquire wait; a connection it
        // opens stays in the pool, so a replica slow to connect is not left out for ever.
        runtime.spawn(async move {
            if self.pool.acquire().await.is_ok() {
                self.down_until.store(0, Ordering::Relaxed);
                if self.down_logged.swap(false, Ordering::Relaxed) {
                    tracing::info!(target: "sqlx_atomic", alias = %entry.name, replica = %self.display, "read replica answers again");
                }
            }
            self.probing.store(false, Ordering::Relaxed);
        });
    }
}

/// The position of the current task's last write on `alias`: a position at or after the end of
/// its last commit there (or of its last statement outside a block that was not a read); `None`
/// when the task has written nothing there, or the alias has no read replicas (then nothing needs
/// waiting for). Call it in an on_commit hook to hand the position to the job the hook enqueues;
/// the job's reader gives it to [`read_at`](crate::read_at).
///
/// The position is the primary's WAL insert position read right after the COMMIT, in the COMMIT's
/// own round trip (docs/semantics.md §12.3). When it could not be read, the position is the
/// highest there is (`FFFFFFFF/FFFFFFFF`), so that reads at it go to the primary; the task's next
/// read outside a block replaces it with the primary's position.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
/// # sqlx_atomic::Databases::new().add("default", sqlx_atomic::Database::connect_lazy("sqlite::memory:")?).install()?;
/// use sqlx_atomic::{commit_position, on_commit, Atomic};
/// let (tx, mut jobs) = tokio::sync::mpsc::unbounded_channel();
/// Atomic::new()
///     .run(async move {
///         on_commit(move || {
///             // The job carries the commit's position, if the alias has replicas.
///             let _ = tx.send((42, commit_position("default")?));
///             Ok::<_, sqlx_atomic::Error>(())
///         })
///         .await
///     })
///     .await?;
/// let (id, position) = jobs.recv().await.unwrap();
/// assert_eq!((id, position), (42, None)); // a SQLite alias has no replicas
/// # Ok(()) }
/// ```
pub fn commit_position(alias: &str) -> Result<Option<CommitPosition>, Error> {
    let entry = lookup(alias)?;
    Ok(entry
        .replicas
        .as_ref()
        .map(|set| set.positions.own())
        .filter(|&p| p > 0)
        .map(CommitPosition::from_lsn))
}
