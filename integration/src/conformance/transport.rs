//! The transport conformance suite: what every [`Transport`] must do,
//! written once against the port and run against each adapter.
//!
//! Each case is a `pub async fn(&TestedTransport, prefix) -> Result<(), String>`.
//! The prefix is unique per case and run, and every exchange, queue and
//! message id a case creates starts with it, so cases can share one broker
//! (and run concurrently on it), except those marked [`Case::exclusive`],
//! which drop the whole connection.
//!
//! [`CASES`] lists them with the [`Requirement`]s each needs beyond the
//! basic contract. An adapter's test file runs every case; [`run_case`]
//! skips, with a printed line, those whose requirement the transport's
//! [`Capabilities`] lack:
//!
//! ```no_run
//! # async fn demo(transport: std::sync::Arc<dyn hexeract_runtime::ports::transport::Transport>,
//! #               operator: std::sync::Arc<dyn hexeract_integration::conformance::transport::Operator>) {
//! use hexeract_integration::conformance::transport::{CASES, TestedTransport, run_case};
//!
//! let tested = TestedTransport { transport, operator };
//! for case in CASES {
//!     run_case(case, &tested, &format!("conformance.{}", case.name)).await.expect("case passes");
//! }
//! # }
//! ```
//!
//! # Conventions every adapter follows
//!
//! - Errors are the port's variants, as the cases check them: a conflicting
//!   declaration is `TransportError::Conflict` whose `property` names the
//!   property (`kind`, `durable`, …); a publish to a missing exchange or
//!   queue is `PublishError::NotFound`; one that matches no binding is
//!   `PublishError::Unroutable`; a publish after the connection was lost is
//!   `PublishError::ConnectionLost`; settling a tag twice is
//!   `TransportError::NotFound`.
//! - A headers-exchange binding carries its match in `routing_key`:
//!   comma-separated `name=value` rules and an optional `x-match=all|any`
//!   (see the `hexeract-transport-memory` crate docs), because [`Binding`]
//!   has no arguments.
//! - After `cancel`, a subscription's `next` yields `Ended`.
//!
//! [`Binding`]: hexeract_runtime::ports::transport::Binding

mod delivery;
mod faults;
mod messages;
mod routing;
mod support;

use std::sync::Arc;
use std::time::Duration;

use hexeract_runtime::BoxFuture;
use hexeract_runtime::ports::transport::{Capabilities, Transport};
use hexeract_transport_memory::MemoryTransport;
use hexeract_transport_rabbitmq::RabbitTransport;

pub use delivery::{
    cancel_returns_unacked_messages, consume_and_ack_removes_the_message,
    dropping_a_subscription_returns_its_deliveries, nack_with_requeue_redelivers, nack_without_requeue_dead_letters,
    prefetch_bounds_unacked_deliveries, settling_an_unknown_or_settled_tag_is_an_error,
};
pub use faults::{connection_lost_ends_subscriptions_and_fails_publishes, queue_deleted_under_a_consumer_ends_it};
pub use messages::{
    bounded_queue_rejects_publishes_when_full, delayed_publish_waits_for_its_delay,
    thousand_messages_over_four_consumers_are_each_delivered_once, wire_message_survives_the_trip,
};
pub use routing::{
    conflicting_declare_names_the_property, declare_twice_is_a_no_op, direct_exchange_routes_by_exact_key,
    fanout_exchange_routes_to_every_bound_queue, headers_exchange_matches_all_or_any, overlong_names_are_refused,
    publish_to_a_missing_exchange_or_queue_is_an_error, topic_exchange_routes_by_pattern,
    unroutable_publish_is_an_error,
};

/// The longest a single case may take before it counts as hung.
pub const CASE_LIMIT: Duration = Duration::from_secs(60);

/// The operator's hands on the broker behind a transport: what a case needs
/// that the port rightly does not offer to the bus actors.
pub trait Operator: Send + Sync {
    /// Deletes `queue` from under its consumers, as an operator would.
    fn delete_queue<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<(), String>>;

    /// Drops the transport's connection to the broker.
    fn disconnect(&self) -> BoxFuture<'_, Result<(), String>>;

    /// Lets the transport connect again after [`disconnect`](Self::disconnect).
    fn reconnect(&self) -> BoxFuture<'_, Result<(), String>>;
}

impl Operator for MemoryTransport {
    fn delete_queue<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { MemoryTransport::delete_queue(self, queue).map(drop).map_err(|error| error.to_string()) })
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            MemoryTransport::disconnect(self);
            Ok(())
        })
    }

    fn reconnect(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            MemoryTransport::reconnect(self);
            Ok(())
        })
    }
}

impl Operator for RabbitTransport {
    fn delete_queue<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { RabbitTransport::delete_queue(self, queue).await.map(drop).map_err(|e| e.to_string()) })
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            RabbitTransport::disconnect(self).await;
            Ok(())
        })
    }

    fn reconnect(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.allow_reconnect();
            Ok(())
        })
    }
}

/// A transport under test, with the operator hooks into its broker.
#[derive(Clone)]
pub struct TestedTransport {
    /// The transport, as the bus actors see it.
    pub transport: Arc<dyn Transport>,
    /// The same broker, as an operator sees it.
    pub operator: Arc<dyn Operator>,
}

impl TestedTransport {
    /// `broker` as both transport and operator.
    pub fn memory(broker: MemoryTransport) -> Self {
        TestedTransport { transport: Arc::new(broker.clone()), operator: Arc::new(broker) }
    }

    /// A RabbitMQ connection as both transport and operator.
    pub fn rabbitmq(transport: RabbitTransport) -> Self {
        let transport = Arc::new(transport);
        TestedTransport { transport: Arc::clone(&transport) as Arc<dyn Transport>, operator: transport }
    }
}

