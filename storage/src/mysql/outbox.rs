//! The MySQL/MariaDB outbox store.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use hexeract_runtime::ports::outbox::{LeaseOwner, OutboxRecord, OutboxStats, OutboxStore, StoreError};
use hexeract_runtime::{BoxFuture, MessageId};
use sqlx::mysql::MySqlRow;
use sqlx::{AssertSqlSafe, Connection, MySql, MySqlPool, Row, Transaction};
use time::PrimitiveDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{DUPLICATE_KEY, NOW, classify, error_number, store_error};
use crate::common::errors::ErrorClass;
use crate::common::row::{RawRow, bounded_error, column_error, headers_json};
use crate::common::{
    CONFLICT_RETRIES, ID_CHUNK, INSERT_CHUNK, PENDING, conflict_pause, durations, padded_len, placeholders,
};
use crate::save::check_outgoing;
use crate::{OutboxConfig, Outgoing, SentRetention};

/// The outbox on MySQL 8 or MariaDB 10.6+.
///
/// Cheap to clone: clones share the pool, the statements and the wake-up.
///
/// # Examples
///
/// ```no_run
/// use hexeract_storage::{OutboxConfig, StorageConfig, mysql::{self, MySqlOutbox}};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = sqlx::MySqlPool::connect("mysql://root@127.0.0.1:3306/app").await?;
/// mysql::migrate(&pool, &StorageConfig::default()).await?;
/// let outbox = MySqlOutbox::new(pool.clone(), OutboxConfig::default())?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MySqlOutbox {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) pool: MySqlPool,
    pub(super) config: OutboxConfig,
    pub(super) sql: Statements,
    pub(super) wakeup: Arc<Notify>,
}

pub(super) struct Statements {
    pub(super) quoted: String,
    pub(super) insert_head: String,
    pub(super) insert_row: String,
    pub(super) select_due: Arc<str>,
    pub(super) mark_failed: Arc<str>,
    pub(super) mark_dead: Arc<str>,
    pub(super) dead_unreadable: Arc<str>,
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
        let t = config.table.backtick_quoted();
        let claim_idx = config.table.derived("_claim_idx");
        let arc = |sql: String| -> Arc<str> { sql.into() };
        Statements {
            insert_head: format!(
                "INSERT INTO {t} (id, name, payload, content_type, headers, correlation_id, causation_id, ordering_key, \
                 created_at, next_attempt_at) VALUES "
            ),
            insert_row: format!("(?, ?, ?, ?, ?, ?, ?, ?, {NOW}, {NOW})"),
            // Locks only the rows of `o`: the ordering-key probe in the
            // subquery is a plain consistent read (it neither locks nor skips
            // the earlier row another claim may hold). The lease expiry
            // doubles as `next_attempt_at`, so "due" is one range test.
            // FORCE INDEX: the optimizer, assuming pending rows spread evenly,
            // would walk the primary key in `seq` order, through every old
            // sent or dead row before the first pending one.
            select_due: arc(format!(
                "SELECT o.seq FROM {t} AS o FORCE INDEX (`{claim_idx}`) \
                 WHERE o.status = 'pending' AND o.next_attempt_at <= {NOW} \
                   AND (o.ordering_key IS NULL OR NOT EXISTS ( \
                     SELECT 1 FROM {t} AS e \
                     WHERE e.ordering_key = o.ordering_key AND e.status = 'pending' AND e.seq < o.seq)) \
                 ORDER BY o.seq \
                 LIMIT ? \
                 FOR UPDATE SKIP LOCKED"
            )),
            mark_failed: arc(format!(
                "UPDATE {t} SET next_attempt_at = {NOW} + INTERVAL ? MICROSECOND, last_error = ?, lease_owner = NULL, \
                   lease_expires_at = NULL \
                 WHERE id = ? AND lease_owner = ? AND status = 'pending'"
            )),
            mark_dead: arc(format!(
                "UPDATE {t} SET status = 'dead', last_error = ?, lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = ? AND lease_owner = ? AND status = 'pending'"
            )),
            dead_unreadable: arc(format!(
                "UPDATE {t} SET status = 'dead', last_error = ?, lease_owner = NULL, lease_expires_at = NULL \
                 WHERE seq = ?"
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
                   lease_expires_at = NULL WHERE id = ? AND status = 'dead'"
            )),
            retry_all_dead: arc(format!(
                "UPDATE {t} SET status = 'pending', attempts = 0, next_attempt_at = {NOW}, lease_owner = NULL, \
                   lease_expires_at = NULL WHERE status = 'dead'"
            )),
            list_dead: arc(format!(
                "SELECT id, name, attempts, last_error, ordering_key, created_at FROM {t} \
                 WHERE status = 'dead' ORDER BY seq LIMIT ?"
            )),
            purge_sent: arc(format!(
                "DELETE FROM {t} WHERE status = 'sent' AND sent_at < {NOW} - INTERVAL ? MICROSECOND LIMIT ?"
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
                "UPDATE {t} SET attempts = GREATEST(attempts - 1, 0), lease_owner = NULL, lease_expires_at = NULL, \
                 next_attempt_at = {NOW}"
            ),
            quoted: t,
        }
    }

