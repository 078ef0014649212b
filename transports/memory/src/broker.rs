//! The broker's state and every operation on it. Each operation runs under
//! one short lock and never awaits; waiting (for a delivery, for room in a
//! queue, for a delay) happens outside the lock on a [`Notify`] or a timer.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU16;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hexeract_runtime::Headers;
use hexeract_runtime::ports::transport::{
    Binding, DeliveryTag, Destination, ExchangeSpec, Outgoing, Overflow, PublishError, QueueSpec, SubscriptionEvent,
    Topology, TransportError,
};
use hexeract_runtime::ports::wire::{
    DEAD_LETTER_REASON, ORIGINAL_EXCHANGE, ORIGINAL_QUEUE, ORIGINAL_ROUTING_KEY, WireMessage,
};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;

use crate::QueueStats;
use crate::queue::{self, Consumer, ConsumerId, Ending, Queue, Stored};
use crate::routing::{Pattern, check_name, check_short};

/// The shared broker behind every clone of a `MemoryTransport`.
pub(crate) struct Broker {
    state: Mutex<State>,
    pub(crate) max_message_size: usize,
}

impl Broker {
    pub(crate) fn new(max_message_size: usize) -> Self {
        Broker { state: Mutex::new(State::default()), max_message_size }
    }

    /// Locks the state. No code under this lock panics on purpose; should
    /// one panic anyway, the state is still consistent between operations,
    /// so later callers go on rather than all failing.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Exchange {
    spec: ExchangeSpec,
    bindings: Vec<Bound>,
}

struct Bound {
    queue: String,
    routing_key: String,
    pattern: Pattern,
}

/// Where a publish goes: the queues it matched, and the exchange and key a
/// delivery will report.
struct Route {
    exchange: String,
    routing_key: String,
    queues: Vec<String>,
}

/// Why a publish did not happen now.
pub(crate) enum Refusal {
    /// It failed for good.
    Failed(PublishError),
    /// An `Overflow::Block` queue is full: wait on this (registered while
    /// the lock was held, so no room freed since can be missed) and retry.
    Blocked(Box<Outgoing>, Pin<Box<OwnedNotified>>),
}

/// What a subscription's `next` found.
// Matched at once; boxing would allocate once per delivery.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Polled {
    Event(SubscriptionEvent),
    /// Nothing yet: wait for the consumer's wake-up, or until this instant
    /// when a delayed message becomes visible.
    Wait(Option<Instant>),
}

/// How a delivery is settled.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Settlement {
    Ack,
    Requeue,
    Reject,
}

pub(crate) struct State {
    connected: bool,
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<String, Queue>,
    consumers: HashMap<ConsumerId, Consumer>,
    last_tag: u64,
    last_consumer: ConsumerId,
    last_sequence: u64,
    dropped: u64,
}

impl Default for State {
    fn default() -> Self {
        State {
            connected: true,
            exchanges: HashMap::new(),
            queues: HashMap::new(),
            consumers: HashMap::new(),
            last_tag: 0,
            last_consumer: 0,
            last_sequence: 0,
            dropped: 0,
        }
    }
}

fn connection_lost() -> String {
    "the connection to the broker is closed".into()
}

impl State {
    // ---- topology -------------------------------------------------------

