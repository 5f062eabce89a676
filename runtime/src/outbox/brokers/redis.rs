//! Jobs as entries of a Redis stream.

use std::fmt;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::{BrokerError, DEFAULT_TIMEOUT, Secret, shown_url};
use crate::outbox::{Deliver, DeliverFuture, Job};

const BROKER: &str = "Redis";

/// Publishes each job as an entry of a Redis stream (`XADD`), with the fields `delivery_id`,
/// `name`, `key` (empty for a job without a key) and `payload` (the JSON text); a job counts as
/// delivered once Redis replied to the `XADD`.
///
/// Consumers read the stream with a consumer group (`XREADGROUP`, then `XACK`) and drop the
/// entries whose `delivery_id` they already applied: the relay delivers at least once.
///
/// The adapter holds one multiplexed connection, opened on the first delivery and shared by the
/// relay's concurrent deliveries. A delivery that fails on the connection (Redis stopped, the
/// network dropped, no answer within the [timeout](Self::timeout)) drops it: the job is retried
/// by the relay and the next delivery connects again.
///
/// How durable an entry is once `XADD` replied is Redis's persistence configuration: with
/// `appendonly yes` and `appendfsync always` it is on disk; with the defaults a crash of Redis may
/// lose the last second of writes.
///
/// [`max_len`](Self::max_len) caps the stream (`XADD key MAXLEN ~ n`): Redis then trims the
/// oldest entries, read or not, so the cap must leave consumers time to read them.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use sqlx_atomic::outbox::{Relay, brokers::RedisStream};
/// let stream = RedisStream::new("redis://127.0.0.1:6379/", "orders.events")?.max_len(100_000);
/// let relay = Relay::new("default", stream).spawn();
/// # relay.stop().await; Ok(()) }
/// ```
pub struct RedisStream {
    client: redis::Client,
    stream: String,
    max_len: Option<usize>,
    timeout: Duration,
    shown: String,
    secret: Secret,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl fmt::Debug for RedisStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStream")
            .field("redis", &self.shown)
            .field("stream", &self.stream)
            .field("max_len", &self.max_len)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Where a [`RedisStream`] connects: a URL (`&str` or `String`, such as
/// `redis://:password@host:6379/0`) or a [`redis::Client`].
pub trait RedisTarget: sealed::Sealed {
    /// The client, or why the URL is not one (without its password).
    fn into_client(self) -> Result<redis::Client, BrokerError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for &str {}
    impl Sealed for String {}
    impl Sealed for &String {}
    impl Sealed for redis::Client {}
}

impl RedisTarget for &str {
    fn into_client(self) -> Result<redis::Client, BrokerError> {
        redis::Client::open(self).map_err(|e| {
            BrokerError::new(
                BROKER,
                &shown_url(self),
                &Secret::of_url(self),
                format_args!("not a Redis URL: {e}"),
            )
        })
    }
}

impl RedisTarget for String {
    fn into_client(self) -> Result<redis::Client, BrokerError> {
        self.as_str().into_client()
    }
}

impl RedisTarget for &String {
    fn into_client(self) -> Result<redis::Client, BrokerError> {
        self.as_str().into_client()
    }
}

impl RedisTarget for redis::Client {
    fn into_client(self) -> Result<redis::Client, BrokerError> {
        Ok(self)
    }
}

impl RedisStream {
    /// An adapter publishing to the stream `stream` of the Redis server at `target` (a URL or a
    /// [`redis::Client`]). It connects on the first delivery; an error here is a URL that does not
    /// parse.
    pub fn new(target: impl RedisTarget, stream: impl Into<String>) -> Result<Self, BrokerError> {
        let client = target.into_client()?;
        let info = client.get_connection_info();
        let shown = format!("redis://{}/{}", info.addr(), info.redis_settings().db());
        let secret = Secret::of(info.redis_settings().password().map(str::to_owned));
        Ok(RedisStream {
            client,
            stream: stream.into(),
            max_len: None,
            timeout: DEFAULT_TIMEOUT,
            shown,
            secret,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// Caps the stream at about `n` entries (`XADD key MAXLEN ~ n`): Redis trims the oldest
    /// entries, read or not, when it can do so cheaply. No cap by default.
    pub fn max_len(mut self, n: usize) -> Self {
        self.max_len = Some(n);
        self
    }

    /// How long connecting, and each `XADD`, may take before the delivery fails (10 s by
    /// default).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// The stream the jobs go to.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    fn error(&self, message: impl fmt::Display) -> BrokerError {
        BrokerError::new(BROKER, &self.shown, &self.secret, message)
    }

    /// The shared connection, opened if there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, BrokerError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = match tokio::time::timeout(
            self.timeout,
            self.client.get_multiplexed_async_connection(),
        )
        .await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(self.error(format_args!("cannot connect: {e}"))),
            Err(_) => {
                return Err(self.error(format_args!(
                    "cannot connect: no answer within {:?}",
                    self.timeout
                )));
            }
        };
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn publish(&self, job: &Job) -> Result<(), BrokerError> {
        let mut con = self.connection().await?;
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.stream);
        if let Some(n) = self.max_len {
            xadd.arg("MAXLEN").arg("~").arg(n);
        }
        xadd.arg("*")
            .arg("delivery_id")
            .arg(&job.delivery_id)
            .arg("name")
            .arg(&job.name)
            .arg("key")
            .arg(job.key.as_deref().unwrap_or(""))
            .arg("payload")
            .arg(&job.payload);
        match tokio::time::timeout(self.timeout, xadd.query_async::<String>(&mut con)).await {
            Ok(Ok(_entry_id)) => Ok(()),
            Ok(Err(e)) => {
                // A refused command (a key of another type, say) leaves the connection usable.
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_unrecoverable_error()
                    || e.is_timeout()
                {
                    *self.connection.lock().await = None;
                }
                Err(self.error(format_args!("XADD to `{}` failed: {e}", self.stream)))
            }
            Err(_) => {
                *self.connection.lock().await = None;
                Err(self.error(format_args!(
                    "XADD to `{}`: no answer within {:?}",
                    self.stream, self.timeout
                )))
            }
        }
    }
}

impl Deliver for RedisStream {
    fn deliver<'a>(&'a self, job: &'a Job) -> DeliverFuture<'a> {
        Box::pin(async move { self.publish(job).await.map_err(Into::into) })
    }
}
