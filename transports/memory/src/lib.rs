//! Hexeract's in-process broker: the transport a system uses when none is
//! configured, and the reference every other transport is measured against
//! (they all pass the conformance suite in `integration/`).
//!
//! [`MemoryTransport`] implements the [`Transport`] port with AMQP's model:
//! exchanges (direct, topic, fanout, headers) route to queues through
//! bindings, consumers receive deliveries within a prefetch and settle each
//! with an ack or a nack. It is a real broker, not a stub: publishes are
//! confirmed or refused with a reason, bounded queues are bounded, delayed
//! messages wait, rejected ones are dead-lettered. Everything lives in this
//! process and disappears with it; `durable` is recorded (and compared on
//! re-declaration) but means nothing more here.
//!
//! # Semantics
//!
//! - **Names.** Exchange and queue names are non-empty, at most 255 bytes
//!   and outside the reserved `amq.` namespace; routing keys, header names
//!   and the `message_id`, `correlation_id`, `type` and `content_type`
//!   properties are at most 255 bytes (AMQP's short-string limit, which
//!   would kill a RabbitMQ connection). A bad name in a declaration is
//!   [`TransportError::Invalid`]; a bad publish is [`PublishError::Nacked`].
//! - **Declaring** is all or nothing and idempotent. Re-declaring an
//!   exchange or queue with another `kind`, `durable`, `max_length`,
//!   `overflow` or `dead_letter` is [`TransportError::Conflict`] naming that
//!   property; a binding to an exchange or queue that does not exist (and is
//!   not declared in the same [`Topology`]) is [`TransportError::NotFound`].
//! - **Routing.** Topic patterns match dot-separated words, `*` exactly one
//!   and `#` zero or more. The empty exchange name is AMQP's default
//!   exchange: `Destination::Exchange { exchange: "", routing_key: q }` is
//!   `Destination::Queue(q)`. A delivery reports the exchange and routing
//!   key it was published with (`""` and the queue name for a direct
//!   publish).
//! - **Headers exchanges.** AMQP puts the match in binding arguments, which
//!   [`Binding`] does not have, so a headers binding's `routing_key` holds
//!   it: comma-separated `name=value` rules, a bare `name` for "present with
//!   any value", and optionally `x-match=all` (the default: every rule
//!   holds) or `x-match=any` (one does). Whitespace around names and values
//!   is ignored. `"x-match=any, format=pdf, type=report"` routes a message
//!   whose `format` header is `pdf` or whose `type` is `report`. An empty
//!   key matches every message.
//! - **Publish** resolves as a confirm, in one step: the message is in every
//!   matching queue, or in none and the error says why:
//!   [`PublishError::NotFound`] (no such exchange or queue),
//!   [`PublishError::Unroutable`] (no binding matched),
//!   [`PublishError::QueueFull`] (a full queue with
//!   [`Overflow::RejectPublish`]), [`PublishError::TooLarge`] (over
//!   [`MemoryTransportBuilder::max_message_size`], counting the body and
//!   every property and header), [`PublishError::ConnectionLost`] (after
//!   [`MemoryTransport::disconnect`]). With [`Overflow::Block`] the publish
//!   waits, without polling, until a consumer, a purge or a deletion makes
//!   room.
//! - **Bounds.** `max_length` counts a queue's ready and delayed messages,
//!   as RabbitMQ counts ready ones: delivered-but-unacked messages are
//!   bounded by the consumers' prefetch instead. A delivery returned to its
//!   queue (nack with requeue, cancel, a lost connection) and a dead letter
//!   are already inside the broker, so they are placed even past the bound:
//!   refusing them could only lose them. Nothing else grows without bound:
//!   each consumer holds at most `prefetch` deliveries and there are no
//!   internal channels.
//! - **Delays.** A message published with `delay` is routed and checked at
//!   once (so errors come back from `publish`), holds its place in the
//!   queue's bound, and becomes visible after the delay on the tokio clock,
//!   so tests may pause time or use real time.
//! - **Consume.** Each subscription has at most `prefetch` unsettled
//!   deliveries; messages go round-robin to the subscriptions that have
//!   room. `nack(tag, true)` puts the message back at the head of its queue
//!   with `redelivered = true`; `nack(tag, false)` moves it to the queue's
//!   `dead_letter` destination with the headers
//!   [`x-dead-letter-reason`](hexeract_runtime::ports::wire::DEAD_LETTER_REASON)
//!   (`rejected`), `x-original-queue`, `x-original-exchange` and
//!   `x-original-routing-key` added unless already set; without a
//!   destination, or when it routes nowhere, the message is dropped, logged
//!   and counted in [`MemoryTransport::dropped_dead_letters`]. Settling a tag
//!   twice, or one the subscription never returned, is
//!   [`TransportError::NotFound`]. `cancel`, or dropping the subscription,
//!   returns every unsettled delivery to the head of its queue, in order;
//!   those the application had seen come back with `redelivered = true`.
//!
//! # Operator hooks
//!
//! For tests and operators: [`MemoryTransport::delete_queue`] (its
//! subscriptions end), [`MemoryTransport::disconnect`] and
//! [`MemoryTransport::reconnect`] (simulated connection loss),
//! [`MemoryTransport::queue_depth`], [`MemoryTransport::queue_stats`],
//! [`MemoryTransport::purge`] and [`MemoryTransport::peek`].
//!
//! # Examples
//!
//! ```
//! use std::num::NonZeroU16;
//! use hexeract_runtime::ports::transport::{
//!     Binding, Destination, ExchangeKind, ExchangeSpec, Outgoing, QueueSpec, SubscriptionEvent, Topology, Transport,
//! };
//! use hexeract_runtime::ports::wire::WireMessage;
//! use hexeract_transport_memory::MemoryTransport;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = MemoryTransport::new();
//! broker
//!     .declare(&Topology {
//!         exchanges: vec![ExchangeSpec { name: "orders".into(), kind: ExchangeKind::Topic, durable: true }],
//!         queues: vec![QueueSpec::durable("billing")],
//!         bindings: vec![Binding { exchange: "orders".into(), queue: "billing".into(), routing_key: "orders.#".into() }],
//!     })
//!     .await?;
//!
//! let message = WireMessage { body: b"{}".to_vec(), ..WireMessage::default() };
//! let destination = Destination::Exchange { exchange: "orders".into(), routing_key: "orders.placed".into() };
//! broker.publish(Outgoing { destination, message, delay: None }).await?; // confirmed
//!
//! let mut billing = broker.consume("billing", NonZeroU16::MIN).await?;
//! if let SubscriptionEvent::Delivery(delivery) = billing.next().await {
//!     assert_eq!(delivery.routing_key, "orders.placed");
//!     billing.ack(delivery.tag).await?;
//! }
//! assert_eq!(broker.queue_depth("billing")?, 0);
//! # Ok(())
//! # }
//! ```
//!
//! [`Binding`]: hexeract_runtime::ports::transport::Binding
//! [`Overflow::Block`]: hexeract_runtime::ports::transport::Overflow::Block
//! [`Overflow::RejectPublish`]: hexeract_runtime::ports::transport::Overflow::RejectPublish

