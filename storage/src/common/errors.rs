//! Mapping driver errors to [`StoreError`]: "try again later" apart from
//! "this statement is wrong", and a missing table named.

use hexeract_runtime::ports::outbox::StoreError;

use crate::TableName;

/// What a database error means to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// The table does not exist (migrations not run).
    MissingTable,
    /// The server is unreachable, shutting down, out of connections, or
    /// (SQLite) locked past the busy timeout: back off and retry.
    Unavailable,
    /// A deadlock or serialization victim: the statement may simply be run
    /// again. (SQLite, with one writer, has none.)
    #[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
    Conflict,
    /// Anything else: the statement failed.
    Query,
}

/// Classifies errors that do not come from the server itself: I/O, TLS and
/// pool errors mean the database could not be reached or the pool is
/// exhausted.
pub(crate) fn classify_driver(error: &sqlx::Error) -> Option<ErrorClass> {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => Some(ErrorClass::Unavailable),
        sqlx::Error::Database(_) => None,
        _ => Some(ErrorClass::Query),
    }
}

/// The [`StoreError`] for `error`, classified by `class`.
pub(crate) fn store_error(
    operation: &'static str,
    table: &TableName,
    class: ErrorClass,
    error: sqlx::Error,
) -> StoreError {
    match class {
        ErrorClass::MissingTable => StoreError::MissingTable(table.to_string()),
        ErrorClass::Unavailable => StoreError::Unavailable { operation, source: Box::new(error) },
        ErrorClass::Conflict | ErrorClass::Query => StoreError::Query { operation, source: Box::new(error) },
    }
}
