//! RabbitMQ benchmark: Hexeract's publisher, consumer and outbox relay, each
//! next to the raw lapin (and sqlx) loop of the same shape, measured in the
//! same run against the same broker.
//!
//! ```text
//! HEXERACT_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f \
//! HEXERACT_PG_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p hexeract-integration --bench rabbitmq
//! ```
//!
//! Skipped (exit 0, with a message) when `HEXERACT_AMQP_URL` is unset; the
//! relay part is skipped when `HEXERACT_PG_URL` is. Every round runs both
//! variants of each part, their order alternating from round to round; the
//! summary shows medians over the rounds.
//!
//! 1. **Publish**: `BENCH_MESSAGES` (20,000) messages of 1 KB (a JSON body),
//!    persistent and mandatory, straight to a durable queue, at most
//!    `BENCH_WINDOW` (256) unconfirmed at once:
//!    - *hexeract*: `System::publisher().publish(...)` from a driver that
//!      keeps `BENCH_WINDOW` publishes outstanding (each one the encoding of
//!      the envelope, the publisher actor's mailbox, the RabbitMQ transport,
//!      and its confirm); the publisher's own window is the same size;
//!    - *raw*: one lapin channel in confirm mode, a sliding window of the
//!      same size: each `basic_publish` and its confirm one future on a
//!      `FuturesUnordered`; the same properties (message id, correlation id,
//!      type, content type, timestamp, app id, delivery mode 2, the attempt
//!      and timestamp headers) and the same body, encoded per message.
//!
//!    Timed until the last confirm; the queue is then checked to hold
//!    exactly `BENCH_MESSAGES` messages, and purged. Target: ≥ 0.9 × raw.
//! 2. **Consume**: the queue is filled with `BENCH_MESSAGES` such messages
//!    (not timed), then drained with one ack per message:
//!    - *hexeract*: a system whose `#[handler(queue = ...)]` handler counts
//!      the messages; its consumer actor's prefetch (and mailbox bound) is
//!      `BENCH_PREFETCH` (64); timed from `start()` until the handler has
//!      seen every message;
//!    - *raw*: a lapin consumer with `basic.qos` of the same prefetch that
//!      decodes each body with serde_json and acks it, one ack per message,
//!      the acks' futures polled concurrently with the next deliveries.
//!
//!    Target: ≥ 0.9 × raw.
//! 3. **Relay** (PostgreSQL → RabbitMQ): `BENCH_ROWS` (20,000) pending rows
//!    bulk-inserted into an outbox table (not timed), then relayed to the
//!    `hexeract.events` exchange, where a queue is bound to their name:
//!    - *hexeract*: a system with a `PgOutbox` on the table and the RabbitMQ
//!      transport, default relay settings (100 rows a claim); timed from
//!      `start()` until the table is empty;
//!    - *raw*: a sqlx + lapin loop: claim 100 rows with a lease (`FOR UPDATE
//!      SKIP LOCKED`, committed on its own), publish the batch with
//!      pipelined confirms, delete the rows confirmed (the relay's default
//!      retention), until a claim returns nothing.
//!
//!    Both checked to leave exactly `BENCH_ROWS` messages in the queue.
//!    Target: ≥ 0.8 × raw.
//!
//! Exits non-zero when a correctness check fails (a message missing or
//! duplicated, a table not drained). A missed performance target prints
//! FAIL but exits 0.
//!
//! Knobs: `BENCH_ROUNDS` (default 5), `BENCH_MESSAGES`, `BENCH_ROWS`,
//! `BENCH_WINDOW`, `BENCH_PREFETCH`, `BENCH_ONLY` (comma list of `publish`,
//! `consume`, `relay`). A quick run: `BENCH_ROUNDS=2 BENCH_MESSAGES=3000
//! BENCH_ROWS=3000`.

use std::num::{NonZeroU16, NonZeroUsize};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use hexeract::bus::rabbitmq::{RabbitConfig, RabbitTransport};
use hexeract::bus::{
    Binding, ConsumerConfig, Destination, ExchangeKind, ExchangeSpec, Outgoing, PublisherConfig, QueueSpec, Topology,
    Transport, TransportError, WireMessage, dead_letter_queue,
};
use hexeract::outbox::RelayConfig;
use hexeract::storage::postgres::{self, PgOutbox};
use hexeract::storage::sqlx::postgres::{PgPool, PgPoolOptions};
use hexeract::storage::sqlx::types::Uuid;
use hexeract::storage::{OutboxConfig, StorageConfig, TableName};
use hexeract::{BoxError, Codec, Context, Envelope, Hexeract, Message, MessageId, handler};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};

