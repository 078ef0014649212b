//! Hexeract's actors: handler actors and their pools, the mediator that
//! routes to them, and the middleware around dispatch.
//!
//! Users reach all of this through the `hexeract` facade. No ractor type
//! appears in this crate's public API.

pub mod bus;
mod context;
mod error;
mod handler;
mod mediator;
pub mod middleware;
mod pool;
mod registration;
pub mod relay;
mod router;
mod tree;
mod worker;

pub use context::Context;
pub use error::{DispatchError, HandlerFailure, PublishError, TrySendError};
pub use handler::{HandlerActor, HandlerOptions, HandlerResult, Handles, RouteInfo, Routes};
pub use mediator::Mediator;
pub use registration::{
    DeclaredMessage, DiscoveredHandler, HandlerProblem, HandlerRegistration, VerifyError, declared_messages,
    discovered_handlers, verify_handlers,
};
pub use tree::{MediatorConfig, MediatorTree, StartError};

#[doc(hidden)]
pub use inventory;
