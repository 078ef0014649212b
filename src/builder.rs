use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use hexeract_actors::bus::{BusConfig, ConsumerConfig, PublisherConfig};
use hexeract_actors::middleware::{Middleware, Tracing};
use hexeract_actors::relay::RelayConfig;
use hexeract_actors::{HandlerActor, HandlerRegistration, MediatorConfig, MediatorTree, StartError};
use hexeract_runtime::StateMap;
use hexeract_runtime::mailbox::DEFAULT_CAPACITY;
use hexeract_runtime::metrics::MetricsRegistry;
use hexeract_runtime::ports::outbox::OutboxStore;
use hexeract_runtime::ports::transport::Transport;
use hexeract_runtime::supervision::{Escalation, RestartPolicy};
use hexeract_transport_memory::MemoryTransport;

use crate::System;

/// The entry point: `Hexeract::builder()`.
pub struct Hexeract;

impl Hexeract {
    /// A builder with the defaults: no handlers, [`Tracing`] middleware,
    /// mailboxes of [`DEFAULT_MAILBOX_CAPACITY`](crate::DEFAULT_MAILBOX_CAPACITY),
    /// the default [`RestartPolicy`].
    pub fn builder() -> Builder {
        Builder {
            registrations: Vec::new(),
            discover: false,
            check_declared: None,
            state: StateMap::new(),
            middleware: Vec::new(),
            default_middleware: true,
            capacity: Some(DEFAULT_CAPACITY),
            restart: RestartPolicy::default(),
            transport: None,
            outboxes: Vec::new(),
            relay: RelayConfig::default(),
            consumer: ConsumerConfig::default(),
            publisher: PublisherConfig::default(),
            migrate: false,
            #[cfg(feature = "prometheus")]
            metrics_endpoint: None,
        }
    }
}

/// Configures and starts a [`System`].
#[must_use = "a builder does nothing until `start` is awaited"]
pub struct Builder {
    registrations: Vec<HandlerRegistration>,
    discover: bool,
    check_declared: Option<bool>,
    state: StateMap,
    middleware: Vec<Arc<dyn Middleware>>,
    default_middleware: bool,
    capacity: Option<NonZeroUsize>,
    restart: RestartPolicy,
    transport: Option<Arc<dyn Transport>>,
    outboxes: Vec<Arc<dyn OutboxStore>>,
    relay: RelayConfig,
    consumer: ConsumerConfig,
    publisher: PublisherConfig,
    migrate: bool,
    #[cfg(feature = "prometheus")]
    metrics_endpoint: Option<String>,
}

impl Builder {
    /// Shares `value` with every handler as `ctx.state::<T>()` (a database
    /// pool, an HTTP client...). One value per type; a second replaces the first.
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// Registers every `#[handler]` linked into the binary, and makes
    /// [`start`](Builder::start) check that every declared command and
    /// query has one.
    pub fn discover_handlers(mut self) -> Self {
        self.discover = true;
        self
    }

    /// Registers one handler actor built by hand. `value` is its initial
    /// state: each worker of the pool, and each restart after a panic,
    /// starts from a clone of it.
    pub fn handler<S: HandlerActor + Clone>(mut self, value: S) -> Self {
        // The mutex lets state that is `Send` but not `Sync` (a `RefCell`, say)
        // be cloned from the supervisor's task; it is locked only at (re)start.
        let initial = Mutex::new(value);
        self.registrations
            .push(HandlerRegistration::new(move || initial.lock().unwrap_or_else(PoisonError::into_inner).clone()));
        self
    }

    /// Registers a prepared [`HandlerRegistration`] (for state built by a
    /// factory function rather than cloned).
    pub fn registration(mut self, registration: HandlerRegistration) -> Self {
        self.registrations.push(registration);
        self
    }

    /// Whether `start` checks that every `#[derive(Message)]` command and
    /// query linked into the binary has a handler. On by default with
    /// [`discover_handlers`](Builder::discover_handlers), off otherwise
    /// (a test that registers two handlers by hand has no use for it).
    pub fn check_declared_messages(mut self, check: bool) -> Self {
        self.check_declared = Some(check);
        self
    }

    /// Adds a middleware around every dispatch, inside those added before.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Leaves out the default [`Tracing`] middleware.
    pub fn without_default_middleware(mut self) -> Self {
        self.default_middleware = false;
        self
    }

