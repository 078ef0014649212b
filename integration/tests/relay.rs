//! The outbox relay end to end, through the real system: a real outbox
//! store, `Hexeract::builder()` with `.outbox(store).relay(..)`, the
//! in-memory broker, and `#[handler(queue = "...")]` consumers bound to the
//! events' wire names on `hexeract.events`.
//!
//! Every case runs on SQLite (a temporary file per test), on PostgreSQL when
//! `HEXERACT_PG_URL` is set and on MariaDB/MySQL when `HEXERACT_MYSQL_URL`
//! is set. An unset URL prints `SKIPPED: …` and the case passes, unless
//! `CI=true`: then it fails. Each test has its own tables (uniquely named),
//! its own broker and its own system, so tests run in parallel; each
//! scenario has its own message names and queues.
//!
//! - committed saves are relayed and consumed exactly once, rolled-back ones
//!   never;
//! - correlation and causation chain from a mediator command, through the
//!   outbox, to the consumer;
//! - a row that can never be published goes dead after `max_attempts` with
//!   its last error, while the rows around it flow;
//! - a publisher that panics mid-batch is restarted and loses nothing;
//! - shutdown mid-relay leaves no row leased, and a second system delivers
//!   the rest at once;
//! - the inbox turns a redelivered message id into one side effect and one
//!   `duplicate` in the metrics.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Write as _;
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hexeract::bus::{
    Capabilities, ConsumerConfig, Destination, MemoryTransport, Outgoing, PublishError, Subscription, Topology,
    Transport, TransportError, WireMessage,
};
use hexeract::outbox::{OutboxStats, OutboxStore, RelayConfig};
use hexeract::storage::{DeadRow, InboxOutcome, OutboxConfig, SentRetention, StorageConfig, TableName, sqlx};
use hexeract::{
    Backoff, BoxError, BoxFuture, Codec, Context, Envelope, Hexeract, Message, MessageId, Metadata, RestartPolicy,
    System, handler,
};
use hexeract_integration::{eventually, within};
use serde::{Deserialize, Serialize};

const LIMIT: Duration = Duration::from_secs(120);
const EXCHANGE: &str = "hexeract.events";

// ---- what the consumers saw ---------------------------------------------------

/// One delivery as a consumer handler saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observed {
    value: u64,
    attempt: u32,
    correlation: MessageId,
    causation: Option<MessageId>,
}

/// Every delivery the consumers of one test saw, by message id.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<MessageId, Vec<Observed>>>>);

impl Seen {
    fn record(&self, ctx: &Context, value: u64) {
        let meta = ctx.meta();
        let observed =
            Observed { value, attempt: meta.attempt, correlation: meta.correlation_id, causation: meta.causation_id };
        self.lock().entry(meta.id).or_default().push(observed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MessageId, Vec<Observed>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Distinct message ids seen.
    fn distinct(&self) -> usize {
        self.lock().len()
    }

    /// Deliveries seen, duplicates included.
    fn deliveries(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn get(&self, id: MessageId) -> Vec<Observed> {
        self.lock().get(&id).cloned().unwrap_or_default()
    }

    fn ids(&self) -> HashSet<MessageId> {
        self.lock().keys().copied().collect()
    }
}

// ---- messages and handlers, one set per scenario ------------------------------

/// (a) committed and rolled-back saves.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "relay.test.committed.v1", notification)]
struct Committed {
    n: u64,
}

#[handler(queue = "relay-test.committed")]
async fn on_committed(event: Committed, ctx: &Context) -> Result<(), BoxError> {
    ctx.state::<Seen>()?.record(ctx, event.n);
    Ok(())
}

/// (b) a command whose handler saves an event in its own transaction.
#[derive(Debug, Message)]
#[message(name = "relay.test.place_order.v1", command, output = PlacedIds)]
struct PlaceOrder {
    order: u64,
}

/// What `place_order` answers: its command's id and the event's.
#[derive(Debug, Clone, Copy)]
struct PlacedIds {
    command: MessageId,
    event: MessageId,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "relay.test.order_placed.v1", notification)]
struct OrderPlaced {
    order: u64,
}

#[handler]
async fn place_order(command: PlaceOrder, ctx: &Context) -> Result<PlacedIds, BoxError> {
    let db = ctx.state::<Db>()?;
    let event = OrderPlaced { order: command.order };
    // The order row and the event, in one transaction; the event chains
    // to this command.
    let event = db.0.place_order(command.order, &event, ctx.meta().child(OrderPlaced::NAME)).await?;
    Ok(PlacedIds { command: ctx.meta().id, event })
}

#[handler(queue = "relay-test.orders")]
async fn on_order_placed(event: OrderPlaced, ctx: &Context) -> Result<(), BoxError> {
    ctx.state::<Seen>()?.record(ctx, event.order);
    Ok(())
}

/// (c) bound to no queue: every publish is `Unroutable`.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "relay.test.unroutable.v1", notification)]
struct Unroutable {
    n: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "relay.test.flowing.v1", notification)]
struct Flowing {
    n: u64,
}

#[handler(queue = "relay-test.flowing")]
async fn on_flowing(event: Flowing, ctx: &Context) -> Result<(), BoxError> {
    ctx.state::<Seen>()?.record(ctx, event.n);
    Ok(())
}

/// (d) relayed through a transport that panics once.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "relay.test.survivor.v1", notification)]
struct Survivor {
    n: u64,
}

#[handler(queue = "relay-test.survivor")]
async fn on_survivor(event: Survivor, ctx: &Context) -> Result<(), BoxError> {
    ctx.state::<Seen>()?.record(ctx, event.n);
    Ok(())
}

/// (e) relayed through a slow transport, across a shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "relay.test.slow.v1", notification)]
struct Slowly {
    n: u64,
}

#[handler(queue = "relay-test.slow")]
async fn on_slowly(event: Slowly, ctx: &Context) -> Result<(), BoxError> {
    ctx.state::<Seen>()?.record(ctx, event.n);
    Ok(())
}

/// (f) a projection behind the inbox.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "relay.test.projected.v1", notification)]
struct Projected {
    value: u64,
}

const PROJECTION: &str = "relay-test.projection";

#[handler(queue = "relay-test.projection")]
async fn project_with_inbox(event: Projected, ctx: &Context) -> Result<(), BoxError> {
    let db = ctx.state::<Db>()?;
    // The inbox record and the projection row commit together, or neither.
    match db.0.project_once(ctx.meta().id, PROJECTION, event.value).await? {
        InboxOutcome::First => {}
        InboxOutcome::Duplicate => ctx.mark_duplicate(),
    }
    ctx.state::<Seen>()?.record(ctx, event.value);
    Ok(())
}

// ---- transports with faults -----------------------------------------------

/// An outbox store whose `nth` `mark_sent` (1-based) panics: the poller
/// actor dies mid-batch, after its rows were published and before they were
/// recorded as sent.
struct PanicOnNthAck<O> {
    inner: O,
    nth: u64,
    acks: AtomicU64,
}

impl<O: OutboxStore> OutboxStore for PanicOnNthAck<O> {
    fn table(&self) -> &str {
        self.inner.table()
    }
    fn claim(
        &self,
        owner: hexeract::outbox::LeaseOwner,
        limit: NonZeroU32,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<hexeract::outbox::OutboxRecord>, hexeract::outbox::StoreError>> {
        self.inner.claim(owner, limit, lease)
    }
    fn mark_sent<'a>(
        &'a self,
        owner: hexeract::outbox::LeaseOwner,
        ids: &'a [MessageId],
    ) -> BoxFuture<'a, Result<u64, hexeract::outbox::StoreError>> {
        let count = self.acks.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(count != self.nth, "injected: mark_sent #{count} panics");
        self.inner.mark_sent(owner, ids)
    }
    fn mark_failed<'a>(
        &'a self,
        owner: hexeract::outbox::LeaseOwner,
        id: MessageId,
        error: &'a str,
        retry_after: Duration,
    ) -> BoxFuture<'a, Result<bool, hexeract::outbox::StoreError>> {
        self.inner.mark_failed(owner, id, error, retry_after)
    }
    fn mark_dead<'a>(
        &'a self,
        owner: hexeract::outbox::LeaseOwner,
        id: MessageId,
        error: &'a str,
    ) -> BoxFuture<'a, Result<bool, hexeract::outbox::StoreError>> {
        self.inner.mark_dead(owner, id, error)
    }
    fn release<'a>(
        &'a self,
        owner: hexeract::outbox::LeaseOwner,
        ids: &'a [MessageId],
    ) -> BoxFuture<'a, Result<u64, hexeract::outbox::StoreError>> {
        self.inner.release(owner, ids)
    }
    fn stats(&self) -> BoxFuture<'_, Result<OutboxStats, hexeract::outbox::StoreError>> {
        self.inner.stats()
    }
    fn wakeup(&self) -> Arc<tokio::sync::Notify> {
        self.inner.wakeup()
    }
}

