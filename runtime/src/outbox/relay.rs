//! The relay: claims committed jobs, delivers them, and records the outcome.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use sqlx::{AssertSqlSafe, Row};

use super::{DEAD, DELIVERED, Job, RETRIED, now_ms, sql, waker};
use crate::backend::AnyPool;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use crate::backend::BackendKind;
use crate::error::{BoxError, Error};
use crate::registry::{AliasEntry, lookup};

/// Claims, delivers and records on a backend with row locks: the claim's transaction holds the
/// jobs until their outcomes are written.
#[cfg(any(feature = "postgres", feature = "mysql"))]
macro_rules! locked {
    ($relay:expr, $entry:expr, $pool:expr, $begin:expr, $sql:expr, $persistent:expr) => {{
        let relay = $relay;
        let entry = $entry;
        let alias = &entry.name;
        let err = |e: sqlx::Error| Error::from(e).with_alias(alias);
        let mut tx = $pool.begin_with($begin).await.map_err(err)?;
        let mut claim = sqlx::query(AssertSqlSafe($sql))
            .persistent($persistent)
            .bind(now_ms());
        for name in &relay.only {
            claim = claim.bind(name.as_str());
        }
        let rows = claim.fetch_all(&mut *tx).await.map_err(err)?;
        let jobs: Vec<Job> = rows
            .iter()
            .map(job_of)
            .collect::<Result<_, _>>()
            .map_err(err)?;
        if jobs.is_empty() {
            tx.rollback().await.map_err(err)?;
            return Ok(0);
        }
        let outcomes = relay.deliver_all(alias, jobs).await;
        if let Some(mark) = delivered_sql(&outcomes) {
            sqlx::query(AssertSqlSafe(mark))
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        for (job, result) in &outcomes {
            if let Err(e) = result {
                let (state, attempts, next) = relay.failed(job);
                sqlx::query(AssertSqlSafe(failed_sql(|n| sql::param(entry.kind, n))))
                    .persistent($persistent)
                    .bind(state)
                    .bind(attempts)
                    .bind(next)
                    .bind(e.as_str())
                    .bind(job.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
        }
        tx.commit().await.map_err(err)?;
        relay.count(alias, &outcomes);
        Ok(outcomes.len())
    }};
}

/// A claim's transaction is READ COMMITTED whatever the server's default. On MySQL/MariaDB a
/// locking read under REPEATABLE READ also locks the gaps it scanned, where the INSERT of every
/// new job goes: writers would wait for the relay's deliveries, and deadlock with its UPDATE.
#[cfg(feature = "postgres")]
const CLAIM_BEGIN_PG: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
#[cfg(feature = "mysql")]
const CLAIM_BEGIN_MYSQL: &str = "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION";

/// The UPDATE that records a failed delivery, its parameters (the state, attempts, next attempt,
/// error and id) written by `placeholder`; it also ends a lease (SQLite's claim).
fn failed_sql(placeholder: impl Fn(usize) -> String) -> String {
    format!(
        "UPDATE sqlx_atomic_outbox SET state = {}, attempts = {}, next_attempt_at = {}, \
         last_error = {}, locked_until = 0 WHERE id = {}",
        placeholder(1),
        placeholder(2),
        placeholder(3),
        placeholder(4),
        placeholder(5)
    )
}

/// The one UPDATE that marks every delivered job of a batch, if any was.
fn delivered_sql(outcomes: &[(Job, Result<(), String>)]) -> Option<String> {
    let ids: Vec<String> = outcomes
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(j, _)| j.id.to_string())
        .collect();
    (!ids.is_empty()).then(|| {
        format!(
            "UPDATE sqlx_atomic_outbox SET state = {}, attempts = attempts + 1, delivered_at = {}, \
             locked_until = 0 WHERE id IN ({})",
            sql::DELIVERED,
            now_ms(),
            ids.join(", ")
        )
    })
}

/// The future of one delivery.
pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'a>>;

/// Where a [`Relay`] delivers jobs: handlers in the process ([`Handlers`]) or a broker.
///
/// A delivery that returns `Ok` is final: the job is marked delivered. An `Err` (or a panic) is
/// retried with backoff, and after the relay's `max_attempts` the job is dead-lettered. The same
/// job may be delivered more than once (a relay that stops between the delivery and its record),
/// always with the same [`Job::delivery_id`].
pub trait Deliver: Send + Sync + 'static {
    /// Delivers one job.
    fn deliver<'a>(&'a self, job: &'a Job) -> DeliverFuture<'a>;
}

type Handler = Arc<dyn Fn(Job) -> DeliverFuture<'static> + Send + Sync>;

/// Async handlers in the process, by job name: the in-process delivery target.
///
/// ```
/// use sqlx_atomic::outbox::{Handlers, Job};
/// let handlers = Handlers::new().on("send_receipt", |job: Job| async move {
///     println!("receipt for {}", job.payload);
///     Ok::<_, sqlx_atomic::BoxError>(())
/// });
/// # let _ = handlers;
/// ```
#[derive(Clone, Default)]
pub struct Handlers {
    by_name: HashMap<String, Handler>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Handlers").field("names", &names).finish()
    }
}

