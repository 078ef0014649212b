use hexeract::{Message, handler};

#[derive(Debug, Message)]
#[message(name = "orders.place.v1", command, output = u32)]
struct PlaceOrder {
    qty: u32,
}

#[handler]
async fn place_order(cmd: PlaceOrder, _ctx: &hexeract::Context, extra: u32) -> Result<u32, String> {
    Ok(cmd.qty + extra)
}

fn main() {}
