//! Waking relays after a commit that wrote jobs: at once in this process, and on PostgreSQL in
//! every process that listens, by one `NOTIFY` after the COMMIT, unless a relay of this process
//! delivers the jobs.
//!
//! The notification is not sent inside the writing transaction. PostgreSQL queues a
//! transaction's notifications under a database-wide lock that it holds until the COMMIT is
//! flushed, so concurrent transactions that notify commit one at a time (with eight pgbench
//! clients on two cores, it halved the rate of small transactions). Sent afterwards, in autocommit,
//! by one task per alias that sends again only if more commits came while it was sending, a
//! burst of commits costs one `NOTIFY` per round trip, however many commits it holds.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
#[cfg(feature = "postgres")]
use std::sync::atomic::Ordering;

#[cfg(feature = "postgres")]
use crate::registry::lookup;
use crate::sync::lock;

/// An alias's wake-ups.
struct Wake {
    alias: Arc<str>,
    /// Relays of this process.
    local: Arc<tokio::sync::Notify>,
    /// A `NOTIFY` is being sent.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    sending: AtomicBool,
    /// A commit came since the last `NOTIFY` began.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    again: AtomicBool,
    /// The job names of each relay running in this process (all names when empty), by id.
    relays: std::sync::Mutex<Vec<(u64, Arc<[String]>)>>,
}

impl Wake {
    /// Whether a relay of this process delivers the jobs named `name` (any job when `None`).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    fn delivered_here(&self, name: Option<&str>) -> bool {
        lock(&self.relays)
            .iter()
            .any(|(_, only)| only.is_empty() || name.is_some_and(|n| only.iter().any(|o| o == n)))
    }
}

/// A spawned relay's place among its alias's running relays, given up when dropped.
pub(crate) struct Running {
    wake: Arc<Wake>,
    id: u64,
}

/// Records a relay of `alias` delivering `only` (every name when empty) while it runs.
pub(crate) fn running(alias: &str, only: &[String]) -> Running {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let wake = of(alias);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    lock(&wake.relays).push((id, only.into()));
    Running { wake, id }
}

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.wake.relays).retain(|(id, _)| *id != self.id);
    }
}

static WAKES: std::sync::Mutex<Vec<Arc<Wake>>> = std::sync::Mutex::new(Vec::new());

fn of(alias: &str) -> Arc<Wake> {
    let mut all = lock(&WAKES);
    if let Some(w) = all.iter().find(|w| &*w.alias == alias) {
        return w.clone();
    }
    let w = Arc::new(Wake {
        alias: Arc::from(alias),
        local: Arc::new(tokio::sync::Notify::new()),
        sending: AtomicBool::new(false),
        again: AtomicBool::new(false),
        relays: std::sync::Mutex::new(Vec::new()),
    });
    all.push(w.clone());
    w
}

/// The in-process wake-up of `alias`'s relays.
pub(crate) fn waker(alias: &str) -> Arc<tokio::sync::Notify> {
    of(alias).local.clone()
}

/// Wakes `alias`'s relays after a commit that wrote jobs named `name` (or jobs of any name):
/// this process's at once. On PostgreSQL, unless a relay of this process delivers them, other
/// processes' relays too, by a `NOTIFY` sent from a task (none outside a tokio runtime, where
/// their poll finds the jobs).
pub(crate) fn wake(alias: &str, name: Option<&str>) {
    let w = of(alias);
    w.local.notify_one();
    #[cfg(feature = "postgres")]
    if !w.delivered_here(name) {
        announce(w);
    }
    #[cfg(not(feature = "postgres"))]
    let _ = name;
}

#[cfg(feature = "postgres")]
#[allow(irrefutable_let_patterns)] // with PostgreSQL the only backend built
fn announce(w: Arc<Wake>) {
    let Ok(entry) = lookup(&w.alias) else {
        return;
    };
    let crate::backend::AnyPool::Postgres(pool) = &entry.db.pool else {
        return;
    };
    super::ANNOUNCED.fetch_add(1, Ordering::Relaxed);
    w.again.store(true, Ordering::SeqCst);
    if w.sending.swap(true, Ordering::SeqCst) {
        // The task in flight sends once more after its current `NOTIFY`.
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        w.sending.store(false, Ordering::SeqCst);
        return;
    };
    let pool = pool.clone();
    rt.spawn(async move {
        let mut sending = Sending(Some(&w.sending));
        loop {
            while w.again.swap(false, Ordering::SeqCst) {
                // The simple protocol: one message, through a transaction pooler too.
                let sent = sqlx::raw_sql(NOTIFY).execute(&pool).await;
                if let Err(e) = sent {
                    tracing::warn!(target: "sqlx_atomic", alias = %w.alias, error = %crate::error::Error::from(e).with_alias(&w.alias), "outbox: NOTIFY failed; other processes' relays find the jobs at their next poll");
                }
            }
            sending.release();
            // A commit that came between the last check and the release found a sender in
            // flight and left its `NOTIFY` to it: send it, unless another task took over.
            if !w.again.load(Ordering::SeqCst) || w.sending.swap(true, Ordering::SeqCst) {
                break;
            }
            sending = Sending(Some(&w.sending));
        }
    });
}

/// The notification on the outbox channel (`sql::CHANNEL`).
#[cfg(feature = "postgres")]
const NOTIFY: &str = "NOTIFY sqlx_atomic_outbox";

/// Clears the sending flag when the task ends, including when its runtime drops it mid-send.
#[cfg(feature = "postgres")]
struct Sending<'a>(Option<&'a AtomicBool>);

#[cfg(feature = "postgres")]
impl Sending<'_> {
    fn release(&mut self) {
        if let Some(flag) = self.0.take() {
            flag.store(false, Ordering::SeqCst);
        }
    }
}

#[cfg(feature = "postgres")]
impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    #[test]
    fn the_notification_is_on_the_outbox_channel() {
        assert_eq!(
            super::NOTIFY,
            format!("NOTIFY {}", super::super::sql::CHANNEL)
        );
    }
}
