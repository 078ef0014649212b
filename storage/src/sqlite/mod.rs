//! SQLite (feature `sqlite`, the default): [`SqliteOutbox`],
//! [`SqliteInbox`] and [`migrate`].
//!
//! SQLite has one writer at a time and no row locks, so a claim is one
//! `BEGIN IMMEDIATE` transaction (it takes the write lock up front, waiting
//! up to the busy timeout) that selects, leases and returns the due rows and
//! commits. Open the pool with [`connect_options`]: WAL (readers never wait
//! for the writer), a busy timeout, `synchronous = NORMAL`.
//!
//! Times are `INTEGER` Unix milliseconds from SQLite's own clock
//! (`unixepoch('subsec')`), ids and lease owners 16-byte `BLOB`s.

mod inbox;
mod operations;
mod outbox;
mod schema;

use std::path::Path;
use std::time::Duration;

use hexeract_runtime::ports::outbox::StoreError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

pub use inbox::SqliteInbox;
pub use outbox::SqliteOutbox;
pub use schema::{check_schema, migrate};

use crate::TableName;
use crate::common::errors::{self, ErrorClass};

/// The database clock, in Unix milliseconds.
pub(crate) const NOW: &str = "CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)";

/// Connection options for an outbox database file: created if missing, WAL
/// journal, `synchronous = NORMAL` (durable across process crashes, one
/// fsync per checkpoint), a 5 s busy timeout so that writers queue rather
/// than fail with "database is locked".
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), sqlx::Error> {
/// let pool = sqlx::SqlitePool::connect_with(hexeract_storage::sqlite::connect_options("app.db")).await?;
/// # Ok(()) }
/// ```
pub fn connect_options(path: impl AsRef<Path>) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
}

fn classify(error: &sqlx::Error) -> ErrorClass {
    if let Some(class) = errors::classify_driver(error) {
        return class;
    }
    let sqlx::Error::Database(db) = error else {
        return ErrorClass::Query;
    };
    if db.message().starts_with("no such table") {
        return ErrorClass::MissingTable;
    }
    let code = db.code().and_then(|code| code.parse::<i32>().ok()).unwrap_or(0);
    match code & 0xff {
        // SQLITE_BUSY, SQLITE_LOCKED: another writer held the lock past the
        // busy timeout. SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN: the file
        // cannot be used right now.
        5 | 6 | 10 | 13 | 14 => ErrorClass::Unavailable,
        _ => ErrorClass::Query,
    }
}

pub(crate) fn store_error<'a>(
    operation: &'static str,
    table: &'a TableName,
) -> impl FnOnce(sqlx::Error) -> StoreError + 'a {
    move |error| errors::store_error(operation, table, classify(&error), error)
}
