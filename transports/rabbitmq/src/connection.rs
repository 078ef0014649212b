//! The connection to the broker, and getting it back after a drop.
//!
//! One AMQP connection per transport, shared by every channel. When it
//! drops, the next caller that needs it reconnects (one at a time), waiting
//! a jittered, growing delay between failed attempts so that a broker that
//! is down is not hammered; the topology this transport declared is
//! declared again on the new connection (a restarted broker may have lost
//! transient pieces, an operator may have deleted a queue). Callers that
//! cannot wait (a publish) fail at once with `ConnectionLost`; a consumer
//! being started waits up to `reconnect_patience`.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hexeract_runtime::metrics::{ActorMetrics, Outcome};
use hexeract_runtime::ports::transport::{Topology, TransportError};
use lapin::tcp::OwnedTLSConfig;
use lapin::{Channel, Connection, ConnectionProperties};

use crate::config::RabbitConfig;
use crate::error::{ConnectError, is_access_refused};
use crate::topology;

/// How often the connection keeper looks at the connection.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The current connection, numbered so that caches tied to one connection
/// (open channels, declared retry queues) know when to start over.
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) connection: Arc<Connection>,
    pub(crate) generation: u64,
}

struct State {
    live: Option<Live>,
    generation: u64,
    /// Set by an operator's `disconnect`: no reconnection until cleared.
    held_down: bool,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: String,
}

