use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hexeract_actors::{Mediator, MediatorTree};
use hexeract_runtime::metrics::{MetricsRegistry, MetricsSnapshot};
use hexeract_runtime::shutdown::ShutdownReport;
use hexeract_runtime::supervision::Escalation;

/// A running Hexeract system: the supervision tree and its handles.
///
/// Stop it with [`System::shutdown`]; dropping it leaves the actors running
/// until the runtime ends.
pub struct System {
    tree: MediatorTree,
    mediator: Mediator,
    metrics: MetricsRegistry,
    escalations: Arc<Mutex<Vec<Escalation>>>,
    #[cfg(feature = "prometheus")]
    pub(crate) endpoint: Option<crate::endpoint::MetricsEndpoint>,
}

impl System {
    pub(crate) fn new(tree: MediatorTree, metrics: MetricsRegistry, escalations: Arc<Mutex<Vec<Escalation>>>) -> Self {
        System {
            mediator: tree.mediator(),
            tree,
            metrics,
            escalations,
            #[cfg(feature = "prometheus")]
            endpoint: None,
        }
    }

    #[cfg(feature = "prometheus")]
    pub(crate) fn registry(&self) -> MetricsRegistry {
        self.metrics.clone()
    }

    /// Where the metrics endpoint listens, when
    /// [`Builder::metrics_endpoint`](crate::Builder::metrics_endpoint)
    /// enabled it. Feature `prometheus`.
    #[cfg(feature = "prometheus")]
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.endpoint.as_ref().map(crate::endpoint::MetricsEndpoint::address)
    }

    /// The mediator, for `send`, `query` and `publish`. Clone it freely.
    pub fn mediator(&self) -> Mediator {
        self.mediator.clone()
    }

    /// The bus publisher (confirmed publishing), when the system has a bus.
    pub fn publisher(&self) -> Option<hexeract_actors::bus::Publisher> {
        self.tree.publisher()
    }

    /// Every actor's figures now, as a tree. `Display` prints an aligned
    /// table; the snapshot also serializes with serde.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Handler actors the supervisor gave up on (too many restarts within the
    /// window). Their mailboxes are closed; callers get `HandlerStopped`.
    pub fn escalations(&self) -> Vec<Escalation> {
        self.escalations.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Stops the system in order: refuses new messages, lets mailboxes drain
    /// for at most `deadline`, then stops the actors. Messages not handled by
    /// then are answered `ShuttingDown` and counted in the report as
    /// abandoned; none is dropped silently.
    pub async fn shutdown(self, deadline: Duration) -> ShutdownReport {
        let started = Instant::now();
        let (actors, deadline_reached) = self.tree.shutdown(started + deadline).await;
        #[cfg(feature = "prometheus")]
        if let Some(endpoint) = &self.endpoint {
            endpoint.stop();
        }
        let report = ShutdownReport { actors, elapsed: started.elapsed(), deadline_reached };
        tracing::info!(drained = report.drained(), abandoned = report.abandoned(), elapsed = ?report.elapsed, "hexeract stopped");
        report
    }

    /// Runs until Ctrl-C or SIGTERM, then [`shuts down`](System::shutdown)
    /// with `deadline`.
    pub async fn run_until_signal(self, deadline: Duration) -> ShutdownReport {
        hexeract_runtime::shutdown::shutdown_signal().await;
        self.shutdown(deadline).await
    }
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System").field("mediator", &self.mediator).finish_non_exhaustive()
    }
}
