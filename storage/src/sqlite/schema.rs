//! SQLite schema and migrations.

use hexeract_runtime::ports::outbox::StoreError;
use sqlx::{AssertSqlSafe, Row, SqlitePool};

use super::{NOW, store_error};
use crate::migrate::{Migration, TableKind, check_kind, planned};
use crate::schema_check::{FoundTable, SchemaProblem, compare};
use crate::{AppliedMigration, StorageConfig, TableName};

fn outbox_migrations(table: &TableName) -> Vec<Migration> {
    let t = table.ansi_quoted();
    let claim_idx = table.derived("_claim_idx");
    let key_idx = table.derived("_key_idx");
    let sent_idx = table.derived("_sent_idx");
    let dead_idx = table.derived("_dead_idx");
    vec![Migration {
        version: 1,
        description: "create the outbox table and its claim, ordering-key, sent and dead indexes",
        statements: vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    seq              INTEGER PRIMARY KEY,
                    id               BLOB    NOT NULL UNIQUE CHECK (length(id) = 16),
                    name             TEXT    NOT NULL,
                    payload          BLOB    NOT NULL,
                    content_type     TEXT    NOT NULL,
                    headers          TEXT    NOT NULL DEFAULT '{{}}',
                    correlation_id   BLOB    NOT NULL,
                    causation_id     BLOB,
                    created_at       INTEGER NOT NULL,
                    attempts         INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at  INTEGER NOT NULL,
                    lease_owner      BLOB,
                    lease_expires_at INTEGER,
                    status           TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
                    last_error       TEXT,
                    ordering_key     TEXT,
                    sent_at          INTEGER
                )"
            ),
            // The claim walks pending rows in insertion order and stops at its
            // limit.
            format!("CREATE INDEX IF NOT EXISTS \"{claim_idx}\" ON {t} (seq) WHERE status = 'pending'"),
            // "Is an earlier row with this key still pending?" is one probe.
            format!(
                "CREATE INDEX IF NOT EXISTS \"{key_idx}\" ON {t} (ordering_key, seq) \
                 WHERE status = 'pending' AND ordering_key IS NOT NULL"
            ),
            // Purges and counts of kept rows, listings and counts of dead
            // ones. Partial, like the claim index, so that no index leads
            // with `status` and tempts the planner away from the claim index.
            format!("CREATE INDEX IF NOT EXISTS \"{sent_idx}\" ON {t} (sent_at) WHERE status = 'sent'"),
            format!("CREATE INDEX IF NOT EXISTS \"{dead_idx}\" ON {t} (seq) WHERE status = 'dead'"),
        ],
    }]
}

fn inbox_migrations(table: &TableName) -> Vec<Migration> {
    let t = table.ansi_quoted();
    let received_idx = table.derived("_received_idx");
    vec![Migration {
        version: 1,
        description: "create the inbox table keyed by consumer and message id",
        statements: vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    consumer          TEXT    NOT NULL,
                    message_id        BLOB    NOT NULL,
                    received_at       INTEGER NOT NULL,
                    duplicates        INTEGER NOT NULL DEFAULT 0,
                    last_duplicate_at INTEGER,
                    PRIMARY KEY (consumer, message_id)
                )"
            ),
            format!("CREATE INDEX IF NOT EXISTS \"{received_idx}\" ON {t} (received_at)"),
        ],
    }]
}

/// Creates or updates the tables `config` names, recording each step in
/// its bookkeeping table; applied steps are skipped, so calling it at every
/// start is cheap and safe. Also switches the database file to WAL (a
/// persistent setting). Runs under `BEGIN IMMEDIATE`, so concurrent callers
/// apply each step once.
///
/// # Errors
/// [`StoreError::Config`] when a table is recorded as the other kind
/// (outbox vs inbox) or a name is used twice; otherwise the DDL's error.
///
/// # Examples
///
/// ```no_run
/// # async fn run(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
/// let applied = hexeract_storage::sqlite::migrate(&pool, &hexeract_storage::StorageConfig::default()).await?;
/// println!("{} migrations applied", applied.len());
/// # Ok(()) }
/// ```
pub async fn migrate(pool: &SqlitePool, config: &StorageConfig) -> Result<Vec<AppliedMigration>, StoreError> {
    let tables = planned(config)?;
    let book = &config.migrations;
    let on_error = || store_error("migrating", book);
    // WAL lets pollers and readers work while a writer commits; it cannot
    // be switched inside a transaction. An in-memory database answers
    // "memory", which is fine.
    sqlx::query("PRAGMA journal_mode = WAL").execute(pool).await.map_err(on_error())?;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(on_error())?;
    let b = book.ansi_quoted();
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {b} (
            table_name  TEXT    NOT NULL,
            version     INTEGER NOT NULL,
            kind        TEXT    NOT NULL,
            description TEXT    NOT NULL,
            applied_at  INTEGER NOT NULL,
            PRIMARY KEY (table_name, version)
        )"
    )))
    .execute(&mut *tx)
    .await
    .map_err(on_error())?;
    let mut applied = Vec::new();
    for (table, kind) in tables {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT version, kind FROM {b} WHERE table_name = ?1")))
            .bind(table.as_str())
            .fetch_all(&mut *tx)
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
                sqlx::query(AssertSqlSafe(statement)).execute(&mut *tx).await.map_err(on_error())?;
            }
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO {b} (table_name, version, kind, description, applied_at) VALUES (?1, ?2, ?3, ?4, {NOW})"
            )))
            .bind(table.as_str())
            .bind(step.version)
            .bind(kind.as_str())
            .bind(step.description)
            .execute(&mut *tx)
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
    tx.commit().await.map_err(on_error())?;
    Ok(applied)
}

/// Index names the migrations create, as suffixes of the table name.
const OUTBOX_INDEXES: [&str; 4] = ["_claim_idx", "_key_idx", "_sent_idx", "_dead_idx"];
const INBOX_INDEXES: [&str; 1] = ["_received_idx"];

/// Checks the tables `config` names against what the stores need: every
/// missing table, column and index, named. An empty list means the schema
/// is complete.
///
/// # Errors
/// The catalog queries' errors.
pub async fn check_schema(pool: &SqlitePool, config: &StorageConfig) -> Result<Vec<SchemaProblem>, StoreError> {
    let mut problems = Vec::new();
    for (table, kind) in planned(config)? {
        let on_error = || store_error("checking the schema", &table);
        let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?1)")
            .bind(table.as_str())
            .fetch_all(pool)
            .await
            .map_err(on_error())?;
        let indexes: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_index_list(?1)")
            .bind(table.as_str())
            .fetch_all(pool)
            .await
            .map_err(on_error())?;
        let suffixes: &[&'static str] = match kind {
            TableKind::Outbox => &OUTBOX_INDEXES,
            TableKind::Inbox => &INBOX_INDEXES,
        };
        problems.extend(compare(&table, kind, suffixes, &FoundTable { columns, indexes }));
    }
    Ok(problems)
}