impl Handlers {
    /// No handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles the jobs named `name` with `handler`. A job whose name has no handler fails its
    /// delivery (and is retried, then dead-lettered), so that it is never lost silently.
    pub fn on<F, Fut, E>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let handler = Arc::new(handler);
        self.by_name.insert(
            name.into(),
            Arc::new(move |job| {
                let fut = handler(job);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }),
        );
        self
    }
}

impl Deliver for Handlers {
    fn deliver<'a>(&'a self, job: &'a Job) -> DeliverFuture<'a> {
        match self.by_name.get(&job.name) {
            Some(handler) => handler(job.clone()),
            None => {
                let name = job.name.clone();
                Box::pin(async move { Err(format!("no handler for the job `{name}`").into()) })
            }
        }
    }
}

/// Delivers the committed jobs of one alias's outbox table (see the [module](super)).
///
/// Several relays may run at once, in one process or in several: on PostgreSQL and MySQL/MariaDB
/// each claims its jobs with `FOR UPDATE SKIP LOCKED` and holds them in a transaction while it
/// delivers them, so a relay that dies gives its jobs back when its connection closes. On SQLite
/// a relay claims its jobs for a lease (`lease`, 30 s by default) and a job whose lease ran out is
/// claimed again.
///
/// [`spawn`](Relay::spawn) runs the relay as a task: it wakes when a transaction of this process
/// that wrote jobs commits, on PostgreSQL when any process's does (`LISTEN`, except in
/// transaction-pooling mode), and otherwise every `poll_interval`.
pub struct Relay {
    alias: Cow<'static, str>,
    sink: Arc<dyn Deliver>,
    concurrency: usize,
    batch: usize,
    max_attempts: u32,
    backoff: (Duration, Duration),
    poll: Duration,
    lease: Duration,
    keep: Duration,
    /// The job names this relay delivers; all when empty.
    only: Vec<String>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("alias", &self.alias)
            .field("concurrency", &self.concurrency)
            .field("batch", &self.batch)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay of `alias`'s outbox, delivering to `sink`, with the defaults: 16 deliveries at a
    /// time, batches of 100, 10 attempts with backoff from 100 ms doubling up to 60 s, a poll
    /// every second, and delivered jobs kept for an hour.
    pub fn new(alias: impl Into<Cow<'static, str>>, sink: impl Deliver) -> Self {
        Relay {
            alias: alias.into(),
            sink: Arc::new(sink),
            concurrency: 16,
            batch: 100,
            max_attempts: 10,
            backoff: (Duration::from_millis(100), Duration::from_secs(60)),
            poll: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            keep: Duration::from_secs(3600),
            only: Vec::new(),
        }
    }

