//! The MySQL/MariaDB inbox store.

use std::sync::Arc;
use std::time::Duration;

use hexeract_runtime::MessageId;
use hexeract_runtime::ports::outbox::StoreError;
use sqlx::{AssertSqlSafe, MySql, MySqlPool, Row, Transaction};

use super::{NOW, store_error};
use crate::common::{ID_CHUNK, durations};
use crate::inbox::check_consumer;
use crate::{InboxOutcome, InboxStats, TableName};

/// The inbox on MySQL 8 or MariaDB 10.6+: which message ids each consumer
/// has processed.
///
/// # Examples
///
/// ```no_run
/// use hexeract_storage::{InboxOutcome, TableName, mysql::MySqlInbox};
///
/// # async fn run(pool: sqlx::MySqlPool, message_id: hexeract_runtime::MessageId) -> Result<(), Box<dyn std::error::Error>> {
/// let inbox = MySqlInbox::new(pool.clone(), TableName::new("hexeract_inbox")?);
/// let mut tx = pool.begin().await?;
/// if inbox.record(&mut tx, message_id, "projection").await? == InboxOutcome::First {
///     // ... the side effect, in `tx` ...
/// }
/// tx.commit().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MySqlInbox {
    pool: MySqlPool,
    table: TableName,
    record: Arc<str>,
    duplicates: Arc<str>,
    purge: Arc<str>,
}

impl MySqlInbox {
    /// An inbox over `table` (created by [`migrate`](super::migrate)).
    pub fn new(pool: MySqlPool, table: TableName) -> Self {
        let t = table.backtick_quoted();
        MySqlInbox {
            // Affected rows: 1 for an insert, 2 for an update that changed
            // the row (with or without CLIENT_FOUND_ROWS, since the update
            // always changes `duplicates`).
            record: format!(
                "INSERT INTO {t} (consumer, message_id, received_at) VALUES (?, ?, {NOW}) \
                 ON DUPLICATE KEY UPDATE duplicates = duplicates + 1, last_duplicate_at = {NOW}"
            )
            .into(),
            duplicates: format!("SELECT CAST(COALESCE(SUM(duplicates), 0) AS SIGNED) FROM {t} WHERE consumer = ?")
                .into(),
            purge: format!("DELETE FROM {t} WHERE received_at < {NOW} - INTERVAL ? MICROSECOND LIMIT ?").into(),
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
    /// Two transactions racing on one id: the second waits for the first's
    /// row lock; if the first commits, the second gets `Duplicate`, if it
    /// rolls back, `First`. InnoDB may instead pick one as a deadlock
    /// victim (error 1213, reported as [`StoreError::Query`]): its whole
    /// transaction was rolled back, so retry it.
    ///
    /// # Errors
    /// [`StoreError::Config`] for an empty consumer name or one over 200
    /// characters; otherwise the insert's error.
    pub async fn record(
        &self,
        tx: &mut Transaction<'_, MySql>,
        message_id: MessageId,
        consumer: &str,
    ) -> Result<InboxOutcome, StoreError> {
        check_consumer(consumer)?;
        let done = sqlx::query(AssertSqlSafe(self.record.clone()))
            .bind(consumer)
            .bind(message_id.0)
            .execute(&mut **tx)
            .await
            .map_err(store_error("recording in the inbox", &self.table))?;
        Ok(if done.rows_affected() == 1 { InboxOutcome::First } else { InboxOutcome::Duplicate })
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
        let age = durations::micros("inbox retention", age, false)?;
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
            "SELECT CAST(COUNT(*) AS SIGNED) AS entries, CAST(COUNT(DISTINCT consumer) AS SIGNED) AS consumers, \
               CAST(COALESCE(SUM(duplicates), 0) AS SIGNED) AS duplicates, \
               CAST(TIMESTAMPDIFF(MICROSECOND, MIN(received_at), {NOW}) AS SIGNED) AS oldest \
             FROM {}",
            self.table.backtick_quoted()
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
            oldest_age: oldest.map(|micros| Duration::from_micros(u64::try_from(micros).unwrap_or(0))),
        })
    }
}
