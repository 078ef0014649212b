use hexeract::Message;

#[derive(Debug, Message)]
#[message(name = "orders.place.v1", command)]
struct PlaceOrder {
    qty: u32,
}

fn main() {}