pub(crate) struct Connector {
    pub(crate) config: RabbitConfig,
    state: Mutex<State>,
    /// One reconnection at a time.
    reconnecting: tokio::sync::Mutex<()>,
    /// Everything declared through this transport, declared again after a
    /// reconnection.
    owned: Mutex<Topology>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Connector {
    /// Connects once; the error is the caller's to report.
    pub(crate) async fn connect(config: RabbitConfig) -> Result<Self, ConnectError> {
        let connection = open(&config).await?;
        Ok(Connector {
            config,
            state: Mutex::new(State {
                live: Some(Live { connection: Arc::new(connection), generation: 1 }),
                generation: 1,
                held_down: false,
                failures: 0,
                retry_at: None,
                last_error: String::new(),
            }),
            reconnecting: tokio::sync::Mutex::new(()),
            owned: Mutex::new(Topology::default()),
        })
    }

    fn current(&self) -> Result<Option<Live>, TransportError> {
        let state = lock(&self.state);
        if state.held_down {
            return Err(TransportError::ConnectionLost("the connection was closed by an operator".into()));
        }
        Ok(state.live.as_ref().filter(|live| live.connection.status().connected()).cloned())
    }

    /// The live connection, reconnecting if it dropped and the last failed
    /// attempt is old enough.
    pub(crate) async fn live(&self) -> Result<Live, TransportError> {
        if let Some(live) = self.current()? {
            return Ok(live);
        }
        let _one_at_a_time = self.reconnecting.lock().await;
        if let Some(live) = self.current()? {
            return Ok(live);
        }
        {
            let state = lock(&self.state);
            if let Some(retry_at) = state.retry_at.filter(|at| *at > Instant::now()) {
                return Err(TransportError::ConnectionLost(format!(
                    "reconnecting to {} in {:?}; the last attempt failed: {}",
                    self.config.url,
                    retry_at - Instant::now(),
                    state.last_error
                )));
            }
        }
        match open(&self.config).await {
            Ok(connection) => {
                let connection = Arc::new(connection);
                let live = {
                    let mut state = lock(&self.state);
                    state.generation += 1;
                    state.failures = 0;
                    state.retry_at = None;
                    let live = Live { connection, generation: state.generation };
                    state.live = Some(live.clone());
                    live
                };
                tracing::info!(url = %self.config.url, "reconnected to RabbitMQ");
                self.redeclare(&live).await;
                Ok(live)
            }
            Err(error) => {
                let mut state = lock(&self.state);
                let delay = self.config.reconnect_backoff.delay(state.failures);
                state.failures = state.failures.saturating_add(1);
                state.retry_at = Some(Instant::now() + delay);
                state.last_error = error.to_string();
                tracing::warn!(%error, retry_in = ?delay, "cannot reconnect to RabbitMQ");
                Err(TransportError::ConnectionLost(error.to_string()))
            }
        }
    }

    /// Like [`live`](Self::live), but waits up to `reconnect_patience` for
    /// the broker to come back.
    pub(crate) async fn live_patiently(&self) -> Result<Live, TransportError> {
        let give_up = Instant::now() + self.config.reconnect_patience;
        loop {
            match self.live().await {
                Ok(live) => return Ok(live),
                Err(error) if Instant::now() >= give_up || lock(&self.state).held_down => return Err(error),
                Err(_) => {
                    let retry_at = lock(&self.state).retry_at.unwrap_or_else(Instant::now);
                    let wait = retry_at.saturating_duration_since(Instant::now()).max(Duration::from_millis(50));
                    tokio::time::sleep(wait.min(give_up.saturating_duration_since(Instant::now()))).await;
                }
            }
        }
    }

    /// Looks after the connection until dropped: every [`WATCH_INTERVAL`]
    /// checks it is up, and when it is not, reconnects as soon as the
    /// backoff allows (which declares the owned topology again). Attempts
    /// are recorded in `metrics`; an operator's hold-down is waited out.
    pub(crate) async fn keep(&self, metrics: &ActorMetrics) -> Result<(), TransportError> {
        loop {
            let (held_down, retry_at) = {
                let state = lock(&self.state);
                (state.held_down, state.retry_at)
            };
            let up = !held_down && self.current().ok().flatten().is_some();
            if held_down || up {
                tokio::time::sleep(WATCH_INTERVAL).await;
                continue;
            }
            if let Some(wait) = retry_at.map(|at| at.saturating_duration_since(Instant::now()))
                && !wait.is_zero()
            {
                tokio::time::sleep(wait).await;
                continue;
            }
            let started = Instant::now();
            let outcome = if self.live().await.is_ok() { Outcome::Ok } else { Outcome::Error };
            metrics.record(outcome, started.elapsed());
        }
    }

    /// A new channel on the live connection.
    pub(crate) async fn channel(&self, live: &Live) -> Result<Channel, TransportError> {
        live.connection
            .create_channel()
            .await
            .map_err(|error| TransportError::ConnectionLost(format!("cannot open a channel: {error}")))
    }

    /// Remembers `topology` for re-declaration after a reconnection.
    pub(crate) fn own(&self, topology: &Topology) {
        lock(&self.owned).merge(topology);
    }

    /// Everything declared through this transport so far.
    pub(crate) fn owned(&self) -> Topology {
        lock(&self.owned).clone()
    }

    /// The owned pieces a consumer of `queue` needs: the queue, its
    /// bindings and their exchanges.
    pub(crate) fn owned_for_queue(&self, queue: &str) -> Option<Topology> {
        let owned = lock(&self.owned);
        let spec = owned.queues.iter().find(|spec| spec.name == queue)?.clone();
        let bindings: Vec<_> = owned.bindings.iter().filter(|binding| binding.queue == queue).cloned().collect();
        let exchanges = owned
            .exchanges
            .iter()
            .filter(|exchange| bindings.iter().any(|binding| binding.exchange == exchange.name))
            .cloned()
            .collect();
        Some(Topology { exchanges, queues: vec![spec], bindings })
    }

    async fn redeclare(&self, live: &Live) {
        let owned = lock(&self.owned).clone();
        if owned == Topology::default() {
            return;
        }
        let result = match self.channel(live).await {
            Ok(channel) => topology::declare_on(&channel, &owned, &owned).await.map(|()| channel),
            Err(error) => Err(error),
        };
        match result {
            Ok(channel) => {
                let _ = channel.close(200, "declared".into()).await;
            }
            Err(error) => tracing::error!(%error, "re-declaring the topology after a reconnection failed"),
        }
    }

    /// Closes the connection and refuses to reconnect until
    /// [`allow_reconnect`](Self::allow_reconnect).
    pub(crate) async fn hold_down(&self) {
        let live = {
            let mut state = lock(&self.state);
            state.held_down = true;
            state.live.take()
        };
        if let Some(live) = live {
            let _ = live.connection.close(320, "closed by an operator".into()).await;
        }
    }

    pub(crate) fn allow_reconnect(&self) {
        let mut state = lock(&self.state);
        state.held_down = false;
        state.retry_at = None;
    }

    /// Closes the connection for good.
    pub(crate) async fn close(&self) {
        let live = lock(&self.state).live.take();
        if let Some(live) = live {
            let _ = live.connection.close(200, "bye".into()).await;
        }
    }
}

/// Opens one connection, within the connect timeout.
async fn open(config: &RabbitConfig) -> Result<Connection, ConnectError> {
    let url = config.url.to_string();
    let mut uri = config.url.uri().clone();
    uri.query.heartbeat = Some(config.heartbeat);
    uri.query.connection_timeout = Some(u64::try_from(config.connect_timeout.as_millis()).unwrap_or(u64::MAX));
    let properties = ConnectionProperties::default().with_connection_name(config.app_id.clone().into());
    let tls = OwnedTLSConfig { identity: None, cert_chain: config.tls_roots_pem.clone() };
    let runtime = lapin::runtime::default_runtime()
        .map_err(|error| ConnectError::Unreachable { url: url.clone(), reason: error.to_string() })?;
    let connecting = Connection::connect_uri_with_config(uri, properties, tls, runtime);
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Err(_) => Err(ConnectError::Timeout { url, timeout: config.connect_timeout }),
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) if is_access_refused(&error) => Err(ConnectError::Refused { url, reason: error.to_string() }),
        Ok(Err(error)) => Err(ConnectError::Unreachable { url, reason: error.to_string() }),
    }
}
