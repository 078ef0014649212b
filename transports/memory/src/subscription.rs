//! A consumer on one queue of the memory broker.

use std::sync::Arc;

use hexeract_runtime::BoxFuture;
use hexeract_runtime::ports::transport::{DeliveryTag, Subscription, SubscriptionEvent, TransportError};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::broker::{Broker, Polled, Settlement};
use crate::queue::{ConsumerId, Ending};

/// A [`Subscription`] on a `MemoryTransport` queue. Dropping it returns its
/// unsettled deliveries to the queue, as `cancel` does.
pub(crate) struct MemorySubscription {
    broker: Arc<Broker>,
    id: ConsumerId,
    wake: Arc<Notify>,
}

impl MemorySubscription {
    pub(crate) fn new(broker: Arc<Broker>, id: ConsumerId, wake: Arc<Notify>) -> Self {
        MemorySubscription { broker, id, wake }
    }

    fn settle(&self, tag: DeliveryTag, settlement: Settlement) -> BoxFuture<'static, Result<(), TransportError>> {
        let (broker, id) = (Arc::clone(&self.broker), self.id);
        Box::pin(async move { broker.lock().settle(id, tag, settlement, Instant::now()) })
    }
}

impl Subscription for MemorySubscription {
    fn next(&mut self) -> BoxFuture<'_, SubscriptionEvent> {
        Box::pin(async move {
            loop {
                let due = match self.broker.lock().poll(self.id, Instant::now()) {
                    Polled::Event(event) => return event,
                    Polled::Wait(due) => due,
                };
                // `wake` holds a permit if anything happened since the lock
                // was released, so no wake-up is missed; a spurious one only
                // costs another look under the lock.
                match due {
                    Some(due) => {
                        tokio::select! {
                            () = self.wake.notified() => {}
                            () = tokio::time::sleep_until(due) => {}
                        }
                    }
                    None => self.wake.notified().await,
                }
            }
        })
    }

    fn ack(&self, tag: DeliveryTag) -> BoxFuture<'static, Result<(), TransportError>> {
        self.settle(tag, Settlement::Ack)
    }

    fn nack(&self, tag: DeliveryTag, requeue: bool) -> BoxFuture<'static, Result<(), TransportError>> {
        self.settle(tag, if requeue { Settlement::Requeue } else { Settlement::Reject })
    }

    fn cancel(&mut self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            self.broker.lock().end_consumer(self.id, Ending::Cancelled, Instant::now());
            Ok(())
        })
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        self.broker.lock().remove_consumer(self.id, Instant::now());
    }
}