/// The in-memory broker, except that the `nth` publish (1-based) panics
/// before reaching it.
struct PanicOnNth {
    inner: MemoryTransport,
    nth: u64,
    publishes: AtomicU64,
}

impl Transport for PanicOnNth {
    fn name(&self) -> &'static str {
        "memory-panics"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn declare<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<(), TransportError>> {
        self.inner.declare(topology)
    }
    fn publish(&self, message: Outgoing) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async move {
            let count = self.publishes.fetch_add(1, Ordering::SeqCst) + 1;
            if count == self.nth {
                panic!("injected: publish #{count} panics");
            }
            self.inner.publish(message).await
        })
    }
    fn consume<'a>(
        &'a self,
        queue: &'a str,
        prefetch: NonZeroU16,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, TransportError>> {
        self.inner.consume(queue, prefetch)
    }
}

/// The in-memory broker, with every publish taking `delay` first.
struct SlowPublishes {
    inner: MemoryTransport,
    delay: Duration,
}

impl Transport for SlowPublishes {
    fn name(&self) -> &'static str {
        "memory-slow"
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn declare<'a>(&'a self, topology: &'a Topology) -> BoxFuture<'a, Result<(), TransportError>> {
        self.inner.declare(topology)
    }
    fn publish(&self, message: Outgoing) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.publish(message).await
        })
    }
    fn consume<'a>(
        &'a self,
        queue: &'a str,
        prefetch: NonZeroU16,
    ) -> BoxFuture<'a, Result<Box<dyn Subscription>, TransportError>> {
        self.inner.consume(queue, prefetch)
    }
}

// ---- the dialects -------------------------------------------------------------

/// What a handler needs from the database, whatever the dialect: each
/// method is one transaction of the dialect's own pool.
trait HandlerDb: Send + Sync + 'static {
    /// Inserts an order row and saves `event` under `meta` with
    /// `outbox.save_with(&mut tx, event, meta)`, then commits.
    fn place_order<'a>(
        &'a self,
        order: u64,
        event: &'a OrderPlaced,
        meta: Metadata,
    ) -> BoxFuture<'a, Result<MessageId, BoxError>>;

    /// Records `message_id` in the inbox for `consumer` and, the first time
    /// only, inserts a projection row, then commits.
    fn project_once<'a>(
        &'a self,
        message_id: MessageId,
        consumer: &'a str,
        value: u64,
    ) -> BoxFuture<'a, Result<InboxOutcome, BoxError>>;
}

/// The handlers' view of the database (`ctx.state::<Db>()`).
#[derive(Clone)]
struct Db(Arc<dyn HandlerDb>);

/// The tables of one test.
#[derive(Clone)]
struct Tables {
    outbox: TableName,
    inbox: TableName,
    /// The application's own rows: `kind` is `order` or `projection`.
    app: TableName,
}

impl Tables {
    fn new(tag: &str) -> Self {
        Tables { outbox: unique(tag), inbox: unique(&format!("{tag}_in")), app: unique(&format!("{tag}_app")) }
    }
}

fn unique(tag: &str) -> TableName {
    // The tail of a UUIDv7 is random.
    let id = MessageId::new().0.simple().to_string();
    TableName::new(format!("hxr_{tag}_{}", &id[20..])).expect("valid test table name")
}

/// One database, and everything the cases do on it in dialect SQL.
trait Dialect: Sized + Send + Sync + 'static {
    type Outbox: OutboxStore + Clone;

    /// `None` when the dialect is skipped.
    fn connect() -> impl Future<Output = Option<Self>> + Send;
    /// Migrates the outbox and inbox tables and creates the app table.
    fn create(&self, tables: &Tables) -> impl Future<Output = ()> + Send;
    fn outbox(&self, tables: &Tables, retention: SentRetention) -> Self::Outbox;
    fn handler_db(&self, tables: &Tables) -> Db;
    /// Saves `events` in one transaction (`save` for one, `save_all` for
    /// more), then commits or rolls back.
    fn save<M: Message + Serialize + Sync>(
        &self,
        outbox: &Self::Outbox,
        events: &[M],
        commit: bool,
    ) -> impl Future<Output = Vec<MessageId>> + Send;
    /// Saves one event under `meta` and commits.
    fn save_with<M: Message + Serialize + Sync>(
        &self,
        outbox: &Self::Outbox,
        event: &M,
        meta: Metadata,
    ) -> impl Future<Output = MessageId> + Send;
    fn list_dead(&self, outbox: &Self::Outbox) -> impl Future<Output = Vec<DeadRow>> + Send;
    /// App rows of `kind`.
    fn app_rows(&self, tables: &Tables, kind: &'static str) -> impl Future<Output = i64> + Send;
    fn inbox_duplicates(&self, tables: &Tables, consumer: &str) -> impl Future<Output = u64> + Send;
    fn drop_tables(&self, tables: &Tables) -> impl Future<Output = ()> + Send;
}