mod broker;
mod queue;
mod routing;
mod subscription;

use std::num::NonZeroU16;
use std::sync::Arc;

use hexeract_runtime::BoxFuture;
use hexeract_runtime::ports::transport::{
    Capabilities, Destination, Outgoing, PublishError, Subscription, Topology, Transport, TransportError,
};
use hexeract_runtime::ports::wire::WireMessage;
use tokio::time::Instant;

use crate::broker::{Broker, Refusal};
use crate::routing::{MAX_SHORT_STRING, prefix};
use crate::subscription::MemorySubscription;

/// The default [`MemoryTransportBuilder::max_message_size`]: 16 MiB. Big
/// enough for any reasonable message, small enough that a runaway payload is
/// refused before it is copied into several queues; RabbitMQ refuses
/// messages past its own limit in the same way.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// The in-process broker. Cheap to clone: every clone is the same broker.
///
/// See the [crate docs](crate) for its semantics.
#[derive(Clone)]
pub struct MemoryTransport {
    broker: Arc<Broker>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("max_message_size", &self.broker.max_message_size)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

/// Configures a [`MemoryTransport`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryTransportBuilder {
    max_message_size: usize,
}

impl Default for MemoryTransportBuilder {
    fn default() -> Self {
        MemoryTransportBuilder { max_message_size: DEFAULT_MAX_MESSAGE_SIZE }
    }
}

