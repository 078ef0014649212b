//! What happens to messages on the way: delays, bounds, fidelity, volume.

use std::collections::HashMap;
use std::time::Duration;

use hexeract_runtime::ports::transport::{
    ExchangeKind, Outgoing, Overflow, PublishError, QueueSpec, SubscriptionEvent, Topology,
};
use hexeract_runtime::ports::wire::WireMessage;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::TestedTransport;
use super::support::{
    ARRIVAL, ack, bind, consume, declare, declare_queues, ensure, exchange, expect_queue, expect_quiet,
    expect_quiet_until, id_of, message, next_delivery, publish, publish_to, to_exchange, to_queue,
};

/// A message published with a delay is not delivered before it, and is
/// after; one published at the same time without a delay is not held up.
pub async fn delayed_publish_waits_for_its_delay(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    const DELAY: Duration = Duration::from_millis(600);
    let transport = &*tested.transport;
    let queue = format!("{prefix}.retries");
    declare_queues(transport, &[&queue]).await?;
    let mut subscription = consume(transport, &queue, 10).await?;
    let start = Instant::now();
    transport
        .publish(Outgoing { destination: to_queue(&queue), message: message(prefix, "later"), delay: Some(DELAY) })
        .await
        .map_err(|error| format!("the delayed publish failed: {error}"))?;
    publish(transport, to_queue(&queue), message(prefix, "now")).await?;
    let now = next_delivery(&mut subscription).await?;
    ensure!(id_of(&now) == format!("{prefix}.now"), "`{}` arrived before the undelayed message", id_of(&now));
    ack(&mut subscription, &now).await?;
    // Quiet until shortly before the delay ends, however long the steps
    // above took on a loaded machine.
    expect_quiet_until(&mut subscription, start + DELAY - Duration::from_millis(100), "the delay has not passed")
        .await?;
    let later = next_delivery(&mut subscription).await?;
    let waited = start.elapsed();
    ensure!(id_of(&later) == format!("{prefix}.later"), "expected `{prefix}.later`, got `{}`", id_of(&later));
    // A little slack for brokers whose timers have coarse granularity.
    ensure!(waited + Duration::from_millis(50) >= DELAY, "delivered after {waited:?}, before its delay of {DELAY:?}");
    ack(&mut subscription, &later).await?;
    subscription.cancel().await.map_err(|error| format!("cancel failed: {error}"))
}

/// A bounded queue with `reject-publish` refuses a publish when full, and
/// accepts again once a message has been consumed.
pub async fn bounded_queue_rejects_publishes_when_full(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let queue = format!("{prefix}.bounded");
    let mut spec = QueueSpec::durable(&queue);
    spec.max_length = Some(2);
    spec.overflow = Overflow::RejectPublish;
    declare(transport, Topology { queues: vec![spec], ..Topology::default() }).await?;
    publish(transport, to_queue(&queue), message(prefix, "1")).await?;
    publish(transport, to_queue(&queue), message(prefix, "2")).await?;
    match publish_to(transport, to_queue(&queue), message(prefix, "3")).await {
        Err(PublishError::QueueFull(name)) if name == queue => {}
        other => return Err(format!("a third publish to a queue of 2: expected QueueFull(`{queue}`), got {other:?}")),
    }
    let mut subscription = consume(transport, &queue, 1).await?;
    let first = next_delivery(&mut subscription).await?;
    ack(&mut subscription, &first).await?;
    subscription.cancel().await.map_err(|error| format!("cancel failed: {error}"))?;
    publish(transport, to_queue(&queue), message(prefix, "3")).await?;
    // No room for `drain`'s marker in a full queue of 2: read both directly.
    let mut subscription = consume(transport, &queue, 2).await?;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let delivery = next_delivery(&mut subscription).await?;
        ids.push(id_of(&delivery).to_owned());
        ack(&mut subscription, &delivery).await?;
    }
    let wanted = [format!("{prefix}.1"), format!("{prefix}.2"), format!("{prefix}.3")];
    ensure!(id_of(&first) == wanted[0] && ids == wanted[1..], "the queue held {}, then {ids:?}", id_of(&first));
    expect_quiet(&mut subscription, "the queue is empty").await?;
    subscription.cancel().await.map_err(|error| format!("cancel failed: {error}"))
}

