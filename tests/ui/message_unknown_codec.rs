use hexeract::Message;

#[derive(Debug, Message)]
#[message(name = "orders.place.v1", command, output = u32, codec = "protobuf")]
struct PlaceOrder {
    qty: u32,
}

fn main() {}
