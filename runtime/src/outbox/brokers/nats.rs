//! Jobs as messages of a NATS JetStream stream.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream;

use super::{BrokerError, DEFAULT_TIMEOUT, Secret, shown_url};
use crate::outbox::{Deliver, DeliverFuture, Job};

const BROKER: &str = "NATS";

/// Publishes each job to the JetStream subject `<prefix>.<job name>` and waits for JetStream's
/// acknowledgement: a job counts as delivered once a stream stored it.
///
/// Each message's body is the payload (JSON text); its header `Nats-Msg-Id` is the job's
/// [`delivery_id`](Job::delivery_id), by which JetStream drops a duplicate published within the
/// stream's duplicate window (2 minutes by default) and consumers drop the older ones: the relay
/// delivers at least once. A job with a [`key`](Job::key) carries it in the header `Job-Key`.
///
/// A subject that no stream captures is not acknowledged, so the delivery fails and is retried:
/// create the stream first (your deployment's, or [`ensure_stream`](Self::ensure_stream)).
/// No acknowledgement within the [timeout](Self::timeout), a refused publication, or a server that
/// cannot be reached fail the delivery too. Once connected, the client reconnects by itself.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use sqlx_atomic::outbox::{Relay, brokers::JetStream};
/// let nats = JetStream::connect("nats://127.0.0.1:4222", "jobs").await?;
/// nats.ensure_stream("JOBS", ["jobs.>"]).await?;
/// let relay = Relay::new("default", nats).spawn();
/// # relay.stop().await; Ok(()) }
/// ```
pub struct JetStream {
    url: Option<String>,
    shown: String,
    secret: Secret,
    prefix: String,
    timeout: Duration,
    context: tokio::sync::OnceCell<jetstream::Context>,
}

