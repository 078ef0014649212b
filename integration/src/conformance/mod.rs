//! Conformance suites: one contract, checked the same way against every
//! implementation of a port.
//!
//! - [`transport`]: the [`Transport`](hexeract_runtime::ports::transport::Transport)
//!   contract. `tests/transport_memory.rs` runs it on the in-memory broker;
//!   a broker adapter's test file builds its transport, wraps it in a
//!   [`transport::TestedTransport`] and runs the same [`transport::CASES`].

pub mod transport;