    /// Delivers only the jobs with these names, leaving the others to other relays: one relay per
    /// kind of job, each with its own sink and limits. Jobs of one key are still delivered in
    /// order across relays.
    pub fn only<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.only = names.into_iter().map(Into::into).collect();
        self
    }

    /// The claim's condition on the job names, its parameters numbered from `first` (`$n` on
    /// PostgreSQL, `?n` on SQLite, `?` on MySQL).
    fn names_condition(&self, placeholder: impl Fn(usize) -> String, first: usize) -> String {
        if self.only.is_empty() {
            return String::new();
        }
        let list: Vec<String> = (0..self.only.len())
            .map(|i| placeholder(first + i))
            .collect();
        format!(" AND o.name IN ({})", list.join(", "))
    }

    /// How many deliveries run at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How many jobs one claim takes (at least 1).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// After this many failed deliveries a job is dead-lettered (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The wait before the first retry, doubled on each further one, up to `max`.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (first, max.max(first));
        self
    }

    /// How often a spawned relay looks for due jobs when nothing wakes it.
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// On SQLite, how long a claim lasts before another relay may take the job over.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long delivered jobs are kept before a spawned relay deletes them.
    pub fn keep_delivered(mut self, keep: Duration) -> Self {
        self.keep = keep;
        self
    }

    fn entry(&self) -> Result<&'static Arc<AliasEntry>, Error> {
        lookup(&self.alias)
    }

    /// Claims the due jobs (one batch), delivers them and records the outcomes; returns how many
    /// jobs it handled (delivered, retried or dead-lettered).
    pub async fn run_once(&self) -> Result<usize, Error> {
        let entry = self.entry()?;
        match &entry.db.pool {
            #[cfg(feature = "sqlite")]
            AnyPool::Sqlite(pool) => self.run_sqlite(entry, pool).await,
            #[cfg(feature = "postgres")]
            AnyPool::Postgres(pool) => {
                let names = self.names_condition(|n| sql::param(entry.kind, n), 2);
                let sql = claim_locked_sql(entry.kind, self.batch, &names);
                let persistent = !entry.db.transaction_pooling;
                locked!(self, entry, pool, CLAIM_BEGIN_PG, sql, persistent)
            }
            #[cfg(feature = "mysql")]
            AnyPool::MySql(pool) => {
                let names = self.names_condition(|n| sql::param(entry.kind, n), 2);
                let sql = claim_locked_sql(entry.kind, self.batch, &names);
                locked!(self, entry, pool, CLAIM_BEGIN_MYSQL, sql, true)
            }
        }
    }

    /// Delivers `jobs`, `concurrency` at a time, in a span each.
    async fn deliver_all(&self, alias: &str, jobs: Vec<Job>) -> Vec<(Job, Result<(), String>)> {
        let sink = &self.sink;
        futures_util::stream::iter(jobs)
            .map(|job| async move {
                let span = tracing::info_span!(target: "sqlx_atomic", "outbox.deliver", alias, job = %job.name, delivery_id = %job.delivery_id, attempt = job.attempts + 1);
                let delivery = std::panic::AssertUnwindSafe(sink.deliver(&job));
                let result = tracing::Instrument::instrument(
                    futures_util::FutureExt::catch_unwind(delivery),
                    span,
                )
                .await;
                let result = match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(panic) => Err(format!(
                        "the delivery panicked: {}",
                        crate::on_commit::panic_message(&*panic)
                    )),
                };
                (job, result)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await
    }

    /// The record of a failed delivery: the new state, attempts and next attempt.
    fn failed(&self, job: &Job) -> (i16, i32, i64) {
        let attempts = job.attempts.saturating_add(1);
        if attempts >= self.max_attempts {
            return (sql::DEAD, attempts as i32, now_ms());
        }
        let (first, max) = self.backoff;
        let wait = first
            .checked_mul(1u32 << (attempts - 1).min(20))
            .map_or(max, |w| w.min(max));
        (
            sql::PENDING,
            attempts as i32,
            now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    #[cfg(feature = "sqlite")]
    async fn run_sqlite(
        &self,
        entry: &AliasEntry,
        pool: &sqlx::Pool<sqlx::Sqlite>,
    ) -> Result<usize, Error> {
        let now = now_ms();
        let lease = i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        // One statement claims the jobs: SQLite runs one writer at a time, so two relays never
        // claim the same job while its lease lasts.
        let claim = format!(
            "UPDATE sqlx_atomic_outbox SET locked_until = ?1 WHERE id IN (SELECT o.id FROM \
             sqlx_atomic_outbox o WHERE {} AND o.locked_until <= ?2{} ORDER BY o.id LIMIT {}) \
             RETURNING {}",
            sql::DUE.replace("{now}", "?2"),
            self.names_condition(|n| format!("?{n}"), 3),
            self.batch,
            sql::COLUMNS
        );
        let mut claim = sqlx::query(AssertSqlSafe(claim))
            .bind(now.saturating_add(lease))
            .bind(now);
        for name in &self.only {
            claim = claim.bind(name.as_str());
        }
        let rows = claim
            .fetch_all(pool)
            .await
            .map_err(|e| Error::from(e).with_alias(&entry.name))?;
        let mut jobs: Vec<Job> = rows
            .iter()
            .map(job_of)
            .collect::<Result<_, _>>()
            .map_err(|e| Error::from(e).with_alias(&entry.name))?;
        jobs.sort_by_key(|j| j.id);
        if jobs.is_empty() {
            return Ok(0);
        }
        let outcomes = self.deliver_all(&entry.name, jobs).await;
        let n = outcomes.len();
        let mut tx = pool
            .begin()
            .await
            .map_err(|e| Error::from(e).with_alias(&entry.name))?;
        let err = |e: sqlx::Error| Error::from(e).with_alias(&entry.name);
        if let Some(mark) = delivered_sql(&outcomes) {
            sqlx::query(AssertSqlSafe(mark))
                .execute(&mut *tx)
                .await
                .map_err(err)?;
        }
        for (job, result) in &outcomes {
            if let Err(e) = result {
                let (state, attempts, next) = self.failed(job);
                sqlx::query(AssertSqlSafe(failed_sql(|n| format!("?{n}"))))
                    .bind(state)
                    .bind(attempts)
                    .bind(next)
                    .bind(e.as_str())
                    .bind(job.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
        }
        tx.commit()
            .await
            .map_err(|e| Error::from(e).with_alias(&entry.name))?;
        self.count(&entry.name, &outcomes);
        Ok(n)
    }

    /// Counts and logs the outcomes.
    fn count(&self, alias: &str, outcomes: &[(Job, Result<(), String>)]) {
        for (job, result) in outcomes {
            match result {
                Ok(()) => {
                    DELIVERED.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if job.attempts.saturating_add(1) >= self.max_attempts => {
                    DEAD.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(target: "sqlx_atomic", alias, job = %job.name, delivery_id = %job.delivery_id, error = %e, "outbox job dead-lettered after {} attempts", job.attempts + 1);
                }
                Err(e) => {
                    RETRIED.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "sqlx_atomic", alias, job = %job.name, delivery_id = %job.delivery_id, error = %e, "outbox delivery failed; retried later");
                }
            }
        }
    }

    /// Runs the relay as a task until [`RelayHandle::stop`]: it delivers whatever is due, then
    /// waits for a wake-up (a commit that wrote jobs, a PostgreSQL notification, or the poll
    /// interval), and deletes delivered jobs older than `keep_delivered` now and then. Errors are
    /// logged and retried after the poll interval. Must be called inside a tokio runtime.
    pub fn spawn(self) -> RelayHandle {
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let relay = self;
            let wake = waker(&relay.alias);
            // While it runs, commits of this process leave the jobs it delivers to it, without
            // a NOTIFY to other processes.
            let _running = super::running(&relay.alias, &relay.only);
            #[cfg(feature = "postgres")]
            let mut listener = relay.listener().await;
            let mut last_clean = std::time::Instant::now();
            loop {
                match relay.run_once().await {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(target: "sqlx_atomic", alias = %relay.alias, error = %e, "outbox relay failed; trying again");
                    }
                }
                if last_clean.elapsed() >= relay.keep.min(Duration::from_secs(60)) {
                    last_clean = std::time::Instant::now();
                    if let Err(e) = clean(&relay.alias, relay.keep).await {
                        tracing::warn!(target: "sqlx_atomic", alias = %relay.alias, error = %e, "outbox clean-up failed");
                    }
                }
                #[cfg(feature = "postgres")]
                let notified = async {
                    match listener.as_mut() {
                        Some(l) => {
                            if l.recv().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(feature = "postgres"))]
                let notified = std::future::pending::<()>();
                tokio::select! {
                    () = stopping.notified() => break,
                    () = wake.notified() => {}
                    () = notified => {}
                    () = tokio::time::sleep(relay.poll) => {}
                }
            }
        });
        RelayHandle { stop, task }
    }

    /// A `LISTEN` on the outbox channel, on a connection of its own, for a PostgreSQL alias not
    /// in transaction-pooling mode (where a session's LISTEN would be lost).
    #[cfg(feature = "postgres")]
    #[allow(irrefutable_let_patterns)] // with PostgreSQL the only backend built
    async fn listener(&self) -> Option<sqlx::postgres::PgListener> {
        let entry = self.entry().ok()?;
        let AnyPool::Postgres(pool) = &entry.db.pool else {
            return None;
        };
        if entry.db.transaction_pooling {
            return None;
        }
        let own = sqlx::pool::PoolOptions::<sqlx::Postgres>::new()
            .max_connections(1)
            .connect_lazy_with((*pool.connect_options()).clone());
        let mut listener = match sqlx::postgres::PgListener::connect_with(&own).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(target: "sqlx_atomic", alias = %entry.name, error = %Error::from(e), "outbox relay: LISTEN failed; polling instead");
                return None;
            }
        };
        match listener.listen(sql::CHANNEL).await {
            Ok(()) => Some(listener),
            Err(e) => {
                tracing::warn!(target: "sqlx_atomic", alias = %entry.name, error = %Error::from(e), "outbox relay: LISTEN failed; polling instead");
                None
            }
        }
    }
}

