use hexeract::Message;
use hexeract::storage::sqlite::SqliteOutbox;
use hexeract::storage::sqlx::SqlitePool;

#[derive(serde::Serialize, Message)]
#[message(name = "orders.placed.v1", notification)]
#[derive(Clone)]
struct OrderPlaced {
    id: u64,
}

// Saving outside a transaction would publish an event for a change that may
// never commit: `save` takes a transaction, not a pool.
async fn save_outside_a_transaction(pool: SqlitePool, outbox: SqliteOutbox) {
    let _ = outbox.save(&pool, &OrderPlaced { id: 1 }).await;
}

fn main() {}
