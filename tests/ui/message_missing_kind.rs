use hexeract::Message;

#[derive(Debug, Message)]
#[message(name = "orders.place.v1", output = u32)]
struct PlaceOrder {
    qty: u32,
}

fn main() {}