mod support;

use support::{Failure, RawOutbox, count, drop_table, fill, flush, knob, median, unique, verdict};

const EXCHANGE: &str = "hexeract.events";
const PUBLISH_QUEUE: &str = "bench.rabbit.publish";
const CONSUME_QUEUE: &str = "bench.rabbit.consume";
const RELAY_QUEUE: &str = "bench.rabbit.relay";
const APP_ID: &str = "hexeract-bench";
const PUBLISH_TARGET: f64 = 0.9;
const CONSUME_TARGET: f64 = 0.9;
const RELAY_TARGET: f64 = 0.8;

/// The message of the publish and consume parts: 1 KB of JSON.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "bench.rabbit.blob.v1", notification)]
struct Blob {
    seq: u64,
    data: String,
}

fn blob(seq: u64) -> Blob {
    // `{"seq":N,"data":"..."}`: 1,024 bytes for a five-digit N.
    Blob { seq, data: "x".repeat(1_000) }
}

/// The name of the relayed rows (`support::fill` writes the body).
const PLACED: &str = "bench.outbox.placed.v1";

// ---- configuration ------------------------------------------------------------

struct Config {
    amqp_url: String,
    pg_url: Option<String>,
    rounds: usize,
    messages: usize,
    rows: u32,
    window: usize,
    prefetch: u16,
    only: Vec<String>,
}

impl Config {
    fn from_env(amqp_url: String) -> Result<Self, Failure> {
        let only = support::only();
        Ok(Config {
            amqp_url,
            pg_url: std::env::var("HEXERACT_PG_URL").ok().filter(|url| !url.is_empty()),
            rounds: knob("BENCH_ROUNDS", 5_usize)?.max(1),
            messages: knob("BENCH_MESSAGES", 20_000_usize)?.max(1),
            rows: knob("BENCH_ROWS", 20_000_u32)?.max(1),
            window: knob("BENCH_WINDOW", 256_usize)?.max(1),
            prefetch: knob("BENCH_PREFETCH", 64_u16)?.max(1),
            only,
        })
    }

    fn wants(&self, what: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == what)
    }
}

// ---- shared -----------------------------------------------------------------------

/// The broker objects of every part: the relay's exchange, the three queues
/// (the consumed one with the dead-letter queue the system declares for
/// it), and the bindings the relay and the handler need.
fn topology() -> Topology {
    let mut queues = vec![QueueSpec::durable(PUBLISH_QUEUE), QueueSpec::durable(RELAY_QUEUE)];
    queues.push(QueueSpec::durable(CONSUME_QUEUE));
    queues.push(QueueSpec::durable(dead_letter_queue(CONSUME_QUEUE)));
    Topology {
        exchanges: vec![ExchangeSpec { name: EXCHANGE.into(), kind: ExchangeKind::Topic, durable: true }],
        queues,
        bindings: vec![
            Binding { exchange: EXCHANGE.into(), queue: RELAY_QUEUE.into(), routing_key: PLACED.into() },
            Binding { exchange: EXCHANGE.into(), queue: CONSUME_QUEUE.into(), routing_key: Blob::NAME.into() },
        ],
    }
}

async fn purge(rabbit: &RabbitTransport, queue: &str) -> Result<(), Failure> {
    rabbit.purge_queue(queue).await.map(drop).map_err(|e| format!("purge {queue}: {e}"))
}

async fn depth(rabbit: &RabbitTransport, queue: &str) -> Result<usize, Failure> {
    rabbit.queue_depth(queue).await.map(|n| n as usize).map_err(|e| format!("depth of {queue}: {e}"))
}

/// Checks that `queue` holds exactly `expected` messages, then purges it.
async fn expect_depth(rabbit: &RabbitTransport, queue: &str, expected: usize, who: &str) -> Result<(), Failure> {
    // Confirmed messages are in the queue; the count is exact once they are.
    let found = depth(rabbit, queue).await?;
    if found != expected {
        return Err(format!("{who}: {found} messages in {queue} for {expected} sent"));
    }
    purge(rabbit, queue).await
}

async fn raw_channel(url: &str) -> Result<(Connection, Channel), Failure> {
    let connection =
        Connection::connect(url, ConnectionProperties::default()).await.map_err(|e| format!("raw connect: {e}"))?;
    let channel = connection.create_channel().await.map_err(|e| format!("raw channel: {e}"))?;
    Ok((connection, channel))
}

