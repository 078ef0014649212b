//! Checking a database against the schema the stores expect: what an
//! operator runs before starting a system against a database migrated by
//! someone else (`hexeract outbox check`).

use std::fmt;

use crate::TableName;
use crate::migrate::TableKind;

/// One way a table differs from what the stores need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaProblem {
    /// The table does not exist.
    MissingTable {
        /// The table.
        table: String,
    },
    /// The table exists without a column the stores read or write.
    MissingColumn {
        /// The table.
        table: String,
        /// The missing column.
        column: &'static str,
    },
    /// An index the migrations create is absent: the stores still work,
    /// but claims or purges scan the table.
    MissingIndex {
        /// The table.
        table: String,
        /// The missing index.
        index: String,
    },
}

impl fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaProblem::MissingTable { table } => write!(f, "table `{table}` is missing"),
            SchemaProblem::MissingColumn { table, column } => {
                write!(f, "table `{table}` has no column `{column}`")
            }
            SchemaProblem::MissingIndex { table, index } => write!(f, "table `{table}` has no index `{index}`"),
        }
    }
}

/// Columns every outbox table has, whatever the dialect.
pub(crate) const OUTBOX_COLUMNS: [&str; 17] = [
    "seq",
    "id",
    "name",
    "payload",
    "content_type",
    "headers",
    "correlation_id",
    "causation_id",
    "created_at",
    "attempts",
    "next_attempt_at",
    "lease_owner",
    "lease_expires_at",
    "status",
    "last_error",
    "ordering_key",
    "sent_at",
];

/// Columns every inbox table has.
pub(crate) const INBOX_COLUMNS: [&str; 5] =
    ["consumer", "message_id", "received_at", "duplicates", "last_duplicate_at"];

/// What a dialect found for one table: its columns (empty when the table
/// does not exist) and its index names.
pub(crate) struct FoundTable {
    pub columns: Vec<String>,
    pub indexes: Vec<String>,
}

/// Compares what was found with what `kind` needs; `index_suffixes` are the
/// dialect's index names, as suffixes of the table name.
pub(crate) fn compare(
    table: &TableName,
    kind: TableKind,
    index_suffixes: &[&'static str],
    found: &FoundTable,
) -> Vec<SchemaProblem> {
    let name = table.to_string();
    if found.columns.is_empty() {
        return vec![SchemaProblem::MissingTable { table: name }];
    }
    let wanted: &[&'static str] = match kind {
        TableKind::Outbox => &OUTBOX_COLUMNS,
        TableKind::Inbox => &INBOX_COLUMNS,
    };
    let has = |list: &[String], item: &str| list.iter().any(|found| found.eq_ignore_ascii_case(item));
    let mut problems: Vec<SchemaProblem> = wanted
        .iter()
        .filter(|column| !has(&found.columns, column))
        .map(|column| SchemaProblem::MissingColumn { table: name.clone(), column })
        .collect();
    problems.extend(
        index_suffixes
            .iter()
            .map(|suffix| table.derived(suffix))
            .filter(|index| !has(&found.indexes, index))
            .map(|index| SchemaProblem::MissingIndex { table: name.clone(), index }),
    );
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_problem_is_named() {
        let table = TableName::new("hx").expect("valid");
        let none = FoundTable { columns: vec![], indexes: vec![] };
        assert_eq!(
            compare(&table, TableKind::Inbox, &[], &none),
            vec![SchemaProblem::MissingTable { table: "hx".into() }]
        );
        let partial = FoundTable {
            columns: ["consumer", "MESSAGE_ID", "received_at", "duplicates"].map(String::from).to_vec(),
            indexes: vec![],
        };
        let problems = compare(&table, TableKind::Inbox, &["_received_idx"], &partial);
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["table `hx` has no column `last_duplicate_at`", "table `hx` has no index `hx_received_idx`"]);
    }
}
