//! The bus and outbox subtrees: starting the publisher, the consumers and
//! the outbox pollers under their supervisors, and stopping them in order.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hexeract_runtime::mailbox::Mailbox;
use hexeract_runtime::metrics::{ActorMetrics, MetricsRegistry};
use hexeract_runtime::ports::outbox::OutboxStore;
use hexeract_runtime::ports::transport::{Binding, ExchangeKind, ExchangeSpec, QueueSpec, Topology, Transport};
use hexeract_runtime::shutdown::ActorShutdown;
use hexeract_runtime::supervision::{Escalation, LoopChild, RestartPolicy, Supervisor, SupervisorRef};
use tokio_util::sync::CancellationToken;

use super::connection::{CONNECTION_PATH, ConnectionKeeper};
use super::consumer::{ConsumerConfig, QueueConsumer, dead_letter_queue};
use super::publisher::{Publisher, PublisherConfig, PublisherLoop};
use super::routes::BusRoutes;
use crate::mediator::Mediator;
use crate::relay::{OutboxPoller, RelayConfig};
use crate::tree::StartError;

/// What the bus and the outbox relay are made of.
pub struct BusConfig {
    /// The broker.
    pub transport: Arc<dyn Transport>,
    /// Publisher settings.
    pub publisher: PublisherConfig,
    /// Consumer settings, for every queue.
    pub consumer: ConsumerConfig,
    /// Relay settings, for every outbox table.
    pub relay: RelayConfig,
    /// The outbox tables to relay.
    pub outboxes: Vec<Arc<dyn OutboxStore>>,
    /// How bus actors are restarted.
    pub restart: RestartPolicy,
    /// Told about every bus actor the supervisor gives up on.
    pub on_escalate: Arc<dyn Fn(Escalation) + Send + Sync>,
}

/// An actor that takes work in (a consumer, a poller): stopped first.
struct Intake {
    path: String,
    stop: CancellationToken,
    /// Cancelled at the shutdown deadline: give back what is unfinished.
    abandon: CancellationToken,
    metrics: Arc<ActorMetrics>,
}

/// The running bus and relay.
pub struct BusTree {
    intake_supervisor: SupervisorRef,
    publisher_supervisor: SupervisorRef,
    intake: Vec<Intake>,
    publisher: Publisher,
    publisher_metrics: Arc<ActorMetrics>,
    /// Stops the connection keeper (if the transport has a connection).
    keeper_stop: CancellationToken,
}