/// Writes straight to the terminal: libtest does not capture it, so a
/// skipped dialect shows in a passing run.
fn announce(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "\n{line}");
}

/// The URL in `var`, or `None` (skipped) when unset outside CI.
fn database_url(var: &str, dialect: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{var} is not set and CI=true: the {dialect} relay cases must run in CI");
            }
            static ONCE: Mutex<Vec<String>> = Mutex::new(Vec::new());
            let mut seen = ONCE.lock().unwrap_or_else(PoisonError::into_inner);
            if !seen.iter().any(|v| v == var) {
                seen.push(var.to_owned());
                announce(&format!("SKIPPED: {var} not set; the {dialect} relay cases did not run"));
            }
            None
        }
    }
}

mod sqlite_dialect {
    use super::*;
    use hexeract::storage::sqlite::{self, SqliteInbox, SqliteOutbox};
    use sqlx::{AssertSqlSafe, SqlitePool};

    /// A database file in a directory of its own, removed on drop.
    pub struct Sqlite {
        pool: SqlitePool,
        dir: std::path::PathBuf,
    }

    impl Drop for Sqlite {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    struct Handlers {
        pool: SqlitePool,
        outbox: SqliteOutbox,
        inbox: SqliteInbox,
        app: String,
    }

    impl HandlerDb for Handlers {
        fn place_order<'a>(
            &'a self,
            order: u64,
            event: &'a OrderPlaced,
            meta: Metadata,
        ) -> BoxFuture<'a, Result<MessageId, BoxError>> {
            Box::pin(async move {
                let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {} (kind, ref, value) VALUES ('order', ?1, ?2)",
                    self.app
                )))
                .bind(meta.causation_id.map(|id| id.to_string()))
                .bind(order as i64)
                .execute(&mut *tx)
                .await?;
                let id = self.outbox.save_with(&mut tx, event, meta).await?;
                tx.commit().await?;
                Ok(id)
            })
        }

        fn project_once<'a>(
            &'a self,
            message_id: MessageId,
            consumer: &'a str,
            value: u64,
        ) -> BoxFuture<'a, Result<InboxOutcome, BoxError>> {
            Box::pin(async move {
                let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                let outcome = self.inbox.record(&mut tx, message_id, consumer).await?;
                if outcome == InboxOutcome::First {
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {} (kind, ref, value) VALUES ('projection', ?1, ?2)",
                        self.app
                    )))
                    .bind(message_id.to_string())
                    .bind(value as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(outcome)
            })
        }
    }

    impl Dialect for Sqlite {
        type Outbox = SqliteOutbox;

        async fn connect() -> Option<Self> {
            let id = MessageId::new().0.simple().to_string();
            let dir = std::env::temp_dir().join(format!("hexeract-relay-{id}"));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(sqlite::connect_options(dir.join("relay.db")))
                .await
                .expect("open the SQLite file");
            Some(Sqlite { pool, dir })
        }

        async fn create(&self, tables: &Tables) {
            let config = StorageConfig::default().outbox(tables.outbox.clone()).inbox(Some(tables.inbox.clone()));
            sqlite::migrate(&self.pool, &config).await.expect("migrate");
            sqlx::query(AssertSqlSafe(format!(
                "CREATE TABLE {} (kind TEXT NOT NULL, ref TEXT, value INTEGER NOT NULL)",
                tables.app.ansi_quoted()
            )))
            .execute(&self.pool)
            .await
            .expect("create the app table");
        }

        fn outbox(&self, tables: &Tables, retention: SentRetention) -> SqliteOutbox {
            let config = OutboxConfig::default().table(tables.outbox.clone()).retention(retention);
            SqliteOutbox::new(self.pool.clone(), config).expect("valid config")
        }

        fn handler_db(&self, tables: &Tables) -> Db {
            Db(Arc::new(Handlers {
                pool: self.pool.clone(),
                outbox: self.outbox(tables, SentRetention::Keep),
                inbox: SqliteInbox::new(self.pool.clone(), tables.inbox.clone()),
                app: tables.app.ansi_quoted(),
            }))
        }

        async fn save<M: Message + Serialize + Sync>(
            &self,
            outbox: &SqliteOutbox,
            events: &[M],
            commit: bool,
        ) -> Vec<MessageId> {
            let mut tx = self.pool.begin().await.expect("begin");
            let ids = if let [event] = events {
                vec![outbox.save(&mut tx, event).await.expect("save")]
            } else {
                outbox.save_all(&mut tx, events).await.expect("save_all")
            };
            if commit {
                tx.commit().await.expect("commit")
            } else {
                tx.rollback().await.expect("rollback")
            }
            ids
        }

        async fn save_with<M: Message + Serialize + Sync>(
            &self,
            outbox: &SqliteOutbox,
            event: &M,
            meta: Metadata,
        ) -> MessageId {
            let mut tx = self.pool.begin().await.expect("begin");
            let id = outbox.save_with(&mut tx, event, meta).await.expect("save_with");
            tx.commit().await.expect("commit");
            id
        }

        async fn list_dead(&self, outbox: &SqliteOutbox) -> Vec<DeadRow> {
            outbox.list_dead(100).await.expect("list_dead")
        }

        async fn app_rows(&self, tables: &Tables, kind: &'static str) -> i64 {
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM {} WHERE kind = ?1",
                tables.app.ansi_quoted()
            )))
            .bind(kind)
            .fetch_one(&self.pool)
            .await
            .expect("count")
        }

        async fn inbox_duplicates(&self, tables: &Tables, consumer: &str) -> u64 {
            SqliteInbox::new(self.pool.clone(), tables.inbox.clone()).duplicates(consumer).await.expect("duplicates")
        }

        async fn drop_tables(&self, _tables: &Tables) {
            // The whole directory goes when `self` is dropped.
        }
    }
}

mod pg_dialect {
    use super::*;
    use hexeract::storage::postgres::{self, PgInbox, PgOutbox};
    use sqlx::{AssertSqlSafe, PgPool};

    pub struct Pg {
        pool: PgPool,
    }

