//! Jobs as persistent messages on an AMQP 0-9-1 exchange (RabbitMQ), with publisher confirms.

use std::fmt;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};

use super::{BrokerError, DEFAULT_TIMEOUT, Secret, shown_url};
use crate::outbox::{Deliver, DeliverFuture, Job};

const BROKER: &str = "AMQP";

/// Publishes each job as a message on an AMQP exchange (RabbitMQ) and waits for the broker's
/// publisher confirm: a job counts as delivered once the broker confirmed the message, which for a
/// persistent message routed to durable queues means it is written to disk.
///
/// Each message is **persistent** (delivery mode 2), its `message_id` is the job's
/// [`delivery_id`](Job::delivery_id) (consumers drop duplicates by it: the relay delivers at least
/// once), its `type` the job's name, its content type `application/json` and its body the
/// payload. A job with a [`key`](Job::key) carries it in the header `x-job-key`. The routing key
/// is the job's name, or the fixed one given to [`routing_key`](Self::routing_key).
///
/// Messages are published **mandatory**: a message no queue receives (no binding matches) comes
/// back from the broker and the delivery fails, to be retried once a queue is bound, where
/// RabbitMQ would otherwise confirm it and drop it. [`mandatory(false)`](Self::mandatory) accepts
/// such drops. A negative acknowledgement, an exchange that does not exist (the broker closes the
/// channel), a closed connection or no answer within the [timeout](Self::timeout) fail the
/// delivery too; the next delivery opens a new channel, and a new connection if needed.
///
/// Declaring the exchange, the queues and their bindings is the application's: the adapter only
/// publishes.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use sqlx_atomic::outbox::{Relay, brokers::Amqp};
/// let amqp = Amqp::connect("amqp://guest:guest@127.0.0.1:5672/%2f", "orders").await?;
/// let relay = Relay::new("default", amqp).spawn();
/// # relay.stop().await; Ok(()) }
/// ```
pub struct Amqp {
    url: String,
    shown: String,
    secret: Secret,
    exchange: ShortString,
    routing_key: Option<String>,
    mandatory: bool,
    timeout: Duration,
    link: tokio::sync::Mutex<Option<Link>>,
}

/// An open connection and its confirm-mode channel.
struct Link {
    // Held so that the connection stays open as long as the link (the channel holds it too).
    _connection: Connection,
    channel: Channel,
}

