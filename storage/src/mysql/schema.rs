//! MySQL/MariaDB schema and migrations.

use hexeract_runtime::ports::outbox::StoreError;
use sqlx::{AssertSqlSafe, MySqlPool, Row};

use super::{NOW, store_error};
use crate::migrate::{Migration, TableKind, check_kind, planned};
use crate::schema_check::{FoundTable, SchemaProblem, compare};
use crate::{AppliedMigration, StorageConfig, TableName};

/// The named lock serializing concurrent `migrate` calls, and how long to
/// wait for it.
const MIGRATE_LOCK: &str = "hexeract_migrate";
const MIGRATE_LOCK_WAIT_SECS: i64 = 60;

/// InnoDB (row locks, `SKIP LOCKED`), binary collation (ordering keys and
/// consumer names compare byte for byte).
const TABLE_OPTIONS: &str = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

fn outbox_migrations(table: &TableName) -> Vec<Migration> {
    let t = table.backtick_quoted();
    let id_idx = table.derived("_id_idx");
    let claim_idx = table.derived("_claim_idx");
    let key_idx = table.derived("_key_idx");
    let sent_idx = table.derived("_sent_idx");
    vec![Migration {
        version: 1,
        description: "create the outbox table and its claim, ordering-key and sent indexes",
        // InnoDB clusters rows by primary key: an increasing `seq` appends
        // at the end of the tree and is the claim's order; the message id
        // is a unique key.
        statements: vec![format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                seq              BIGINT       NOT NULL AUTO_INCREMENT,
                id               BINARY(16)   NOT NULL,
                name             VARCHAR(255) NOT NULL,
                payload          LONGBLOB     NOT NULL,
                content_type     VARCHAR(255) NOT NULL,
                headers          LONGTEXT     NOT NULL,
                correlation_id   BINARY(16)   NOT NULL,
                causation_id     BINARY(16)   NULL,
                created_at       DATETIME(6)  NOT NULL,
                attempts         INT          NOT NULL DEFAULT 0,
                next_attempt_at  DATETIME(6)  NOT NULL,
                lease_owner      BINARY(16)   NULL,
                lease_expires_at DATETIME(6)  NULL,
                status           VARCHAR(8)   NOT NULL DEFAULT 'pending',
                last_error       TEXT         NULL,
                ordering_key     VARCHAR(255) NULL,
                sent_at          DATETIME(6)  NULL,
                PRIMARY KEY (seq),
                UNIQUE KEY `{id_idx}` (id),
                KEY `{claim_idx}` (status, seq),
                KEY `{key_idx}` (ordering_key, status, seq),
                KEY `{sent_idx}` (status, sent_at),
                CHECK (status IN ('pending', 'sent', 'dead'))
            ) {TABLE_OPTIONS}"
        )],
    }]
}

fn inbox_migrations(table: &TableName) -> Vec<Migration> {
    let t = table.backtick_quoted();
    let received_idx = table.derived("_received_idx");
    vec![Migration {
        version: 1,
        description: "create the inbox table keyed by consumer and message id",
        statements: vec![format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                consumer          VARCHAR(200) NOT NULL,
                message_id        BINARY(16)   NOT NULL,
                received_at       DATETIME(6)  NOT NULL,
                duplicates        INT          NOT NULL DEFAULT 0,
                last_duplicate_at DATETIME(6)  NULL,
                PRIMARY KEY (consumer, message_id),
                KEY `{received_idx}` (received_at)
            ) {TABLE_OPTIONS}"
        )],
    }]
}

/// Creates or updates the tables `config` names, recording each step in
/// its bookkeeping table; applied steps are skipped, so calling it at every
/// start is cheap and safe. Concurrent callers are serialized by a named
/// lock (`GET_LOCK`). MySQL DDL is not transactional: every statement is
/// `IF NOT EXISTS`, so a run interrupted between a step and its
/// bookkeeping completes on the next run.
///
/// # Errors
/// [`StoreError::Config`] when a table is recorded as the other kind
/// (outbox vs inbox), a name is used twice, or the lock could not be had
/// within a minute; otherwise the DDL's error.
///
/// # Examples
///
/// ```no_run
/// # async fn run(pool: sqlx::MySqlPool) -> Result<(), Box<dyn std::error::Error>> {
/// let applied = hexeract_storage::mysql::migrate(&pool, &hexeract_storage::StorageConfig::default()).await?;
/// println!("{} migrations applied", applied.len());
/// # Ok(()) }
/// ```
pub async fn migrate(pool: &MySqlPool, config: &StorageConfig) -> Result<Vec<AppliedMigration>, StoreError> {
    let tables = planned(config)?;
    let book = &config.migrations;
    let on_error = || store_error("migrating", book);
    let mut conn = pool.acquire().await.map_err(on_error())?;
    let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
        .bind(MIGRATE_LOCK)
        .bind(MIGRATE_LOCK_WAIT_SECS)
        .fetch_one(&mut *conn)
        .await
        .map_err(on_error())?;
    if locked != Some(1) {
        return Err(StoreError::Config(format!(
            "another process held the `{MIGRATE_LOCK}` lock for {MIGRATE_LOCK_WAIT_SECS} s; migrations not applied"
        )));
    }
    let result = apply(&mut conn, book, tables).await;
    // Released on every path; a connection that died took the lock with it.
    let _ = sqlx::query("SELECT RELEASE_LOCK(?)").bind(MIGRATE_LOCK).execute(&mut *conn).await;
    result
}

