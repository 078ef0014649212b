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

trait Book {
    async fn place(&mut self, cmd: PlaceOrder) -> Result<u32, String>;
}

#[handler]
impl Book for OrderBook {
    async fn place(&mut self, cmd: PlaceOrder) -> Result<u32, String> {
        self.placed += cmd.qty;
        Ok(self.placed)
    }
}

fn main() {}
