use hexeract::{Hexeract, Message};

#[derive(Debug, Message)]
#[message(name = "orders.place.v1", command, output = u32)]
struct PlaceOrder {
    qty: u32,
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let system = Hexeract::builder().start().await?;
    system.mediator().publish(PlaceOrder { qty: 1 }).await?;
    Ok(())
}

fn main() {
    let _ = run();
}
