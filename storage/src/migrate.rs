//! Migrations: what they are, independent of the dialect. Each dialect's
//! `schema` module lists its DDL and applies it under a lock, recording
//! each step in the bookkeeping table (`hexeract_migrations` by default),
//! keyed by table name and version. Applying is idempotent: applied
//! versions are skipped, and every statement is `IF NOT EXISTS`, so a run
//! interrupted between DDL and bookkeeping (MySQL DDL is not
//! transactional) completes on the next run.

use hexeract_runtime::ports::outbox::StoreError;

use crate::TableName;

/// A migration the call applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AppliedMigration {
    /// The table it created or changed.
    pub table: String,
    /// Its version for that table.
    pub version: i64,
    /// What it does.
    pub description: &'static str,
}

/// Which kind of table a migration list builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableKind {
    Outbox,
    Inbox,
}

impl TableKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TableKind::Outbox => "outbox",
            TableKind::Inbox => "inbox",
        }
    }
}

/// One versioned step for one table.
pub(crate) struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub statements: Vec<String>,
}

/// The bookkeeping found for a table says it is another kind of table:
/// refusing beats adding outbox indexes to an inbox.
pub(crate) fn check_kind(table: &TableName, wanted: TableKind, recorded: Option<&str>) -> Result<(), StoreError> {
    match recorded {
        Some(kind) if kind != wanted.as_str() => Err(StoreError::Config(format!(
            "table `{table}` is recorded as an {kind} table, not an {}",
            wanted.as_str()
        ))),
        _ => Ok(()),
    }
}

/// The tables `config` asks for, with their kind, checking that no name is
/// used twice.
pub(crate) fn planned(config: &crate::StorageConfig) -> Result<Vec<(TableName, TableKind)>, StoreError> {
    let mut tables = vec![(config.outbox.clone(), TableKind::Outbox)];
    if let Some(inbox) = &config.inbox {
        tables.push((inbox.clone(), TableKind::Inbox));
    }
    for (table, _) in &tables {
        if table == &config.migrations {
            return Err(StoreError::Config(format!("table `{table}` cannot also be the migrations table")));
        }
    }
    if config.inbox.as_ref() == Some(&config.outbox) {
        return Err(StoreError::Config(format!("table `{}` cannot be both outbox and inbox", config.outbox)));
    }
    Ok(tables)
}
