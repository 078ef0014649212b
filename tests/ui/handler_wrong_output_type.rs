use hexeract::{Message, handler};

#[derive(Debug, Message)]
#[message(name = "orders.place.v1", command, output = u32)]
struct PlaceOrder {
    qty: u32,
}

#[handler]
async fn place_order(cmd: PlaceOrder) -> Result<String, String> {
    Ok(cmd.qty.to_string())
}

fn main() {}
