//! Reliability of the bus over a real RabbitMQ broker (`HEXERACT_AMQP_URL`,
//! and `HEXERACT_PG_URL` for the shutdown case): what happens when things
//! go wrong under a running system, asserted on outcomes counted from the
//! broker or the database.
//!
//! - a queue deleted under its consumer is declared again and consumed;
//! - a poison message is dead-lettered after `max_attempts`, with its
//!   headers and backoff between attempts, while the rest keep flowing;
//! - malformed input published raw is dead-lettered with a reason;
//! - a handler panic redelivers the message and restarts the handler;
//! - shutdown with 500 messages prefetched loses none of them;
//! - connecting to nothing, to a silent port or with a wrong password fails
//!   with a typed error within the connect timeout, password never shown;
//! - a conflicting declaration names the property and breaks nothing;
//! - the connection actor reconnects after a drop with no traffic at all,
//!   and declares again what an operator deleted meanwhile.
//!
//! Every case uses its own queues and exchange (brokers keep durable
//! queues between runs) and deletes them when it passes. The broker-restart
//! case is in `rabbitmq_broker_restart.rs`: it would break the cases here.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU16;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use hexeract::bus::rabbitmq::{ConnectError, RabbitConfig, RabbitTransport};
use hexeract::bus::{
    ConsumerConfig, Destination, ExchangeKind, ExchangeSpec, Outgoing, QueueSpec, SubscriptionEvent, Topology,
    Transport, TransportError, WireMessage, dead_letter_queue, wire,
};
use hexeract::outbox::RelayConfig;
use hexeract::storage::{InboxOutcome, StorageConfig, TableName, sqlx};
use hexeract::{
    Backoff, BoxError, Codec, Context, Envelope, HandlerActor, Handles, Hexeract, Message, MessageId, RestartPolicy,
    Routes, System,
};
use hexeract_integration::{service_url, unique, within};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};

const LIMIT: Duration = Duration::from_secs(120);

// ---- shared helpers -------------------------------------------------------------

fn amqp_url() -> Option<String> {
    service_url("HEXERACT_AMQP_URL", "RabbitMQ")
}

async fn connect(url: &str) -> Arc<RabbitTransport> {
    let transport = RabbitTransport::connect_url(url)
        .await
        .unwrap_or_else(|error| panic!("HEXERACT_AMQP_URL is set but RabbitMQ is unreachable: {error}"));
    Arc::new(transport)
}

/// A queue name chosen once per run, for a handler whose `routes` must name
/// it as `&'static str`.
fn queue_name(slot: &'static OnceLock<String>, tag: &str) -> &'static str {
    slot.get_or_init(|| unique(tag)).as_str()
}

/// Implements the handler traits `#[handler(queue = "...")]` would, for a
/// queue named at run time: `$actor::on` handles `$message` from `$queue`.
macro_rules! consumes {
    ($actor:ty, $name:literal, $message:ty, $queue:expr) => {
        impl HandlerActor for $actor {
            const NAME: &'static str = $name;

            fn routes(routes: &mut Routes<Self>) {
                routes.subscribe::<$message>($queue);
            }
        }

        impl Handles<$message> for $actor {
            type Result = Result<(), BoxError>;

            fn handle<'a>(
                &'a mut self,
                message: $message,
                ctx: &'a Context,
            ) -> impl Future<Output = Self::Result> + Send + 'a {
                self.on(message, ctx)
            }
        }
    };
}

/// Quick restarts, and room for many of them.
fn restart_policy() -> RestartPolicy {
    RestartPolicy::default()
        .backoff(Backoff::new(Duration::from_millis(20), Duration::from_millis(200)).expect("valid backoff"))
        .intensity(100, Duration::from_secs(60))
        .expect("valid intensity")
}

async fn start<H: HandlerActor + Clone>(
    rabbit: &Arc<RabbitTransport>,
    exchange: &str,
    consumer: ConsumerConfig,
    handler: H,
) -> System {
    Hexeract::builder()
        .transport(Arc::clone(rabbit))
        .relay(RelayConfig::default().exchange(exchange))
        .consumer(consumer)
        .restart_policy(restart_policy())
        .handler(handler)
        .start()
        .await
        .expect("the system starts")
}

