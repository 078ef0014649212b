//! What a handler knows about the message it handles and the system around it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hexeract_runtime::{Command, Metadata, MissingState, Notification, Query};
use tokio::sync::Notify;

use crate::error::{DispatchError, PublishError};
use crate::mediator::Mediator;

/// The handler's view of one message: its metadata, the shared state, a
/// cancellation signal, and the mediator for follow-up messages (which
/// inherit this message's correlation id and name it as their cause).
pub struct Context {
    pub(crate) meta: Metadata,
    pub(crate) cancel: Cancel,
    pub(crate) mediator: Mediator,
    pub(crate) duplicate: AtomicBool,
}

/// What the caller knows of a context: the worker adds the rest (its own
/// handle on the mediator), so that callers on other cores never touch the
/// mediator's reference count.
pub(crate) struct Seed {
    pub(crate) meta: Metadata,
    pub(crate) cancel: Cancel,
}

impl Seed {
    pub(crate) fn into_context(self, mediator: &Mediator) -> Context {
        Context { meta: self.meta, cancel: self.cancel, mediator: mediator.clone(), duplicate: AtomicBool::new(false) }
    }
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
        self.mediator.state().get::<T>()
    }

    /// Records that this message was a duplicate the handler skipped (its
    /// inbox had seen the id): it is counted as `duplicate` in the metrics
    /// rather than `ok`. The handler still returns `Ok`, so the delivery is
    /// acknowledged.
    pub fn mark_duplicate(&self) {
        self.duplicate.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_duplicate(&self) -> bool {
        self.duplicate.load(Ordering::Relaxed)
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

/// The cancellation signal of one dispatch, shared by the caller's
/// [`Dispatch`](crate::middleware::Dispatch) and the handler's [`Context`].
///
/// A flag and a [`Notify`]: one allocation to make, and checking it is one
/// atomic load. (A `CancellationToken` takes a lock to clone, to drop and to
/// check, and one dispatch needs no token tree.) A dispatch that nothing on
/// the caller's side can cancel (no active middleware, `try_send`) carries
/// [`Cancel::never`], which allocates nothing.
#[derive(Clone, Default)]
pub(crate) struct Cancel(Option<Arc<CancelState>>);

#[derive(Default)]
struct CancelState {
    cancelled: AtomicBool,
    notify: Notify,
}

impl Cancel {
    /// A signal the caller can fire.
    pub(crate) fn new() -> Self {
        Cancel(Some(Arc::default()))
    }

    /// A signal nobody can fire.
    pub(crate) fn never() -> Self {
        Cancel(None)
    }

    /// Cancels; wakes everything waiting in [`Cancel::cancelled`]. Idempotent.
    pub(crate) fn cancel(&self) {
        if let Some(state) = &self.0
            && !state.cancelled.swap(true, Ordering::AcqRel)
        {
            state.notify.notify_waiters();
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.as_ref().is_some_and(|state| state.cancelled.load(Ordering::Acquire))
    }

    /// Resolves once cancelled (at once if already; never for [`Cancel::never`]).
    /// Cancel safe.
    pub(crate) async fn cancelled(&self) {
        let Some(state) = &self.0 else {
            return std::future::pending().await;
        };
        loop {
            let notified = state.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check: a `cancel` after the check wakes it.
            notified.as_mut().enable();
            if state.cancelled.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel").field("cancelled", &self.is_cancelled()).finish()
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
