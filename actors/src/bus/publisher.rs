//! The publisher actor: every publish waits for the broker's confirm, and at
//! most `window` confirms are outstanding at once (pipelined, not one round
//! trip per message).

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use hexeract_runtime::BoxFuture;
use hexeract_runtime::mailbox::{Mailbox, Slot};
use hexeract_runtime::metrics::{ActorMetrics, Outcome};
use hexeract_runtime::ports::transport::{Outgoing, PublishError, Transport};
use hexeract_runtime::supervision::ActorLoop;
use tokio::sync::oneshot;

/// How the publisher works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublisherConfig {
    /// Confirms outstanding at once. Default 256: enough to keep a broker
    /// busy over a LAN, small enough that a dead broker costs little memory.
    pub window: NonZeroUsize,
    /// Longest wait for one confirm. Default 10 s.
    pub confirm_timeout: Duration,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig { window: NonZeroUsize::new(256).expect("non-zero"), confirm_timeout: Duration::from_secs(10) }
    }
}

impl PublisherConfig {
    /// Sets the confirms outstanding at once.
    #[must_use]
    pub fn window(mut self, window: NonZeroUsize) -> Self {
        self.window = window;
        self
    }

    /// Sets the longest wait for one confirm.
    #[must_use]
    pub fn confirm_timeout(mut self, timeout: Duration) -> Self {
        self.confirm_timeout = timeout;
        self
    }
}

/// Why a publish through the [`Publisher`] did not count as sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The broker did not confirm the message.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The publisher is stopped (shutdown, or given up by its supervisor).
    #[error("the publisher is stopped; the message was not published")]
    Stopped,
}

pub(crate) struct PublishRequest {
    outgoing: Outgoing,
    reply: oneshot::Sender<Result<(), PublishError>>,
}

/// A handle to the publisher actor. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    mailbox: Mailbox<PublishRequest>,
}

impl Publisher {
    /// Publishes `outgoing` and waits for the broker's confirm, waiting for
    /// room in the publisher's mailbox first (back-pressure).
    ///
    /// # Errors
    /// [`BusError::Publish`] when the broker refused, returned or did not
    /// confirm the message in time; [`BusError::Stopped`] during shutdown.
    pub async fn publish(&self, outgoing: Outgoing) -> Result<(), BusError> {
        let (reply, answer) = oneshot::channel();
        self.mailbox.send(PublishRequest { outgoing, reply }).await.map_err(|_| BusError::Stopped)?;
        answer.await.map_err(|_| BusError::Stopped)?.map_err(BusError::Publish)
    }

    pub(crate) fn mailbox(&self) -> &Mailbox<PublishRequest> {
        &self.mailbox
    }
}

/// The publisher actor's body.
pub(crate) struct PublisherLoop {
    path: String,
    metrics: Arc<ActorMetrics>,
    mailbox: Mailbox<PublishRequest>,
    transport: Arc<dyn Transport>,
    config: PublisherConfig,
}

impl PublisherLoop {
    pub(crate) fn new(
        path: String,
        metrics: Arc<ActorMetrics>,
        mailbox: Mailbox<PublishRequest>,
        transport: Arc<dyn Transport>,
        config: PublisherConfig,
    ) -> (Self, Publisher) {
        let handle = Publisher { mailbox: mailbox.clone() };
        (PublisherLoop { path, metrics, mailbox, transport, config }, handle)
    }

    async fn confirm(&self, request: PublishRequest, slot: Slot) {
        let started = Instant::now();
        let result =
            match tokio::time::timeout(self.config.confirm_timeout, self.transport.publish(request.outgoing)).await {
                Ok(result) => result,
                Err(_) => Err(PublishError::Timeout(self.config.confirm_timeout)),
            };
        let outcome = if result.is_ok() { Outcome::Ok } else { Outcome::Error };
        self.metrics.record(outcome, started.elapsed());
        let _ = request.reply.send(result);
        drop(slot);
    }
}

impl ActorLoop for PublisherLoop {
    fn path(&self) -> &str {
        &self.path
    }

    fn metrics(&self) -> &ActorMetrics {
        &self.metrics
    }

    fn run(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut receiver = self.mailbox.receiver().await;
            let mut in_flight = FuturesUnordered::new();
            let window = self.config.window.get();
            loop {
                tokio::select! {
                    biased;
                    Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                    queued = receiver.recv(), if in_flight.len() < window => match queued {
                        Some(queued) => {
                            let (request, slot) = queued.into_parts();
                            in_flight.push(self.confirm(request, slot));
                        }
                        None => break,
                    },
                }
            }
            // Told to stop: what was sent still gets its confirm.
            while in_flight.next().await.is_some() {}
            Ok(())
        })
    }

    fn give_up(&self) {
        self.mailbox.discard();
    }
}
