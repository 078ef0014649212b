use hexeract::Message;
use hexeract::storage::sqlite::SqliteOutbox;
use hexeract::storage::sqlx::SqlitePool;

#[derive(serde::Serialize, Message)]
#[message(name = "orders.placed.v1", notification)]
#[derive(Clone)]
struct OrderPlaced {
    id: u64,
}

// A bare connection is in autocommit mode: the event would be saved on its
// own. `save` takes a transaction.
async fn save_on_a_bare_connection(pool: SqlitePool, outbox: SqliteOutbox) {
    let mut conn = pool.acquire().await.unwrap();
    let _ = outbox.save(&mut conn, &OrderPlaced { id: 1 }).await;
}

fn main() {}