async fn apply(
    conn: &mut sqlx::MySqlConnection,
    book: &TableName,
    tables: Vec<(TableName, TableKind)>,
) -> Result<Vec<AppliedMigration>, StoreError> {
    let on_error = || store_error("migrating", book);
    let b = book.backtick_quoted();
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {b} (
            table_name  VARCHAR(64)  NOT NULL,
            version     BIGINT       NOT NULL,
            kind        VARCHAR(16)  NOT NULL,
            description VARCHAR(255) NOT NULL,
            applied_at  DATETIME(6)  NOT NULL,
            PRIMARY KEY (table_name, version)
        ) {TABLE_OPTIONS}"
    )))
    .execute(&mut *conn)
    .await
    .map_err(on_error())?;
    let mut applied = Vec::new();
    for (table, kind) in tables {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT version, kind FROM {b} WHERE table_name = ?")))
            .bind(table.as_str())
            .fetch_all(&mut *conn)
            .await
            .map_err(on_error())?;
        let mut done = Vec::with_capacity(rows.len());
        for row in &rows {
            let version: i64 = row.try_get("version").map_err(on_error())?;
            let recorded: String = row.try_get("kind").map_err(on_error())?;
            check_kind(&table, kind, Some(&recorded))?;
            done.push(version);
        }
        let steps = match kind {
            TableKind::Outbox => outbox_migrations(&table),
            TableKind::Inbox => inbox_migrations(&table),
        };
        for step in steps.into_iter().filter(|step| !done.contains(&step.version)) {
            for statement in step.statements {
                sqlx::query(AssertSqlSafe(statement)).execute(&mut *conn).await.map_err(on_error())?;
            }
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {b} (table_name, version, kind, description, applied_at) VALUES (?, ?, ?, ?, {NOW})"
            )))
            .bind(table.as_str())
            .bind(step.version)
            .bind(kind.as_str())
            .bind(step.description)
            .execute(&mut *conn)
            .await
            .map_err(on_error())?;
            tracing::info!(table = %table, version = step.version, "applied migration: {}", step.description);
            applied.push(AppliedMigration {
                table: table.to_string(),
                version: step.version,
                description: step.description,
            });
        }
    }
    Ok(applied)
}

/// Index names the migrations create, as suffixes of the table name.
const OUTBOX_INDEXES: [&str; 4] = ["_id_idx", "_claim_idx", "_key_idx", "_sent_idx"];
const INBOX_INDEXES: [&str; 1] = ["_received_idx"];

/// Checks the tables `config` names (in the connection's current database)
/// against what the stores need: every missing table, column and index,
/// named. An empty list means the schema is complete.
///
/// # Errors
/// The catalog queries' errors.
pub async fn check_schema(pool: &MySqlPool, config: &StorageConfig) -> Result<Vec<SchemaProblem>, StoreError> {
    let mut problems = Vec::new();
    for (table, kind) in planned(config)? {
        let on_error = || store_error("checking the schema", &table);
        // Catalog text comes back as binary strings on some servers: read
        // bytes, compare as text.
        let as_text = |names: Vec<Vec<u8>>| -> Vec<String> {
            names.into_iter().map(|name| String::from_utf8_lossy(&name).into_owned()).collect()
        };
        let columns: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT CAST(column_name AS BINARY) FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = ?",
        )
        .bind(table.as_str())
        .fetch_all(pool)
        .await
        .map_err(on_error())?;
        let indexes: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT DISTINCT CAST(index_name AS BINARY) FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = ?",
        )
        .bind(table.as_str())
        .fetch_all(pool)
        .await
        .map_err(on_error())?;
        let suffixes: &[&'static str] = match kind {
            TableKind::Outbox => &OUTBOX_INDEXES,
            TableKind::Inbox => &INBOX_INDEXES,
        };
        let found = FoundTable { columns: as_text(columns), indexes: as_text(indexes) };
        problems.extend(compare(&table, kind, suffixes, &found));
    }
    Ok(problems)
}
