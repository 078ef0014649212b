//! MySQL 8 and MariaDB 10.6+ (feature `mysql`): [`MySqlOutbox`],
//! [`MySqlInbox`] and [`migrate`].
//!
//! MariaDB has `SKIP LOCKED` but neither `UPDATE … RETURNING` nor `LIMIT`
//! inside an `IN` subquery, so a claim is a short `READ COMMITTED`
//! transaction: select the due rows' `seq` in insertion order `FOR UPDATE
//! SKIP LOCKED`, update those rows, read them back, commit. `READ
//! COMMITTED` takes no gap locks, so claims do not block concurrent saves;
//! a deadlock victim (error 1213) is retried quietly a few times.
//!
//! Times are `DATETIME(6)` in UTC from `UTC_TIMESTAMP(6)` (microseconds,
//! independent of the session time zone), ids and lease owners
//! `BINARY(16)`.

mod inbox;
mod operations;
mod outbox;
mod schema;

use hexeract_runtime::ports::outbox::StoreError;
use sqlx::mysql::MySqlDatabaseError;

pub use inbox::MySqlInbox;
pub use outbox::MySqlOutbox;
pub use schema::{check_schema, migrate};

use crate::TableName;
use crate::common::errors::{self, ErrorClass};

/// The database clock: UTC with microseconds, whatever the session's time
/// zone.
pub(crate) const NOW: &str = "UTC_TIMESTAMP(6)";

/// `ER_DUP_ENTRY`.
pub(crate) const DUPLICATE_KEY: u16 = 1062;

fn error_number(error: &sqlx::Error) -> Option<u16> {
    match error {
        sqlx::Error::Database(db) => db.try_downcast_ref::<MySqlDatabaseError>().map(MySqlDatabaseError::number),
        _ => None,
    }
}

fn classify(error: &sqlx::Error) -> ErrorClass {
    if let Some(class) = errors::classify_driver(error) {
        return class;
    }
    match error_number(error) {
        // ER_NO_SUCH_TABLE
        Some(1146) => ErrorClass::MissingTable,
        // ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
        Some(1213 | 1205) => ErrorClass::Conflict,
        // too many connections, server shutdown, connection killed, and the
        // client-side "gone away" family when the server reports them.
        Some(1040 | 1053 | 1927 | 2002 | 2003 | 2006 | 2013) => ErrorClass::Unavailable,
        _ => ErrorClass::Query,
    }
}

pub(crate) fn store_error<'a>(
    operation: &'static str,
    table: &'a TableName,
) -> impl FnOnce(sqlx::Error) -> StoreError + 'a {
    move |error| errors::store_error(operation, table, classify(&error), error)
}
