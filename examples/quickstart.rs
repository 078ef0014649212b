//! Hexeract's main job, end to end: commands, a transactional outbox, a
//! relay, a bus consumer with an inbox, and the metrics.
//!
//! 1,000 orders are placed through the mediator. Each command handler writes
//! its order row and an `OrderPlaced` event in ONE database transaction. A
//! supervised poller relays the events to the bus; a consumer handler
//! projects each into a read table, recording the message id in its inbox
//! in the same transaction. Then, on purpose, 50 events are delivered a
//! second time (as a broker does after a lost acknowledgement): the inbox
//! recognises them and the projection does not change.
//!
//! The summary line is computed from the database, not from counters:
//!
//! ```text
//! orders=1000 relayed=1000 consumed=1000 duplicates_skipped=50 lost=0
//! ```
//!
//! With no configuration it uses an SQLite file in a temporary directory and
//! the in-process broker. `DATABASE_URL=postgres://…` or `mysql://…` runs the
//! same flow on that database (build with `--features postgres` or
//! `--features mysql`); `HEXERACT_AMQP_URL=amqp://…` runs it over RabbitMQ.
//! Exits non-zero if anything was lost.
//!
//! ```text
//! cargo run --example quickstart
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --example quickstart --features postgres
//! DATABASE_URL=mysql://root@127.0.0.1:3306/test cargo run --example quickstart --features mysql
//! HEXERACT_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --example quickstart
//! ```
//!
//! `--serve [ADDR]` (build with `--features prometheus`) keeps the system
//! running after the flow, placing a few orders a second, with the metrics
//! endpoint on `ADDR` (default `127.0.0.1:9464`): Prometheus text at
//! `/metrics`, the snapshot `hexeract top --connect ADDR` reads at
//! `/snapshot`. Ctrl-C stops it; the summary line is then printed as usual.
//! Arguments are read before anything is created: an unknown one, or
//! `--serve` in a build without `prometheus`, prints `error: …` and exits 2.
//!
//! ```text
//! cargo run --example quickstart --features prometheus -- --serve
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use hexeract::bus::{Destination, Outgoing, WireMessage};
use hexeract::outbox::{OutboxStore, RelayConfig};
use hexeract::storage::sqlx;
use hexeract::storage::{InboxOutcome, OutboxConfig, SentRetention, StorageConfig, TableName};
use hexeract::{BoxError, Codec, Context, Envelope, Hexeract, Message, MessageId, Metadata, handler};
use serde::{Deserialize, Serialize};

const ORDERS: u32 = 1_000;
const DUPLICATES: usize = 50;
const CONSUMER: &str = "order_projection";
/// The bus queue `project_order` consumes (as named in its `#[handler]`).
const PROJECTION_QUEUE: &str = "quickstart.projection";

// ---- messages -------------------------------------------------------------

/// Places an order.
#[derive(Debug, Message)]
#[message(name = "quickstart.place-order.v1", command, output = Placed)]
struct PlaceOrder {
    sku: String,
    qty: u32,
}

/// What placing an order returned: the order and the event saved with it.
#[derive(Debug, Clone)]
struct Placed {
    event_id: MessageId,
    event: OrderPlaced,
}

/// Saved in the outbox with the order; relayed; projected by the consumer.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "quickstart.order-placed.v1", notification)]
struct OrderPlaced {
    order_id: i64,
    sku: String,
    qty: u32,
}

// ---- handlers ---------------------------------------------------------------

/// Writes the order and its event in one transaction.
#[handler(workers = 4)]
async fn place_order(cmd: PlaceOrder, ctx: &Context) -> Result<Placed, BoxError> {
    ctx.state::<Db>()?.place_order(cmd, ctx).await
}

/// Projects each order into a read table, exactly once thanks to the inbox.
#[handler(queue = "quickstart.projection", workers = 2)]
async fn project_order(event: OrderPlaced, ctx: &Context) -> Result<(), BoxError> {
    ctx.state::<Db>()?.project(event, ctx).await
}

