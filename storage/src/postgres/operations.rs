//! Operator functions of the PostgreSQL outbox: schema check, dead rows,
//! purges, the claim's query plan. The CLI builds on them.

use std::time::Duration;

use hexeract_runtime::MessageId;
use hexeract_runtime::ports::outbox::{LeaseOwner, StoreError};
use sqlx::{AssertSqlSafe, Row};

use super::outbox::PgOutbox;
use super::store_error;
#[cfg(doc)]
use crate::SentRetention;
use crate::common::{ID_CHUNK, durations};
use crate::{DeadMessage, DeadRow};

impl PgOutbox {
    /// Checks that the table exists with every column the store uses.
    ///
    /// # Errors
    /// [`StoreError::MissingTable`] when it does not exist (run
    /// [`migrate`](super::migrate)), [`StoreError::Query`] when a column is
    /// missing.
    pub async fn verify_schema(&self) -> Result<(), StoreError> {
        sqlx::query(AssertSqlSafe(self.inner.sql.verify.clone()))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(store_error("checking the outbox table", &self.inner.config.table))?;
        Ok(())
    }

    /// Deletes rows kept as `sent` ([`SentRetention::Keep`]) whose `sent_at`
    /// is older than `older_than`, in chunks. Returns how many.
    ///
    /// # Errors
    /// [`StoreError::Config`] for a retention over a year; otherwise the
    /// delete's error.
    pub async fn purge_sent(&self, older_than: Duration) -> Result<u64, StoreError> {
        let age = durations::micros("retention", older_than, false)?;
        let mut total = 0;
        loop {
            let done = sqlx::query(AssertSqlSafe(self.inner.sql.purge_sent.clone()))
                .bind(age as f64)
                .bind(ID_CHUNK as i64)
                .execute(&self.inner.pool)
                .await
                .map_err(store_error("purging sent outbox rows", &self.inner.config.table))?;
            total += done.rows_affected();
            if done.rows_affected() < ID_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// Makes a dead row pending again with a fresh attempt count. Returns
    /// whether the row was dead.
    ///
    /// # Errors
    /// The update's error.
    pub async fn retry_dead(&self, id: MessageId) -> Result<bool, StoreError> {
        let done = sqlx::query(AssertSqlSafe(self.inner.sql.retry_dead.clone()))
            .bind(id.0)
            .execute(&self.inner.pool)
            .await
            .map_err(store_error("retrying a dead outbox row", &self.inner.config.table))?;
        Ok(done.rows_affected() == 1)
    }

    /// Makes every dead row pending again. Returns how many.
    ///
    /// # Errors
    /// The update's error.
    pub async fn retry_all_dead(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(AssertSqlSafe(self.inner.sql.retry_all_dead.clone()))
            .execute(&self.inner.pool)
            .await
            .map_err(store_error("retrying dead outbox rows", &self.inner.config.table))?;
        Ok(done.rows_affected())
    }

    /// The query plan of the claim (`EXPLAIN`), one line per plan node: it
    /// should walk the `<table>_claim_idx` index, never scan the table.
    ///
    /// # Errors
    /// The query's error.
    pub async fn explain_claim(&self) -> Result<String, StoreError> {
        let lines: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {}", self.inner.sql.claim)))
            .bind(LeaseOwner::new().0)
            .bind(1_000_000.0_f64)
            .bind(100_i64)
            .fetch_all(&self.inner.pool)
            .await
            .map_err(store_error("explaining the claim", &self.inner.config.table))?;
        Ok(lines.join("\n"))
    }

    /// The oldest `limit` dead rows, with their last error.
    ///
    /// # Errors
    /// The query's error.
    pub async fn list_dead(&self, limit: u32) -> Result<Vec<DeadRow>, StoreError> {
        let table = &self.inner.config.table;
        let rows = sqlx::query(AssertSqlSafe(self.inner.sql.list_dead.clone()))
            .bind(i64::from(limit))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(store_error("listing dead outbox rows", table))?;
        rows.iter()
            .map(|row| {
                Ok(DeadRow {
                    id: MessageId(row.try_get("id")?),
                    name: row.try_get("name")?,
                    attempts: u32::try_from(row.try_get::<i32, _>("attempts")?).unwrap_or(0),
                    last_error: row.try_get("last_error")?,
                    ordering_key: row.try_get("ordering_key")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(store_error("listing dead outbox rows", table))
    }

    /// One dead row with its message: headers, payload, ids. `None` when no
    /// dead row has this id.
    ///
    /// # Errors
    /// The query's error.
    pub async fn show_dead(&self, id: MessageId) -> Result<Option<DeadMessage>, StoreError> {
        let table = &self.inner.config.table;
        let on_error = || store_error("reading a dead outbox row", table);
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, name, attempts, last_error, ordering_key, created_at, content_type, headers, \
               correlation_id, causation_id, payload FROM {} WHERE id = $1 AND status = 'dead'",
            table.ansi_quoted()
        )))
        .bind(id.0)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(on_error())?;
        let Some(row) = row else { return Ok(None) };
        let read = || -> Result<DeadMessage, sqlx::Error> {
            Ok(DeadMessage {
                row: DeadRow {
                    id: MessageId(row.try_get("id")?),
                    name: row.try_get("name")?,
                    attempts: u32::try_from(row.try_get::<i32, _>("attempts")?).unwrap_or(0),
                    last_error: row.try_get("last_error")?,
                    ordering_key: row.try_get("ordering_key")?,
                    created_at: row.try_get("created_at")?,
                },
                content_type: row.try_get("content_type")?,
                headers: row.try_get("headers")?,
                correlation_id: MessageId(row.try_get("correlation_id")?),
                causation_id: row.try_get::<Option<uuid::Uuid>, _>("causation_id")?.map(MessageId),
                payload: row.try_get("payload")?,
            })
        };
        read().map(Some).map_err(on_error())
    }

    /// Deletes dead rows saved more than `older_than` ago (database clock).
    /// Returns how many.
    ///
    /// # Errors
    /// [`StoreError::Config`] for an age over a year; the delete's error.
    pub async fn purge_dead(&self, older_than: Duration) -> Result<u64, StoreError> {
        let age = durations::micros("age", older_than, false)?;
        let table = &self.inner.config.table;
        let done = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {} WHERE status = 'dead' AND created_at < now() - ($1::float8 * interval '1 microsecond')",
            table.ansi_quoted()
        )))
        .bind(age as f64)
        .execute(&self.inner.pool)
        .await
        .map_err(store_error("purging dead outbox rows", table))?;
        Ok(done.rows_affected())
    }
}
