use hexeract::Message;

#[derive(Debug, Message)]
#[message(name = "orders.place.v1", command, output = u32, key = customer)]
struct PlaceOrder {
    sku: String,
}

fn main() {}
