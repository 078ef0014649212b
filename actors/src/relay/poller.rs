//! One outbox table's poller.
//!
//! Each turn: claim a batch (the claim commits and counts the attempt), then
//! publish outside any transaction, then acknowledge every row on its own:
//! sent, failed (due again after a jittered backoff on the database clock),
//! or dead past `max_attempts`. Rows with an ordering key are published one
//! after another in claim order; if one fails, the rows behind it with the
//! same key are released rather than published out of order.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hexeract_runtime::metrics::{ActorMetrics, Outcome, RelayLag};
use hexeract_runtime::ports::outbox::{LeaseOwner, OutboxRecord, OutboxStore, StoreError};
use hexeract_runtime::ports::transport::{Destination, Outgoing};
use hexeract_runtime::ports::wire::WireMessage;
use hexeract_runtime::supervision::{ActorLoop, Backoff};
use hexeract_runtime::{BoxFuture, MessageId};
use tokio_util::sync::CancellationToken;

use crate::bus::{BusError, Publisher};

/// How an outbox table is relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Rows claimed per turn. Default 100: one round trip claims enough to
    /// keep the publisher's window busy.
    pub batch_size: NonZeroU32,
    /// Hard limit on one row's publish, confirm included. Default 10 s.
    pub dispatch_timeout: Duration,
    /// Longest sleep when the table is empty and no wake-up came. Default 1 s.
    pub poll_interval: Duration,
    /// Attempts before a row is marked dead. Default 10.
    pub max_attempts: u32,
    /// Delay before a failed row is due again (full jitter). Default 1 s to 5 min.
    pub backoff: Backoff,
    /// The exchange events are published to, with the message name as the
    /// routing key. Default `hexeract.events`.
    pub exchange: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: NonZeroU32::new(100).expect("non-zero"),
            dispatch_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            max_attempts: 10,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)).expect("valid"),
            exchange: "hexeract.events".to_owned(),
        }
    }
}

impl RelayConfig {
    /// Sets the rows claimed per turn.
    #[must_use]
    pub fn batch_size(mut self, rows: NonZeroU32) -> Self {
        self.batch_size = rows;
        self
    }

    /// Sets the hard limit on one row's publish.
    #[must_use]
    pub fn dispatch_timeout(mut self, timeout: Duration) -> Self {
        self.dispatch_timeout = timeout;
        self
    }

    /// Sets the longest idle sleep between polls.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Sets the attempts before a row is marked dead.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets the backoff between attempts of a row.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the exchange events are published to.
    #[must_use]
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// The lease a claim takes: long enough to publish the whole batch one
    /// row after another, each up to its timeout, so that rows are never
    /// reclaimed from a poller that is merely slow.
    pub fn lease(&self) -> Duration {
        self.dispatch_timeout.saturating_mul(self.batch_size.get()) + Duration::from_secs(5)
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// A description of the first invalid setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.dispatch_timeout.is_zero() || self.dispatch_timeout > Duration::from_secs(3600) {
            return Err("dispatch_timeout must be between 1 ns and 1 h".into());
        }
        if self.poll_interval.is_zero() || self.poll_interval > Duration::from_secs(3600) {
            return Err("poll_interval must be between 1 ns and 1 h".into());
        }
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.batch_size.get() > 10_000 {
            return Err("batch_size must be at most 10,000".into());
        }
        if self.exchange.is_empty() || self.exchange.len() > 255 {
            return Err("exchange must be 1 to 255 bytes".into());
        }
        Ok(())
    }
}

/// The poller actor's body for one table.
pub(crate) struct OutboxPoller {
    path: String,
    metrics: Arc<ActorMetrics>,
    /// Commit-to-confirm time of each confirmed row.
    lag: Arc<RelayLag>,
    store: Arc<dyn OutboxStore>,
    publisher: Publisher,
    config: RelayConfig,
    /// Cancelled when shutdown begins: claim nothing more, start no new publish.
    stop: CancellationToken,
    /// Cancelled at the shutdown deadline: stop waiting for the publishes
    /// still in flight and release their rows.
    abandon: CancellationToken,
}

/// What became of one claimed row.
enum RowEnd {
    Sent(MessageId),
    Failed {
        record: OutboxRecord,
        error: String,
    },
    /// Not published (shutdown, or an earlier row of its key failed).
    Released(MessageId),
    /// Handed to the publisher but unconfirmed at the shutdown deadline:
    /// due again at once, the attempt kept (it may have reached the broker).
    Abandoned(MessageId),
}