    struct Handlers {
        pool: PgPool,
        outbox: PgOutbox,
        inbox: PgInbox,
        app: String,
    }

    impl HandlerDb for Handlers {
        fn place_order<'a>(
            &'a self,
            order: u64,
            event: &'a OrderPlaced,
            meta: Metadata,
        ) -> BoxFuture<'a, Result<MessageId, BoxError>> {
            Box::pin(async move {
                let mut tx = self.pool.begin().await?;
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {} (kind, ref, value) VALUES ('order', $1, $2)",
                    self.app
                )))
                .bind(meta.causation_id.map(|id| id.to_string()))
                .bind(order as i64)
                .execute(&mut *tx)
                .await?;
                let id = self.outbox.save_with(&mut tx, event, meta).await?;
                tx.commit().await?;
                Ok(id)
            })
        }

        fn project_once<'a>(
            &'a self,
            message_id: MessageId,
            consumer: &'a str,
            value: u64,
        ) -> BoxFuture<'a, Result<InboxOutcome, BoxError>> {
            Box::pin(async move {
                let mut tx = self.pool.begin().await?;
                let outcome = self.inbox.record(&mut tx, message_id, consumer).await?;
                if outcome == InboxOutcome::First {
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {} (kind, ref, value) VALUES ('projection', $1, $2)",
                        self.app
                    )))
                    .bind(message_id.to_string())
                    .bind(value as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(outcome)
            })
        }
    }

    impl Dialect for Pg {
        type Outbox = PgOutbox;

        async fn connect() -> Option<Self> {
            let url = database_url("HEXERACT_PG_URL", "PostgreSQL")?;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(20))
                .connect(&url)
                .await
                .unwrap_or_else(|error| panic!("HEXERACT_PG_URL is set but PostgreSQL is unreachable: {error}"));
            Some(Pg { pool })
        }

        async fn create(&self, tables: &Tables) {
            let config = StorageConfig::default().outbox(tables.outbox.clone()).inbox(Some(tables.inbox.clone()));
            postgres::migrate(&self.pool, &config).await.expect("migrate");
            sqlx::query(AssertSqlSafe(format!(
                "CREATE TABLE {} (kind text NOT NULL, ref text, value bigint NOT NULL)",
                tables.app.ansi_quoted()
            )))
            .execute(&self.pool)
            .await
            .expect("create the app table");
        }

        fn outbox(&self, tables: &Tables, retention: SentRetention) -> PgOutbox {
            let config = OutboxConfig::default().table(tables.outbox.clone()).retention(retention);
            PgOutbox::new(self.pool.clone(), config).expect("valid config")
        }

        fn handler_db(&self, tables: &Tables) -> Db {
            Db(Arc::new(Handlers {
                pool: self.pool.clone(),
                outbox: self.outbox(tables, SentRetention::Keep),
                inbox: PgInbox::new(self.pool.clone(), tables.inbox.clone()),
                app: tables.app.ansi_quoted(),
            }))
        }

        async fn save<M: Message + Serialize + Sync>(
            &self,
            outbox: &PgOutbox,
            events: &[M],
            commit: bool,
        ) -> Vec<MessageId> {
            let mut tx = self.pool.begin().await.expect("begin");
            let ids = if let [event] = events {
                vec![outbox.save(&mut tx, event).await.expect("save")]
            } else {
                outbox.save_all(&mut tx, events).await.expect("save_all")
            };
            if commit {
                tx.commit().await.expect("commit")
            } else {
                tx.rollback().await.expect("rollback")
            }
            ids
        }

        async fn save_with<M: Message + Serialize + Sync>(
            &self,
            outbox: &PgOutbox,
            event: &M,
            meta: Metadata,
        ) -> MessageId {
            let mut tx = self.pool.begin().await.expect("begin");
            let id = outbox.save_with(&mut tx, event, meta).await.expect("save_with");
            tx.commit().await.expect("commit");
            id
        }

        async fn list_dead(&self, outbox: &PgOutbox) -> Vec<DeadRow> {
            outbox.list_dead(100).await.expect("list_dead")
        }

        async fn app_rows(&self, tables: &Tables, kind: &'static str) -> i64 {
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT count(*) FROM {} WHERE kind = $1",
                tables.app.ansi_quoted()
            )))
            .bind(kind)
            .fetch_one(&self.pool)
            .await
            .expect("count")
        }

        async fn inbox_duplicates(&self, tables: &Tables, consumer: &str) -> u64 {
            PgInbox::new(self.pool.clone(), tables.inbox.clone()).duplicates(consumer).await.expect("duplicates")
        }

        async fn drop_tables(&self, tables: &Tables) {
            for table in [&tables.outbox, &tables.inbox, &tables.app] {
                sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", table.ansi_quoted())))
                    .execute(&self.pool)
                    .await
                    .expect("drop");
                sqlx::query("DELETE FROM hexeract_migrations WHERE table_name = $1")
                    .bind(table.as_str())
                    .execute(&self.pool)
                    .await
                    .expect("forget migrations");
            }
        }
    }
}

mod mysql_dialect {
    use super::*;
    use hexeract::storage::mysql::{self, MySqlInbox, MySqlOutbox};
    use sqlx::{AssertSqlSafe, MySqlPool};

    pub struct My {
        pool: MySqlPool,
    }

    struct Handlers {
        pool: MySqlPool,
        outbox: MySqlOutbox,
        inbox: MySqlInbox,
        app: String,
    }

