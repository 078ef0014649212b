//! The connection actor: the transport's connection keeper run under the
//! bus supervisor, so that a dropped broker connection is noticed and
//! re-established (with the topology declared again) even when no publish
//! or consumer needs it yet, and so that its reconnections show in the
//! metrics as `bus/connection`.

use std::sync::Arc;

use hexeract_runtime::BoxFuture;
use hexeract_runtime::metrics::ActorMetrics;
use hexeract_runtime::ports::transport::Transport;
use hexeract_runtime::supervision::ActorLoop;
use tokio_util::sync::CancellationToken;

/// The path of the connection actor in the tree.
pub(crate) const CONNECTION_PATH: &str = "bus/connection";

pub(crate) struct ConnectionKeeper {
    metrics: Arc<ActorMetrics>,
    transport: Arc<dyn Transport>,
    stop: CancellationToken,
}

impl ConnectionKeeper {
    pub(crate) fn new(metrics: Arc<ActorMetrics>, transport: Arc<dyn Transport>, stop: CancellationToken) -> Self {
        ConnectionKeeper { metrics, transport, stop }
    }
}

impl ActorLoop for ConnectionKeeper {
    fn path(&self) -> &str {
        CONNECTION_PATH
    }

    fn metrics(&self) -> &ActorMetrics {
        &self.metrics
    }

    fn run(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            tokio::select! {
                kept = self.transport.keep_connected(&self.metrics) => {
                    kept.map_err(|error| format!("keeping the {} connection: {error}", self.transport.name()))
                }
                () = self.stop.cancelled() => Ok(()),
            }
        })
    }
}
