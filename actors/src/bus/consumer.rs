//! A consumer actor per queue: deliveries go to the subscribed handler
//! actors; a delivery is acknowledged only once its handler succeeded, or
//! once its retry copy or dead letter has been confirmed by the broker.
//!
//! - `prefetch` deliveries at most are in progress, so memory stays bounded
//!   whatever the backlog.
//! - A failed delivery is republished to its own queue with `attempt + 1`
//!   and a jittered delay (never a `nack(requeue)` hot loop); past
//!   `max_attempts` it goes to `<queue>.dlq` with the error, the message name
//!   and the attempt count as headers. The copy is confirmed before the
//!   original is acked: a crash in between means a duplicate, never a loss.
//! - A body that does not decode, an unknown message name, or invalid
//!   properties go to the dead-letter queue at once, with the reason.
//! - A subscription that ends (queue deleted, connection lost) fails the
//!   actor, so its supervisor restarts it with backoff: it is never taken
//!   for "no more work".

use std::collections::HashMap;
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use hexeract_runtime::BoxFuture;
use hexeract_runtime::metrics::{ActorMetrics, Outcome};
use hexeract_runtime::ports::transport::{Delivery, DeliveryTag, Destination, Outgoing, SubscriptionEvent, Transport};
use hexeract_runtime::ports::wire::{
    ATTEMPT, DEAD_LETTER_REASON, ORIGINAL_EXCHANGE, ORIGINAL_QUEUE, ORIGINAL_ROUTING_KEY, WireMessage,
};
use hexeract_runtime::supervision::{ActorLoop, Backoff};
use tokio_util::sync::CancellationToken;

use super::Publisher;
use super::routes::{BusRoute, DeliveryError};
use crate::error::error_chain;
use crate::mediator::Mediator;

/// How a queue is consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// Deliveries in progress at once (the broker's prefetch). Default 64.
    pub prefetch: NonZeroU16,
    /// Attempts before a delivery is dead-lettered. Default 5.
    pub max_attempts: u32,
    /// Delay before a failed delivery comes back (full jitter). Default 1 s to 60 s.
    pub backoff: Backoff,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            prefetch: NonZeroU16::new(64).expect("non-zero"),
            max_attempts: 5,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).expect("valid"),
        }
    }
}

