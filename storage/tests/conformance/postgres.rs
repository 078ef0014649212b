//! The PostgreSQL backend of the suite (`HEXERACT_PG_URL`), and the
//! PostgreSQL-only `LISTEN/NOTIFY` case.

use super::*;
use hexeract_storage::postgres::{self, PgInbox, PgOutbox};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};

#[derive(Clone)]
pub struct PgBackend {
    pub pool: PgPool,
}

pub async fn connect_pool() -> Option<PgPool> {
    let url = database_url("HEXERACT_PG_URL", "PostgreSQL")?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(20))
        .connect(&url)
        .await
        .unwrap_or_else(|error| panic!("HEXERACT_PG_URL is set but PostgreSQL is unreachable: {error}"));
    Some(pool)
}

impl Backend for PgBackend {
    const MODULE: &'static str = "postgres";
    type Outbox = PgOutbox;

    async fn connect() -> Option<Self> {
        Some(PgBackend { pool: connect_pool().await? })
    }

    async fn connect_child() -> Self {
        PgBackend { pool: connect_pool().await.expect("the child inherits HEXERACT_PG_URL") }
    }

    fn child_env(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    async fn migrate(&self, config: &StorageConfig) -> Result<Vec<AppliedMigration>, StoreError> {
        postgres::migrate(&self.pool, config).await
    }

    fn outbox(&self, config: OutboxConfig) -> PgOutbox {
        PgOutbox::new(self.pool.clone(), config).expect("valid config")
    }

    async fn save_events(&self, outbox: &PgOutbox, events: &[OrderPlaced], commit: bool) -> Vec<MessageId> {
        let mut tx = self.pool.begin().await.expect("begin");
        let ids = if let [event] = events {
            vec![outbox.save(&mut tx, event).await.expect("save")]
        } else {
            outbox.save_all(&mut tx, events).await.expect("save_all")
        };
        if commit {
            tx.commit().await.expect("commit")
        } else {
            tx.rollback().await.expect("rollback")
        }
        ids
    }

    async fn save_with(&self, outbox: &PgOutbox, event: &OrderPlaced, meta: Metadata) -> MessageId {
        let mut tx = self.pool.begin().await.expect("begin");
        let id = outbox.save_with(&mut tx, event, meta).await.expect("save_with");
        tx.commit().await.expect("commit");
        id
    }

    async fn save_keyed(&self, outbox: &PgOutbox, event: &OrderPlaced, meta: Metadata, key: &str) -> MessageId {
        let mut tx = self.pool.begin().await.expect("begin");
        let id = outbox.save_keyed(&mut tx, event, meta, key).await.expect("save_keyed");
        tx.commit().await.expect("commit");
        id
    }

    async fn retry_all_dead(&self, outbox: &PgOutbox) -> u64 {
        outbox.retry_all_dead().await.expect("retry_all_dead")
    }

    async fn save_rows(&self, outbox: &PgOutbox, rows: &[Outgoing]) -> u64 {
        let mut tx = self.pool.begin().await.expect("begin");
        let n = outbox.save_outgoing(&mut tx, rows).await.expect("save_outgoing");
        tx.commit().await.expect("commit");
        n
    }

    async fn list_dead(&self, outbox: &PgOutbox) -> Vec<DeadRow> {
        outbox.list_dead(100).await.expect("list_dead")
    }

    async fn retry_dead(&self, outbox: &PgOutbox, id: MessageId) -> bool {
        outbox.retry_dead(id).await.expect("retry_dead")
    }

    async fn purge_sent(&self, outbox: &PgOutbox, older_than: Duration) -> u64 {
        outbox.purge_sent(older_than).await.expect("purge_sent")
    }

    async fn explain_claim(&self, outbox: &PgOutbox) -> String {
        outbox.explain_claim().await.expect("explain")
    }

    async fn verify_schema(&self, outbox: &PgOutbox) -> Result<(), StoreError> {
        outbox.verify_schema().await
    }

    async fn count(&self, table: &TableName) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {}", table.ansi_quoted())))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    async fn seconds_until_due(&self, table: &TableName, id: MessageId) -> f64 {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT EXTRACT(EPOCH FROM (next_attempt_at - clock_timestamp()))::float8 FROM {} WHERE id = $1",
            table.ansi_quoted()
        )))
        .bind(id.0)
        .fetch_one(&self.pool)
        .await
        .expect("seconds until due")
    }

    async fn corrupt(&self, table: &TableName, id: MessageId, column: &'static str, value: &'static str) {
        sqlx::query(AssertSqlSafe(format!("UPDATE {} SET {column} = $1 WHERE id = $2", table.ansi_quoted())))
            .bind(value)
            .bind(id.0)
            .execute(&self.pool)
            .await
            .expect("corrupt");
    }

    async fn fill(&self, table: &TableName, rows: u32) {
        let t = table.ansi_quoted();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {t} (id, name, payload, content_type, headers, correlation_id, status, sent_at) \
             SELECT gen_random_uuid(), 'bench.v1', '\\x7b7d'::bytea, 'application/json', '{{}}', gen_random_uuid(), \
               CASE WHEN g * 10 > $1 * 9 THEN 'pending' ELSE 'sent' END, \
               CASE WHEN g * 10 > $1 * 9 THEN NULL ELSE now() END \
             FROM generate_series(1, $1) AS g"
        )))
        .bind(i64::from(rows))
        .execute(&self.pool)
        .await
        .expect("fill");
        sqlx::query(AssertSqlSafe(format!("ANALYZE {t}"))).execute(&self.pool).await.expect("analyze");
    }

    fn assert_claim_plan(plan: &str, table: &TableName) {
        let index = format!("Index Scan using {table}_claim_idx on {table} o");
        assert!(plan.contains(&index), "the claim does not walk its index (`{index}`):\n{plan}");
        assert!(!plan.contains("Seq Scan"), "sequential scan of {table} in the claim plan:\n{plan}");
        assert!(!plan.contains("Sort"), "the claim sorts instead of reading in index order:\n{plan}");
    }

    async fn inbox_record(&self, table: &TableName, id: MessageId, consumer: &str, hold: Duration) -> InboxOutcome {
        let inbox = PgInbox::new(self.pool.clone(), table.clone());
        let mut tx = self.pool.begin().await.expect("begin");
        let outcome = inbox.record(&mut tx, id, consumer).await.expect("record");
        tokio::time::sleep(hold).await;
        tx.commit().await.expect("commit");
        outcome
    }

    async fn inbox_duplicates(&self, table: &TableName, consumer: &str) -> u64 {
        PgInbox::new(self.pool.clone(), table.clone()).duplicates(consumer).await.expect("duplicates")
    }

    async fn inbox_purge(&self, table: &TableName, age: Duration) -> u64 {
        PgInbox::new(self.pool.clone(), table.clone()).purge_older_than(age).await.expect("purge")
    }

    async fn drop_tables(&self, tables: &[&TableName]) {
        for table in tables {
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", table.ansi_quoted())))
                .execute(&self.pool)
                .await
                .expect("drop");
            sqlx::query("DELETE FROM hexeract_migrations WHERE table_name = $1")
                .bind(table.as_str())
                .execute(&self.pool)
                .await
                .expect("forget migrations");
        }
    }

    async fn unreachable_outbox(&self, table: &TableName) -> (PgOutbox, Box<dyn std::any::Any + Send>) {
        // Nothing listens on port 1.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(1))
            .connect_lazy("postgres://postgres@127.0.0.1:1/test")
            .expect("a lazy pool");
        let outbox = PgOutbox::new(pool, OutboxConfig::default().table(table.clone())).expect("outbox");
        (outbox, Box::new(()))
    }

    fn url(&self) -> String {
        std::env::var("HEXERACT_PG_URL").expect("set when connected")
    }

    async fn drop_index_and_column(&self, table: &TableName, index_suffix: &str, column: &str) {
        let index = format!("{}{index_suffix}", table.as_str());
        sqlx::query(AssertSqlSafe(format!("DROP INDEX \"{index}\""))).execute(&self.pool).await.expect("drop index");
        sqlx::query(AssertSqlSafe(format!("ALTER TABLE {} DROP COLUMN {column}", table.ansi_quoted())))
            .execute(&self.pool)
            .await
            .expect("drop column");
    }
}

