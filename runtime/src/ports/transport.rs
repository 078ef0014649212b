//! The transport port: what the bus actors (publisher, consumer) need from
//! a broker. The in-memory broker implements it first and is the reference;
//! RabbitMQ and NATS adapters implement the same contract and pass the same
//! conformance suite (`integration/src/conformance/transport.rs`, run per
//! transport by `integration/tests/transport_<name>.rs`), except
//! for cases tagged with a [`Capabilities`] flag they lack.
//!
//! The contract, for every adapter:
//! - [`Transport::publish`] resolves only once the broker has taken
//!   responsibility for the message (a confirm), or with a [`PublishError`]
//!   saying why not. An unroutable message is an error, never a silent drop.
//! - A [`Subscription`] delivers at most `prefetch` unacknowledged messages.
//!   Each delivery ends in exactly one `ack` or `nack`.
//! - A subscription that ends (consumer cancelled by the broker, queue
//!   deleted, connection lost) says so with [`SubscriptionEvent::Ended`];
//!   it is never mistaken for "no more work".

use std::num::NonZeroU16;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::BoxFuture;
use crate::metrics::ActorMetrics;
use crate::ports::wire::WireMessage;

/// Where a message is published.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    /// An exchange and a routing key, matched against its bindings.
    Exchange {
        /// The exchange's name.
        exchange: String,
        /// The routing key.
        routing_key: String,
    },
    /// Straight to one queue (AMQP's default exchange), as retries and dead
    /// letters are.
    Queue(String),
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Where it goes.
    pub destination: Destination,
    /// What it is.
    pub message: WireMessage,
    /// Deliver no earlier than this from now (retries with backoff). Needs
    /// [`Capabilities::delayed_delivery`].
    pub delay: Option<Duration>,
}

/// What a transport can do, for tagging conformance cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// `Outgoing::delay` is honoured.
    pub delayed_delivery: bool,
    /// Queues can be bounded (`QueueSpec::max_length`).
    pub bounded_queues: bool,
    /// Exchanges of kind `Headers` exist.
    pub headers_exchange: bool,
}

impl Capabilities {
    /// Every capability.
    pub fn all() -> Self {
        Capabilities { delayed_delivery: true, bounded_queues: true, headers_exchange: true }
    }
}

/// How an exchange matches routing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeKind {
    /// Exact routing-key match.
    Direct,
    /// `*` matches one dot-separated word, `#` zero or more.
    Topic,
    /// Every bound queue.
    Fanout,
    /// Matches on headers.
    Headers,
}

/// An exchange to declare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeSpec {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: ExchangeKind,
    /// Survives a broker restart. Default `true` in a topology file.
    #[serde(default = "durable_by_default")]
    pub durable: bool,
}

fn durable_by_default() -> bool {
    true
}

/// How a broker stores a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    /// One copy (RabbitMQ's classic queue).
    #[default]
    Classic,
    /// Replicated with Raft (RabbitMQ's quorum queue; always durable).
    Quorum,
}

/// What a full bounded queue does with one more message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// The publish fails with [`PublishError::QueueFull`] (RabbitMQ's
    /// `reject-publish`).
    #[default]
    RejectPublish,
    /// The publish waits until there is room.
    Block,
}

/// A queue to declare. In a topology file only `name` is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    /// Its name.
    pub name: String,
    /// Survives a broker restart (and so do its persistent messages).
    /// Default `true` in a topology file.
    #[serde(default = "durable_by_default")]
    pub durable: bool,
    /// How the broker stores it.
    #[serde(default)]
    pub kind: QueueKind,
    /// At most this many ready messages.
    #[serde(default)]
    pub max_length: Option<u32>,
    /// What happens past `max_length`.
    #[serde(default)]
    pub overflow: Overflow,
    /// Messages older than this many milliseconds expire (and are
    /// dead-lettered, if the queue has a destination for that).
    #[serde(default)]
    pub message_ttl_ms: Option<u64>,
    /// Where rejected-without-requeue and expired messages go.
    #[serde(default)]
    pub dead_letter: Option<Destination>,
}