/// The AMQP properties Hexeract writes for `envelope`, built by hand (what
/// a careful raw publisher sets).
fn raw_properties(id: Uuid, correlation: Uuid, name: &str, created: u64) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("x-hexeract-attempt".into(), AMQPValue::LongString(LongString::from("1".as_bytes())));
    let millis = (created * 1_000).to_string();
    headers.insert("x-hexeract-timestamp-ms".into(), AMQPValue::LongString(LongString::from(millis.as_bytes())));
    BasicProperties::default()
        .with_message_id(ShortString::from(id.to_string()))
        .with_correlation_id(ShortString::from(correlation.to_string()))
        .with_type(ShortString::from(name))
        .with_content_type("application/json".into())
        .with_timestamp(created)
        .with_app_id(APP_ID.into())
        .with_delivery_mode(2)
        .with_headers(headers)
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn confirmed(confirmation: Result<Confirmation, lapin::Error>, who: &str) -> Result<(), Failure> {
    match confirmation {
        Ok(Confirmation::Ack(None)) => Ok(()),
        Ok(other) => Err(format!("{who}: not confirmed: {other:?}")),
        Err(e) => Err(format!("{who}: confirm: {e}")),
    }
}

// ---- 1. publish -------------------------------------------------------------------

fn blob_outgoing(seq: u64) -> Result<Outgoing, Failure> {
    let envelope = Envelope::encode(&blob(seq), Codec::Json).map_err(|e| e.to_string())?;
    Ok(Outgoing {
        destination: Destination::Queue(PUBLISH_QUEUE.into()),
        message: WireMessage::from_envelope(&envelope),
        delay: None,
    })
}

/// Publishes through a system's publisher actor; msgs/s.
async fn publish_hexeract(rabbit: &Arc<RabbitTransport>, config: &Config) -> Result<f64, Failure> {
    let window = NonZeroUsize::new(config.window).ok_or("window of 0")?;
    let system = Hexeract::builder()
        .transport(Arc::clone(rabbit))
        .publisher(PublisherConfig::default().window(window))
        .start()
        .await
        .map_err(|e| format!("start: {e}"))?;
    let publisher = system.publisher().ok_or("the system has no bus")?;
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for seq in 0..config.messages as u64 {
        let outgoing = blob_outgoing(seq)?;
        let publisher = publisher.clone();
        pending.push(async move { publisher.publish(outgoing).await });
        if pending.len() >= config.window
            && let Some(result) = pending.next().await
        {
            result.map_err(|e| format!("hexeract publish: {e}"))?;
        }
    }
    while let Some(result) = pending.next().await {
        result.map_err(|e| format!("hexeract publish: {e}"))?;
    }
    let elapsed = started.elapsed();
    system.shutdown(Duration::from_secs(10)).await;
    expect_depth(rabbit, PUBLISH_QUEUE, config.messages, "hexeract publish").await?;
    Ok(config.messages as f64 / elapsed.as_secs_f64())
}

/// Publishes with lapin alone; msgs/s.
async fn publish_raw(rabbit: &RabbitTransport, config: &Config) -> Result<f64, Failure> {
    let (connection, channel) = raw_channel(&config.amqp_url).await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| format!("confirm mode: {e}"))?;
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let started = Instant::now();
    // Each publish and its confirm is one future, and up to a window of
    // them run at once: the `basic_publish` calls overlap too, as in the
    // publisher actor (awaiting each `basic_publish` in turn is slower).
    let mut pending = FuturesUnordered::new();
    for seq in 0..config.messages as u64 {
        let body = serde_json::to_vec(&blob(seq)).map_err(|e| e.to_string())?;
        let id = MessageId::new().0;
        let properties = raw_properties(id, id, Blob::NAME, unix_seconds());
        let channel = &channel;
        pending.push(async move {
            let confirm = channel.basic_publish("".into(), PUBLISH_QUEUE.into(), options, &body, properties).await;
            confirmed(confirm.map_err(|e| format!("raw publish: {e}"))?.await, "raw publish")
        });
        if pending.len() >= config.window
            && let Some(result) = pending.next().await
        {
            result?;
        }
    }
    while let Some(result) = pending.next().await {
        result?;
    }
    let elapsed = started.elapsed();
    let _ = connection.close(200, "done".into()).await;
    expect_depth(rabbit, PUBLISH_QUEUE, config.messages, "raw publish").await?;
    Ok(config.messages as f64 / elapsed.as_secs_f64())
}

