//! What can go wrong when dispatching a message.

use std::time::Duration;

use hexeract_runtime::BoxError;

/// Why a command or query did not produce its output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// Nobody handles this message type.
    #[error(
        "no handler for `{message}` ({type_name}); register one with `#[handler]` and `discover_handlers()`, or `.handler(value)`"
    )]
    NoHandler {
        /// The message's wire name.
        message: &'static str,
        /// The Rust type.
        type_name: &'static str,
    },
    /// The handler returned an error. Get it back with
    /// [`DispatchError::handler_error`].
    #[error("handler `{handler}` failed on `{message}`")]
    Handler {
        /// The handler's name.
        handler: &'static str,
        /// The message's wire name.
        message: &'static str,
        /// What the handler returned.
        #[source]
        source: BoxError,
    },
    /// The handler panicked. Its actor is restarted by the supervisor; the
    /// messages queued behind this one are handled by the new incarnation.
    #[error("handler `{handler}` panicked on `{message}`: {panic}")]
    HandlerPanicked {
        /// The handler's name.
        handler: &'static str,
        /// The message's wire name.
        message: &'static str,
        /// The panic payload, when it was a string.
        panic: String,
    },
    /// The message was not handled in time; its handler was cancelled.
    #[error("`{message}` timed out after {after:?}; the handler was cancelled")]
    Timeout {
        /// The message's wire name.
        message: &'static str,
        /// The timeout that fired.
        after: Duration,
    },
    /// The system is shutting down and no longer accepts this message, or
    /// the deadline passed before it was handled.
    #[error("system is shutting down; `{message}` was not handled")]
    ShuttingDown {
        /// The message's wire name.
        message: &'static str,
    },
    /// The handler's actor was given up on by its supervisor (it failed too
    /// often) and its mailbox is closed.
    #[error("handler `{handler}` is stopped (its supervisor gave up on it); `{message}` was not handled")]
    HandlerStopped {
        /// The handler's name.
        handler: &'static str,
        /// The message's wire name.
        message: &'static str,
    },
    /// A middleware refused the message.
    #[error("middleware rejected `{message}`")]
    Rejected {
        /// The message's wire name.
        message: &'static str,
        /// The middleware's reason.
        #[source]
        source: BoxError,
    },
}

impl DispatchError {
    /// The handler's own error, if this is [`DispatchError::Handler`] and it
    /// is an `E`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use hexeract::DispatchError;
    /// # #[derive(Debug, thiserror::Error)] #[error("out of stock")] struct OutOfStock;
    /// let err = DispatchError::Handler { handler: "place_order", message: "orders.place.v1", source: Box::new(OutOfStock) };
    /// assert!(err.handler_error::<OutOfStock>().is_some());
    /// ```
    pub fn handler_error<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            DispatchError::Handler { source, .. } => source.downcast_ref::<E>(),
            _ => None,
        }
    }
}

/// [`Mediator::try_send`](crate::Mediator::try_send) could not queue the
/// message now; the message is handed back.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError<M> {
    /// The handler's mailbox is full. Retry later, or `send().await` to wait.
    #[error("mailbox of handler `{handler}` is full ({capacity} messages)")]
    MailboxFull {
        /// The message, untouched.
        message: M,
        /// The handler's name.
        handler: &'static str,
        /// Its mailbox capacity.
        capacity: usize,
    },
    /// The message could not be queued for another reason.
    #[error(transparent)]
    Dispatch(DispatchError),
}

impl<M> std::fmt::Debug for TrySendError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrySendError::MailboxFull { handler, capacity, .. } => f
                .debug_struct("MailboxFull")
                .field("handler", handler)
                .field("capacity", capacity)
                .finish_non_exhaustive(),
            TrySendError::Dispatch(error) => f.debug_tuple("Dispatch").field(error).finish(),
        }
    }
}

/// One subscriber's failure while handling a notification.
#[derive(Debug)]
pub struct HandlerFailure {
    /// The subscriber's name.
    pub handler: &'static str,
    /// What went wrong.
    pub error: DispatchError,
}

/// Some subscribers of a notification failed. The others ran to completion.
#[derive(Debug, thiserror::Error)]
#[error("{} of {} subscribers failed on `{message}`: {}", failures.len(), subscribers, summary(failures))]
pub struct PublishError {
    /// The notification's wire name.
    pub message: &'static str,
    /// How many subscribers it was delivered to.
    pub subscribers: usize,
    /// One entry per failed subscriber.
    pub failures: Vec<HandlerFailure>,
}

fn summary(failures: &[HandlerFailure]) -> String {
    failures.iter().map(|f| format!("`{}` ({})", f.handler, f.error)).collect::<Vec<_>>().join(", ")
}

/// An error and its sources, `outer: inner: innermost`, for a reason stored
/// on a row or a header where only text survives.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
