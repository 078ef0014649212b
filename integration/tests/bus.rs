//! The bus actors over the in-memory broker: consume, ack after success,
//! retry with backoff, dead-letter poison and malformed input, survive panics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hexeract::bus::{ConsumerConfig, Destination, MemoryTransport, Outgoing, WireMessage, dead_letter_queue, wire};
use hexeract::{Backoff, BoxError, Codec, Context, Envelope, Hexeract, Message, System, handler};
use hexeract_integration::{eventually, within};
use serde::{Deserialize, Serialize};

const LIMIT: Duration = Duration::from_secs(60);
const EXCHANGE: &str = "hexeract.events";

fn quick_consumer() -> ConsumerConfig {
    ConsumerConfig::default()
        .max_attempts(3)
        .backoff(Backoff::new(Duration::from_millis(5), Duration::from_millis(20)).expect("valid"))
}

/// What the projection saw: id → attempts at which it was delivered.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<u32, Vec<u32>>>>);

impl Seen {
    fn record(&self, id: u32, attempt: u32) {
        self.0.lock().expect("lock").entry(id).or_default().push(attempt);
    }
    fn attempts(&self, id: u32) -> Vec<u32> {
        self.0.lock().expect("lock").get(&id).cloned().unwrap_or_default()
    }
    fn ids(&self) -> usize {
        self.0.lock().expect("lock").len()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "bus.test.placed.v1", notification)]
struct Placed {
    id: u32,
}

/// Fails id 7 twice, always fails id 13, panics on the first delivery of id 21.
#[handler(queue = "bus-test.projection")]
async fn project(event: Placed, ctx: &Context) -> Result<(), BoxError> {
    let attempt = ctx.meta().attempt;
    ctx.state::<Seen>()?.record(event.id, attempt);
    match event.id {
        7 if attempt < 3 => Err(format!("transient failure on attempt {attempt}").into()),
        13 => Err("id 13 is poison".into()),
        21 if attempt == 1 => panic!("panic on the first delivery of 21"),
        _ => Ok(()),
    }
}

async fn start(memory: &MemoryTransport, seen: &Seen) -> System {
    Hexeract::builder()
        .transport(memory.clone())
        .consumer(quick_consumer())
        .restart_policy(
            hexeract::RestartPolicy::default()
                .backoff(Backoff::new(Duration::from_millis(5), Duration::from_millis(50)).expect("valid")),
        )
        .state(seen.clone())
        .handler(ProjectHandler)
        .start()
        .await
        .expect("start")
}

async fn publish(system: &System, message: WireMessage, routing_key: &str) {
    let outgoing = Outgoing {
        destination: Destination::Exchange { exchange: EXCHANGE.into(), routing_key: routing_key.into() },
        message,
        delay: None,
    };
    system.publisher().expect("bus").publish(outgoing).await.expect("confirmed");
}

async fn publish_placed(system: &System, id: u32) {
    let envelope = Envelope::encode(&Placed { id }, Codec::Json).expect("encodes");
    publish(system, WireMessage::from_envelope(&envelope), Placed::NAME).await;
}

