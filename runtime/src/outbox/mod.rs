//! Durable jobs after the commit: a transactional outbox (feature `outbox`).
//!
//! [`on_commit`](crate::on_commit) runs a hook after the COMMIT, at most once: if the process
//! stops between the COMMIT and the hook, or the hook fails, the work is lost and nothing records
//! that it existed. A job [`enqueue`]d here is a row of the outbox table, written **in the same
//! transaction** as the rows it is about, so it exists exactly when they do; a [`Relay`] then
//! delivers it, **at least once**, to handlers in the process or to a broker.
//!
//! - **Never before its data, never for rolled-back work.** The row is written just before the
//!   outermost COMMIT, in the transaction; a job enqueued in a savepoint that rolls back, or a
//!   transaction that rolls back, is never written. The nesting rules are those of on_commit
//!   hooks (docs/semantics.md §13). Outside a block, the job is written at once.
//! - **At least once.** A job is marked delivered only after its delivery succeeded; a relay
//!   that dies between the two leaves it to be delivered again. Consumers must be idempotent:
//!   every job carries a [`delivery_id`](Job::delivery_id), the same on every delivery, to drop
//!   duplicates by.
//! - **In order per key.** Jobs given the same [`key`](Enqueue::key) are delivered one at a time,
//!   in the order they were committed: a job waits while an earlier one of its key is pending
//!   (retrying included). Jobs without a key are delivered in parallel, oldest first.
//! - **One statement per transaction.** However many jobs a transaction enqueues, they are
//!   written with one INSERT (one per 5,000 jobs), sent just before the COMMIT.
//!
//! A relay delivers to anything implementing [`Deliver`]: [`Handlers`] in the process, or a
//! message broker through the adapters of the `brokers` module (features `outbox-redis` for a
//! Redis stream, `outbox-amqp` for RabbitMQ, `outbox-nats` for NATS JetStream), which mark a job
//! delivered only once the broker acknowledged it, and give every message the job's delivery id
//! for consumers to drop duplicates by.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), sqlx_atomic::Error> {
//! use sqlx_atomic::{Atomic, Database, Databases, outbox};
//! Databases::new()
//!     .add("default", Database::connect_lazy("sqlite:file:outbox_doc?mode=memory&cache=shared")?)
//!     .install()?;
//! outbox::create_table("default").await?;
//! Atomic::new()
//!     .run(async {
//!         // ... the order's rows ...
//!         outbox::enqueue("send_receipt", &serde_json::json!({ "order": 7 }))
//!             .key("order-7")
//!             .await
//!     })
//!     .await?;
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let relay = outbox::Relay::new(
//!     "default",
//!     outbox::Handlers::new().on("send_receipt", move |job: outbox::Job| {
//!         let tx = tx.clone();
//!         async move {
//!             let payload: serde_json::Value = job.payload()?;
//!             tx.send((job.delivery_id.clone(), payload["order"].as_i64()))?;
//!             Ok::<_, sqlx_atomic::BoxError>(())
//!         }
//!     }),
//! );
//! assert_eq!(relay.run_once().await?, 1);
//! let (_delivery_id, order) = rx.recv().await.unwrap();
//! assert_eq!(order, Some(7));
//! # Ok(()) }
//! ```
//!
//! **Waking relays.** A commit that wrote jobs wakes the relays spawned in its process at once.
//! On PostgreSQL it also sends `NOTIFY sqlx_atomic_outbox` after the COMMIT, for relays in other
//! processes (a web process that writes jobs, a worker that relays them), unless a relay of its
//! own process delivers those jobs; a burst of commits shares one notification per round trip.
//! Relays poll as well ([`Relay::poll_interval`]), so a lost notification only delays a job.
//!
//! **Keeping the table small.** Each delivered job leaves a dead row version behind, and delivered
//! jobs are kept for [`Relay::keep_delivered`]. Claims read the pending jobs through an index of
//! their own, but on PostgreSQL that index also holds dead versions until a VACUUM removes them:
//! where autovacuum is off or slow for a busy outbox, vacuum the table on a schedule, or lower its
//! threshold (`ALTER TABLE sqlx_atomic_outbox SET (autovacuum_vacuum_scale_factor = 0.01)`).

#[cfg(any(
    feature = "outbox-redis",
    feature = "outbox-amqp",
    feature = "outbox-nats"
))]
pub mod brokers;
/// `$body` with `$p` bound to the alias's pool, whichever backend it is.
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            #[cfg(feature = "sqlite")]
            crate::backend::AnyPool::Sqlite($p) => $body,
            #[cfg(feature = "postgres")]
            crate::backend::AnyPool::Postgres($p) => $body,
            #[cfg(feature = "mysql")]
            crate::backend::AnyPool::MySql($p) => $body,
        }
    };
}

