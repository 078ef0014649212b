//! The SQLite outbox store.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use hexeract_runtime::ports::outbox::{LeaseOwner, OutboxRecord, OutboxStats, OutboxStore, StoreError};
use hexeract_runtime::{BoxFuture, MessageId};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, Sqlite, SqlitePool, Transaction};
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{NOW, store_error};
use crate::common::row::{RawRow, bounded_error, column_error, headers_json};
use crate::common::{ID_CHUNK, INSERT_CHUNK, PENDING, durations, padded_len, placeholders};
use crate::save::check_outgoing;
use crate::{OutboxConfig, Outgoing, SentRetention};

/// The outbox on SQLite.
///
/// Cheap to clone: clones share the pool, the statements and the wake-up.
/// Build it with [`SqliteOutbox::new`], after [`migrate`](super::migrate)
/// created the table.
///
/// # Examples
///
/// ```no_run
/// use hexeract_storage::{OutboxConfig, StorageConfig, sqlite::{self, SqliteOutbox}};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = sqlx::SqlitePool::connect_with(sqlite::connect_options("app.db")).await?;
/// sqlite::migrate(&pool, &StorageConfig::default()).await?;
/// let outbox = SqliteOutbox::new(pool.clone(), OutboxConfig::default())?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteOutbox {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) pool: SqlitePool,
    pub(super) config: OutboxConfig,
    pub(super) sql: Statements,
    pub(super) wakeup: Arc<Notify>,
}

/// SQL text built once from the validated table name.
pub(super) struct Statements {
    pub(super) insert_head: String,
    pub(super) insert_row: String,
    pub(super) insert_tail: &'static str,
    pub(super) claim: Arc<str>,
    pub(super) dead_unreadable: Arc<str>,
    pub(super) mark_failed: Arc<str>,
    pub(super) mark_dead: Arc<str>,
    pub(super) stats: Arc<str>,
    pub(super) retry_dead: Arc<str>,
    pub(super) retry_all_dead: Arc<str>,
    pub(super) list_dead: Arc<str>,
    pub(super) purge_sent: Arc<str>,
    pub(super) verify: Arc<str>,
    pub(super) mark_sent_head: String,
    pub(super) release_head: String,
}

const RETURNED: &str =
    "seq, id, name, payload, content_type, headers, correlation_id, causation_id, created_at, attempts, ordering_key";

