use hexeract::{Message, handler};

#[derive(Debug, Message)]
#[message(name = "orders.place.v1", command, output = u32)]
struct PlaceOrder {
    qty: u32,
}

#[handler]
async fn place_order<M: Message>(cmd: M) -> Result<u32, String> {
    let _ = cmd;
    Ok(1)
}

fn main() {}
