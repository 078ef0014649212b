//! The transport conformance suite on a real RabbitMQ broker
//! (`HEXERACT_AMQP_URL`), one test per case, each on a connection of its
//! own; then what only RabbitMQ needs: connect failures within the
//! timeout, TLS, a size limit before the broker, conflicts that leave the
//! connection working.
//!
//! Skipped, with a printed line, when `HEXERACT_AMQP_URL` is unset; a
//! failure when it is unset under `CI=true` or set but unreachable.

use std::time::Duration;

use hexeract_integration::conformance::transport::{self, CASES, Outcome, TestedTransport, run_case};
use hexeract_integration::{service_url, unique};
use hexeract_transport_rabbitmq::{RabbitConfig, RabbitTransport};

fn amqp_url() -> Option<String> {
    service_url("HEXERACT_AMQP_URL", "RabbitMQ")
}

async fn connect(url: &str) -> RabbitTransport {
    RabbitTransport::connect_url(url)
        .await
        .unwrap_or_else(|error| panic!("HEXERACT_AMQP_URL is set but RabbitMQ is unreachable: {error}"))
}

/// Runs conformance case `name` on a connection of its own.
async fn conformance(name: &str) {
    let Some(url) = amqp_url() else { return };
    let case = transport::case(name).unwrap_or_else(|| panic!("no conformance case named `{name}`"));
    let tested = TestedTransport::rabbitmq(connect(&url).await);
    match run_case(case, &tested, &unique(&format!("rabbit.{name}"))).await {
        Ok(Outcome::Passed) => {}
        Ok(Outcome::Skipped(requirement)) => panic!("the RabbitMQ transport lacks `{}`", requirement.name()),
        Err(failure) => panic!("{failure}"),
    }
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                conformance(stringify!($name)).await;
            }
        )*

        #[test]
        fn every_conformance_case_has_a_test_here() {
            let mut here = vec![$(stringify!($name)),*];
            let mut table: Vec<&str> = CASES.iter().map(|case| case.name).collect();
            here.sort_unstable();
            table.sort_unstable();
            assert_eq!(here, table, "the tests here and the conformance table differ");
        }
    };
}

conformance_tests!(
    declare_twice_is_a_no_op,
    conflicting_declare_names_the_property,
    overlong_names_are_refused,
    direct_exchange_routes_by_exact_key,
    topic_exchange_routes_by_pattern,
    fanout_exchange_routes_to_every_bound_queue,
    headers_exchange_matches_all_or_any,
    unroutable_publish_is_an_error,
    publish_to_a_missing_exchange_or_queue_is_an_error,
    consume_and_ack_removes_the_message,
    nack_with_requeue_redelivers,
    nack_without_requeue_dead_letters,
    settling_an_unknown_or_settled_tag_is_an_error,
    prefetch_bounds_unacked_deliveries,
    cancel_returns_unacked_messages,
    dropping_a_subscription_returns_its_deliveries,
    delayed_publish_waits_for_its_delay,
    bounded_queue_rejects_publishes_when_full,
    queue_deleted_under_a_consumer_ends_it,
    connection_lost_ends_subscriptions_and_fails_publishes,
    wire_message_survives_the_trip,
    thousand_messages_over_four_consumers_are_each_delivered_once,
);

#[test]
fn a_bad_config_is_refused_before_connecting() {
    assert!(RabbitConfig::new("http://guest:guest@127.0.0.1:5672").is_err());
    let config = RabbitConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f").expect("valid");
    assert_eq!(config.connect_timeout, Duration::from_secs(5));
}
