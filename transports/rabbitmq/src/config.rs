//! How the RabbitMQ transport connects and publishes.

use std::time::Duration;

use hexeract_runtime::supervision::Backoff;

use crate::url::{AmqpUrl, InvalidUrl};

/// The default limit on a message's size (body, properties and headers):
/// half of RabbitMQ 3.x's default `max_message_size` of 128 MiB, so that a
/// message the broker would refuse (and a channel it would close) is
/// refused here first.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Settings of a [`RabbitTransport`](crate::RabbitTransport).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RabbitConfig {
    /// The broker.
    pub url: AmqpUrl,
    /// Longest wait for a connection (TCP, TLS and the AMQP handshake).
    /// Default 5 s.
    pub connect_timeout: Duration,
    /// Heartbeat interval negotiated with the broker, in seconds; `0`
    /// disables heartbeats. Default 10.
    pub heartbeat: u16,
    /// Longest wait for a publish confirm. Default 30 s.
    pub confirm_timeout: Duration,
    /// Messages larger than this are refused before they reach the broker.
    pub max_message_size: usize,
    /// Delay between reconnection attempts (full jitter). Default 100 ms to 10 s.
    pub reconnect_backoff: Backoff,
    /// How long `consume` waits for a lost connection to come back before
    /// failing (its supervisor then restarts the consumer). Default 30 s.
    pub reconnect_patience: Duration,
    /// PEM certificates trusted for `amqps://`, besides the public web roots
    /// (for a private CA or a self-signed broker certificate).
    pub tls_roots_pem: Option<String>,
    /// The `app_id` property of published messages. Default `hexeract`.
    pub app_id: String,
}

impl RabbitConfig {
    /// Settings for `url` with every default.
    ///
    /// # Errors
    /// [`InvalidUrl`] when `url` is not an `amqp://` or `amqps://` URL.
    pub fn new(url: &str) -> Result<Self, InvalidUrl> {
        Ok(RabbitConfig {
            url: AmqpUrl::parse(url)?,
            connect_timeout: Duration::from_secs(5),
            heartbeat: 10,
            confirm_timeout: Duration::from_secs(30),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            reconnect_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
                .expect("a valid backoff"),
            reconnect_patience: Duration::from_secs(30),
            tls_roots_pem: None,
            app_id: "hexeract".into(),
        })
    }

    /// Sets the connect timeout.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the heartbeat interval in seconds (`0` disables heartbeats).
    #[must_use]
    pub fn heartbeat(mut self, seconds: u16) -> Self {
        self.heartbeat = seconds;
        self
    }

    /// Sets the confirm timeout.
    #[must_use]
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }

    /// Sets the message size limit.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets the delay between reconnection attempts.
    #[must_use]
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Self {
        self.reconnect_backoff = backoff;
        self
    }

    /// Sets how long `consume` waits for a lost connection to come back.
    #[must_use]
    pub fn reconnect_patience(mut self, patience: Duration) -> Self {
        self.reconnect_patience = patience;
        self
    }

    /// Trusts these PEM certificates for `amqps://`.
    #[must_use]
    pub fn tls_roots_pem(mut self, pem: impl Into<String>) -> Self {
        self.tls_roots_pem = Some(pem.into());
        self
    }

    /// Sets the `app_id` property of published messages.
    #[must_use]
    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = app_id.into();
        self
    }
}
