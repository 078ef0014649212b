use hexeract::Message;

#[derive(Debug, Message)]
#[message(name = "has spaces", command, output = u32)]
struct PlaceOrder {
    qty: u32,
}

fn main() {}
