//! Consuming: prefetch, settling each delivery exactly once, and what
//! happens to deliveries a consumer gives up.

use std::collections::HashSet;

use hexeract_runtime::ports::transport::{DeliveryTag, Destination, QueueSpec, Topology, TransportError};

use super::TestedTransport;
use super::support::{
    ack, consume, declare, declare_queues, ensure, expect_ended, expect_queue, expect_quiet, id_of, message,
    next_delivery, publish, to_queue,
};

/// A consumed and acked message is gone: a new consumer sees only what was
/// published after it.
pub async fn consume_and_ack_removes_the_message(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let queue = format!("{prefix}.work");
    declare_queues(transport, &[&queue]).await?;
    publish(transport, to_queue(&queue), message(prefix, "job")).await?;
    let mut subscription = consume(transport, &queue, 1).await?;
    let delivery = next_delivery(&mut subscription).await?;
    ensure!(id_of(&delivery) == format!("{prefix}.job"), "delivered `{}`, expected `{prefix}.job`", id_of(&delivery));
    ensure!(!delivery.redelivered, "a first delivery is marked redelivered");
    ensure!(delivery.queue == queue, "the delivery names queue `{}`, expected `{queue}`", delivery.queue);
    ack(&mut subscription, &delivery).await?;
    subscription.cancel().await.map_err(|error| format!("cancel failed: {error}"))?;
    expect_queue(transport, &queue, prefix, &[]).await
}

/// `nack` with requeue puts the message back at the head of the queue and
/// delivers it again, marked redelivered.
pub async fn nack_with_requeue_redelivers(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let queue = format!("{prefix}.work");
    declare_queues(transport, &[&queue]).await?;
    publish(transport, to_queue(&queue), message(prefix, "first")).await?;
    publish(transport, to_queue(&queue), message(prefix, "second")).await?;
    let mut subscription = consume(transport, &queue, 1).await?;
    let delivery = next_delivery(&mut subscription).await?;
    ensure!(id_of(&delivery) == format!("{prefix}.first"), "first delivery was `{}`", id_of(&delivery));
    ensure!(!delivery.redelivered, "a first delivery is marked redelivered");
    subscription.nack(delivery.tag, true).await.map_err(|error| format!("nack failed: {error}"))?;
    let again = next_delivery(&mut subscription).await?;
    ensure!(
        id_of(&again) == format!("{prefix}.first"),
        "after a requeue, `{}` came before `{prefix}.first`",
        id_of(&again)
    );
    ensure!(again.redelivered, "a requeued message is not marked redelivered");
    ensure!(
        again.message == delivery.message,
        "the requeued message changed: {:?} became {:?}",
        delivery.message,
        again.message
    );
    ack(&mut subscription, &again).await?;
    let second = next_delivery(&mut subscription).await?;
    ensure!(id_of(&second) == format!("{prefix}.second"), "expected `{prefix}.second`, got `{}`", id_of(&second));
    ack(&mut subscription, &second).await?;
    subscription.cancel().await.map_err(|error| format!("cancel failed: {error}"))?;
    expect_queue(transport, &queue, prefix, &[]).await
}

