use hexeract::{Message, handler};

#[derive(Debug, Message)]
#[message(name = "orders.place.v1", command, output = u32)]
struct PlaceOrder {
    qty: u32,
}

#[handler]
struct OrderBook {
    placed: u32,
}

fn main() {}
