//! Relay targets that hand jobs to a message broker (features `outbox-redis`, `outbox-amqp`,
//! `outbox-nats`).
//!
//! Each adapter implements [`Deliver`](super::Deliver): a [`Relay`](super::Relay) given one
//! publishes every committed job to the broker and marks the job delivered only once **the broker
//! acknowledged it**:
//!
//! | adapter | feature | a job becomes | acknowledged by |
//! |---|---|---|---|
//! | [`RedisStream`] | `outbox-redis` | an entry of a Redis stream (`XADD`) | the reply to `XADD` |
//! | [`Amqp`] | `outbox-amqp` | a persistent message on an exchange (RabbitMQ) | the publisher confirm |
//! | [`JetStream`] | `outbox-nats` | a message on a NATS JetStream subject | the JetStream ack |
//!
//! A failed publish, a negative acknowledgement, a broker that cannot be reached or does not
//! answer within the adapter's [timeout](RedisStream::timeout) (10 s by default) makes the delivery
//! fail: the relay retries the job later, with its backoff, and the adapter connects again.
//!
//! **Delivery is at least once**, as everywhere in the outbox: a relay that stops after the
//! broker's acknowledgement and before it records the delivery publishes the job again. Every
//! message carries the job's [`delivery_id`](super::Job::delivery_id), the same on every
//! publication, for consumers to drop duplicates by: the `delivery_id` field of a Redis entry, the
//! `message_id` property of an AMQP message, the `Nats-Msg-Id` header of a NATS message (by which
//! JetStream itself drops a duplicate published within the stream's duplicate window).
//!
//! No credential appears in what the adapters show: their `Debug` output names the broker's host
//! and port without the password, and their errors ([`BrokerError`], and the delivery errors the
//! relay records in the outbox table) have the URL's password removed.
//!
//! The client crates are re-exported ([`redis`], [`lapin`], [`async_nats`]) so that the clients
//! given to the adapters and the consumers' clients are of the version the adapters are built
//! with.

use std::fmt;
use std::time::Duration;

#[cfg(feature = "outbox-amqp")]
#[path = "amqp.rs"]
mod amqp_exchange;
#[cfg(feature = "outbox-nats")]
#[path = "nats.rs"]
mod nats_jetstream;
#[cfg(feature = "outbox-redis")]
#[path = "redis.rs"]
mod redis_stream;

#[cfg(feature = "outbox-nats")]
pub use async_nats;
#[cfg(feature = "outbox-amqp")]
pub use lapin;
#[cfg(feature = "outbox-redis")]
pub use redis;

#[cfg(feature = "outbox-amqp")]
pub use amqp_exchange::Amqp;
#[cfg(feature = "outbox-nats")]
pub use nats_jetstream::JetStream;
#[cfg(feature = "outbox-redis")]
pub use redis_stream::{RedisStream, RedisTarget};

/// How long a connection or a publication may take before the delivery fails, by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker adapter's error: which broker, where (without credentials), and what went wrong.
///
/// The message never holds the password of the broker's URL.
///
/// ```
/// # #[cfg(feature = "outbox-amqp")] {
/// use sqlx_atomic::outbox::brokers::Amqp;
/// let err = Amqp::new("http://guest:s3cret@broker", "orders").unwrap_err();
/// assert!(err.to_string().starts_with("AMQP at http://guest:***@broker:"), "{err}");
/// assert!(!err.to_string().contains("s3cret"));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BrokerError {
    broker: &'static str,
    target: String,
    message: String,
}

impl BrokerError {
    /// An error of `broker` at `target` (already without credentials); `message` has `secret`
    /// removed, in every form it may take.
    pub(crate) fn new(
        broker: &'static str,
        target: &str,
        secret: &Secret,
        message: impl fmt::Display,
    ) -> Self {
        BrokerError {
            broker,
            target: target.to_owned(),
            message: secret.scrub(&message.to_string()),
        }
    }

    /// The broker: `"Redis"`, `"AMQP"` or `"NATS"`.
    pub fn broker(&self) -> &'static str {
        self.broker
    }

    /// What went wrong, without the broker's name and address.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}: {}", self.broker, self.target, self.message)
    }
}

impl std::error::Error for BrokerError {}

/// A URL's password, to be kept out of every message: as written in the URL (percent-encoded)
/// and decoded, as a client may quote either.
#[derive(Clone, Default)]
pub(crate) struct Secret {
    forms: Vec<String>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// The password of `url`, if it has one (and that of a `password=` query parameter).
    pub(crate) fn of_url(url: &str) -> Self {
        let mut forms = Vec::new();
        if let Some(pw) = credential_of(url) {
            forms.push(pw.to_owned());
        }
        if let Some((_, query)) = url.split_once('?') {
            for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
                if k.eq_ignore_ascii_case("password") && !v.is_empty() {
                    forms.push(v.to_owned());
                }
            }
        }
        let decoded: Vec<String> = forms
            .iter()
            .filter_map(|f| crate::pool_config::percent_decode(f))
            .collect();
        forms.extend(decoded);
        Secret::of(forms)
    }

    /// The given secrets (empty ones are ignored).
    pub(crate) fn of(forms: impl IntoIterator<Item = String>) -> Self {
        let mut forms: Vec<String> = forms.into_iter().filter(|f| !f.is_empty()).collect();
        // The longest first, so that a secret containing another is removed whole.
        forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        forms.dedup();
        Secret { forms }
    }

    /// `message` with every form of the secret replaced by `***`.
    pub(crate) fn scrub(&self, message: &str) -> String {
        let mut out = message.to_owned();
        for f in &self.forms {
            out = out.replace(f.as_str(), "***");
        }
        out
    }
}

/// The secret part of a URL's user information: the password of `scheme://user:password@host`,
/// or the whole of `scheme://token@host` (NATS reads a lone user part as a token).
fn credential_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let secret = userinfo.split_once(':').map_or(userinfo, |(_, pw)| pw);
    (!secret.is_empty()).then_some(secret)
}

/// The scheme, user, host and port of a URL, without password, token, path or query: what an
/// adapter shows of where it connects. A lone user part (`nats://token@host`) may be a token, and
/// is hidden too.
pub(crate) fn shown_url(url: &str) -> String {
    let redacted = crate::redact::redact_url(url);
    let (scheme, rest) = match redacted.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), redacted.as_str()),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}{user}:***@{host}"),
            None => format!("{scheme}***@{host}"),
        },
        None => format!("{scheme}{authority}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_removed_in_every_form() {
        let s = Secret::of_url("amqp://bob:p%40ss@host:5672/%2f?password=qp");
        assert_eq!(s.scrub("p%40ss p@ss qp and more"), "*** *** *** and more");
        assert_eq!(Secret::of_url("redis://host").scrub("nothing"), "nothing");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn shown_urls_keep_the_host_only() {
        assert_eq!(
            shown_url("amqp://bob:p%40ss@host:5672/%2f?heartbeat=5"),
            "amqp://bob:***@host:5672"
        );
        assert_eq!(
            shown_url("nats://t0ken@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222"
        );
        assert_eq!(shown_url("nats://127.0.0.1"), "nats://127.0.0.1");
        assert_eq!(shown_url("u:pw@127.0.0.1:4222/x"), "u:***@127.0.0.1:4222");
        assert_eq!(
            Secret::of_url("nats://t0ken@127.0.0.1:4222").scrub("bad t0ken"),
            "bad ***"
        );
    }
}