/// A capability a case needs beyond the basic contract: one flag of
/// [`Capabilities`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// [`Capabilities::delayed_delivery`].
    DelayedDelivery,
    /// [`Capabilities::bounded_queues`].
    BoundedQueues,
    /// [`Capabilities::headers_exchange`].
    HeadersExchange,
}

impl Requirement {
    /// Whether a transport with `capabilities` has it.
    pub fn met_by(self, capabilities: Capabilities) -> bool {
        match self {
            Requirement::DelayedDelivery => capabilities.delayed_delivery,
            Requirement::BoundedQueues => capabilities.bounded_queues,
            Requirement::HeadersExchange => capabilities.headers_exchange,
        }
    }

    /// The flag's name in [`Capabilities`].
    pub fn name(self) -> &'static str {
        match self {
            Requirement::DelayedDelivery => "delayed_delivery",
            Requirement::BoundedQueues => "bounded_queues",
            Requirement::HeadersExchange => "headers_exchange",
        }
    }
}

/// A case's body: the tested transport and a unique name prefix in, a
/// failure's description out.
pub type CaseFn = for<'a> fn(&'a TestedTransport, &'a str) -> BoxFuture<'a, Result<(), String>>;

/// One conformance case.
pub struct Case {
    /// The case's function name.
    pub name: &'static str,
    /// What the transport must be able to do for the case to apply.
    pub requires: &'static [Requirement],
    /// The case drops the connection, so it needs a transport of its own.
    pub exclusive: bool,
    /// Runs it.
    pub run: CaseFn,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case")
            .field("name", &self.name)
            .field("requires", &self.requires)
            .field("exclusive", &self.exclusive)
            .finish_non_exhaustive()
    }
}

macro_rules! case {
    ($name:ident, exclusive) => {
        case!(@build $name, [], true)
    };
    ($name:ident $(, requires $requirement:ident)*) => {
        case!(@build $name, [$($requirement),*], false)
    };
    (@build $name:ident, [$($requirement:ident),*], $exclusive:literal) => {
        Case {
            name: stringify!($name),
            requires: &[$(Requirement::$requirement),*],
            exclusive: $exclusive,
            run: |tested, prefix| Box::pin($name(tested, prefix)),
        }
    };
}

/// Every case, with what it requires.
pub const CASES: &[Case] = &[
    case!(declare_twice_is_a_no_op),
    case!(conflicting_declare_names_the_property),
    case!(overlong_names_are_refused),
    case!(direct_exchange_routes_by_exact_key),
    case!(topic_exchange_routes_by_pattern),
    case!(fanout_exchange_routes_to_every_bound_queue),
    case!(headers_exchange_matches_all_or_any, requires HeadersExchange),
    case!(unroutable_publish_is_an_error),
    case!(publish_to_a_missing_exchange_or_queue_is_an_error),
    case!(consume_and_ack_removes_the_message),
    case!(nack_with_requeue_redelivers),
    case!(nack_without_requeue_dead_letters),
    case!(settling_an_unknown_or_settled_tag_is_an_error),
    case!(prefetch_bounds_unacked_deliveries),
    case!(cancel_returns_unacked_messages),
    case!(dropping_a_subscription_returns_its_deliveries),
    case!(delayed_publish_waits_for_its_delay, requires DelayedDelivery),
    case!(bounded_queue_rejects_publishes_when_full, requires BoundedQueues),
    case!(queue_deleted_under_a_consumer_ends_it),
    case!(connection_lost_ends_subscriptions_and_fails_publishes, exclusive),
    case!(wire_message_survives_the_trip),
    case!(thousand_messages_over_four_consumers_are_each_delivered_once),
];

/// The case called `name`.
pub fn case(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|case| case.name == name)
}

/// How a case went, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It ran and passed.
    Passed,
    /// The transport lacks this requirement, so the case did not run.
    Skipped(Requirement),
}

/// Runs `case` on `tested` with `prefix`, or skips it, printing a line,
/// when the transport lacks one of its requirements.
///
/// # Errors
/// The case's failure, prefixed with its name and the transport's, or a
/// timeout after [`CASE_LIMIT`].
pub async fn run_case(case: &Case, tested: &TestedTransport, prefix: &str) -> Result<Outcome, String> {
    let transport = tested.transport.name();
    let capabilities = tested.transport.capabilities();
    if let Some(missing) = case.requires.iter().copied().find(|requirement| !requirement.met_by(capabilities)) {
        println!("skipped {}: transport `{transport}` lacks capability `{}`", case.name, missing.name());
        return Ok(Outcome::Skipped(missing));
    }
    match tokio::time::timeout(CASE_LIMIT, (case.run)(tested, prefix)).await {
        Ok(Ok(())) => Ok(Outcome::Passed),
        Ok(Err(failure)) => Err(format!("{} on `{transport}`: {failure}", case.name)),
        Err(_) => Err(format!("{} on `{transport}`: did not finish within {CASE_LIMIT:?}", case.name)),
    }
}

/// Runs every case that does not need the transport to itself, all at once
/// on `tested`, each with prefix `{prefix}.{case}`; returns each case's
/// name and result, in table order.
pub async fn run_shared(tested: &TestedTransport, prefix: &str) -> Vec<(&'static str, Result<Outcome, String>)> {
    let runs = CASES.iter().filter(|case| !case.exclusive).map(|case| async move {
        let result = run_case(case, tested, &format!("{prefix}.{}", case.name)).await;
        (case.name, result)
    });
    futures::future::join_all(runs).await
}
