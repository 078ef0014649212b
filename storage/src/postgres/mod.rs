//! PostgreSQL (feature `postgres`): [`PgOutbox`], [`PgInbox`] and
//! [`migrate`].
//!
//! A claim is one statement: a CTE selects due rows in insertion order `FOR
//! UPDATE OF o SKIP LOCKED` (so concurrent pollers take disjoint rows and
//! never wait for each other) and an `UPDATE … RETURNING` leases them; it
//! commits on its own. Saves `NOTIFY` the channel [`NOTIFY_CHANNEL`] (payload:
//! the table name) in the saving transaction, delivered on commit; a
//! background listener turns those into wake-ups.
//!
//! Times are `timestamptz` from the server's `now()`, ids and lease owners
//! `uuid`.

mod inbox;
mod listener;
mod operations;
mod outbox;
mod schema;

use hexeract_runtime::ports::outbox::StoreError;

pub use inbox::PgInbox;
pub use outbox::PgOutbox;
pub use schema::{check_schema, migrate};

use crate::TableName;
use crate::common::errors::{self, ErrorClass};

/// The channel saves notify and the listener listens on; the payload is
/// the outbox table's name.
pub const NOTIFY_CHANNEL: &str = "hexeract_outbox";

fn classify(error: &sqlx::Error) -> ErrorClass {
    if let Some(class) = errors::classify_driver(error) {
        return class;
    }
    let sqlx::Error::Database(db) = error else {
        return ErrorClass::Query;
    };
    let code = db.code().unwrap_or_default();
    match code.as_ref() {
        "42P01" => ErrorClass::MissingTable,
        "40001" | "40P01" => ErrorClass::Conflict,
        // admin_shutdown, crash_shutdown, cannot_connect_now,
        // too_many_connections, and the whole connection_exception class.
        "57P01" | "57P02" | "57P03" | "53300" => ErrorClass::Unavailable,
        code if code.starts_with("08") => ErrorClass::Unavailable,
        _ => ErrorClass::Query,
    }
}

pub(crate) fn store_error<'a>(
    operation: &'static str,
    table: &'a TableName,
) -> impl FnOnce(sqlx::Error) -> StoreError + 'a {
    move |error| errors::store_error(operation, table, classify(&error), error)
}
