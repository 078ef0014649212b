//! The mediator, end to end, with no broker and no database.
//!
//! Spawns a Hexeract system, sends commands and queries, publishes a
//! notification to two subscribers, makes a handler panic and shows that its
//! actor was restarted and kept serving, then prints the metrics table and
//! the shutdown report. Every step checks its own result: the program exits
//! non-zero if anything is not as expected.
//!
//! ```text
//! cargo run --example mediator
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hexeract::{Context, DispatchError, Hexeract, Message, handler};

// ---- messages -------------------------------------------------------------

/// Places an order; answers its id.
#[derive(Debug, Message)]
#[message(name = "orders.place.v1", command, output = u64)]
struct PlaceOrder {
    sku: String,
    qty: u32,
}

/// How many units of a SKU were ordered so far.
#[derive(Debug, Message)]
#[message(name = "orders.ordered-quantity.v1", query, output = u32)]
struct OrderedQuantity {
    sku: String,
}

/// Told to every subscriber once an order is placed.
#[derive(Debug, Clone, Message)]
#[message(name = "orders.placed.v1", notification)]
struct OrderPlaced {
    id: u64,
    qty: u32,
}

/// A command whose handler panics on `explode: true`.
#[derive(Debug, Message)]
#[message(name = "demo.fragile.v1", command, output = String)]
struct Fragile {
    explode: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("quantity must be positive")]
struct InvalidQuantity;

// ---- handlers -------------------------------------------------------------

/// The order book is an actor that owns its state: no lock, no `Arc<Mutex>`.
#[derive(Default)]
struct OrderBook {
    next_id: u64,
    quantities: HashMap<String, u32>,
}

#[handler]
impl OrderBook {
    async fn place(&mut self, cmd: PlaceOrder, ctx: &Context) -> Result<u64, hexeract::BoxError> {
        if cmd.qty == 0 {
            return Err(InvalidQuantity.into());
        }
        self.next_id += 1;
        *self.quantities.entry(cmd.sku).or_default() += cmd.qty;
        // Follow-up messages carry this command's correlation id.
        ctx.publish(OrderPlaced { id: self.next_id, qty: cmd.qty }).await?;
        Ok(self.next_id)
    }

    async fn ordered(&self, query: OrderedQuantity) -> Result<u32, std::convert::Infallible> {
        Ok(self.quantities.get(&query.sku).copied().unwrap_or(0))
    }
}

/// Shared by the two subscribers, registered with `.state(...)`.
#[derive(Default)]
struct Tally {
    emails: AtomicU32,
    units_shipped: AtomicU32,
}

#[handler]
async fn send_confirmation_email(event: OrderPlaced, ctx: &Context) -> Result<(), hexeract::BoxError> {
    let _ = event.id;
    ctx.state::<Arc<Tally>>()?.emails.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[handler(workers = 2)]
async fn schedule_shipping(event: OrderPlaced, ctx: &Context) -> Result<(), hexeract::BoxError> {
    ctx.state::<Arc<Tally>>()?.units_shipped.fetch_add(event.qty, Ordering::Relaxed);
    Ok(())
}

#[handler]
async fn fragile(cmd: Fragile) -> Result<String, std::convert::Infallible> {
    assert!(!cmd.explode, "fragile handler asked to explode");
    Ok("still standing".to_owned())
}

// ---- the scenario ---------------------------------------------------------

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        println!("  ok   {what}");
        Ok(())
    } else {
        Err(format!("FAILED: {what}"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the demo's output about the demo: the expected panic below would
    // otherwise print a backtrace hint.
    std::panic::set_hook(Box::new(|info| eprintln!("  (handler panic, as planned: {info})")));

    let tally = Arc::new(Tally::default());
    let system = Hexeract::builder()
        .state(Arc::clone(&tally))
        .restart_policy(
            hexeract::RestartPolicy::default()
                .backoff(hexeract::Backoff::new(Duration::from_millis(10), Duration::from_millis(200))?),
        )
        .discover_handlers()
        .start()
        .await?;
    let mediator = system.mediator();
    println!("system started");

    println!("commands and queries:");
    let first = mediator.send(PlaceOrder { sku: "tea".into(), qty: 2 }).await?;
    let second = mediator.send(PlaceOrder { sku: "tea".into(), qty: 3 }).await?;
    check(first == 1 && second == 2, "two orders placed, ids 1 and 2")?;
    let ordered = mediator.query(OrderedQuantity { sku: "tea".into() }).await?;
    check(ordered == 5, "query sees 5 units of tea ordered")?;
    let refused = mediator.send(PlaceOrder { sku: "tea".into(), qty: 0 }).await;
    check(
        matches!(&refused, Err(e) if e.handler_error::<InvalidQuantity>().is_some()),
        "a handler error reaches the caller, typed",
    )?;

    println!("notifications:");
    check(tally.emails.load(Ordering::Relaxed) == 2, "both placed orders were emailed")?;
    check(tally.units_shipped.load(Ordering::Relaxed) == 5, "both placed orders were shipped")?;
    mediator.publish(OrderPlaced { id: 99, qty: 1 }).await?;
    check(tally.emails.load(Ordering::Relaxed) == 3, "a published notification reached both subscribers")?;

    println!("a panicking handler:");
    let panicked = mediator.send(Fragile { explode: true }).await;
    check(matches!(panicked, Err(DispatchError::HandlerPanicked { .. })), "the caller gets HandlerPanicked")?;
    let after = mediator.send(Fragile { explode: false }).await?;
    check(after == "still standing", "the restarted actor serves the next message")?;
    let metrics = system.metrics();
    let fragile = metrics.actor("mediator/fragile").ok_or("no metrics for mediator/fragile")?;
    check(fragile.restarts == 1 && fragile.handled.panic == 1, "one panic and one restart counted")?;

    println!("\n{metrics}");
    let report = system.shutdown(Duration::from_secs(5)).await;
    print!("{report}");
    check(report.is_clean(), "shutdown handled everything")?;
    Ok(())
}
