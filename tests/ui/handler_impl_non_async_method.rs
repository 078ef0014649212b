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
    fn place(&mut self, cmd: PlaceOrder) -> Result<u32, String> {
        self.placed += cmd.qty;
        Ok(self.placed)
    }
}

fn main() {}