    fn insert(&self, rows: usize) -> String {
        let mut sql = String::with_capacity(self.insert_head.len() + rows * (self.insert_row.len() + 2));
        sql.push_str(&self.insert_head);
        for i in 0..rows {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&self.insert_row);
        }
        sql
    }

    /// `head` fenced on the owner (first parameter) over `n` ids.
    fn fenced(head: &str, n: usize) -> String {
        let list = placeholders(n, 0, |_| "?".to_owned());
        format!("{head} WHERE lease_owner = ? AND status = '{PENDING}' AND id IN ({list})")
    }

    /// The lease update of the claim over `n` ids.
    fn lease(&self, n: usize) -> String {
        let t = &self.quoted;
        let list = placeholders(n, 0, |_| "?".to_owned());
        format!(
            "UPDATE {t} SET attempts = attempts + 1, lease_owner = ?, \
               lease_expires_at = {NOW} + INTERVAL ? MICROSECOND, next_attempt_at = {NOW} + INTERVAL ? MICROSECOND \
             WHERE seq IN ({list})"
        )
    }

    /// Reads back `n` claimed rows.
    fn read_back(&self, n: usize) -> String {
        let t = &self.quoted;
        let list = placeholders(n, 0, |_| "?".to_owned());
        format!("SELECT {RETURNED} FROM {t} WHERE seq IN ({list})")
    }
}