    impl HandlerDb for Handlers {
        fn place_order<'a>(
            &'a self,
            order: u64,
            event: &'a OrderPlaced,
            meta: Metadata,
        ) -> BoxFuture<'a, Result<MessageId, BoxError>> {
            Box::pin(async move {
                let mut tx = self.pool.begin().await?;
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {} (kind, ref, value) VALUES ('order', ?, ?)",
                    self.app
                )))
                .bind(meta.causation_id.map(|id| id.to_string()))
                .bind(order as i64)
                .execute(&mut *tx)
                .await?;
                let id = self.outbox.save_with(&mut tx, event, meta).await?;
                tx.commit().await?;
                Ok(id)
            })
        }

        fn project_once<'a>(
            &'a self,
            message_id: MessageId,
            consumer: &'a str,
            value: u64,
        ) -> BoxFuture<'a, Result<InboxOutcome, BoxError>> {
            Box::pin(async move {
                let mut tx = self.pool.begin().await?;
                let outcome = self.inbox.record(&mut tx, message_id, consumer).await?;
                if outcome == InboxOutcome::First {
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {} (kind, ref, value) VALUES ('projection', ?, ?)",
                        self.app
                    )))
                    .bind(message_id.to_string())
                    .bind(value as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(outcome)
            })
        }
    }

    impl Dialect for My {
        type Outbox = MySqlOutbox;

        async fn connect() -> Option<Self> {
            let url = database_url("HEXERACT_MYSQL_URL", "MySQL/MariaDB")?;
            let pool = sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(20))
                .connect(&url)
                .await
                .unwrap_or_else(|error| panic!("HEXERACT_MYSQL_URL is set but MySQL/MariaDB is unreachable: {error}"));
            Some(My { pool })
        }

        async fn create(&self, tables: &Tables) {
            let config = StorageConfig::default().outbox(tables.outbox.clone()).inbox(Some(tables.inbox.clone()));
            mysql::migrate(&self.pool, &config).await.expect("migrate");
            sqlx::query(AssertSqlSafe(format!(
                "CREATE TABLE {} (kind VARCHAR(16) NOT NULL, ref VARCHAR(64), value BIGINT NOT NULL) ENGINE = InnoDB",
                tables.app.backtick_quoted()
            )))
            .execute(&self.pool)
            .await
            .expect("create the app table");
        }

        fn outbox(&self, tables: &Tables, retention: SentRetention) -> MySqlOutbox {
            let config = OutboxConfig::default().table(tables.outbox.clone()).retention(retention);
            MySqlOutbox::new(self.pool.clone(), config).expect("valid config")
        }

        fn handler_db(&self, tables: &Tables) -> Db {
            Db(Arc::new(Handlers {
                pool: self.pool.clone(),
                outbox: self.outbox(tables, SentRetention::Keep),
                inbox: MySqlInbox::new(self.pool.clone(), tables.inbox.clone()),
                app: tables.app.backtick_quoted(),
            }))
        }

        async fn save<M: Message + Serialize + Sync>(
            &self,
            outbox: &MySqlOutbox,
            events: &[M],
            commit: bool,
        ) -> Vec<MessageId> {
            let mut tx = self.pool.begin().await.expect("begin");
            let ids = if let [event] = events {
                vec![outbox.save(&mut tx, event).await.expect("save")]
            } else {
                outbox.save_all(&mut tx, events).await.expect("save_all")
            };
            if commit {
                tx.commit().await.expect("commit")
            } else {
                tx.rollback().await.expect("rollback")
            }
            ids
        }

        async fn save_with<M: Message + Serialize + Sync>(
            &self,
            outbox: &MySqlOutbox,
            event: &M,
            meta: Metadata,
        ) -> MessageId {
            let mut tx = self.pool.begin().await.expect("begin");
            let id = outbox.save_with(&mut tx, event, meta).await.expect("save_with");
            tx.commit().await.expect("commit");
            id
        }

        async fn list_dead(&self, outbox: &MySqlOutbox) -> Vec<DeadRow> {
            outbox.list_dead(100).await.expect("list_dead")
        }

        async fn app_rows(&self, tables: &Tables, kind: &'static str) -> i64 {
            sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM {} WHERE kind = ?",
                tables.app.backtick_quoted()
            )))
            .bind(kind)
            .fetch_one(&self.pool)
            .await
            .expect("count")
        }

        async fn inbox_duplicates(&self, tables: &Tables, consumer: &str) -> u64 {
            MySqlInbox::new(self.pool.clone(), tables.inbox.clone()).duplicates(consumer).await.expect("duplicates")
        }

        async fn drop_tables(&self, tables: &Tables) {
            for table in [&tables.outbox, &tables.inbox, &tables.app] {
                sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", table.backtick_quoted())))
                    .execute(&self.pool)
                    .await
                    .expect("drop");
                sqlx::query("DELETE FROM hexeract_migrations WHERE table_name = ?")
                    .bind(table.as_str())
                    .execute(&self.pool)
                    .await
                    .expect("forget migrations");
            }
        }
    }
}

// ---- shared pieces of the cases -------------------------------------------------

fn backoff(base_ms: u64, cap_ms: u64) -> Backoff {
    Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(cap_ms)).expect("valid backoff")
}

/// Relays quickly: small backoffs, a short idle poll.
fn quick_relay() -> RelayConfig {
    RelayConfig::default().poll_interval(Duration::from_millis(50)).backoff(backoff(10, 50))
}

fn quick_restarts() -> RestartPolicy {
    RestartPolicy::default().backoff(backoff(5, 50))
}

fn quick_consumer() -> ConsumerConfig {
    ConsumerConfig::default().backoff(backoff(5, 50))
}

fn batch(rows: u32) -> NonZeroU32 {
    NonZeroU32::new(rows).expect("non-zero")
}

async fn stats<S: OutboxStore>(outbox: &S) -> OutboxStats {
    outbox.stats().await.expect("outbox stats")
}