impl OutboxPoller {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        path: String,
        metrics: Arc<ActorMetrics>,
        lag: Arc<RelayLag>,
        store: Arc<dyn OutboxStore>,
        publisher: Publisher,
        config: RelayConfig,
        stop: CancellationToken,
        abandon: CancellationToken,
    ) -> Self {
        OutboxPoller { path, metrics, lag, store, publisher, config, stop, abandon }
    }

    /// Publishes a claimed batch; what became of each row.
    async fn publish_batch(&self, rows: Vec<OutboxRecord>) -> Vec<RowEnd> {
        // Group by ordering key, keeping claim order; unkeyed rows stand alone.
        let mut groups: Vec<Vec<OutboxRecord>> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        for row in rows {
            match row.ordering_key.clone() {
                Some(key) => match by_key.get(&key) {
                    Some(&index) => groups[index].push(row),
                    None => {
                        by_key.insert(key, groups.len());
                        groups.push(vec![row]);
                    }
                },
                None => groups.push(vec![row]),
            }
        }
        futures::future::join_all(groups.into_iter().map(|group| self.publish_in_order(group)))
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Records what became of a batch: sent rows marked, failed rows
    /// rescheduled or dead, the rest given back.
    async fn record(&self, owner: LeaseOwner, ends: Vec<RowEnd>) -> Result<(), StoreError> {
        let mut sent = Vec::new();
        let mut released = Vec::new();
        for end in ends {
            match end {
                RowEnd::Sent(id) => sent.push(id),
                RowEnd::Released(id) => released.push(id),
                RowEnd::Abandoned(id) => {
                    self.store
                        .mark_failed(owner, id, "publish abandoned at shutdown before its confirm", Duration::ZERO)
                        .await?;
                }
                RowEnd::Failed { record, error } => self.record_failure(owner, record, &error).await?,
            }
        }
        if !sent.is_empty() {
            let held = self.store.mark_sent(owner, &sent).await?;
            if held < sent.len() as u64 {
                tracing::warn!(
                    table = self.store.table(),
                    lost_leases = sent.len() as u64 - held,
                    "some rows were reclaimed by another poller before their confirm was recorded; they will be relayed again"
                );
            }
        }
        if !released.is_empty() {
            self.store.release(owner, &released).await?;
        }
        Ok(())
    }

    async fn publish_in_order(&self, group: Vec<OutboxRecord>) -> Vec<RowEnd> {
        let mut ends = Vec::with_capacity(group.len());
        let mut blocked = false;
        for record in group {
            if blocked || self.stop.is_cancelled() {
                ends.push(RowEnd::Released(record.id()));
                continue;
            }
            let started = Instant::now();
            let published = tokio::select! {
                biased;
                published = self.publish(&record) => published,
                // The shutdown deadline passed with this publish unconfirmed:
                // hand the row back now rather than leave it leased to an
                // owner about to stop. (If the broker confirms it after all,
                // it is relayed twice: at least once, never lost.)
                () = self.abandon.cancelled() => {
                    ends.push(RowEnd::Abandoned(record.id()));
                    continue;
                }
            };
            match published {
                Ok(()) => {
                    self.metrics.record(Outcome::Ok, started.elapsed());
                    // The envelope's timestamp is the row's `created_at`,
                    // read back by the claim: the lag spans the commit to
                    // this confirm, retries and backoffs included.
                    self.lag.record_since(record.envelope.meta.timestamp);
                    ends.push(RowEnd::Sent(record.id()));
                }
                Err(error) => {
                    self.metrics.record(Outcome::Error, started.elapsed());
                    // Keep per-key order: nothing after a failed row goes out now.
                    blocked = record.ordering_key.is_some();
                    ends.push(RowEnd::Failed { error: crate::error::error_chain(&error), record });
                }
            }
        }
        ends
    }

    async fn publish(&self, record: &OutboxRecord) -> Result<(), BusError> {
        let outgoing = Outgoing {
            destination: Destination::Exchange {
                exchange: self.config.exchange.clone(),
                routing_key: record.envelope.meta.name.to_string(),
            },
            message: WireMessage::from_envelope(&record.envelope),
            delay: None,
        };
        match tokio::time::timeout(self.config.dispatch_timeout, self.publisher.publish(outgoing)).await {
            Ok(result) => result,
            Err(_) => Err(BusError::Publish(hexeract_runtime::ports::transport::PublishError::Timeout(
                self.config.dispatch_timeout,
            ))),
        }
    }

    async fn record_failure(&self, owner: LeaseOwner, record: OutboxRecord, error: &str) -> Result<(), StoreError> {
        if record.attempt() >= self.config.max_attempts {
            tracing::error!(table = self.store.table(), id = %record.id(), attempts = record.attempt(), %error, "outbox row is dead");
            self.metrics.count(Outcome::DeadLettered);
            self.store.mark_dead(owner, record.id(), error).await?;
        } else {
            let retry_after = self.config.backoff.delay(record.attempt().saturating_sub(1));
            tracing::warn!(table = self.store.table(), id = %record.id(), attempt = record.attempt(), ?retry_after, %error, "outbox row failed; will retry");
            self.store.mark_failed(owner, record.id(), error, retry_after).await?;
        }
        Ok(())
    }

    /// Sleeps until a wake-up, the poll interval, or shutdown.
    async fn idle(&self, wakeup: &tokio::sync::Notify, duration: Duration) {
        tokio::select! {
            () = wakeup.notified() => {}
            () = tokio::time::sleep(duration) => {}
            () = self.stop.cancelled() => {}
        }
    }
}