impl Statements {
    fn new(config: &OutboxConfig) -> Self {
        let t = config.table.ansi_quoted();
        let arc = |sql: String| -> Arc<str> { sql.into() };
        Statements {
            insert_head: format!(
                "INSERT INTO {t} (id, name, payload, content_type, headers, correlation_id, causation_id, ordering_key, \
                 created_at, next_attempt_at) VALUES "
            ),
            insert_row: format!("(?, ?, ?, ?, ?, ?, ?, ?, {NOW}, {NOW})"),
            insert_tail: " ON CONFLICT (id) DO NOTHING",
            // One statement under BEGIN IMMEDIATE: the write lock is held from
            // the start, so two claimers never see the same row as due. The
            // lease expiry doubles as `next_attempt_at`, so "due" is one range
            // test on an indexed column whatever the lease state.
            claim: arc(format!(
                "UPDATE {t} SET attempts = attempts + 1, lease_owner = ?1, \
                   lease_expires_at = {NOW} + ?2, next_attempt_at = {NOW} + ?2 \
                 WHERE seq IN ( \
                   SELECT o.seq FROM {t} AS o \
                   WHERE o.status = 'pending' AND o.next_attempt_at <= {NOW} \
                     AND (o.ordering_key IS NULL OR NOT EXISTS ( \
                       SELECT 1 FROM {t} AS e \
                       WHERE e.ordering_key = o.ordering_key AND e.status = 'pending' AND e.seq < o.seq)) \
                   ORDER BY o.seq LIMIT ?3) \
                 RETURNING {RETURNED}"
            )),
            dead_unreadable: arc(format!(
                "UPDATE {t} SET status = 'dead', last_error = ?1, lease_owner = NULL, lease_expires_at = NULL \
                 WHERE seq = ?2"
            )),
            mark_failed: arc(format!(
                "UPDATE {t} SET next_attempt_at = {NOW} + ?1, last_error = ?2, lease_owner = NULL, \
                   lease_expires_at = NULL \
                 WHERE id = ?3 AND lease_owner = ?4 AND status = 'pending'"
            )),
            mark_dead: arc(format!(
                "UPDATE {t} SET status = 'dead', last_error = ?1, lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = ?2 AND lease_owner = ?3 AND status = 'pending'"
            )),
            stats: arc(format!(
                "SELECT \
                   (SELECT COUNT(*) FROM {t} WHERE status = 'pending') AS pending, \
                   (SELECT COUNT(*) FROM {t} WHERE status = 'pending' AND lease_expires_at > n.now) AS in_flight, \
                   (SELECT COUNT(*) FROM {t} WHERE status = 'dead') AS dead, \
                   (SELECT COUNT(*) FROM {t} WHERE status = 'sent') AS sent, \
                   (SELECT MIN(created_at) FROM {t} WHERE status = 'pending') AS oldest, \
                   n.now AS now \
                 FROM (SELECT {NOW} AS now) AS n"
            )),
            retry_dead: arc(format!(
                "UPDATE {t} SET status = 'pending', attempts = 0, next_attempt_at = {NOW}, lease_owner = NULL, \
                   lease_expires_at = NULL WHERE id = ?1 AND status = 'dead'"
            )),
            retry_all_dead: arc(format!(
                "UPDATE {t} SET status = 'pending', attempts = 0, next_attempt_at = {NOW}, lease_owner = NULL, \
                   lease_expires_at = NULL WHERE status = 'dead'"
            )),
            list_dead: arc(format!(
                "SELECT id, name, attempts, last_error, ordering_key, created_at FROM {t} \
                 WHERE status = 'dead' ORDER BY seq LIMIT ?1"
            )),
            purge_sent: arc(format!(
                "DELETE FROM {t} WHERE seq IN ( \
                   SELECT seq FROM {t} WHERE status = 'sent' AND sent_at < {NOW} - ?1 LIMIT ?2)"
            )),
            verify: arc(format!(
                "SELECT seq, id, name, payload, content_type, headers, correlation_id, causation_id, created_at, \
                   attempts, next_attempt_at, lease_owner, lease_expires_at, status, last_error, ordering_key, sent_at \
                 FROM {t} WHERE 1 = 0"
            )),
            mark_sent_head: match config.retention {
                SentRetention::Delete => format!("DELETE FROM {t}"),
                SentRetention::Keep => {
                    format!("UPDATE {t} SET status = 'sent', sent_at = {NOW}, lease_expires_at = NULL")
                }
            },
            // Restores the attempt the claim counted: the row was never
            // dispatched.
            release_head: format!(
                "UPDATE {t} SET attempts = MAX(attempts - 1, 0), lease_owner = NULL, lease_expires_at = NULL, \
                 next_attempt_at = {NOW}"
            ),
        }
    }

    fn insert(&self, rows: usize) -> String {
        let mut sql = String::with_capacity(self.insert_head.len() + rows * (self.insert_row.len() + 2) + 32);
        sql.push_str(&self.insert_head);
        for i in 0..rows {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&self.insert_row);
        }
        sql.push_str(self.insert_tail);
        sql
    }

    /// `mark_sent` (per retention) or `release` over `n` ids; `?1` is the owner.
    fn by_ids(head: &str, n: usize) -> String {
        let list = placeholders(n, 2, |i| format!("?{i}"));
        format!("{head} WHERE lease_owner = ?1 AND status = '{PENDING}' AND id IN ({list})")
    }
}

impl SqliteOutbox {
    /// An outbox over the table `config` names.
    ///
    /// # Errors
    /// [`StoreError::Config`] when the configuration is invalid (see
    /// [`OutboxConfig::validate`]).
    pub fn new(pool: SqlitePool, config: OutboxConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let sql = Statements::new(&config);
        Ok(SqliteOutbox { inner: Arc::new(Inner { pool, config, sql, wakeup: Arc::new(Notify::new()) }) })
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.pool
    }

    /// The configuration.
    pub fn config(&self) -> &OutboxConfig {
        &self.inner.config
    }

    crate::save::save_api!(Sqlite);

