use hexeract::Message;

#[derive(Debug, Message)]
#[message(command, output = u32)]
struct PlaceOrder {
    qty: u32,
}

fn main() {}