/// Waits until the outbox has nothing pending or leased.
async fn wait_drained<S: OutboxStore>(outbox: &S, limit: Duration) -> OutboxStats {
    let deadline = Instant::now() + limit;
    loop {
        let now = stats(outbox).await;
        if now.pending == 0 && now.in_flight == 0 {
            return now;
        }
        assert!(Instant::now() < deadline, "the outbox did not drain within {limit:?}: {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn handled_ok(system: &System, path: &str) -> u64 {
    system.metrics().actor(path).map_or(0, |actor| actor.handled.ok)
}

async fn publish_envelope(system: &System, envelope: &Envelope) {
    let outgoing = Outgoing {
        destination: Destination::Exchange { exchange: EXCHANGE.into(), routing_key: envelope.meta.name.to_string() },
        message: WireMessage::from_envelope(envelope),
        delay: None,
    };
    system.publisher().expect("the system has a bus").publish(outgoing).await.expect("confirmed");
}

// ---- the cases ------------------------------------------------------------------

mod cases {
    use super::*;

    /// (a) 500 rows committed (490 in one transaction with `save_all`, ten
    /// with `save` in their own) are relayed and consumed exactly once; 23
    /// rows saved in rolled-back transactions are never relayed.
    pub async fn committed_rows_are_consumed_once_rolled_back_never<D: Dialect>(db: D) {
        let tables = Tables::new("committed");
        db.create(&tables).await;
        let outbox = db.outbox(&tables, SentRetention::Keep);
        let (memory, seen) = (MemoryTransport::new(), Seen::default());

        // Some rows are in the table before the system starts, some arrive
        // while it runs.
        let events: Vec<Committed> = (0..490).map(|n| Committed { n }).collect();
        let mut committed: HashSet<MessageId> = db.save(&outbox, &events, true).await.into_iter().collect();
        let rolled_back_events: Vec<Committed> = (10_000..10_020).map(|n| Committed { n }).collect();
        let mut rolled_back: HashSet<MessageId> =
            db.save(&outbox, &rolled_back_events, false).await.into_iter().collect();

        let system = Hexeract::builder()
            .transport(memory.clone())
            .outbox(outbox.clone())
            .relay(quick_relay())
            .consumer(quick_consumer())
            .state(seen.clone())
            .handler(OnCommittedHandler)
            .start()
            .await
            .expect("start");
        for n in 490..500 {
            committed.extend(db.save(&outbox, &[Committed { n }], true).await);
            if n % 3 == 0 {
                rolled_back.extend(db.save(&outbox, &[Committed { n: 20_000 + n }], false).await);
            }
        }
        assert_eq!(committed.len(), 500);
        assert_eq!(rolled_back.len(), 23);

        assert!(
            eventually(Duration::from_secs(60), || seen.distinct() >= 500).await,
            "only {} of 500 committed rows consumed",
            seen.distinct()
        );
        let drained = wait_drained(&outbox, Duration::from_secs(30)).await;
        assert_eq!((drained.sent, drained.dead), (500, 0), "{drained:?}");
        assert!(
            eventually(Duration::from_secs(10), || memory.queue_depth("relay-test.committed").ok() == Some(0)).await,
            "every delivery acked"
        );
        // Anything relayed twice would have arrived by now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(seen.ids(), committed, "exactly the committed rows were consumed");
        assert_eq!(seen.deliveries(), 500, "each committed row consumed exactly once");
        assert!(seen.ids().is_disjoint(&rolled_back), "a rolled-back row was relayed");
        let values: HashSet<u64> = seen.lock().values().map(|o| o[0].value).collect();
        assert_eq!(values, (0..500).collect::<HashSet<u64>>());
        for observed in seen.lock().values() {
            assert_eq!(observed[0].attempt, 1, "first relay attempt, first delivery");
        }

        assert_eq!(handled_ok(&system, &format!("outbox/{}", tables.outbox)), 500, "{}", system.metrics());
        assert_eq!(handled_ok(&system, "mediator/on_committed"), 500, "{}", system.metrics());
        let report = system.shutdown(Duration::from_secs(10)).await;
        assert!(report.is_clean(), "{report}");
        db.drop_tables(&tables).await;
    }

    /// (b) A command handler saves an event with
    /// `save_with(&mut tx, &event, ctx.meta().child(..))` next to its order
    /// row; the consumer sees the command's id as both correlation and
    /// causation id, and the row id as the message id.
    pub async fn correlation_and_causation_chain_from_command_to_consumer<D: Dialect>(db: D) {
        let tables = Tables::new("chain");
        db.create(&tables).await;
        let outbox = db.outbox(&tables, SentRetention::Delete);
        let seen = Seen::default();
        let system = Hexeract::builder()
            .transport(MemoryTransport::new())
            .outbox(outbox.clone())
            .relay(quick_relay())
            .consumer(quick_consumer())
            .state(seen.clone())
            .state(db.handler_db(&tables))
            .handler(PlaceOrderHandler)
            .handler(OnOrderPlacedHandler)
            .start()
            .await
            .expect("start");

        let mut placed = Vec::new();
        for order in 0..20 {
            let ids = system.mediator().send(PlaceOrder { order }).await.expect("the command succeeds");
            placed.push((order, ids));
        }
        assert!(
            eventually(Duration::from_secs(30), || seen.distinct() >= 20).await,
            "only {} of 20 events consumed",
            seen.distinct()
        );
        for (order, ids) in placed {
            assert_ne!(ids.command, ids.event);
            let observed = seen.get(ids.event);
            assert_eq!(observed.len(), 1, "event of order {order} consumed once: {observed:?}");
            let observed = observed[0];
            assert_eq!(observed.value, order);
            assert_eq!(observed.correlation, ids.command, "correlation id of order {order}'s event");
            assert_eq!(observed.causation, Some(ids.command), "causation id of order {order}'s event");
        }
        assert_eq!(db.app_rows(&tables, "order").await, 20, "the order rows committed with their events");
        wait_drained(&outbox, Duration::from_secs(10)).await;
        let report = system.shutdown(Duration::from_secs(10)).await;
        assert!(report.is_clean(), "{report}");
        db.drop_tables(&tables).await;
    }

    /// (c) A row bound to no queue fails every publish (`Unroutable`): it
    /// is dead after `max_attempts` = 3 with that error, and the rows saved
    /// around it, before and after it died, are all consumed.
    pub async fn unpublishable_row_goes_dead_while_others_flow<D: Dialect>(db: D) {
        let tables = Tables::new("poison");
        db.create(&tables).await;
        let outbox = db.outbox(&tables, SentRetention::Keep);
        let seen = Seen::default();
        let system = Hexeract::builder()
            .transport(MemoryTransport::new())
            .outbox(outbox.clone())
            .relay(quick_relay().max_attempts(3).batch_size(batch(10)))
            .consumer(quick_consumer())
            .state(seen.clone())
            .handler(OnFlowingHandler)
            .start()
            .await
            .expect("start");

        let before: Vec<Flowing> = (0..20).map(|n| Flowing { n }).collect();
        let mut flowing = db.save(&outbox, &before, true).await;
        let poison = db.save(&outbox, &[Unroutable { n: 1 }], true).await[0];
        let behind: Vec<Flowing> = (20..60).map(|n| Flowing { n }).collect();
        flowing.extend(db.save(&outbox, &behind, true).await);

        let dead = {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let now = stats(&outbox).await;
                if now.dead == 1 {
                    break now;
                }
                assert!(Instant::now() < deadline, "the unroutable row never went dead: {now:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        assert_eq!(dead.dead, 1, "{dead:?}");
        let rows = db.list_dead(&outbox).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].id, poison);
        assert_eq!(rows[0].name, Unroutable::NAME);
        assert_eq!(rows[0].attempts, 3, "dead after max_attempts: {rows:?}");
        let error = rows[0].last_error.as_deref().unwrap_or_default();
        assert!(error.contains("unroutable"), "the last error says why: {error}");

        // The poller is not stuck behind it.
        let after: Vec<Flowing> = (60..80).map(|n| Flowing { n }).collect();
        flowing.extend(db.save(&outbox, &after, true).await);
        assert!(
            eventually(Duration::from_secs(30), || seen.distinct() >= 80).await,
            "only {} of 80 flowing rows consumed",
            seen.distinct()
        );
        assert_eq!(seen.ids(), flowing.into_iter().collect::<HashSet<_>>());
        let drained = wait_drained(&outbox, Duration::from_secs(10)).await;
        assert_eq!((drained.sent, drained.dead), (80, 1), "{drained:?}");
        let poller = system.metrics();
        let poller = poller.actor(&format!("outbox/{}", tables.outbox)).expect("poller listed");
        assert_eq!(poller.handled.dead_lettered, 1, "the dead row is counted");
        assert_eq!(poller.handled.error, 3, "three failed publishes");
        let report = system.shutdown(Duration::from_secs(10)).await;
        assert!(report.is_clean(), "{report}");
        db.drop_tables(&tables).await;
    }

    /// (d) The publisher actor panics on the 37th publish (the transport
    /// panics inside it) while the poller relays 200 rows in batches of 20:
    /// its supervisor restarts it, the restart is counted, and every row is
    /// delivered.
    pub async fn publisher_panic_mid_batch_loses_nothing<D: Dialect>(db: D) {
        let tables = Tables::new("panic");
        db.create(&tables).await;
        let outbox = db.outbox(&tables, SentRetention::Keep);
        let memory = MemoryTransport::new();
        let seen = Seen::default();
        let events: Vec<Survivor> = (0..200).map(|n| Survivor { n }).collect();
        let saved: HashSet<MessageId> = db.save(&outbox, &events, true).await.into_iter().collect();

        let transport = PanicOnNth { inner: memory.clone(), nth: 37, publishes: AtomicU64::new(0) };
        let system = Hexeract::builder()
            .transport(transport)
            .outbox(outbox.clone())
            // A lease of 20 × 250 ms + 5 s: a row whose publish was lost with
            // the panic comes back quickly even if nothing released it.
            .relay(quick_relay().batch_size(batch(20)).dispatch_timeout(Duration::from_millis(250)))
            .consumer(quick_consumer())
            .restart_policy(quick_restarts())
            .state(seen.clone())
            .handler(OnSurvivorHandler)
            .start()
            .await
            .expect("start");

        assert!(
            eventually(Duration::from_secs(60), || seen.distinct() >= 200).await,
            "only {} of 200 rows delivered; {}",
            seen.distinct(),
            system.metrics()
        );
        assert_eq!(seen.ids(), saved, "every saved row delivered");
        let drained = wait_drained(&outbox, Duration::from_secs(30)).await;
        assert_eq!((drained.sent, drained.dead), (200, 0), "{drained:?}");
        let restarts = system.metrics().actor("bus/publisher").map_or(0, |actor| actor.restarts);
        assert!(restarts >= 1, "the publisher restart is counted: {}", system.metrics());
        assert!(system.escalations().is_empty(), "{:?}", system.escalations());
        let report = system.shutdown(Duration::from_secs(10)).await;
        assert!(report.is_clean(), "{report}");
        db.drop_tables(&tables).await;
    }

    /// (g) The poller itself panics mid-batch (its third acknowledgement
    /// panics, after the batch was published): its supervisor restarts it
    /// with a new lease owner, the batch's lease expires, the rows are
    /// claimed and relayed again, and none is lost.
    pub async fn poller_panic_mid_batch_loses_nothing<D: Dialect>(db: D) {
        let tables = Tables::new("pollerpanic");
        db.create(&tables).await;
        let outbox = db.outbox(&tables, SentRetention::Keep);
        let seen = Seen::default();
        let events: Vec<Survivor> = (0..200).map(|n| Survivor { n }).collect();
        let saved: HashSet<MessageId> = db.save(&outbox, &events, true).await.into_iter().collect();
        let store = PanicOnNthAck { inner: outbox.clone(), nth: 3, acks: AtomicU64::new(0) };
        let system = Hexeract::builder()
            .transport(MemoryTransport::new())
            .outbox(store)
            // Lease: 20 × 100 ms + 5 s, so the panicked batch comes back soon.
            .relay(quick_relay().batch_size(batch(20)).dispatch_timeout(Duration::from_millis(100)))
            .consumer(quick_consumer())
            .restart_policy(quick_restarts())
            .state(seen.clone())
            .handler(OnSurvivorHandler)
            .start()
            .await
            .expect("start");
        assert!(
            eventually(Duration::from_secs(60), || seen.distinct() >= 200).await,
            "only {} of 200 rows delivered; {}",
            seen.distinct(),
            system.metrics()
        );
        assert_eq!(seen.ids(), saved, "every saved row delivered");
        let drained = wait_drained(&outbox, Duration::from_secs(30)).await;
        assert_eq!((drained.sent, drained.dead, drained.in_flight), (200, 0, 0), "{drained:?}");
        let poller = format!("outbox/{}", tables.outbox);
        let restarts = system.metrics().actor(&poller).map_or(0, |actor| actor.restarts);
        assert_eq!(restarts, 1, "the poller restart is counted: {}", system.metrics());
        let report = system.shutdown(Duration::from_secs(10)).await;
        assert!(report.is_clean(), "{report}");
        db.drop_tables(&tables).await;
    }

    /// (e) Shutdown with a short deadline while a slow broker is half-way
    /// through a batch: afterwards no row is leased, every row is sent or
    /// pending, and a second system on the same table delivers the rest at
    /// once (the first one's leases would last over a minute).
    pub async fn shutdown_mid_relay_releases_every_lease<D: Dialect>(db: D) {
        let tables = Tables::new("shutdown");
        db.create(&tables).await;
        let outbox = db.outbox(&tables, SentRetention::Keep);
        let memory = MemoryTransport::new();
        let seen = Seen::default();
        const ROWS: u64 = 300;
        let events: Vec<Slowly> = (0..ROWS).map(|n| Slowly { n }).collect();
        let saved: HashSet<MessageId> = db.save(&outbox, &events, true).await.into_iter().collect();
        // Lease: 50 × 2 s + 5 s = 105 s, far beyond the test's patience.
        let relay = quick_relay().batch_size(batch(50)).dispatch_timeout(Duration::from_secs(2));
        let builder = |transport: SlowPublishes| {
            Hexeract::builder()
                .transport(transport)
                .relay(relay.clone())
                .consumer(quick_consumer())
                .publisher(
                    hexeract::bus::PublisherConfig::default().window(std::num::NonZeroUsize::new(4).expect("non-zero")),
                )
                .state(seen.clone())
                .handler(OnSlowlyHandler)
        };

        // 4 publishes at a time, 100 ms each: 40 rows/s.
        let first = builder(SlowPublishes { inner: memory.clone(), delay: Duration::from_millis(100) })
            .outbox(outbox.clone())
            .start()
            .await
            .expect("start");
        assert!(eventually(Duration::from_secs(30), || seen.distinct() >= 10).await, "relay started");
        let in_flight_before = stats(&outbox).await.in_flight;
        let started = Instant::now();
        let report = first.shutdown(Duration::from_millis(200)).await;
        let took = started.elapsed();
        let after = stats(&outbox).await;
        assert!(in_flight_before > 0, "the shutdown happened mid-batch");
        assert_eq!(after.in_flight, 0, "leases left behind by the shutdown: {after:?} (report: {report})");
        assert_eq!(after.dead, 0, "{after:?}");
        assert_eq!(after.sent + after.pending, ROWS, "every row is sent or pending: {after:?}");
        assert!(after.pending > 0, "the shutdown came before the end: {after:?}");
        assert!(took < Duration::from_secs(5), "shutdown took {took:?}");

        // A second system, fast this time, on the same table and broker.
        let second = builder(SlowPublishes { inner: memory.clone(), delay: Duration::ZERO })
            .outbox(db.outbox(&tables, SentRetention::Keep))
            .start()
            .await
            .expect("start again");
        assert!(
            eventually(Duration::from_secs(20), || seen.distinct() as u64 >= ROWS).await,
            "only {} of {ROWS} rows delivered after the restart: {:?}",
            seen.distinct(),
            // Leased rows would show here.
            stats(&outbox).await
        );
        assert_eq!(seen.ids(), saved);
        let drained = wait_drained(&outbox, Duration::from_secs(10)).await;
        assert_eq!((drained.sent, drained.dead), (ROWS, 0), "{drained:?}");
        let duplicates = seen.deliveries() - seen.distinct();
        if duplicates > 0 {
            announce(&format!("note: {duplicates} rows were delivered twice across the shutdown (at-least-once)"));
        }
        let report = second.shutdown(Duration::from_secs(10)).await;
        assert!(report.is_clean(), "{report}");
        db.drop_tables(&tables).await;
    }

    /// (f) The same envelope (same message id) published twice: the inbox
    /// lets one side effect through and the handler counts the other as
    /// `duplicate`. Then a relayed row republished by hand: one more of each.
    pub async fn inbox_skips_a_redelivered_message_id<D: Dialect>(db: D) {
        let tables = Tables::new("inbox");
        db.create(&tables).await;
        let outbox = db.outbox(&tables, SentRetention::Delete);
        let seen = Seen::default();
        let system = Hexeract::builder()
            .transport(MemoryTransport::new())
            .outbox(outbox.clone())
            .relay(quick_relay())
            .consumer(quick_consumer())
            .state(seen.clone())
            .state(db.handler_db(&tables))
            .handler(ProjectWithInboxHandler)
            .start()
            .await
            .expect("start");
        let handled = |system: &System| {
            system.metrics().actor("mediator/project_with_inbox").map(|actor| actor.handled).unwrap_or_default()
        };

        let envelope = Envelope::encode(&Projected { value: 7 }, Codec::Json).expect("encodes");
        publish_envelope(&system, &envelope).await;
        publish_envelope(&system, &envelope).await;
        assert!(
            eventually(Duration::from_secs(20), || seen.deliveries() >= 2 && {
                let h = handled(&system);
                h.ok + h.duplicate >= 2
            })
            .await,
            "both copies handled: {}",
            system.metrics()
        );
        let counts = handled(&system);
        assert_eq!((counts.ok, counts.duplicate, counts.error), (1, 1, 0), "{}", system.metrics());
        assert_eq!(seen.get(envelope.meta.id).len(), 2, "the handler ran for both copies");
        assert_eq!(db.app_rows(&tables, "projection").await, 1, "one side effect");
        assert_eq!(db.inbox_duplicates(&tables, PROJECTION).await, 1);

        // Through the outbox, then once more by hand as a broker redelivery
        // would: the relay keeps the row id as the message id.
        let meta = Metadata::root(Projected::NAME);
        let event = Projected { value: 8 };
        let id = db.save_with(&outbox, &event, meta.clone()).await;
        assert_eq!(id, meta.id);
        assert!(eventually(Duration::from_secs(20), || seen.get(id).len() == 1).await, "relayed");
        publish_envelope(&system, &Envelope::encode_with(&event, meta, Codec::Json).expect("encodes")).await;
        assert!(eventually(Duration::from_secs(20), || handled(&system).duplicate == 2).await, "{}", system.metrics());
        let counts = handled(&system);
        assert_eq!((counts.ok, counts.duplicate, counts.error), (2, 2, 0), "{}", system.metrics());
        assert_eq!(db.app_rows(&tables, "projection").await, 2);
        assert_eq!(db.inbox_duplicates(&tables, PROJECTION).await, 2);
        let report = system.shutdown(Duration::from_secs(10)).await;
        assert!(report.is_clean(), "{report}");
        db.drop_tables(&tables).await;
    }
}

macro_rules! dialect {
    ($module:ident, $dialect:ty) => {
        dialect!(@cases $module, $dialect, [
            committed_rows_are_consumed_once_rolled_back_never,
            correlation_and_causation_chain_from_command_to_consumer,
            unpublishable_row_goes_dead_while_others_flow,
            publisher_panic_mid_batch_loses_nothing,
            poller_panic_mid_batch_loses_nothing,
            shutdown_mid_relay_releases_every_lease,
            inbox_skips_a_redelivered_message_id
        ]);
    };
    (@cases $module:ident, $dialect:ty, [$($case:ident),*]) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    if let Some(db) = <$dialect as Dialect>::connect().await {
                        within(LIMIT, cases::$case(db)).await;
                    }
                }
            )*
        }
    };
}

