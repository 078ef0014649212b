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
    async fn place(&mut self, cmd: PlaceOrder, note: &str) -> Result<u32, String> {
        self.placed += cmd.qty + note.len() as u32;
        Ok(self.placed)
    }
}

fn main() {}