    /// Declares `topology` all or nothing: every name, conflict and binding
    /// is checked before anything changes.
    pub(crate) fn declare(&mut self, topology: &Topology) -> Result<(), TransportError> {
        if !self.connected {
            return Err(TransportError::ConnectionLost(connection_lost()));
        }
        let mut new_exchanges: HashMap<&str, &ExchangeSpec> = HashMap::new();
        for spec in &topology.exchanges {
            check_name("exchange name", &spec.name)?;
            let existing = self.exchanges.get(&spec.name).map(|exchange| &exchange.spec);
            if let Some(existing) = existing.or_else(|| new_exchanges.get(spec.name.as_str()).copied()) {
                exchange_conflict(existing, spec)?;
            }
            new_exchanges.insert(&spec.name, spec);
        }
        let mut new_queues: HashMap<&str, &QueueSpec> = HashMap::new();
        for spec in &topology.queues {
            check_name("queue name", &spec.name)?;
            if spec.message_ttl_ms.is_some() {
                return Err(TransportError::Invalid {
                    what: "queue",
                    reason: format!("`{}`: the memory transport has no message TTL", spec.name),
                });
            }
            if let Some(destination) = &spec.dead_letter {
                check_destination(destination)?;
            }
            let existing = self.queues.get(&spec.name).map(|queue| &queue.spec);
            if let Some(existing) = existing.or_else(|| new_queues.get(spec.name.as_str()).copied()) {
                queue_conflict(existing, spec)?;
            }
            new_queues.insert(&spec.name, spec);
        }
        let mut bindings = Vec::with_capacity(topology.bindings.len());
        for binding in &topology.bindings {
            bindings.push(self.compile_binding(binding, &new_exchanges, &new_queues)?);
        }

        for spec in &topology.exchanges {
            self.exchanges
                .entry(spec.name.clone())
                .or_insert_with(|| Exchange { spec: spec.clone(), bindings: Vec::new() });
        }
        for spec in &topology.queues {
            self.queues.entry(spec.name.clone()).or_insert_with(|| Queue::new(spec.clone()));
        }
        for (exchange, bound) in bindings {
            let Some(exchange) = self.exchanges.get_mut(&exchange) else { continue };
            let exists = exchange.bindings.iter().any(|b| b.queue == bound.queue && b.routing_key == bound.routing_key);
            if !exists {
                exchange.bindings.push(bound);
            }
        }
        tracing::debug!(
            exchanges = topology.exchanges.len(),
            queues = topology.queues.len(),
            bindings = topology.bindings.len(),
            "memory transport: topology declared"
        );
        Ok(())
    }

    fn compile_binding(
        &self,
        binding: &Binding,
        new_exchanges: &HashMap<&str, &ExchangeSpec>,
        new_queues: &HashMap<&str, &QueueSpec>,
    ) -> Result<(String, Bound), TransportError> {
        check_name("exchange name", &binding.exchange)?;
        check_name("queue name", &binding.queue)?;
        check_short("routing key", &binding.routing_key)?;
        let kind = self
            .exchanges
            .get(&binding.exchange)
            .map(|exchange| exchange.spec.kind)
            .or_else(|| new_exchanges.get(binding.exchange.as_str()).map(|spec| spec.kind))
            .ok_or_else(|| TransportError::NotFound(format!("exchange `{}`", binding.exchange)))?;
        if !self.queues.contains_key(&binding.queue) && !new_queues.contains_key(binding.queue.as_str()) {
            return Err(TransportError::NotFound(format!("queue `{}`", binding.queue)));
        }
        let pattern = Pattern::compile(kind, &binding.routing_key)?;
        let bound = Bound { queue: binding.queue.clone(), routing_key: binding.routing_key.clone(), pattern };
        Ok((binding.exchange.clone(), bound))
    }

    /// The queues `destination` reaches for a message with `headers`.
    fn route(&self, destination: &Destination, headers: &Headers) -> Result<Route, PublishError> {
        let (exchange, routing_key) = match destination {
            Destination::Queue(queue) => ("", queue.as_str()),
            Destination::Exchange { exchange, routing_key } => (exchange.as_str(), routing_key.as_str()),
        };
        // The empty exchange is AMQP's default exchange: the routing key
        // names the queue.
        if exchange.is_empty() {
            if !self.queues.contains_key(routing_key) {
                return Err(PublishError::NotFound(format!("queue `{routing_key}`")));
            }
            return Ok(Route {
                exchange: String::new(),
                routing_key: routing_key.to_owned(),
                queues: vec![routing_key.to_owned()],
            });
        }
        let found =
            self.exchanges.get(exchange).ok_or_else(|| PublishError::NotFound(format!("exchange `{exchange}`")))?;
        let mut seen = HashSet::new();
        let queues: Vec<String> = found
            .bindings
            .iter()
            .filter(|bound| bound.pattern.matches(routing_key, headers))
            .filter(|bound| seen.insert(bound.queue.as_str()))
            .map(|bound| bound.queue.clone())
            .collect();
        if queues.is_empty() {
            return Err(PublishError::Unroutable(destination.clone()));
        }
        Ok(Route { exchange: exchange.to_owned(), routing_key: routing_key.to_owned(), queues })
    }

    // ---- publish --------------------------------------------------------

