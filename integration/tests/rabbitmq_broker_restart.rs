//! A RabbitMQ broker restart in the middle of a stream, through the whole
//! system: 5,000 events saved in a PostgreSQL outbox, relayed by the poller
//! with confirms, consumed by a bus handler that records each message id in
//! a PostgreSQL inbox in the same transaction as its projection row. Midway
//! the broker's application is stopped (`rabbitmqctl stop_app`), left down
//! for a few seconds and started again; the same system, never restarted,
//! must then finish with every event projected exactly once.
//!
//! Needs `HEXERACT_AMQP_URL`, `HEXERACT_PG_URL` and `rabbitmqctl` (run as
//! root on the broker's host). Alone in its binary: restarting the broker
//! breaks any other test running at the same time, and cargo runs test
//! binaries one after another.

use std::future::Future;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hexeract::bus::rabbitmq::{RabbitConfig, RabbitTransport};
use hexeract::bus::{ConsumerConfig, dead_letter_queue};
use hexeract::outbox::{OutboxStore, RelayConfig};
use hexeract::storage::postgres::{PgInbox, PgOutbox};
use hexeract::storage::{InboxOutcome, OutboxConfig, SentRetention, StorageConfig, TableName, sqlx};
use hexeract::{
    Backoff, BoxError, Context, HandlerActor, HandlerOptions, Handles, Hexeract, Message, MessageId, RestartPolicy,
    Routes,
};
use hexeract_integration::{service_url, unique, within};
use serde::{Deserialize, Serialize};

const EVENTS: u32 = 5_000;
/// Events saved per outbox transaction.
const BATCH: u32 = 25;
const RABBITMQCTL: &str = "/usr/sbin/rabbitmqctl";
const CONSUMER: &str = "restart_projection";

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "restart.test.item.v1", notification)]
struct Item {
    n: u32,
}

static QUEUE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn queue() -> &'static str {
    QUEUE.get_or_init(|| unique("restart.projection")).as_str()
}

/// Projects each item once: inbox record and projection row in one
/// transaction. Written out by hand rather than with `#[handler(queue =
/// "...")]` because the queue is named per run.
#[derive(Clone)]
struct Projection {
    pool: sqlx::PgPool,
    inbox: PgInbox,
    table: String,
}

impl HandlerActor for Projection {
    const NAME: &'static str = "restart_projection";

    fn options() -> HandlerOptions {
        HandlerOptions::new().workers(4)
    }

    fn routes(routes: &mut Routes<Self>) {
        routes.subscribe::<Item>(queue());
    }
}

impl Handles<Item> for Projection {
    type Result = Result<(), BoxError>;

    async fn handle(&mut self, item: Item, ctx: &Context) -> Self::Result {
        let mut tx = self.pool.begin().await?;
        if self.inbox.record(&mut tx, ctx.meta().id, CONSUMER).await? == InboxOutcome::Duplicate {
            tx.commit().await?;
            ctx.mark_duplicate();
            return Ok(());
        }
        sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {} (message_id, n) VALUES ($1, $2)", self.table)))
            .bind(ctx.meta().id.to_string())
            .bind(i64::from(item.n))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl Projection {
    /// (rows, distinct message ids, distinct items).
    async fn counts(&self) -> (i64, i64, i64) {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*), COUNT(DISTINCT message_id), COUNT(DISTINCT n) FROM {}",
            self.table
        )))
        .fetch_one(&self.pool)
        .await
        .expect("count the projection")
    }
}

// ---- the broker ---------------------------------------------------------------

fn rabbitmqctl(command: &str) {
    let status = Command::new(RABBITMQCTL).arg(command).status();
    match status {
        Ok(status) if status.success() => {}
        other => panic!("`rabbitmqctl {command}` failed: {other:?}"),
    }
}

/// Starts the broker's application again when dropped, so that a failing
/// test never leaves the machine's broker stopped.
struct BrokerStopped;

impl BrokerStopped {
    async fn stop() -> Self {
        tokio::task::spawn_blocking(|| rabbitmqctl("stop_app")).await.expect("rabbitmqctl stop_app");
        BrokerStopped
    }

    async fn start(self) {
        tokio::task::spawn_blocking(|| rabbitmqctl("start_app")).await.expect("rabbitmqctl start_app");
        std::mem::forget(self);
    }
}

impl Drop for BrokerStopped {
    fn drop(&mut self) {
        let _ = Command::new(RABBITMQCTL).arg("start_app").status();
    }
}

// ---- the test -----------------------------------------------------------------

