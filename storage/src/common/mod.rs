//! What the dialects share: error mapping, duration checks, reading a row
//! back as a message, and the SQL fragments that do not depend on the
//! dialect.

pub(crate) mod durations;
pub(crate) mod errors;
pub(crate) mod row;

/// Rows per multi-row `INSERT` in `save_all`: 8 bind parameters per row
/// keep a statement far below SQLite's 32,766 and the 65,535 of
/// PostgreSQL and MySQL.
pub(crate) const INSERT_CHUNK: usize = 500;

/// Ids per statement in the statements that list ids (`mark_sent`,
/// `release`), for the same bind limits.
pub(crate) const ID_CHUNK: usize = 1_024;

/// How many placeholders an id list of `n` ids gets: the next power of two
/// (the last id repeated), so that the driver's statement cache holds a
/// dozen shapes rather than one per batch size.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
pub(crate) fn padded_len(n: usize) -> usize {
    n.next_power_of_two().min(ID_CHUNK).max(n)
}

/// How often a claim retries when the database picks it as a deadlock or
/// serialization victim before giving up with the error.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) const CONFLICT_RETRIES: u32 = 4;

/// Status values of the outbox `status` column.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
pub(crate) const PENDING: &str = "pending";

/// A comma-separated list of `n` placeholders produced by `placeholder(i)`.
#[cfg(any(feature = "sqlite", feature = "mysql"))]
pub(crate) fn placeholders(n: usize, start: usize, placeholder: impl Fn(usize) -> String) -> String {
    (start..start + n).map(placeholder).collect::<Vec<_>>().join(", ")
}

/// A short pause before retrying a deadlock victim, growing with the
/// attempt and jittered so that the two victims do not collide again.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) async fn conflict_pause(attempt: u32) {
    let base = 5u64 << attempt.min(4);
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % base.max(1);
    tokio::time::sleep(std::time::Duration::from_millis(base + jitter)).await;
}
