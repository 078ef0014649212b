//! [`RabbitTransport`]: the [`Transport`] port on RabbitMQ.

use std::collections::HashSet;
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hexeract_runtime::BoxFuture;
use hexeract_runtime::metrics::ActorMetrics;
use hexeract_runtime::ports::transport::{
    Capabilities, Destination, Outgoing, PublishError, Subscription, Topology, Transport, TransportError,
};
use hexeract_runtime::ports::wire::WireMessage;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, ExchangeKind as AmqpExchangeKind};

use crate::config::RabbitConfig;
use crate::connection::{Connector, Live};
use crate::error::{ConnectError, publish_error, transport_error};
use crate::peek::PeekedMessage;
use crate::subscription::RabbitSubscription;
use crate::topology::{self, delay_tier, short_name};
use crate::wire;

/// A RabbitMQ broker as a Hexeract transport. Cheap to share behind an
/// `Arc`; every publish and consumer of a system goes through one
/// connection.
///
/// - **Publish**: persistent, `mandatory`, on a channel in confirm mode, and
///   resolved by the broker's confirm: an ack is success; a returned
///   message is [`PublishError::Unroutable`] (or `NotFound` when the queue
///   does not exist); a nack is `QueueFull` (a bounded queue with
///   `reject_publish`); a closed channel or connection is `ConnectionLost`;
///   no confirm within `confirm_timeout` is `Timeout`. Concurrent publishes
///   share the channel, so confirms are pipelined.
/// - **Delays** ([`Outgoing::delay`], for retries): the message waits in a
///   retry tier queue (`hexeract.delay.<ms>ms.<queue>`, the delay rounded
///   up to a power of two of milliseconds) and dead-letters back into its
///   queue when its TTL expires. Only direct-to-queue publishes can be
///   delayed.
/// - **Consume**: a channel per subscription with `basic.qos(prefetch)`;
///   a queue this transport declared and that has since been deleted is
///   declared again first.
pub struct RabbitTransport {
    connector: Connector,
    app_id: ShortString,
    /// The confirm-mode channel publishes share, with the connection it
    /// belongs to.
    publishing: Mutex<Option<(Arc<Channel>, u64)>>,
    opening: tokio::sync::Mutex<()>,
    /// Exchanges known to exist and retry tiers declared, on connection
    /// `.0`.
    verified: Mutex<(u64, HashSet<String>)>,
}

impl std::fmt::Debug for RabbitTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitTransport").field("url", &self.connector.config.url).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn as_publish_error(error: TransportError) -> PublishError {
    match error {
        TransportError::ConnectionLost(reason) => PublishError::ConnectionLost(reason),
        TransportError::NotFound(what) => PublishError::NotFound(what),
        TransportError::Invalid { what, reason } => PublishError::Invalid { what, reason },
        conflict @ TransportError::Conflict { .. } => PublishError::Nacked(conflict.to_string()),
        other => PublishError::Nacked(other.to_string()),
    }
}

impl RabbitTransport {
    /// Connects to the broker in `config.url`, within `connect_timeout`.
    ///
    /// # Errors
    /// [`ConnectError`]: nothing answered in time, the login was refused, or
    /// the broker could not be reached. The password never appears in it.
    pub async fn connect(config: RabbitConfig) -> Result<Self, ConnectError> {
        let app_id = ShortString::try_new(config.app_id.clone()).unwrap_or_else(|_| "hexeract".into());
        Ok(RabbitTransport {
            connector: Connector::connect(config).await?,
            app_id,
            publishing: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            verified: Mutex::new((0, HashSet::new())),
        })
    }

    /// Connects to `url` with every default.
    ///
    /// # Errors
    /// As [`connect`](Self::connect), and [`ConnectError::InvalidUrl`].
    pub async fn connect_url(url: &str) -> Result<Self, ConnectError> {
        Self::connect(RabbitConfig::new(url)?).await
    }

    /// The settings it was made with.
    pub fn config(&self) -> &RabbitConfig {
        &self.connector.config
    }

    fn is_verified(&self, live: &Live, name: &str) -> bool {
        let verified = lock(&self.verified);
        verified.0 == live.generation && verified.1.contains(name)
    }

    fn mark_verified(&self, live: &Live, name: String) {
        let mut verified = lock(&self.verified);
        if verified.0 != live.generation {
            *verified = (live.generation, HashSet::new());
        }
        verified.1.insert(name);
    }