impl MySqlOutbox {
    /// An outbox over the table `config` names.
    ///
    /// # Errors
    /// [`StoreError::Config`] when the configuration is invalid (see
    /// [`OutboxConfig::validate`]).
    pub fn new(pool: MySqlPool, config: OutboxConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let sql = Statements::new(&config);
        Ok(MySqlOutbox { inner: Arc::new(Inner { pool, config, sql, wakeup: Arc::new(Notify::new()) }) })
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &MySqlPool {
        &self.inner.pool
    }

    /// The configuration.
    pub fn config(&self) -> &OutboxConfig {
        &self.inner.config
    }

    crate::save::save_api!(MySql);

    /// Saves pre-encoded rows, each unless a row with its id exists already
    /// (insert if absent: the idempotent enqueue with caller-chosen ids).
    /// Returns how many rows were inserted.
    ///
    /// A duplicate id fails only its own statement on MySQL (the
    /// transaction goes on): a chunk that meets one is inserted again row
    /// by row, skipping the rows that exist. A deadlock (error 1213), by
    /// contrast, rolls back the caller's whole transaction: it is reported
    /// as [`StoreError::Query`]; run the transaction again.
    ///
    /// # Errors
    /// [`StoreError::Config`] for an over-long name or ordering key,
    /// otherwise the insert's error.
    pub async fn save_outgoing(&self, tx: &mut Transaction<'_, MySql>, rows: &[Outgoing]) -> Result<u64, StoreError> {
        rows.iter().try_for_each(check_outgoing)?;
        let mut inserted = 0;
        for chunk in rows.chunks(INSERT_CHUNK) {
            match self.insert(tx, chunk).await {
                Ok(n) => inserted += n,
                Err(error) if error_number(&error) == Some(DUPLICATE_KEY) => {
                    for row in chunk {
                        match self.insert(tx, std::slice::from_ref(row)).await {
                            Ok(n) => inserted += n,
                            Err(error) if error_number(&error) == Some(DUPLICATE_KEY) => {}
                            Err(error) => {
                                return Err(store_error("saving to the outbox", &self.inner.config.table)(error));
                            }
                        }
                    }
                }
                Err(error) => return Err(store_error("saving to the outbox", &self.inner.config.table)(error)),
            }
        }
        if inserted > 0 {
            // Before the commit: the poller may look too early and find
            // nothing, then polls again on its interval.
            self.inner.wakeup.notify_one();
        }
        Ok(inserted)
    }

    async fn insert(&self, tx: &mut Transaction<'_, MySql>, rows: &[Outgoing]) -> Result<u64, sqlx::Error> {
        let headers: Vec<String> = rows.iter().map(|row| headers_json(&row.envelope.meta.headers)).collect();
        let mut query = sqlx::query(AssertSqlSafe(self.inner.sql.insert(rows.len())));
        for (row, headers) in rows.iter().zip(&headers) {
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
        Ok(query.execute(&mut **tx).await?.rows_affected())
    }

    async fn claim_rows(
        &self,
        owner: LeaseOwner,
        limit: NonZeroU32,
        lease: Duration,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let lease = durations::micros("lease", lease, true)?;
        let limit = limit.get().min(self.inner.config.max_batch);
        let table = &self.inner.config.table;
        let mut conflicts = 0;
        loop {
            match self.claim_once(owner, limit, lease).await {
                Ok(records) => return Ok(records),
                Err(error) if classify(&error) == ErrorClass::Conflict && conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    tracing::debug!(table = %table, error = %error, "claim was a deadlock victim; retrying");
                    conflict_pause(conflicts).await;
                }
                Err(error) => return Err(store_error("claiming outbox rows", table)(error)),
            }
        }
    }

    async fn claim_once(&self, owner: LeaseOwner, limit: u32, lease: i64) -> Result<Vec<OutboxRecord>, sqlx::Error> {
        let sql = &self.inner.sql;
        let table = &self.inner.config.table;
        let mut conn = self.inner.pool.acquire().await?;
        // No gap locks: a claim must not block the inserts of concurrent
        // saves. Applies to the next transaction only.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").execute(&mut *conn).await?;
        let mut tx = conn.begin().await?;
        let due: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(sql.select_due.clone()))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        if due.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let mut records = Vec::with_capacity(due.len());
        for chunk in due.chunks(ID_CHUNK) {
            let n = padded_len(chunk.len());
            let pad = |i: usize| chunk[i.min(chunk.len() - 1)];
            let mut update = sqlx::query(AssertSqlSafe(sql.lease(n))).bind(owner.0).bind(lease).bind(lease);
            let mut read = sqlx::query(AssertSqlSafe(sql.read_back(n)));
            for i in 0..n {
                update = update.bind(pad(i));
                read = read.bind(pad(i));
            }
            update.execute(&mut *tx).await?;
            for row in read.fetch_all(&mut *tx).await? {
                let seq: i64 = row.try_get("seq")?;
                match read_row(&row).and_then(RawRow::into_record) {
                    Ok(record) => records.push((seq, record)),
                    Err(reason) => {
                        tracing::warn!(table = %table, seq, reason = %reason, "unreadable outbox row marked dead");
                        sqlx::query(AssertSqlSafe(sql.dead_unreadable.clone()))
                            .bind(bounded_error(&format!("unreadable: {reason}")))
                            .bind(seq)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
        }
        tx.commit().await?;
        // Oldest first: insertion order, which is the database's `seq`.
        records.sort_by_key(|(seq, _)| *seq);
        Ok(records.into_iter().map(|(_, record)| record).collect())
    }

    async fn by_ids(
        &self,
        operation: &'static str,
        head: &str,
        owner: LeaseOwner,
        ids: &[MessageId],
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        for chunk in ids.chunks(ID_CHUNK) {
            let n = padded_len(chunk.len());
            let sql: Arc<str> = Statements::fenced(head, n).into();
            let mut conflicts = 0;
            let done = loop {
                let mut query = sqlx::query(AssertSqlSafe(sql.clone())).bind(owner.0);
                for i in 0..n {
                    query = query.bind(chunk[i.min(chunk.len() - 1)].0);
                }
                match query.execute(&self.inner.pool).await {
                    Ok(done) => break done,
                    Err(error) if classify(&error) == ErrorClass::Conflict && conflicts < CONFLICT_RETRIES => {
                        conflicts += 1;
                        conflict_pause(conflicts).await;
                    }
                    Err(error) => return Err(store_error(operation, &self.inner.config.table)(error)),
                }
            };
            total += done.rows_affected();
        }
        Ok(total)
    }

    async fn mark_sent_rows(&self, owner: LeaseOwner, ids: &[MessageId]) -> Result<u64, StoreError> {
        self.by_ids("marking outbox rows sent", &self.inner.sql.mark_sent_head, owner, ids).await
    }

    async fn release_rows(&self, owner: LeaseOwner, ids: &[MessageId]) -> Result<u64, StoreError> {
        self.by_ids("releasing outbox leases", &self.inner.sql.release_head, owner, ids).await
    }

    async fn mark_failed_row(
        &self,
        owner: LeaseOwner,
        id: MessageId,
        error: &str,
        retry_after: Duration,
    ) -> Result<bool, StoreError> {
        let delay = durations::micros("retry_after", retry_after, false)?;
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
        let oldest: Option<PrimitiveDateTime> = row.try_get("oldest").map_err(on_error())?;
        let now: PrimitiveDateTime = row.try_get("now").map_err(on_error())?;
        Ok(OutboxStats {
            pending: count("pending")?.saturating_sub(in_flight),
            in_flight,
            dead: count("dead")?,
            sent: count("sent")?,
            oldest_pending_age: oldest.map(|oldest| (now - oldest).try_into().unwrap_or(Duration::ZERO)),
        })
    }
}

/// The columns of a claimed row; `id` is a `BINARY(16)`, so always 16
/// bytes.
fn read_row(row: &MySqlRow) -> Result<RawRow, String> {
    let raw_id: Vec<u8> = row.try_get("id").map_err(column_error("id"))?;
    let id = Uuid::from_slice(&raw_id).map_err(|error| format!("column `id`: {error}"))?;
    Ok(RawRow {
        id,
        name: row.try_get("name").map_err(column_error("name")),
        payload: row.try_get("payload").map_err(column_error("payload")),
        content_type: row.try_get("content_type").map_err(column_error("content_type")),
        headers: row.try_get("headers").map_err(column_error("headers")),
        correlation_id: row.try_get("correlation_id").map_err(column_error("correlation_id")),
        causation_id: row.try_get("causation_id").map_err(column_error("causation_id")),
        created_at: row
            .try_get::<PrimitiveDateTime, _>("created_at")
            .map(PrimitiveDateTime::assume_utc)
            .map_err(column_error("created_at")),
        attempts: row.try_get::<i32, _>("attempts").map(i64::from).map_err(column_error("attempts")),
        ordering_key: row.try_get("ordering_key").map_err(column_error("ordering_key")),
    })
}

impl OutboxStore for MySqlOutbox {
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

impl std::fmt::Debug for MySqlOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlOutbox").field("config", &self.inner.config).finish_non_exhaustive()
    }
}