// ---- the database, whichever it is -------------------------------------------

/// The example's database: one arm per dialect, each with its pool, outbox
/// and inbox. The handlers above do not care which.
#[derive(Clone)]
enum Db {
    #[cfg(feature = "sqlite")]
    Sqlite {
        pool: sqlx::SqlitePool,
        outbox: hexeract::storage::sqlite::SqliteOutbox,
        inbox: hexeract::storage::sqlite::SqliteInbox,
    },
    #[cfg(feature = "postgres")]
    Postgres {
        pool: sqlx::PgPool,
        outbox: hexeract::storage::postgres::PgOutbox,
        inbox: hexeract::storage::postgres::PgInbox,
    },
    #[cfg(feature = "mysql")]
    MySql {
        pool: sqlx::MySqlPool,
        outbox: hexeract::storage::mysql::MySqlOutbox,
        inbox: hexeract::storage::mysql::MySqlInbox,
    },
}

fn storage_config() -> Result<(StorageConfig, OutboxConfig), BoxError> {
    let outbox = TableName::new("quickstart_outbox")?;
    let inbox = TableName::new("quickstart_inbox")?;
    // Sent rows are kept so that `relayed` can be counted from the table.
    let outbox_config = OutboxConfig::default().table(outbox.clone()).retention(SentRetention::Keep);
    Ok((StorageConfig::default().outbox(outbox).inbox(Some(inbox)), outbox_config))
}

/// The example's own tables, recreated on every run.
const APP_SCHEMA: [&str; 4] = [
    "DROP TABLE IF EXISTS quickstart_orders",
    "DROP TABLE IF EXISTS quickstart_projection",
    "CREATE TABLE quickstart_orders (id {ID}, sku VARCHAR(64) NOT NULL, qty INTEGER NOT NULL)",
    "CREATE TABLE quickstart_projection (order_id BIGINT PRIMARY KEY, sku VARCHAR(64) NOT NULL, qty INTEGER NOT NULL)",
];