mod relay;
pub(crate) mod sql;
mod wake;
mod write;

use std::borrow::Cow;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind};
use crate::frame::Frame;
use crate::hook::{Body, Hook, HookOptions, Ran};
use crate::registry::lookup;
use crate::state::HookDisposition;

pub use relay::{Deliver, DeliverFuture, Handlers, Relay, RelayHandle, clean, dead_jobs, replay};
pub(crate) use wake::{running, wake, waker};
pub(crate) use write::{jobs, write_on_conn, write_on_pool};

/// A job as a relay delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Job {
    /// The job's row id in the outbox table of its alias.
    pub id: i64,
    /// The job's unique id, the same on every delivery of the job: a consumer that records the
    /// ids it applied drops duplicates by it.
    pub delivery_id: String,
    /// The job's name, given to [`enqueue`].
    pub name: String,
    /// The job's ordering key, if it was given one.
    pub key: Option<String>,
    /// The payload, as JSON text.
    pub payload: String,
    /// How many deliveries were attempted before this one.
    pub attempts: u32,
}

impl Job {
    /// The payload, deserialised.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }
}

/// A job enqueued in a transaction, until its row is written.
#[derive(Debug)]
pub(crate) struct PendingJob {
    pub(crate) delivery_id: String,
    pub(crate) name: String,
    pub(crate) key: Option<String>,
    pub(crate) payload: String,
    pub(crate) created_at: i64,
}

/// Enqueues a durable job named `name` with `payload` (serialised to JSON): written in the same
/// transaction as the block's rows and delivered by a [`Relay`] after the COMMIT, at least once.
/// Await it; chain [`key`](Enqueue::key) and [`using`](Enqueue::using) first. See the
/// [module documentation](self) for the guarantees.
pub fn enqueue<T: Serialize + ?Sized>(name: impl Into<Cow<'static, str>>, payload: &T) -> Enqueue {
    Enqueue {
        name: name.into(),
        payload: serde_json::to_string(payload),
        key: None,
        alias: Cow::Borrowed("default"),
    }
}

/// A job to be awaited; see [`enqueue`].
#[must_use = "enqueue does nothing until awaited: `outbox::enqueue(..).await?`"]
#[derive(Debug)]
pub struct Enqueue {
    name: Cow<'static, str>,
    payload: Result<String, serde_json::Error>,
    key: Option<String>,
    alias: Cow<'static, str>,
}

impl Enqueue {
    /// Jobs with the same key are delivered one at a time, in commit order.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The alias whose transaction (and outbox table) the job belongs to (default `"default"`).
    pub fn using(mut self, alias: impl Into<Cow<'static, str>>) -> Self {
        self.alias = alias.into();
        self
    }

    async fn run(self) -> Result<(), Error> {
        let entry = lookup(&self.alias)?;
        let payload = self.payload.map_err(|e| {
            Error::at(
                &entry.name,
                ErrorKind::InvalidConfig(format!(
                    "outbox::enqueue(\"{}\"): the payload cannot be serialised to JSON: {e}",
                    self.name
                )),
            )
        })?;
        let job = PendingJob {
            delivery_id: new_delivery_id(),
            name: self.name.into_owned(),
            key: self.key,
            payload,
            created_at: now_ms(),
        };
        let hook = Hook(Box::new(JobBody::new(entry.name.clone(), job)));
        let mut hook = Some(hook);
        let registered = Frame::with_current(|frame| {
            frame.ctx().with_alias(entry, |actx| {
                let h = hook.take().expect("taken once");
                actx.state().on_commit(h)
            })
        });
        let now = match registered {
            Some(Ok(HookDisposition::Registered)) => return Ok(()),
            Some(Ok(HookDisposition::RunNow(h))) => h,
            Some(Err(_)) => return Err(Error::at(&entry.name, ErrorKind::OnCommitInManualMode)),
            None if !entry.db.autocommit => {
                return Err(Error::at(&entry.name, ErrorKind::OnCommitInManualMode));
            }
            None => hook.take().expect("not registered"),
        };
        // Outside any block: written at once, in autocommit, and delivered.
        let job = now.job().expect("a job's hook");
        write_on_pool(entry, vec![job]).await?;
        wake(&entry.name, Some(&job.name));
        Ok(())
    }
}

