//! The transport conformance suite on the in-memory broker, one test per
//! case, then what only the memory broker promises: `Overflow::Block`, its
//! size limit, exact depths and its operator hooks.

use std::num::NonZeroU16;
use std::time::Duration;

use hexeract_integration::conformance::transport::{self, CASES, Outcome, TestedTransport, run_case, run_shared};
use hexeract_integration::within;
use hexeract_runtime::ports::transport::{
    Binding, Delivery, Destination, ExchangeKind, ExchangeSpec, Outgoing, Overflow, PublishError, QueueSpec,
    Subscription, SubscriptionEvent, Topology, Transport, TransportError,
};
use hexeract_runtime::ports::wire::{ORIGINAL_QUEUE, WireMessage};
use hexeract_transport_memory::{DEFAULT_MAX_MESSAGE_SIZE, MemoryTransport, QueueStats};

const LIMIT: Duration = Duration::from_secs(60);

/// Runs conformance case `name` on a fresh broker.
async fn conformance(name: &str) {
    let case = transport::case(name).unwrap_or_else(|| panic!("no conformance case named `{name}`"));
    let tested = TestedTransport::memory(MemoryTransport::new());
    match run_case(case, &tested, &format!("memory.{name}")).await {
        Ok(Outcome::Passed) => {}
        Ok(Outcome::Skipped(requirement)) => panic!("the memory transport lacks `{}`", requirement.name()),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shared_case_passes_concurrently_on_one_broker() {
    let tested = TestedTransport::memory(MemoryTransport::new());
    let results = within(LIMIT * 2, run_shared(&tested, "shared")).await;
    let failures: Vec<String> = results.into_iter().filter_map(|(_, result)| result.err()).collect();
    assert!(failures.is_empty(), "cases failed on a shared broker:\n{}", failures.join("\n"));
}

#[test]
fn the_memory_transport_has_every_capability() {
    let capabilities = MemoryTransport::new().capabilities();
    for case in CASES {
        for requirement in case.requires {
            assert!(requirement.met_by(capabilities), "{} needs {}", case.name, requirement.name());
        }
    }
}

// ---- memory-specific ----------------------------------------------------------

fn message(id: &str) -> WireMessage {
    WireMessage { message_id: Some(id.into()), body: id.as_bytes().to_vec(), ..WireMessage::default() }
}

fn to_queue(queue: &str, id: &str) -> Outgoing {
    Outgoing { destination: Destination::Queue(queue.into()), message: message(id), delay: None }
}

fn prefetch(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("non-zero")
}

async fn broker_with(queues: Vec<QueueSpec>) -> MemoryTransport {
    let broker = MemoryTransport::new();
    broker.declare(&Topology { queues, ..Topology::default() }).await.expect("declare");
    broker
}

fn bounded(name: &str, max_length: u32, overflow: Overflow) -> QueueSpec {
    let mut spec = QueueSpec::durable(name);
    spec.max_length = Some(max_length);
    spec.overflow = overflow;
    spec
}

async fn delivery(subscription: &mut Box<dyn Subscription>) -> Delivery {
    match tokio::time::timeout(Duration::from_secs(5), subscription.next()).await {
        Ok(SubscriptionEvent::Delivery(delivery)) => delivery,
        Ok(SubscriptionEvent::Ended(reason)) => panic!("ended: {reason}"),
        Err(_) => panic!("no delivery within 5 s"),
    }
}

fn stats(broker: &MemoryTransport, queue: &str) -> QueueStats {
    broker.queue_stats(queue).expect("queue exists")
}

/// A queue's (ready, unacked, delayed, consumers).
fn counts(broker: &MemoryTransport, queue: &str) -> (usize, usize, usize, usize) {
    let stats = stats(broker, queue);
    (stats.ready, stats.unacked, stats.delayed, stats.consumers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_queue_makes_publish_wait_for_room_then_succeed() {
    within(LIMIT, async {
        let broker = broker_with(vec![bounded("orders", 1, Overflow::Block)]).await;
        broker.publish(to_queue("orders", "first")).await.expect("room for one");
        let waiting = tokio::spawn({
            let broker = broker.clone();
            async move { broker.publish(to_queue("orders", "second")).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the publish did not wait for room");
        assert_eq!(stats(&broker, "orders").ready, 1);

        let mut subscription = broker.consume("orders", prefetch(1)).await.expect("consume");
        let first = delivery(&mut subscription).await;
        assert_eq!(first.message.message_id.as_deref(), Some("first"));
        waiting.await.expect("joined").expect("the publish succeeds once there is room");
        subscription.ack(first.tag).await.expect("ack");
        let second = delivery(&mut subscription).await;
        assert_eq!(second.message.message_id.as_deref(), Some("second"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_waiting_for_room_fails_when_the_connection_is_lost() {
    within(LIMIT, async {
        let broker = broker_with(vec![bounded("orders", 1, Overflow::Block)]).await;
        broker.publish(to_queue("orders", "first")).await.expect("room for one");
        let waiting = tokio::spawn({
            let broker = broker.clone();
            async move { broker.publish(to_queue("orders", "second")).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        broker.disconnect();
        let result = waiting.await.expect("joined");
        assert!(matches!(result, Err(PublishError::ConnectionLost(_))), "{result:?}");
        broker.reconnect();
        assert_eq!(broker.peek("orders", 10).expect("peek"), vec![message("first")]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_blocked_publish_publishes_nothing() {
    within(LIMIT, async {
        let broker = broker_with(vec![bounded("orders", 1, Overflow::Block)]).await;
        broker.publish(to_queue("orders", "first")).await.expect("room for one");
        let gave_up =
            tokio::time::timeout(Duration::from_millis(100), broker.publish(to_queue("orders", "second"))).await;
        assert!(gave_up.is_err(), "the publish should still be waiting");
        broker.purge("orders").expect("purge");
        assert_eq!(stats(&broker, "orders"), QueueStats::default());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_refused() {
    let broker = MemoryTransport::builder().max_message_size(1024).build();
    broker
        .declare(&Topology { queues: vec![QueueSpec::durable("orders")], ..Topology::default() })
        .await
        .expect("declare");
    let mut large = to_queue("orders", "large");
    large.message.body = vec![0; 2048];
    match broker.publish(large).await {
        Err(PublishError::TooLarge { size, limit: 1024 }) => assert!(size >= 2048, "size {size}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let mut fits = to_queue("orders", "fits");
    fits.message.body = vec![0; 1024 - "fits".len()];
    broker.publish(fits).await.expect("exactly at the limit is accepted");
    assert_eq!(broker.queue_depth("orders").expect("depth"), 1);
    assert_eq!(DEFAULT_MAX_MESSAGE_SIZE, 16 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_subscription_keeps_the_depth_exact() {
    let broker = broker_with(vec![QueueSpec::durable("orders")]).await;
    for n in 0..5 {
        broker.publish(to_queue("orders", &n.to_string())).await.expect("publish");
    }
    let mut subscription = broker.consume("orders", prefetch(3)).await.expect("consume");
    let first = delivery(&mut subscription).await;
    assert_eq!(counts(&broker, "orders"), (2, 3, 0, 1), "(ready, unacked, delayed, consumers)");
    subscription.ack(first.tag).await.expect("ack");
    assert_eq!(broker.queue_depth("orders").expect("depth"), 4);
    drop(subscription);
    assert_eq!(counts(&broker, "orders"), (4, 0, 0, 0), "(ready, unacked, delayed, consumers)");
    let ids: Vec<_> = broker.peek("orders", 10).expect("peek").into_iter().filter_map(|m| m.message_id).collect();
    assert_eq!(ids, ["1", "2", "3", "4"], "returned deliveries go back to the head, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_hold_their_place_in_a_bounded_queue() {
    let broker = broker_with(vec![bounded("retries", 1, Overflow::RejectPublish)]).await;
    let mut later = to_queue("retries", "later");
    later.delay = Some(Duration::from_secs(3600));
    broker.publish(later).await.expect("room for one");
    assert_eq!(counts(&broker, "retries"), (0, 0, 1, 0), "(ready, unacked, delayed, consumers)");
    let refused = broker.publish(to_queue("retries", "now")).await;
    assert_eq!(refused, Err(PublishError::QueueFull("retries".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_share_a_queue_round_robin() {
    let broker = broker_with(vec![QueueSpec::durable("orders")]).await;
    let mut a = broker.consume("orders", prefetch(10)).await.expect("consume");
    let mut b = broker.consume("orders", prefetch(10)).await.expect("consume");
    for n in 0..4 {
        broker.publish(to_queue("orders", &n.to_string())).await.expect("publish");
    }
    let ids = |deliveries: [Delivery; 2]| deliveries.map(|d| d.message.message_id.unwrap_or_default());
    assert_eq!(ids([delivery(&mut a).await, delivery(&mut a).await]), ["0", "2"]);
    assert_eq!(ids([delivery(&mut b).await, delivery(&mut b).await]), ["1", "3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_says_where_it_came_from() {
    let mut work = QueueSpec::durable("work");
    work.dead_letter = Some(Destination::Queue("dead".into()));
    let broker = broker_with(vec![QueueSpec::durable("dead"), work, QueueSpec::durable("plain")]).await;
    broker.publish(to_queue("work", "poison")).await.expect("publish");
    broker.publish(to_queue("plain", "dropped")).await.expect("publish");
    for queue in ["work", "plain"] {
        let mut subscription = broker.consume(queue, prefetch(1)).await.expect("consume");
        let poison = delivery(&mut subscription).await;
        subscription.nack(poison.tag, false).await.expect("nack");
    }
    let dead = broker.peek("dead", 10).expect("peek");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].headers.get(ORIGINAL_QUEUE).map(String::as_str), Some("work"));
    assert_eq!(dead[0].body, b"poison");
    assert_eq!(broker.dropped_dead_letters(), 1, "the rejected message of `plain` had nowhere to go");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_leaves_the_queue_and_purge_empties_it() {
    let broker = broker_with(vec![QueueSpec::durable("orders")]).await;
    for n in 0..3 {
        broker.publish(to_queue("orders", &n.to_string())).await.expect("publish");
    }
    assert_eq!(broker.peek("orders", 2).expect("peek"), vec![message("0"), message("1")]);
    assert_eq!(broker.queue_depth("orders").expect("depth"), 3);
    assert_eq!(broker.purge("orders").expect("purge"), 3);
    assert_eq!(broker.queue_depth("orders").expect("depth"), 0);
    assert!(matches!(broker.peek("missing", 1), Err(TransportError::NotFound(_))));
    assert!(matches!(broker.delete_queue("missing"), Err(TransportError::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declaration_is_all_or_nothing() {
    let broker = MemoryTransport::new();
    let topology = Topology {
        exchanges: vec![ExchangeSpec { name: "orders".into(), kind: ExchangeKind::Headers, durable: true }],
        queues: vec![QueueSpec::durable("billing")],
        bindings: vec![Binding {
            exchange: "orders".into(),
            queue: "billing".into(),
            routing_key: "x-match=most".into(),
        }],
    };
    let error = broker.declare(&topology).await.expect_err("bad headers binding");
    assert!(matches!(error, TransportError::Invalid { what: "headers binding", .. }), "{error}");
    assert!(matches!(broker.queue_depth("billing"), Err(TransportError::NotFound(_))), "the queue was created anyway");
    let unknown = Topology {
        bindings: vec![Binding { exchange: "nowhere".into(), queue: "billing".into(), routing_key: String::new() }],
        ..topology
    };
    assert!(matches!(broker.declare(&unknown).await, Err(TransportError::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_works_while_disconnected_but_the_operator_view() {
    let broker = broker_with(vec![QueueSpec::durable("orders")]).await;
    broker.disconnect();
    assert!(!broker.is_connected());
    let topology = Topology::default();
    assert!(matches!(broker.declare(&topology).await, Err(TransportError::ConnectionLost(_))));
    assert!(matches!(broker.consume("orders", prefetch(1)).await, Err(TransportError::ConnectionLost(_))));
    assert_eq!(broker.queue_depth("orders").expect("depth"), 0);
    broker.reconnect();
    broker.publish(to_queue("orders", "back")).await.expect("publish after reconnect");
}