    /// Saves pre-encoded rows, each unless a row with its id exists already
    /// (insert if absent: the idempotent enqueue with caller-chosen ids).
    /// Returns how many rows were inserted.
    ///
    /// # Errors
    /// [`StoreError::Config`] for an over-long name or ordering key,
    /// otherwise the insert's error.
    pub async fn save_outgoing(&self, tx: &mut Transaction<'_, Sqlite>, rows: &[Outgoing]) -> Result<u64, StoreError> {
        rows.iter().try_for_each(check_outgoing)?;
        let mut inserted = 0;
        for chunk in rows.chunks(INSERT_CHUNK) {
            let headers: Vec<String> = chunk.iter().map(|row| headers_json(&row.envelope.meta.headers)).collect();
            let sql = self.inner.sql.insert(chunk.len());
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for (row, headers) in chunk.iter().zip(&headers) {
                let meta = &row.envelope.meta;
                query = query
                    .bind(meta.id.0)
                    .bind(meta.name.as_ref())
                    .bind(row.envelope.payload.as_slice())
                    .bind(row.envelope.codec.content_type())
                    .bind(headers.as_str())
                    .bind(meta.correlation_id.0)
                    .bind(meta.causation_id.map(|id| id.0))
                    .bind(row.ordering_key.as_deref());
            }
            let done = query
                .execute(&mut **tx)
                .await
                .map_err(store_error("saving to the outbox", &self.inner.config.table))?;
            inserted += done.rows_affected();
        }
        if inserted > 0 {
            // Before the commit: the poller may look too early and find
            // nothing, then polls again on its interval.
            self.inner.wakeup.notify_one();
        }
        Ok(inserted)
    }

    async fn claim_rows(
        &self,
        owner: LeaseOwner,
        limit: NonZeroU32,
        lease: Duration,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let lease = durations::millis("lease", lease, true)?;
        let limit = limit.get().min(self.inner.config.max_batch);
        let table = &self.inner.config.table;
        let sql = &self.inner.sql;
        let on_error = || store_error("claiming outbox rows", table);
        let mut tx = self.inner.pool.begin_with("BEGIN IMMEDIATE").await.map_err(on_error())?;
        let rows = sqlx::query(AssertSqlSafe(sql.claim.clone()))
            .bind(owner.0)
            .bind(lease)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(on_error())?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get("seq").map_err(on_error())?;
            match read_row(row).and_then(RawRow::into_record) {
                Ok(record) => records.push((seq, record)),
                Err(reason) => {
                    tracing::warn!(table = %table, seq, reason = %reason, "unreadable outbox row marked dead");
                    sqlx::query(AssertSqlSafe(sql.dead_unreadable.clone()))
                        .bind(bounded_error(&format!("unreadable: {reason}")))
                        .bind(seq)
                        .execute(&mut *tx)
                        .await
                        .map_err(on_error())?;
                }
            }
        }
        tx.commit().await.map_err(on_error())?;
        // Oldest first: insertion order, which is the database's `seq`.
        records.sort_by_key(|(seq, _)| *seq);
        Ok(records.into_iter().map(|(_, record)| record).collect())
    }

    async fn update_by_ids(
        &self,
        operation: &'static str,
        head: &str,
        owner: LeaseOwner,
        ids: &[MessageId],
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        for chunk in ids.chunks(ID_CHUNK) {
            let n = padded_len(chunk.len());
            let mut query = sqlx::query(AssertSqlSafe(Statements::by_ids(head, n))).bind(owner.0);
            for i in 0..n {
                query = query.bind(chunk[i.min(chunk.len() - 1)].0);
            }
            let done =
                query.execute(&self.inner.pool).await.map_err(store_error(operation, &self.inner.config.table))?;
            total += done.rows_affected();
        }
        Ok(total)
    }

    async fn mark_sent_rows(&self, owner: LeaseOwner, ids: &[MessageId]) -> Result<u64, StoreError> {
        self.update_by_ids("marking outbox rows sent", &self.inner.sql.mark_sent_head, owner, ids).await
    }

    async fn release_rows(&self, owner: LeaseOwner, ids: &[MessageId]) -> Result<u64, StoreError> {
        self.update_by_ids("releasing outbox leases", &self.inner.sql.release_head, owner, ids).await
    }

    async fn mark_failed_row(
        &self,
        owner: LeaseOwner,
        id: MessageId,
        error: &str,
        retry_after: Duration,
    ) -> Result<bool, StoreError> {
        let delay = durations::millis("retry_after", retry_after, false)?;
        let done = sqlx::query(AssertSqlSafe(self.inner.sql.mark_failed.clone()))
            .bind(delay)
            .bind(bounded_error(error))
            .bind(id.0)
            .bind(owner.0)
            .execute(&self.inner.pool)
            .await
            .map_err(store_error("marking an outbox row failed", &self.inner.config.table))?;
        Ok(done.rows_affected() == 1)
    }

    async fn mark_dead_row(&self, owner: LeaseOwner, id: MessageId, error: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(AssertSqlSafe(self.inner.sql.mark_dead.clone()))
            .bind(bounded_error(error))
            .bind(id.0)
            .bind(owner.0)
            .execute(&self.inner.pool)
            .await
            .map_err(store_error("marking an outbox row dead", &self.inner.config.table))?;
        Ok(done.rows_affected() == 1)
    }

    async fn read_stats(&self) -> Result<OutboxStats, StoreError> {
        let table = &self.inner.config.table;
        let on_error = || store_error("reading outbox stats", table);
        let row = sqlx::query(AssertSqlSafe(self.inner.sql.stats.clone()))
            .fetch_one(&self.inner.pool)
            .await
            .map_err(on_error())?;
        let count = |column: &str| -> Result<u64, StoreError> {
            let n: i64 = row.try_get(column).map_err(on_error())?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        let in_flight = count("in_flight")?;
        let oldest: Option<i64> = row.try_get("oldest").map_err(on_error())?;
        let now: i64 = row.try_get("now").map_err(on_error())?;
        Ok(OutboxStats {
            pending: count("pending")?.saturating_sub(in_flight),
            in_flight,
            dead: count("dead")?,
            sent: count("sent")?,
            oldest_pending_age: oldest.map(|oldest| Duration::from_millis(u64::try_from(now - oldest).unwrap_or(0))),
        })
    }
}

