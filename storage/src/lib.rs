//! Hexeract's transactional outbox and inbox on SQLite, PostgreSQL and
//! MySQL/MariaDB.
//!
//! One module per dialect, each behind its feature: [`sqlite`] (default),
//! `postgres`, `mysql` (MySQL 8 and MariaDB 10.6+). Each has an outbox
//! store that implements the relay's port, [`OutboxStore`], an inbox store,
//! and a `migrate` function. The crate depends on the kernel and sqlx only
//! and knows no broker.
//!
//! # Saving
//!
//! An event is saved in the caller's own transaction: `save(&mut tx,
//! &event)` takes a `sqlx::Transaction`, never a pool or a bare connection,
//! so saving outside a transaction does not compile. The row becomes
//! claimable when the transaction commits; a rollback leaves no row. Inside
//! a handler, `save_with(&mut tx, &event, ctx.meta().child(M::NAME))`
//! chains correlation and causation ids. A row whose id exists already is
//! not inserted again (idempotent enqueue with caller-chosen ids,
//! `save_outgoing`).
//!
//! ```no_run
//! use hexeract_runtime::{Message, MessageKind};
//! use hexeract_storage::{OutboxConfig, StorageConfig, sqlite::{self, SqliteOutbox}};
//!
//! #[derive(serde::Serialize)]
//! struct OrderPlaced { order: u64 }
//! impl Message for OrderPlaced {
//!     const NAME: &'static str = "orders.placed.v1";
//!     const KIND: MessageKind = MessageKind::Notification;
//!     type Output = ();
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = sqlx::SqlitePool::connect_with(sqlite::connect_options("app.db")).await?;
//! sqlite::migrate(&pool, &StorageConfig::default()).await?;
//! let outbox = SqliteOutbox::new(pool.clone(), OutboxConfig::default())?;
//!
//! let mut tx = pool.begin().await?;
//! // ... the business write, in `tx` ...
//! outbox.save(&mut tx, &OrderPlaced { order: 42 }).await?;
//! tx.commit().await?;
//! # Ok(()) }
//! ```
//!
//! # What a claim guarantees
//!
//! [`OutboxStore::claim`] leases up to `limit` due rows (at most
//! [`OutboxConfig::max_batch`]) to one owner, oldest first (insertion
//! order, the database-assigned `seq` column):
//!
//! - the lease runs until database-now + `lease`, and backoffs until
//!   database-now + `retry_after`: the application's clock is never used;
//! - the attempt is counted in the claiming statement, so a poller that
//!   dies mid-dispatch has used it up;
//! - the claim commits before it returns, and concurrent claimers take
//!   disjoint rows without waiting for each other (`FOR UPDATE SKIP LOCKED`
//!   on PostgreSQL and MySQL; SQLite's single writer under `BEGIN
//!   IMMEDIATE`);
//! - a row whose lease expired is claimable again, by anyone;
//! - `mark_sent`, `mark_failed`, `mark_dead` and `release` change a row only
//!   while it is pending and leased to the same owner; once another owner
//!   reclaimed it, a late acknowledgement changes nothing. (An owner whose
//!   lease expired but that nobody reclaimed can still acknowledge: the
//!   row is still its to finish.);
//! - a row that cannot be read back as a message (unknown content type,
//!   headers that are not a JSON object of strings...) is marked dead with
//!   the reason during the claim and not returned;
//! - `release` hands rows back with the claim's attempt restored.
//!
//! # Ordering keys: exactly what holds
//!
//! Order is insertion order: every row gets a sequence number from the
//! database when it is inserted (`seq`: an identity column on PostgreSQL,
//! `AUTO_INCREMENT` on MySQL, the rowid on SQLite). Message ids are not
//! used for order: UUIDv7s minted in the same millisecond do not sort by
//! creation. A row with an ordering key is claimed only when no row with
//! the same key and a smaller `seq` is `pending` (due, backing off after a
//! failure, or leased). Hence:
//!
//! - rows of one key are handed out one at a time, in insertion order
//!   (within a transaction: the order of the `save` calls), each only
//!   after the one before it was marked sent or dead, whatever the number
//!   of pollers and processes; a claim batch holds at most one row per key;
//! - a failing row holds back the rows behind it with the same key until it
//!   is sent or goes dead; other keys keep flowing.
//!
//! It does **not** guarantee:
//!
//! - *commit* order across transactions: `seq` is assigned at insert, not
//!   at commit. Two transactions saving the same key concurrently can
//!   commit in the other order, and the later row may be relayed before the
//!   earlier one has committed. Save after the write that serializes the key
//!   (the update of the aggregate's row, say) and insertion order is commit
//!   order;
//! - order around a dead row: a dead row no longer holds its key back, and
//!   replaying it (`retry_dead`) relays it after the rows behind it;
//! - order when a lease expires while its dispatch is still running: the
//!   row can be claimed again and the next row of the key dispatched before
//!   the stale dispatch lands. The relay's lease covers the whole batch's
//!   dispatch timeout for this reason;
//! - any order for rows without a key, or once the broker and the consumers
//!   have the messages.
//!
//! # Inbox
//!
//! `record(&mut tx, message_id, consumer)` in the consumer's transaction
//! returns [`InboxOutcome::First`] once per (message id, consumer) and
//! [`InboxOutcome::Duplicate`] afterwards, counting the duplicate on the
//! row (`duplicates(consumer)` sums them). Two transactions racing on one
//! id: the second waits for the first and sees `Duplicate` if it committed.
//!
//! # Errors
//!
//! Every operation returns [`StoreError`]: `Unavailable` when the server
//! could not be reached, the pool was exhausted or (SQLite) the write lock
//! could not be had within the busy timeout: back off and retry; `Query`
//! when a statement failed; `MissingTable` when the migrations have not
//! run; `Config` for invalid settings (a lease of zero, `Duration::MAX`, a
//! batch over the bind limits). Saving adds [`SaveError::Encode`].
//!
//! # Operating
//!
//! [`Database`] connects by URL (`sqlite:`, `postgres:`, `mysql:` or
//! `mariadb:`) and offers what an operator needs, whatever the dialect:
//! `migrate`, `check_schema` (every missing table, column and index,
//! named as a [`SchemaProblem`]), outbox and inbox statistics, dead rows
//! listed, shown ([`DeadMessage`]), replayed and purged, and inbox purges.
//! The `hexeract` CLI is built on it.
//!
//! # Tables
//!
//! Names are [`TableName`]s: plain identifiers, checked against a strict
//! pattern and then quoted for the dialect; nothing else is ever put into
//! SQL text. The schema of each dialect is in the crate's `README.md`.

// Without a dialect there is nothing to store into: the shared pieces sit
// unused, which is fine.
#![cfg_attr(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")), allow(dead_code, unused_imports))]

mod common;
mod config;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod database;
mod dead;
mod inbox;
mod migrate;
mod save;
mod schema_check;
mod table_name;

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// The sqlx these stores are built with, for pools and transactions whose
/// types match.
pub use sqlx;

pub use config::{MAX_BATCH_LIMIT, OutboxConfig, SentRetention, StorageConfig, default_inbox_table};
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use database::{Database, Dialect};
pub use dead::{DeadMessage, DeadRow};
pub use hexeract_runtime::ports::outbox::{LeaseOwner, OutboxRecord, OutboxStats, OutboxStore, StoreError};
pub use inbox::{InboxOutcome, InboxStats};
pub use migrate::AppliedMigration;
pub use save::{Outgoing, SaveError};
pub use schema_check::SchemaProblem;
pub use table_name::{MAX_TABLE_NAME_LEN, TableName};
