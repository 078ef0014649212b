//! The PostgreSQL outbox store.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hexeract_runtime::ports::outbox::{LeaseOwner, OutboxRecord, OutboxStats, OutboxStore, StoreError};
use hexeract_runtime::{BoxFuture, MessageId};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Row, Transaction};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use uuid::Uuid;

use super::{NOTIFY_CHANNEL, classify, listener, store_error};
use crate::common::errors::ErrorClass;
use crate::common::row::{RawRow, bounded_error, column_error, headers_json};
use crate::common::{CONFLICT_RETRIES, INSERT_CHUNK, conflict_pause, durations};
use crate::save::check_outgoing;
use crate::{OutboxConfig, Outgoing, SentRetention};

/// The outbox on PostgreSQL.
///
/// Cheap to clone: clones share the pool, the statements, the wake-up and
/// the `LISTEN` task. The task starts on the first call to
/// [`OutboxStore::wakeup`] made inside a tokio runtime, when
/// [`OutboxConfig::notify`] is on (the default), and stops when the last
/// clone is dropped.
///
/// # Examples
///
/// ```no_run
/// use hexeract_storage::{OutboxConfig, StorageConfig, postgres::{self, PgOutbox}};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/app").await?;
/// postgres::migrate(&pool, &StorageConfig::default()).await?;
/// let outbox = PgOutbox::new(pool.clone(), OutboxConfig::default())?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgOutbox {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) pool: PgPool,
    pub(super) config: OutboxConfig,
    pub(super) sql: Statements,
    pub(super) wakeup: Arc<Notify>,
    pub(super) listener: Mutex<Option<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.listener.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            task.abort();
        }
    }
}

pub(super) struct Statements {
    pub(super) insert_head: String,
    pub(super) insert_tail: String,
    pub(super) claim: Arc<str>,
    pub(super) dead_unreadable: Arc<str>,
    pub(super) mark_sent: Arc<str>,
    pub(super) mark_failed: Arc<str>,
    pub(super) mark_dead: Arc<str>,
    pub(super) release: Arc<str>,
    pub(super) stats: Arc<str>,
    pub(super) retry_dead: Arc<str>,
    pub(super) retry_all_dead: Arc<str>,
    pub(super) list_dead: Arc<str>,
    pub(super) purge_sent: Arc<str>,
    pub(super) verify: Arc<str>,
}

const RETURNED: &str = "u.seq, u.id, u.name, u.payload, u.content_type, u.headers, u.correlation_id, u.causation_id, \
                        u.created_at, u.attempts, u.ordering_key";

