//! Dead rows listed and replayed end up delivered: a row the relay gave up
//! on is listed by `hexeract outbox dead list`, replayed by `dead retry`,
//! and a running system relays it to a handler that receives it, under the
//! row's id. On SQLite always, on PostgreSQL when `HEXERACT_PG_URL` is set.

use std::num::NonZeroU32;
use std::time::Duration;

use hexeract::outbox::{LeaseOwner, OutboxStore, RelayConfig};
use hexeract::storage::{OutboxConfig, TableName, sqlx};
use hexeract::{Context, Hexeract, Message, MessageId, handler};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

mod common;
#[path = "../../storage/tests/conformance/env.rs"]
mod env;

#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "cli.invoice-issued.v1", notification)]
struct InvoiceIssued {
    invoice: u64,
}

/// Hands every received message id to the test.
#[handler(queue = "cli-replay.invoices")]
async fn on_invoice(_event: InvoiceIssued, ctx: &Context) -> Result<(), hexeract::BoxError> {
    let received = ctx.state::<mpsc::Sender<MessageId>>()?;
    received.send(ctx.meta().id).await?;
    Ok(())
}

#[track_caller]
fn hexeract_cli(args: &[&str]) -> String {
    common::exits(0, args)
}

fn unique_table() -> String {
    format!("hx_cli_replay_{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// Saves one event and marks it dead, as the relay does after its last
/// attempt; returns its id.
async fn dead_row<S: OutboxStore>(outbox: &S, save: impl AsyncFnOnce() -> MessageId) -> MessageId {
    let id = save().await;
    let owner = LeaseOwner::new();
    let claimed = outbox.claim(owner, NonZeroU32::MIN, Duration::from_secs(30)).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert!(outbox.mark_dead(owner, id, "exchange `hexeract.events` refused it").await.expect("mark dead"));
    id
}

/// The operator's path, once the row is dead and the system runs.
async fn list_replay_and_receive(url: &str, table: &str, id: MessageId, store: impl OutboxStore) {
    let on = ["--url", url, "--table", table];
    let listed = hexeract_cli(&[&["outbox", "dead", "list"], &on[..]].concat());
    assert!(listed.contains(&id.0.to_string()) && listed.lines().any(|line| line == "1 dead row"), "{listed}");

    let (sender, mut received) = mpsc::channel(16);
    let system = Hexeract::builder()
        .handler(OnInvoiceHandler)
        .state(sender)
        // Poll often: SQLite has no wake-up, and a replayed row is found by
        // the next poll.
        .relay(RelayConfig::default().poll_interval(Duration::from_millis(100)))
        .outbox(store)
        .start()
        .await
        .expect("start the system");
    // Dead, the row is not relayed.
    let early = tokio::time::timeout(Duration::from_millis(400), received.recv()).await;
    assert!(early.is_err(), "a dead row was delivered before its replay: {early:?}");

    let replayed = hexeract_cli(&[&["outbox", "dead", "retry", &id.0.to_string()], &on[..]].concat());
    assert!(replayed.contains("pending again"), "{replayed}");
    let delivered = tokio::time::timeout(Duration::from_secs(15), received.recv()).await;
    assert_eq!(delivered.ok().flatten(), Some(id), "the replayed row reaches the handler under its id");
    let listed = hexeract_cli(&[&["outbox", "dead", "list"], &on[..]].concat());
    assert!(listed.contains("0 dead rows"), "{listed}");
    system.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_rows_listed_and_replayed_end_up_delivered_sqlite() {
    use hexeract::storage::sqlite::{self, SqliteOutbox};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("replay.db");
    let url = format!("sqlite://{}", path.display());
    let table = unique_table();
    hexeract_cli(&["outbox", "migrate", "--url", &url, "--table", &table, "--no-inbox"]);
    let pool = sqlx::SqlitePool::connect_with(sqlite::connect_options(&path)).await.expect("open");
    let config = OutboxConfig::default().table(TableName::new(table.clone()).expect("valid"));
    let outbox = SqliteOutbox::new(pool.clone(), config).expect("outbox");
    let id = dead_row(&outbox, async || {
        let mut tx = pool.begin().await.expect("begin");
        let id = outbox.save(&mut tx, &InvoiceIssued { invoice: 7 }).await.expect("save");
        tx.commit().await.expect("commit");
        id
    })
    .await;
    list_replay_and_receive(&url, &table, id, outbox).await;
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_rows_listed_and_replayed_end_up_delivered_postgres() {
    use hexeract::storage::postgres::PgOutbox;
    let Some(url) = env::database_url("HEXERACT_PG_URL", "PostgreSQL") else { return };
    let table = unique_table();
    hexeract_cli(&["outbox", "migrate", "--url", &url, "--table", &table, "--no-inbox"]);
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let config = OutboxConfig::default().table(TableName::new(table.clone()).expect("valid"));
    let outbox = PgOutbox::new(pool.clone(), config).expect("outbox");
    let id = dead_row(&outbox, async || {
        let mut tx = pool.begin().await.expect("begin");
        let id = outbox.save(&mut tx, &InvoiceIssued { invoice: 8 }).await.expect("save");
        tx.commit().await.expect("commit");
        id
    })
    .await;
    list_replay_and_receive(&url, &table, id, outbox).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}"))).execute(&pool).await.expect("drop");
    pool.close().await;
}