    /// Routes and enqueues `outgoing` in every matching queue, or in none.
    pub(crate) fn publish(&mut self, outgoing: Outgoing, now: Instant) -> Result<(), Refusal> {
        if !self.connected {
            return Err(Refusal::Failed(PublishError::ConnectionLost(connection_lost())));
        }
        let route = self.route(&outgoing.destination, &outgoing.message.headers).map_err(Refusal::Failed)?;
        let mut blocked = None;
        for name in &route.queues {
            let Some(queue) = self.queues.get(name) else { continue };
            if queue.is_full() {
                match queue.spec.overflow {
                    Overflow::RejectPublish => return Err(Refusal::Failed(PublishError::QueueFull(name.clone()))),
                    Overflow::Block => blocked = blocked.or_else(|| Some(queue.room.clone())),
                }
            }
        }
        if let Some(room) = blocked {
            let mut waiting = Box::pin(room.notified_owned());
            waiting.as_mut().enable();
            return Err(Refusal::Blocked(Box::new(outgoing), waiting));
        }
        let visible_at = match outgoing.delay.filter(|delay| !delay.is_zero()) {
            None => None,
            Some(delay) => match now.checked_add(delay) {
                Some(at) => {
                    self.last_sequence += 1;
                    Some((at, self.last_sequence))
                }
                None => {
                    let error = PublishError::Nacked(format!("a delay of {delay:?} is out of range"));
                    return Err(Refusal::Failed(error));
                }
            },
        };
        let stored = Stored {
            message: outgoing.message,
            exchange: route.exchange,
            routing_key: route.routing_key,
            redelivered: false,
        };
        self.enqueue(&route.queues, stored, visible_at, now);
        Ok(())
    }

    /// Adds `stored` to each of `queues` (one clone per extra queue) and
    /// hands it to consumers, or wakes them to re-arm their delay timers.
    fn enqueue(&mut self, queues: &[String], stored: Stored, visible_at: Option<(Instant, u64)>, now: Instant) {
        let Some((last, others)) = queues.split_last() else { return };
        for name in others {
            self.enqueue_one(name, stored.clone(), visible_at, now);
        }
        self.enqueue_one(last, stored, visible_at, now);
    }

    fn enqueue_one(&mut self, name: &str, stored: Stored, visible_at: Option<(Instant, u64)>, now: Instant) {
        let State { queues, consumers, last_tag, .. } = self;
        let Some(queue) = queues.get_mut(name) else { return };
        queue.enqueue(stored, visible_at);
        if visible_at.is_some() {
            // A waiting consumer sleeps until the earliest due message; this
            // one may be earlier.
            for id in &queue.consumers {
                if let Some(consumer) = consumers.get(id) {
                    consumer.wake.notify_one();
                }
            }
        } else {
            queue::dispatch(queue, consumers, last_tag, now);
        }
    }

    fn dispatch(&mut self, name: &str, now: Instant) {
        let State { queues, consumers, last_tag, .. } = self;
        if let Some(queue) = queues.get_mut(name) {
            queue::dispatch(queue, consumers, last_tag, now);
        }
    }

    // ---- consume --------------------------------------------------------

    pub(crate) fn consume(
        &mut self,
        queue: &str,
        prefetch: NonZeroU16,
        now: Instant,
    ) -> Result<(ConsumerId, Arc<Notify>), TransportError> {
        if !self.connected {
            return Err(TransportError::ConnectionLost(connection_lost()));
        }
        let found = self.queues.get_mut(queue).ok_or_else(|| TransportError::NotFound(format!("queue `{queue}`")))?;
        self.last_consumer += 1;
        let id = self.last_consumer;
        let consumer = Consumer::new(queue.to_owned(), usize::from(prefetch.get()));
        let wake = consumer.wake.clone();
        found.consumers.push(id);
        self.consumers.insert(id, consumer);
        self.dispatch(queue, now);
        Ok((id, wake))
    }

    /// The next event for consumer `id`, if there is one now.
    pub(crate) fn poll(&mut self, id: ConsumerId, now: Instant) -> Polled {
        let ended = |reason: String| Polled::Event(SubscriptionEvent::Ended(reason));
        let Some(consumer) = self.consumers.get_mut(&id) else {
            return ended(Ending::Cancelled.reason());
        };
        if let Some(delivery) = consumer.take() {
            return Polled::Event(SubscriptionEvent::Delivery(delivery));
        }
        if let Some(ending) = &consumer.ended {
            return ended(ending.reason());
        }
        let name = consumer.queue.clone();
        let State { queues, consumers, last_tag, .. } = self;
        let Some(queue) = queues.get_mut(&name) else {
            return ended(Ending::QueueDeleted(name).reason());
        };
        queue::dispatch(queue, consumers, last_tag, now);
        match consumers.get_mut(&id).and_then(Consumer::take) {
            Some(delivery) => Polled::Event(SubscriptionEvent::Delivery(delivery)),
            None => Polled::Wait(queue.next_due()),
        }
    }

