use hexeract::{Message, handler};

#[derive(Debug, Message)]
#[message(name = "orders.place.v1", command, output = u32)]
struct PlaceOrder {
    qty: u32,
}

#[derive(Default)]
struct OrderBook {
    placed: u32,
}

#[handler]
impl OrderBook {
    async fn place(self, cmd: PlaceOrder) -> Result<u32, String> {
        Ok(self.placed + cmd.qty)
    }
}

fn main() {}