/// PostgreSQL only: a save committed through one outbox wakes another
/// (another process, as far as it can tell) through `LISTEN/NOTIFY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notify_wakes_a_listening_outbox() {
    let Some(backend) = <PgBackend as Backend>::connect().await else { return };
    let (tables, _) = setup(&backend, "notify", SentRetention::Delete).await;
    let config = OutboxConfig::default().table(tables.outbox.clone());
    let listening = PgOutbox::new(backend.pool.clone(), config.clone()).expect("outbox");
    let saving = PgOutbox::new(backend.pool.clone(), config).expect("outbox");
    let wakeup = listening.wakeup();
    // The listener wakes once when it has connected (anything saved before
    // was missed); then it is listening.
    tokio::time::timeout(Duration::from_secs(10), wakeup.notified()).await.expect("the listener connected");

    let mut tx = backend.pool.begin().await.expect("begin");
    saving.save(&mut tx, &OrderPlaced { order: 1 }).await.expect("save");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), wakeup.notified()).await.is_err(),
        "no wake-up before the commit"
    );
    let committed = Instant::now();
    tx.commit().await.expect("commit");
    tokio::time::timeout(Duration::from_secs(5), wakeup.notified()).await.expect("woken by NOTIFY");
    let latency = committed.elapsed();
    assert!(latency < Duration::from_secs(1), "wake-up took {latency:?}");

    // A rolled-back save notifies nobody.
    let mut tx = backend.pool.begin().await.expect("begin");
    saving.save(&mut tx, &OrderPlaced { order: 2 }).await.expect("save");
    tx.rollback().await.expect("rollback");
    assert!(tokio::time::timeout(Duration::from_millis(500), wakeup.notified()).await.is_err());
    drop(listening);
    tables.drop(&backend).await;
}
