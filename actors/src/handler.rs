//! The traits `#[handler]` implements, and the options it accepts.

use std::any::TypeId;
use std::num::NonZeroUsize;
use std::time::Duration;

use hexeract_runtime::{BoxError, Message, MessageKind};

use crate::context::Context;

/// An actor state `Self` handles messages of type `M`.
///
/// `#[handler]` implements it; write it by hand only when a macro will not do.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not handle `{M}`",
    note = "add an `async fn(&mut self, message: {M}, ctx: &Context) -> Result<..>` to its `#[handler] impl` block"
)]
pub trait Handles<M: Message>: Send + 'static {
    /// What the handler returns: `Result<M::Output, E>` for some error `E`.
    type Result: HandlerResult<M::Output>;

    /// Handles one message. The actor owns `self`; nothing else touches it
    /// while this runs.
    fn handle<'a>(&'a mut self, message: M, ctx: &'a Context) -> impl Future<Output = Self::Result> + Send + 'a;
}

/// A handler's return value: `Result<T, E>` where `E` converts into a boxed
/// error (any `std::error::Error`, `anyhow::Error`, `String`, `&str`).
#[diagnostic::on_unimplemented(
    message = "a handler for this message must return `Result<{T}, E>`, found `{Self}`",
    note = "the `Ok` type is the message's `output`, as declared in `#[message(..., output = {T})]`"
)]
pub trait HandlerResult<T>: Send {
    /// The output or the boxed error.
    fn into_result(self) -> Result<T, BoxError>;
}

impl<T: Send, E: Into<BoxError> + Send> HandlerResult<T> for Result<T, E> {
    fn into_result(self) -> Result<T, BoxError> {
        self.map_err(Into::into)
    }
}

/// A handler actor: its state type, its name, its options and the messages
/// it handles. `#[handler]` implements it, on a generated unit struct for an
/// `async fn` and on the struct itself for an `impl` block.
pub trait HandlerActor: Send + 'static {
    /// The handler's name, the middle segment of its actor path
    /// (`mediator/<name>/<worker>`).
    const NAME: &'static str;

    /// Workers, mailbox capacity, timeout.
    fn options() -> HandlerOptions {
        HandlerOptions::default()
    }

    /// Declares the messages this actor handles.
    fn routes(routes: &mut Routes<Self>)
    where
        Self: Sized;
}

/// How a handler actor runs. `#[handler(workers = 4, capacity = 64,
/// timeout = "2s")]` sets these; unset options take the system's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HandlerOptions {
    /// Actors in the pool. One unless set.
    pub workers: Option<NonZeroUsize>,
    /// Each worker's mailbox capacity. The system default unless set.
    pub capacity: Option<NonZeroUsize>,
    /// Longest a message may take; the handler is cancelled after it.
    pub timeout: Option<Duration>,
}

impl HandlerOptions {
    /// No option set.
    pub const fn new() -> Self {
        HandlerOptions { workers: None, capacity: None, timeout: None }
    }

    /// Sets the pool size. Zero is refused at compile time by `#[handler]`
    /// and ignored here (one worker).
    #[must_use]
    pub const fn workers(mut self, workers: usize) -> Self {
        self.workers = NonZeroUsize::new(workers);
        self
    }

    /// Sets each worker's mailbox capacity (zero is ignored).
    #[must_use]
    pub const fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = NonZeroUsize::new(capacity);
        self
    }

    /// Sets the per-message timeout.
    #[must_use]
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The messages a [`HandlerActor`] handles, filled in by
/// [`HandlerActor::routes`].
pub struct Routes<S> {
    pub(crate) entries: Vec<RouteSpec<S>>,
}

/// One message type a handler actor handles.
pub(crate) struct RouteSpec<S> {
    pub(crate) info: RouteInfo,
    pub(crate) install: fn(&crate::router::Router, &std::sync::Arc<crate::pool::Pool<S>>),
    /// The queue it is consumed from on the bus, with the function that
    /// routes that queue's deliveries of this type to the pool.
    pub(crate) subscription: Option<(&'static str, BusInstall<S>)>,
}

pub(crate) type BusInstall<S> = fn(&mut crate::bus::BusRoutes, &str, &std::sync::Arc<crate::pool::Pool<S>>);

/// A message type and kind, as handlers and declarations name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    /// The wire name.
    pub name: &'static str,
    /// The Rust type name.
    pub type_name: &'static str,
    /// Command, query or notification.
    pub kind: MessageKind,
    /// The Rust type.
    pub type_id: TypeId,
}

impl RouteInfo {
    /// The route of message type `M`.
    pub fn of<M: Message>() -> Self {
        RouteInfo { name: M::NAME, type_name: std::any::type_name::<M>(), kind: M::KIND, type_id: TypeId::of::<M>() }
    }
}

impl<S: HandlerActor> Routes<S> {
    pub(crate) fn collect() -> Self {
        let mut routes = Routes { entries: Vec::new() };
        S::routes(&mut routes);
        routes
    }

    /// Declares that the actor handles `M` sent through the mediator.
    pub fn handle<M: Message>(&mut self)
    where
        S: Handles<M>,
    {
        self.entries.push(RouteSpec {
            info: RouteInfo::of::<M>(),
            install: crate::pool::install_route::<S, M>,
            subscription: None,
        });
    }

    /// Declares that the actor handles `M`, through the mediator and from
    /// the bus queue `queue`, which the system declares and binds to `M`'s
    /// wire name (`#[handler(queue = "...")]`).
    pub fn subscribe<M: Message + serde::de::DeserializeOwned>(&mut self, queue: &'static str)
    where
        S: Handles<M>,
    {
        self.entries.push(RouteSpec {
            info: RouteInfo::of::<M>(),
            install: crate::pool::install_route::<S, M>,
            subscription: Some((queue, crate::pool::install_bus_route::<S, M>)),
        });
    }
}
