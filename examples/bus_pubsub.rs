//! Two services on one RabbitMQ bus, with the topology declared from a TOML
//! file (`examples/bus_pubsub.toml`).
//!
//! - `orders` publishes `shop.order-placed.v1` events through its system's
//!   publisher (confirmed by the broker) and consumes the invoices.
//! - `billing` consumes the orders; for each, its handler writes the
//!   `shop.invoice-issued.v1` event into its SQLite outbox in one
//!   transaction, and its relay publishes it. The invoice carries the
//!   order's correlation id, and the order's message id as causation id.
//!
//! Both systems run in this process, each on a connection of its own (as
//! two deployments would), and print what they do. The last line is a
//! summary; the program exits non-zero when an invoice is missing or
//! anything was dead-lettered.
//!
//! ```text
//! HEXERACT_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --example bus_pubsub
//! ```
//!
//! Without `HEXERACT_AMQP_URL`, the local broker above is used.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hexeract::bus::rabbitmq::{RabbitConfig, RabbitTransport};
use hexeract::bus::{Destination, Outgoing, Topology, Transport, TransportError, WireMessage, dead_letter_queue};
use hexeract::outbox::RelayConfig;
use hexeract::storage::OutboxConfig;
use hexeract::storage::sqlite::{self, SqliteOutbox};
use hexeract::storage::sqlx;
use hexeract::{BoxError, Codec, Context, Envelope, Hexeract, Message, MessageId, Metadata, System, handler};
use serde::{Deserialize, Serialize};

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const TOPOLOGY_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/bus_pubsub.toml");
/// The exchange in the topology file; both systems publish and bind there.
const EXCHANGE: &str = "shop.events";
const ORDERS: u32 = 5;

// ---- messages (the contract between the two services) ----------------------

/// Published by `orders`.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "shop.order-placed.v1", notification)]
struct OrderPlaced {
    order: String,
    sku: String,
    qty: u32,
    unit_cents: u64,
}

/// Published by `billing` (through its outbox) for each order.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "shop.invoice-issued.v1", notification)]
struct InvoiceIssued {
    invoice: String,
    order: String,
    amount_cents: u64,
}

// ---- billing ----------------------------------------------------------------

/// Billing's database: its outbox lives in the same SQLite file.
#[derive(Clone)]
struct Billing {
    pool: sqlx::SqlitePool,
    outbox: SqliteOutbox,
}

/// Invoices an order: the invoice event is saved in the same transaction as
/// (in a real service) the invoice row, and relayed once committed.
#[handler(queue = "shop.billing.orders")]
async fn invoice_order(order: OrderPlaced, ctx: &Context) -> Result<(), BoxError> {
    let billing = ctx.state::<Billing>()?;
    let invoice = InvoiceIssued {
        invoice: format!("INV-{}", order.order.trim_start_matches("ORD-")),
        order: order.order.clone(),
        amount_cents: order.unit_cents * u64::from(order.qty),
    };
    let mut tx = billing.pool.begin().await?;
    // A child of the order: same correlation id, the order as causation.
    billing.outbox.save_with(&mut tx, &invoice, ctx.meta().child(InvoiceIssued::NAME)).await?;
    tx.commit().await?;
    println!(
        "billing: {} for {} × {} → {} of {} saved in the outbox",
        order.order,
        order.qty,
        order.sku,
        invoice.invoice,
        dollars(invoice.amount_cents)
    );
    Ok(())
}

// ---- orders -----------------------------------------------------------------

/// What `orders` placed (message id → its metadata) and the invoices it
/// received for them.
#[derive(Clone, Default)]
struct Ledger {
    placed: Arc<Mutex<HashMap<MessageId, Metadata>>>,
    /// (invoice, whether its correlation and causation ids lead back to a
    /// placed order)
    invoiced: Arc<Mutex<Vec<(InvoiceIssued, bool)>>>,
}

impl Ledger {
    fn invoiced(&self) -> Vec<(InvoiceIssued, bool)> {
        self.invoiced.lock().map(|invoiced| invoiced.clone()).unwrap_or_default()
    }
}

/// Records an invoice against the order that caused it.
#[handler(queue = "shop.orders.invoices")]
async fn record_invoice(invoice: InvoiceIssued, ctx: &Context) -> Result<(), BoxError> {
    let ledger = ctx.state::<Ledger>()?;
    let meta = ctx.meta();
    let order = meta.causation_id.and_then(|id| ledger.placed.lock().ok()?.get(&id).cloned());
    let traced = order.is_some_and(|order| order.correlation_id == meta.correlation_id);
    println!(
        "orders:  {} invoiced as {} ({}); traced back to the order: {}",
        invoice.order,
        invoice.invoice,
        dollars(invoice.amount_cents),
        if traced { "yes" } else { "NO" }
    );
    ledger.invoiced.lock().map_err(|_| "ledger lock poisoned")?.push((invoice, traced));
    Ok(())
}

// ---- wiring -----------------------------------------------------------------

