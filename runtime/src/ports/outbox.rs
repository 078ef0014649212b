//! The outbox port: what the relay actors need from an outbox table. The
//! stores in `storage/` (SQLite, PostgreSQL, MySQL/MariaDB) implement it;
//! saving events happens in the caller's own transaction through those
//! stores' typed `save` functions, outside this trait.
//!
//! The contract, for every store:
//! - **Claiming counts the attempt.** [`OutboxStore::claim`] leases due rows
//!   to one owner until `now + lease` on the *database* clock and increments
//!   their attempt count in the same statement, so a poller that crashes
//!   mid-dispatch still used up an attempt (a poison row cannot loop forever
//!   across restarts).
//! - **Only committed rows are claimable**; the claim commits before the
//!   caller dispatches anything.
//! - **Every acknowledgement is fenced on the lease**: `mark_*` and `release`
//!   change a row only if `owner` still holds its lease. A late poller cannot
//!   overwrite a row another poller reclaimed after the lease expired.
//! - **An expired lease makes the row claimable again**: nothing waits for a
//!   process that is gone.
//! - **Ordering keys**: a row is not claimed while an earlier row (in
//!   insertion order, which the database assigns; ids do not order rows) with
//!   the same key is still pending or leased; rows without a key have no order.
//! - **A row that cannot be read back** as a message (corrupt headers, an
//!   unknown content type) is marked dead with the reason during the claim
//!   and not returned: one bad row never stops the rows behind it.
//! - The row id is the message id on the bus, for every attempt, so that a
//!   consumer's inbox can deduplicate redeliveries.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{BoxError, BoxFuture, Envelope, MessageId};

/// Who holds a lease: one poller incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseOwner(pub Uuid);

impl LeaseOwner {
    /// A fresh owner id.
    pub fn new() -> Self {
        LeaseOwner(Uuid::new_v4())
    }
}

impl Default for LeaseOwner {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for LeaseOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A row claimed for relay.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    /// The message, with `meta.attempt` set to this claim's attempt number
    /// (1 on the first claim) and `meta.id` equal to the row id.
    pub envelope: Envelope,
    /// The row's ordering key, if it has one.
    pub ordering_key: Option<String>,
}

impl OutboxRecord {
    /// The row id, which is the message id.
    pub fn id(&self) -> MessageId {
        self.envelope.meta.id
    }

    /// This claim's attempt number (1 on the first claim).
    pub fn attempt(&self) -> u32 {
        self.envelope.meta.attempt
    }
}

/// Counts for monitoring an outbox table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxStats {
    /// Rows waiting to be relayed (due or backing off), not leased.
    pub pending: u64,
    /// Rows leased to a poller right now.
    pub in_flight: u64,
    /// Rows that exhausted their attempts.
    pub dead: u64,
    /// Rows relayed and kept for retention.
    pub sent: u64,
    /// Age of the oldest pending or leased row, on the database clock.
    pub oldest_pending_age: Option<Duration>,
}

/// An outbox table, as the relay sees it.
pub trait OutboxStore: Send + Sync + 'static {
    /// The (validated) table name, for logs and metrics.
    fn table(&self) -> &str;

    /// Leases up to `limit` due rows to `owner` until database-now + `lease`,
    /// counting one attempt for each, oldest first.
    fn claim(
        &self,
        owner: LeaseOwner,
        limit: NonZeroU32,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<OutboxRecord>, StoreError>>;

    /// Marks rows relayed (deleted, or kept as `sent` for retention). Returns
    /// how many rows `owner` still held.
    fn mark_sent<'a>(&'a self, owner: LeaseOwner, ids: &'a [MessageId]) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Records a failed attempt: the row becomes due again at database-now +
    /// `retry_after`, with `error` as its last error. Returns whether `owner`
    /// still held it.
    fn mark_failed<'a>(
        &'a self,
        owner: LeaseOwner,
        id: MessageId,
        error: &'a str,
        retry_after: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Marks a row dead with its last error; it is never claimed again
    /// (until replayed by an operator). Returns whether `owner` still held it.
    fn mark_dead<'a>(
        &'a self,
        owner: LeaseOwner,
        id: MessageId,
        error: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Gives leased rows back unchanged except for their attempt count being
    /// restored (shutdown: claimed but never dispatched). Returns how many.
    fn release<'a>(&'a self, owner: LeaseOwner, ids: &'a [MessageId]) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Counts by status and the oldest pending age.
    fn stats(&self) -> BoxFuture<'_, Result<OutboxStats, StoreError>>;

    /// Creates or upgrades the table (idempotent), when
    /// `Hexeract::builder().migrate()` asks. Stores whose schema is managed
    /// elsewhere keep this default, which does nothing.
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    /// Notified when a row may have become claimable: a save in this process,
    /// or (PostgreSQL) a `NOTIFY` from any process. Polling remains the
    /// fallback, so a missed wake-up only costs a poll interval.
    fn wakeup(&self) -> Arc<tokio::sync::Notify>;
}

/// A boxed store is a store, so that code choosing its database at run time
/// can hand any of them over.
impl<T: OutboxStore + ?Sized> OutboxStore for Box<T> {
    fn table(&self) -> &str {
        (**self).table()
    }
    fn claim(
        &self,
        owner: LeaseOwner,
        limit: NonZeroU32,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<OutboxRecord>, StoreError>> {
        (**self).claim(owner, limit, lease)
    }
    fn mark_sent<'a>(&'a self, owner: LeaseOwner, ids: &'a [MessageId]) -> BoxFuture<'a, Result<u64, StoreError>> {
        (**self).mark_sent(owner, ids)
    }
    fn mark_failed<'a>(
        &'a self,
        owner: LeaseOwner,
        id: MessageId,
        error: &'a str,
        retry_after: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).mark_failed(owner, id, error, retry_after)
    }
    fn mark_dead<'a>(
        &'a self,
        owner: LeaseOwner,
        id: MessageId,
        error: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).mark_dead(owner, id, error)
    }
    fn release<'a>(&'a self, owner: LeaseOwner, ids: &'a [MessageId]) -> BoxFuture<'a, Result<u64, StoreError>> {
        (**self).release(owner, ids)
    }
    fn stats(&self) -> BoxFuture<'_, Result<OutboxStats, StoreError>> {
        (**self).stats()
    }
    fn migrate(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        (**self).migrate()
    }
    fn wakeup(&self) -> Arc<tokio::sync::Notify> {
        (**self).wakeup()
    }
}

/// An outbox or inbox operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A table name that is not a plain identifier.
    #[error("invalid table name `{name}`: {reason}")]
    InvalidTableName {
        /// The rejected name, as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The table does not exist.
    #[error("table `{0}` is missing; run the migrations (`.migrate()` on the builder)")]
    MissingTable(String),
    /// The database does not exist (an SQLite file not created yet).
    #[error("no {dialect} database at {location}")]
    MissingDatabase {
        /// `SQLite`, …
        dialect: &'static str,
        /// Where it was looked for (a file path).
        location: String,
    },
    /// The database could not be reached or the pool is exhausted: worth
    /// retrying after a backoff.
    #[error("database unavailable during {operation}")]
    Unavailable {
        /// What was being done.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// A statement failed.
    #[error("{operation} failed")]
    Query {
        /// What was being done.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// A row could not be read back as a message.
    #[error("outbox row {id} is unreadable: {reason}")]
    CorruptRow {
        /// The row id, as text.
        id: String,
        /// Why.
        reason: String,
    },
    /// Invalid configuration (batch size, lease...).
    #[error("invalid outbox configuration: {0}")]
    Config(String),
}
