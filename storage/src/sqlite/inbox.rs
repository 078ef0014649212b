//! The SQLite inbox store.

use std::sync::Arc;
use std::time::Duration;

use hexeract_runtime::MessageId;
use hexeract_runtime::ports::outbox::StoreError;
use sqlx::{AssertSqlSafe, Row, Sqlite, SqlitePool, Transaction};

use super::{NOW, store_error};
use crate::common::{ID_CHUNK, durations};
use crate::inbox::check_consumer;
use crate::{InboxOutcome, InboxStats, TableName};

/// The inbox on SQLite: which message ids each consumer has processed.
///
/// # Examples
///
/// ```no_run
/// use hexeract_storage::{InboxOutcome, TableName, sqlite::SqliteInbox};
///
/// # async fn run(pool: sqlx::SqlitePool, message_id: hexeract_runtime::MessageId) -> Result<(), Box<dyn std::error::Error>> {
/// let inbox = SqliteInbox::new(pool.clone(), TableName::new("hexeract_inbox")?);
/// let mut tx = pool.begin().await?;
/// if inbox.record(&mut tx, message_id, "projection").await? == InboxOutcome::First {
///     // ... the side effect, in `tx` ...
/// }
/// tx.commit().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteInbox {
    pool: SqlitePool,
    table: TableName,
    record: Arc<str>,
    duplicates: Arc<str>,
    purge: Arc<str>,
}

impl SqliteInbox {
    /// An inbox over `table` (created by [`migrate`](super::migrate)).
    pub fn new(pool: SqlitePool, table: TableName) -> Self {
        let t = table.ansi_quoted();
        SqliteInbox {
            record: format!(
                "INSERT INTO {t} (consumer, message_id, received_at) VALUES (?1, ?2, {NOW}) \
                 ON CONFLICT (consumer, message_id) DO UPDATE SET duplicates = duplicates + 1, \
                   last_duplicate_at = {NOW} \
                 RETURNING duplicates"
            )
            .into(),
            duplicates: format!("SELECT COALESCE(SUM(duplicates), 0) FROM {t} WHERE consumer = ?1").into(),
            purge: format!(
                "DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE received_at < {NOW} - ?1 LIMIT ?2)"
            )
            .into(),
            pool,
            table,
        }
    }

    /// The table name.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// Records that `consumer` processes `message_id`, in the caller's
    /// transaction. [`InboxOutcome::Duplicate`] when it was recorded before;
    /// the duplicate is then counted on the existing row.
    ///
    /// SQLite has one writer: a second transaction recording the same id
    /// waits (busy timeout) until the first commits, then sees the
    /// duplicate; if the first rolls back, the second is `First`. Begin the
    /// transaction with `BEGIN IMMEDIATE` when it reads before it writes.
    ///
    /// # Errors
    /// [`StoreError::Config`] for an empty consumer name or one over 200
    /// characters; [`StoreError::Unavailable`] when the write lock could not
    /// be had within the busy timeout.
    pub async fn record(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
        message_id: MessageId,
        consumer: &str,
    ) -> Result<InboxOutcome, StoreError> {
        check_consumer(consumer)?;
        let duplicates: i64 = sqlx::query_scalar(AssertSqlSafe(self.record.clone()))
            .bind(consumer)
            .bind(message_id.0)
            .fetch_one(&mut **tx)
            .await
            .map_err(store_error("recording in the inbox", &self.table))?;
        Ok(if duplicates == 0 { InboxOutcome::First } else { InboxOutcome::Duplicate })
    }

    /// How many duplicates `consumer` has skipped (over the rows still
    /// kept).
    ///
    /// # Errors
    /// The query's error.
    pub async fn duplicates(&self, consumer: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(self.duplicates.clone()))
            .bind(consumer)
            .fetch_one(&self.pool)
            .await
            .map_err(store_error("counting inbox duplicates", &self.table))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes entries received more than `age` ago (database clock), in
    /// chunks. A redelivery older than the window is then processed again:
    /// keep the window longer than any redelivery delay. Returns how many.
    ///
    /// # Errors
    /// [`StoreError::Config`] for a window over a year; the delete's error.
    pub async fn purge_older_than(&self, age: Duration) -> Result<u64, StoreError> {
        let age = durations::millis("inbox retention", age, false)?;
        let mut total = 0;
        loop {
            let done = sqlx::query(AssertSqlSafe(self.purge.clone()))
                .bind(age)
                .bind(ID_CHUNK as i64)
                .execute(&self.pool)
                .await
                .map_err(store_error("purging the inbox", &self.table))?;
            total += done.rows_affected();
            if done.rows_affected() < ID_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// Entries, consumers, duplicates skipped and the oldest entry's age.
    ///
    /// # Errors
    /// The query's error ([`StoreError::MissingTable`] before migrating).
    pub async fn stats(&self) -> Result<InboxStats, StoreError> {
        let on_error = || store_error("reading inbox stats", &self.table);
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT COUNT(*) AS entries, COUNT(DISTINCT consumer) AS consumers, \
               COALESCE(SUM(duplicates), 0) AS duplicates, {NOW} - MIN(received_at) AS oldest \
             FROM {}",
            self.table.ansi_quoted()
        )))
        .fetch_one(&self.pool)
        .await
        .map_err(on_error())?;
        let count = |column: &str| -> Result<u64, StoreError> {
            Ok(u64::try_from(row.try_get::<i64, _>(column).map_err(on_error())?).unwrap_or(0))
        };
        let oldest: Option<i64> = row.try_get("oldest").map_err(on_error())?;
        Ok(InboxStats {
            entries: count("entries")?,
            consumers: count("consumers")?,
            duplicates: count("duplicates")?,
            oldest_age: oldest.map(|millis| Duration::from_millis(u64::try_from(millis).unwrap_or(0))),
        })
    }
}