impl fmt::Debug for Amqp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Amqp")
            .field("broker", &self.shown)
            .field("exchange", &self.exchange.as_str())
            .field("routing_key", &self.routing_key)
            .field("mandatory", &self.mandatory)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Amqp {
    /// An adapter publishing to `exchange` (`""` is the default exchange, which routes by queue
    /// name) of the broker at `url` (`amqp://user:password@host:5672/vhost`, the vhost
    /// percent-encoded: `%2f` for `/`). It connects on the first delivery; an error here is a URL
    /// that does not parse or an exchange name longer than 255 bytes.
    pub fn new(url: impl Into<String>, exchange: impl Into<String>) -> Result<Self, BrokerError> {
        let url = url.into();
        let shown = shown_url(&url);
        let secret = Secret::of_url(&url);
        let fail = |m: String| BrokerError::new(BROKER, &shown, &secret, m);
        url.parse::<lapin::uri::AMQPUri>()
            .map_err(|e| fail(format!("not an AMQP URL: {e}")))?;
        let exchange = ShortString::try_new(exchange.into())
            .map_err(|e| fail(format!("the exchange name is not valid: {e}")))?;
        Ok(Amqp {
            url,
            shown,
            secret,
            exchange,
            routing_key: None,
            mandatory: true,
            timeout: DEFAULT_TIMEOUT,
            link: tokio::sync::Mutex::new(None),
        })
    }

    /// As [`new`](Self::new), connected now: an unreachable broker or refused credentials fail
    /// here rather than at the first delivery.
    pub async fn connect(
        url: impl Into<String>,
        exchange: impl Into<String>,
    ) -> Result<Self, BrokerError> {
        let amqp = Self::new(url, exchange)?;
        amqp.channel().await?;
        Ok(amqp)
    }

    /// Publishes every job with this routing key instead of the job's name (the consumers read
    /// the name in the message's `type`).
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = Some(key.into());
        self
    }

    /// Whether a message that no queue receives fails its delivery (`true`, the default) or is
    /// confirmed and dropped by the broker (`false`).
    pub fn mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }

    /// How long connecting, and each publication until its confirm, may take before the delivery
    /// fails (10 s by default).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    fn error(&self, message: impl fmt::Display) -> BrokerError {
        BrokerError::new(BROKER, &self.shown, &self.secret, message)
    }

    /// The confirm-mode channel, opened (with its connection, if that is closed too) when there
    /// is none or the broker closed it.
    async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut link = self.link.lock().await;
        if let Some(l) = link.as_ref()
            && l.channel.status().connected()
        {
            return Ok(l.channel.clone());
        }
        let reuse = link
            .take()
            .map(|l| l._connection)
            .filter(|c| c.status().connected());
        let open = async {
            let connection = match reuse {
                Some(c) => c,
                None => Connection::connect(&self.url, ConnectionProperties::default())
                    .await
                    .map_err(|e| format!("cannot connect: {e}"))?,
            };
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| format!("cannot open a channel: {e}"))?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| format!("cannot turn publisher confirms on: {e}"))?;
            Ok::<_, String>(Link {
                _connection: connection,
                channel,
            })
        };
        let opened = match tokio::time::timeout(self.timeout, open).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return Err(self.error(e)),
            Err(_) => {
                return Err(self.error(format_args!(
                    "cannot connect: no answer within {:?}",
                    self.timeout
                )));
            }
        };
        let channel = opened.channel.clone();
        *link = Some(opened);
        Ok(channel)
    }

    async fn publish(&self, job: &Job) -> Result<(), BrokerError> {
        let short = |what: &str, value: &str| {
            ShortString::try_new(value).map_err(|e| {
                self.error(format_args!(
                    "job `{}`: the {what} is not a valid AMQP short string: {e}",
                    job.name.chars().take(64).collect::<String>()
                ))
            })
        };
        let routing_key = short(
            "routing key",
            self.routing_key.as_deref().unwrap_or(&job.name),
        )?;
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(short("delivery id", &job.delivery_id)?)
            .with_type(short("name", &job.name)?)
            .with_content_type(ShortString::from("application/json"));
        if let Some(key) = &job.key {
            let mut headers = FieldTable::default();
            headers.insert(
                ShortString::from("x-job-key"),
                AMQPValue::LongString(key.as_str().into()),
            );
            properties = properties.with_headers(headers);
        }
        let channel = self.channel().await?;
        let options = BasicPublishOptions {
            mandatory: self.mandatory,
            ..BasicPublishOptions::default()
        };
        let confirmed = tokio::time::timeout(self.timeout, async {
            channel
                .basic_publish(
                    self.exchange.clone(),
                    routing_key,
                    options,
                    job.payload.as_bytes(),
                    properties,
                )
                .await?
                .await
        })
        .await;
        match confirmed {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(self.error(format_args!(
                "no queue receives job `{}` on exchange `{}` (the broker returned it: {} {})",
                job.name, self.exchange, returned.reply_code, returned.reply_text
            ))),
            Ok(Ok(Confirmation::Nack(_))) => Err(self.error(format_args!(
                "the broker refused job `{}` (negative acknowledgement)",
                job.name
            ))),
            Ok(Ok(Confirmation::NotRequested)) => {
                Err(self
                    .error("the channel is not in confirm mode: the broker's receipt is unknown"))
            }
            Ok(Err(e)) => Err(self.error(format_args!(
                "publishing job `{}` on exchange `{}` failed: {e}",
                job.name, self.exchange
            ))),
            Err(_) => {
                // A broker that stopped answering: the next delivery starts afresh.
                *self.link.lock().await = None;
                Err(self.error(format_args!(
                    "publishing job `{}`: no confirm within {:?}",
                    job.name, self.timeout
                )))
            }
        }
    }
}

impl Deliver for Amqp {
    fn deliver<'a>(&'a self, job: &'a Job) -> DeliverFuture<'a> {
        Box::pin(async move { self.publish(job).await.map_err(Into::into) })
    }
}
