//! The outbox relay's broker adapters (features `outbox-redis`, `outbox-amqp`, `outbox-nats`)
//! against the real brokers: committed jobs reach the broker with their delivery ids once it
//! acknowledged them, rolled-back jobs never do, and a broker that cannot be reached leaves the
//! job pending, to be retried, with no password in any message.
//!
//! The brokers' URLs come from `SQLX_ATOMIC_TEST_REDIS_URL`, `SQLX_ATOMIC_TEST_AMQP_URL` and
//! `SQLX_ATOMIC_TEST_NATS_URL` (defaults: the local servers `.ci/brokers` starts). A broker that
//! does not answer fails its tests under `CI=true`, and skips them loudly otherwise.
//!
//! The adapters do not depend on the database: the tests run on SQLite, with the outbox table of
//! the alias `other`, which no other test of this binary uses.

mod common;

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Backend, Fx};
use futures::StreamExt;
use sqlx::{AssertSqlSafe, Row};
use sqlx_atomic::outbox::brokers::{Amqp, JetStream, RedisStream, async_nats, lapin, redis};
use sqlx_atomic::outbox::{self, Deliver, DeliverFuture, Job, Relay};
use sqlx_atomic::{Atomic, Error};

/// The alias whose outbox table the tests use.
const ALIAS: &str = "other";

/// The outbox table is one per alias: the tests take it one at a time and start from an empty
/// table.
static TABLE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A password no message may show.
const PASSWORD: &str = "pw-n0t-t0-be-seen";

/// An address where nothing listens.
const CLOSED: &str = "127.0.0.1:1";

/// Runs `f` on SQLite with the outbox table of [`ALIAS`] to itself, created and emptied.
fn run<F, Fut>(f: F)
where
    F: FnOnce(Fx) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    common::run(Backend::Sqlite, |fx: Fx| async move {
        let _table = TABLE.lock().await;
        outbox::create_table(ALIAS).await.unwrap();
        sqlx::raw_sql("DELETE FROM sqlx_atomic_outbox")
            .execute(&pool())
            .await
            .unwrap();
        f(fx).await;
    })
}

fn pool() -> sqlx::SqlitePool {
    sqlx_atomic::pool::<sqlx::Sqlite>(ALIAS).unwrap()
}

/// A name no other test (or earlier run) uses: streams, exchanges, queues and subjects are
/// the test's own.
fn unique(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "sqlx_atomic_{what}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The broker's URL: its environment variable, or the local server's.
fn url(env: &str, default: &str) -> String {
    std::env::var(env)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// The broker's client when `connect` succeeds within 10 s. When it does not: under `CI=true` a
/// panic; otherwise `None`, after saying loudly (past the harness's capture) that the test is
/// skipped.
async fn broker<T, E: std::fmt::Display>(
    name: &str,
    env: &str,
    connect: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    let why = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(client)) => return Some(client),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 10 s".to_owned(),
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and {name} does not answer ({why}); set {env} or start it (.ci/brokers)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** sqlx-atomic tests: SKIPPING a {name} test, {name} does not answer (set {env} to a \
         reachable URL or run .ci/brokers; tried it and got: {why}) ***\n"
    );
    None
}

/// A job that the tests enqueue, as the consumers must see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    name: String,
    key: Option<String>,
    payload: serde_json::Value,
    delivery_id: String,
}

/// Commits two jobs (one with a key) in one block and rolls a third back; returns the two as
/// the outbox table holds them, with their delivery ids.
async fn enqueue_two_and_roll_one_back() -> Vec<Sent> {
    Atomic::new()
        .using(ALIAS)
        .run(async {
            outbox::enqueue("order.created", &serde_json::json!({ "order": 1 }))
                .key("order-1")
                .using(ALIAS)
                .await?;
            outbox::enqueue("receipt", &serde_json::json!({ "order": 1, "to": "a@b.c" }))
                .using(ALIAS)
                .await
        })
        .await
        .unwrap();
    let rolled_back = Atomic::new()
        .using(ALIAS)
        .run(async {
            outbox::enqueue("order.cancelled", &serde_json::json!({ "order": 1 }))
                .using(ALIAS)
                .await?;
            Err::<(), _>(Error::from(sqlx::Error::RowNotFound))
        })
        .await;
    assert!(rolled_back.is_err());
    let mut sent: Vec<Sent> = outbox_rows()
        .await
        .into_iter()
        .map(|r| Sent {
            name: r.name,
            key: r.key,
            payload: serde_json::from_str(&r.payload).unwrap(),
            delivery_id: r.delivery_id,
        })
        .collect();
    assert_eq!(sent.len(), 2, "the rolled-back job is never written");
    sent.sort_by(|a, b| a.name.cmp(&b.name));
    sent
}

