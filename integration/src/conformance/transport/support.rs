//! What the cases share: building topologies and messages, and waiting for
//! deliveries with limits, so a broken transport fails a case instead of
//! hanging it.

use std::num::NonZeroU16;
use std::time::Duration;

use hexeract_runtime::ports::transport::{
    Binding, Delivery, Destination, ExchangeKind, ExchangeSpec, Outgoing, PublishError, QueueSpec, Subscription,
    SubscriptionEvent, Topology, Transport,
};
use hexeract_runtime::ports::wire::WireMessage;
use tokio::time::Instant;

/// How long a message that should arrive may take.
pub(crate) const ARRIVAL: Duration = Duration::from_secs(5);
/// How long to watch for a message that should not arrive.
pub(crate) const QUIET: Duration = Duration::from_millis(250);

/// Fails the case with a formatted message unless `condition` holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}
pub(crate) use ensure;

pub(crate) type Subscriber = Box<dyn Subscription>;

pub(crate) fn prefetch(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap_or(NonZeroU16::MIN)
}

pub(crate) fn exchange(name: impl Into<String>, kind: ExchangeKind) -> ExchangeSpec {
    ExchangeSpec { name: name.into(), kind, durable: true }
}

pub(crate) fn bind(exchange: &str, queue: &str, routing_key: &str) -> Binding {
    Binding { exchange: exchange.into(), queue: queue.into(), routing_key: routing_key.into() }
}

pub(crate) fn to_exchange(exchange: &str, routing_key: &str) -> Destination {
    Destination::Exchange { exchange: exchange.into(), routing_key: routing_key.into() }
}

pub(crate) fn to_queue(queue: &str) -> Destination {
    Destination::Queue(queue.into())
}

/// A JSON message whose id is `{prefix}.{label}`.
pub(crate) fn message(prefix: &str, label: &str) -> WireMessage {
    WireMessage {
        message_id: Some(format!("{prefix}.{label}")),
        kind: Some("conformance.test.v1".into()),
        content_type: Some("application/json".into()),
        body: format!("{{\"label\":\"{label}\"}}").into_bytes(),
        ..WireMessage::default()
    }
}

/// The message id a delivery carries (empty when it has none).
pub(crate) fn id_of(delivery: &Delivery) -> &str {
    delivery.message.message_id.as_deref().unwrap_or_default()
}

pub(crate) async fn declare(transport: &dyn Transport, topology: Topology) -> Result<(), String> {
    transport.declare(&topology).await.map_err(|error| format!("declare failed: {error}"))
}

/// Declares one queue of default settings per name.
pub(crate) async fn declare_queues(transport: &dyn Transport, names: &[&str]) -> Result<(), String> {
    let queues = names.iter().map(|name| QueueSpec::durable(*name)).collect();
    declare(transport, Topology { queues, ..Topology::default() }).await
}

pub(crate) async fn publish_to(
    transport: &dyn Transport,
    destination: Destination,
    message: WireMessage,
) -> Result<(), PublishError> {
    transport.publish(Outgoing { destination, message, delay: None }).await
}

/// Publishes and fails the case unless the publish is confirmed.
pub(crate) async fn publish(
    transport: &dyn Transport,
    destination: Destination,
    message: WireMessage,
) -> Result<(), String> {
    let id = message.message_id.clone().unwrap_or_default();
    publish_to(transport, destination, message).await.map_err(|error| format!("publishing `{id}` failed: {error}"))
}

pub(crate) async fn consume(transport: &dyn Transport, queue: &str, prefetch_count: u16) -> Result<Subscriber, String> {
    transport
        .consume(queue, prefetch(prefetch_count))
        .await
        .map_err(|error| format!("consuming `{queue}` failed: {error}"))
}

/// The next delivery, failing if the subscription ends or nothing arrives
/// within [`ARRIVAL`].
pub(crate) async fn next_delivery(subscription: &mut Subscriber) -> Result<Delivery, String> {
    match tokio::time::timeout(ARRIVAL, subscription.next()).await {
        Ok(SubscriptionEvent::Delivery(delivery)) => Ok(delivery),
        Ok(SubscriptionEvent::Ended(reason)) => Err(format!("the subscription ended unexpectedly: {reason}")),
        Err(_) => Err(format!("no delivery within {ARRIVAL:?}")),
    }
}