pub(super) fn from_millis(millis: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn read_row(row: &SqliteRow) -> Result<RawRow, String> {
    let id: Uuid = row.try_get("id").map_err(column_error("id"))?;
    Ok(RawRow {
        id,
        name: row.try_get("name").map_err(column_error("name")),
        payload: row.try_get("payload").map_err(column_error("payload")),
        content_type: row.try_get("content_type").map_err(column_error("content_type")),
        headers: row.try_get("headers").map_err(column_error("headers")),
        correlation_id: row.try_get("correlation_id").map_err(column_error("correlation_id")),
        causation_id: row.try_get("causation_id").map_err(column_error("causation_id")),
        created_at: row.try_get("created_at").map(from_millis).map_err(column_error("created_at")),
        attempts: row.try_get("attempts").map_err(column_error("attempts")),
        ordering_key: row.try_get("ordering_key").map_err(column_error("ordering_key")),
    })
}

impl OutboxStore for SqliteOutbox {
    fn table(&self) -> &str {
        self.inner.config.table.as_str()
    }

    fn claim(
        &self,
        owner: LeaseOwner,
        limit: NonZeroU32,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<OutboxRecord>, StoreError>> {
        Box::pin(self.claim_rows(owner, limit, lease))
    }

    fn mark_sent<'a>(&'a self, owner: LeaseOwner, ids: &'a [MessageId]) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.mark_sent_rows(owner, ids))
    }

    fn mark_failed<'a>(
        &'a self,
        owner: LeaseOwner,
        id: MessageId,
        error: &'a str,
        retry_after: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.mark_failed_row(owner, id, error, retry_after))
    }

    fn mark_dead<'a>(
        &'a self,
        owner: LeaseOwner,
        id: MessageId,
        error: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.mark_dead_row(owner, id, error))
    }

    fn release<'a>(&'a self, owner: LeaseOwner, ids: &'a [MessageId]) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.release_rows(owner, ids))
    }

    fn stats(&self) -> BoxFuture<'_, Result<OutboxStats, StoreError>> {
        Box::pin(self.read_stats())
    }

    fn wakeup(&self) -> Arc<Notify> {
        self.inner.wakeup.clone()
    }

    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // This store's own table only: inboxes are the application's to migrate.
            let config = crate::StorageConfig::default().outbox(self.inner.config.table.clone()).inbox(None);
            super::migrate(&self.inner.pool, &config).await.map(drop)
        })
    }
}

impl std::fmt::Debug for SqliteOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteOutbox").field("config", &self.inner.config).finish_non_exhaustive()
    }
}