/// An outbox row of [`ALIAS`].
#[derive(Debug)]
struct OutboxRow {
    name: String,
    key: Option<String>,
    payload: String,
    delivery_id: String,
    state: i64,
    attempts: i64,
    last_error: Option<String>,
}

async fn outbox_rows() -> Vec<OutboxRow> {
    sqlx::query(AssertSqlSafe(
        "SELECT name, job_key, payload, delivery_id, state, attempts, last_error \
         FROM sqlx_atomic_outbox ORDER BY id",
    ))
    .fetch_all(&pool())
    .await
    .unwrap()
    .iter()
    .map(|r| OutboxRow {
        name: r.get(0),
        key: r.get(1),
        payload: r.get(2),
        delivery_id: r.get(3),
        state: r.get(4),
        attempts: r.get(5),
        last_error: r.get(6),
    })
    .collect()
}

/// Runs a relay with `sink` once and checks that it delivered the two jobs of
/// [`enqueue_two_and_roll_one_back`] and that none is left.
async fn relay_delivers_both(sink: impl Deliver) {
    let relay = Relay::new(ALIAS, sink);
    assert_eq!(relay.run_once().await.unwrap(), 2);
    let rows = outbox_rows().await;
    assert!(
        rows.iter().all(|r| r.state == 1),
        "delivered once the broker acknowledged them: {rows:?}"
    );
    assert_eq!(relay.run_once().await.unwrap(), 0, "delivered once");
}