impl QueueSpec {
    /// A durable, unbounded queue.
    pub fn durable(name: impl Into<String>) -> Self {
        QueueSpec {
            name: name.into(),
            durable: true,
            kind: QueueKind::Classic,
            max_length: None,
            overflow: Overflow::default(),
            message_ttl_ms: None,
            dead_letter: None,
        }
    }
}

/// A binding of a queue to an exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// The exchange.
    pub exchange: String,
    /// The queue.
    pub queue: String,
    /// The routing key or pattern.
    pub routing_key: String,
}

/// Exchanges, queues and bindings, declared idempotently.
///
/// Also the shape of a topology file ([`Topology::from_toml`]):
///
/// ```toml
/// [[exchanges]]
/// name = "orders"
/// kind = "topic"
///
/// [[queues]]
/// name = "billing"
/// kind = "quorum"
/// max_length = 100000
///
/// [[bindings]]
/// exchange = "orders"
/// queue = "billing"
/// routing_key = "orders.#"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Exchanges.
    #[serde(default)]
    pub exchanges: Vec<ExchangeSpec>,
    /// Queues.
    #[serde(default)]
    pub queues: Vec<QueueSpec>,
    /// Bindings.
    #[serde(default)]
    pub bindings: Vec<Binding>,
}

/// Why a topology file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topology file: {0}")]
pub struct TopologyFileError(String);

impl Topology {
    /// Reads a topology from TOML text (the format in the type's docs); an
    /// unknown key is an error, not ignored.
    ///
    /// # Errors
    /// [`TopologyFileError`] naming the line and the problem.
    pub fn from_toml(text: &str) -> Result<Self, TopologyFileError> {
        toml::from_str(text).map_err(|error| TopologyFileError(error.to_string()))
    }

    /// Adds everything in `other` that is not here yet (by name; bindings by
    /// value).
    pub fn merge(&mut self, other: &Topology) {
        for exchange in &other.exchanges {
            if !self.exchanges.iter().any(|known| known.name == exchange.name) {
                self.exchanges.push(exchange.clone());
            }
        }
        for queue in &other.queues {
            if !self.queues.iter().any(|known| known.name == queue.name) {
                self.queues.push(queue.clone());
            }
        }
        for binding in &other.bindings {
            if !self.bindings.contains(binding) {
                self.bindings.push(binding.clone());
            }
        }
    }
}

/// A broker's acknowledgement handle for one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryTag(pub u64);

/// One message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Ack or nack with this.
    pub tag: DeliveryTag,
    /// The message.
    pub message: WireMessage,
    /// The queue it came from.
    pub queue: String,
    /// The exchange it was published to (empty for a direct-to-queue publish).
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Whether the broker delivered it before (after a nack or a lost consumer).
    pub redelivered: bool,
}

/// What a subscription yields next.
#[derive(Debug)]
// Deliveries are the common case; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum SubscriptionEvent {
    /// A message to handle.
    Delivery(Delivery),
    /// The subscription is over and will yield nothing more: the consumer was
    /// cancelled by the broker, its queue deleted, or the connection lost.
    /// Unacknowledged deliveries return to the queue.
    Ended(String),
}

/// A consumer on one queue. `Sync` so that one task can hold it across the
/// awaits of several acknowledgements.
///
/// After [`Subscription::cancel`], `next` yields [`SubscriptionEvent::Ended`]
/// and acknowledging a delivery that was returned to the queue fails.
pub trait Subscription: Send + Sync {
    /// Waits for the next event.
    ///
    /// # Cancel safety
    /// Cancel safe: a delivery is only handed out when this resolves.
    fn next(&mut self) -> BoxFuture<'_, SubscriptionEvent>;

    /// The broker may forget `tag`: the message was handled.
    ///
    /// The future does not borrow the subscription, so a consumer can keep
    /// several acknowledgements in flight while it waits for the next
    /// delivery; the broker is told when the future is polled.
    fn ack(&self, tag: DeliveryTag) -> BoxFuture<'static, Result<(), TransportError>>;

    /// The message was not handled: back to the queue when `requeue`, else
    /// dead-lettered (or dropped, if the queue has no dead-letter destination).
    /// Like [`Subscription::ack`], the future does not borrow the subscription.
    fn nack(&self, tag: DeliveryTag, requeue: bool) -> BoxFuture<'static, Result<(), TransportError>>;