impl MemoryTransportBuilder {
    /// The largest message accepted, in bytes: the body plus every property
    /// and header. Default [`DEFAULT_MAX_MESSAGE_SIZE`].
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Starts an empty broker.
    pub fn build(self) -> MemoryTransport {
        MemoryTransport { broker: Arc::new(Broker::new(self.max_message_size)) }
    }
}

/// A queue's contents, from [`MemoryTransport::queue_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct QueueStats {
    /// Visible messages waiting for a consumer.
    pub ready: usize,
    /// Delivered to a subscription and not settled yet.
    pub unacked: usize,
    /// Published with a delay that has not passed yet.
    pub delayed: usize,
    /// Subscriptions consuming the queue.
    pub consumers: usize,
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTransport {
    /// An empty broker with the default settings.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for a broker with other settings.
    pub fn builder() -> MemoryTransportBuilder {
        MemoryTransportBuilder::default()
    }

    /// Deletes queue `name` with its messages and bindings, as an operator
    /// would. Its subscriptions yield [`SubscriptionEvent::Ended`]; their
    /// unsettled deliveries are deleted too. Returns how many messages went.
    ///
    /// # Errors
    /// [`TransportError::NotFound`] when there is no such queue.
    ///
    /// [`SubscriptionEvent::Ended`]: hexeract_runtime::ports::transport::SubscriptionEvent::Ended
    pub fn delete_queue(&self, name: &str) -> Result<usize, TransportError> {
        self.broker.lock().delete_queue(name)
    }

    /// Simulates losing the connection: every subscription yields
    /// [`SubscriptionEvent::Ended`] and its unsettled deliveries go back to
    /// their queues (redelivered); publishes, including those waiting for
    /// room, fail with [`PublishError::ConnectionLost`], and declare, consume
    /// and settling fail with [`TransportError::ConnectionLost`] until
    /// [`reconnect`](Self::reconnect). Exchanges, queues and their messages
    /// stay, as on a real broker.
    ///
    /// [`SubscriptionEvent::Ended`]: hexeract_runtime::ports::transport::SubscriptionEvent::Ended
    pub fn disconnect(&self) {
        self.broker.lock().disconnect();
    }

    /// Restores the connection after [`disconnect`](Self::disconnect).
    /// Subscriptions that ended stay ended: consumers subscribe again.
    pub fn reconnect(&self) {
        self.broker.lock().reconnect();
    }

    /// Whether the (simulated) connection is up.
    pub fn is_connected(&self) -> bool {
        self.broker.lock().is_connected()
    }

    /// Messages in queue `name`: ready plus delivered-and-unsettled (not
    /// those still waiting for their delay).
    ///
    /// # Errors
    /// [`TransportError::NotFound`] when there is no such queue.
    pub fn queue_depth(&self, name: &str) -> Result<usize, TransportError> {
        self.queue_stats(name).map(|stats| stats.ready + stats.unacked)
    }

    /// What queue `name` holds, and how many consume it.
    ///
    /// # Errors
    /// [`TransportError::NotFound`] when there is no such queue.
    pub fn queue_stats(&self, name: &str) -> Result<QueueStats, TransportError> {
        self.broker.lock().stats(name, Instant::now())
    }

    /// Removes queue `name`'s ready messages (not those delivered and
    /// unsettled, nor those waiting for their delay), returning how many.
    ///
    /// # Errors
    /// [`TransportError::NotFound`] when there is no such queue.
    pub fn purge(&self, name: &str) -> Result<usize, TransportError> {
        self.broker.lock().purge(name, Instant::now())
    }

    /// Copies of the first `count` ready messages of queue `name`, head
    /// first; the queue is unchanged.
    ///
    /// # Errors
    /// [`TransportError::NotFound`] when there is no such queue.
    pub fn peek(&self, name: &str, count: usize) -> Result<Vec<WireMessage>, TransportError> {
        self.broker.lock().peek(name, count, Instant::now())
    }

    /// How many rejected (`nack` without requeue) messages were dropped
    /// because their queue has no dead-letter destination or it routes
    /// nowhere.
    pub fn dropped_dead_letters(&self) -> u64 {
        self.broker.lock().dropped()
    }
}

