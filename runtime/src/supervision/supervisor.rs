use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent};

use super::RestartPolicy;
use crate::BoxFuture;
use crate::metrics::{ActorMetrics, ActorStatus};

/// A child a [`Supervisor`] can start, and start again after it failed.
pub trait Child: Send + Sync + 'static {
    /// The child's path in the tree, for logs.
    fn path(&self) -> &str;

    /// The child's metrics, where restarts and status are recorded.
    fn metrics(&self) -> &ActorMetrics;

    /// Spawns a fresh incarnation linked to `supervisor`. Must not fail for
    /// reasons a retry would not fix: state construction belongs before.
    fn spawn(&self, supervisor: ActorCell) -> BoxFuture<'_, Result<ActorCell, SpawnErr>>;

    /// The supervisor stops restarting this child: fail whatever is queued
    /// for it so no caller waits forever.
    fn give_up(&self);
}

/// A child the supervisor gave up on, reported to the parent.
#[derive(Debug, Clone)]
pub struct Escalation {
    /// The child's path.
    pub path: String,
    /// The last failure.
    pub reason: String,
    /// Restarts within the window when it was given up on.
    pub restarts_in_window: usize,
}

/// What the parent does with an escalation.
pub type EscalationSink = Arc<dyn Fn(Escalation) + Send + Sync>;

/// The supervisor actor. Spawn it with [`Supervisor::start`].
pub struct Supervisor;

/// A handle to a running [`Supervisor`].
#[derive(Clone)]
pub struct SupervisorRef {
    actor: ActorRef<SupervisorMsg>,
}

#[doc(hidden)]
pub enum SupervisorMsg {
    Start(Arc<dyn Child>, RpcReplyPort<Result<(), String>>),
    Restart(usize),
    StopChildren(Duration, RpcReplyPort<()>),
}

#[doc(hidden)]
pub struct SupervisorArgs {
    policy: RestartPolicy,
    on_escalate: EscalationSink,
}

#[doc(hidden)]
pub struct SupervisorState {
    policy: RestartPolicy,
    on_escalate: EscalationSink,
    children: Vec<ChildSlot>,
    by_actor: HashMap<ActorId, usize>,
    stopping: bool,
}

struct ChildSlot {
    child: Arc<dyn Child>,
    current: Option<ActorCell>,
    recent_failures: VecDeque<Instant>,
    given_up: bool,
}

impl Supervisor {
    /// Spawns a supervisor applying `policy`; `on_escalate` hears about every
    /// child it gives up on.
    ///
    /// # Errors
    /// ractor's [`SpawnErr`] if the actor cannot start.
    pub async fn start(policy: RestartPolicy, on_escalate: EscalationSink) -> Result<SupervisorRef, SpawnErr> {
        let (actor, _join) = Actor::spawn(None, Supervisor, SupervisorArgs { policy, on_escalate }).await?;
        Ok(SupervisorRef { actor })
    }
}

impl SupervisorRef {
    /// Starts `child` under this supervisor.
    ///
    /// # Errors
    /// The reason, when the first incarnation cannot be spawned.
    pub async fn start_child(&self, child: Arc<dyn Child>) -> Result<(), String> {
        match self.actor.call(|reply| SupervisorMsg::Start(child, reply), None).await {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            Ok(_) => Err("supervisor did not answer".into()),
            Err(error) => Err(format!("supervisor unreachable: {error}")),
        }
    }

    /// Stops every child (each gets `grace` to leave on its own before it is
    /// killed), then the supervisor itself. Failures during this are not
    /// restarted.
    pub async fn stop(&self, grace: Duration) {
        // The call cannot time out on its own: each child is bounded by `grace`.
        let _ = self.actor.call(|reply| SupervisorMsg::StopChildren(grace, reply), None).await;
        let _ = self.actor.stop_and_wait(None, Some(grace)).await;
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            policy: args.policy,
            on_escalate: args.on_escalate,
            children: Vec::new(),
            by_actor: HashMap::new(),
            stopping: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Start(child, reply) => {
                let result = child.spawn(myself.get_cell()).await;
                let result = match result {
                    Ok(cell) => {
                        let index = state.children.len();
                        state.by_actor.insert(cell.get_id(), index);
                        state.children.push(ChildSlot {
                            child,
                            current: Some(cell),
                            recent_failures: VecDeque::new(),
                            given_up: false,
                        });
                        Ok(())
                    }
                    Err(error) => Err(format!("cannot start `{}`: {error}", child.path())),
                };
                let _ = reply.send(result);
            }
            SupervisorMsg::Restart(index) => state.restart(&myself, index).await,
            SupervisorMsg::StopChildren(grace, reply) => {
                state.stopping = true;
                for slot in &mut state.children {
                    if let Some(cell) = slot.current.take()
                        && cell.stop_and_wait(None, Some(grace)).await.is_err()
                    {
                        cell.kill();
                    }
                    slot.child.metrics().set_status(ActorStatus::Stopped);
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped unexpectedly".into()))
            }
            _ => return Ok(()),
        };
        let Some(index) = state.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        state.children[index].current = None;
        if state.stopping {
            return Ok(());
        }
        state.on_failure(&myself, index, reason);
        Ok(())
    }
}

impl SupervisorState {
    /// Counts a failure and either schedules a restart after backoff or,
    /// past the restart intensity, gives up and escalates.
    fn on_failure(&mut self, myself: &ActorRef<SupervisorMsg>, index: usize, reason: String) {
        let policy = self.policy;
        let slot = &mut self.children[index];
        let now = Instant::now();
        slot.recent_failures.push_back(now);
        while slot.recent_failures.front().is_some_and(|at| now.duration_since(*at) > policy.window()) {
            slot.recent_failures.pop_front();
        }
        let failures = slot.recent_failures.len();
        let path = slot.child.path().to_owned();
        if failures > policy.max_restarts() as usize {
            tracing::error!(actor = %path, %reason, failures, "restart intensity exceeded; giving up on actor");
            slot.given_up = true;
            // Close first, then say so: whoever sees `GivenUp` finds the
            // mailbox closed.
            slot.child.give_up();
            slot.child.metrics().set_status(ActorStatus::GivenUp);
            (self.on_escalate)(Escalation { path, reason, restarts_in_window: failures - 1 });
            return;
        }
        let attempt = u32::try_from(failures - 1).unwrap_or(u32::MAX);
        let delay = policy.backoff_policy().delay(attempt);
        tracing::warn!(actor = %path, %reason, ?delay, "actor failed; restarting after backoff");
        slot.child.metrics().set_status(ActorStatus::Restarting);
        myself.send_after(delay, move || SupervisorMsg::Restart(index));
    }

    async fn restart(&mut self, myself: &ActorRef<SupervisorMsg>, index: usize) {
        let Some(slot) = self.children.get_mut(index) else { return };
        if self.stopping || slot.given_up || slot.current.is_some() {
            return;
        }
        match slot.child.spawn(myself.get_cell()).await {
            Ok(cell) => {
                slot.child.metrics().record_restart();
                slot.child.metrics().set_status(ActorStatus::Running);
                self.by_actor.insert(cell.get_id(), index);
                slot.current = Some(cell);
            }
            Err(error) => {
                let reason = format!("restart failed: {error}");
                self.on_failure(myself, index, reason);
            }
        }
    }
}