    /// Acks, requeues or rejects delivery `tag` of consumer `id`.
    pub(crate) fn settle(
        &mut self,
        id: ConsumerId,
        tag: DeliveryTag,
        settlement: Settlement,
        now: Instant,
    ) -> Result<(), TransportError> {
        let unknown = || TransportError::NotFound(format!("delivery tag {} (unknown or already settled)", tag.0));
        let consumer = self.consumers.get_mut(&id).ok_or_else(unknown)?;
        if let Some(ending) = &consumer.ended {
            return Err(ending.settle_error(tag));
        }
        // Only a delivery `next` returned can be settled: any other tag is
        // one the application cannot have been given.
        if !consumer.unacked.get(&tag.0).is_some_and(|unacked| unacked.handed_out) {
            return Err(unknown());
        }
        let Some(unacked) = consumer.unacked.remove(&tag.0) else { return Err(unknown()) };
        let name = consumer.queue.clone();
        let mut stored = unacked.stored;
        match settlement {
            Settlement::Ack => {}
            Settlement::Requeue => {
                stored.redelivered = true;
                if let Some(queue) = self.queues.get_mut(&name) {
                    queue.ready.push_front(stored);
                }
            }
            Settlement::Reject => self.dead_letter(&name, stored, now),
        }
        self.dispatch(&name, now);
        Ok(())
    }

    /// Sends a rejected message to `from`'s dead-letter destination, or
    /// drops it (counted, logged) when there is none or it routes nowhere.
    /// A dead letter is a move inside the broker, so it is placed even in a
    /// full bounded queue: refusing it could only lose it.
    fn dead_letter(&mut self, from: &str, mut stored: Stored, now: Instant) {
        let Some(destination) = self.queues.get(from).and_then(|queue| queue.spec.dead_letter.clone()) else {
            self.dropped += 1;
            tracing::debug!(queue = from, "memory transport: rejected message dropped (no dead-letter destination)");
            return;
        };
        let headers = &mut stored.message.headers;
        headers.entry(DEAD_LETTER_REASON.into()).or_insert_with(|| "rejected".into());
        headers.entry(ORIGINAL_QUEUE.into()).or_insert_with(|| from.to_owned());
        headers.entry(ORIGINAL_EXCHANGE.into()).or_insert_with(|| stored.exchange.clone());
        headers.entry(ORIGINAL_ROUTING_KEY.into()).or_insert_with(|| stored.routing_key.clone());
        match self.route(&destination, &stored.message.headers) {
            Ok(route) => {
                let dead = Stored {
                    message: stored.message,
                    exchange: route.exchange,
                    routing_key: route.routing_key,
                    redelivered: false,
                };
                self.enqueue(&route.queues, dead, None, now);
            }
            Err(error) => {
                self.dropped += 1;
                tracing::warn!(queue = from, %error, "memory transport: dead letter dropped, its destination routes nowhere");
            }
        }
    }

    /// Ends consumer `id` (if it has not ended) and returns its unsettled
    /// deliveries to the head of its queue.
    pub(crate) fn end_consumer(&mut self, id: ConsumerId, why: Ending, now: Instant) {
        let Some(consumer) = self.consumers.get_mut(&id) else { return };
        if consumer.ended.is_some() {
            return;
        }
        let returned = consumer.end(why);
        let name = consumer.queue.clone();
        if let Some(queue) = self.queues.get_mut(&name) {
            queue.remove_consumer(id);
            queue.return_to_head(returned.into_iter());
        }
        self.dispatch(&name, now);
    }

    /// Forgets consumer `id` after ending it (its subscription was dropped).
    pub(crate) fn remove_consumer(&mut self, id: ConsumerId, now: Instant) {
        self.end_consumer(id, Ending::Cancelled, now);
        self.consumers.remove(&id);
    }

    // ---- operator hooks -------------------------------------------------

