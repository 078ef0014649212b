//! Middleware: code that wraps every dispatch through the mediator.
//!
//! A [`Middleware`] sees the message's [`Dispatch`] record and decides
//! whether and how to call the rest of the chain ([`Next`]). Middleware runs
//! in the order it was registered, outermost first, on the caller's task.
//! Two ship with Hexeract: [`Tracing`] (on by default) and [`Timeout`].
//!
//! [`Mediator::try_send`](crate::Mediator::try_send) queues synchronously
//! and does not go through middleware.

mod timeout;
mod tracing;

use std::sync::Arc;

use hexeract_runtime::{BoxFuture, MessageKind, Metadata};

pub use self::timeout::Timeout;
pub use self::tracing::Tracing;
use crate::context::Cancel;
use crate::error::DispatchError;

/// Wraps dispatch. Implement `handle`, call `next.run(dispatch)` to go on,
/// or return an error to stop the message here.
///
/// # Examples
///
/// ```
/// use hexeract::middleware::{Dispatch, Middleware, Next};
/// use hexeract::{BoxFuture, DispatchError};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// /// Counts dispatches by kind.
/// #[derive(Default)]
/// struct Count(AtomicU64);
///
/// impl Middleware for Count {
///     fn handle<'a>(&'a self, dispatch: &'a Dispatch, next: Next<'a>) -> BoxFuture<'a, Result<(), DispatchError>> {
///         self.0.fetch_add(1, Ordering::Relaxed);
///         next.run(dispatch)
///     }
/// }
/// ```
pub trait Middleware: Send + Sync + 'static {
    /// Handles one dispatch.
    fn handle<'a>(&'a self, dispatch: &'a Dispatch, next: Next<'a>) -> BoxFuture<'a, Result<(), DispatchError>>;

    /// Whether this middleware would do anything right now. When no
    /// middleware of the chain is active, the mediator skips the chain and its
    /// allocations. The default is `true`.
    fn is_active(&self) -> bool {
        true
    }
}

/// One message on its way through the middleware chain.
#[derive(Debug)]
pub struct Dispatch {
    pub(crate) meta: Metadata,
    pub(crate) kind: MessageKind,
    pub(crate) cancel: Cancel,
}

impl Dispatch {
    /// The message's metadata.
    pub fn meta(&self) -> &Metadata {
        &self.meta
    }

    /// Command, query or notification.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }

    /// Cancels the handler's work: its context reports cancelled and its
    /// future is dropped at the next await point.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// The rest of the chain, ending at the handler.
pub struct Next<'a> {
    rest: &'a [Arc<dyn Middleware>],
    endpoint: BoxFuture<'a, Result<(), DispatchError>>,
}

impl<'a> Next<'a> {
    pub(crate) fn new(chain: &'a [Arc<dyn Middleware>], endpoint: BoxFuture<'a, Result<(), DispatchError>>) -> Self {
        Next { rest: chain, endpoint }
    }

    /// Runs the rest of the chain and the handler.
    pub fn run(self, dispatch: &'a Dispatch) -> BoxFuture<'a, Result<(), DispatchError>> {
        match self.rest.split_first() {
            Some((first, rest)) => first.handle(dispatch, Next { rest, endpoint: self.endpoint }),
            None => self.endpoint,
        }
    }
}
