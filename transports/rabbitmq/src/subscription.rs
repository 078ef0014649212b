//! A consumer on one queue: its own channel, `basic.qos` set to the
//! prefetch, and the delivery tags it handed out and not yet settled.
//!
//! Tags are tracked here because RabbitMQ answers an ack of an unknown or
//! already settled tag by closing the channel (and with it every other
//! unsettled delivery): such an ack is refused locally with `NotFound`.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures::StreamExt as _;
use hexeract_runtime::BoxFuture;
use hexeract_runtime::ports::transport::{Delivery, DeliveryTag, Subscription, SubscriptionEvent, TransportError};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::{Channel, Consumer};

use crate::wire;

pub(crate) struct RabbitSubscription {
    queue: String,
    channel: Channel,
    consumer: Consumer,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    unsettled: HashSet<u64>,
    ended: Option<String>,
}

impl RabbitSubscription {
    pub(crate) fn new(queue: String, channel: Channel, consumer: Consumer) -> Self {
        RabbitSubscription { queue, channel, consumer, state: Mutex::default() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the subscription over: its unsettled deliveries are back in the
    /// queue (or gone with it), so settling them is refused from now on.
    fn end(&self, reason: String) -> SubscriptionEvent {
        let mut state = self.state();
        state.unsettled.clear();
        let reason = state.ended.get_or_insert(reason).clone();
        SubscriptionEvent::Ended(reason)
    }

    fn take(&self, tag: DeliveryTag) -> Result<(), TransportError> {
        let mut state = self.state();
        if state.unsettled.remove(&tag.0) {
            return Ok(());
        }
        let why = match &state.ended {
            Some(reason) => format!("the subscription ended ({reason})"),
            None => "unknown or already settled".into(),
        };
        Err(TransportError::NotFound(format!("delivery {} on `{}`: {why}", tag.0, self.queue)))
    }
}

fn settled(queue: &str, result: lapin::Result<()>) -> Result<(), TransportError> {
    result.map_err(|error| TransportError::ConnectionLost(format!("settling a delivery from `{queue}`: {error}")))
}

impl Subscription for RabbitSubscription {
    fn next(&mut self) -> BoxFuture<'_, SubscriptionEvent> {
        Box::pin(async move {
            if let Some(reason) = self.state().ended.clone() {
                return SubscriptionEvent::Ended(reason);
            }
            match self.consumer.next().await {
                Some(Ok(delivery)) => {
                    self.state().unsettled.insert(delivery.delivery_tag);
                    SubscriptionEvent::Delivery(Delivery {
                        tag: DeliveryTag(delivery.delivery_tag),
                        message: wire::from_amqp(&delivery.properties, delivery.data),
                        queue: self.queue.clone(),
                        exchange: delivery.exchange.to_string(),
                        routing_key: delivery.routing_key.to_string(),
                        redelivered: delivery.redelivered,
                    })
                }
                Some(Err(error)) => self.end(format!("the consumer of `{}` failed: {error}", self.queue)),
                None => self.end(format!(
                    "the broker cancelled the consumer of `{}` (queue deleted, node failover, or channel closed)",
                    self.queue
                )),
            }
        })
    }

    fn ack(&self, tag: DeliveryTag) -> BoxFuture<'static, Result<(), TransportError>> {
        // The tag is settled here at once; the broker hears of it when the
        // future runs (a channel closed meanwhile makes that fail, and the
        // broker redelivers the message).
        let taken = self.take(tag);
        let (channel, queue) = (self.channel.clone(), self.queue.clone());
        Box::pin(async move {
            taken?;
            settled(&queue, channel.basic_ack(tag.0, BasicAckOptions::default()).await)
        })
    }

    fn nack(&self, tag: DeliveryTag, requeue: bool) -> BoxFuture<'static, Result<(), TransportError>> {
        let taken = self.take(tag);
        let (channel, queue) = (self.channel.clone(), self.queue.clone());
        Box::pin(async move {
            taken?;
            let options = BasicNackOptions { requeue, ..BasicNackOptions::default() };
            settled(&queue, channel.basic_nack(tag.0, options).await)
        })
    }

    fn cancel(&mut self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            self.end("cancelled".into());
            // Closing the channel cancels the consumer and returns every
            // unsettled delivery to the queue in one step.
            if self.channel.status().connected() {
                self.channel.close(200, "cancelled".into()).await.map_err(|error| {
                    TransportError::ConnectionLost(format!("cancelling the consumer of `{}`: {error}", self.queue))
                })?;
            }
            Ok(())
        })
    }
}

impl Drop for RabbitSubscription {
    fn drop(&mut self) {
        // Dropped without `cancel`: close the channel so that what it holds
        // goes back to the queue now, not when the connection ends.
        if self.channel.status().connected()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let channel = self.channel.clone();
            runtime.spawn(async move {
                let _ = channel.close(200, "subscription dropped".into()).await;
            });
        }
    }
}
