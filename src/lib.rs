//! Hexeract: a messaging framework where every handler is a supervised actor
//! with a bounded mailbox.
//!
//! This release holds the in-process mediator: commands, queries and
//! notifications dispatched to handler actors, typed end to end. Handlers
//! are registered with `#[handler]`, found at start by
//! [`Builder::discover_handlers`], and checked against the declared
//! messages before anything runs.
//!
//! # Examples
//!
//! ```
//! use hexeract::{Context, Hexeract, Message, handler};
//! use std::time::Duration;
//!
//! #[derive(Debug, Message)]
//! #[message(name = "greet.v1", query, output = String)]
//! struct Greet { name: String }
//!
//! #[handler]
//! async fn greet(query: Greet, _ctx: &Context) -> Result<String, std::convert::Infallible> {
//!     Ok(format!("hello, {}", query.name))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let system = Hexeract::builder().handler(GreetHandler).start().await?;
//! let answer = system.mediator().query(Greet { name: "ada".into() }).await?;
//! assert_eq!(answer, "hello, ada");
//! println!("{}", system.metrics());
//! let report = system.shutdown(Duration::from_secs(5)).await;
//! assert!(report.is_clean());
//! # Ok(()) }
//! ```

// Lets the macros name `::hexeract` even inside this crate's own tests.
extern crate self as hexeract;

mod builder;
#[cfg(feature = "prometheus")]
mod endpoint;
mod system;

pub use builder::{Builder, Hexeract};
pub use hexeract_actors::{
    Context, DispatchError, HandlerActor, HandlerFailure, HandlerOptions, HandlerProblem, HandlerRegistration,
    HandlerResult, Handles, Mediator, PublishError, RouteInfo, Routes, StartError, TrySendError, VerifyError,
    middleware,
};
pub use hexeract_macros::{Message, handler};
pub use hexeract_runtime::shutdown::{ActorShutdown, ShutdownReport, shutdown_signal};
pub use hexeract_runtime::supervision::{Backoff, Escalation, PolicyError, RestartPolicy};
pub use hexeract_runtime::{
    BoxError, BoxFuture, Codec, CodecError, Command, Envelope, Headers, Message, MessageId, MessageKind, Metadata,
    MissingState, Notification, Query,
};
pub use system::System;

/// The bus: publisher, consumers, and the transport port with its adapters.
pub mod bus {
    pub use hexeract_actors::bus::{BusError, ConsumerConfig, Publisher, PublisherConfig, dead_letter_queue};
    pub use hexeract_runtime::ports::transport::{
        Binding, Capabilities, Delivery, DeliveryTag, Destination, ExchangeKind, ExchangeSpec, Outgoing, Overflow,
        PublishError, QueueSpec, Subscription, SubscriptionEvent, Topology, Transport, TransportError,
    };
    pub use hexeract_runtime::ports::wire::{self, WireError, WireMessage};
    pub use hexeract_transport_memory::MemoryTransport;

    /// The RabbitMQ transport (feature `rabbitmq`, on by default).
    #[cfg(feature = "rabbitmq")]
    pub mod rabbitmq {
        pub use hexeract_transport_rabbitmq::{
            AmqpUrl, ConnectError, DEFAULT_MAX_MESSAGE_SIZE, InvalidUrl, PeekedMessage, RETRY_TIER_PREFIX,
            RabbitConfig, RabbitTransport, validate_topology,
        };
    }
}

/// The outbox: the store port, and the relay's settings.
pub mod outbox {
    pub use hexeract_actors::relay::RelayConfig;
    pub use hexeract_runtime::ports::outbox::{LeaseOwner, OutboxRecord, OutboxStats, OutboxStore, StoreError};
}

/// The transactional outbox and inbox stores, one module per database
/// (features `sqlite`, on by default, `postgres` and `mysql`), and the sqlx
/// version they are built with.
///
/// [`Database`](storage::Database) is a database of any dialect built in,
/// chosen by URL, with the operator functions the `hexeract` CLI calls:
/// schema, statistics, dead rows, inbox retention. Its errors are
/// [`outbox::StoreError`]; outbox statistics are [`outbox::OutboxStats`].
///
/// ```no_run
/// use hexeract::storage::{Database, StorageConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let db = Database::connect("sqlite:app.db").await?;
/// let config = StorageConfig::default();
/// db.migrate(&config).await?;
/// let stats = db.outbox_stats(config.outbox_table()).await?;
/// println!("{} pending, {} dead", stats.pending, stats.dead);
/// for row in db.list_dead(config.outbox_table(), 10).await? {
///     println!("{} {:?}", row.id.0, row.last_error);
/// }
/// db.close().await;
/// # Ok(()) }
/// ```
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub mod storage {
    #[cfg(feature = "mysql")]
    pub use hexeract_storage::mysql;
    #[cfg(feature = "postgres")]
    pub use hexeract_storage::postgres;
    #[cfg(feature = "sqlite")]
    pub use hexeract_storage::sqlite;
    /// The sqlx these stores are built with: use it for pools and
    /// transactions so the types match.
    pub use hexeract_storage::sqlx;
    pub use hexeract_storage::{
        AppliedMigration, Database, DeadMessage, DeadRow, Dialect, InboxOutcome, InboxStats, OutboxConfig, SaveError,
        SchemaProblem, SentRetention, StorageConfig, TableName, default_inbox_table,
    };
}

/// Per-actor figures: what [`System::metrics`] returns.
pub mod metrics {
    pub use hexeract_runtime::metrics::{
        ActorSnapshot, ActorStatus, Latency, MetricsSnapshot, OutboxFigures, Outcome, OutcomeCounts, SystemSnapshot,
        TreeNode,
    };
}

/// The capacity of a handler's mailbox when neither the handler nor the
/// builder sets one.
pub const DEFAULT_MAILBOX_CAPACITY: usize = hexeract_runtime::mailbox::DEFAULT_CAPACITY.get();

/// What the macros expand to. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use hexeract_actors::inventory;
    pub use hexeract_actors::{DeclaredMessage, DiscoveredHandler, HandlerRegistration};
    pub use hexeract_runtime::routing_key_of;

    /// `#[handler]` on an `impl` block is discovered by building its state
    /// with `Default`.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` has no `Default`, so `discover_handlers()` cannot build it",
        note = "derive or implement `Default`, or write `#[handler(manual)]` and register a value with `.handler(value)`"
    )]
    pub trait DiscoverableState: Default {}
    impl<T: Default> DiscoverableState for T {}

    /// Registers a discoverable handler actor with `Default` state.
    pub fn register_default<S: crate::HandlerActor + DiscoverableState>() -> HandlerRegistration {
        HandlerRegistration::with_default::<S>()
    }
}

/// The README's example, compiled and run as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