/// `nack` without requeue moves the message to the queue's dead-letter
/// destination; without one, the message is gone.
pub async fn nack_without_requeue_dead_letters(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let (queue, dead, plain) = (format!("{prefix}.work"), format!("{prefix}.dead"), format!("{prefix}.plain"));
    let mut work = QueueSpec::durable(&queue);
    work.dead_letter = Some(Destination::Queue(dead.clone()));
    declare(
        transport,
        Topology { queues: vec![QueueSpec::durable(&dead), work, QueueSpec::durable(&plain)], ..Topology::default() },
    )
    .await?;
    let poison = message(prefix, "poison");
    publish(transport, to_queue(&queue), poison.clone()).await?;
    let mut subscription = consume(transport, &queue, 1).await?;
    let delivery = next_delivery(&mut subscription).await?;
    subscription.nack(delivery.tag, false).await.map_err(|error| format!("nack failed: {error}"))?;

    let mut dead_letters = consume(transport, &dead, 1).await?;
    let dead_letter = next_delivery(&mut dead_letters).await?;
    ensure!(dead_letter.message.message_id == poison.message_id, "the dead-letter queue got `{}`", id_of(&dead_letter));
    ensure!(dead_letter.message.body == poison.body, "the dead letter's body changed");
    ack(&mut dead_letters, &dead_letter).await?;
    dead_letters.cancel().await.map_err(|error| format!("cancel failed: {error}"))?;
    subscription.cancel().await.map_err(|error| format!("cancel failed: {error}"))?;
    expect_queue(transport, &queue, prefix, &[]).await?;
    expect_queue(transport, &dead, prefix, &[]).await?;

    publish(transport, to_queue(&plain), message(prefix, "dropped")).await?;
    let mut plain_subscription = consume(transport, &plain, 1).await?;
    let delivery = next_delivery(&mut plain_subscription).await?;
    plain_subscription.nack(delivery.tag, false).await.map_err(|error| format!("nack failed: {error}"))?;
    plain_subscription.cancel().await.map_err(|error| format!("cancel failed: {error}"))?;
    expect_queue(transport, &plain, prefix, &[]).await
}

/// Each delivery is settled exactly once: settling a tag again, or one
/// never delivered, is `NotFound`.
pub async fn settling_an_unknown_or_settled_tag_is_an_error(
    tested: &TestedTransport,
    prefix: &str,
) -> Result<(), String> {
    let transport = &*tested.transport;
    let queue = format!("{prefix}.work");
    declare_queues(transport, &[&queue]).await?;
    publish(transport, to_queue(&queue), message(prefix, "once")).await?;
    let mut subscription = consume(transport, &queue, 1).await?;
    let delivery = next_delivery(&mut subscription).await?;
    ack(&mut subscription, &delivery).await?;
    match subscription.ack(delivery.tag).await {
        Err(TransportError::NotFound(_)) => {}
        other => return Err(format!("a second ack of one tag: expected NotFound, got {other:?}")),
    }
    match subscription.nack(delivery.tag, true).await {
        Err(TransportError::NotFound(_)) => {}
        other => return Err(format!("a nack after the ack: expected NotFound, got {other:?}")),
    }
    match subscription.ack(DeliveryTag(u64::MAX)).await {
        Err(TransportError::NotFound(_)) => {}
        other => return Err(format!("an ack of a tag never delivered: expected NotFound, got {other:?}")),
    }
    // The subscription still works.
    publish(transport, to_queue(&queue), message(prefix, "after")).await?;
    let after = next_delivery(&mut subscription).await?;
    ensure!(id_of(&after) == format!("{prefix}.after"), "expected `{prefix}.after`, got `{}`", id_of(&after));
    ack(&mut subscription, &after).await?;
    subscription.cancel().await.map_err(|error| format!("cancel failed: {error}"))
}