fn dollars(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// A connection for one service; `app_id` names it on every message it sends.
async fn connect(url: &str, app_id: &str) -> Result<Arc<RabbitTransport>, BoxError> {
    let config = RabbitConfig::new(url)?.app_id(app_id).connect_timeout(Duration::from_secs(5));
    Ok(Arc::new(RabbitTransport::connect(config).await?))
}

/// Empties the work and dead-letter queues of what an earlier, interrupted
/// run left, so that the summary counts this run only.
async fn purge_leftovers(rabbit: &RabbitTransport, topology: &Topology) -> Result<(), BoxError> {
    for queue in topology.queues.iter().filter(|queue| queue.name != "shop.audit") {
        for name in [queue.name.clone(), dead_letter_queue(&queue.name)] {
            match rabbit.purge_queue(&name).await {
                Ok(_) | Err(TransportError::NotFound(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(())
}

async fn start_billing(rabbit: &Arc<RabbitTransport>, dir: &std::path::Path) -> Result<System, BoxError> {
    let pool = sqlx::SqlitePool::connect_with(sqlite::connect_options(dir.join("billing.db"))).await?;
    let outbox = SqliteOutbox::new(pool.clone(), OutboxConfig::default())?;
    let system = Hexeract::builder()
        .transport(Arc::clone(rabbit))
        .state(Billing { pool, outbox: outbox.clone() })
        .outbox(outbox)
        .migrate()
        .relay(RelayConfig::default().exchange(EXCHANGE).poll_interval(Duration::from_millis(50)))
        .handler(InvoiceOrderHandler)
        .start()
        .await?;
    Ok(system)
}

async fn start_orders(rabbit: &Arc<RabbitTransport>, ledger: &Ledger) -> Result<System, BoxError> {
    let system = Hexeract::builder()
        .transport(Arc::clone(rabbit))
        .state(ledger.clone())
        // The exchange the system binds its handler queues to.
        .relay(RelayConfig::default().exchange(EXCHANGE))
        .handler(RecordInvoiceHandler)
        .start()
        .await?;
    Ok(system)
}

/// Publishes the orders through the `orders` system's publisher; each
/// publish returns once the broker confirmed it.
async fn place_orders(orders: &System, ledger: &Ledger) -> Result<(), BoxError> {
    let publisher = orders.publisher().ok_or("the orders system has a bus")?;
    let skus = [("widget", 1250), ("gadget", 4999), ("sprocket", 325)];
    for n in 1..=ORDERS {
        let (sku, unit_cents) = skus[n as usize % skus.len()];
        let order = OrderPlaced { order: format!("ORD-{n:03}"), sku: sku.into(), qty: n, unit_cents };
        let envelope = Envelope::encode(&order, Codec::Json)?;
        ledger.placed.lock().map_err(|_| "ledger lock poisoned")?.insert(envelope.meta.id, envelope.meta.clone());
        let destination = Destination::Exchange { exchange: EXCHANGE.into(), routing_key: OrderPlaced::NAME.into() };
        publisher
            .publish(Outgoing { destination, message: WireMessage::from_envelope(&envelope), delay: None })
            .await?;
        println!("orders:  placed {} ({} × {}), message {}", order.order, order.qty, order.sku, envelope.meta.id);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    let url = std::env::var("HEXERACT_AMQP_URL").ok().filter(|url| !url.is_empty());
    let url = url.as_deref().unwrap_or(DEFAULT_URL);

    let orders_bus = connect(url, "orders").await?;
    let billing_bus = connect(url, "billing").await?;
    println!("broker: RabbitMQ at {}", orders_bus.config().url);

    let text = std::fs::read_to_string(TOPOLOGY_FILE).map_err(|error| format!("reading {TOPOLOGY_FILE}: {error}"))?;
    let topology = Topology::from_toml(&text)?;
    orders_bus.declare(&topology).await?;
    println!(
        "topology: {} exchange(s), {} queue(s), {} binding(s) declared from {TOPOLOGY_FILE}",
        topology.exchanges.len(),
        topology.queues.len(),
        topology.bindings.len()
    );
    purge_leftovers(&orders_bus, &topology).await?;

    let dir = tempfile::tempdir()?;
    let ledger = Ledger::default();
    let billing = start_billing(&billing_bus, dir.path()).await?;
    let orders = start_orders(&orders_bus, &ledger).await?;

    place_orders(&orders, &ledger).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while ledger.invoiced().len() < ORDERS as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let orders_report = orders.shutdown(Duration::from_secs(5)).await;
    let billing_report = billing.shutdown(Duration::from_secs(5)).await;
    let mut dead_letters = 0;
    for queue in ["shop.billing.orders", "shop.orders.invoices"] {
        dead_letters += orders_bus.queue_depth(&dead_letter_queue(queue)).await?;
    }
    orders_bus.close().await;
    billing_bus.close().await;

    let invoiced = ledger.invoiced();
    let traced = invoiced.iter().filter(|(_, traced)| *traced).count();
    let clean = orders_report.is_clean() && billing_report.is_clean();
    println!("finished in {:.1?}", started.elapsed());
    println!(
        "\nplaced={ORDERS} invoiced={} traced={traced} dead_letters={dead_letters} clean_shutdown={clean}",
        invoiced.len()
    );
    if invoiced.len() != ORDERS as usize || traced != invoiced.len() || dead_letters != 0 || !clean {
        print!("orders shutdown:\n{orders_report}billing shutdown:\n{billing_report}");
        return Err("an invoice is missing, untraced or dead-lettered: see the summary line".into());
    }
    Ok(())
}
