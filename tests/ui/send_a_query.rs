use hexeract::{Context, Hexeract, Message, handler};

#[derive(Debug, Message)]
#[message(name = "orders.count.v1", query, output = u32)]
struct CountOrders;

#[handler]
async fn count_orders(_query: CountOrders, _ctx: &Context) -> Result<u32, String> {
    Ok(0)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let system = Hexeract::builder().handler(CountOrdersHandler).start().await?;
    let count = system.mediator().send(CountOrders).await?;
    println!("{count}");
    Ok(())
}

fn main() {
    let _ = run();
}
