//! The mediator subtree: starting its supervised handler actors, and
//! stopping them in order.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hexeract_runtime::StateMap;
use hexeract_runtime::mailbox::DEFAULT_CAPACITY;
use hexeract_runtime::metrics::MetricsRegistry;
use hexeract_runtime::shutdown::ActorShutdown;
use hexeract_runtime::supervision::{Escalation, RestartPolicy, Supervisor, SupervisorRef};

use crate::bus::{BusConfig, BusRoutes, BusTree, Publisher};
use crate::mediator::Mediator;
use crate::middleware::Middleware;
use crate::registration::{HandlerRegistration, SpawnArgs, VerifyError};
use crate::router::Router;
use crate::worker::WorkerControl;

/// How the mediator subtree is built.
pub struct MediatorConfig {
    /// Mailbox capacity for handlers that set none.
    pub default_capacity: NonZeroUsize,
    /// How handler actors are restarted.
    pub restart: RestartPolicy,
    /// Middleware, outermost first.
    pub middleware: Vec<Arc<dyn Middleware>>,
    /// Shared state for `ctx.state::<T>()`.
    pub state: StateMap,
    /// Told about every handler actor the supervisor gives up on.
    pub on_escalate: Arc<dyn Fn(Escalation) + Send + Sync>,
}

impl Default for MediatorConfig {
    fn default() -> Self {
        MediatorConfig {
            default_capacity: DEFAULT_CAPACITY,
            restart: RestartPolicy::default(),
            middleware: vec![Arc::new(crate::middleware::Tracing)],
            state: StateMap::new(),
            on_escalate: Arc::new(|_| {}),
        }
    }
}

/// The system could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Handlers do not match the declared messages.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// An actor could not be spawned.
    #[error("cannot start actor: {0}")]
    Spawn(String),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An outbox table could not be migrated.
    #[error("migrating outbox table `{table}` failed")]
    Migrate {
        /// The table.
        table: String,
        /// Why.
        #[source]
        source: hexeract_runtime::ports::outbox::StoreError,
    },
}

/// The running system tree: the handler actors under the mediator, and,
/// when a transport is configured, the bus and outbox actors.
pub struct MediatorTree {
    mediator: Mediator,
    supervisor: SupervisorRef,
    workers: Vec<Arc<dyn WorkerControl>>,
    bus: Option<BusTree>,
}

impl MediatorTree {
    /// Spawns a supervisor and, under it, every registered handler's workers.
    /// Registrations should have been verified first.
    ///
    /// # Errors
    /// [`StartError::Spawn`] when an actor does not start.
    pub async fn start(
        registrations: Vec<HandlerRegistration>,
        config: MediatorConfig,
        bus: Option<BusConfig>,
        metrics: &MetricsRegistry,
    ) -> Result<Self, StartError> {
        if bus.is_none()
            && let Some((queue, registration)) =
                registrations.iter().find_map(|r| r.subscriptions().first().map(|(queue, _)| (queue, r.name())))
        {
            return Err(StartError::Config(format!(
                "handler `{registration}` consumes queue `{queue}`, but no transport is configured"
            )));
        }
        let supervisor = Supervisor::start(config.restart, config.on_escalate)
            .await
            .map_err(|error| StartError::Spawn(format!("mediator supervisor: {error}")))?;
        let router = Router::default();
        let mut bus_routes = BusRoutes::default();
        let mut workers = Vec::new();
        for registration in registrations {
            let args = SpawnArgs {
                router: &router,
                bus: &mut bus_routes,
                supervisor: &supervisor,
                metrics,
                default_capacity: config.default_capacity,
            };
            match registration.spawn(args).await {
                Ok(spawned) => workers.extend(spawned),
                Err(error) => {
                    supervisor.stop(Duration::from_secs(1)).await;
                    return Err(StartError::Spawn(error));
                }
            }
        }
        let mediator = Mediator::new(router, Arc::new(config.state), config.middleware);
        for worker in &workers {
            worker.attach(&mediator);
        }
        let bus = match bus {
            Some(bus) => match BusTree::start(bus, bus_routes, mediator.clone(), metrics).await {
                Ok(tree) => Some(tree),
                Err(error) => {
                    supervisor.stop(Duration::from_secs(1)).await;
                    return Err(error);
                }
            },
            None => None,
        };
        Ok(MediatorTree { mediator, supervisor, workers, bus })
    }

    /// The bus publisher, when a transport is configured.
    pub fn publisher(&self) -> Option<Publisher> {
        self.bus.as_ref().map(BusTree::publisher)
    }

    /// A handle for dispatching.
    pub fn mediator(&self) -> Mediator {
        self.mediator.clone()
    }

    /// Stops intake, lets every mailbox drain until `deadline`, then stops
    /// the actors. What was not handled by then is answered `ShuttingDown`
    /// and counted as abandoned.
    pub async fn shutdown(self, deadline: Instant) -> (Vec<ActorShutdown>, bool) {
        // Intake first: consumers and pollers stop taking work, and finish
        // what they hold while the handlers and the publisher still run.
        let mut report = match &self.bus {
            Some(bus) => bus.stop_intake(deadline).await,
            None => Vec::new(),
        };
        self.mediator.begin_shutdown();
        let handled_before: Vec<u64> = self.workers.iter().map(|w| w.handled_total()).collect();
        let mut deadline_reached = false;
        // Poll rather than subscribe: depth lives in a semaphore, and a few
        // milliseconds of shutdown latency cost nothing.
        while self.workers.iter().any(|w| w.depth() > 0) {
            if Instant::now() >= deadline {
                deadline_reached = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for worker in &self.workers {
            worker.stop_reader();
        }
        let grace = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        self.supervisor.stop(grace).await;
        report.extend(self.workers.iter().zip(handled_before).map(|(worker, before)| {
            let taken_back = worker.take_remaining();
            let abandoned = taken_back + worker.abandoned_in_progress();
            ActorShutdown {
                path: worker.path().to_owned(),
                drained: worker.handled_total().saturating_sub(before),
                abandoned,
            }
        }));
        // Last, the publisher flushes the confirms of what the others sent.
        if let Some(bus) = self.bus {
            report.push(bus.stop_publisher(deadline).await);
        }
        (report, deadline_reached)
    }
}
