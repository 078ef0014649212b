//! The Hexeract kernel.
//!
//! Everything the other crates share and nothing that talks to a broker or a
//! database: the message model ([`Message`], [`Envelope`], [`Codec`]), bounded
//! mailboxes ([`mailbox`]), supervision with restart policies
//! ([`supervision`]), shutdown reports ([`shutdown`]) and the metrics
//! registry ([`metrics`]).
//!
//! Users reach these through the `hexeract` facade; the types here carry no
//! ractor type in their public signatures except in [`supervision`], which
//! the other Hexeract crates use to build their actors.

pub mod codec;
pub mod envelope;
pub mod mailbox;
pub mod message;
pub mod metrics;
pub mod ports;
pub mod shutdown;
pub mod state;
pub mod supervision;

pub use codec::{Codec, CodecError};
pub use envelope::{Envelope, Headers, MessageId, Metadata};
pub use message::{Command, Message, MessageKind, Notification, Query, routing_key_of};
pub use state::{MissingState, StateMap};

/// A boxed error, the shape handler errors take once they leave the handler.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A boxed, sendable future, the shape type-erased work takes.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;
