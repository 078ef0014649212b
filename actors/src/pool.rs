//! A handler's workers, and how a message picks one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hexeract_runtime::mailbox::{Mailbox, TrySendError};
use hexeract_runtime::{BoxFuture, Message};
use tokio::sync::oneshot;

use crate::context::Seed;
use crate::error::DispatchError;
use crate::handler::Handles;
use crate::router::Router;
use crate::worker::{Job, job};

/// The mailboxes of one handler's workers. Messages with a routing key go to
/// worker `key % n`, so one key's messages are handled in order by one
/// actor; the others go round-robin.
pub(crate) struct Pool<S> {
    pub(crate) handler: &'static str,
    pub(crate) workers: Vec<Mailbox<Job<S>>>,
    next: AtomicUsize,
}

impl<S: Send + 'static> Pool<S> {
    pub(crate) fn new(handler: &'static str, workers: Vec<Mailbox<Job<S>>>) -> Self {
        Pool { handler, workers, next: AtomicUsize::new(0) }
    }

    fn pick(&self, key: Option<u64>) -> &Mailbox<Job<S>> {
        let n = self.workers.len();
        let index = match key {
            _ if n == 1 => 0,
            // The remainder is below `n`, so it fits a usize.
            Some(key) => (key % n as u64) as usize,
            None => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        &self.workers[index]
    }
}

/// The receiving end of a reply.
pub(crate) type Reply<M> = oneshot::Receiver<Result<<M as Message>::Output, DispatchError>>;

/// Why a message was not queued; it is handed back with its context.
pub(crate) enum Refused<M> {
    Full { message: M, ctx: Seed, capacity: usize },
    Closed,
}

/// Where the mediator sends messages of type `M`: a pool, with its state
/// type erased.
pub(crate) trait Endpoint<M: Message>: Send + Sync {
    fn handler(&self) -> &'static str;

    /// Queues the message if its worker has room now.
    // The large `Err` hands the message back without a box: it is the slow path.
    #[allow(clippy::result_large_err)]
    fn try_dispatch(&self, message: M, ctx: Seed) -> Result<Reply<M>, Refused<M>>;

    /// Queues the message, waiting for room.
    fn dispatch(&self, message: M, ctx: Seed) -> BoxFuture<'_, Result<Reply<M>, Refused<M>>>;
}

impl<S, M> Endpoint<M> for Pool<S>
where
    S: Handles<M>,
    M: Message,
{
    fn handler(&self) -> &'static str {
        self.handler
    }

    fn try_dispatch(&self, message: M, ctx: Seed) -> Result<Reply<M>, Refused<M>> {
        let mailbox = self.pick(message.routing_key());
        match mailbox.try_reserve() {
            Ok(reservation) => {
                let (tx, rx) = oneshot::channel();
                reservation.send(job::<S, M>(message, ctx, tx)).map_err(|_| Refused::Closed)?;
                Ok(rx)
            }
            Err(TrySendError::Full(())) => Err(Refused::Full { message, ctx, capacity: mailbox.capacity() }),
            Err(TrySendError::Closed(())) => Err(Refused::Closed),
        }
    }

    fn dispatch(&self, message: M, ctx: Seed) -> BoxFuture<'_, Result<Reply<M>, Refused<M>>> {
        Box::pin(async move {
            let mailbox = self.pick(message.routing_key());
            let reservation = mailbox.reserve().await.map_err(|_| Refused::Closed)?;
            let (tx, rx) = oneshot::channel();
            reservation.send(job::<S, M>(message, ctx, tx)).map_err(|_| Refused::Closed)?;
            Ok(rx)
        })
    }
}

/// Installs `pool` as a handler of `M` (called once per declared route).
pub(crate) fn install_route<S, M>(router: &Router, pool: &Arc<Pool<S>>)
where
    S: Handles<M>,
    M: Message,
{
    router.add::<M>(Arc::clone(pool) as Arc<dyn Endpoint<M>>);
}

/// Routes deliveries of `M` from `queue` to `pool`.
pub(crate) fn install_bus_route<S, M>(routes: &mut crate::bus::BusRoutes, queue: &str, pool: &Arc<Pool<S>>)
where
    S: Handles<M>,
    M: Message + serde::de::DeserializeOwned,
{
    routes.add::<M>(queue, Arc::clone(pool) as Arc<dyn Endpoint<M>>);
}
