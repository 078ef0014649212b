//! The outbox and inbox conformance suite: the same cases, against every
//! dialect the crate was built with.
//!
//! - SQLite always runs, on a temporary file per test.
//! - PostgreSQL runs when `HEXERACT_PG_URL` is set, MySQL/MariaDB when
//!   `HEXERACT_MYSQL_URL` is set. When one is unset the cases of that
//!   dialect print `SKIPPED: … not set` and pass, unless `CI=true`: then
//!   an unset or unreachable database fails them.
//!
//! Every test uses its own uniquely named tables, so tests run in parallel.
//! The SIGKILL case re-executes this test binary as the child process
//! (`<dialect>::child_claimer_entry`, which does nothing unless the parent
//! set `HEXERACT_CHILD_TABLE`).
#![cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hexeract_runtime::{Codec, Envelope, Message, MessageId, MessageKind, Metadata};
use hexeract_storage::{
    AppliedMigration, Database, DeadRow, InboxOutcome, LeaseOwner, OutboxConfig, OutboxRecord, OutboxStore, Outgoing,
    SchemaProblem, SentRetention, StorageConfig, StoreError, TableName,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderPlaced {
    order: u64,
}

impl Message for OrderPlaced {
    const NAME: &'static str = "orders.placed.v1";
    const KIND: MessageKind = MessageKind::Notification;
    type Output = ();
}

/// What each dialect provides to the suite: its typed save functions and
/// the few checks that need dialect SQL.
trait Backend: Sized + Send + Sync + 'static {
    /// The test module, for re-executing the child case.
    const MODULE: &'static str;
    type Outbox: OutboxStore + Clone;

    fn connect() -> impl Future<Output = Option<Self>> + Send;
    /// Connects as the child process of the SIGKILL case.
    fn connect_child() -> impl Future<Output = Self> + Send;
    /// Environment the child needs to reach the same database.
    fn child_env(&self) -> Vec<(&'static str, String)>;

    fn migrate(&self, config: &StorageConfig)
    -> impl Future<Output = Result<Vec<AppliedMigration>, StoreError>> + Send;
    fn outbox(&self, config: OutboxConfig) -> Self::Outbox;
    fn save_events(
        &self,
        outbox: &Self::Outbox,
        events: &[OrderPlaced],
        commit: bool,
    ) -> impl Future<Output = Vec<MessageId>> + Send;
    fn save_with(
        &self,
        outbox: &Self::Outbox,
        event: &OrderPlaced,
        meta: Metadata,
    ) -> impl Future<Output = MessageId> + Send;
    fn save_keyed(
        &self,
        outbox: &Self::Outbox,
        event: &OrderPlaced,
        meta: Metadata,
        key: &str,
    ) -> impl Future<Output = MessageId> + Send;
    fn retry_all_dead(&self, outbox: &Self::Outbox) -> impl Future<Output = u64> + Send;
    fn save_rows(&self, outbox: &Self::Outbox, rows: &[Outgoing]) -> impl Future<Output = u64> + Send;
    fn list_dead(&self, outbox: &Self::Outbox) -> impl Future<Output = Vec<DeadRow>> + Send;
    fn retry_dead(&self, outbox: &Self::Outbox, id: MessageId) -> impl Future<Output = bool> + Send;
    fn purge_sent(&self, outbox: &Self::Outbox, older_than: Duration) -> impl Future<Output = u64> + Send;
    fn explain_claim(&self, outbox: &Self::Outbox) -> impl Future<Output = String> + Send;
    fn verify_schema(&self, outbox: &Self::Outbox) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Rows in `table`.
    fn count(&self, table: &TableName) -> impl Future<Output = i64> + Send;
    /// `next_attempt_at - now`, in seconds, both on the database clock.
    fn seconds_until_due(&self, table: &TableName, id: MessageId) -> impl Future<Output = f64> + Send;
    /// Overwrites one text column of one row.
    fn corrupt(
        &self,
        table: &TableName,
        id: MessageId,
        column: &'static str,
        value: &'static str,
    ) -> impl Future<Output = ()> + Send;
    /// Fills `table` with `rows` rows: the oldest nine in ten sent (kept),
    /// the newest tenth pending; then refreshes the planner's statistics.
    fn fill(&self, table: &TableName, rows: u32) -> impl Future<Output = ()> + Send;
    /// Panics unless `plan` reads the outbox through its claim index,
    /// without scanning the table.
    fn assert_claim_plan(plan: &str, table: &TableName);
    /// Records `id` for `consumer` in a transaction held open for `hold`.
    fn inbox_record(
        &self,
        table: &TableName,
        id: MessageId,
        consumer: &str,
        hold: Duration,
    ) -> impl Future<Output = InboxOutcome> + Send;
    fn inbox_duplicates(&self, table: &TableName, consumer: &str) -> impl Future<Output = u64> + Send;
    fn inbox_purge(&self, table: &TableName, age: Duration) -> impl Future<Output = u64> + Send;
    fn drop_tables(&self, tables: &[&TableName]) -> impl Future<Output = ()> + Send;
    /// The URL an operator would give `Database::connect` for this database.
    fn url(&self) -> String;
    /// Drops the index `<table><index_suffix>` and the column `column`.
    fn drop_index_and_column(
        &self,
        table: &TableName,
        index_suffix: &str,
        column: &str,
    ) -> impl Future<Output = ()> + Send;
    /// An outbox over `table` whose database cannot be had: a server that
    /// does not answer, or (SQLite) a file another writer keeps locked.
    /// Returns it with whatever holds the lock.
    fn unreachable_outbox(
        &self,
        table: &TableName,
    ) -> impl Future<Output = (Self::Outbox, Box<dyn std::any::Any + Send>)> + Send;
}

// The URL-or-skip rule, shared with the CLI's tests.
#[path = "conformance/env.rs"]
mod env;
use env::announce;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use env::database_url;

fn unique(tag: &str) -> TableName {
    let suffix = Uuid::new_v4().simple().to_string();
    TableName::new(format!("hx_{tag}_{}", &suffix[..10])).expect("valid test table name")
}

fn n(value: u32) -> NonZeroU32 {
    NonZeroU32::new(value).expect("non-zero")
}

fn ids(records: &[OutboxRecord]) -> Vec<MessageId> {
    records.iter().map(OutboxRecord::id).collect()
}

const LEASE: Duration = Duration::from_secs(30);

struct Tables {
    outbox: TableName,
    inbox: TableName,
}

impl Tables {
    async fn drop<B: Backend>(&self, backend: &B) {
        backend.drop_tables(&[&self.outbox, &self.inbox]).await;
    }
}

async fn setup<B: Backend>(backend: &B, tag: &str, retention: SentRetention) -> (Tables, B::Outbox) {
    let tables = Tables { outbox: unique(tag), inbox: unique(&format!("{tag}_in")) };
    let config = StorageConfig::default().outbox(tables.outbox.clone()).inbox(Some(tables.inbox.clone()));
    let applied = backend.migrate(&config).await.expect("migrate");
    assert_eq!(applied.len(), 2, "{applied:?}");
    let outbox = backend.outbox(OutboxConfig::default().table(tables.outbox.clone()).retention(retention));
    (tables, outbox)
}

/// Claims and marks sent until nothing is pending or in flight; returns
/// every id sent.
async fn drain<S: OutboxStore>(outbox: &S, owner: LeaseOwner, batch: u32) -> Vec<MessageId> {
    let mut sent = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "drain did not finish");
        let records = outbox.claim(owner, n(batch), LEASE).await.expect("claim");
        if records.is_empty() {
            let stats = outbox.stats().await.expect("stats");
            if stats.pending == 0 && stats.in_flight == 0 {
                return sent;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let batch_ids = ids(&records);
        let marked = outbox.mark_sent(owner, &batch_ids).await.expect("mark_sent");
        assert_eq!(marked, batch_ids.len() as u64, "every claimed row is still ours to mark");
        sent.extend(batch_ids);
    }
}

#[path = "conformance/suite.rs"]
mod suite;

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

macro_rules! conformance {
    ($(#[$attr:meta])* $module:ident, $backend:ty) => {
        conformance!(@cases $(#[$attr])* $module, $backend, [
            save_commit_and_rollback,
            two_claimers_send_every_row_once,
            saves_and_claims_interleave,
            killed_claimer_rows_are_reclaimed,
            claim_uses_the_index,
            poison_row_goes_dead_while_others_flow,
            backoff_is_measured_on_the_database_clock,
            acks_are_fenced_on_the_lease,
            bad_table_names_are_rejected,
            inbox_race_counts_one_duplicate,
            per_key_order_holds_with_two_claimers,
            unreadable_rows_are_marked_dead_during_claim,
            migrations_are_idempotent_and_kind_checked,
            correlation_chain_and_idempotent_enqueue,
            kept_rows_are_counted_and_purged,
            unreachable_database_is_unavailable,
            schema_check_names_what_is_missing,
            dead_rows_are_listed_shown_replayed_and_purged,
            inbox_stats_and_purge
        ]);
    };
    (@cases $(#[$attr:meta])* $module:ident, $backend:ty, [$($case:ident),*]) => {
        $(#[$attr])*
        mod $module {
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    if let Some(backend) = <$backend as Backend>::connect().await {
                        suite::$case(&backend).await;
                    }
                }
            )*

            /// The child process of `killed_claimer_rows_are_reclaimed`; a
            /// no-op when run as a test.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn child_claimer_entry() {
                suite::child_claimer::<$backend>().await;
            }
        }
    };
}

#[cfg(feature = "sqlite")]
#[path = "conformance/sqlite.rs"]
mod sqlite_backend;
#[cfg(feature = "sqlite")]
conformance!(sqlite, sqlite_backend::SqliteBackend);

#[cfg(feature = "postgres")]
#[path = "conformance/postgres.rs"]
mod pg_backend;
#[cfg(feature = "postgres")]
conformance!(postgres, pg_backend::PgBackend);

#[cfg(feature = "mysql")]
#[path = "conformance/mysql.rs"]
mod mysql_backend;
#[cfg(feature = "mysql")]
conformance!(mysql, mysql_backend::MySqlBackend);