/// Every property and header, and a binary body, arrive exactly as sent,
/// with the exchange and routing key they were published with.
pub async fn wire_message_survives_the_trip(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let events = format!("{prefix}.events");
    let queue = format!("{prefix}.inbox");
    declare(
        transport,
        Topology {
            exchanges: vec![exchange(&events, ExchangeKind::Topic)],
            queues: vec![QueueSpec::durable(&queue)],
            bindings: vec![bind(&events, &queue, "orders.#")],
        },
    )
    .await?;
    let sent = WireMessage {
        message_id: Some(format!("{prefix}.0190f6b4-7c1e-7000-8000-000000000001")),
        correlation_id: Some("0190f6b4-7c1e-7000-8000-000000000000".into()),
        kind: Some("orders.placed.v1".into()),
        content_type: Some("application/msgpack".into()),
        timestamp: Some(1_700_000_000),
        headers: [
            ("x-attempt", "3"),
            ("x-causation-id", "0190f6b4-7c1e-7000-8000-00000000000f"),
            ("x-timestamp-ms", "1700000000123"),
            ("tenant", "acme"),
            ("unicode", "żółć ✓ 注文"),
            ("empty", ""),
            ("spaces", "  padded  "),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect(),
        body: (0..=255u8).chain([0, 0, 255]).collect(),
    };
    publish(transport, to_exchange(&events, "orders.placed.eu"), sent.clone()).await?;
    let mut direct = message(prefix, "direct");
    direct.headers.insert("via".into(), "default exchange".into());
    publish(transport, to_queue(&queue), direct.clone()).await?;

    let mut subscription = consume(transport, &queue, 2).await?;
    let delivery = next_delivery(&mut subscription).await?;
    ensure!(
        delivery.message == sent,
        "the message changed on the way:\n sent     {sent:?}\n received {:?}",
        delivery.message
    );
    ensure!(delivery.exchange == events, "delivery.exchange is `{}`, expected `{events}`", delivery.exchange);
    ensure!(delivery.routing_key == "orders.placed.eu", "delivery.routing_key is `{}`", delivery.routing_key);
    ensure!(delivery.queue == queue, "delivery.queue is `{}`, expected `{queue}`", delivery.queue);
    ensure!(!delivery.redelivered, "a first delivery is marked redelivered");
    ack(&mut subscription, &delivery).await?;
    let second = next_delivery(&mut subscription).await?;
    ensure!(second.message == direct, "the direct message changed: sent {direct:?}, received {:?}", second.message);
    ensure!(second.exchange.is_empty(), "a direct-to-queue delivery names exchange `{}`", second.exchange);
    ack(&mut subscription, &second).await?;
    subscription.cancel().await.map_err(|error| format!("cancel failed: {error}"))
}

/// 1,000 messages over 4 concurrent consumers: each message is delivered
/// exactly once, and every consumer takes a share.
pub async fn thousand_messages_over_four_consumers_are_each_delivered_once(
    tested: &TestedTransport,
    prefix: &str,
) -> Result<(), String> {
    const MESSAGES: usize = 1_000;
    const CONSUMERS: usize = 4;
    let transport = &*tested.transport;
    let queue = format!("{prefix}.work");
    declare_queues(transport, &[&queue]).await?;
    let (received, mut receipts) = mpsc::channel::<(usize, Result<String, String>)>(64);
    let mut consumers = Vec::new();
    for consumer in 0..CONSUMERS {
        let mut subscription = consume(transport, &queue, 10).await?;
        let received = received.clone();
        consumers.push(tokio::spawn(async move {
            loop {
                let receipt = match subscription.next().await {
                    SubscriptionEvent::Delivery(delivery) => match subscription.ack(delivery.tag).await {
                        Ok(()) => Ok(id_of(&delivery).to_owned()),
                        Err(error) => Err(format!("ack failed: {error}")),
                    },
                    SubscriptionEvent::Ended(reason) => Err(format!("consumer {consumer} ended: {reason}")),
                };
                let failed = receipt.is_err();
                if received.send((consumer, receipt)).await.is_err() || failed {
                    return;
                }
            }
        }));
    }
    drop(received);
    let outcome = async {
        for n in 0..MESSAGES {
            publish(transport, to_queue(&queue), message(prefix, &n.to_string())).await?;
        }
        let mut times: HashMap<String, usize> = HashMap::new();
        let mut shares = [0usize; CONSUMERS];
        let deadline = Instant::now() + ARRIVAL * 4;
        while times.len() < MESSAGES {
            let (consumer, receipt) = match tokio::time::timeout_at(deadline, receipts.recv()).await {
                Ok(Some(receipt)) => receipt,
                Ok(None) => return Err("every consumer stopped".to_owned()),
                Err(_) => return Err(format!("only {} of {MESSAGES} messages arrived", times.len())),
            };
            *times.entry(receipt?).or_default() += 1;
            shares[consumer] += 1;
        }
        // Anything more within a quiet period is a duplicate.
        while let Ok(Some((consumer, receipt))) = tokio::time::timeout(super::support::QUIET, receipts.recv()).await {
            *times.entry(receipt?).or_default() += 1;
            shares[consumer] += 1;
        }
        let duplicates: Vec<_> = times.iter().filter(|(_, count)| **count > 1).collect();
        ensure!(duplicates.is_empty(), "delivered more than once: {duplicates:?}");
        ensure!(shares.iter().all(|share| *share > 0), "some consumer got nothing: shares {shares:?}");
        Ok(())
    }
    .await;
    for consumer in &consumers {
        consumer.abort();
    }
    for consumer in consumers {
        let _ = consumer.await;
    }
    outcome?;
    expect_queue(transport, &queue, prefix, &[]).await
}