    /// A throwaway channel for a check that may close it (a passive declare
    /// of something missing), closed afterwards if it survived.
    async fn on_scratch_channel<T>(
        &self,
        live: &Live,
        check: impl AsyncFnOnce(&Channel) -> Result<T, TransportError>,
    ) -> Result<T, TransportError> {
        let channel = self.connector.channel(live).await?;
        let result = check(&channel).await;
        if channel.status().connected() {
            let _ = channel.close(200, "done".into()).await;
        }
        result
    }

    async fn queue_exists(&self, live: &Live, queue: &str) -> Result<u32, TransportError> {
        let name = short_name("queue name", queue, false)?;
        self.on_scratch_channel(live, async |channel| {
            let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            channel
                .queue_declare(name, options, FieldTable::default())
                .await
                .map(|declared| declared.message_count())
                .map_err(|error| transport_error(&format!("queue `{queue}`"), &error))
        })
        .await
    }

    async fn check_exchange(&self, live: &Live, exchange: &str) -> Result<(), PublishError> {
        if exchange.is_empty() || exchange.starts_with("amq.") || self.is_verified(live, exchange) {
            return Ok(());
        }
        let name = short_name("exchange name", exchange, false).map_err(as_publish_error)?;
        self.on_scratch_channel(live, async |channel| {
            let options = ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() };
            // The kind is not compared on a passive declare.
            channel
                .exchange_declare(name, AmqpExchangeKind::Direct, options, FieldTable::default())
                .await
                .map_err(|error| transport_error(&format!("exchange `{exchange}`"), &error))
        })
        .await
        .map_err(as_publish_error)?;
        self.mark_verified(live, exchange.to_owned());
        Ok(())
    }

    /// The retry tier for `queue` and `delay`, declared once per connection.
    async fn delay_queue(&self, live: &Live, queue: &str, delay: Duration) -> Result<String, PublishError> {
        let (name, spec) = delay_tier(queue, delay).map_err(as_publish_error)?;
        if self.is_verified(live, &name) {
            return Ok(name);
        }
        // A tier dead-letters into its queue; into a missing one, the
        // message would vanish when its delay ends.
        self.queue_exists(live, queue).await.map_err(as_publish_error)?;
        let tier = Topology { queues: vec![spec], ..Topology::default() };
        self.on_scratch_channel(live, async |channel| topology::declare_on(channel, &tier, &tier).await)
            .await
            .map_err(as_publish_error)?;
        self.connector.own(&tier);
        self.mark_verified(live, name.clone());
        Ok(name)
    }

    /// The confirm-mode channel of `live`, opened on first use. Shared as an
    /// `Arc`: cloning a lapin `Channel` per publish costs a dozen reference
    /// counts.
    async fn publish_channel(&self, live: &Live) -> Result<Arc<Channel>, PublishError> {
        let usable = |slot: &Option<(Arc<Channel>, u64)>| {
            slot.as_ref()
                .filter(|(channel, generation)| *generation == live.generation && channel.status().connected())
                .map(|(channel, _)| Arc::clone(channel))
        };
        if let Some(channel) = usable(&lock(&self.publishing)) {
            return Ok(channel);
        }
        let _one_at_a_time = self.opening.lock().await;
        if let Some(channel) = usable(&lock(&self.publishing)) {
            return Ok(channel);
        }
        let channel = self.connector.channel(live).await.map_err(as_publish_error)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|error| publish_error("enabling publisher confirms", &error))?;
        let channel = Arc::new(channel);
        *lock(&self.publishing) = Some((Arc::clone(&channel), live.generation));
        Ok(channel)
    }

    async fn publish_confirmed(&self, outgoing: Outgoing) -> Result<(), PublishError> {
        let Outgoing { destination, message, delay } = outgoing;
        let limit = self.connector.config.max_message_size;
        let size = wire::size(&message);
        if size > limit {
            return Err(PublishError::TooLarge { size, limit });
        }
        let properties = wire::properties(&message, &self.app_id)?;
        let live = self.connector.live().await.map_err(as_publish_error)?;
        let (exchange, routing_key) = match (&destination, delay) {
            (Destination::Queue(queue), None) => (String::new(), queue.clone()),
            (Destination::Queue(queue), Some(delay)) => (String::new(), self.delay_queue(&live, queue, delay).await?),
            (Destination::Exchange { exchange, routing_key }, None) => {
                self.check_exchange(&live, exchange).await?;
                (exchange.clone(), routing_key.clone())
            }
            (Destination::Exchange { .. }, Some(_)) => {
                return Err(PublishError::Invalid {
                    what: "delay",
                    reason: "RabbitMQ delays direct-to-queue publishes only".into(),
                });
            }
        };
        let exchange = short_name("exchange name", &exchange, true).map_err(as_publish_error)?;
        let routing_key = short_name("routing key", &routing_key, true).map_err(as_publish_error)?;
        let channel = self.publish_channel(&live).await?;
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let confirm = channel
            .basic_publish(exchange, routing_key, options, &message.body, properties)
            .await
            .map_err(|error| publish_error("publishing", &error))?;
        let timeout = self.connector.config.confirm_timeout;
        let confirmation = match tokio::time::timeout(timeout, confirm).await {
            Err(_) => return Err(PublishError::Timeout(timeout)),
            Ok(Err(error)) => return Err(publish_error("waiting for the confirm", &error)),
            Ok(Ok(confirmation)) => confirmation,
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_returned)) => Err(self.unroutable(&live, destination).await),
            Confirmation::Nack(_) => Err(match destination {
                Destination::Queue(queue) => PublishError::QueueFull(queue),
                Destination::Exchange { exchange, .. } => PublishError::Nacked(format!(
                    "a queue bound to `{exchange}` is full (reject-publish) or could not store the message"
                )),
            }),
            Confirmation::NotRequested => Err(PublishError::Nacked("the channel is not in confirm mode".into())),
        }
    }

    /// A returned message: for a direct-to-queue publish, the queue is
    /// missing.
    async fn unroutable(&self, live: &Live, destination: Destination) -> PublishError {
        if let Destination::Queue(queue) = &destination
            && let Err(error) = self.queue_exists(live, queue).await
        {
            return as_publish_error(error);
        }
        PublishError::Unroutable(destination)
    }

    async fn subscribe(&self, queue: &str, prefetch: NonZeroU16) -> Result<Box<dyn Subscription>, TransportError> {
        let name = short_name("queue name", queue, false)?;
        let live = self.connector.live_patiently().await?;
        let channel = self.connector.channel(&live).await?;
        if let Some(owned) = self.connector.owned_for_queue(queue) {
            // Deleted by an operator since: declare it again.
            topology::declare_on(&channel, &owned, &owned).await?;
        }
        channel
            .basic_qos(prefetch.get(), BasicQosOptions::default())
            .await
            .map_err(|error| transport_error("setting the prefetch", &error))?;
        let consumer = channel
            .basic_consume(name, ShortString::default(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(|error| transport_error(&format!("consuming queue `{queue}`"), &error))?;
        Ok(Box::new(RabbitSubscription::new(queue.to_owned(), channel, consumer)))
    }

    // ---- operator functions (the CLI's `bus` commands) ---------------------

    /// How many messages `queue` holds ready for delivery.
    ///
    /// # Errors
    /// `NotFound` when the queue does not exist; `ConnectionLost`.
    pub async fn queue_depth(&self, queue: &str) -> Result<u32, TransportError> {
        let live = self.connector.live().await?;
        self.queue_exists(&live, queue).await
    }

    /// Up to `count` messages from the head of `queue`, left in the queue:
    /// each is fetched unacknowledged on a channel of its own (so each is a
    /// different message), and closing that channel returns them all, in
    /// order.
    ///
    /// # Errors
    /// `NotFound` when the queue does not exist; `ConnectionLost`.
    pub async fn peek(&self, queue: &str, count: usize) -> Result<Vec<WireMessage>, TransportError> {
        let peeked = self.peek_deliveries(queue, count).await?;
        Ok(peeked.into_iter().map(|peeked| peeked.message).collect())
    }

    /// As [`peek`](Self::peek), with what an operator wants to see besides
    /// the message: delivery mode, app id, every header (the broker's
    /// `x-death` included), exchange, routing key. `hexeract bus peek`
    /// prints these.
    ///
    /// # Errors
    /// `NotFound` when the queue does not exist; `ConnectionLost`.
    pub async fn peek_deliveries(&self, queue: &str, count: usize) -> Result<Vec<PeekedMessage>, TransportError> {
        let name = short_name("queue name", queue, false)?;
        let live = self.connector.live().await?;
        self.on_scratch_channel(&live, async |channel| {
            let mut messages = Vec::new();
            // Unacknowledged, a fetched message is not handed out again on
            // this channel: the next get is the next message.
            while messages.len() < count {
                let fetched = channel
                    .basic_get(name.clone(), BasicGetOptions { no_ack: false })
                    .await
                    .map_err(|error| transport_error(&format!("queue `{queue}`"), &error))?;
                match fetched {
                    Some(message) => messages.push(PeekedMessage::from_amqp(message.delivery)),
                    None => break,
                }
            }
            Ok(messages)
        })
        .await
    }

    /// Removes every ready message from `queue`; returns how many.
    ///
    /// # Errors
    /// `NotFound` when the queue does not exist; `ConnectionLost`.
    pub async fn purge_queue(&self, queue: &str) -> Result<u32, TransportError> {
        let name = short_name("queue name", queue, false)?;
        let live = self.connector.live().await?;
        self.on_scratch_channel(&live, async |channel| {
            channel
                .queue_purge(name, QueuePurgeOptions::default())
                .await
                .map_err(|error| transport_error(&format!("queue `{queue}`"), &error))
        })
        .await
    }

    /// Deletes `queue` from under its consumers (their subscriptions end).
    /// A consumer this transport starts on it again declares it again.
    ///
    /// # Errors
    /// `NotFound` when the queue does not exist; `ConnectionLost`.
    pub async fn delete_queue(&self, queue: &str) -> Result<u32, TransportError> {
        let name = short_name("queue name", queue, false)?;
        let live = self.connector.live().await?;
        self.on_scratch_channel(&live, async |channel| {
            let _exists = channel
                .queue_declare(
                    name.clone(),
                    QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
                    FieldTable::default(),
                )
                .await
                .map_err(|error| transport_error(&format!("queue `{queue}`"), &error))?;
            channel
                .queue_delete(name, QueueDeleteOptions::default())
                .await
                .map_err(|error| transport_error(&format!("deleting queue `{queue}`"), &error))
        })
        .await
    }

    /// Deletes `exchange` and its bindings; deleting one that does not
    /// exist succeeds.
    ///
    /// # Errors
    /// `Invalid` for a name of the broker's (`amq.…`) or an over-long one;
    /// `ConnectionLost`.
    pub async fn delete_exchange(&self, exchange: &str) -> Result<(), TransportError> {
        let name = topology::declared_name("exchange name", exchange)?;
        let live = self.connector.live().await?;
        self.on_scratch_channel(&live, async |channel| {
            channel
                .exchange_delete(name, ExchangeDeleteOptions::default())
                .await
                .map_err(|error| transport_error(&format!("deleting exchange `{exchange}`"), &error))
        })
        .await
    }

    /// Closes the connection, as a broker restart would, and refuses to
    /// reconnect until [`allow_reconnect`](Self::allow_reconnect): every
    /// subscription ends and publishes fail with `ConnectionLost`.
    pub async fn disconnect(&self) {
        self.connector.hold_down().await;
    }

    /// Lets the transport reconnect on its next use after
    /// [`disconnect`](Self::disconnect).
    pub fn allow_reconnect(&self) {
        self.connector.allow_reconnect();
    }

    /// Closes the connection for good (unsettled deliveries go back to
    /// their queues).
    pub async fn close(&self) {
        self.connector.close().await;
    }
}

impl Transport for RabbitTransport {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all()
    }

    fn declare<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            // Checked before connecting: a topology the broker would refuse
            // (or one we refuse for it) fails the same with no broker.
            let known = self.connector.owned();
            let declarations = topology::Declarations::check(topology, &known)?;
            let live = self.connector.live().await?;
            self.on_scratch_channel(&live, async |channel| declarations.send(channel).await).await?;
            self.connector.own(topology);
            for exchange in &topology.exchanges {
                self.mark_verified(&live, exchange.name.clone());
            }
            Ok(())
        })
    }

    fn publish(&self, message: Outgoing) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(self.publish_confirmed(message))
    }

    fn consume<'a>(
        &'a self,
        queue: &'a str,
        prefetch: NonZeroU16,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, TransportError>> {
        Box::pin(self.subscribe(queue, prefetch))
    }

    fn has_connection(&self) -> bool {
        true
    }

    fn keep_connected<'a>(&'a self, metrics: &'a ActorMetrics) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(self.connector.keep(metrics))
    }
}