// ---- 2. consume -------------------------------------------------------------------

/// How many messages the handler has seen.
#[derive(Clone, Default)]
struct Consumed(Arc<AtomicUsize>);

#[handler(queue = "bench.rabbit.consume")]
async fn count_blob(blob: Blob, ctx: &Context) -> Result<(), BoxError> {
    std::hint::black_box(blob);
    ctx.state::<Consumed>()?.0.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Fills the consumed queue with `messages` messages (not timed).
async fn fill_queue(rabbit: &RabbitTransport, messages: usize) -> Result<(), Failure> {
    purge(rabbit, CONSUME_QUEUE).await?;
    let mut pending = FuturesUnordered::new();
    for seq in 0..messages as u64 {
        let mut outgoing = blob_outgoing(seq)?;
        outgoing.destination = Destination::Queue(CONSUME_QUEUE.into());
        pending.push(rabbit.publish(outgoing));
        if pending.len() >= 256
            && let Some(result) = pending.next().await
        {
            result.map_err(|e| format!("fill: {e}"))?;
        }
    }
    while let Some(result) = pending.next().await {
        result.map_err(|e| format!("fill: {e}"))?;
    }
    Ok(())
}

/// Drains the queue through a `#[handler(queue)]` consumer; msgs/s.
async fn consume_hexeract(rabbit: &Arc<RabbitTransport>, config: &Config) -> Result<f64, Failure> {
    let consumed = Consumed::default();
    let prefetch = NonZeroU16::new(config.prefetch).ok_or("prefetch of 0")?;
    let started = Instant::now();
    let system = Hexeract::builder()
        .transport(Arc::clone(rabbit))
        .consumer(ConsumerConfig::default().prefetch(prefetch))
        .state(consumed.clone())
        .handler(CountBlobHandler)
        .start()
        .await
        .map_err(|e| format!("start: {e}"))?;
    let deadline = started + Duration::from_secs(600);
    while consumed.0.load(Ordering::Relaxed) < config.messages {
        if Instant::now() > deadline {
            return Err(format!("hexeract consume: {} of {}", consumed.0.load(Ordering::Relaxed), config.messages));
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = started.elapsed();
    system.shutdown(Duration::from_secs(10)).await;
    let seen = consumed.0.load(Ordering::Relaxed);
    let left = depth(rabbit, CONSUME_QUEUE).await? + depth(rabbit, &dead_letter_queue(CONSUME_QUEUE)).await?;
    if seen != config.messages || left != 0 {
        return Err(format!("hexeract consume: {seen} handled, {left} left, of {}", config.messages));
    }
    Ok(config.messages as f64 / elapsed.as_secs_f64())
}

/// Drains the queue with a lapin consumer; msgs/s.
async fn consume_raw(rabbit: &RabbitTransport, config: &Config) -> Result<f64, Failure> {
    let started = Instant::now();
    let (connection, channel) = raw_channel(&config.amqp_url).await?;
    channel.basic_qos(config.prefetch, BasicQosOptions::default()).await.map_err(|e| format!("qos: {e}"))?;
    let mut consumer = channel
        .basic_consume(CONSUME_QUEUE.into(), "bench-raw".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .map_err(|e| format!("raw consume: {e}"))?;
    // One ack per message, sent without waiting for the previous one to be
    // written (awaiting each ack before the next delivery is slower).
    let mut acks = FuturesUnordered::new();
    let mut seen = 0;
    while seen < config.messages {
        let delivery = tokio::select! {
            Some(acked) = acks.next(), if !acks.is_empty() => {
                let acked: Result<bool, lapin::Error> = acked;
                acked.map_err(|e| format!("raw ack: {e}"))?;
                continue;
            }
            next = tokio::time::timeout(Duration::from_secs(60), consumer.next()) => match next {
                Ok(Some(Ok(delivery))) => delivery,
                Ok(Some(Err(e))) => return Err(format!("raw delivery: {e}")),
                Ok(None) | Err(_) => return Err(format!("raw consume: {seen} of {}", config.messages)),
            },
        };
        let blob: Blob = serde_json::from_slice(&delivery.data).map_err(|e| format!("raw decode: {e}"))?;
        std::hint::black_box(blob);
        acks.push(async move { delivery.ack(BasicAckOptions::default()).await });
        seen += 1;
    }
    while let Some(acked) = acks.next().await {
        acked.map_err(|e| format!("raw ack: {e}"))?;
    }
    let elapsed = started.elapsed();
    let _ = connection.close(200, "done".into()).await;
    let left = depth(rabbit, CONSUME_QUEUE).await?;
    if left != 0 {
        return Err(format!("raw consume: {left} left"));
    }
    Ok(config.messages as f64 / elapsed.as_secs_f64())
}

// ---- 3. relay ---------------------------------------------------------------------

/// Relays the table through a system; rows/s.
async fn relay_hexeract(
    pool: &PgPool,
    table: &TableName,
    rabbit: &Arc<RabbitTransport>,
    config: &Config,
) -> Result<f64, Failure> {
    let outbox =
        PgOutbox::new(pool.clone(), OutboxConfig::default().table(table.clone())).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let system = Hexeract::builder()
        .transport(Arc::clone(rabbit))
        .outbox(outbox)
        .relay(RelayConfig::default())
        .start()
        .await
        .map_err(|e| format!("start: {e}"))?;
    let deadline = started + Duration::from_secs(600);
    while count(pool, table).await? > 0 {
        if Instant::now() > deadline {
            return Err("hexeract relay: table not drained in 600 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    system.shutdown(Duration::from_secs(10)).await;
    expect_depth(rabbit, RELAY_QUEUE, config.rows as usize, "hexeract relay").await?;
    Ok(f64::from(config.rows) / elapsed.as_secs_f64())
}

/// Relays the table with a sqlx + lapin loop; rows/s.
async fn relay_raw(
    pool: &PgPool,
    table: &TableName,
    rabbit: &RabbitTransport,
    config: &Config,
) -> Result<f64, Failure> {
    let raw = RawOutbox::new(pool, table, RelayConfig::default().batch_size.get());
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let started = Instant::now();
    let (connection, channel) = raw_channel(&config.amqp_url).await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| format!("confirm mode: {e}"))?;
    let mut total = 0_usize;
    loop {
        let claimed = raw.claim().await?;
        if claimed.is_empty() {
            break;
        }
        let mut confirms = Vec::with_capacity(claimed.len());
        for row in &claimed {
            let created = row.created_at.unix_timestamp().max(0) as u64;
            let properties = raw_properties(row.id, row.correlation_id, &row.name, created);
            let confirm = channel
                .basic_publish(EXCHANGE.into(), row.name.as_str().into(), options, &row.payload, properties)
                .await
                .map_err(|e| format!("raw publish: {e}"))?;
            confirms.push(confirm);
        }
        let mut sent = Vec::with_capacity(claimed.len());
        for (row, confirm) in claimed.iter().zip(confirms) {
            confirmed(confirm.await, "raw relay")?;
            sent.push(row.id);
        }
        raw.mark_sent(&sent).await?;
        total += sent.len();
    }
    let elapsed = started.elapsed();
    let _ = connection.close(200, "done".into()).await;
    if total != config.rows as usize {
        return Err(format!("raw relay: {total} rows relayed of {}", config.rows));
    }
    expect_depth(rabbit, RELAY_QUEUE, total, "raw relay").await?;
    Ok(total as f64 / elapsed.as_secs_f64())
}

// ---- driver -----------------------------------------------------------------------

fn main() -> ExitCode {
    let Some(url) = std::env::var("HEXERACT_AMQP_URL").ok().filter(|url| !url.is_empty()) else {
        println!("SKIPPED: HEXERACT_AMQP_URL not set; the RabbitMQ benchmark needs a broker");
        return ExitCode::SUCCESS;
    };
    support::run(bench(url))
}

/// One part's figures, one entry per round.
#[derive(Default)]
struct Pair {
    hexeract: Vec<f64>,
    raw: Vec<f64>,
}

impl Pair {
    /// Keeps one run's figure and prints it, e.g. `  publish raw 20000/s;`.
    fn record(&mut self, what: &str, hexeract_turn: bool, figure: f64, unit: &str) {
        let (variant, figures) = if hexeract_turn { ("hexeract", &mut self.hexeract) } else { ("raw", &mut self.raw) };
        figures.push(figure);
        print!("  {what} {variant} {figure:.0}{unit};");
        flush();
    }

    fn summary(&self, what: &str, unit: &str, target: f64) {
        if self.hexeract.is_empty() || self.raw.is_empty() {
            return;
        }
        let (hexeract, raw) = (median(&self.hexeract), median(&self.raw));
        let ratio = hexeract / raw;
        println!(
            "  {what:<8} hexeract {hexeract:>8.0} {unit}   raw {raw:>8.0} {unit}   ratio {ratio:.2} \
             (target >= {target:.1})  {}",
            verdict(ratio >= target)
        );
    }
}

async fn bench(amqp_url: String) -> Result<(), Failure> {
    let config = Config::from_env(amqp_url)?;
    let rabbit = RabbitConfig::new(&config.amqp_url)
        .map_err(|e| e.to_string())?
        .app_id(APP_ID)
        .connect_timeout(Duration::from_secs(5));
    let rabbit = Arc::new(
        RabbitTransport::connect(rabbit)
            .await
            .map_err(|e| format!("HEXERACT_AMQP_URL is set but RabbitMQ is unreachable: {e}"))?,
    );
    rabbit.declare(&topology()).await.map_err(|e| format!("declare: {e}"))?;
    for queue in [PUBLISH_QUEUE, CONSUME_QUEUE, RELAY_QUEUE] {
        purge(&rabbit, queue).await?;
    }
    let pg = match (&config.pg_url, config.wants("relay")) {
        (Some(url), true) => {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(30))
                .connect(url)
                .await
                .map_err(|e| format!("HEXERACT_PG_URL is set but PostgreSQL is unreachable: {e}"))?;
            let table = unique("relay")?;
            postgres::migrate(&pool, &StorageConfig::default().outbox(table.clone()).inbox(None))
                .await
                .map_err(|e| format!("migrate: {e}"))?;
            Some((pool, table))
        }
        (None, true) => {
            println!("relay part SKIPPED: HEXERACT_PG_URL not set");
            None
        }
        _ => None,
    };
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!("hexeract RabbitMQ bench (broker at {})", rabbit.config().url);
    println!(
        "  tokio multi-thread runtime, 2 workers ({cores} cores seen); {} interleaved rounds; {} messages of \
         1 KB per publish/consume run (window {}, prefetch {}); {} rows per relay run",
        config.rounds, config.messages, config.window, config.prefetch, config.rows
    );
    let result = rounds(&rabbit, pg.as_ref(), &config).await;
    if let Some((pool, table)) = &pg {
        drop_table(pool, table).await?;
    }
    for queue in [PUBLISH_QUEUE, CONSUME_QUEUE, RELAY_QUEUE, &dead_letter_queue(CONSUME_QUEUE)] {
        match rabbit.delete_queue(queue).await {
            Ok(_) | Err(TransportError::NotFound(_)) => {}
            Err(e) => return Err(format!("delete {queue}: {e}")),
        }
    }
    rabbit.close().await;
    result
}

async fn rounds(
    rabbit: &Arc<RabbitTransport>,
    pg: Option<&(PgPool, TableName)>,
    config: &Config,
) -> Result<(), Failure> {
    let (mut publish, mut consume, mut relay) = (Pair::default(), Pair::default(), Pair::default());
    let started = Instant::now();
    for round in 0..config.rounds {
        print!("\nround {}/{}:", round + 1, config.rounds);
        flush();
        // Alternate the order within each pair so that neither always goes first.
        for i in 0..2 {
            let hexeract_turn = (round + i) % 2 == 0;
            if config.wants("publish") {
                let r = if hexeract_turn {
                    publish_hexeract(rabbit, config).await?
                } else {
                    publish_raw(rabbit, config).await?
                };
                publish.record("publish", hexeract_turn, r, "/s");
            }
            if config.wants("consume") {
                fill_queue(rabbit, config.messages).await?;
                let r = if hexeract_turn {
                    consume_hexeract(rabbit, config).await?
                } else {
                    consume_raw(rabbit, config).await?
                };
                consume.record("consume", hexeract_turn, r, "/s");
            }
            if let Some((pool, table)) = pg {
                fill(pool, table, PLACED, config.rows).await?;
                let r = if hexeract_turn {
                    relay_hexeract(pool, table, rabbit, config).await?
                } else {
                    relay_raw(pool, table, rabbit, config).await?
                };
                relay.record("relay", hexeract_turn, r, " rows/s");
            }
        }
    }
    println!("\n\nmedians over {} rounds ({:.0?} in all):", config.rounds, started.elapsed());
    publish.summary("publish", "msg/s", PUBLISH_TARGET);
    consume.summary("consume", "msg/s", CONSUME_TARGET);
    relay.summary("relay", "rows/s", RELAY_TARGET);
    Ok(())
}
