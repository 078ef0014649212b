//! Hexeract's RabbitMQ transport, on lapin: the [`Transport`] port over a
//! real broker, passing the same conformance suite as the in-memory broker.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use hexeract_transport_rabbitmq::{RabbitConfig, RabbitTransport};
//!
//! let config = RabbitConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f")?
//!     .connect_timeout(Duration::from_secs(3));
//! let transport = Arc::new(RabbitTransport::connect(config).await?);
//! // builder.transport(transport) ...
//! # Ok(()) }
//! ```
//!
//! What it guarantees, and how, is on [`RabbitTransport`]; the message
//! format on the wire (so that services in other languages can join the
//! bus) is in `docs/wire-format.md`.
//!
//! [`Transport`]: hexeract_runtime::ports::transport::Transport

mod config;
mod connection;
mod error;
mod peek;
mod subscription;
mod topology;
mod transport;
mod url;
mod wire;

pub use config::{DEFAULT_MAX_MESSAGE_SIZE, RabbitConfig};
pub use error::ConnectError;
pub use peek::PeekedMessage;
pub use topology::{RETRY_TIER_PREFIX, validate_topology};
pub use transport::RabbitTransport;
pub use url::{AmqpUrl, InvalidUrl};
