//! The SQLite backend of the suite: a temporary database file per test.

use super::*;
use hexeract_storage::sqlite::{self, SqliteInbox, SqliteOutbox};
use sqlx::{AssertSqlSafe, SqlitePool};

#[derive(Clone)]
pub struct SqliteBackend {
    pool: SqlitePool,
    path: std::path::PathBuf,
    _dir: Option<Arc<tempfile::TempDir>>,
}

async fn open(path: &std::path::Path) -> SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(sqlite::connect_options(path))
        .await
        .expect("open the SQLite file")
}

impl Backend for SqliteBackend {
    const MODULE: &'static str = "sqlite";
    type Outbox = SqliteOutbox;

    async fn connect() -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("outbox.db");
        Some(SqliteBackend { pool: open(&path).await, path, _dir: Some(Arc::new(dir)) })
    }

    async fn connect_child() -> Self {
        let path = std::path::PathBuf::from(std::env::var("HEXERACT_CHILD_SQLITE_PATH").expect("path"));
        SqliteBackend { pool: open(&path).await, path, _dir: None }
    }

    fn child_env(&self) -> Vec<(&'static str, String)> {
        vec![("HEXERACT_CHILD_SQLITE_PATH", self.path.display().to_string())]
    }

    async fn migrate(&self, config: &StorageConfig) -> Result<Vec<AppliedMigration>, StoreError> {
        sqlite::migrate(&self.pool, config).await
    }

    fn outbox(&self, config: OutboxConfig) -> SqliteOutbox {
        SqliteOutbox::new(self.pool.clone(), config).expect("valid config")
    }

    async fn save_events(&self, outbox: &SqliteOutbox, events: &[OrderPlaced], commit: bool) -> Vec<MessageId> {
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

    async fn save_with(&self, outbox: &SqliteOutbox, event: &OrderPlaced, meta: Metadata) -> MessageId {
        let mut tx = self.pool.begin().await.expect("begin");
        let id = outbox.save_with(&mut tx, event, meta).await.expect("save_with");
        tx.commit().await.expect("commit");
        id
    }

    async fn save_keyed(&self, outbox: &SqliteOutbox, event: &OrderPlaced, meta: Metadata, key: &str) -> MessageId {
        let mut tx = self.pool.begin().await.expect("begin");
        let id = outbox.save_keyed(&mut tx, event, meta, key).await.expect("save_keyed");
        tx.commit().await.expect("commit");
        id
    }

    async fn retry_all_dead(&self, outbox: &SqliteOutbox) -> u64 {
        outbox.retry_all_dead().await.expect("retry_all_dead")
    }

    async fn save_rows(&self, outbox: &SqliteOutbox, rows: &[Outgoing]) -> u64 {
        let mut tx = self.pool.begin().await.expect("begin");
        let n = outbox.save_outgoing(&mut tx, rows).await.expect("save_outgoing");
        tx.commit().await.expect("commit");
        n
    }

    async fn list_dead(&self, outbox: &SqliteOutbox) -> Vec<DeadRow> {
        outbox.list_dead(100).await.expect("list_dead")
    }

    async fn retry_dead(&self, outbox: &SqliteOutbox, id: MessageId) -> bool {
        outbox.retry_dead(id).await.expect("retry_dead")
    }

    async fn purge_sent(&self, outbox: &SqliteOutbox, older_than: Duration) -> u64 {
        outbox.purge_sent(older_than).await.expect("purge_sent")
    }

    async fn explain_claim(&self, outbox: &SqliteOutbox) -> String {
        outbox.explain_claim().await.expect("explain")
    }

    async fn verify_schema(&self, outbox: &SqliteOutbox) -> Result<(), StoreError> {
        outbox.verify_schema().await
    }

    async fn count(&self, table: &TableName) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {}", table.ansi_quoted())))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    async fn seconds_until_due(&self, table: &TableName, id: MessageId) -> f64 {
        let millis: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT next_attempt_at - CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER) FROM {} WHERE id = ?1",
            table.ansi_quoted()
        )))
        .bind(id.0)
        .fetch_one(&self.pool)
        .await
        .expect("seconds until due");
        millis as f64 / 1000.0
    }

    async fn corrupt(&self, table: &TableName, id: MessageId, column: &'static str, value: &'static str) {
        sqlx::query(AssertSqlSafe(format!("UPDATE {} SET {column} = ?1 WHERE id = ?2", table.ansi_quoted())))
            .bind(value)
            .bind(id.0)
            .execute(&self.pool)
            .await
            .expect("corrupt");
    }

    async fn fill(&self, table: &TableName, rows: u32) {
        let t = table.ansi_quoted();
        let now = "CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)";
        sqlx::query(AssertSqlSafe(format!(
            "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < ?1) \
             INSERT INTO {t} (id, name, payload, content_type, headers, correlation_id, created_at, \
               next_attempt_at, status, sent_at) \
             SELECT randomblob(16), 'bench.v1', X'7B7D', 'application/json', '{{}}', randomblob(16), {now}, {now}, \
               CASE WHEN x * 10 > ?1 * 9 THEN 'pending' ELSE 'sent' END, \
               CASE WHEN x * 10 > ?1 * 9 THEN NULL ELSE {now} END \
             FROM s"
        )))
        .bind(i64::from(rows))
        .execute(&self.pool)
        .await
        .expect("fill");
        sqlx::query("ANALYZE").execute(&self.pool).await.expect("analyze");
    }

    fn assert_claim_plan(plan: &str, table: &TableName) {
        let index = format!("SCAN o USING INDEX {table}_claim_idx");
        assert!(plan.contains(&index), "the claim does not walk its index (`{index}`):\n{plan}");
        for line in plan.lines() {
            let line = line.trim();
            let scan = line.starts_with("SCAN ") && !line.contains("USING");
            assert!(!scan, "full table scan in the claim plan: `{line}`\n{plan}");
        }
    }

    async fn inbox_record(&self, table: &TableName, id: MessageId, consumer: &str, hold: Duration) -> InboxOutcome {
        let inbox = SqliteInbox::new(self.pool.clone(), table.clone());
        let mut tx = self.pool.begin().await.expect("begin");
        let outcome = inbox.record(&mut tx, id, consumer).await.expect("record");
        tokio::time::sleep(hold).await;
        tx.commit().await.expect("commit");
        outcome
    }

    async fn inbox_duplicates(&self, table: &TableName, consumer: &str) -> u64 {
        SqliteInbox::new(self.pool.clone(), table.clone()).duplicates(consumer).await.expect("duplicates")
    }

    async fn inbox_purge(&self, table: &TableName, age: Duration) -> u64 {
        SqliteInbox::new(self.pool.clone(), table.clone()).purge_older_than(age).await.expect("purge")
    }

    async fn drop_tables(&self, tables: &[&TableName]) {
        for table in tables {
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", table.ansi_quoted())))
                .execute(&self.pool)
                .await
                .expect("drop");
        }
    }

    async fn unreachable_outbox(&self, table: &TableName) -> (SqliteOutbox, Box<dyn std::any::Any + Send>) {
        // Another writer holds the lock past our busy timeout.
        let lock = self.pool.begin_with("BEGIN IMMEDIATE").await.expect("hold the write lock");
        let impatient = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(sqlite::connect_options(&self.path).busy_timeout(Duration::from_millis(200)))
            .await
            .expect("open");
        let outbox = SqliteOutbox::new(impatient, OutboxConfig::default().table(table.clone())).expect("outbox");
        (outbox, Box::new(lock))
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
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