impl Db {
    async fn connect(url: Option<&str>, dir: &std::path::Path) -> Result<Db, BoxError> {
        let (storage, outbox_config) = storage_config()?;
        match url {
            None => Self::sqlite(dir, storage, outbox_config).await,
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Self::postgres(url, storage, outbox_config).await
            }
            Some(url) if url.starts_with("mysql://") || url.starts_with("mariadb://") => {
                Self::mysql(url, storage, outbox_config).await
            }
            Some(_) => Err("DATABASE_URL must start with postgres:// or mysql://".into()),
        }
    }

    #[cfg(feature = "sqlite")]
    async fn sqlite(
        dir: &std::path::Path,
        storage: StorageConfig,
        outbox_config: OutboxConfig,
    ) -> Result<Db, BoxError> {
        let path = dir.join("quickstart.db");
        println!("database: SQLite file {}", path.display());
        let pool = sqlx::SqlitePool::connect_with(hexeract::storage::sqlite::connect_options(&path)).await?;
        hexeract::storage::sqlite::migrate(&pool, &storage).await?;
        for statement in APP_SCHEMA {
            sqlx::query(sqlx::AssertSqlSafe(statement.replace("{ID}", "INTEGER PRIMARY KEY AUTOINCREMENT")))
                .execute(&pool)
                .await?;
        }
        let outbox = hexeract::storage::sqlite::SqliteOutbox::new(pool.clone(), outbox_config)?;
        let inbox = hexeract::storage::sqlite::SqliteInbox::new(pool.clone(), TableName::new("quickstart_inbox")?);
        Ok(Db::Sqlite { pool, outbox, inbox })
    }

    #[cfg(not(feature = "sqlite"))]
    async fn sqlite(_: &std::path::Path, _: StorageConfig, _: OutboxConfig) -> Result<Db, BoxError> {
        Err("without DATABASE_URL the example uses SQLite: build with the `sqlite` feature (on by default)".into())
    }

    #[cfg(feature = "postgres")]
    async fn postgres(url: &str, storage: StorageConfig, outbox_config: OutboxConfig) -> Result<Db, BoxError> {
        println!("database: PostgreSQL");
        let pool = sqlx::PgPool::connect(url).await?;
        hexeract::storage::postgres::migrate(&pool, &storage).await?;
        for statement in APP_SCHEMA {
            sqlx::query(sqlx::AssertSqlSafe(statement.replace("{ID}", "BIGSERIAL PRIMARY KEY"))).execute(&pool).await?;
        }
        sqlx::query("DELETE FROM quickstart_outbox").execute(&pool).await?;
        sqlx::query("DELETE FROM quickstart_inbox").execute(&pool).await?;
        let outbox = hexeract::storage::postgres::PgOutbox::new(pool.clone(), outbox_config)?;
        let inbox = hexeract::storage::postgres::PgInbox::new(pool.clone(), TableName::new("quickstart_inbox")?);
        Ok(Db::Postgres { pool, outbox, inbox })
    }

    #[cfg(not(feature = "postgres"))]
    async fn postgres(_: &str, _: StorageConfig, _: OutboxConfig) -> Result<Db, BoxError> {
        Err("DATABASE_URL is a PostgreSQL URL: run with `--features postgres`".into())
    }

    #[cfg(feature = "mysql")]
    async fn mysql(url: &str, storage: StorageConfig, outbox_config: OutboxConfig) -> Result<Db, BoxError> {
        println!("database: MySQL/MariaDB");
        let pool = sqlx::MySqlPool::connect(url).await?;
        hexeract::storage::mysql::migrate(&pool, &storage).await?;
        for statement in APP_SCHEMA {
            sqlx::query(sqlx::AssertSqlSafe(statement.replace("{ID}", "BIGINT AUTO_INCREMENT PRIMARY KEY")))
                .execute(&pool)
                .await?;
        }
        sqlx::query("DELETE FROM quickstart_outbox").execute(&pool).await?;
        sqlx::query("DELETE FROM quickstart_inbox").execute(&pool).await?;
        let outbox = hexeract::storage::mysql::MySqlOutbox::new(pool.clone(), outbox_config)?;
        let inbox = hexeract::storage::mysql::MySqlInbox::new(pool.clone(), TableName::new("quickstart_inbox")?);
        Ok(Db::MySql { pool, outbox, inbox })
    }

    #[cfg(not(feature = "mysql"))]
    async fn mysql(_: &str, _: StorageConfig, _: OutboxConfig) -> Result<Db, BoxError> {
        Err("DATABASE_URL is a MySQL URL: run with `--features mysql`".into())
    }

    /// The order row and its event, in one transaction.
    async fn place_order(&self, cmd: PlaceOrder, ctx: &Context) -> Result<Placed, BoxError> {
        // The event is caused by this command and shares its correlation id.
        let meta = ctx.meta().child(OrderPlaced::NAME);
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite { pool, outbox, .. } => {
                let mut tx = pool.begin().await?;
                let order_id: i64 =
                    sqlx::query_scalar("INSERT INTO quickstart_orders (sku, qty) VALUES (?, ?) RETURNING id")
                        .bind(&cmd.sku)
                        .bind(cmd.qty)
                        .fetch_one(&mut *tx)
                        .await?;
                let event = OrderPlaced { order_id, sku: cmd.sku, qty: cmd.qty };
                let event_id = outbox.save_with(&mut tx, &event, meta).await?;
                tx.commit().await?;
                Ok(Placed { event_id, event })
            }
            #[cfg(feature = "postgres")]
            Db::Postgres { pool, outbox, .. } => {
                let mut tx = pool.begin().await?;
                let order_id: i64 =
                    sqlx::query_scalar("INSERT INTO quickstart_orders (sku, qty) VALUES ($1, $2) RETURNING id")
                        .bind(&cmd.sku)
                        .bind(i64::from(cmd.qty))
                        .fetch_one(&mut *tx)
                        .await?;
                let event = OrderPlaced { order_id, sku: cmd.sku, qty: cmd.qty };
                let event_id = outbox.save_with(&mut tx, &event, meta).await?;
                tx.commit().await?;
                Ok(Placed { event_id, event })
            }
            #[cfg(feature = "mysql")]
            Db::MySql { pool, outbox, .. } => {
                let mut tx = pool.begin().await?;
                let done = sqlx::query("INSERT INTO quickstart_orders (sku, qty) VALUES (?, ?)")
                    .bind(&cmd.sku)
                    .bind(cmd.qty)
                    .execute(&mut *tx)
                    .await?;
                let order_id = i64::try_from(done.last_insert_id())?;
                let event = OrderPlaced { order_id, sku: cmd.sku, qty: cmd.qty };
                let event_id = outbox.save_with(&mut tx, &event, meta).await?;
                tx.commit().await?;
                Ok(Placed { event_id, event })
            }
        }
    }

    /// The inbox record and the projection row, in one transaction: a
    /// duplicate delivery changes nothing but the inbox's duplicate count.
    async fn project(&self, event: OrderPlaced, ctx: &Context) -> Result<(), BoxError> {
        let id = ctx.meta().id;
        macro_rules! project_in {
            ($pool:expr, $inbox:expr, $insert:literal) => {{
                let mut tx = $pool.begin().await?;
                if $inbox.record(&mut tx, id, CONSUMER).await? == InboxOutcome::Duplicate {
                    tx.commit().await?;
                    ctx.mark_duplicate();
                    return Ok(());
                }
                sqlx::query($insert)
                    .bind(event.order_id)
                    .bind(&event.sku)
                    .bind(i64::from(event.qty))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }};
        }
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite { pool, inbox, .. } => {
                project_in!(pool, inbox, "INSERT INTO quickstart_projection (order_id, sku, qty) VALUES (?, ?, ?)")
            }
            #[cfg(feature = "postgres")]
            Db::Postgres { pool, inbox, .. } => {
                project_in!(pool, inbox, "INSERT INTO quickstart_projection (order_id, sku, qty) VALUES ($1, $2, $3)")
            }
            #[cfg(feature = "mysql")]
            Db::MySql { pool, inbox, .. } => {
                project_in!(pool, inbox, "INSERT INTO quickstart_projection (order_id, sku, qty) VALUES (?, ?, ?)")
            }
        }
    }

    /// (orders, projected) counted in the database.
    async fn counts(&self) -> Result<(i64, i64), BoxError> {
        macro_rules! counts_in {
            ($pool:expr) => {{
                let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM quickstart_orders").fetch_one($pool).await?;
                let projected: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM quickstart_projection").fetch_one($pool).await?;
                Ok((orders, projected))
            }};
        }
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite { pool, .. } => counts_in!(pool),
            #[cfg(feature = "postgres")]
            Db::Postgres { pool, .. } => counts_in!(pool),
            #[cfg(feature = "mysql")]
            Db::MySql { pool, .. } => counts_in!(pool),
        }
    }

    /// Duplicate deliveries the inbox recorded.
    async fn duplicates(&self) -> Result<u64, BoxError> {
        Ok(match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite { inbox, .. } => inbox.duplicates(CONSUMER).await?,
            #[cfg(feature = "postgres")]
            Db::Postgres { inbox, .. } => inbox.duplicates(CONSUMER).await?,
            #[cfg(feature = "mysql")]
            Db::MySql { inbox, .. } => inbox.duplicates(CONSUMER).await?,
        })
    }

    fn outbox(&self) -> Box<dyn OutboxStore> {
        match self {
            #[cfg(feature = "sqlite")]
            Db::Sqlite { outbox, .. } => Box::new(outbox.clone()),
            #[cfg(feature = "postgres")]
            Db::Postgres { outbox, .. } => Box::new(outbox.clone()),
            #[cfg(feature = "mysql")]
            Db::MySql { outbox, .. } => Box::new(outbox.clone()),
        }
    }
}