/// Fails if anything arrives (or the subscription ends) within [`QUIET`].
/// `next` is cancel safe, so giving up on it loses nothing.
pub(crate) async fn expect_quiet(subscription: &mut Subscriber, why: &str) -> Result<(), String> {
    match tokio::time::timeout(QUIET, subscription.next()).await {
        Err(_) => Ok(()),
        Ok(SubscriptionEvent::Delivery(delivery)) => Err(format!("{why}, yet `{}` was delivered", id_of(&delivery))),
        Ok(SubscriptionEvent::Ended(reason)) => Err(format!("{why}, yet the subscription ended: {reason}")),
    }
}

/// Fails if anything arrives (or the subscription ends) before `deadline`;
/// passes at once when the deadline is already behind.
pub(crate) async fn expect_quiet_until(
    subscription: &mut Subscriber,
    deadline: Instant,
    why: &str,
) -> Result<(), String> {
    // `timeout_at` polls the future before the deadline, so a deadline in
    // the past would still take (and fail on) a legitimate delivery.
    if Instant::now() >= deadline {
        return Ok(());
    }
    match tokio::time::timeout_at(deadline, subscription.next()).await {
        Err(_) => Ok(()),
        Ok(SubscriptionEvent::Delivery(delivery)) => Err(format!("{why}, yet `{}` was delivered", id_of(&delivery))),
        Ok(SubscriptionEvent::Ended(reason)) => Err(format!("{why}, yet the subscription ended: {reason}")),
    }
}

/// Waits for the subscription to end, returning the reason.
pub(crate) async fn expect_ended(subscription: &mut Subscriber) -> Result<String, String> {
    match tokio::time::timeout(ARRIVAL, subscription.next()).await {
        Ok(SubscriptionEvent::Ended(reason)) => Ok(reason),
        Ok(SubscriptionEvent::Delivery(delivery)) => {
            Err(format!("expected the subscription to end, got a delivery of `{}`", id_of(&delivery)))
        }
        Err(_) => Err(format!("the subscription did not end within {ARRIVAL:?}")),
    }
}

pub(crate) async fn ack(subscription: &mut Subscriber, delivery: &Delivery) -> Result<(), String> {
    subscription.ack(delivery.tag).await.map_err(|error| format!("ack of `{}` failed: {error}", id_of(delivery)))
}

/// Everything queued in `queue`, in order: publishes a marker straight to
/// it, then consumes and acks up to the marker. Deterministic, unlike
/// waiting for a quiet period. The queue must have room for the marker.
pub(crate) async fn drain(transport: &dyn Transport, queue: &str, prefix: &str) -> Result<Vec<String>, String> {
    let marker = format!("{prefix}.marker.{queue}");
    let mut marker_message = message(prefix, &format!("marker.{queue}"));
    marker_message.message_id = Some(marker.clone());
    publish(transport, to_queue(queue), marker_message).await?;
    let mut subscription = consume(transport, queue, 16).await?;
    let mut ids = Vec::new();
    loop {
        let delivery = next_delivery(&mut subscription)
            .await
            .map_err(|error| format!("draining `{queue}` (after {ids:?}): {error}"))?;
        ack(&mut subscription, &delivery).await?;
        if id_of(&delivery) == marker {
            break;
        }
        ids.push(id_of(&delivery).to_owned());
    }
    subscription.cancel().await.map_err(|error| format!("cancel failed: {error}"))?;
    Ok(ids)
}

/// Checks that `queue` holds exactly the messages labelled `labels`, in order.
pub(crate) async fn expect_queue(
    transport: &dyn Transport,
    queue: &str,
    prefix: &str,
    labels: &[&str],
) -> Result<(), String> {
    let found = drain(transport, queue, prefix).await?;
    let wanted: Vec<String> = labels.iter().map(|label| format!("{prefix}.{label}")).collect();
    ensure!(found == wanted, "queue `{queue}` held {found:?}, expected {wanted:?}");
    Ok(())
}
