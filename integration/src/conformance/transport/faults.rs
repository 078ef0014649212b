//! The broker pulling the rug: a queue deleted, the connection lost. A
//! subscription must say it ended, never look like an idle queue.

use hexeract_runtime::ports::transport::PublishError;

use super::TestedTransport;
use super::support::{
    ack, consume, declare_queues, ensure, expect_ended, expect_queue, id_of, message, next_delivery, publish,
    publish_to, to_queue,
};

/// Deleting a queue under a consumer ends its subscription; the queue is
/// gone for publishers too.
pub async fn queue_deleted_under_a_consumer_ends_it(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let queue = format!("{prefix}.doomed");
    declare_queues(transport, &[&queue]).await?;
    let mut subscription = consume(transport, &queue, 1).await?;
    publish(transport, to_queue(&queue), message(prefix, "in-flight")).await?;
    let delivery = next_delivery(&mut subscription).await?;
    tested.operator.delete_queue(&queue).await.map_err(|error| format!("deleting `{queue}` failed: {error}"))?;
    let reason = expect_ended(&mut subscription).await?;
    ensure!(!reason.is_empty(), "the subscription ended without a reason");
    ensure!(subscription.ack(delivery.tag).await.is_err(), "an ack on a deleted queue's subscription succeeded");
    match publish_to(transport, to_queue(&queue), message(prefix, "late")).await {
        Err(PublishError::NotFound(_)) => Ok(()),
        other => Err(format!("publishing to the deleted queue: expected NotFound, got {other:?}")),
    }
}

/// Losing the connection ends every subscription and fails publishes with
/// `ConnectionLost`; after reconnecting, the unacked delivery comes back,
/// marked redelivered. Needs the transport to itself.
pub async fn connection_lost_ends_subscriptions_and_fails_publishes(
    tested: &TestedTransport,
    prefix: &str,
) -> Result<(), String> {
    let transport = &*tested.transport;
    let (queue, idle) = (format!("{prefix}.work"), format!("{prefix}.idle"));
    declare_queues(transport, &[&queue, &idle]).await?;
    publish(transport, to_queue(&queue), message(prefix, "unacked")).await?;
    let mut busy = consume(transport, &queue, 1).await?;
    let mut waiting = consume(transport, &idle, 1).await?;
    let delivery = next_delivery(&mut busy).await?;

    tested.operator.disconnect().await.map_err(|error| format!("disconnecting failed: {error}"))?;
    expect_ended(&mut busy).await.map_err(|error| format!("the busy subscription: {error}"))?;
    expect_ended(&mut waiting).await.map_err(|error| format!("the idle subscription: {error}"))?;
    let publish_result = publish_to(transport, to_queue(&queue), message(prefix, "while-down")).await;
    tested.operator.reconnect().await.map_err(|error| format!("reconnecting failed: {error}"))?;
    match publish_result {
        Err(PublishError::ConnectionLost(_)) => {}
        other => return Err(format!("publishing while disconnected: expected ConnectionLost, got {other:?}")),
    }
    ensure!(busy.ack(delivery.tag).await.is_err(), "an ack on a subscription that lost its connection succeeded");

    let mut again = consume(transport, &queue, 1).await?;
    let redelivered = next_delivery(&mut again).await?;
    ensure!(id_of(&redelivered) == id_of(&delivery), "after reconnecting, got `{}`", id_of(&redelivered));
    ensure!(redelivered.redelivered, "the delivery lost with the connection is not marked redelivered");
    ack(&mut again, &redelivered).await?;
    again.cancel().await.map_err(|error| format!("cancel failed: {error}"))?;
    expect_queue(transport, &queue, prefix, &[]).await
}
