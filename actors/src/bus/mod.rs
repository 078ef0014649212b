//! The bus actors: the [`Publisher`] (confirmed publishing through a
//! [`Transport`](hexeract_runtime::ports::transport::Transport)), a consumer
//! per queue feeding deliveries to the handler actors that subscribed, the
//! connection keeper of a transport that has a broker connection, and
//! [`BusTree`], which starts them and stops them in order.

mod connection;
mod consumer;
mod publisher;
mod routes;
mod tree;

pub use consumer::{ConsumerConfig, dead_letter_queue};
pub use publisher::{BusError, Publisher, PublisherConfig};
pub(crate) use routes::BusRoutes;
pub use tree::{BusConfig, BusTree};
