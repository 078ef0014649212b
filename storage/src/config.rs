//! Configuration of the stores and of the migrations.

use hexeract_runtime::Codec;
use hexeract_runtime::ports::outbox::StoreError;

use crate::TableName;

/// The largest claim batch a store accepts ([`OutboxConfig::max_batch`]).
/// Larger batches would approach the bind-parameter limits of the drivers
/// (32,766 on SQLite, 65,535 on PostgreSQL and MySQL) in the statements
/// that list claimed ids.
pub const MAX_BATCH_LIMIT: u32 = 5_000;

/// What happens to a row once the transport confirmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SentRetention {
    /// Delete it at once: the table holds only work still to do, which keeps
    /// it small and its indexes hot.
    #[default]
    Delete,
    /// Keep it with status `sent` and its `sent_at` time, for auditing or
    /// counting, until `purge_sent` removes it.
    Keep,
}

/// Configuration of an outbox store.
///
/// # Examples
///
/// ```
/// use hexeract_storage::{OutboxConfig, SentRetention, TableName};
///
/// let config = OutboxConfig::default()
///     .table(TableName::new("orders_outbox")?)
///     .retention(SentRetention::Keep)
///     .max_batch(200);
/// assert_eq!(config.table_name().as_str(), "orders_outbox");
/// # Ok::<(), hexeract_runtime::ports::outbox::StoreError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OutboxConfig {
    pub(crate) table: TableName,
    pub(crate) retention: SentRetention,
    pub(crate) codec: Codec,
    pub(crate) max_batch: u32,
    pub(crate) notify: bool,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            // One conventional name, so that a zero-configuration system and
            // `hexeract migrate` agree without being told.
            table: default_outbox_table(),
            // Delete: an outbox is a queue, not an archive.
            retention: SentRetention::Delete,
            // JSON: every language on the bus reads it.
            codec: Codec::Json,
            // 1,000: large enough that a claim is one round trip for any
            // sensible relay batch, small enough for every bind limit.
            max_batch: 1_000,
            // NOTIFY on save (PostgreSQL only): relay latency is not a poll
            // interval.
            notify: true,
        }
    }
}

impl OutboxConfig {
    /// The outbox table (default `hexeract_outbox`).
    pub fn table(mut self, table: TableName) -> Self {
        self.table = table;
        self
    }

    /// What to do with relayed rows (default [`SentRetention::Delete`]).
    pub fn retention(mut self, retention: SentRetention) -> Self {
        self.retention = retention;
        self
    }

    /// The codec for events whose type does not name one (default JSON).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The most rows one claim returns, whatever limit the relay asks for
    /// (default 1,000; at most [`MAX_BATCH_LIMIT`], checked when the store
    /// is built).
    pub fn max_batch(mut self, max_batch: u32) -> Self {
        self.max_batch = max_batch;
        self
    }

    /// Whether saves send a PostgreSQL `NOTIFY` (default true; ignored by
    /// the other dialects).
    pub fn notify(mut self, notify: bool) -> Self {
        self.notify = notify;
        self
    }

    /// The configured table name.
    pub fn table_name(&self) -> &TableName {
        &self.table
    }

    /// The configured retention.
    pub fn retention_policy(&self) -> SentRetention {
        self.retention
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`StoreError::Config`] when `max_batch` is 0 or above
    /// [`MAX_BATCH_LIMIT`].
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.max_batch == 0 || self.max_batch > MAX_BATCH_LIMIT {
            return Err(StoreError::Config(format!(
                "max_batch must be in 1..={MAX_BATCH_LIMIT}, got {}",
                self.max_batch
            )));
        }
        Ok(())
    }
}

/// Which tables the migrations create, and where they record themselves.
///
/// # Examples
///
/// ```
/// use hexeract_storage::{StorageConfig, TableName};
///
/// let config = StorageConfig::default().outbox(TableName::new("orders_outbox")?).inbox(None);
/// assert_eq!(config.outbox_table().as_str(), "orders_outbox");
/// # Ok::<(), hexeract_runtime::ports::outbox::StoreError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StorageConfig {
    pub(crate) outbox: TableName,
    pub(crate) inbox: Option<TableName>,
    pub(crate) migrations: TableName,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            outbox: default_outbox_table(),
            inbox: Some(default_inbox_table()),
            migrations: TableName("hexeract_migrations".into()),
        }
    }
}

impl StorageConfig {
    /// The outbox table to create (default `hexeract_outbox`).
    pub fn outbox(mut self, table: TableName) -> Self {
        self.outbox = table;
        self
    }

    /// The inbox table to create, or `None` for no inbox (default
    /// `hexeract_inbox`).
    pub fn inbox(mut self, table: Option<TableName>) -> Self {
        self.inbox = table;
        self
    }

    /// The bookkeeping table of applied migrations (default
    /// `hexeract_migrations`), keyed by table name and version.
    pub fn migrations(mut self, table: TableName) -> Self {
        self.migrations = table;
        self
    }

    /// The outbox table.
    pub fn outbox_table(&self) -> &TableName {
        &self.outbox
    }

    /// The inbox table, if any.
    pub fn inbox_table(&self) -> Option<&TableName> {
        self.inbox.as_ref()
    }

    /// The bookkeeping table.
    pub fn migrations_table(&self) -> &TableName {
        &self.migrations
    }
}

fn default_outbox_table() -> TableName {
    TableName("hexeract_outbox".into())
}

/// The default inbox table name, `hexeract_inbox`.
pub fn default_inbox_table() -> TableName {
    TableName("hexeract_inbox".into())
}