impl BusTree {
    /// Declares the topology the subscriptions need, then starts the
    /// publisher, a consumer per subscribed queue and a poller per outbox.
    ///
    /// # Errors
    /// [`StartError`] when the topology cannot be declared or an actor does
    /// not start.
    pub(crate) async fn start(
        config: BusConfig,
        routes: BusRoutes,
        mediator: Mediator,
        metrics: &MetricsRegistry,
    ) -> Result<Self, StartError> {
        config.relay.validate().map_err(StartError::Config)?;
        let exchange = config.relay.exchange.clone();
        let mut topology = Topology {
            exchanges: vec![ExchangeSpec { name: exchange.clone(), kind: ExchangeKind::Topic, durable: true }],
            ..Topology::default()
        };
        for (queue, names) in routes.queues() {
            topology.queues.push(QueueSpec::durable(queue.clone()));
            topology.queues.push(QueueSpec::durable(dead_letter_queue(queue)));
            for name in names.keys() {
                topology.bindings.push(Binding {
                    exchange: exchange.clone(),
                    queue: queue.clone(),
                    routing_key: (*name).to_owned(),
                });
            }
        }
        config
            .transport
            .declare(&topology)
            .await
            .map_err(|error| StartError::Spawn(format!("declaring the bus topology: {error}")))?;

        let publisher_supervisor = Supervisor::start(config.restart, Arc::clone(&config.on_escalate))
            .await
            .map_err(|error| StartError::Spawn(format!("bus supervisor: {error}")))?;
        let intake_supervisor = Supervisor::start(config.restart, Arc::clone(&config.on_escalate))
            .await
            .map_err(|error| StartError::Spawn(format!("bus supervisor: {error}")))?;

        // Room for two windows: one in flight, one waiting.
        let capacity =
            NonZeroUsize::new(config.publisher.window.get().saturating_mul(2)).unwrap_or(config.publisher.window);
        let mailbox = Mailbox::new(capacity);
        let publisher_metrics = metrics.register("bus/publisher", Some(mailbox.depth_gauge()));
        let (body, publisher) = PublisherLoop::new(
            "bus/publisher".into(),
            Arc::clone(&publisher_metrics),
            mailbox,
            Arc::clone(&config.transport),
            config.publisher,
        );
        publisher_supervisor.start_child(Arc::new(LoopChild::new(Arc::new(body)))).await.map_err(StartError::Spawn)?;

        // The connection keeper stops with the publisher, last.
        let keeper_stop = CancellationToken::new();
        if config.transport.has_connection() {
            let keeper = ConnectionKeeper::new(
                metrics.register(CONNECTION_PATH, None),
                Arc::clone(&config.transport),
                keeper_stop.clone(),
            );
            publisher_supervisor
                .start_child(Arc::new(LoopChild::new(Arc::new(keeper))))
                .await
                .map_err(StartError::Spawn)?;
        }

        let mut intake = Vec::new();
        for (queue, names) in routes.queues() {
            let path = format!("bus/consumer/{queue}");
            let actor_metrics = metrics.register(path.clone(), None);
            let stop = CancellationToken::new();
            let abandon = CancellationToken::new();
            let body = QueueConsumer::new(
                path.clone(),
                Arc::clone(&actor_metrics),
                queue.clone(),
                names.clone(),
                Arc::clone(&config.transport),
                publisher.clone(),
                mediator.clone(),
                config.consumer.clone(),
                stop.clone(),
                abandon.clone(),
            );
            intake_supervisor.start_child(Arc::new(LoopChild::new(Arc::new(body)))).await.map_err(StartError::Spawn)?;
            intake.push(Intake { path, stop, abandon, metrics: actor_metrics });
        }
        for store in config.outboxes {
            let path = format!("outbox/{}", store.table());
            let actor_metrics = metrics.register(path.clone(), None);
            let stop = CancellationToken::new();
            let abandon = CancellationToken::new();
            let lag = metrics.relay_lag(store.table());
            let body = OutboxPoller::new(
                path.clone(),
                Arc::clone(&actor_metrics),
                lag,
                store,
                publisher.clone(),
                config.relay.clone(),
                stop.clone(),
                abandon.clone(),
            );
            intake_supervisor.start_child(Arc::new(LoopChild::new(Arc::new(body)))).await.map_err(StartError::Spawn)?;
            intake.push(Intake { path, stop, abandon, metrics: actor_metrics });
        }
        Ok(BusTree { intake_supervisor, publisher_supervisor, intake, publisher, publisher_metrics, keeper_stop })
    }

    /// The publisher, for publishing from application code.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// First step of shutdown: consumers take no more deliveries and finish
    /// the ones they hold until `deadline` (the rest, and what the broker
    /// still holds for them, go back to the queue); pollers claim nothing
    /// more, let the publishes in flight finish until `deadline`, then give
    /// back the leases of rows they did not publish (with [`RELEASE_GRACE`]
    /// past the deadline to record that).
    pub async fn stop_intake(&self, deadline: Instant) -> Vec<ActorShutdown> {
        let before: Vec<u64> = self.intake.iter().map(|i| i.metrics.total()).collect();
        for actor in &self.intake {
            actor.stop.cancel();
        }
        let abandon: Vec<CancellationToken> = self.intake.iter().map(|i| i.abandon.clone()).collect();
        let at_deadline = tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            abandon.iter().for_each(CancellationToken::cancel);
        });
        self.intake_supervisor.stop(grace(deadline) + RELEASE_GRACE).await;
        at_deadline.abort();
        self.intake
            .iter()
            .zip(before)
            .map(|(actor, before)| ActorShutdown {
                path: actor.path.clone(),
                drained: actor.metrics.total() - before,
                abandoned: 0,
            })
            .collect()
    }

    /// Last step of shutdown: the publisher takes no more messages and waits
    /// for the confirms of those it sent.
    pub async fn stop_publisher(self, deadline: Instant) -> ActorShutdown {
        let before = self.publisher_metrics.total();
        let mailbox = self.publisher.mailbox();
        mailbox.close();
        // Let what is queued go out before the reader stops.
        while mailbox.depth() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        mailbox.stop_reader();
        self.keeper_stop.cancel();
        self.publisher_supervisor.stop(grace(deadline)).await;
        let abandoned = mailbox.take_remaining().len() as u64;
        ActorShutdown { path: "bus/publisher".into(), drained: self.publisher_metrics.total() - before, abandoned }
    }
}

/// How long past the shutdown deadline a poller may take to record what
/// became of its batch (mark sent, release the rest) before it is killed and
/// its leases are left to expire.
const RELEASE_GRACE: Duration = Duration::from_secs(5);

fn grace(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100))
}
