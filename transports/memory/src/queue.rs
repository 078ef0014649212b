//! Queues and the consumers on them: where messages wait, and how they are
//! handed out round-robin within each consumer's prefetch.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use hexeract_runtime::ports::transport::{Delivery, DeliveryTag, QueueSpec, TransportError};
use hexeract_runtime::ports::wire::WireMessage;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A consumer's id, unique for the broker's lifetime.
pub(crate) type ConsumerId = u64;

/// A message inside the broker, with where it was published.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) message: WireMessage,
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) redelivered: bool,
}

/// One queue: its ready messages, its delayed ones, its consumers.
pub(crate) struct Queue {
    pub(crate) spec: QueueSpec,
    /// Visible messages, oldest first.
    pub(crate) ready: VecDeque<Stored>,
    /// Published with a delay, keyed by (visible at, publish sequence) so
    /// messages due at the same instant keep their publish order.
    delayed: BTreeMap<(Instant, u64), Stored>,
    /// Subscribed consumers in round-robin order.
    pub(crate) consumers: Vec<ConsumerId>,
    /// Index in `consumers` of the next one to try.
    cursor: usize,
    /// Woken (all waiters) whenever a ready message leaves, so publishers
    /// blocked on a full `Overflow::Block` queue retry.
    pub(crate) room: Arc<Notify>,
}

impl Queue {
    pub(crate) fn new(spec: QueueSpec) -> Self {
        Queue {
            spec,
            ready: VecDeque::new(),
            delayed: BTreeMap::new(),
            consumers: Vec::new(),
            cursor: 0,
            room: Arc::new(Notify::new()),
        }
    }

    /// Whether one more publish exceeds `max_length`. Delayed messages count:
    /// they hold their place from the publish on, so a bounded queue stays
    /// bounded and a delayed message never has to be refused after its
    /// publish was confirmed.
    pub(crate) fn is_full(&self) -> bool {
        self.spec.max_length.is_some_and(|max| self.ready.len() + self.delayed.len() >= max as usize)
    }

    /// Adds a published message: ready now, or once `visible_at` passes.
    pub(crate) fn enqueue(&mut self, stored: Stored, visible_at: Option<(Instant, u64)>) {
        match visible_at {
            Some(key) => {
                self.delayed.insert(key, stored);
            }
            None => self.ready.push_back(stored),
        }
    }

    /// Moves delayed messages whose time has come to the back of `ready`.
    pub(crate) fn promote_due(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let stored = entry.remove();
            self.ready.push_back(stored);
        }
    }

    /// When the next delayed message becomes visible.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.delayed.keys().next().map(|(at, _)| *at)
    }

    /// How many messages wait for their delay.
    pub(crate) fn delayed_len(&self) -> usize {
        self.delayed.len()
    }

    /// Puts returned deliveries back at the head, oldest first.
    pub(crate) fn return_to_head(&mut self, returned: impl DoubleEndedIterator<Item = Stored>) {
        for stored in returned.rev() {
            self.ready.push_front(stored);
        }
    }

    pub(crate) fn remove_consumer(&mut self, id: ConsumerId) {
        if let Some(index) = self.consumers.iter().position(|&other| other == id) {
            self.consumers.remove(index);
            if index < self.cursor {
                self.cursor -= 1;
            }
            if self.cursor >= self.consumers.len() {
                self.cursor = 0;
            }
        }
    }

    /// Empties the queue, returning how many messages it held (ready and
    /// delayed; unacked ones belong to consumers).
    pub(crate) fn clear(&mut self) -> usize {
        let count = self.ready.len() + self.delayed.len();
        self.ready.clear();
        self.delayed.clear();
        self.room.notify_waiters();
        count
    }
}

/// Why a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ending {
    Cancelled,
    QueueDeleted(String),
    ConnectionLost,
}

impl Ending {
    /// The reason [`SubscriptionEvent::Ended`] carries.
    ///
    /// [`SubscriptionEvent::Ended`]: hexeract_runtime::ports::transport::SubscriptionEvent::Ended
    pub(crate) fn reason(&self) -> String {
        match self {
            Ending::Cancelled => "the subscription was cancelled".into(),
            Ending::QueueDeleted(queue) => format!("queue `{queue}` was deleted"),
            Ending::ConnectionLost => "the connection to the broker was lost".into(),
        }
    }