/// With prefetch 3 and 10 messages, only 3 are delivered until one is
/// settled; then one more, and so on until all 10.
pub async fn prefetch_bounds_unacked_deliveries(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let queue = format!("{prefix}.work");
    declare_queues(transport, &[&queue]).await?;
    for n in 0..10 {
        publish(transport, to_queue(&queue), message(prefix, &n.to_string())).await?;
    }
    let mut subscription = consume(transport, &queue, 3).await?;
    let mut outstanding = Vec::new();
    for _ in 0..3 {
        outstanding.push(next_delivery(&mut subscription).await?);
    }
    expect_quiet(&mut subscription, "3 deliveries are unacked with prefetch 3").await?;
    let mut seen: HashSet<String> = outstanding.iter().map(|delivery| id_of(delivery).to_owned()).collect();
    let first = outstanding.remove(0);
    ack(&mut subscription, &first).await?;
    outstanding.push(next_delivery(&mut subscription).await?);
    expect_quiet(&mut subscription, "3 deliveries are unacked again").await?;
    while seen.len() < 10 {
        let delivery = outstanding.remove(0);
        seen.insert(id_of(&delivery).to_owned());
        ack(&mut subscription, &delivery).await?;
        if seen.len() + outstanding.len() < 10 {
            let next = next_delivery(&mut subscription).await?;
            seen.insert(id_of(&next).to_owned());
            outstanding.push(next);
        }
        ensure!(outstanding.len() <= 3, "{} deliveries outstanding with prefetch 3", outstanding.len());
    }
    for delivery in outstanding.drain(..) {
        ack(&mut subscription, &delivery).await?;
    }
    ensure!(seen.len() == 10, "{} distinct messages delivered, expected 10", seen.len());
    subscription.cancel().await.map_err(|error| format!("cancel failed: {error}"))?;
    expect_queue(transport, &queue, prefix, &[]).await
}

/// `cancel` ends the subscription and returns its unacked deliveries to the
/// queue; the ones the consumer had seen come back marked redelivered.
pub async fn cancel_returns_unacked_messages(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let queue = format!("{prefix}.work");
    declare_queues(transport, &[&queue]).await?;
    for label in ["a", "b", "c"] {
        publish(transport, to_queue(&queue), message(prefix, label)).await?;
    }
    let mut subscription = consume(transport, &queue, 5).await?;
    let first = next_delivery(&mut subscription).await?;
    let second = next_delivery(&mut subscription).await?;
    subscription.cancel().await.map_err(|error| format!("cancel failed: {error}"))?;
    expect_ended(&mut subscription).await.map_err(|error| format!("after cancel: {error}"))?;
    ensure!(
        subscription.ack(first.tag).await.is_err(),
        "an ack after cancel succeeded, so the delivery was not returned"
    );

    let mut again = consume(transport, &queue, 5).await?;
    let mut redelivered = Vec::new();
    for _ in 0..3 {
        let delivery = next_delivery(&mut again).await?;
        if delivery.redelivered {
            redelivered.push(id_of(&delivery).to_owned());
        }
        let seen = [id_of(&first), id_of(&second)].contains(&id_of(&delivery));
        ensure!(
            !seen || delivery.redelivered,
            "`{}` was seen before cancel, yet is not marked redelivered",
            id_of(&delivery)
        );
        ack(&mut again, &delivery).await?;
    }
    expect_quiet(&mut again, "all three messages were redelivered").await?;
    again.cancel().await.map_err(|error| format!("cancel failed: {error}"))?;
    expect_queue(transport, &queue, prefix, &[]).await
}

/// Dropping a subscription without settling returns its deliveries, so no
/// prefetch slot and no message leaks.
pub async fn dropping_a_subscription_returns_its_deliveries(
    tested: &TestedTransport,
    prefix: &str,
) -> Result<(), String> {
    let transport = &*tested.transport;
    let queue = format!("{prefix}.work");
    declare_queues(transport, &[&queue]).await?;
    for label in ["a", "b"] {
        publish(transport, to_queue(&queue), message(prefix, label)).await?;
    }
    let mut subscription = consume(transport, &queue, 5).await?;
    next_delivery(&mut subscription).await?;
    next_delivery(&mut subscription).await?;
    drop(subscription);

    let mut again = consume(transport, &queue, 5).await?;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let delivery = next_delivery(&mut again).await?;
        ensure!(delivery.redelivered, "`{}` came back without the redelivered mark", id_of(&delivery));
        ids.push(id_of(&delivery).to_owned());
        ack(&mut again, &delivery).await?;
    }
    ids.sort();
    ensure!(ids == [format!("{prefix}.a"), format!("{prefix}.b")], "redelivered {ids:?}");
    again.cancel().await.map_err(|error| format!("cancel failed: {error}"))?;
    expect_queue(transport, &queue, prefix, &[]).await
}
