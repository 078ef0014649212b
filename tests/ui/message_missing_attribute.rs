use hexeract::Message;

#[derive(Debug, Message)]
struct PlaceOrder {
    qty: u32,
}

fn main() {}
