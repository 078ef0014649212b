//! The message model: what a message is, and the three kinds of it.

use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::Codec;

/// The three kinds of message the mediator dispatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Changes state; exactly one handler; returns a typed output.
    Command,
    /// Reads state; exactly one handler; returns a typed output.
    Query,
    /// Tells that something happened; any number of handlers, no output.
    Notification,
}

impl std::fmt::Display for MessageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MessageKind::Command => "command",
            MessageKind::Query => "query",
            MessageKind::Notification => "notification",
        })
    }
}

/// A message with a stable wire name.
///
/// Implement it with `#[derive(Message)]` and a `#[message(...)]` attribute
/// rather than by hand: the derive also declares the type so that
/// `verify_handlers` can tell when a command has no handler.
///
/// # Examples
///
/// ```
/// use hexeract::Message;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Message)]
/// #[message(name = "orders.place.v1", command, output = u64)]
/// struct PlaceOrder { sku: String, qty: u32 }
///
/// assert_eq!(<PlaceOrder as hexeract::Message>::NAME, "orders.place.v1");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a Hexeract message",
    note = "derive it: `#[derive(hexeract::Message)]` with `#[message(name = \"...\", command, output = T)]`"
)]
pub trait Message: Send + 'static {
    /// The stable wire name, e.g. `orders.place.v1`. Never derive it from the
    /// Rust type name: renaming a type must not change the wire.
    const NAME: &'static str;
    /// Command, query or notification.
    const KIND: MessageKind;
    /// The codec this type is encoded with on the wire, when it differs from
    /// the system-wide default.
    const CODEC: Option<Codec> = None;
    /// What a handler returns on success (`()` for notifications).
    type Output: Send + 'static;

    /// A key whose messages a worker pool handles in order (same key, same
    /// worker). `None`, the default, spreads messages round-robin.
    fn routing_key(&self) -> Option<u64> {
        None
    }
}

/// A message with exactly one handler that changes state.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a command",
    note = "declare it with `#[message(name = \"...\", command, output = T)]`; queries go through `query`, notifications through `publish`"
)]
pub trait Command: Message {}

/// A message with exactly one handler that reads state.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a query",
    note = "declare it with `#[message(name = \"...\", query, output = T)]`; commands go through `send`, notifications through `publish`"
)]
pub trait Query: Message {}

/// A message delivered to every subscribed handler. Each handler gets its
/// own copy, hence `Clone`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a notification",
    note = "declare it with `#[message(name = \"...\", notification)]` and derive `Clone`"
)]
pub trait Notification: Message<Output = ()> + Clone {}

/// Hashes a key field into the routing key of [`Message::routing_key`].
///
/// The hash is stable within a process, which is all per-key ordering needs:
/// the same key always lands on the same worker of a pool.
pub fn routing_key_of<K: Hash + ?Sized>(key: &K) -> u64 {
    // DefaultHasher::new() uses fixed keys, so it is deterministic per build.
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}