/// Publishes `event` to `exchange` under its wire name, confirmed.
async fn publish<M: Message + Serialize>(system: &System, exchange: &str, event: &M) {
    let envelope = Envelope::encode(event, Codec::Json).expect("encodes");
    let outgoing = Outgoing {
        destination: Destination::Exchange { exchange: exchange.into(), routing_key: M::NAME.into() },
        message: WireMessage::from_envelope(&envelope),
        delay: None,
    };
    system.publisher().expect("the system has a bus").publish(outgoing).await.expect("confirmed");
}

/// Polls `check` every 20 ms until it holds or `limit` passes; returns
/// whether it held.
async fn until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn depth(rabbit: &RabbitTransport, queue: &str) -> Option<u32> {
    rabbit.queue_depth(queue).await.ok()
}

fn restarts(system: &System, path: &str) -> u64 {
    system.metrics().actor(path).map_or(0, |actor| actor.restarts)
}

/// Deletes what a case left on the broker: its queue, dead-letter queue,
/// retry tiers and exchange.
async fn remove_from_broker(url: &str, queue: &str, exchange: &str) {
    let Ok(connection) = Connection::connect(url, ConnectionProperties::default()).await else { return };
    let mut names = vec![queue.to_owned(), dead_letter_queue(queue)];
    names.extend((0..24).map(|power| format!("hexeract.delay.{}ms.{queue}", 1_u64 << power)));
    for name in names {
        // Deleting a missing queue is a no-op on RabbitMQ; a fresh channel
        // each time keeps one refusal from stopping the rest.
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await;
            let _ = channel.close(200, "done".into()).await;
        }
    }
    if let Ok(channel) = connection.create_channel().await {
        let _ = channel.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await;
    }
    let _ = connection.close(200, "done".into()).await;
}

/// id → (attempt, when) of each delivery.
type Deliveries = HashMap<u32, Vec<(u32, Instant)>>;

/// Every delivery a handler saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Deliveries>>);