fn table(tag: &str) -> TableName {
    let id = MessageId::new().0.simple().to_string();
    TableName::new(format!("hxr_{tag}_{}", &id[20..])).expect("a valid table name")
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing_and_processes_everything_once() {
    let Some(amqp_url) = service_url("HEXERACT_AMQP_URL", "RabbitMQ") else { return };
    let Some(pg_url) = service_url("HEXERACT_PG_URL", "PostgreSQL") else { return };
    assert!(std::path::Path::new(RABBITMQCTL).exists(), "{RABBITMQCTL} is needed to restart the broker");
    within(Duration::from_secs(300), async {
        let started = Instant::now();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(12)
            .connect(&pg_url)
            .await
            .unwrap_or_else(|error| panic!("HEXERACT_PG_URL is set but PostgreSQL is unreachable: {error}"));
        let (outbox_table, inbox_table, projection_table) = (table("rs_out"), table("rs_in"), table("rs_proj"));
        let storage = StorageConfig::default().outbox(outbox_table.clone()).inbox(Some(inbox_table.clone()));
        hexeract::storage::postgres::migrate(&pool, &storage).await.expect("migrate");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {} (message_id text NOT NULL, n bigint NOT NULL)",
            projection_table.ansi_quoted()
        )))
        .execute(&pool)
        .await
        .expect("create the projection");
        // Sent rows are kept, so that what was relayed can be counted.
        let outbox_config = OutboxConfig::default().table(outbox_table.clone()).retention(SentRetention::Keep);
        let outbox = PgOutbox::new(pool.clone(), outbox_config).expect("valid outbox");
        let inbox = PgInbox::new(pool.clone(), inbox_table.clone());
        let projection = Projection { pool: pool.clone(), inbox: inbox.clone(), table: projection_table.ansi_quoted() };

        // Settings a user running through broker restarts would choose:
        // reconnect quickly, let consumers wait for the broker, give relayed
        // rows and deliveries enough attempts to outlast an outage, and let
        // the supervisor restart the consumer as often as it takes.
        let config = RabbitConfig::new(&amqp_url)
            .expect("valid URL")
            .connect_timeout(Duration::from_secs(3))
            .confirm_timeout(Duration::from_secs(5))
            .reconnect_backoff(Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).expect("valid"))
            .reconnect_patience(Duration::from_secs(60));
        let rabbit = Arc::new(RabbitTransport::connect(config).await.expect("RabbitMQ is reachable"));
        let exchange = unique("restart.events");
        let system = Hexeract::builder()
            .transport(Arc::clone(&rabbit))
            .outbox(outbox.clone())
            .relay(
                RelayConfig::default()
                    .exchange(exchange.clone())
                    .poll_interval(Duration::from_millis(100))
                    .dispatch_timeout(Duration::from_secs(6))
                    .max_attempts(1_000)
                    .backoff(Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).expect("valid")),
            )
            .consumer(
                ConsumerConfig::default()
                    .max_attempts(50)
                    .backoff(Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).expect("valid")),
            )
            .restart_policy(
                RestartPolicy::default()
                    .backoff(Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).expect("valid"))
                    .intensity(1_000, Duration::from_secs(60))
                    .expect("valid"),
            )
            .handler(projection.clone())
            .start()
            .await
            .expect("the system starts");

        // The application saves events in small transactions, on and on,
        // before, during and after the outage.
        let saver = {
            let (pool, outbox) = (pool.clone(), outbox.clone());
            tokio::spawn(async move {
                for first in (0..EVENTS).step_by(BATCH as usize) {
                    let items: Vec<Item> = (first..first + BATCH).map(|n| Item { n }).collect();
                    let mut tx = pool.begin().await.expect("begin");
                    outbox.save_all(&mut tx, &items).await.expect("save");
                    tx.commit().await.expect("commit");
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
            })
        };

        wait_for("a quarter of the events to be projected", Duration::from_secs(120), || async {
            projection.counts().await.0 >= i64::from(EVENTS / 4)
        })
        .await;
        let before = projection.counts().await.0;
        let stopped = BrokerStopped::stop().await;
        let down_at = Instant::now();
        let at_stop = projection.counts().await.0;
        println!("stop_app at {before} projected ({:?} in); {at_stop} projected when it returned", started.elapsed());
        tokio::time::sleep(Duration::from_secs(5)).await;
        let during = projection.counts().await.0;
        stopped.start().await;
        println!("broker started again after {:?} down; {during} projected meanwhile", down_at.elapsed());

        saver.await.expect("every event saved");
        wait_for("every event to be projected", Duration::from_secs(180), || async {
            projection.counts().await.0 >= i64::from(EVENTS)
        })
        .await;
        // Let late redeliveries arrive: they must change nothing.
        tokio::time::sleep(Duration::from_secs(2)).await;

        let (rows, ids, items) = projection.counts().await;
        let stats = outbox.stats().await.expect("outbox stats");
        let duplicates = inbox.duplicates(CONSUMER).await.expect("inbox duplicates");
        let snapshot = system.metrics();
        let consumer_restarts = snapshot.actor(&format!("bus/consumer/{}", queue())).map_or(0, |a| a.restarts);
        let lost = i64::from(EVENTS) - items;
        println!(
            "rows={rows} distinct_ids={ids} items={items} relayed={} dead={} duplicates_skipped={duplicates} \
             consumer_restarts={consumer_restarts} lost={lost} in {:?}",
            stats.sent,
            stats.dead,
            started.elapsed()
        );
        assert_eq!(lost, 0, "events lost");
        assert_eq!(rows, i64::from(EVENTS), "each event projected exactly once");
        assert_eq!(ids, i64::from(EVENTS));
        assert_eq!(stats.sent, u64::from(EVENTS), "every row relayed: {stats:?}");
        assert_eq!((stats.dead, stats.pending, stats.in_flight), (0, 0, 0), "{stats:?}");
        assert!(consumer_restarts >= 1, "the consumer lost its subscription and was restarted");
        assert!(system.escalations().is_empty(), "nothing given up on: {:?}", system.escalations());
        assert_eq!(rabbit.queue_depth(&dead_letter_queue(queue())).await.ok(), Some(0), "nothing dead-lettered");
        assert_eq!(rabbit.queue_depth(queue()).await.ok(), Some(0), "nothing left in the queue");

        let report = system.shutdown(Duration::from_secs(10)).await;
        println!("{report}");
        for name in [&outbox_table, &inbox_table, &projection_table] {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", name.ansi_quoted())))
                .execute(&pool)
                .await;
        }
        for name in [queue().to_owned(), dead_letter_queue(queue())] {
            let _ = rabbit.delete_queue(&name).await;
        }
        rabbit.close().await;
    })
    .await;
}
