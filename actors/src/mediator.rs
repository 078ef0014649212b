//! The mediator: typed `send`, `query` and `publish`, routed to handler
//! actors by message type.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hexeract_runtime::{Command, Message, Metadata, Notification, Query, StateMap};

use crate::context::{Cancel, Seed};
use crate::error::{DispatchError, HandlerFailure, PublishError, TrySendError};
use crate::middleware::{Dispatch, Middleware, Next};
use crate::pool::{Endpoint, Refused, Reply};
use crate::router::{RouteTable, Router};

/// Sends commands and queries to their handler and notifications to every
/// subscriber. Cheap to clone; every clone talks to the same system.
#[derive(Clone)]
pub struct Mediator {
    inner: Arc<Inner>,
}

// Aligned so that the reference counts, which every dispatch's `Context`
// changes, do not share a cache line with the fields every dispatch reads.
#[repr(align(128))]
struct Inner {
    router: RouteTable,
    state: Arc<StateMap>,
    middleware: Vec<Arc<dyn Middleware>>,
    shutting_down: AtomicBool,
}

impl Mediator {
    pub(crate) fn new(router: Router, state: Arc<StateMap>, middleware: Vec<Arc<dyn Middleware>>) -> Self {
        Mediator {
            inner: Arc::new(Inner {
                router: router.freeze(),
                state,
                middleware,
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    pub(crate) fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// The shared state handlers read with `ctx.state::<T>()`.
    pub(crate) fn state(&self) -> &StateMap {
        &self.inner.state
    }

    fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    /// Sends `command` to its handler and waits for the output, waiting for
    /// mailbox room first if the handler is busy (back-pressure).
    ///
    /// # Errors
    /// [`DispatchError::NoHandler`], [`DispatchError::Handler`] (the
    /// handler's own error), [`DispatchError::HandlerPanicked`],
    /// [`DispatchError::Timeout`], [`DispatchError::ShuttingDown`],
    /// [`DispatchError::HandlerStopped`].
    ///
    /// # Cancel safety
    /// Dropping the future before the message is queued sends nothing;
    /// dropping it afterwards does not stop the handler (use a timeout for that).
    ///
    /// # Examples
    ///
    /// ```
    /// use hexeract::{Context, Hexeract, Message, handler};
    ///
    /// #[derive(Message)]
    /// #[message(name = "doc.double.v1", command, output = u32)]
    /// struct Double(u32);
    ///
    /// #[handler]
    /// async fn double(cmd: Double, _ctx: &Context) -> Result<u32, std::convert::Infallible> {
    ///     Ok(cmd.0 * 2)
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let system = Hexeract::builder().handler(DoubleHandler).start().await?;
    /// assert_eq!(system.mediator().send(Double(21)).await?, 42);
    /// system.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(()) }
    /// ```
    pub async fn send<C: Command>(&self, command: C) -> Result<C::Output, DispatchError> {
        self.request(command, Metadata::root(C::NAME), false).await
    }

    /// Asks `query` of its handler and waits for the answer.
    ///
    /// # Errors
    /// As [`Mediator::send`].
    pub async fn query<Q: Query>(&self, query: Q) -> Result<Q::Output, DispatchError> {
        self.request(query, Metadata::root(Q::NAME), false).await
    }

    /// Delivers `notification` to every subscriber concurrently and waits for
    /// all of them. One subscriber failing does not stop the others. No
    /// subscriber at all is not an error.
    ///
    /// # Errors
    /// [`PublishError`] with one entry per failed subscriber.
    pub async fn publish<N: Notification>(&self, notification: N) -> Result<(), PublishError> {
        self.notify(notification, Metadata::root(N::NAME), false).await
    }

    /// Queues `command` only if its handler's mailbox has room now, and
    /// returns a future of the output. Does not go through middleware.
    ///
    /// # Errors
    /// [`TrySendError::MailboxFull`] hands the command back;
    /// [`TrySendError::Dispatch`] for no handler or shutdown.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use hexeract::{TrySendError, Mediator};
    /// # async fn run<C: hexeract::Command>(mediator: Mediator, cmd: C) {
    /// match mediator.try_send(cmd) {
    ///     Ok(reply) => { let _ = reply.await; }
    ///     Err(TrySendError::MailboxFull { message, .. }) => { /* shed load, or keep `message` for later */ }
    ///     Err(other) => eprintln!("{other}"),
    /// }
    /// # }
    /// ```
    pub fn try_send<C: Command>(
        &self,
        command: C,
    ) -> Result<impl Future<Output = Result<C::Output, DispatchError>> + Send + 'static, TrySendError<C>> {
        if self.is_shutting_down() {
            return Err(TrySendError::Dispatch(DispatchError::ShuttingDown { message: C::NAME }));
        }
        let endpoint = self.endpoint::<C>().map_err(TrySendError::Dispatch)?;
        let ctx = self.context(Metadata::root(C::NAME), Cancel::never());
        match endpoint.try_dispatch(command, ctx) {
            Ok(reply) => {
                let mediator = self.clone();
                let handler = endpoint.handler();
                Ok(async move { mediator.await_reply::<C>(reply, handler).await })
            }
            Err(Refused::Full { message, capacity, .. }) => {
                Err(TrySendError::MailboxFull { message, handler: endpoint.handler(), capacity })
            }
            Err(Refused::Closed) => Err(TrySendError::Dispatch(self.closed_error::<C>(endpoint.handler()))),
        }
    }

    fn endpoint<M: Message>(&self) -> Result<&dyn Endpoint<M>, DispatchError> {
        self.inner
            .router
            .first::<M>()
            .ok_or(DispatchError::NoHandler { message: M::NAME, type_name: std::any::type_name::<M>() })
    }

    fn context(&self, meta: Metadata, cancel: Cancel) -> Seed {
        Seed { meta, cancel }
    }

    fn closed_error<M: Message>(&self, handler: &'static str) -> DispatchError {
        if self.is_shutting_down() {
            DispatchError::ShuttingDown { message: M::NAME }
        } else {
            DispatchError::HandlerStopped { handler, message: M::NAME }
        }
    }

    async fn await_reply<M: Message>(
        &self,
        reply: Reply<M>,
        handler: &'static str,
    ) -> Result<M::Output, DispatchError> {
        match reply.await {
            Ok(result) => result,
            // The job was dropped unanswered: taken back at shutdown, or its
            // actor was given up on.
            Err(_) => Err(self.closed_error::<M>(handler)),
        }
    }

    async fn enqueue<M: Message>(
        &self,
        endpoint: &dyn Endpoint<M>,
        message: M,
        ctx: Seed,
    ) -> Result<Reply<M>, DispatchError> {
        let refused = match endpoint.try_dispatch(message, ctx) {
            Ok(reply) => return Ok(reply),
            Err(refused) => refused,
        };
        match refused {
            // Full: wait for room, which is the back-pressure.
            Refused::Full { message, ctx, .. } => {
                endpoint.dispatch(message, ctx).await.map_err(|_| self.closed_error::<M>(endpoint.handler()))
            }
            Refused::Closed => Err(self.closed_error::<M>(endpoint.handler())),
        }
    }

    /// Runs the middleware chain around `endpoint`, which leaves its result
    /// in a slot the caller reads afterwards.
    async fn through_middleware<'a>(
        &'a self,
        dispatch: &'a Dispatch,
        endpoint: hexeract_runtime::BoxFuture<'a, Result<(), DispatchError>>,
    ) -> Result<(), DispatchError> {
        if self.inner.middleware.is_empty() {
            endpoint.await
        } else {
            Next::new(&self.inner.middleware, endpoint).run(dispatch).await
        }
    }

    pub(crate) async fn request<M: Message>(
        &self,
        message: M,
        meta: Metadata,
        nested: bool,
    ) -> Result<M::Output, DispatchError> {
        // Nested dispatches (from a handler's context) still run while the
        // system drains, so work in progress can finish.
        if !nested && self.is_shutting_down() {
            return Err(DispatchError::ShuttingDown { message: M::NAME });
        }
        let endpoint = self.endpoint::<M>()?;
        self.deliver(endpoint, message, meta).await
    }

    /// Hands `message` to `endpoint` through the middleware, with `meta`:
    /// a request once routed, or a bus delivery to the handler that
    /// subscribed (with the metadata it travelled with). No shutdown check
    /// here: the consumer stops taking deliveries before the mediator stops,
    /// and what it took must finish.
    pub(crate) async fn deliver<M: Message>(
        &self,
        endpoint: &dyn Endpoint<M>,
        message: M,
        meta: Metadata,
    ) -> Result<M::Output, DispatchError> {
        if !self.inner.middleware.iter().any(|m| m.is_active()) {
            // Nothing to wrap: no chain, no boxed future, no second copy of
            // the metadata, nothing on this side that could cancel.
            let ctx = self.context(meta, Cancel::never());
            let reply = self.enqueue(endpoint, message, ctx).await?;
            return self.await_reply::<M>(reply, endpoint.handler()).await;
        }
        let dispatch = Dispatch { meta, kind: M::KIND, cancel: Cancel::new() };
        let ctx = self.context(dispatch.meta.clone(), dispatch.cancel.clone());
        let mut output = None;
        let result = {
            let slot = &mut output;
            let call = Box::pin(async move {
                let reply = self.enqueue(endpoint, message, ctx).await?;
                *slot = Some(self.await_reply::<M>(reply, endpoint.handler()).await?);
                Ok(())
            });
            self.through_middleware(&dispatch, call).await
        };
        match (result, output) {
            (Ok(()), Some(output)) => Ok(output),
            (Err(error), _) => Err(error),
            (Ok(()), None) => Err(DispatchError::Rejected {
                message: M::NAME,
                source: "a middleware returned Ok without calling `next`".into(),
            }),
        }
    }

    pub(crate) async fn notify<N: Notification>(
        &self,
        notification: N,
        meta: Metadata,
        nested: bool,
    ) -> Result<(), PublishError> {
        if !nested && self.is_shutting_down() {
            return Err(PublishError {
                message: N::NAME,
                subscribers: 0,
                failures: vec![HandlerFailure {
                    handler: "mediator",
                    error: DispatchError::ShuttingDown { message: N::NAME },
                }],
            });
        }
        let endpoints = self.inner.router.all::<N>();
        if endpoints.is_empty() {
            tracing::debug!(message = N::NAME, "notification has no subscriber");
            return Ok(());
        }
        let dispatch = Dispatch { meta, kind: N::KIND, cancel: Cancel::new() };
        let mut failures = Vec::new();
        let result = {
            let failures = &mut failures;
            let dispatch_ref = &dispatch;
            let call = Box::pin(async move {
                // Queue to every subscriber first, so they all work at once.
                let mut replies = Vec::with_capacity(endpoints.len());
                for endpoint in endpoints {
                    let ctx = self.context(dispatch_ref.meta.clone(), dispatch_ref.cancel.clone());
                    replies.push((endpoint.handler(), self.enqueue(&**endpoint, notification.clone(), ctx).await));
                }
                for (handler, queued) in replies {
                    let outcome = match queued {
                        Ok(reply) => self.await_reply::<N>(reply, handler).await,
                        Err(error) => Err(error),
                    };
                    if let Err(error) = outcome {
                        failures.push(HandlerFailure { handler, error });
                    }
                }
                Ok(())
            });
            self.through_middleware(&dispatch, call).await
        };
        if let Err(error) = result {
            failures.push(HandlerFailure { handler: "middleware", error });
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(PublishError { message: N::NAME, subscribers: endpoints.len(), failures })
        }
    }
}

impl std::fmt::Debug for Mediator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mediator")
            .field("middleware", &self.inner.middleware.len())
            .field("shutting_down", &self.is_shutting_down())
            .finish_non_exhaustive()
    }
}