impl Seen {
    fn record(&self, id: u32, ctx: &Context) {
        self.lock().entry(id).or_default().push((ctx.meta().attempt, Instant::now()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Deliveries> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn attempts(&self, id: u32) -> Vec<u32> {
        self.lock().get(&id).map(|seen| seen.iter().map(|(attempt, _)| *attempt).collect()).unwrap_or_default()
    }

    fn times(&self, id: u32) -> Vec<Instant> {
        self.lock().get(&id).map(|seen| seen.iter().map(|(_, at)| *at).collect()).unwrap_or_default()
    }

    fn ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.lock().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn deliveries(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

// ---- 1. a queue deleted under a running consumer ----------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "reliability.deleted.v1", notification)]
struct Deleted {
    id: u32,
}

static DELETED_QUEUE: OnceLock<String> = OnceLock::new();

fn deleted_queue() -> &'static str {
    queue_name(&DELETED_QUEUE, "reliability.deleted")
}

#[derive(Clone)]
struct DeletedConsumer {
    seen: Seen,
}

impl DeletedConsumer {
    async fn on(&self, event: Deleted, ctx: &Context) -> Result<(), BoxError> {
        self.seen.record(event.id, ctx);
        Ok(())
    }
}

consumes!(DeletedConsumer, "deleted_consumer", Deleted, deleted_queue());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_deleted_under_its_consumer_is_declared_again_and_consumed() {
    let Some(url) = amqp_url() else { return };
    within(LIMIT, async {
        let (queue, exchange) = (deleted_queue(), unique("reliability.deleted.events"));
        let rabbit = connect(&url).await;
        let seen = Seen::default();
        let system = start(&rabbit, &exchange, ConsumerConfig::default(), DeletedConsumer { seen: seen.clone() }).await;
        let consumer = format!("bus/consumer/{queue}");

        for id in 0..10 {
            publish(&system, &exchange, &Deleted { id }).await;
        }
        assert!(until(Duration::from_secs(10), || async { seen.ids().len() == 10 }).await, "{:?}", seen.ids());
        assert_eq!(restarts(&system, &consumer), 0);

        rabbit.delete_queue(queue).await.expect("the queue is deleted");
        let back = until(Duration::from_secs(20), || async {
            restarts(&system, &consumer) >= 1 && depth(&rabbit, queue).await.is_some()
        })
        .await;
        assert!(back, "the consumer was restarted and declared its queue again");

        for id in 10..20 {
            publish(&system, &exchange, &Deleted { id }).await;
        }
        assert!(
            until(Duration::from_secs(10), || async { seen.ids().len() == 20 }).await,
            "consumption resumed: {:?}",
            seen.ids()
        );
        assert_eq!(seen.deliveries(), 20, "each message handled once");
        assert!(system.escalations().is_empty(), "{:?}", system.escalations());
        assert!(until(Duration::from_secs(5), || async { depth(&rabbit, queue).await == Some(0) }).await);
        system.shutdown(Duration::from_secs(5)).await;
        remove_from_broker(&url, queue, &exchange).await;
    })
    .await;
}

// ---- 2. a poison message -------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "reliability.poison.v1", notification)]
struct Poison {
    id: u32,
}

static POISON_QUEUE: OnceLock<String> = OnceLock::new();

fn poison_queue() -> &'static str {
    queue_name(&POISON_QUEUE, "reliability.poison")
}

/// Always fails id 0.
#[derive(Clone)]
struct PoisonConsumer {
    seen: Seen,
}

impl PoisonConsumer {
    async fn on(&self, event: Poison, ctx: &Context) -> Result<(), BoxError> {
        self.seen.record(event.id, ctx);
        if event.id == 0 {
            return Err(format!("id 0 is poison (attempt {})", ctx.meta().attempt).into());
        }
        Ok(())
    }
}

consumes!(PoisonConsumer, "poison_consumer", Poison, poison_queue());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_after_max_attempts_with_backoff_and_the_rest_flow() {
    let Some(url) = amqp_url() else { return };
    within(LIMIT, async {
        let (queue, exchange) = (poison_queue(), unique("reliability.poison.events"));
        let dlq = dead_letter_queue(queue);
        let rabbit = connect(&url).await;
        let seen = Seen::default();
        let base = Duration::from_millis(500);
        let config = ConsumerConfig::default()
            .max_attempts(4)
            .backoff(Backoff::new(base, Duration::from_secs(4)).expect("valid backoff"));
        let system = start(&rabbit, &exchange, config, PoisonConsumer { seen: seen.clone() }).await;

        publish(&system, &exchange, &Poison { id: 0 }).await;
        for id in 1..=20 {
            publish(&system, &exchange, &Poison { id }).await;
        }
        assert!(
            until(Duration::from_secs(40), || async { depth(&rabbit, &dlq).await == Some(1) }).await,
            "dead-lettered; attempts so far {:?}",
            seen.attempts(0)
        );

        assert_eq!(seen.attempts(0), vec![1, 2, 3, 4], "max_attempts, then the dead-letter queue");
        let times = seen.times(0);
        let gaps: Vec<Duration> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
        let total: Duration = gaps.iter().sum();
        // Full jitter draws each delay from [0, base × 2ⁿ]: 3.5 s on average
        // here; under 100 ms would mean the retries did not wait.
        assert!(total >= Duration::from_millis(100), "attempts were not spaced: {gaps:?}");
        println!("poison attempts spaced by {gaps:?}");

        let flowed = (1..=20).all(|id| seen.attempts(id) == vec![1]);
        assert!(flowed, "the messages behind the poison were each handled once");
        let last_good = (1..=20).filter_map(|id| seen.times(id).first().copied()).max().expect("handled");
        assert!(last_good < times[3], "the messages behind the poison did not wait for it");

        let dead = rabbit.peek(&dlq, 10).await.expect("peek the dead-letter queue");
        assert_eq!(dead.len(), 1);
        let dead = &dead[0];
        let header = |name: &str| dead.headers.get(name).map(String::as_str);
        assert_eq!(dead.kind.as_deref(), Some(Poison::NAME));
        assert_eq!(header(wire::ATTEMPT), Some("4"));
        let reason = header(wire::DEAD_LETTER_REASON).expect("a reason header");
        assert!(reason.contains("4 times") && reason.contains("id 0 is poison"), "{reason}");
        assert_eq!(header(wire::ORIGINAL_EXCHANGE), Some(exchange.as_str()));
        assert_eq!(header(wire::ORIGINAL_ROUTING_KEY), Some(Poison::NAME));
        assert_eq!(header(wire::ORIGINAL_QUEUE), Some(queue));

        let snapshot = system.metrics();
        let consumer = snapshot.actor(&format!("bus/consumer/{queue}")).expect("the consumer is listed");
        assert_eq!(consumer.handled.dead_lettered, 1);
        assert_eq!(depth(&rabbit, queue).await, Some(0), "nothing left behind");
        system.shutdown(Duration::from_secs(5)).await;
        remove_from_broker(&url, queue, &exchange).await;
    })
    .await;
}

// ---- 3. malformed input published raw --------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "reliability.malformed.v1", notification)]
struct Wellformed {
    id: u32,
}

static MALFORMED_QUEUE: OnceLock<String> = OnceLock::new();

fn malformed_queue() -> &'static str {
    queue_name(&MALFORMED_QUEUE, "reliability.malformed")
}

#[derive(Clone)]
struct MalformedConsumer {
    seen: Seen,
}

impl MalformedConsumer {
    async fn on(&self, event: Wellformed, ctx: &Context) -> Result<(), BoxError> {
        self.seen.record(event.id, ctx);
        Ok(())
    }
}

consumes!(MalformedConsumer, "malformed_consumer", Wellformed, malformed_queue());

/// One raw publish: what is wrong with it, the fragment its dead-letter
/// reason must contain, and its AMQP body and properties.
struct RawCase {
    what: &'static str,
    reason: &'static str,
    body: Vec<u8>,
    properties: BasicProperties,
}

fn raw_properties(id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(id.into())
        .with_type(Wellformed::NAME.into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
}

fn header_table(name: &str, value: AMQPValue) -> FieldTable {
    let mut table = FieldTable::default();
    table.insert(name.into(), value);
    table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_raw_input_is_dead_lettered_with_a_reason_and_the_consumer_keeps_going() {
    let Some(url) = amqp_url() else { return };
    within(LIMIT, async {
        let (queue, exchange) = (malformed_queue(), unique("reliability.malformed.events"));
        let dlq = dead_letter_queue(queue);
        let rabbit = connect(&url).await;
        let seen = Seen::default();
        let system =
            start(&rabbit, &exchange, ConsumerConfig::default(), MalformedConsumer { seen: seen.clone() }).await;
        let valid = br#"{"id": 7}"#.to_vec();
        let huge = vec![b'x'; 20 * 1024 * 1024];
        let mut cases: Vec<(String, RawCase)> = Vec::new();
        let mut add = |what, reason, body: Vec<u8>, edit: fn(BasicProperties) -> BasicProperties| {
            let id = MessageId::new().to_string();
            let properties = edit(raw_properties(&id));
            cases.push((id, RawCase { what, reason, body, properties }));
        };
        add("invalid JSON", "decode", b"{not json".to_vec(), |p| p);
        add("wrong content type", "content type", valid.clone(), |p| p.with_content_type("text/plain".into()));
        add("unknown type", "no handler subscribed", valid.clone(), |p| p.with_type("reliability.unknown.v1".into()));
        add("empty body", "decode", Vec::new(), |p| p);
        add("a 20 MB body", "decode", huge, |p| p);
        add("a table header", "headers", valid.clone(), |p| {
            p.with_headers(header_table("nested", AMQPValue::FieldTable(FieldTable::default())))
        });
        add("an array header", "headers", valid.clone(), |p| {
            let array = FieldArray::from(vec![AMQPValue::LongString(LongString::from("a".as_bytes()))]);
            p.with_headers(header_table("list", AMQPValue::FieldArray(array)))
        });

        // Published with a plain AMQP client, as another service would.
        let connection = Connection::connect(&url, ConnectionProperties::default()).await.expect("raw connection");
        let channel = connection.create_channel().await.expect("raw channel");
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        for (_, case) in &cases {
            channel
                .basic_publish(
                    ShortString::from(""),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &case.body,
                    case.properties.clone(),
                )
                .await
                .expect("published")
                .await
                .expect("confirmed");
        }
        let _ = connection.close(200, "done".into()).await;
        publish(&system, &exchange, &Wellformed { id: 1 }).await;

        let expected = u32::try_from(cases.len()).expect("a few cases");
        assert!(
            until(Duration::from_secs(30), || async { depth(&rabbit, &dlq).await == Some(expected) }).await,
            "every malformed message dead-lettered; the queue holds {:?}",
            depth(&rabbit, &dlq).await
        );
        assert!(
            until(Duration::from_secs(10), || async { seen.attempts(1) == vec![1] }).await,
            "the consumer kept going"
        );
        assert_eq!(seen.ids(), vec![1], "no malformed message reached the handler");
        assert_eq!(restarts(&system, &format!("bus/consumer/{queue}")), 0, "the consumer never crashed");

        let dead = rabbit.peek(&dlq, cases.len() + 1).await.expect("peek the dead-letter queue");
        assert_eq!(dead.len(), cases.len());
        for (id, case) in &cases {
            let letter = dead
                .iter()
                .find(|letter| letter.message_id.as_deref() == Some(id.as_str()))
                .unwrap_or_else(|| panic!("{}: not in the dead-letter queue", case.what));
            let reason = letter.headers.get(wire::DEAD_LETTER_REASON).map_or("", String::as_str);
            assert!(
                reason.contains(case.reason),
                "{}: the reason `{reason}` does not mention `{}`",
                case.what,
                case.reason
            );
            assert_eq!(letter.body.len(), case.body.len(), "{}: the body is kept whole", case.what);
            println!("{:>20}: {reason}", case.what);
        }
        system.shutdown(Duration::from_secs(5)).await;
        remove_from_broker(&url, queue, &exchange).await;
    })
    .await;
}

// ---- 4. a handler panic ------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "reliability.panicky.v1", notification)]
struct Panicky {
    id: u32,
}

static PANIC_QUEUE: OnceLock<String> = OnceLock::new();

fn panic_queue() -> &'static str {
    queue_name(&PANIC_QUEUE, "reliability.panic")
}

/// Panics on the first delivery of id 0.
#[derive(Clone)]
struct PanickingConsumer {
    seen: Seen,
}

impl PanickingConsumer {
    async fn on(&self, event: Panicky, ctx: &Context) -> Result<(), BoxError> {
        self.seen.record(event.id, ctx);
        assert!(!(event.id == 0 && ctx.meta().attempt == 1), "injected: a panic on the first delivery of id 0");
        Ok(())
    }
}

consumes!(PanickingConsumer, "panicking_consumer", Panicky, panic_queue());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_panic_during_consumption_redelivers_the_message_and_restarts_the_handler() {
    let Some(url) = amqp_url() else { return };
    within(LIMIT, async {
        let (queue, exchange) = (panic_queue(), unique("reliability.panic.events"));
        let rabbit = connect(&url).await;
        let seen = Seen::default();
        let config = ConsumerConfig::default()
            .backoff(Backoff::new(Duration::from_millis(50), Duration::from_millis(500)).expect("valid backoff"));
        let system = start(&rabbit, &exchange, config, PanickingConsumer { seen: seen.clone() }).await;

        publish(&system, &exchange, &Panicky { id: 0 }).await;
        assert!(
            until(Duration::from_secs(20), || async { seen.attempts(0) == vec![1, 2] }).await,
            "redelivered after the panic and handled: {:?}",
            seen.attempts(0)
        );
        assert!(
            until(Duration::from_secs(5), || async { restarts(&system, "mediator/panicking_consumer") == 1 }).await,
            "the handler actor was restarted"
        );
        for id in 1..=10 {
            publish(&system, &exchange, &Panicky { id }).await;
        }
        assert!(
            until(Duration::from_secs(10), || async { (1..=10).all(|id| seen.attempts(id) == vec![1]) }).await,
            "still consuming after the panic: {:?}",
            seen.ids()
        );
        assert!(system.escalations().is_empty(), "nothing given up on: {:?}", system.escalations());
        assert_eq!(depth(&rabbit, &dead_letter_queue(queue)).await, Some(0), "nothing dead-lettered");
        assert!(until(Duration::from_secs(5), || async { depth(&rabbit, queue).await == Some(0) }).await);
        let report = system.shutdown(Duration::from_secs(5)).await;
        assert!(report.is_clean(), "{report}");
        remove_from_broker(&url, queue, &exchange).await;
    })
    .await;
}

// ---- 5. shutdown with 500 messages prefetched ----------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "reliability.prefetched.v1", notification)]
struct Prefetched {
    id: u32,
}

static PREFETCHED_QUEUE: OnceLock<String> = OnceLock::new();

fn prefetched_queue() -> &'static str {
    queue_name(&PREFETCHED_QUEUE, "reliability.prefetched")
}

const PROJECTION_CONSUMER: &str = "reliability_projection";

/// A projection behind the PostgreSQL inbox, slow on purpose.
#[derive(Clone)]
struct ProjectingConsumer {
    pool: sqlx::PgPool,
    inbox: hexeract::storage::postgres::PgInbox,
    projection: String,
    delay: Duration,
}

impl ProjectingConsumer {
    async fn on(&self, event: Prefetched, ctx: &Context) -> Result<(), BoxError> {
        tokio::time::sleep(self.delay).await;
        let mut tx = self.pool.begin().await?;
        if self.inbox.record(&mut tx, ctx.meta().id, PROJECTION_CONSUMER).await? == InboxOutcome::Duplicate {
            tx.commit().await?;
            ctx.mark_duplicate();
            return Ok(());
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {} (message_id, id) VALUES ($1, $2)", self.projection)))
            .bind(ctx.meta().id.to_string())
            .bind(i64::from(event.id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// (rows, distinct message ids, distinct ids) in the projection.
    async fn counts(&self) -> (i64, i64, i64) {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*), COUNT(DISTINCT message_id), COUNT(DISTINCT id) FROM {}",
            self.projection
        )))
        .fetch_one(&self.pool)
        .await
        .expect("count the projection")
    }
}

consumes!(ProjectingConsumer, "projecting_consumer", Prefetched, prefetched_queue());

fn table(tag: &str) -> TableName {
    let id = MessageId::new().0.simple().to_string();
    TableName::new(format!("hxr_{tag}_{}", &id[20..])).expect("a valid table name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_500_messages_prefetched_loses_none_of_them() {
    let Some(url) = amqp_url() else { return };
    let Some(pg_url) = service_url("HEXERACT_PG_URL", "PostgreSQL") else { return };
    within(LIMIT, async {
        let (queue, exchange) = (prefetched_queue(), unique("reliability.prefetched.events"));
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(&pg_url)
            .await
            .unwrap_or_else(|error| panic!("HEXERACT_PG_URL is set but PostgreSQL is unreachable: {error}"));
        let (outbox, inbox, projection) = (table("rel_out"), table("rel_in"), table("rel_proj"));
        let storage = StorageConfig::default().outbox(outbox.clone()).inbox(Some(inbox.clone()));
        hexeract::storage::postgres::migrate(&pool, &storage).await.expect("migrate");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {} (message_id text NOT NULL, id bigint NOT NULL)",
            projection.ansi_quoted()
        )))
        .execute(&pool)
        .await
        .expect("create the projection");
        let consumer = |delay| ProjectingConsumer {
            pool: pool.clone(),
            inbox: hexeract::storage::postgres::PgInbox::new(pool.clone(), inbox.clone()),
            projection: projection.ansi_quoted(),
            delay,
        };
        let slow = consumer(Duration::from_millis(20));
        let rabbit = connect(&url).await;
        let prefetch = NonZeroU16::new(500).expect("non-zero");
        let config = ConsumerConfig::default().prefetch(prefetch);

        let first = start(&rabbit, &exchange, config.clone(), slow.clone()).await;
        for id in 0..500 {
            publish(&first, &exchange, &Prefetched { id }).await;
        }
        assert!(until(Duration::from_secs(20), || async { slow.counts().await.0 >= 20 }).await, "consuming");
        let report = first.shutdown(Duration::from_millis(300)).await;
        let (handled_before, _, _) = slow.counts().await;
        println!("first system handled {handled_before} of 500 before shutdown: {report}");
        assert!(handled_before < 500, "the shutdown came with messages still prefetched");
        // Every delivery not acknowledged is back in the queue. A handler
        // still running when its delivery was requeued may commit after the
        // count above: that message is then both projected and ready again
        // (the inbox turns its second delivery into a duplicate), so the
        // queue holds at least the rest, never fewer.
        let unhandled = 500 - u32::try_from(handled_before).expect("at most 500");
        assert!(
            until(Duration::from_secs(10), || async {
                depth(&rabbit, queue).await.is_some_and(|ready| (unhandled..=500).contains(&ready))
            })
            .await,
            "the unhandled deliveries went back to the queue: {:?} ready, {unhandled} expected at least",
            depth(&rabbit, queue).await
        );

        let fast = consumer(Duration::ZERO);
        let second = start(&rabbit, &exchange, config, fast.clone()).await;
        assert!(
            until(Duration::from_secs(60), || async { fast.counts().await.0 >= 500 }).await,
            "a new system consumed the rest: {:?}",
            fast.counts().await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(fast.counts().await, (500, 500, 500), "every message projected exactly once");
        assert_eq!(depth(&rabbit, queue).await, Some(0));
        assert_eq!(depth(&rabbit, &dead_letter_queue(queue)).await, Some(0));
        second.shutdown(Duration::from_secs(5)).await;

        for name in [&outbox, &inbox, &projection] {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", name.ansi_quoted())))
                .execute(&pool)
                .await;
        }
        remove_from_broker(&url, queue, &exchange).await;
    })
    .await;
}

// ---- 6. connect failures ---------------------------------------------------------------------

const SECRET: &str = "s3cret-7f3a-never-shown";

/// Connects to `url` with a 2 s timeout; returns the error and how long it
/// took.
async fn failed_connect(url: &str) -> (ConnectError, Duration) {
    let config = RabbitConfig::new(url).expect("a valid URL").connect_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let error = RabbitTransport::connect(config).await.expect_err("the connect fails");
    (error, started.elapsed())
}

fn assert_secret_hidden(error: &ConnectError) {
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains(SECRET), "the password is shown: {shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_nothing_or_with_a_wrong_password_fails_typed_within_the_timeout() {
    let Some(url) = amqp_url() else { return };
    within(LIMIT, async {
        let margin = Duration::from_millis(1500);
        let timeout = Duration::from_secs(2);

        // A port nothing listens on: refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
        let (error, took) = failed_connect(&format!("amqp://guest:{SECRET}@127.0.0.1:{port}/%2f")).await;
        println!("nothing listening: {error} after {took:?}");
        assert!(matches!(error, ConnectError::Unreachable { .. }), "{error:?}");
        assert!(took < timeout + margin, "took {took:?}");
        assert_secret_hidden(&error);

        // A port that accepts and never answers: the timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = silent.local_addr().expect("address").port();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        let (error, took) = failed_connect(&format!("amqp://guest:{SECRET}@127.0.0.1:{port}/%2f")).await;
        holder.abort();
        println!("silent port: {error} after {took:?}");
        assert!(matches!(error, ConnectError::Timeout { .. }), "{error:?}");
        assert!(took >= timeout - Duration::from_millis(100) && took < timeout + margin, "took {took:?}");
        assert_secret_hidden(&error);

        // The real broker, a wrong password.
        let config = RabbitConfig::new(&url).expect("valid");
        let host_port = config.url.host_port();
        let (error, took) = failed_connect(&format!("amqp://guest:{SECRET}@{host_port}/%2f")).await;
        println!("wrong password: {error} after {took:?}");
        assert!(matches!(error, ConnectError::Refused { .. }), "{error:?}");
        assert!(took < timeout + margin, "took {took:?}");
        assert_secret_hidden(&error);
    })
    .await;
}

// ---- 7. conflicting redeclaration ---------------------------------------------------------------

fn topology_of(queue: QueueSpec) -> Topology {
    Topology { queues: vec![queue], ..Topology::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_redeclaration_names_the_property_and_leaves_the_transport_working() {
    let Some(url) = amqp_url() else { return };
    within(LIMIT, async {
        let rabbit = connect(&url).await;
        let (bounded, durable) = (unique("reliability.conflict.bounded"), unique("reliability.conflict.durable"));
        let exchange = unique("reliability.conflict.events");

        let mut spec = QueueSpec::durable(bounded.clone());
        spec.max_length = Some(10);
        rabbit.declare(&topology_of(spec.clone())).await.expect("first declaration");
        rabbit.declare(&topology_of(spec.clone())).await.expect("the same declaration again is a no-op");
        spec.max_length = Some(20);
        match rabbit.declare(&topology_of(spec)).await {
            Err(TransportError::Conflict { kind: "queue", name, property }) => {
                assert_eq!(name, bounded);
                assert!(property.contains("max_length"), "{property}");
            }
            other => panic!("expected a conflict on max_length, got {other:?}"),
        }

        rabbit.declare(&topology_of(QueueSpec::durable(durable.clone()))).await.expect("durable");
        let mut transient = QueueSpec::durable(durable.clone());
        transient.durable = false;
        match rabbit.declare(&topology_of(transient)).await {
            Err(error @ TransportError::Conflict { .. }) => {
                assert!(error.to_string().contains("durable"), "{error}");
                assert!(error.to_string().contains(&durable), "{error}");
            }
            other => panic!("expected a conflict on durable, got {other:?}"),
        }

        let topic = ExchangeSpec { name: exchange.clone(), kind: ExchangeKind::Topic, durable: true };
        rabbit.declare(&Topology { exchanges: vec![topic], ..Topology::default() }).await.expect("exchange");
        let direct = ExchangeSpec { name: exchange.clone(), kind: ExchangeKind::Direct, durable: true };
        match rabbit.declare(&Topology { exchanges: vec![direct], ..Topology::default() }).await {
            Err(TransportError::Conflict { kind: "exchange", property, .. }) => {
                assert!(property.contains("kind"), "{property}");
            }
            other => panic!("expected a conflict on the exchange kind, got {other:?}"),
        }

        // The same transport still publishes and consumes.
        let envelope = Envelope::encode(&Deleted { id: 1 }, Codec::Json).expect("encodes");
        let message = WireMessage::from_envelope(&envelope);
        let outgoing =
            Outgoing { destination: Destination::Queue(bounded.clone()), message: message.clone(), delay: None };
        rabbit.publish(outgoing).await.expect("publishing still works");
        let mut subscription =
            rabbit.consume(&bounded, NonZeroU16::new(1).expect("non-zero")).await.expect("consuming still works");
        let delivery = match tokio::time::timeout(Duration::from_secs(5), subscription.next()).await {
            Ok(SubscriptionEvent::Delivery(delivery)) => delivery,
            other => panic!("expected the message back, got {:?}", other.map(|_| "an end")),
        };
        assert_eq!(delivery.message.message_id, message.message_id);
        subscription.ack(delivery.tag).await.expect("ack");
        subscription.cancel().await.expect("cancel");
        assert_eq!(depth(&rabbit, &bounded).await, Some(0));

        remove_from_broker(&url, &bounded, &exchange).await;
        remove_from_broker(&url, &durable, &exchange).await;
    })
    .await;
}

// ---- the connection actor ----------------------------------------------------------

/// Whether `exchange` exists, asked on a connection of its own (asking
/// through the transport would itself reconnect it).
async fn exchange_exists(url: &str, exchange: &str) -> bool {
    let Ok(connection) = Connection::connect(url, ConnectionProperties::default()).await else { return false };
    let exists = match connection.create_channel().await {
        Ok(channel) => {
            let passive = ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() };
            channel
                .exchange_declare(exchange.into(), lapin::ExchangeKind::Topic, passive, FieldTable::default())
                .await
                .is_ok()
        }
        Err(_) => false,
    };
    let _ = connection.close(200, "done".into()).await;
    exists
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_actor_reconnects_without_traffic_and_declares_the_topology_again() {
    let Some(url) = amqp_url() else { return };
    within(LIMIT, async {
        let exchange = unique("reliability.connection.events");
        let rabbit = connect(&url).await;
        // No handler and no outbox: nothing but the connection actor will
        // use the connection after the drop.
        let system = Hexeract::builder()
            .transport(Arc::clone(&rabbit))
            .relay(RelayConfig::default().exchange(&exchange))
            .start()
            .await
            .expect("the system starts");
        let keeper = system.metrics().actor("bus/connection").cloned().expect("a bus/connection actor");
        assert_eq!(keeper.handled.ok, 0, "no reconnection yet");
        assert!(exchange_exists(&url, &exchange).await, "the system declared its exchange");

        // The connection drops; meanwhile an operator deletes the exchange.
        rabbit.disconnect().await;
        let connection = Connection::connect(&url, ConnectionProperties::default()).await.expect("raw connection");
        let channel = connection.create_channel().await.expect("raw channel");
        channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await.expect("deleted");
        let _ = connection.close(200, "done".into()).await;
        assert!(!exchange_exists(&url, &exchange).await, "the exchange is gone");

        // Reconnection allowed: the connection actor notices, reconnects
        // and declares the exchange again, with no publish or consumer.
        rabbit.allow_reconnect();
        let redeclared = until(Duration::from_secs(15), || exchange_exists(&url, &exchange)).await;
        assert!(redeclared, "the exchange was not declared again after the reconnection");
        let keeper = system.metrics().actor("bus/connection").cloned().expect("a bus/connection actor");
        assert!(keeper.handled.ok >= 1, "the reconnection is not in the metrics: {keeper:?}");
        assert_eq!(keeper.restarts, 0, "the connection actor restarted");

        let report = system.shutdown(Duration::from_secs(5)).await;
        assert!(report.is_clean(), "{report}");
        remove_from_broker(&url, "reliability.connection.none", &exchange).await;
    })
    .await;
}