/// Enqueues one job, runs a relay with the unreachable `sink` once (retries due at once), and
/// checks that the job is pending with an error that names the failure and holds no password.
/// Returns the job's delivery id.
async fn unreachable_keeps_the_job_pending(sink: impl Deliver + std::fmt::Debug) -> String {
    let shown = format!("{sink:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert!(shown.contains("127.0.0.1:1"), "the host is shown: {shown}");
    outbox::enqueue("unreachable", &serde_json::json!({ "n": 1 }))
        .using(ALIAS)
        .await
        .unwrap();
    let relay = Relay::new(ALIAS, sink).backoff(Duration::ZERO, Duration::ZERO);
    assert_eq!(relay.run_once().await.unwrap(), 1);
    let rows = outbox_rows().await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(
        (row.state, row.attempts),
        (0, 1),
        "pending, to be retried: {row:?}"
    );
    let error = row.last_error.as_deref().unwrap();
    assert!(error.contains("cannot connect"), "{error}");
    assert!(!error.contains(PASSWORD), "{error}");
    row.delivery_id.clone()
}

/// The error text of a failed eager connection, checked to hold no password.
fn no_password<T: std::fmt::Debug>(r: Result<T, outbox::brokers::BrokerError>) -> String {
    let e = r.expect_err("nothing listens there");
    let text = format!("{e} / {e:?}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(text.contains("127.0.0.1:1"), "the host is named: {text}");
    text
}

/// A sink that delivers every job twice, as a relay that stops before it records a delivery
/// does.
struct Twice<D>(D);

impl<D: Deliver> Deliver for Twice<D> {
    fn deliver<'a>(&'a self, job: &'a Job) -> DeliverFuture<'a> {
        Box::pin(async move {
            self.0.deliver(job).await?;
            self.0.deliver(job).await
        })
    }
}

mod redis_stream {
    use super::*;
    use redis::AsyncCommands;

    const ENV: &str = "SQLX_ATOMIC_TEST_REDIS_URL";

    fn redis_url() -> String {
        url(ENV, "redis://127.0.0.1:6379/")
    }

    async fn client() -> Option<(redis::Client, redis::aio::MultiplexedConnection)> {
        let client = redis::Client::open(redis_url()).unwrap();
        let con = broker("Redis", ENV, client.get_multiplexed_async_connection()).await?;
        Some((client, con))
    }

    #[test]
    fn committed_jobs_become_stream_entries_and_rolled_back_ones_never_do() {
        run(|_fx| async move {
            let Some((client, mut con)) = client().await else {
                return;
            };
            let stream = unique("stream");
            // The consumers' group exists before the jobs: they read every entry.
            let () = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg("workers")
                .arg("$")
                .arg("MKSTREAM")
                .query_async(&mut con)
                .await
                .unwrap();
            let sent = enqueue_two_and_roll_one_back().await;
            relay_delivers_both(RedisStream::new(client, &stream).unwrap()).await;

            let len: usize = con.xlen(&stream).await.unwrap();
            assert_eq!(len, 2, "the rolled-back job never reaches the stream");
            let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg("workers")
                .arg("worker-1")
                .arg("COUNT")
                .arg(10)
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .query_async(&mut con)
                .await
                .unwrap();
            let entries = &reply.keys[0].ids;
            let mut got: Vec<Sent> = entries
                .iter()
                .map(|e| {
                    let key: String = e.get("key").unwrap();
                    Sent {
                        name: e.get("name").unwrap(),
                        key: (!key.is_empty()).then_some(key),
                        payload: serde_json::from_str(&e.get::<String>("payload").unwrap())
                            .unwrap(),
                        delivery_id: e.get("delivery_id").unwrap(),
                    }
                })
                .collect();
            got.sort_by(|a, b| a.name.cmp(&b.name));
            assert_eq!(got, sent);
            let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            let acked: usize = con.xack(&stream, "workers", &ids).await.unwrap();
            assert_eq!(acked, 2);
            let _: usize = con.del(&stream).await.unwrap();
        });
    }

    #[test]
    fn a_refused_xadd_keeps_the_job_pending_until_redis_takes_it() {
        run(|_fx| async move {
            let Some((client, mut con)) = client().await else {
                return;
            };
            // A key of another type: Redis refuses the XADD.
            let stream = unique("not_a_stream");
            let () = con.set(&stream, "a string").await.unwrap();
            outbox::enqueue("refused", &serde_json::json!({ "n": 1 }))
                .using(ALIAS)
                .await
                .unwrap();
            let relay = Relay::new(ALIAS, RedisStream::new(client, &stream).unwrap())
                .backoff(Duration::ZERO, Duration::ZERO);
            assert_eq!(relay.run_once().await.unwrap(), 1);
            let rows = outbox_rows().await;
            assert_eq!((rows[0].state, rows[0].attempts), (0, 1), "{rows:?}");
            assert!(
                rows[0].last_error.as_deref().unwrap().contains("WRONGTYPE"),
                "{rows:?}"
            );
            let _: usize = con.del(&stream).await.unwrap();
            assert_eq!(relay.run_once().await.unwrap(), 1, "retried");
            assert_eq!(outbox_rows().await[0].state, 1);
            let len: usize = con.xlen(&stream).await.unwrap();
            assert_eq!(len, 1);
            let _: usize = con.del(&stream).await.unwrap();
        });
    }

    #[test]
    fn an_unreachable_redis_keeps_the_job_pending_and_shows_no_password() {
        run(|_fx| async move {
            let Some((client, mut con)) = client().await else {
                return;
            };
            let closed = format!("redis://:{PASSWORD}@{CLOSED}/");
            let stream = unique("stream");
            let id = unreachable_keeps_the_job_pending(
                RedisStream::new(closed.as_str(), &stream).unwrap(),
            )
            .await;
            // The retry, to a Redis that answers, delivers the same job.
            let relay = Relay::new(ALIAS, RedisStream::new(client, &stream).unwrap());
            assert_eq!(relay.run_once().await.unwrap(), 1);
            let entries: redis::streams::StreamRangeReply = con.xrange_all(&stream).await.unwrap();
            assert_eq!(entries.ids.len(), 1);
            assert_eq!(entries.ids[0].get::<String>("delivery_id").unwrap(), id);
            let _: usize = con.del(&stream).await.unwrap();
            // A URL that does not parse is refused without showing its password.
            let bad = format!("redis://:{PASSWORD}@[::1/");
            let e = RedisStream::new(bad.as_str(), "s").unwrap_err().to_string();
            assert!(!e.contains(PASSWORD), "{e}");
        });
    }
}

mod amqp {
    use super::*;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
        QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};
    use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

    const ENV: &str = "SQLX_ATOMIC_TEST_AMQP_URL";

    fn amqp_url() -> String {
        url(ENV, "amqp://guest:guest@127.0.0.1:5672/%2f")
    }

    async fn channel() -> Option<(Connection, Channel)> {
        let connection = broker(
            "RabbitMQ",
            ENV,
            Connection::connect(&amqp_url(), ConnectionProperties::default()),
        )
        .await?;
        let channel = connection.create_channel().await.unwrap();
        Some((connection, channel))
    }

    /// A topic exchange of the test's own, and (when `bound`) a queue receiving all of its
    /// messages.
    async fn topology(channel: &Channel, bound: bool) -> (String, String) {
        let exchange = unique("exchange");
        let queue = unique("queue");
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        if bound {
            bind(channel, &exchange, &queue).await;
        }
        (exchange, queue)
    }

    async fn bind(channel: &Channel, exchange: &str, queue: &str) {
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    async fn ready(channel: &Channel, queue: &str) -> u32 {
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    async fn drop_topology(channel: &Channel, exchange: &str, queue: &str) {
        let _ = channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
        let _ = channel
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await;
    }

    #[test]
    fn committed_jobs_become_confirmed_persistent_messages_and_rolled_back_ones_never_do() {
        run(|_fx| async move {
            let Some((_connection, channel)) = channel().await else {
                return;
            };
            let (exchange, queue) = topology(&channel, true).await;
            let sent = enqueue_two_and_roll_one_back().await;
            let adapter = Amqp::connect(amqp_url(), &exchange).await.unwrap();
            relay_delivers_both(adapter).await;

            // Confirmed means enqueued: both are in the queue, and only they.
            assert_eq!(ready(&channel, &queue).await, 2);
            let mut consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            let mut got = Vec::new();
            for _ in 0..2 {
                let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
                    .await
                    .expect("the queue holds two messages")
                    .unwrap()
                    .unwrap();
                let p = &delivery.properties;
                assert_eq!(*p.delivery_mode(), Some(2), "persistent");
                assert_eq!(
                    p.content_type().as_ref().unwrap().as_str(),
                    "application/json"
                );
                let name = p.kind().as_ref().unwrap().to_string();
                assert_eq!(
                    delivery.routing_key.as_str(),
                    name,
                    "routed by the job's name"
                );
                let key = p
                    .headers()
                    .as_ref()
                    .and_then(|h| match h.inner().get("x-job-key") {
                        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
                        _ => None,
                    });
                got.push(Sent {
                    name,
                    key,
                    payload: serde_json::from_slice(&delivery.data).unwrap(),
                    delivery_id: p.message_id().as_ref().unwrap().to_string(),
                });
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .unwrap();
            }
            got.sort_by(|a, b| a.name.cmp(&b.name));
            assert_eq!(got, sent);
            drop_topology(&channel, &exchange, &queue).await;
        });
    }

    #[test]
    fn a_message_no_queue_receives_or_a_missing_exchange_keeps_the_job_pending() {
        run(|_fx| async move {
            let Some((_connection, channel)) = channel().await else {
                return;
            };
            // An exchange that does not exist yet: the broker closes the adapter's channel.
            let exchange = unique("exchange");
            let queue = unique("queue");
            outbox::enqueue("unroutable", &serde_json::json!({ "n": 1 }))
                .using(ALIAS)
                .await
                .unwrap();
            let relay = Relay::new(ALIAS, Amqp::new(amqp_url(), &exchange).unwrap())
                .backoff(Duration::ZERO, Duration::ZERO);
            assert_eq!(relay.run_once().await.unwrap(), 1);
            let row = &outbox_rows().await[0];
            assert_eq!((row.state, row.attempts), (0, 1), "{row:?}");
            assert!(
                row.last_error.as_deref().unwrap().contains("NOT_FOUND"),
                "{row:?}"
            );

            // The exchange exists, but no queue is bound: the broker returns the message.
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            assert_eq!(relay.run_once().await.unwrap(), 1);
            let row = &outbox_rows().await[0];
            assert_eq!((row.state, row.attempts), (0, 2), "{row:?}");
            assert!(
                row.last_error
                    .as_deref()
                    .unwrap()
                    .contains("no queue receives"),
                "{row:?}"
            );

            // Once a queue is bound, the retry (on a new channel) reaches it.
            bind(&channel, &exchange, &queue).await;
            assert_eq!(relay.run_once().await.unwrap(), 1);
            assert_eq!(outbox_rows().await[0].state, 1);
            assert_eq!(ready(&channel, &queue).await, 1);
            drop_topology(&channel, &exchange, &queue).await;
        });
    }

    #[test]
    fn an_unreachable_broker_keeps_the_job_pending_and_shows_no_password() {
        run(|_fx| async move {
            let Some((_connection, channel)) = channel().await else {
                return;
            };
            let closed = format!("amqp://guest:{PASSWORD}@{CLOSED}/%2f");
            no_password(Amqp::connect(closed.as_str(), "x").await);
            let (exchange, queue) = topology(&channel, true).await;
            let id = unreachable_keeps_the_job_pending(Amqp::new(closed, &exchange).unwrap()).await;
            let relay = Relay::new(ALIAS, Amqp::new(amqp_url(), &exchange).unwrap());
            assert_eq!(relay.run_once().await.unwrap(), 1, "retried");
            let got = channel
                .basic_get(queue.as_str().into(), Default::default())
                .await
                .unwrap()
                .expect("the retried job");
            assert_eq!(
                got.delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .unwrap()
                    .as_str(),
                id
            );
            drop_topology(&channel, &exchange, &queue).await;
            let bad = format!("amqp://guest:{PASSWORD}@{CLOSED}:x/");
            let e = Amqp::new(bad, "x").unwrap_err().to_string();
            assert!(!e.contains(PASSWORD), "{e}");
        });
    }
}

mod nats {
    use super::*;
    use async_nats::jetstream::{self, consumer};

    const ENV: &str = "SQLX_ATOMIC_TEST_NATS_URL";

    fn nats_url() -> String {
        url(ENV, "nats://127.0.0.1:4222")
    }

    async fn client() -> Option<async_nats::Client> {
        broker("NATS", ENV, async_nats::connect(nats_url())).await
    }

    /// An adapter publishing under `prefix`, and a new stream (its name returned) that captures
    /// the adapter's subjects.
    async fn captured(client: &async_nats::Client, prefix: &str) -> (JetStream, String) {
        let name = unique("STREAM");
        let adapter = JetStream::from_client(client.clone(), prefix);
        adapter
            .ensure_stream(&name, [format!("{prefix}.>")])
            .await
            .unwrap();
        (adapter, name)
    }

    /// The messages of `stream`, read (and acknowledged) by a durable pull consumer.
    async fn consume(stream: &jetstream::stream::Stream) -> Vec<jetstream::Message> {
        let consumer = stream
            .get_or_create_consumer(
                "workers",
                consumer::pull::Config {
                    durable_name: Some("workers".into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut batch = consumer.fetch().max_messages(10).messages().await.unwrap();
        let mut out = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            message.ack().await.unwrap();
            out.push(message);
        }
        out
    }

    #[test]
    fn committed_jobs_become_acknowledged_jetstream_messages_and_rolled_back_ones_never_do() {
        run(|_fx| async move {
            let Some(client) = client().await else { return };
            let js = jetstream::new(client.clone());
            let prefix = unique("jobs");
            let (adapter, name) = captured(&client, &prefix).await;
            let sent = enqueue_two_and_roll_one_back().await;
            relay_delivers_both(adapter).await;

            let stream = js.get_stream(&name).await.unwrap();
            assert_eq!(stream.get_info().await.unwrap().state.messages, 2);
            let mut got: Vec<Sent> = consume(&stream)
                .await
                .iter()
                .map(|m| {
                    let headers = m.headers.as_ref().unwrap();
                    let name = m.subject.strip_prefix(&format!("{prefix}.")).unwrap();
                    Sent {
                        name: name.to_owned(),
                        key: headers.get("Job-Key").map(|v| v.as_str().to_owned()),
                        payload: serde_json::from_slice(&m.payload).unwrap(),
                        delivery_id: headers.get("Nats-Msg-Id").unwrap().as_str().to_owned(),
                    }
                })
                .collect();
            got.sort_by(|a, b| a.name.cmp(&b.name));
            assert_eq!(got, sent);
            js.delete_stream(&name).await.unwrap();
        });
    }

    #[test]
    fn jetstream_stores_a_job_delivered_twice_once() {
        run(|_fx| async move {
            let Some(client) = client().await else { return };
            let js = jetstream::new(client.clone());
            let prefix = unique("jobs");
            let (adapter, name) = captured(&client, &prefix).await;
            outbox::enqueue("twice", &serde_json::json!({ "n": 1 }))
                .using(ALIAS)
                .await
                .unwrap();
            let relay = Relay::new(ALIAS, Twice(adapter));
            assert_eq!(relay.run_once().await.unwrap(), 1);
            let stream = js.get_stream(&name).await.unwrap();
            assert_eq!(
                stream.get_info().await.unwrap().state.messages,
                1,
                "the second publication has the same Nats-Msg-Id"
            );
            js.delete_stream(&name).await.unwrap();
        });
    }

    #[test]
    fn a_subject_no_stream_captures_keeps_the_job_pending_until_one_does() {
        run(|_fx| async move {
            let Some(client) = client().await else { return };
            let prefix = unique("jobs");
            let adapter = JetStream::new(nats_url(), &prefix)
                .unwrap()
                .timeout(Duration::from_secs(5));
            outbox::enqueue("uncaptured", &serde_json::json!({ "n": 1 }))
                .using(ALIAS)
                .await
                .unwrap();
            let relay = Relay::new(ALIAS, adapter).backoff(Duration::ZERO, Duration::ZERO);
            assert_eq!(relay.run_once().await.unwrap(), 1);
            let row = &outbox_rows().await[0];
            assert_eq!((row.state, row.attempts), (0, 1), "{row:?}");
            let (_, name) = captured(&client, &prefix).await;
            assert_eq!(relay.run_once().await.unwrap(), 1);
            assert_eq!(outbox_rows().await[0].state, 1);
            let js = jetstream::new(client);
            let stream = js.get_stream(&name).await.unwrap();
            assert_eq!(stream.get_info().await.unwrap().state.messages, 1);
            js.delete_stream(&name).await.unwrap();
        });
    }

    #[test]
    fn an_unreachable_server_keeps_the_job_pending_and_shows_no_password() {
        run(|_fx| async move {
            let Some(client) = client().await else { return };
            let closed = format!("nats://user:{PASSWORD}@{CLOSED}");
            no_password(JetStream::connect(closed.as_str(), "x").await);
            let prefix = unique("jobs");
            let id =
                unreachable_keeps_the_job_pending(JetStream::new(closed, &prefix).unwrap()).await;
            let (adapter, name) = captured(&client, &prefix).await;
            assert_eq!(
                Relay::new(ALIAS, adapter).run_once().await.unwrap(),
                1,
                "retried"
            );
            let js = jetstream::new(client);
            let stream = js.get_stream(&name).await.unwrap();
            let got = consume(&stream).await;
            assert_eq!(got.len(), 1);
            assert_eq!(
                got[0]
                    .headers
                    .as_ref()
                    .unwrap()
                    .get("Nats-Msg-Id")
                    .unwrap()
                    .as_str(),
                id
            );
            js.delete_stream(&name).await.unwrap();
            // A token in the user part is a credential too.
            let token = format!("nats://{PASSWORD}@{CLOSED}");
            no_password(JetStream::connect(token, "x").await);
        });
    }
}