/// Waits until `check` holds, or fails after `limit`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<(), BoxError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, BoxError>>,
{
    let deadline = Instant::now() + limit;
    while !check().await? {
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The RabbitMQ broker at `url`, with the projection queue emptied of what an
/// earlier, interrupted run may have left in it (the database was reset).
#[cfg(feature = "rabbitmq")]
async fn rabbitmq(url: &str) -> Result<std::sync::Arc<hexeract::bus::rabbitmq::RabbitTransport>, BoxError> {
    use hexeract::bus::rabbitmq::RabbitTransport;
    let transport = RabbitTransport::connect_url(url).await?;
    println!("broker: RabbitMQ at {}", transport.config().url);
    for queue in [PROJECTION_QUEUE, &hexeract::bus::dead_letter_queue(PROJECTION_QUEUE)] {
        match transport.purge_queue(queue).await {
            Ok(_) | Err(hexeract::bus::TransportError::NotFound(_)) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(std::sync::Arc::new(transport))
}

#[cfg(not(feature = "rabbitmq"))]
async fn rabbitmq(_: &str) -> Result<hexeract::bus::MemoryTransport, BoxError> {
    Err("HEXERACT_AMQP_URL is set: build with the `rabbitmq` feature (on by default)".into())
}

const USAGE: &str = "usage: quickstart [--serve [ADDR]]";

fn main() -> ExitCode {
    // Arguments first: a mistake in them creates no database and says so
    // at once.
    let serve = match serve_address(std::env::args().skip(1)) {
        Ok(Arguments::Run(serve)) => serve,
        Ok(Arguments::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let result =
        tokio::runtime::Runtime::new().map_err(BoxError::from).and_then(|runtime| runtime.block_on(run(serve)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut message = error.to_string();
            let mut cause = error.source();
            while let Some(error) = cause {
                message = format!("{message}: {error}");
                cause = error.source();
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(serve: Option<String>) -> Result<(), BoxError> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let url = std::env::var("DATABASE_URL").ok().filter(|url| !url.is_empty());
    let db = Db::connect(url.as_deref(), dir.path()).await?;

    let builder = Hexeract::builder()
        .state(db.clone())
        .outbox(db.outbox())
        .relay(RelayConfig::default().poll_interval(Duration::from_millis(200)))
        .discover_handlers();
    #[cfg(feature = "prometheus")]
    let builder = match &serve {
        Some(address) => builder.metrics_endpoint(address.clone()),
        None => builder,
    };
    let builder = match std::env::var("HEXERACT_AMQP_URL").ok().filter(|url| !url.is_empty()) {
        None => builder,
        Some(url) => builder.transport(rabbitmq(&url).await?),
    };
    let system = builder.start().await?;
    let mediator = system.mediator();

    // 1,000 orders from 8 concurrent clients.
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let mediator = mediator.clone();
            tokio::spawn(async move {
                let mut placed = Vec::new();
                for n in 0..ORDERS / 8 {
                    let order = PlaceOrder { sku: format!("sku-{}", (client * 131 + n) % 97), qty: 1 + n % 5 };
                    placed.push(mediator.send(order).await?);
                }
                Ok::<_, hexeract::DispatchError>(placed)
            })
        })
        .collect();
    let mut placed = Vec::new();
    for client in clients {
        placed.extend(client.await??);
    }

    wait_for("every order to be projected", Duration::from_secs(120), || async {
        Ok(db.counts().await?.1 == i64::from(ORDERS))
    })
    .await?;

    // A broker that lost 50 acknowledgements delivers those messages again,
    // with the same message ids.
    let publisher = system.publisher().ok_or("the system has a bus")?;
    for Placed { event_id, event } in placed.iter().take(DUPLICATES).cloned() {
        let meta = Metadata { id: event_id, correlation_id: event_id, ..Metadata::root(OrderPlaced::NAME) };
        let envelope = Envelope::encode_with(&event, meta, Codec::Json)?;
        let destination =
            Destination::Exchange { exchange: "hexeract.events".into(), routing_key: OrderPlaced::NAME.into() };
        publisher
            .publish(Outgoing { destination, message: WireMessage::from_envelope(&envelope), delay: None })
            .await?;
    }
    wait_for("the duplicates to be recognised", Duration::from_secs(60), || async {
        Ok(db.duplicates().await? == DUPLICATES as u64)
    })
    .await?;

    let mut expected = i64::from(ORDERS);
    if serve.is_some() {
        expected += serve_until_signal(&system, &db).await?;
    }

    let (orders, consumed) = db.counts().await?;
    let relayed = db.outbox().stats().await?.sent;
    let duplicates = db.duplicates().await?;
    let lost = orders - consumed;
    println!("\n{}", system.metrics());
    let report = system.shutdown(Duration::from_secs(10)).await;
    print!("{report}");
    println!("finished in {:.1?}", started.elapsed());
    println!("\norders={orders} relayed={relayed} consumed={consumed} duplicates_skipped={duplicates} lost={lost}");

    if lost != 0
        || orders != expected
        || consumed != expected
        || relayed != expected as u64
        || duplicates != DUPLICATES as u64
    {
        return Err("the flow lost or duplicated something: see the summary line".into());
    }
    Ok(())
}

/// What the command line asks for.
enum Arguments {
    /// The flow; with `--serve`, the metrics endpoint's address.
    Run(Option<String>),
    /// `--help`.
    Help,
}

/// Reads `[--serve [ADDR]]` (`ADDR` defaults to `127.0.0.1:9464`).
///
/// # Errors
/// A sentence for any other argument, and for `--serve` in a build without
/// the metrics endpoint.
fn serve_address(args: impl IntoIterator<Item = String>) -> Result<Arguments, String> {
    let mut args = args.into_iter().peekable();
    let mut serve = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Arguments::Help),
            "--serve" if serve.is_none() => {
                let address = args.next_if(|next| !next.starts_with('-'));
                serve = Some(address.unwrap_or_else(|| "127.0.0.1:9464".into()));
            }
            "--serve" => return Err("--serve is given twice".into()),
            other => return Err(format!("unknown argument `{other}`; {USAGE}")),
        }
    }
    if serve.is_some() && cfg!(not(feature = "prometheus")) {
        return Err("--serve needs the metrics endpoint, behind the `prometheus` feature: \
                    cargo run --example quickstart --features prometheus -- --serve"
            .into());
    }
    Ok(Arguments::Run(serve))
}

/// `--serve`: keeps placing an order every 100 ms until Ctrl-C or SIGTERM,
/// so that the metrics move; then waits for every order to be projected.
/// Returns how many orders it placed.
async fn serve_until_signal(system: &hexeract::System, db: &Db) -> Result<i64, BoxError> {
    #[cfg(feature = "prometheus")]
    if let Some(address) = system.metrics_address() {
        println!(
            "serving metrics on http://{address}/metrics and /snapshot; `hexeract top --connect {address}`; Ctrl-C stops"
        );
    }
    let mediator = system.mediator();
    let mut placed = 0;
    let stop = hexeract::shutdown_signal();
    tokio::pin!(stop);
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = every.tick() => {
                mediator.send(PlaceOrder { sku: format!("sku-{}", placed % 97), qty: 1 }).await?;
                placed += 1;
            }
        }
    }
    let expected = i64::from(ORDERS) + placed;
    wait_for("every order to be projected", Duration::from_secs(120), || async {
        Ok(db.counts().await?.1 == expected)
    })
    .await?;
    Ok(placed)
}