dialect!(sqlite, sqlite_dialect::Sqlite);
dialect!(postgres, pg_dialect::Pg);
dialect!(mysql, mysql_dialect::My);

/// `Builder::migrate` creates the outbox table of a fresh database before the
/// poller needs it, and migrating twice changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builder_migrates_a_fresh_outbox_table() {
    use hexeract::storage::sqlite::{SqliteOutbox, connect_options};
    within(LIMIT, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let pool = sqlx::SqlitePool::connect_with(connect_options(dir.path().join("fresh.db"))).await.expect("pool");
        let config = OutboxConfig::default()
            .table(TableName::new("fresh_outbox").expect("valid"))
            .retention(SentRetention::Keep);
        let outbox = SqliteOutbox::new(pool.clone(), config).expect("store");
        assert!(outbox.stats().await.is_err(), "no table before the migration");
        for _ in 0..2 {
            let system = Hexeract::builder()
                .transport(MemoryTransport::new())
                .outbox(outbox.clone())
                .migrate()
                .start()
                .await
                .expect("start migrates");
            system.shutdown(Duration::from_secs(5)).await;
        }
        let mut tx = pool.begin().await.expect("tx");
        outbox.save(&mut tx, &Committed { n: 1 }).await.expect("save");
        tx.commit().await.expect("commit");
        assert_eq!(outbox.stats().await.expect("table exists").pending, 1);
    })
    .await;
}