    /// The error for settling `tag` on a subscription that ended this way.
    pub(crate) fn settle_error(&self, tag: DeliveryTag) -> TransportError {
        match self {
            Ending::ConnectionLost => TransportError::ConnectionLost(format!(
                "cannot settle delivery tag {}: the connection was lost and its deliveries went back to the queue",
                tag.0
            )),
            other => TransportError::NotFound(format!("delivery tag {} ({})", tag.0, other.reason())),
        }
    }
}

/// A delivery the broker handed to a consumer and that is not settled yet.
pub(crate) struct Unacked {
    pub(crate) stored: Stored,
    /// Whether `next` returned it to the application (so its tag is known
    /// and, returned to the queue, it counts as redelivered).
    pub(crate) handed_out: bool,
}

/// One subscription's broker-side state.
pub(crate) struct Consumer {
    pub(crate) queue: String,
    prefetch: usize,
    /// Every unsettled delivery, by tag. Never more than `prefetch`.
    pub(crate) unacked: BTreeMap<u64, Unacked>,
    /// Tags of deliveries assigned to this consumer that `next` has not
    /// returned yet (a subset of `unacked`).
    pub(crate) assigned: VecDeque<u64>,
    pub(crate) ended: Option<Ending>,
    /// Woken (one permit) when a delivery is assigned or the subscription
    /// ends; the subscription's `next` waits on it.
    pub(crate) wake: Arc<Notify>,
}

impl Consumer {
    pub(crate) fn new(queue: String, prefetch: usize) -> Self {
        Consumer {
            queue,
            prefetch,
            unacked: BTreeMap::new(),
            assigned: VecDeque::new(),
            ended: None,
            wake: Arc::new(Notify::new()),
        }
    }

    fn has_credit(&self) -> bool {
        self.ended.is_none() && self.unacked.len() < self.prefetch
    }

    fn assign(&mut self, tag: u64, stored: Stored) {
        self.unacked.insert(tag, Unacked { stored, handed_out: false });
        self.assigned.push_back(tag);
        self.wake.notify_one();
    }

    /// The next assigned delivery, now handed out.
    pub(crate) fn take(&mut self) -> Option<Delivery> {
        while let Some(tag) = self.assigned.pop_front() {
            // A tag is only missing here if it was settled in between, which
            // cannot happen to one never handed out; skip it defensively.
            let Some(unacked) = self.unacked.get_mut(&tag) else { continue };
            unacked.handed_out = true;
            let stored = &unacked.stored;
            return Some(Delivery {
                tag: DeliveryTag(tag),
                message: stored.message.clone(),
                queue: self.queue.clone(),
                exchange: stored.exchange.clone(),
                routing_key: stored.routing_key.clone(),
                redelivered: stored.redelivered,
            });
        }
        None
    }

    /// Ends the subscription and takes back every unsettled delivery, oldest
    /// first, marked redelivered when the application had seen it.
    pub(crate) fn end(&mut self, why: Ending) -> Vec<Stored> {
        self.ended = Some(why);
        self.assigned.clear();
        self.wake.notify_one();
        std::mem::take(&mut self.unacked)
            .into_values()
            .map(|unacked| {
                let mut stored = unacked.stored;
                stored.redelivered |= unacked.handed_out;
                stored
            })
            .collect()
    }
}

/// Hands `queue`'s due and ready messages to its consumers, round-robin,
/// each up to its prefetch.
pub(crate) fn dispatch(
    queue: &mut Queue,
    consumers: &mut HashMap<ConsumerId, Consumer>,
    last_tag: &mut u64,
    now: Instant,
) {
    queue.promote_due(now);
    let before = queue.ready.len();
    while !queue.ready.is_empty() {
        let count = queue.consumers.len();
        let next = (0..count)
            .map(|offset| (queue.cursor + offset) % count)
            .find(|&index| consumers.get(&queue.consumers[index]).is_some_and(Consumer::has_credit));
        let Some(index) = next else { break };
        let Some(consumer) = consumers.get_mut(&queue.consumers[index]) else { break };
        let Some(stored) = queue.ready.pop_front() else { break };
        queue.cursor = (index + 1) % count;
        *last_tag += 1;
        consumer.assign(*last_tag, stored);
    }
    if queue.ready.len() < before {
        queue.room.notify_waiters();
    }
}
