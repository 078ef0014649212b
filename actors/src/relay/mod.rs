//! The outbox relay: a poller actor per outbox table that claims due rows,
//! hands them to the [`Publisher`](crate::bus::Publisher), and records the
//! outcome of each on the row.

mod poller;

pub(crate) use poller::OutboxPoller;
pub use poller::RelayConfig;
