//! PostgreSQL schema and migrations.

use hexeract_runtime::ports::outbox::StoreError;
use sqlx::{AssertSqlSafe, PgPool, Row};

use super::store_error;
use crate::migrate::{Migration, TableKind, check_kind, planned};
use crate::schema_check::{FoundTable, SchemaProblem, compare};
use crate::{AppliedMigration, StorageConfig, TableName};

/// The advisory lock key serializing concurrent `migrate` calls
/// (an arbitrary constant: "hexeract" in ASCII, truncated).
const MIGRATE_LOCK: i64 = 0x6865_7865_7261_6374;

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
            // fillfactor 80: a claim and a failed attempt update no indexed
            // column, so with room on the page they are HOT updates.
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                    id               uuid        NOT NULL PRIMARY KEY,
                    seq              bigint      NOT NULL GENERATED ALWAYS AS IDENTITY,
                    name             text        NOT NULL,
                    payload          bytea       NOT NULL,
                    content_type     text        NOT NULL,
                    headers          text        NOT NULL DEFAULT '{{}}',
                    correlation_id   uuid        NOT NULL,
                    causation_id     uuid,
                    created_at       timestamptz NOT NULL DEFAULT now(),
                    attempts         integer     NOT NULL DEFAULT 0,
                    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
                    lease_owner      uuid,
                    lease_expires_at timestamptz,
                    status           text        NOT NULL DEFAULT 'pending'
                                     CHECK (status IN ('pending', 'sent', 'dead')),
                    last_error       text,
                    ordering_key     text,
                    sent_at          timestamptz
                ) WITH (fillfactor = 80)"
            ),
            // The claim walks pending rows in insertion order and stops at its
            // limit; sent and dead rows are not in this index at all.
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
                    consumer          text        NOT NULL,
                    message_id        uuid        NOT NULL,
                    received_at       timestamptz NOT NULL DEFAULT now(),
                    duplicates        integer     NOT NULL DEFAULT 0,
                    last_duplicate_at timestamptz,
                    PRIMARY KEY (consumer, message_id)
                )"
            ),
            format!("CREATE INDEX IF NOT EXISTS \"{received_idx}\" ON {t} (received_at)"),
        ],
    }]
}

/// Creates or updates the tables `config` names, recording each step in
/// its bookkeeping table; applied steps are skipped, so calling it at every
/// start is cheap and safe. Runs in one transaction (PostgreSQL DDL is
/// transactional) under an advisory lock, so concurrent callers apply each
/// step once and a failure leaves nothing half-done.
///
/// # Errors
/// [`StoreError::Config`] when a table is recorded as the other kind
/// (outbox vs inbox) or a name is used twice; otherwise the DDL's error.
///
/// # Examples
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// let applied = hexeract_storage::postgres::migrate(&pool, &hexeract_storage::StorageConfig::default()).await?;
/// println!("{} migrations applied", applied.len());
/// # Ok(()) }
/// ```
pub async fn migrate(pool: &PgPool, config: &StorageConfig) -> Result<Vec<AppliedMigration>, StoreError> {
    let tables = planned(config)?;
    let book = &config.migrations;
    let on_error = || store_error("migrating", book);
    let mut tx = pool.begin().await.map_err(on_error())?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATE_LOCK).execute(&mut *tx).await.map_err(on_error())?;
    let b = book.ansi_quoted();
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {b} (
            table_name  text        NOT NULL,
            version     bigint      NOT NULL,
            kind        text        NOT NULL,
            description text        NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (table_name, version)
        )"
    )))
    .execute(&mut *tx)
    .await
    .map_err(on_error())?;
    let mut applied = Vec::new();
    for (table, kind) in tables {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT version, kind FROM {b} WHERE table_name = $1")))
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
                "INSERT INTO {b} (table_name, version, kind, description) VALUES ($1, $2, $3, $4)"
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

/// Checks the tables `config` names (in the connection's current schema)
/// against what the stores need: every missing table, column and index,
/// named. An empty list means the schema is complete.
///
/// # Errors
/// The catalog queries' errors.
pub async fn check_schema(pool: &PgPool, config: &StorageConfig) -> Result<Vec<SchemaProblem>, StoreError> {
    let mut problems = Vec::new();
    for (table, kind) in planned(config)? {
        let on_error = || store_error("checking the schema", &table);
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(table.as_str())
        .fetch_all(pool)
        .await
        .map_err(on_error())?;
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1",
        )
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
