//! Handler registrations: built by hand (`.handler(value)`) or discovered
//! through `inventory` (`#[handler]`), checked by [`verify_handlers`], and
//! turned into supervised worker actors.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use hexeract_runtime::mailbox::Mailbox;
use hexeract_runtime::metrics::MetricsRegistry;
use hexeract_runtime::supervision::{LoopChild, SupervisorRef};
use hexeract_runtime::{BoxFuture, MessageKind};

use crate::handler::{HandlerActor, HandlerOptions, RouteInfo, Routes};
use crate::pool::Pool;
use crate::router::Router;
use crate::worker::{WorkerChild, WorkerControl, WorkerInfo};

/// A handler actor ready to be spawned: its name, options, routes, and how
/// to make its state.
pub struct HandlerRegistration {
    name: &'static str,
    options: HandlerOptions,
    routes: Vec<RouteInfo>,
    subscriptions: Vec<(&'static str, RouteInfo)>,
    spawn: SpawnFn,
}

/// Spawns a registration's workers under the system's supervisor.
type SpawnFn =
    Box<dyn for<'a> FnOnce(SpawnArgs<'a>) -> BoxFuture<'a, Result<Vec<Arc<dyn WorkerControl>>, String>> + Send>;

/// What spawning a registration needs from the system.
pub(crate) struct SpawnArgs<'a> {
    pub(crate) router: &'a Router,
    pub(crate) bus: &'a mut crate::bus::BusRoutes,
    pub(crate) supervisor: &'a SupervisorRef,
    pub(crate) metrics: &'a MetricsRegistry,
    pub(crate) default_capacity: NonZeroUsize,
}

impl HandlerRegistration {
    /// A registration whose every worker, and every restarted worker, starts
    /// from `factory()`.
    pub fn new<S: HandlerActor>(factory: impl Fn() -> S + Send + Sync + 'static) -> Self {
        let routes = Routes::<S>::collect();
        let infos = routes.entries.iter().map(|spec| spec.info).collect();
        let subscriptions =
            routes.entries.iter().filter_map(|spec| spec.subscription.map(|(queue, _)| (queue, spec.info))).collect();
        let factory: Arc<dyn Fn() -> S + Send + Sync> = Arc::new(factory);
        HandlerRegistration {
            name: S::NAME,
            options: S::options(),
            routes: infos,
            subscriptions,
            spawn: Box::new(move |args| Box::pin(spawn_pool::<S>(args, factory, routes))),
        }
    }

    /// A registration for a state type built with `Default` (what
    /// `discover_handlers()` uses).
    pub fn with_default<S: HandlerActor + Default>() -> Self {
        Self::new(S::default)
    }

    /// The handler's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The messages it handles.
    pub fn routes(&self) -> &[RouteInfo] {
        &self.routes
    }

    /// The bus queues it consumes, with the message type taken from each.
    pub fn subscriptions(&self) -> &[(&'static str, RouteInfo)] {
        &self.subscriptions
    }

    /// Its options.
    pub fn options(&self) -> HandlerOptions {
        self.options
    }

    pub(crate) async fn spawn(self, args: SpawnArgs<'_>) -> Result<Vec<Arc<dyn WorkerControl>>, String> {
        (self.spawn)(args).await
    }
}

impl fmt::Debug for HandlerRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerRegistration")
            .field("name", &self.name)
            .field("options", &self.options)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

async fn spawn_pool<S: HandlerActor>(
    args: SpawnArgs<'_>,
    factory: Arc<dyn Fn() -> S + Send + Sync>,
    routes: Routes<S>,
) -> Result<Vec<Arc<dyn WorkerControl>>, String> {
    let options = S::options();
    let workers = options.workers.map_or(1, NonZeroUsize::get);
    let capacity = options.capacity.unwrap_or(args.default_capacity);
    let mut mailboxes = Vec::with_capacity(workers);
    let mut controls: Vec<Arc<dyn WorkerControl>> = Vec::with_capacity(workers);
    for index in 0..workers {
        let path = if workers == 1 { format!("mediator/{}", S::NAME) } else { format!("mediator/{}/{index}", S::NAME) };
        let mailbox = Mailbox::new(capacity);
        let metrics = args.metrics.register(path.clone(), Some(mailbox.depth_gauge()));
        let info = Arc::new(WorkerInfo {
            path,
            handler: S::NAME,
            timeout: options.timeout,
            metrics,
            stop: mailbox.stop_token().clone(),
            abandoned: AtomicU64::new(0),
            mediator: std::sync::OnceLock::new(),
        });
        let child = Arc::new(WorkerChild { mailbox: mailbox.clone(), factory: Arc::clone(&factory), info });
        args.supervisor.start_child(Arc::new(LoopChild::new(Arc::clone(&child)))).await?;
        mailboxes.push(mailbox);
        controls.push(child);
    }
    let pool = Arc::new(Pool::new(S::NAME, mailboxes));
    for spec in &routes.entries {
        (spec.install)(args.router, &pool);
        if let Some((queue, install)) = spec.subscription {
            install(args.bus, queue, &pool);
        }
    }
    Ok(controls)
}

/// A `#[handler]` found at link time. Submitted by the macro; read by
/// `discover_handlers()`.
#[doc(hidden)]
pub struct DiscoveredHandler {
    pub name: &'static str,
    pub module: &'static str,
    pub register: fn() -> HandlerRegistration,
}

/// A message type declared with `#[derive(Message)]`. Submitted by the
/// macro; read by [`verify_handlers`].
#[doc(hidden)]
pub struct DeclaredMessage {
    pub name: &'static str,
    pub kind: MessageKind,
    pub type_name: fn() -> &'static str,
    pub type_id: fn() -> TypeId,
}

inventory::collect!(DiscoveredHandler);
inventory::collect!(DeclaredMessage);

/// Every `#[handler]` linked into this binary, in a stable order.
pub fn discovered_handlers() -> Vec<&'static DiscoveredHandler> {
    let mut found: Vec<_> = inventory::iter::<DiscoveredHandler>.into_iter().collect();
    found.sort_by_key(|h| (h.module, h.name));
    found
}

