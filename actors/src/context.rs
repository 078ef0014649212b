//! What a handler knows about the message it handles and the system around it.

use std::sync::Arc;

use hexeract_runtime::{Command, Metadata, MissingState, Notification, Query, StateMap};
use tokio_util::sync::CancellationToken;

use crate::error::{DispatchError, PublishError};
use crate::mediator::Mediator;

/// The handler's view of one message: its metadata, the shared state, a
/// cancellation signal, and the mediator for follow-up messages (which
/// inherit this message's correlation id and name it as their cause).
pub struct Context {
    pub(crate) meta: Metadata,
    pub(crate) cancel: CancellationToken,
    pub(crate) state: Arc<StateMap>,
    pub(crate) mediator: Mediator,
}

impl Context {
    /// The message's metadata.
    pub fn meta(&self) -> &Metadata {
        &self.meta
    }

    /// The shared value of type `T` registered with `builder.state(value)`.
    ///
    /// # Errors
    /// [`MissingState`], naming `T`, when none was registered.
    ///
    /// # Examples
    ///
    /// ```
    /// # use hexeract::{Context, handler, Message};
    /// # #[derive(Message)] #[message(name = "doc.greet", query, output = String)] struct Greet;
    /// struct Greeting(String);
    ///
    /// #[handler]
    /// async fn greet(_q: Greet, ctx: &Context) -> Result<String, hexeract::BoxError> {
    ///     Ok(ctx.state::<Greeting>()?.0.clone())
    /// }
    /// ```
    pub fn state<T: Send + Sync + 'static>(&self) -> Result<&T, MissingState> {
        self.state.get::<T>()
    }

    /// Whether the dispatch was cancelled (a timeout fired, or shutdown
    /// reached its deadline). Long handlers can check it between steps.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the dispatch is cancelled.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Sends a follow-up command caused by this message.
    ///
    /// # Errors
    /// As [`Mediator::send`].
    pub async fn send<C: Command>(&self, command: C) -> Result<C::Output, DispatchError> {
        self.mediator.request(command, self.meta.child(C::NAME), true).await
    }

    /// Asks a follow-up query caused by this message.
    ///
    /// # Errors
    /// As [`Mediator::query`].
    pub async fn query<Q: Query>(&self, query: Q) -> Result<Q::Output, DispatchError> {
        self.mediator.request(query, self.meta.child(Q::NAME), true).await
    }

    /// Publishes a notification caused by this message.
    ///
    /// # Errors
    /// As [`Mediator::publish`].
    pub async fn publish<N: Notification>(&self, notification: N) -> Result<(), PublishError> {
        self.mediator.notify(notification, self.meta.child(N::NAME), true).await
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("meta", &self.meta)
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}
