use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};

use super::Child;
use crate::BoxFuture;
use crate::metrics::ActorMetrics;

/// The body of a long-running actor: a poller, a publisher, a consumer.
///
/// Each incarnation calls [`ActorLoop::run`] once. Returning `Ok` ends the
/// actor normally (shutdown); returning `Err` or panicking is a failure the
/// supervisor restarts after backoff, by calling `run` again on the same
/// value. Whatever must survive an incarnation (a mailbox, a lease owner
/// registry) lives in `self`; whatever must not (a subscription, a claimed
/// batch) lives in the future.
pub trait ActorLoop: Send + Sync + 'static {
    /// The actor's path in the tree.
    fn path(&self) -> &str;

    /// Its metrics.
    fn metrics(&self) -> &ActorMetrics;

    /// Runs one incarnation until told to stop (`Ok`) or until it fails.
    fn run(&self) -> BoxFuture<'_, Result<(), String>>;

    /// The supervisor gave up on it: fail whatever waits on it.
    fn give_up(&self) {}
}

/// Makes an [`ActorLoop`] a supervised [`Child`].
pub struct LoopChild<L: ActorLoop> {
    body: Arc<L>,
}

impl<L: ActorLoop> LoopChild<L> {
    /// A child running `body`.
    pub fn new(body: Arc<L>) -> Self {
        LoopChild { body }
    }
}

impl<L: ActorLoop> Child for LoopChild<L> {
    fn path(&self) -> &str {
        self.body.path()
    }

    fn metrics(&self) -> &ActorMetrics {
        self.body.metrics()
    }

    fn spawn(&self, supervisor: ActorCell) -> BoxFuture<'_, Result<ActorCell, SpawnErr>> {
        Box::pin(async move {
            let (actor, _join) = Actor::spawn_linked(None, LoopActor(Arc::clone(&self.body)), (), supervisor).await?;
            Ok(actor.get_cell())
        })
    }

    fn give_up(&self) {
        self.body.give_up();
    }
}

struct LoopActor<L>(Arc<L>);

struct Run;

impl<L: ActorLoop> Actor for LoopActor<L> {
    type Msg = Run;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<Run>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn post_start(&self, myself: ActorRef<Run>, _state: &mut ()) -> Result<(), ActorProcessingErr> {
        myself.cast(Run)?;
        Ok(())
    }

    async fn handle(&self, _myself: ActorRef<Run>, _message: Run, _state: &mut ()) -> Result<(), ActorProcessingErr> {
        self.0.run().await.map_err(Into::into)
    }
}
