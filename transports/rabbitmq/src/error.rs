//! lapin's errors, turned into the port's typed errors. None of them carries
//! the connection URL's password: lapin's messages never contain it, and
//! ours print [`AmqpUrl`](crate::AmqpUrl), which masks it.

use std::time::Duration;

use hexeract_runtime::ports::transport::{PublishError, TransportError};
use lapin::ErrorKind;
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};

/// Why a connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL does not parse.
    #[error(transparent)]
    InvalidUrl(#[from] crate::url::InvalidUrl),
    /// Nothing answered in time (a silent host, a black-holed port, a stuck
    /// handshake).
    #[error("no connection to {url} within {timeout:?}")]
    Timeout {
        /// The broker, password masked.
        url: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The broker refused the credentials or the virtual host.
    #[error("{url} refused the login: {reason}")]
    Refused {
        /// The broker, password masked.
        url: String,
        /// The broker's words.
        reason: String,
    },
    /// The broker could not be reached (connection refused, DNS, TLS).
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The broker, password masked.
        url: String,
        /// Why.
        reason: String,
    },
}

/// The AMQP reply code in `error`, when the broker sent one.
pub(crate) fn amqp_code(error: &lapin::Error) -> Option<&AMQPErrorKind> {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => Some(amqp.kind()),
        _ => None,
    }
}

pub(crate) fn is_not_found(error: &lapin::Error) -> bool {
    matches!(amqp_code(error), Some(AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

pub(crate) fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(amqp_code(error), Some(AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

pub(crate) fn is_access_refused(error: &lapin::Error) -> bool {
    matches!(
        amqp_code(error),
        Some(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED))
    )
}

/// The broker's own message for `error` (`NOT_FOUND - no queue 'x' in vhost '/'`).
pub(crate) fn broker_text(error: &lapin::Error) -> String {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => amqp.get_message().to_string(),
        _ => error.to_string(),
    }
}

/// A failed operation other than a publish.
pub(crate) fn transport_error(what: &str, error: &lapin::Error) -> TransportError {
    if is_not_found(error) {
        TransportError::NotFound(format!("{what}: {}", broker_text(error)))
    } else {
        TransportError::ConnectionLost(format!("{what}: {error}"))
    }
}

/// A failed publish.
pub(crate) fn publish_error(what: &str, error: &lapin::Error) -> PublishError {
    if is_not_found(error) {
        PublishError::NotFound(format!("{what}: {}", broker_text(error)))
    } else {
        PublishError::ConnectionLost(format!("{what}: {error}"))
    }
}