impl Transport for MemoryTransport {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    fn declare<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move { self.broker.lock().declare(topology) })
    }

    /// Publishes `message`; see the [crate docs](crate) for every outcome.
    ///
    /// # Cancel safety
    /// Dropping the future before it resolves publishes nothing; the only
    /// await is the wait for room in a full [`Overflow::Block`] queue.
    ///
    /// [`Overflow::Block`]: hexeract_runtime::ports::transport::Overflow::Block
    fn publish(&self, message: Outgoing) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async move {
            check_outgoing(&message, self.broker.max_message_size)?;
            let mut outgoing = message;
            loop {
                let waiting = match self.broker.lock().publish(outgoing, Instant::now()) {
                    Ok(()) => return Ok(()),
                    Err(Refusal::Failed(error)) => return Err(error),
                    Err(Refusal::Blocked(back, waiting)) => {
                        outgoing = *back;
                        waiting
                    }
                };
                waiting.await;
            }
        })
    }

    fn consume<'a>(
        &'a self,
        queue: &'a str,
        prefetch: NonZeroU16,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, TransportError>> {
        Box::pin(async move {
            let (id, wake) = self.broker.lock().consume(queue, prefetch, Instant::now())?;
            let subscription: Box<dyn Subscription> = Box::new(MemorySubscription::new(self.broker.clone(), id, wake));
            Ok(subscription)
        })
    }
}

/// Checks what can be checked without the broker: size and AMQP's
/// short-string limits.
fn check_outgoing(outgoing: &Outgoing, limit: usize) -> Result<(), PublishError> {
    let message = &outgoing.message;
    let size = wire_size(message);
    if size > limit {
        return Err(PublishError::TooLarge { size, limit });
    }
    let short = |what: &str, text: &str| {
        if text.len() > MAX_SHORT_STRING {
            return Err(PublishError::Nacked(format!(
                "{what} `{}…` is {} bytes; at most {MAX_SHORT_STRING} are allowed",
                prefix(text),
                text.len()
            )));
        }
        Ok(())
    };
    if let Destination::Exchange { routing_key, .. } = &outgoing.destination {
        short("routing key", routing_key)?;
    }
    for name in message.headers.keys() {
        short("header name", name)?;
    }
    let properties = [
        ("message_id", &message.message_id),
        ("correlation_id", &message.correlation_id),
        ("type", &message.kind),
        ("content_type", &message.content_type),
    ];
    for (what, value) in properties {
        if let Some(value) = value {
            short(what, value)?;
        }
    }
    Ok(())
}

/// A message's size as the limit counts it: body, properties and headers.
fn wire_size(message: &WireMessage) -> usize {
    let text = |value: &Option<String>| value.as_ref().map_or(0, String::len);
    let headers: usize = message.headers.iter().map(|(name, value)| name.len() + value.len()).sum();
    message.body.len()
        + headers
        + text(&message.message_id)
        + text(&message.correlation_id)
        + text(&message.kind)
        + text(&message.content_type)
        + message.timestamp.map_or(0, |_| 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(routing_key: &str, message: WireMessage) -> Outgoing {
        Outgoing {
            destination: Destination::Exchange { exchange: "orders".into(), routing_key: routing_key.into() },
            message,
            delay: None,
        }
    }

    #[test]
    fn the_size_counts_body_properties_and_headers() {
        let mut message = WireMessage { body: vec![0; 10], kind: Some("a.b".into()), ..WireMessage::default() };
        message.headers.insert("tenant".into(), "acme".into());
        assert_eq!(wire_size(&message), 10 + 3 + 6 + 4);
        assert!(check_outgoing(&outgoing("k", message.clone()), 23).is_ok());
        assert_eq!(check_outgoing(&outgoing("k", message), 22), Err(PublishError::TooLarge { size: 23, limit: 22 }));
    }

    #[test]
    fn short_strings_past_255_bytes_are_refused() {
        assert!(check_outgoing(&outgoing(&"k".repeat(255), WireMessage::default()), usize::MAX).is_ok());
        let long_key = outgoing(&"k".repeat(256), WireMessage::default());
        assert!(
            matches!(check_outgoing(&long_key, usize::MAX), Err(PublishError::Nacked(reason)) if reason.contains("routing key"))
        );
        let mut message = WireMessage::default();
        message.headers.insert("h".repeat(256), String::new());
        assert!(matches!(check_outgoing(&outgoing("k", message), usize::MAX), Err(PublishError::Nacked(_))));
        let message = WireMessage { content_type: Some("c".repeat(256)), ..WireMessage::default() };
        assert!(matches!(check_outgoing(&outgoing("k", message), usize::MAX), Err(PublishError::Nacked(_))));
    }
}