impl fmt::Debug for JetStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStream")
            .field("server", &self.shown)
            .field("subject_prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl JetStream {
    /// An adapter publishing to `<subject_prefix>.<job name>` (to the job's name alone when the
    /// prefix is empty) on the NATS server at `url` (`nats://user:password@host:4222`,
    /// `nats://token@host:4222` or `host:4222`). It connects on the first delivery; an error here
    /// is a URL that does not parse.
    pub fn new(
        url: impl Into<String>,
        subject_prefix: impl Into<String>,
    ) -> Result<Self, BrokerError> {
        let url = url.into();
        let shown = shown_url(&url);
        let secret = Secret::of_url(&url);
        if let Err(e) = url.parse::<async_nats::ServerAddr>() {
            return Err(BrokerError::new(
                BROKER,
                &shown,
                &secret,
                format_args!("not a NATS URL: {e}"),
            ));
        }
        Ok(JetStream {
            url: Some(url),
            shown,
            secret,
            prefix: subject_prefix.into(),
            timeout: DEFAULT_TIMEOUT,
            context: tokio::sync::OnceCell::new(),
        })
    }

    /// As [`new`](Self::new), connected now: an unreachable server or refused credentials fail
    /// here rather than at the first delivery.
    pub async fn connect(
        url: impl Into<String>,
        subject_prefix: impl Into<String>,
    ) -> Result<Self, BrokerError> {
        let nats = Self::new(url, subject_prefix)?;
        nats.context().await?;
        Ok(nats)
    }

    /// An adapter publishing with an existing client (its connection options, credentials and
    /// reconnection policy are the client's).
    pub fn from_client(client: async_nats::Client, subject_prefix: impl Into<String>) -> Self {
        let info = client.server_info();
        let shown = format!("nats://{}:{}", info.host, info.port);
        let timeout = DEFAULT_TIMEOUT;
        let context = tokio::sync::OnceCell::new_with(Some(Self::jetstream(client, timeout)));
        JetStream {
            url: None,
            shown,
            secret: Secret::default(),
            prefix: subject_prefix.into(),
            timeout,
            context,
        }
    }

    /// How long connecting, and each publication until its acknowledgement, may take before the
    /// delivery fails (10 s by default).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        if let Some(context) = self.context.get_mut() {
            context.set_timeout(limit);
        }
        self
    }

    /// The subject a job named `name` is published to.
    pub fn subject(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Creates the stream `name` capturing `subjects` (with JetStream's defaults: file storage,
    /// limits retention, a 2-minute duplicate window) unless a stream of that name exists, which is
    /// left as it is. For deployments that do not create their streams themselves.
    pub async fn ensure_stream<S: Into<String>>(
        &self,
        name: &str,
        subjects: impl IntoIterator<Item = S>,
    ) -> Result<(), BrokerError> {
        let context = self.context().await?;
        let config = jetstream::stream::Config {
            name: name.to_owned(),
            subjects: subjects.into_iter().map(Into::into).collect(),
            ..Default::default()
        };
        match tokio::time::timeout(self.timeout, context.get_or_create_stream(config)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.error(format_args!("cannot create the stream `{name}`: {e}"))),
            Err(_) => Err(self.error(format_args!(
                "cannot create the stream `{name}`: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    fn jetstream(client: async_nats::Client, timeout: Duration) -> jetstream::Context {
        let mut context = jetstream::new(client);
        context.set_timeout(timeout);
        context
    }

    fn error(&self, message: impl fmt::Display) -> BrokerError {
        BrokerError::new(BROKER, &self.shown, &self.secret, message)
    }

    /// The JetStream context, connecting first if this adapter has no client yet.
    async fn context(&self) -> Result<&jetstream::Context, BrokerError> {
        self.context
            .get_or_try_init(|| async {
                let Some(url) = self.url.as_deref() else {
                    return Err(self.error("no client"));
                };
                let options = async_nats::ConnectOptions::new().connection_timeout(self.timeout);
                match tokio::time::timeout(
                    self.timeout,
                    async_nats::connect_with_options(url, options),
                )
                .await
                {
                    Ok(Ok(client)) => Ok(Self::jetstream(client, self.timeout)),
                    Ok(Err(e)) => Err(self.error(format_args!("cannot connect: {e}"))),
                    Err(_) => Err(self.error(format_args!(
                        "cannot connect: no answer within {:?}",
                        self.timeout
                    ))),
                }
            })
            .await
    }

    async fn publish(&self, job: &Job) -> Result<(), BrokerError> {
        let context = self.context().await?;
        let subject = self.subject(&job.name);
        if !is_subject(&subject) {
            return Err(self.error(format_args!(
                "job `{}`: `{subject}` is not a NATS subject to publish to (tokens separated by \
                 dots, no whitespace, no wildcards)",
                job.name.chars().take(64).collect::<String>()
            )));
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            job.delivery_id.as_str(),
        );
        if let Some(key) = &job.key {
            headers.insert("Job-Key", key.as_str());
        }
        let acked = tokio::time::timeout(self.timeout, async {
            context
                .publish_with_headers(subject.clone(), headers, job.payload.clone().into())
                .await?
                .await
        })
        .await;
        match acked {
            // A duplicate (a job published again within the duplicate window) is stored already.
            Ok(Ok(_ack)) => Ok(()),
            Ok(Err(e)) => Err(self.error(format_args!(
                "publishing job `{}` to `{subject}` failed: {e}",
                job.name
            ))),
            Err(_) => Err(self.error(format_args!(
                "publishing job `{}` to `{subject}`: no acknowledgement within {:?}",
                job.name, self.timeout
            ))),
        }
    }
}

/// Whether `subject` can be published to: non-empty tokens separated by dots, without whitespace
/// or wildcards.
fn is_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token.chars().any(char::is_whitespace)
        })
}

impl Deliver for JetStream {
    fn deliver<'a>(&'a self, job: &'a Job) -> DeliverFuture<'a> {
        Box::pin(async move { self.publish(job).await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn subjects_to_publish_to() {
        assert!(super::is_subject("jobs.send_receipt"));
        assert!(super::is_subject("jobs.order.created"));
        for bad in [
            "", "jobs.", "jobs..x", "jobs.a b", "jobs.*", "jobs.>", ".x", "a\r\nb",
        ] {
            assert!(!super::is_subject(bad), "{bad:?}");
        }
    }
}