impl Statements {
    fn new(config: &OutboxConfig) -> Self {
        let t = config.table.ansi_quoted();
        let arc = |sql: String| -> Arc<str> { sql.into() };
        let micros = |n: u8| format!("(${n}::float8 * interval '1 microsecond')");
        let (lease, delay, age) = (micros(2), micros(1), micros(1));
        Statements {
            insert_head: format!(
                "WITH ins AS (INSERT INTO {t} (id, name, payload, content_type, headers, correlation_id, causation_id, \
                 ordering_key) VALUES "
            ),
            // The NOTIFY rides in the same statement, only when a row was
            // inserted; PostgreSQL delivers it on commit, never on rollback.
            insert_tail: if config.notify {
                "ON CONFLICT (id) DO NOTHING RETURNING 1) \
                 SELECT c.n FROM (SELECT count(*) AS n FROM ins) AS c, \
                 LATERAL (SELECT pg_notify($1, $2) WHERE c.n > 0) AS z"
                    .to_owned()
            } else {
                "ON CONFLICT (id) DO NOTHING RETURNING 1) SELECT count(*) AS n FROM ins".to_owned()
            },
            // One statement, committed on its own. `FOR UPDATE OF o SKIP
            // LOCKED` locks only the candidate rows (never the rows the
            // ordering-key probe reads) and skips rows another claim holds.
            // The lease expiry doubles as `next_attempt_at`, so "due" is one
            // range test whatever the lease state.
            claim: arc(format!(
                "WITH due AS ( \
                   SELECT o.id FROM {t} AS o \
                   WHERE o.status = 'pending' AND o.next_attempt_at <= now() \
                     AND (o.ordering_key IS NULL OR NOT EXISTS ( \
                       SELECT 1 FROM {t} AS e \
                       WHERE e.ordering_key = o.ordering_key AND e.status = 'pending' AND e.seq < o.seq)) \
                   ORDER BY o.seq \
                   LIMIT $3 \
                   FOR UPDATE OF o SKIP LOCKED) \
                 UPDATE {t} AS u SET attempts = u.attempts + 1, lease_owner = $1, \
                   lease_expires_at = now() + {lease}, next_attempt_at = now() + {lease} \
                 FROM due WHERE u.id = due.id \
                 RETURNING {RETURNED}"
            )),
            // Fenced on the lease the claim just took.
            dead_unreadable: arc(format!(
                "UPDATE {t} SET status = 'dead', last_error = $1, lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = $2 AND lease_owner = $3 AND status = 'pending'"
            )),
            mark_sent: arc(match config.retention {
                SentRetention::Delete => {
                    format!("DELETE FROM {t} WHERE id = ANY($2) AND lease_owner = $1 AND status = 'pending'")
                }
                SentRetention::Keep => format!(
                    "UPDATE {t} SET status = 'sent', sent_at = now(), lease_expires_at = NULL \
                     WHERE id = ANY($2) AND lease_owner = $1 AND status = 'pending'"
                ),
            }),
            mark_failed: arc(format!(
                "UPDATE {t} SET next_attempt_at = now() + {delay}, last_error = $2, lease_owner = NULL, \
                   lease_expires_at = NULL \
                 WHERE id = $3 AND lease_owner = $4 AND status = 'pending'"
            )),
            mark_dead: arc(format!(
                "UPDATE {t} SET status = 'dead', last_error = $1, lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = $2 AND lease_owner = $3 AND status = 'pending'"
            )),
            // Restores the attempt the claim counted: the row was never
            // dispatched.
            release: arc(format!(
                "UPDATE {t} SET attempts = GREATEST(attempts - 1, 0), lease_owner = NULL, lease_expires_at = NULL, \
                   next_attempt_at = now() \
                 WHERE id = ANY($2) AND lease_owner = $1 AND status = 'pending'"
            )),
            stats: arc(format!(
                "SELECT \
                   (SELECT count(*) FROM {t} WHERE status = 'pending') AS pending, \
                   (SELECT count(*) FROM {t} WHERE status = 'pending' AND lease_expires_at > now()) AS in_flight, \
                   (SELECT count(*) FROM {t} WHERE status = 'dead') AS dead, \
                   (SELECT count(*) FROM {t} WHERE status = 'sent') AS sent, \
                   (SELECT min(created_at) FROM {t} WHERE status = 'pending') AS oldest, \
                   now() AS now"
            )),
            retry_dead: arc(format!(
                "UPDATE {t} SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_owner = NULL, \
                   lease_expires_at = NULL WHERE id = $1 AND status = 'dead'"
            )),
            retry_all_dead: arc(format!(
                "UPDATE {t} SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_owner = NULL, \
                   lease_expires_at = NULL WHERE status = 'dead'"
            )),
            list_dead: arc(format!(
                "SELECT id, name, attempts, last_error, ordering_key, created_at FROM {t} \
                 WHERE status = 'dead' ORDER BY seq LIMIT $1"
            )),
            purge_sent: arc(format!(
                "DELETE FROM {t} WHERE id IN ( \
                   SELECT id FROM {t} WHERE status = 'sent' AND sent_at < now() - {age} LIMIT $2)"
            )),
            verify: arc(format!(
                "SELECT seq, id, name, payload, content_type, headers, correlation_id, causation_id, created_at, \
                   attempts, next_attempt_at, lease_owner, lease_expires_at, status, last_error, ordering_key, sent_at \
                 FROM {t} WHERE false"
            )),
        }
    }