/// Every `#[derive(Message)]` type linked into this binary.
pub fn declared_messages() -> Vec<&'static DeclaredMessage> {
    let mut found: Vec<_> = inventory::iter::<DeclaredMessage>.into_iter().collect();
    found.sort_by_key(|m| m.name);
    found
}

/// One thing [`verify_handlers`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerProblem {
    /// A declared command or query nobody handles.
    Missing {
        /// Its wire name.
        message: &'static str,
        /// Its Rust type.
        type_name: &'static str,
        /// Command or query.
        kind: MessageKind,
    },
    /// A command or query with more than one handler.
    Duplicate {
        /// Its wire name.
        message: &'static str,
        /// The handlers that all claim it.
        handlers: Vec<&'static str>,
    },
    /// Two message types share one wire name.
    SharedWireName {
        /// The wire name.
        name: &'static str,
        /// The Rust types.
        types: Vec<&'static str>,
    },
}

impl fmt::Display for HandlerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerProblem::Missing { message, type_name, kind } => write!(
                f,
                "{kind} `{message}` ({type_name}) has no handler; add a `#[handler]` for it (in a crate the binary links) or register one with `.handler(value)`"
            ),
            HandlerProblem::Duplicate { message, handlers } => write!(
                f,
                "`{message}` has {} handlers ({}); a command or query needs exactly one",
                handlers.len(),
                handlers.join(", ")
            ),
            HandlerProblem::SharedWireName { name, types } => {
                write!(f, "wire name `{name}` is declared by {} types ({})", types.len(), types.join(", "))
            }
        }
    }
}

/// Handlers do not match the declared messages. Every problem is listed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("handler verification found {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct VerifyError {
    /// Each problem found.
    pub problems: Vec<HandlerProblem>,
}

/// Checks that every command and query has exactly one handler among
/// `registrations`, and, with `declared`, that every declared command and
/// query has one at all (a `#[handler]` in a crate the binary never links
/// vanishes silently otherwise).
///
/// # Errors
/// [`VerifyError`] naming every duplicate and every missing handler.
pub fn verify_handlers(
    registrations: &[HandlerRegistration],
    declared: &[&DeclaredMessage],
) -> Result<(), VerifyError> {
    let mut handlers: BTreeMap<(&'static str, TypeIdKey), (MessageKind, &'static str, Vec<&'static str>)> =
        BTreeMap::new();
    for registration in registrations {
        for route in registration.routes() {
            handlers
                .entry((route.name, TypeIdKey(route.type_id)))
                .or_insert((route.kind, route.type_name, Vec::new()))
                .2
                .push(registration.name());
        }
    }
    let mut problems = Vec::new();
    for ((message, _), (kind, _, names)) in &handlers {
        if *kind != MessageKind::Notification && names.len() > 1 {
            problems.push(HandlerProblem::Duplicate { message, handlers: names.clone() });
        }
    }
    let mut by_name: BTreeMap<&'static str, Vec<&'static str>> = BTreeMap::new();
    for message in declared {
        by_name.entry(message.name).or_default().push((message.type_name)());
        if message.kind == MessageKind::Notification {
            continue;
        }
        if !handlers.contains_key(&(message.name, TypeIdKey((message.type_id)()))) {
            problems.push(HandlerProblem::Missing {
                message: message.name,
                type_name: (message.type_name)(),
                kind: message.kind,
            });
        }
    }
    for (name, types) in by_name {
        if types.len() > 1 {
            problems.push(HandlerProblem::SharedWireName { name, types });
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(VerifyError { problems }) }
}

/// `TypeId` ordered, for use in a `BTreeMap` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct TypeIdKey(TypeId);