impl ActorLoop for OutboxPoller {
    fn path(&self) -> &str {
        &self.path
    }

    fn metrics(&self) -> &ActorMetrics {
        &self.metrics
    }

    fn run(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            // A fresh owner per incarnation: rows a crashed incarnation held
            // come back when their lease expires, never through a stale owner.
            let owner = LeaseOwner::new();
            let wakeup = self.store.wakeup();
            let lease = self.config.lease();
            let mut consecutive_errors = 0_u32;
            let error_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30)).expect("valid");
            // The next batch, claimed while the last one's outcome was being
            // recorded: one database round trip per batch off the critical
            // path. Safe for ordering keys: until recorded, the last batch's
            // rows are still pending, so the claim skips later rows of their
            // keys.
            let mut claimed_ahead: Option<Result<Vec<OutboxRecord>, StoreError>> = None;
            while !self.stop.is_cancelled() {
                let claimed = match claimed_ahead.take() {
                    Some(claimed) => claimed,
                    None => self.store.claim(owner, self.config.batch_size, lease).await,
                };
                let result = match claimed {
                    Ok(rows) if rows.is_empty() => {
                        consecutive_errors = 0;
                        self.idle(&wakeup, self.config.poll_interval).await;
                        continue;
                    }
                    Ok(rows) => {
                        let ends = self.publish_batch(rows).await;
                        let claim_next = async {
                            if self.stop.is_cancelled() {
                                None
                            } else {
                                Some(self.store.claim(owner, self.config.batch_size, lease).await)
                            }
                        };
                        let (recorded, next) = tokio::join!(self.record(owner, ends), claim_next);
                        claimed_ahead = next;
                        recorded
                    }
                    Err(error) => Err(error),
                };
                match result {
                    Ok(()) => consecutive_errors = 0,
                    Err(error) => {
                        // Back off on errors, never spin: a database outage and
                        // a broken query both end up here, told apart in the log.
                        let delay = error_backoff.ceiling(consecutive_errors);
                        consecutive_errors = consecutive_errors.saturating_add(1);
                        match &error {
                            StoreError::Unavailable { .. } => {
                                tracing::warn!(table = self.store.table(), %error, ?delay, "outbox database unavailable")
                            }
                            _ => {
                                tracing::error!(table = self.store.table(), error = %error, ?delay, "outbox relay turn failed")
                            }
                        }
                        // A plain sleep: wake-ups from saves must not cut an
                        // error backoff short and turn it into a hot loop.
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = self.stop.cancelled() => {}
                        }
                    }
                }
            }
            // Stopped with a batch claimed ahead and not published: give it
            // back now rather than leave it leased until the lease expires.
            if let Some(Ok(rows)) = claimed_ahead
                && !rows.is_empty()
            {
                let ids: Vec<MessageId> = rows.iter().map(OutboxRecord::id).collect();
                if let Err(error) = self.store.release(owner, &ids).await {
                    tracing::warn!(table = self.store.table(), %error, "could not give back rows claimed ahead; they return when their lease expires");
                }
            }
            Ok(())
        })
    }
}