    /// The insert of `rows` rows; with NOTIFY, `$1` and `$2` are the
    /// channel and the table name, and the rows' parameters follow.
    fn insert(&self, rows: usize, notify: bool) -> String {
        let first = if notify { 3 } else { 1 };
        let mut sql = self.insert_head.clone();
        for row in 0..rows {
            let base = first + row * 8;
            if row > 0 {
                sql.push_str(", ");
            }
            let params: Vec<String> = (base..base + 8).map(|i| format!("${i}")).collect();
            sql.push('(');
            sql.push_str(&params.join(", "));
            sql.push(')');
        }
        sql.push(' ');
        sql.push_str(&self.insert_tail);
        sql
    }
}

impl PgOutbox {
    /// An outbox over the table `config` names.
    ///
    /// # Errors
    /// [`StoreError::Config`] when the configuration is invalid (see
    /// [`OutboxConfig::validate`]).
    pub fn new(pool: PgPool, config: OutboxConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let sql = Statements::new(&config);
        Ok(PgOutbox {
            inner: Arc::new(Inner { pool, config, sql, wakeup: Arc::new(Notify::new()), listener: Mutex::new(None) }),
        })
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The configuration.
    pub fn config(&self) -> &OutboxConfig {
        &self.inner.config
    }

    crate::save::save_api!(Postgres);

    /// Saves pre-encoded rows, each unless a row with its id exists already
    /// (insert if absent: the idempotent enqueue with caller-chosen ids).
    /// Returns how many rows were inserted.
    ///
    /// # Errors
    /// [`StoreError::Config`] for an over-long name or ordering key,
    /// otherwise the insert's error.
    pub async fn save_outgoing(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        rows: &[Outgoing],
    ) -> Result<u64, StoreError> {
        rows.iter().try_for_each(check_outgoing)?;
        let notify = self.inner.config.notify;
        let mut inserted = 0;
        for chunk in rows.chunks(INSERT_CHUNK) {
            let headers: Vec<String> = chunk.iter().map(|row| headers_json(&row.envelope.meta.headers)).collect();
            let mut query = sqlx::query_scalar::<_, i64>(AssertSqlSafe(self.inner.sql.insert(chunk.len(), notify)));
            if notify {
                query = query.bind(NOTIFY_CHANNEL).bind(self.inner.config.table.as_str());
            }
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
            let n = query
                .fetch_optional(&mut **tx)
                .await
                .map_err(store_error("saving to the outbox", &self.inner.config.table))?;
            inserted += u64::try_from(n.unwrap_or(0)).unwrap_or(0);
        }
        if inserted > 0 {
            // Before the commit: a poller in this process may look too early
            // and find nothing; the NOTIFY on commit wakes it again.
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
        let lease = durations::micros("lease", lease, true)?;
        let limit = limit.get().min(self.inner.config.max_batch);
        let table = &self.inner.config.table;
        let sql = &self.inner.sql;
        let mut conflicts = 0;
        let rows = loop {
            let result = sqlx::query(AssertSqlSafe(sql.claim.clone()))
                .bind(owner.0)
                .bind(lease as f64)
                .bind(i64::from(limit))
                .fetch_all(&self.inner.pool)
                .await;
            match result {
                Ok(rows) => break rows,
                Err(error) if classify(&error) == ErrorClass::Conflict && conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    tracing::debug!(table = %table, error = %error, "claim was a conflict victim; retrying");
                    conflict_pause(conflicts).await;
                }
                Err(error) => return Err(store_error("claiming outbox rows", table)(error)),
            }
        };
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get("seq").map_err(store_error("claiming outbox rows", table))?;
            let (id, read) = read_row(row);
            match read.and_then(RawRow::into_record) {
                Ok(record) => records.push((seq, record)),
                Err(reason) => {
                    // The lease is ours until it expires: marking the row dead
                    // now, fenced on it, is as safe as inside the claim.
                    tracing::warn!(table = %table, id = %id, reason = %reason, "unreadable outbox row marked dead");
                    sqlx::query(AssertSqlSafe(sql.dead_unreadable.clone()))
                        .bind(bounded_error(&format!("unreadable: {reason}")))
                        .bind(id)
                        .bind(owner.0)
                        .execute(&self.inner.pool)
                        .await
                        .map_err(store_error("marking an unreadable outbox row dead", table))?;
                }
            }
        }
        // Oldest first: insertion order, which is the database's `seq`.
        records.sort_by_key(|(seq, _)| *seq);
        Ok(records.into_iter().map(|(_, record)| record).collect())
    }

