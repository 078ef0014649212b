//! The PostgreSQL inbox store.

use std::sync::Arc;
use std::time::Duration;

use hexeract_runtime::MessageId;
use hexeract_runtime::ports::outbox::StoreError;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Row, Transaction};

use super::store_error;
use crate::common::{ID_CHUNK, durations};
use crate::inbox::check_consumer;
use crate::{InboxOutcome, InboxStats, TableName};

/// The inbox on PostgreSQL: which message ids each consumer has processed.
///
/// # Examples
///
/// ```no_run
/// use hexeract_storage::{InboxOutcome, TableName, postgres::PgInbox};
///
/// # async fn run(pool: sqlx::PgPool, message_id: hexeract_runtime::MessageId) -> Result<(), Box<dyn std::error::Error>> {
/// let inbox = PgInbox::new(pool.clone(), TableName::new("hexeract_inbox")?);
/// let mut tx = pool.begin().await?;
/// if inbox.record(&mut tx, message_id, "projection").await? == InboxOutcome::First {
///     // ... the side effect, in `tx` ...
/// }
/// tx.commit().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PgInbox {
    pool: PgPool,
    table: TableName,
    record: Arc<str>,
    duplicates: Arc<str>,
    purge: Arc<str>,
}

impl PgInbox {
    /// An inbox over `table` (created by [`migrate`](super::migrate)).
    pub fn new(pool: PgPool, table: TableName) -> Self {
        let t = table.ansi_quoted();
        PgInbox {
            // A second transaction inserting the same key waits for the
            // first; when that one commits, ON CONFLICT turns the insert
            // into the duplicate count.
            record: format!(
                "INSERT INTO {t} AS i (consumer, message_id) VALUES ($1, $2) \
                 ON CONFLICT (consumer, message_id) DO UPDATE SET duplicates = i.duplicates + 1, \
                   last_duplicate_at = now() \
                 RETURNING duplicates"
            )
            .into(),
            duplicates: format!("SELECT COALESCE(SUM(duplicates), 0)::int8 FROM {t} WHERE consumer = $1").into(),
            purge: format!(
                "DELETE FROM {t} WHERE (consumer, message_id) IN ( \
                   SELECT consumer, message_id FROM {t} \
                   WHERE received_at < now() - ($1::float8 * interval '1 microsecond') LIMIT $2)"
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
    /// Two transactions racing on one id: the second waits for the first;
    /// if the first commits, the second gets `Duplicate`, if it rolls back,
    /// `First`. (Under `REPEATABLE READ` or `SERIALIZABLE` the second fails
    /// with a serialization error instead: retry the transaction.)
    ///
    /// # Errors
    /// [`StoreError::Config`] for an empty consumer name or one over 200
    /// characters; otherwise the insert's error (the transaction is then
    /// aborted).
    pub async fn record(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        message_id: MessageId,
        consumer: &str,
    ) -> Result<InboxOutcome, StoreError> {
        check_consumer(consumer)?;
        let duplicates: i32 = sqlx::query_scalar(AssertSqlSafe(self.record.clone()))
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
        let age = durations::micros("inbox retention", age, false)?;
        let mut total = 0;
        loop {
            let done = sqlx::query(AssertSqlSafe(self.purge.clone()))
                .bind(age as f64)
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
            "SELECT count(*)::int8 AS entries, count(DISTINCT consumer)::int8 AS consumers, \
               COALESCE(SUM(duplicates), 0)::int8 AS duplicates, \
               EXTRACT(EPOCH FROM (now() - MIN(received_at)))::float8 AS oldest \
             FROM {}",
            self.table.ansi_quoted()
        )))
        .fetch_one(&self.pool)
        .await
        .map_err(on_error())?;
        let count = |column: &str| -> Result<u64, StoreError> {
            Ok(u64::try_from(row.try_get::<i64, _>(column).map_err(on_error())?).unwrap_or(0))
        };
        let oldest: Option<f64> = row.try_get("oldest").map_err(on_error())?;
        Ok(InboxStats {
            entries: count("entries")?,
            consumers: count("consumers")?,
            duplicates: count("duplicates")?,
            oldest_age: oldest.map(|secs| Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::ZERO)),
        })
    }
}