    /// Stops deliveries; unacknowledged ones return to the queue.
    fn cancel(&mut self) -> BoxFuture<'_, Result<(), TransportError>>;
}

/// A broker connection.
pub trait Transport: Send + Sync + 'static {
    /// A short name for logs and metrics (`memory`, `rabbitmq`).
    fn name(&self) -> &'static str;

    /// What this transport can do.
    fn capabilities(&self) -> Capabilities;

    /// Declares `topology`; declaring what exists already is a no-op.
    ///
    /// # Errors
    /// [`TransportError::Conflict`] when a declaration differs from what
    /// exists, naming the thing and the property.
    fn declare<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<(), TransportError>>;

    /// Publishes and waits for the broker's confirm.
    ///
    /// # Errors
    /// [`PublishError`], one variant per way a publish can fail.
    fn publish(&self, message: Outgoing) -> BoxFuture<'_, Result<(), PublishError>>;

    /// Starts consuming `queue` with at most `prefetch` unacknowledged
    /// deliveries.
    ///
    /// # Errors
    /// [`TransportError::NotFound`] when the queue does not exist.
    fn consume<'a>(
        &'a self,
        queue: &'a str,
        prefetch: NonZeroU16,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, TransportError>>;

    /// Whether this transport holds a connection to a broker that
    /// [`keep_connected`](Transport::keep_connected) looks after (the
    /// in-process broker has none).
    fn has_connection(&self) -> bool {
        false
    }

    /// Looks after the broker connection for as long as the future runs:
    /// notices a drop, reconnects with the transport's backoff, and
    /// declares again what it owns, without waiting for traffic to need the
    /// connection. Each reconnection attempt is recorded in `metrics`
    /// (`ok`: connected again, `error`: the attempt failed). The bus runs it
    /// as its supervised `bus/connection` actor when
    /// [`has_connection`](Transport::has_connection); an `Err` fails that
    /// actor, and its supervisor restarts it.
    fn keep_connected<'a>(&'a self, metrics: &'a ActorMetrics) -> BoxFuture<'a, Result<(), TransportError>> {
        let _ = metrics;
        Box::pin(std::future::pending())
    }
}

/// A shared transport is a transport: keep a handle (for operator
/// functions) and give the system a clone.
impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }

    fn declare<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<(), TransportError>> {
        (**self).declare(topology)
    }

    fn publish(&self, message: Outgoing) -> BoxFuture<'_, Result<(), PublishError>> {
        (**self).publish(message)
    }

    fn consume<'a>(
        &'a self,
        queue: &'a str,
        prefetch: NonZeroU16,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, TransportError>> {
        (**self).consume(queue, prefetch)
    }

    fn has_connection(&self) -> bool {
        (**self).has_connection()
    }

    fn keep_connected<'a>(&'a self, metrics: &'a ActorMetrics) -> BoxFuture<'a, Result<(), TransportError>> {
        (**self).keep_connected(metrics)
    }
}

/// Why a publish was not confirmed. The caller (an outbox relay, a retry)
/// still owns the message and decides whether to try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// Nothing is bound for this destination.
    #[error("unroutable: no queue is bound for {0:?}")]
    Unroutable(Destination),
    /// The broker refused the message.
    #[error("the broker refused the message: {0}")]
    Nacked(String),
    /// A bounded queue is full and rejects publishes.
    #[error("queue `{0}` is full")]
    QueueFull(String),
    /// The message is larger than the transport allows.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// No confirm in time.
    #[error("no confirm within {0:?}")]
    Timeout(Duration),
    /// The channel or connection closed before the confirm.
    #[error("connection lost before the confirm: {0}")]
    ConnectionLost(String),
    /// The destination does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// Refused before sending: a name, routing key or header breaks the
    /// broker's limits (which would otherwise close the connection).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// Why a transport operation other than publish failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A declaration differs from what exists.
    #[error("{kind} `{name}` already exists with a different {property}")]
    Conflict {
        /// `exchange` or `queue`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The property that differs.
        property: String,
    },
    /// A queue, exchange or delivery does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// A name or a size is invalid.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The connection is gone.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
}
