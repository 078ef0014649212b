use hexeract::Message;

#[derive(Debug, Message)]
#[message(name = "orders.place.v1", command, output = u32)]
struct PlaceOrder<T> {
    item: T,
}

fn main() {}
