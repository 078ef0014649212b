use hexeract::{Context, handler};

#[derive(Debug)]
struct CancelOrder {
    id: u32,
}

#[handler]
async fn cancel_order(cmd: CancelOrder, _ctx: &Context) -> Result<u32, String> {
    Ok(cmd.id)
}

fn main() {}