    pub(crate) fn delete_queue(&mut self, name: &str) -> Result<usize, TransportError> {
        let mut queue = self.queues.remove(name).ok_or_else(|| TransportError::NotFound(format!("queue `{name}`")))?;
        for exchange in self.exchanges.values_mut() {
            exchange.bindings.retain(|bound| bound.queue != name);
        }
        let mut count = queue.clear();
        for id in &queue.consumers {
            if let Some(consumer) = self.consumers.get_mut(id) {
                count += consumer.end(Ending::QueueDeleted(name.to_owned())).len();
            }
        }
        tracing::debug!(queue = name, messages = count, "memory transport: queue deleted");
        Ok(count)
    }

    pub(crate) fn disconnect(&mut self) {
        if !self.connected {
            return;
        }
        self.connected = false;
        let State { queues, consumers, .. } = self;
        for consumer in consumers.values_mut().filter(|consumer| consumer.ended.is_none()) {
            let returned = consumer.end(Ending::ConnectionLost);
            if let Some(queue) = queues.get_mut(&consumer.queue) {
                queue.return_to_head(returned.into_iter());
            }
        }
        for queue in queues.values_mut() {
            queue.consumers.clear();
            // Publishers blocked on a full queue retry, and fail.
            queue.room.notify_waiters();
        }
        tracing::debug!("memory transport: disconnected");
    }

    pub(crate) fn reconnect(&mut self) {
        self.connected = true;
        tracing::debug!("memory transport: reconnected");
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    pub(crate) fn stats(&mut self, name: &str, now: Instant) -> Result<QueueStats, TransportError> {
        let State { queues, consumers, .. } = self;
        let queue = queues.get_mut(name).ok_or_else(|| TransportError::NotFound(format!("queue `{name}`")))?;
        queue.promote_due(now);
        let unacked = queue.consumers.iter().filter_map(|id| consumers.get(id)).map(|c| c.unacked.len()).sum();
        Ok(QueueStats {
            ready: queue.ready.len(),
            unacked,
            delayed: queue.delayed_len(),
            consumers: queue.consumers.len(),
        })
    }

    pub(crate) fn purge(&mut self, name: &str, now: Instant) -> Result<usize, TransportError> {
        let queue = self.queues.get_mut(name).ok_or_else(|| TransportError::NotFound(format!("queue `{name}`")))?;
        queue.promote_due(now);
        let count = queue.ready.len();
        queue.ready.clear();
        queue.room.notify_waiters();
        Ok(count)
    }

    pub(crate) fn peek(&mut self, name: &str, count: usize, now: Instant) -> Result<Vec<WireMessage>, TransportError> {
        let queue = self.queues.get_mut(name).ok_or_else(|| TransportError::NotFound(format!("queue `{name}`")))?;
        queue.promote_due(now);
        Ok(queue.ready.iter().take(count).map(|stored| stored.message.clone()).collect())
    }
}

fn exchange_conflict(existing: &ExchangeSpec, wanted: &ExchangeSpec) -> Result<(), TransportError> {
    let property = if existing.kind != wanted.kind {
        "kind"
    } else if existing.durable != wanted.durable {
        "durable"
    } else {
        return Ok(());
    };
    Err(TransportError::Conflict { kind: "exchange", name: wanted.name.clone(), property: property.into() })
}

fn queue_conflict(existing: &QueueSpec, wanted: &QueueSpec) -> Result<(), TransportError> {
    let property = if existing.durable != wanted.durable {
        "durable"
    } else if existing.kind != wanted.kind {
        "kind"
    } else if existing.max_length != wanted.max_length {
        "max_length"
    } else if existing.overflow != wanted.overflow {
        "overflow"
    } else if existing.dead_letter != wanted.dead_letter {
        "dead_letter"
    } else if existing.message_ttl_ms != wanted.message_ttl_ms {
        "message_ttl_ms"
    } else {
        return Ok(());
    };
    Err(TransportError::Conflict { kind: "queue", name: wanted.name.clone(), property: property.into() })
}

fn check_destination(destination: &Destination) -> Result<(), TransportError> {
    match destination {
        Destination::Queue(queue) => check_name("dead-letter queue name", queue),
        Destination::Exchange { exchange, routing_key } => {
            // The empty exchange is the default exchange, allowed here.
            if !exchange.is_empty() {
                check_name("dead-letter exchange name", exchange)?;
            }
            check_short("dead-letter routing key", routing_key)
        }
    }
}