    /// Mailbox capacity for handlers that set none. Zero is refused by `start`.
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.capacity = NonZeroUsize::new(capacity);
        self
    }

    /// How handler actors are restarted after a panic.
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.restart = policy;
        self
    }

    /// The broker the bus publishes to and consumes from. Without one, a
    /// system that needs a bus (an outbox to relay, a handler with a
    /// `queue`) uses an in-process [`MemoryTransport`].
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Relays `store`'s outbox table to the bus with a supervised poller.
    /// Call it once per table.
    pub fn outbox(mut self, store: impl OutboxStore) -> Self {
        self.outboxes.push(Arc::new(store));
        self
    }

    /// Creates or upgrades every outbox table given to
    /// [`outbox`](Builder::outbox) at start (idempotent). Inbox tables are
    /// migrated with the store module's `migrate` function.
    pub fn migrate(mut self) -> Self {
        self.migrate = true;
        self
    }

    /// How outbox tables are relayed (batch size, attempts, backoff, exchange).
    pub fn relay(mut self, config: RelayConfig) -> Self {
        self.relay = config;
        self
    }

    /// How bus queues are consumed (prefetch, attempts, backoff).
    pub fn consumer(mut self, config: ConsumerConfig) -> Self {
        self.consumer = config;
        self
    }

    /// How the publisher works (confirm window, confirm timeout).
    pub fn publisher(mut self, config: PublisherConfig) -> Self {
        self.publisher = config;
        self
    }

    /// Serves the system's metrics over HTTP on `address` (`host:port`;
    /// port 0 picks a free one, see [`System::metrics_address`]):
    /// Prometheus text at `/metrics`, a JSON snapshot at `/snapshot` (what
    /// `hexeract top` reads). Off by default: nothing listens unless asked.
    /// Feature `prometheus`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let system = hexeract::Hexeract::builder().metrics_endpoint("127.0.0.1:9464").start().await?;
    /// println!("scrape http://{}/metrics", system.metrics_address().expect("enabled"));
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "prometheus")]
    pub fn metrics_endpoint(mut self, address: impl Into<String>) -> Self {
        self.metrics_endpoint = Some(address.into());
        self
    }

    /// Verifies the handlers, spawns the supervision tree and returns the
    /// running system.
    ///
    /// # Errors
    /// [`StartError::Verify`] naming every missing and duplicate handler,
    /// [`StartError::Config`] for invalid settings, [`StartError::Spawn`]
    /// when an actor cannot start.
    pub async fn start(self) -> Result<System, StartError> {
        let capacity = self.capacity.ok_or_else(|| StartError::Config("mailbox capacity must be at least 1".into()))?;
        let mut registrations = self.registrations;
        if self.discover {
            registrations.extend(hexeract_actors::discovered_handlers().into_iter().map(|found| (found.register)()));
        }
        let declared = if self.check_declared.unwrap_or(self.discover) {
            hexeract_actors::declared_messages()
        } else {
            Vec::new()
        };
        hexeract_actors::verify_handlers(&registrations, &declared)?;

        let mut middleware: Vec<Arc<dyn Middleware>> = Vec::new();
        if self.default_middleware {
            middleware.push(Arc::new(Tracing));
        }
        middleware.extend(self.middleware);

        let escalations = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&escalations);
        let config = MediatorConfig {
            default_capacity: capacity,
            restart: self.restart,
            middleware,
            state: self.state,
            on_escalate: Arc::new(move |escalation: Escalation| {
                sink.lock().unwrap_or_else(PoisonError::into_inner).push(escalation);
            }),
        };
        if self.migrate {
            for store in &self.outboxes {
                store
                    .migrate()
                    .await
                    .map_err(|source| StartError::Migrate { table: store.table().to_owned(), source })?;
            }
        }
        #[cfg(feature = "prometheus")]
        let sampled_outboxes = self.outboxes.clone();
        let needs_bus = self.transport.is_some()
            || !self.outboxes.is_empty()
            || registrations.iter().any(|r| !r.subscriptions().is_empty());
        let bus = needs_bus.then(|| BusConfig {
            transport: self.transport.unwrap_or_else(|| Arc::new(MemoryTransport::new())),
            publisher: self.publisher,
            consumer: self.consumer,
            relay: self.relay,
            outboxes: self.outboxes,
            restart: self.restart,
            on_escalate: Arc::clone(&config.on_escalate),
        });
        let metrics = MetricsRegistry::new();
        let tree = MediatorTree::start(registrations, config, bus, &metrics).await?;
        #[cfg_attr(not(feature = "prometheus"), allow(unused_mut))]
        let mut system = System::new(tree, metrics, escalations);
        #[cfg(feature = "prometheus")]
        if let Some(address) = self.metrics_endpoint {
            let started = crate::endpoint::MetricsEndpoint::start(&address, system.registry(), sampled_outboxes).await;
            match started {
                Ok(endpoint) => system.endpoint = Some(endpoint),
                Err(error) => {
                    // Leave nothing running behind a failed start.
                    system.shutdown(std::time::Duration::from_secs(5)).await;
                    return Err(StartError::Config(format!("metrics endpoint on {address}: {error}")));
                }
            }
        }
        Ok(system)
    }
}
