use hexeract::{Message, handler};

#[derive(Debug, Message)]
#[message(name = "orders.place.v1", command, output = u32)]
struct PlaceOrder {
    qty: u32,
}

#[handler(workers = 0)]
async fn place_order(cmd: PlaceOrder) -> Result<u32, String> {
    Ok(cmd.qty)
}

fn main() {}
