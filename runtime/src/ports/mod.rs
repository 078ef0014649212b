//! Ports: what the actors need from a broker ([`transport`]) and from a
//! database ([`outbox`]), as traits the adapters in `transports/` and
//! `storage/` implement. The actors see only these traits, so a SQLite user
//! never compiles lapin and a broker adapter never sees SQL.

pub mod outbox;
pub mod transport;
pub mod wire;