    async fn mark_sent_rows(&self, owner: LeaseOwner, ids: &[MessageId]) -> Result<u64, StoreError> {
        self.by_ids("marking outbox rows sent", &self.inner.sql.mark_sent, owner, ids).await
    }

    async fn release_rows(&self, owner: LeaseOwner, ids: &[MessageId]) -> Result<u64, StoreError> {
        self.by_ids("releasing outbox leases", &self.inner.sql.release, owner, ids).await
    }

    async fn by_ids(
        &self,
        operation: &'static str,
        sql: &Arc<str>,
        owner: LeaseOwner,
        ids: &[MessageId],
    ) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let done = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(owner.0)
            .bind(ids)
            .execute(&self.inner.pool)
            .await
            .map_err(store_error(operation, &self.inner.config.table))?;
        Ok(done.rows_affected())
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
            .bind(delay as f64)
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
        let oldest: Option<OffsetDateTime> = row.try_get("oldest").map_err(on_error())?;
        let now: OffsetDateTime = row.try_get("now").map_err(on_error())?;
        Ok(OutboxStats {
            pending: count("pending")?.saturating_sub(in_flight),
            in_flight,
            dead: count("dead")?,
            sent: count("sent")?,
            oldest_pending_age: oldest.map(|oldest| (now - oldest).try_into().unwrap_or(Duration::ZERO)),
        })
    }

    fn start_listener(&self) {
        if !self.inner.config.notify {
            return;
        }
        let mut slot = self.inner.listener.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() {
            return;
        }
        // Outside a runtime there is nothing to spawn on: polling alone
        // still relays everything.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let options = (*self.inner.pool.connect_options()).clone();
        let task =
            runtime.spawn(listener::listen(options, self.inner.config.table.to_string(), self.inner.wakeup.clone()));
        *slot = Some(task.abort_handle());
    }
}

/// The row id (always a valid uuid: the column type) and the rest.
fn read_row(row: &PgRow) -> (Uuid, Result<RawRow, String>) {
    let id: Uuid = match row.try_get("id") {
        Ok(id) => id,
        Err(error) => return (Uuid::nil(), Err(column_error("id")(error))),
    };
    let raw = RawRow {
        id,
        name: row.try_get("name").map_err(column_error("name")),
        payload: row.try_get("payload").map_err(column_error("payload")),
        content_type: row.try_get("content_type").map_err(column_error("content_type")),
        headers: row.try_get("headers").map_err(column_error("headers")),
        correlation_id: row.try_get("correlation_id").map_err(column_error("correlation_id")),
        causation_id: row.try_get("causation_id").map_err(column_error("causation_id")),
        created_at: row.try_get("created_at").map_err(column_error("created_at")),
        attempts: row.try_get::<i32, _>("attempts").map(i64::from).map_err(column_error("attempts")),
        ordering_key: row.try_get("ordering_key").map_err(column_error("ordering_key")),
    };
    (id, Ok(raw))
}

impl OutboxStore for PgOutbox {
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
        self.start_listener();
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

impl std::fmt::Debug for PgOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOutbox").field("config", &self.inner.config).finish_non_exhaustive()
    }
}