impl IntoFuture for Enqueue {
    type Output = Result<(), Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// The hook a job stands as until its transaction commits: written before the COMMIT (see
/// `exit`), it wakes the alias's relays once the COMMIT succeeded.
struct JobBody {
    alias: Arc<str>,
    job: PendingJob,
    options: HookOptions,
}

impl JobBody {
    fn new(alias: Arc<str>, job: PendingJob) -> Self {
        let options = HookOptions {
            name: Some(Cow::Owned(format!("outbox job {}", job.name))),
            robust: true,
        };
        JobBody {
            alias,
            job,
            options,
        }
    }
}

impl Body for JobBody {
    fn call(self: Box<Self>) -> Ran {
        wake(&self.alias, Some(&self.job.name));
        Ran::Done(Ok(()))
    }
    fn type_name(&self) -> &'static str {
        "sqlx_atomic::outbox::Job"
    }
    fn options(&self) -> Option<&HookOptions> {
        Some(&self.options)
    }
    fn options_mut(&mut self) -> Option<&mut HookOptions> {
        Some(&mut self.options)
    }
    fn job(&self) -> Option<&PendingJob> {
        Some(&self.job)
    }
}

/// Whether a committing transaction's hooks hold jobs.
pub(crate) fn has_jobs(hooks: &[Hook]) -> bool {
    jobs_of(hooks).next().is_some()
}

/// The jobs among a committing transaction's hooks.
pub(crate) fn jobs_of(hooks: &[Hook]) -> impl Iterator<Item = &PendingJob> {
    hooks.iter().filter_map(Hook::job)
}

/// Creates the outbox table of `alias` and its indexes, if they do not exist. The same SQL, for
/// your own migrations, is [`table_sql`].
pub async fn create_table(alias: &str) -> Result<(), Error> {
    let entry = lookup(alias)?;
    for stmt in sql::create(entry.kind) {
        write::raw(entry, stmt).await?;
    }
    Ok(())
}

/// The SQL that creates the outbox table and its indexes on `backend` (`"sqlite"`, `"postgres"`
/// or `"mysql"`), one statement per item, for projects that run their own migrations. `None` for
/// a backend this build does not support.
///
/// ```
/// let stmts = sqlx_atomic::outbox::table_sql("sqlite").unwrap();
/// assert!(stmts[0].starts_with("CREATE TABLE IF NOT EXISTS sqlx_atomic_outbox"));
/// ```
pub fn table_sql(backend: &str) -> Option<&'static [&'static str]> {
    use crate::backend::BackendKind;
    let kind = match backend {
        #[cfg(feature = "sqlite")]
        "sqlite" => BackendKind::Sqlite,
        #[cfg(feature = "postgres")]
        "postgres" => BackendKind::Postgres,
        #[cfg(feature = "mysql")]
        "mysql" => BackendKind::MySql,
        _ => return None,
    };
    Some(sql::create(kind))
}

/// Counts of the jobs this process wrote and its relays handled, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Jobs written to an outbox table.
    pub written: u64,
    /// Jobs delivered.
    pub delivered: u64,
    /// Deliveries that failed and will be retried.
    pub retried: u64,
    /// Jobs moved to the dead-letter state.
    pub dead: u64,
    /// Committed jobs announced to other processes' relays (PostgreSQL, when no relay spawned in
    /// this process delivers them): each asks for a `NOTIFY`, one per burst of commits.
    pub announced: u64,
}

pub(crate) static WRITTEN: AtomicU64 = AtomicU64::new(0);
pub(crate) static DELIVERED: AtomicU64 = AtomicU64::new(0);
pub(crate) static RETRIED: AtomicU64 = AtomicU64::new(0);
pub(crate) static DEAD: AtomicU64 = AtomicU64::new(0);
pub(crate) static ANNOUNCED: AtomicU64 = AtomicU64::new(0);

/// This process's counts of written, delivered, retried, dead and announced jobs.
pub fn stats() -> Stats {
    Stats {
        written: WRITTEN.load(Ordering::Relaxed),
        delivered: DELIVERED.load(Ordering::Relaxed),
        retried: RETRIED.load(Ordering::Relaxed),
        dead: DEAD.load(Ordering::Relaxed),
        announced: ANNOUNCED.load(Ordering::Relaxed),
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A new delivery id: this process's random prefix and a counter, unique across processes with
/// overwhelming probability and within one by construction.
fn new_delivery_id() -> String {
    static PREFIX: LazyLock<String> = LazyLock::new(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut words = [0u64; 2];
        for (i, w) in words.iter_mut().enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.write_u32(std::process::id());
            h.write_usize(i);
            *w = h.finish();
        }
        format!("{:016x}{:016x}", words[0], words[1])
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", *PREFIX, NEXT.fetch_add(1, Ordering::Relaxed))
}
