//! The MySQL/MariaDB backend of the suite (`HEXERACT_MYSQL_URL`).

use super::*;
use hexeract_storage::mysql::{self, MySqlInbox, MySqlOutbox};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{AssertSqlSafe, MySqlPool};

#[derive(Clone)]
pub struct MySqlBackend {
    pool: MySqlPool,
}

async fn connect_pool() -> Option<MySqlPool> {
    let url = database_url("HEXERACT_MYSQL_URL", "MySQL/MariaDB")?;
    let pool = MySqlPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(20))
        .connect(&url)
        .await
        .unwrap_or_else(|error| panic!("HEXERACT_MYSQL_URL is set but MySQL/MariaDB is unreachable: {error}"));
    Some(pool)
}

impl Backend for MySqlBackend {
    const MODULE: &'static str = "mysql";
    type Outbox = MySqlOutbox;

    async fn connect() -> Option<Self> {
        Some(MySqlBackend { pool: connect_pool().await? })
    }

    async fn connect_child() -> Self {
        MySqlBackend { pool: connect_pool().await.expect("the child inherits HEXERACT_MYSQL_URL") }
    }

    fn child_env(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    async fn migrate(&self, config: &StorageConfig) -> Result<Vec<AppliedMigration>, StoreError> {
        mysql::migrate(&self.pool, config).await
    }

    fn outbox(&self, config: OutboxConfig) -> MySqlOutbox {
        MySqlOutbox::new(self.pool.clone(), config).expect("valid config")
    }

    async fn save_events(&self, outbox: &MySqlOutbox, events: &[OrderPlaced], commit: bool) -> Vec<MessageId> {
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

    async fn save_with(&self, outbox: &MySqlOutbox, event: &OrderPlaced, meta: Metadata) -> MessageId {
        let mut tx = self.pool.begin().await.expect("begin");
        let id = outbox.save_with(&mut tx, event, meta).await.expect("save_with");
        tx.commit().await.expect("commit");
        id
    }

    async fn save_keyed(&self, outbox: &MySqlOutbox, event: &OrderPlaced, meta: Metadata, key: &str) -> MessageId {
        let mut tx = self.pool.begin().await.expect("begin");
        let id = outbox.save_keyed(&mut tx, event, meta, key).await.expect("save_keyed");
        tx.commit().await.expect("commit");
        id
    }

    async fn retry_all_dead(&self, outbox: &MySqlOutbox) -> u64 {
        outbox.retry_all_dead().await.expect("retry_all_dead")
    }

    async fn save_rows(&self, outbox: &MySqlOutbox, rows: &[Outgoing]) -> u64 {
        let mut tx = self.pool.begin().await.expect("begin");
        let n = outbox.save_outgoing(&mut tx, rows).await.expect("save_outgoing");
        tx.commit().await.expect("commit");
        n
    }

    async fn list_dead(&self, outbox: &MySqlOutbox) -> Vec<DeadRow> {
        outbox.list_dead(100).await.expect("list_dead")
    }

    async fn retry_dead(&self, outbox: &MySqlOutbox, id: MessageId) -> bool {
        outbox.retry_dead(id).await.expect("retry_dead")
    }

    async fn purge_sent(&self, outbox: &MySqlOutbox, older_than: Duration) -> u64 {
        outbox.purge_sent(older_than).await.expect("purge_sent")
    }

    async fn explain_claim(&self, outbox: &MySqlOutbox) -> String {
        outbox.explain_claim().await.expect("explain")
    }

    async fn verify_schema(&self, outbox: &MySqlOutbox) -> Result<(), StoreError> {
        outbox.verify_schema().await
    }

    async fn count(&self, table: &TableName) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {}", table.backtick_quoted())))
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    async fn seconds_until_due(&self, table: &TableName, id: MessageId) -> f64 {
        let micros: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), next_attempt_at) FROM {} WHERE id = ?",
            table.backtick_quoted()
        )))
        .bind(id.0)
        .fetch_one(&self.pool)
        .await
        .expect("seconds until due");
        micros as f64 / 1e6
    }

    async fn corrupt(&self, table: &TableName, id: MessageId, column: &'static str, value: &'static str) {
        sqlx::query(AssertSqlSafe(format!("UPDATE {} SET {column} = ? WHERE id = ?", table.backtick_quoted())))
            .bind(value)
            .bind(id.0)
            .execute(&self.pool)
            .await
            .expect("corrupt");
    }

    async fn fill(&self, table: &TableName, rows: u32) {
        let t = table.backtick_quoted();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {t} (id, name, payload, content_type, headers, correlation_id, created_at, next_attempt_at, \
               status, sent_at) \
             SELECT RANDOM_BYTES(16), 'bench.v1', '{{}}', 'application/json', '{{}}', RANDOM_BYTES(16), \
               UTC_TIMESTAMP(6), UTC_TIMESTAMP(6), \
               CASE WHEN seq * 10 > {rows} * 9 THEN 'pending' ELSE 'sent' END, \
               CASE WHEN seq * 10 > {rows} * 9 THEN NULL ELSE UTC_TIMESTAMP(6) END \
             FROM seq_1_to_{rows}"
        )))
        .execute(&self.pool)
        .await
        .expect("fill");
        sqlx::query(AssertSqlSafe(format!("ANALYZE TABLE {t}"))).execute(&self.pool).await.expect("analyze");
    }

    fn assert_claim_plan(plan: &str, table: &TableName) {
        let outer = plan.lines().find(|line| line.contains(" table=o ")).expect("a plan line for the outbox");
        assert!(outer.contains(&format!(" key={table}_claim_idx ")), "the claim does not use its index:\n{plan}");
        assert!(outer.contains(" type=range ") || outer.contains(" type=ref "), "the claim scans:\n{plan}");
        assert!(!plan.contains("filesort"), "the claim sorts instead of reading in index order:\n{plan}");
    }

    async fn inbox_record(&self, table: &TableName, id: MessageId, consumer: &str, hold: Duration) -> InboxOutcome {
        let inbox = MySqlInbox::new(self.pool.clone(), table.clone());
        let mut tx = self.pool.begin().await.expect("begin");
        let outcome = inbox.record(&mut tx, id, consumer).await.expect("record");
        tokio::time::sleep(hold).await;
        tx.commit().await.expect("commit");
        outcome
    }

    async fn inbox_duplicates(&self, table: &TableName, consumer: &str) -> u64 {
        MySqlInbox::new(self.pool.clone(), table.clone()).duplicates(consumer).await.expect("duplicates")
    }

    async fn inbox_purge(&self, table: &TableName, age: Duration) -> u64 {
        MySqlInbox::new(self.pool.clone(), table.clone()).purge_older_than(age).await.expect("purge")
    }

    async fn drop_tables(&self, tables: &[&TableName]) {
        for table in tables {
            sqlx::query(AssertSqlSafe(format!("DROP TABLE IF EXISTS {}", table.backtick_quoted())))
                .execute(&self.pool)
                .await
                .expect("drop");
            sqlx::query("DELETE FROM hexeract_migrations WHERE table_name = ?")
                .bind(table.as_str())
                .execute(&self.pool)
                .await
                .expect("forget migrations");
        }
    }

    async fn unreachable_outbox(&self, table: &TableName) -> (MySqlOutbox, Box<dyn std::any::Any + Send>) {
        // Nothing listens on port 1.
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .acquire_timeout(Duration::from_secs(1))
            .connect_lazy("mysql://root@127.0.0.1:1/test")
            .expect("a lazy pool");
        let outbox = MySqlOutbox::new(pool, OutboxConfig::default().table(table.clone())).expect("outbox");
        (outbox, Box::new(()))
    }

    fn url(&self) -> String {
        // MariaDB's own scheme, which the CLI accepts too.
        let url = std::env::var("HEXERACT_MYSQL_URL").expect("set when connected");
        url.replacen("mysql:", "mariadb:", 1)
    }

    async fn drop_index_and_column(&self, table: &TableName, index_suffix: &str, column: &str) {
        let index = format!("{}{index_suffix}", table.as_str());
        sqlx::query(AssertSqlSafe(format!("DROP INDEX `{index}` ON {}", table.backtick_quoted())))
            .execute(&self.pool)
            .await
            .expect("drop index");
        sqlx::query(AssertSqlSafe(format!("ALTER TABLE {} DROP COLUMN {column}", table.backtick_quoted())))
            .execute(&self.pool)
            .await
            .expect("drop column");
    }
}
