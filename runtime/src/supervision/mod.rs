//! Supervision: restart policies and the supervisor actor that applies them.
//!
//! ractor reports a failed child to its supervisor and stops there; the
//! restart itself is ours. [`Supervisor`] restarts a failed child one-for-one
//! after an exponential backoff with full jitter, and gives up on a child
//! that fails more than [`RestartPolicy::max_restarts`] times within
//! [`RestartPolicy::window`]: it closes the child (so no caller waits on it)
//! and escalates to its parent through [`Escalation`].

mod looping;
mod policy;
mod supervisor;

pub use looping::{ActorLoop, LoopChild};

pub use policy::{Backoff, PolicyError, RestartPolicy};
pub use supervisor::{Child, Escalation, Supervisor, SupervisorRef};