/// The claim of a backend with row locks: the due jobs, oldest first, skipping those another
/// relay holds. The key condition's subquery is a plain read on both (it sees a job another
/// relay holds as pending, and so keeps the next job of its key back).
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn claim_locked_sql(kind: BackendKind, batch: usize, names: &str) -> String {
    format!(
        "SELECT {} FROM sqlx_atomic_outbox o WHERE {}{names} ORDER BY o.id LIMIT {batch} \
         FOR UPDATE SKIP LOCKED",
        sql::O_COLUMNS,
        sql::DUE.replace("{now}", &sql::param(kind, 1)),
    )
}

/// A job of a claimed row.
fn job_of<R>(row: &R) -> Result<Job, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Job {
        id: row.try_get(0)?,
        delivery_id: row.try_get(1)?,
        name: row.try_get(2)?,
        key: row.try_get(3)?,
        payload: row.try_get(4)?,
        attempts: u32::try_from(row.try_get::<i32, _>(5)?).unwrap_or(0),
    })
}

/// A spawned [`Relay`].
#[derive(Debug)]
pub struct RelayHandle {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// Stops the relay after the batch it is delivering, and waits for it.
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

/// The dead-lettered jobs of `alias`, oldest first.
pub async fn dead_jobs(alias: &str) -> Result<Vec<Job>, Error> {
    let entry = lookup(alias)?;
    let sql = format!(
        "SELECT {} FROM sqlx_atomic_outbox WHERE state = {} ORDER BY id",
        sql::COLUMNS,
        sql::DEAD
    );
    let err = |e: sqlx::Error| Error::from(e).with_alias(&entry.name);
    on_pool!(&entry.db.pool, |p| sqlx::query(AssertSqlSafe(sql))
        .persistent(false)
        .fetch_all(p)
        .await
        .map_err(err)?
        .iter()
        .map(job_of)
        .collect::<Result<_, _>>()
        .map_err(err))
}

/// Puts the dead-lettered job `id` of `alias` back to be delivered at once, with its attempts
/// reset; `false` if no dead job has that id.
pub async fn replay(alias: &str, id: i64) -> Result<bool, Error> {
    let entry = lookup(alias)?;
    let sql = format!(
        "UPDATE sqlx_atomic_outbox SET state = {}, attempts = 0, next_attempt_at = {}, \
         locked_until = 0 WHERE id = {id} AND state = {}",
        sql::PENDING,
        now_ms(),
        sql::DEAD
    );
    let n = execute(entry, sql).await?;
    super::wake(&entry.name, None);
    Ok(n > 0)
}

/// Deletes the jobs of `alias` delivered `older_than` ago or earlier (all of them with
/// `Duration::ZERO`); returns how many.
pub async fn clean(alias: &str, older_than: Duration) -> Result<u64, Error> {
    let entry = lookup(alias)?;
    let before = now_ms().saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
    // On MySQL the next statement's transaction is READ COMMITTED: without gap locks, the DELETE
    // never waits for a relay's claim nor blocks the INSERT of new jobs (see `CLAIM_BEGIN_MYSQL`).
    #[cfg(feature = "mysql")]
    let prefix = match entry.kind {
        BackendKind::MySql => "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; ",
        #[allow(unreachable_patterns)] // with MySQL the only backend built
        _ => "",
    };
    #[cfg(not(feature = "mysql"))]
    let prefix = "";
    let sql = format!(
        "{prefix}DELETE FROM sqlx_atomic_outbox WHERE state = {} AND delivered_at <= {before}",
        sql::DELIVERED
    );
    execute(entry, sql).await
}

async fn execute(entry: &AliasEntry, sql: String) -> Result<u64, Error> {
    let err = |e: sqlx::Error| Error::from(e).with_alias(&entry.name);
    let q = AssertSqlSafe(sql);
    let n = on_pool!(&entry.db.pool, |p| sqlx::raw_sql(q)
        .execute(p)
        .await
        .map_err(err)?
        .rows_affected());
    Ok(n)
}