impl ConsumerConfig {
    /// Sets the prefetch (deliveries in progress at once).
    #[must_use]
    pub fn prefetch(mut self, prefetch: NonZeroU16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Sets the attempts before a delivery is dead-lettered (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets the backoff between attempts.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// The dead-letter queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// What to tell the broker about one delivery.
enum Verdict {
    Ack(Outcome),
    /// The retry copy or dead letter could not be published: put the
    /// original back and let the broker redeliver it.
    Requeue,
}

pub(crate) struct QueueConsumer {
    path: String,
    metrics: Arc<ActorMetrics>,
    queue: String,
    routes: HashMap<&'static str, Arc<dyn BusRoute>>,
    transport: Arc<dyn Transport>,
    publisher: Publisher,
    mediator: Mediator,
    config: ConsumerConfig,
    stop: CancellationToken,
    /// Cancelled at the shutdown deadline: stop waiting for the deliveries
    /// in progress; they go back to the queue with the subscription.
    abandon: CancellationToken,
}

impl QueueConsumer {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        path: String,
        metrics: Arc<ActorMetrics>,
        queue: String,
        routes: HashMap<&'static str, Arc<dyn BusRoute>>,
        transport: Arc<dyn Transport>,
        publisher: Publisher,
        mediator: Mediator,
        config: ConsumerConfig,
        stop: CancellationToken,
        abandon: CancellationToken,
    ) -> Self {
        QueueConsumer { path, metrics, queue, routes, transport, publisher, mediator, config, stop, abandon }
    }

    async fn handle(&self, delivery: Delivery) -> (DeliveryTag, Verdict) {
        let started = Instant::now();
        let tag = delivery.tag;
        let verdict = self.verdict(delivery).await;
        if let Verdict::Ack(outcome) = &verdict {
            self.metrics.record(*outcome, started.elapsed());
        }
        (tag, verdict)
    }

    async fn verdict(&self, delivery: Delivery) -> Verdict {
        let envelope = match delivery.message.to_envelope() {
            Ok(envelope) => envelope,
            Err(error) => return self.dead_letter(&delivery, &format!("invalid message properties: {error}")).await,
        };
        let Some(route) = self.routes.get(envelope.meta.name.as_ref()) else {
            let reason = format!("no handler subscribed to `{}` on queue `{}`", envelope.meta.name, self.queue);
            return self.dead_letter(&delivery, &reason).await;
        };
        let attempt = envelope.meta.attempt;
        match route.deliver(envelope, &self.mediator).await {
            Ok(()) => Verdict::Ack(Outcome::Ok),
            Err(DeliveryError::Undecodable(error)) => self.dead_letter(&delivery, &error_chain(&error)).await,
            Err(DeliveryError::Handler(error)) if attempt >= self.config.max_attempts => {
                self.dead_letter(&delivery, &format!("failed {attempt} times; last error: {}", error_chain(&error)))
                    .await
            }
            Err(DeliveryError::Handler(error)) => {
                tracing::warn!(queue = %self.queue, attempt, error = %error_chain(&error), "delivery failed; retrying after backoff");
                self.retry(&delivery, attempt).await
            }
        }
    }

    async fn retry(&self, delivery: &Delivery, attempt: u32) -> Verdict {
        let mut message = delivery.message.clone();
        message.headers.insert(ATTEMPT.into(), (attempt + 1).to_string());
        // The copy goes straight to the queue: remember where the original
        // was first published, for the dead letter it may become.
        remember_origin(&mut message, delivery);
        let outgoing = Outgoing {
            destination: Destination::Queue(self.queue.clone()),
            message,
            delay: Some(self.config.backoff.delay(attempt.saturating_sub(1))),
        };
        match self.publisher.publish(outgoing).await {
            Ok(()) => Verdict::Ack(Outcome::Error),
            Err(error) => {
                tracing::error!(queue = %self.queue, %error, "could not publish a retry copy; requeueing the original");
                Verdict::Requeue
            }
        }
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Verdict {
        tracing::error!(queue = %self.queue, %reason, "dead-lettering a delivery");
        let mut message: WireMessage = delivery.message.clone();
        message.headers.insert(DEAD_LETTER_REASON.into(), reason.to_owned());
        message.headers.insert(ORIGINAL_QUEUE.into(), self.queue.clone());
        remember_origin(&mut message, delivery);
        let outgoing =
            Outgoing { destination: Destination::Queue(dead_letter_queue(&self.queue)), message, delay: None };
        match self.publisher.publish(outgoing).await {
            Ok(()) => Verdict::Ack(Outcome::DeadLettered),
            Err(error) => {
                tracing::error!(queue = %self.queue, %error, "could not publish a dead letter; requeueing the original");
                Verdict::Requeue
            }
        }
    }
}

impl ActorLoop for QueueConsumer {
    fn path(&self) -> &str {
        &self.path
    }

    fn metrics(&self) -> &ActorMetrics {
        &self.metrics
    }

    fn run(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let prefetch = self.config.prefetch;
            let mut subscription = self
                .transport
                .consume(&self.queue, prefetch)
                .await
                .map_err(|error| format!("cannot consume `{}`: {error}", self.queue))?;
            let mut in_progress = FuturesUnordered::new();
            // Acknowledgements on their way to the broker: the loop does not
            // wait for one to be written before taking the next delivery.
            let mut settling = FuturesUnordered::new();
            let mut ended = None;
            loop {
                tokio::select! {
                    biased;
                    Some(()) = settling.next(), if !settling.is_empty() => {}
                    Some((tag, verdict)) = in_progress.next(), if !in_progress.is_empty() => {
                        settling.push(settle(&*subscription, tag, verdict));
                    }
                    () = self.stop.cancelled() => break,
                    event = subscription.next(), if in_progress.len() < usize::from(prefetch.get()) => match event {
                        SubscriptionEvent::Delivery(delivery) => in_progress.push(self.handle(delivery)),
                        SubscriptionEvent::Ended(reason) => {
                            ended = Some(reason);
                            break;
                        }
                    },
                }
            }
            // Finish what was started, until the shutdown deadline; then what
            // the broker still holds for us (unsettled deliveries included)
            // goes back to the queue when the subscription is cancelled.
            loop {
                tokio::select! {
                    biased;
                    Some(()) = settling.next(), if !settling.is_empty() => {}
                    next = in_progress.next() => match next {
                        Some((tag, verdict)) => settling.push(settle(&*subscription, tag, verdict)),
                        None => break,
                    },
                    () = self.abandon.cancelled() => break,
                }
            }
            drop(in_progress);
            // What was handled is acknowledged before the subscription goes
            // (past the deadline, the broker redelivers it instead).
            loop {
                tokio::select! {
                    biased;
                    next = settling.next() => if next.is_none() { break },
                    () = self.abandon.cancelled() => break,
                }
            }
            match ended {
                Some(reason) => Err(format!("subscription to `{}` ended: {reason}", self.queue)),
                None => {
                    let _ = subscription.cancel().await;
                    Ok(())
                }
            }
        })
    }
}

/// Records the exchange and routing key `delivery` was first published with,
/// unless an earlier retry already did.
fn remember_origin(message: &mut WireMessage, delivery: &Delivery) {
    message.headers.entry(ORIGINAL_EXCHANGE.into()).or_insert_with(|| delivery.exchange.clone());
    message.headers.entry(ORIGINAL_ROUTING_KEY.into()).or_insert_with(|| delivery.routing_key.clone());
}

/// Settles `tag` as `verdict` says. The tag is taken from the subscription
/// now; the returned future tells the broker.
fn settle(
    subscription: &dyn hexeract_runtime::ports::transport::Subscription,
    tag: DeliveryTag,
    verdict: Verdict,
) -> BoxFuture<'static, ()> {
    let (settlement, pace) = match verdict {
        Verdict::Ack(_) => (subscription.ack(tag), None),
        // Pace a broker that keeps refusing our copies.
        Verdict::Requeue => (subscription.nack(tag, true), Some(Duration::from_millis(100))),
    };
    Box::pin(async move {
        if let Some(pace) = pace {
            tokio::time::sleep(pace).await;
        }
        if let Err(error) = settlement.await {
            // The broker redelivers what it did not hear about; the inbox
            // deduplicates it.
            tracing::warn!(%error, "could not settle a delivery");
        }
    })
}
