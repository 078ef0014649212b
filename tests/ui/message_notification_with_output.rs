use hexeract::Message;

#[derive(Debug, Clone, Message)]
#[message(name = "orders.placed.v1", notification, output = u32)]
struct OrderPlaced {
    qty: u32,
}

fn main() {}