fn dead_letters(memory: &MemoryTransport) -> Vec<WireMessage> {
    memory.peek(&dead_letter_queue("bus-test.projection"), 100).expect("dlq declared")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_handled_once_and_acked() {
    within(LIMIT, async {
        let (memory, seen) = (MemoryTransport::new(), Seen::default());
        let system = start(&memory, &seen).await;
        for id in 100..200 {
            publish_placed(&system, id).await;
        }
        assert!(eventually(Duration::from_secs(10), || seen.ids() == 100).await, "all 100 handled");
        assert!(
            eventually(Duration::from_secs(5), || memory.queue_depth("bus-test.projection").ok() == Some(0)).await,
            "all acked"
        );
        for id in 100..200 {
            assert_eq!(seen.attempts(id), vec![1], "id {id} handled exactly once");
        }
        assert!(dead_letters(&memory).is_empty());
        let report = system.shutdown(Duration::from_secs(5)).await;
        assert!(report.is_clean(), "{report}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_retried_with_its_attempt_count_until_it_succeeds() {
    within(LIMIT, async {
        let (memory, seen) = (MemoryTransport::new(), Seen::default());
        let system = start(&memory, &seen).await;
        publish_placed(&system, 7).await;
        assert!(
            eventually(Duration::from_secs(10), || seen.attempts(7) == vec![1, 2, 3]).await,
            "{:?}",
            seen.attempts(7)
        );
        assert!(dead_letters(&memory).is_empty());
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_with_its_reason_and_the_rest_keep_flowing() {
    within(LIMIT, async {
        let (memory, seen) = (MemoryTransport::new(), Seen::default());
        let system = start(&memory, &seen).await;
        publish_placed(&system, 13).await;
        for id in 300..310 {
            publish_placed(&system, id).await;
        }
        assert!(eventually(Duration::from_secs(10), || dead_letters(&memory).len() == 1).await, "dead-lettered");
        assert_eq!(seen.attempts(13), vec![1, 2, 3], "three attempts, then the dead-letter queue");
        assert!((300..310).all(|id| seen.attempts(id) == vec![1]), "messages behind the poison flowed");
        let dead = &dead_letters(&memory)[0];
        assert_eq!(dead.kind.as_deref(), Some(Placed::NAME));
        assert_eq!(dead.headers.get(wire::ATTEMPT).map(String::as_str), Some("3"));
        let reason = dead.headers.get(wire::DEAD_LETTER_REASON).expect("reason header");
        assert!(reason.contains("id 13 is poison") && reason.contains("3 times"), "{reason}");
        assert_eq!(dead.headers.get(wire::ORIGINAL_QUEUE).map(String::as_str), Some("bus-test.projection"));
        assert_eq!(dead.headers.get(wire::ORIGINAL_EXCHANGE).map(String::as_str), Some(EXCHANGE));
        let snapshot = system.metrics();
        let consumer = snapshot.actor("bus/consumer/bus-test.projection").expect("consumer listed");
        assert_eq!(consumer.handled.dead_lettered, 1);
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_dead_lettered_with_a_reason_and_the_consumer_keeps_going() {
    within(LIMIT, async {
        let (memory, seen) = (MemoryTransport::new(), Seen::default());
        let system = start(&memory, &seen).await;
        let good = WireMessage::from_envelope(&Envelope::encode(&Placed { id: 1 }, Codec::Json).expect("encodes"));
        let mut invalid_json = good.clone();
        invalid_json.body = b"{not json".to_vec();
        let mut wrong_shape = good.clone();
        wrong_shape.body = br#"{"id": "seven"}"#.to_vec();
        let mut empty_body = good.clone();
        empty_body.body = Vec::new();
        let mut wrong_content_type = good.clone();
        wrong_content_type.content_type = Some("text/plain".into());
        let mut no_id = good.clone();
        no_id.message_id = None;
        let mut bad_attempt = good.clone();
        bad_attempt.headers.insert(wire::ATTEMPT.into(), "-1".into());
        let mut unknown = good.clone();
        unknown.kind = Some("bus.test.unknown.v1".into());
        let cases = [
            (invalid_json, "cannot decode"),
            (wrong_shape, "cannot decode"),
            (empty_body, "cannot decode"),
            (wrong_content_type, "unsupported content type"),
            (no_id, "missing `message_id`"),
            (bad_attempt, "x-attempt"),
            (unknown, "no handler subscribed"),
        ];
        let expected = cases.len();
        for (message, _) in &cases {
            publish(&system, message.clone(), Placed::NAME).await;
        }
        publish_placed(&system, 2).await;
        assert!(eventually(Duration::from_secs(10), || dead_letters(&memory).len() == expected).await);
        assert!(eventually(Duration::from_secs(5), || seen.attempts(2) == vec![1]).await, "the consumer kept going");
        let reasons: Vec<String> = dead_letters(&memory)
            .iter()
            .map(|m| m.headers.get(wire::DEAD_LETTER_REASON).cloned().unwrap_or_default())
            .collect();
        for (_, fragment) in &cases {
            assert!(reasons.iter().any(|r| r.contains(fragment)), "no reason mentions `{fragment}`: {reasons:#?}");
        }
        assert!(seen.attempts(1).is_empty(), "no malformed message reached the handler");
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_panic_during_consumption_is_retried_not_lost() {
    within(LIMIT, async {
        let (memory, seen) = (MemoryTransport::new(), Seen::default());
        let system = start(&memory, &seen).await;
        publish_placed(&system, 21).await;
        assert!(
            eventually(Duration::from_secs(10), || seen.attempts(21) == vec![1, 2]).await,
            "{:?}",
            seen.attempts(21)
        );
        publish_placed(&system, 22).await;
        assert!(eventually(Duration::from_secs(10), || seen.attempts(22) == vec![1]).await, "still consuming");
        let restarted = eventually(Duration::from_secs(5), || {
            system.metrics().actor("mediator/project").is_some_and(|a| a.restarts == 1)
        })
        .await;
        assert!(restarted, "the handler actor was restarted");
        assert!(dead_letters(&memory).is_empty());
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}
