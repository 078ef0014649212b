use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;

use super::snapshot::{ActorSnapshot, Latency, MetricsSnapshot, OutcomeCounts};
use super::{ActorStatus, Outcome};
use crate::mailbox::DepthGauge;

/// Histograms record nanoseconds from 1 ns to one hour, 2 significant digits.
const HISTOGRAM_MAX_NS: u64 = 3_600_000_000_000;

/// The registry every actor of one system reports into.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    actors: Arc<RwLock<Vec<Arc<ActorMetrics>>>>,
    relay_lags: Arc<RwLock<Vec<Arc<RelayLag>>>>,
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an actor under its tree path (`mediator/place_order/2`).
    /// `mailbox` gives its depth and capacity, when it has one.
    pub fn register(&self, path: impl Into<String>, mailbox: Option<DepthGauge>) -> Arc<ActorMetrics> {
        let metrics = Arc::new(ActorMetrics {
            path: path.into(),
            mailbox,
            counts: Default::default(),
            restarts: AtomicU64::new(0),
            status: AtomicU8::new(ActorStatus::Running.as_u8()),
            latency: Mutex::new(new_histogram()),
        });
        self.actors.write().unwrap_or_else(PoisonError::into_inner).push(Arc::clone(&metrics));
        metrics
    }

    /// Registers the relay lag of outbox table `table`: one sample per row
    /// the broker confirmed, from the row's `created_at` to the confirm. A
    /// table registered again (a restarted relay) shares its histogram.
    pub fn relay_lag(&self, table: impl Into<String>) -> Arc<RelayLag> {
        let table = table.into();
        let mut lags = self.relay_lags.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = lags.iter().find(|lag| lag.table == table) {
            return Arc::clone(known);
        }
        let lag = Arc::new(RelayLag { table, histogram: Mutex::new(new_histogram()) });
        lags.push(Arc::clone(&lag));
        lag
    }

    /// Each outbox table's relay lag so far, as percentiles.
    pub fn relay_lags(&self) -> Vec<(String, Latency)> {
        self.lag_copies().into_iter().map(|(table, histogram)| (table, Latency::from_histogram(&histogram))).collect()
    }

    /// Each outbox table's relay lag as cumulative counts at `bounds`
    /// (ascending); [`LatencyHistogram::path`] is the table.
    pub fn relay_lag_histograms(&self, bounds: &[Duration]) -> Vec<LatencyHistogram> {
        self.lag_copies().into_iter().map(|(table, histogram)| cumulative(table, &histogram, bounds)).collect()
    }

    /// A copy of each table's lag histogram, each lock held for its copy
    /// only (the registry's list is not held while they are taken).
    fn lag_copies(&self) -> Vec<(String, Histogram<u64>)> {
        let lags: Vec<Arc<RelayLag>> =
            self.relay_lags.read().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect();
        lags.iter()
            .map(|lag| (lag.table.clone(), lag.histogram.lock().unwrap_or_else(PoisonError::into_inner).clone()))
            .collect()
    }

    /// A consistent-enough snapshot of every actor: counters are read one by
    /// one, so two counters may be a message apart under load.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let actors = self.actors.read().unwrap_or_else(PoisonError::into_inner);
        MetricsSnapshot::from_actors(actors.iter().map(|actor| actor.snapshot()).collect())
    }
}

/// One actor's handling latency (or one table's relay lag) as cumulative
/// buckets, for exposition formats that want a histogram (Prometheus).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    /// The actor's path; the table, for a relay lag.
    pub path: String,
    /// Samples recorded.
    pub count: u64,
    /// Sum of the samples, in seconds (from the histogram's mean, so within
    /// its 1 % precision).
    pub sum_seconds: f64,
    /// For each bound asked for, the samples at or below it.
    pub cumulative: Vec<u64>,
}

impl MetricsRegistry {
    /// Every actor's latency as cumulative counts at `bounds` (ascending).
    /// Each histogram is copied under its lock, as for a snapshot; the
    /// counting happens outside it.
    pub fn latency_histograms(&self, bounds: &[Duration]) -> Vec<LatencyHistogram> {
        let actors: Vec<Arc<ActorMetrics>> =
            self.actors.read().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect();
        actors
            .iter()
            .map(|actor| {
                let histogram = actor.latency.lock().unwrap_or_else(PoisonError::into_inner).clone();
                cumulative(actor.path.clone(), &histogram, bounds)
            })
            .collect()
    }
}

/// `histogram`'s samples at or below each of `bounds`.
fn cumulative(path: String, histogram: &Histogram<u64>, bounds: &[Duration]) -> LatencyHistogram {
    let cumulative = bounds
        .iter()
        .map(|bound| {
            let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX).min(HISTOGRAM_MAX_NS);
            histogram.count_between(0, nanos)
        })
        .collect();
    LatencyHistogram {
        path,
        count: histogram.len(),
        sum_seconds: histogram.mean() * histogram.len() as f64 / 1e9,
        cumulative,
    }
}

/// One outbox table's relay lag: how long confirmed rows waited between
/// their commit and the broker's confirm. Written by the table's poller
/// only, behind a lock a snapshot takes for the time of a copy, like an
/// actor's latency.
pub struct RelayLag {
    table: String,
    histogram: Mutex<Histogram<u64>>,
}

impl RelayLag {
    /// Records one confirmed row's lag (above an hour, recorded as an hour).
    pub fn record(&self, lag: Duration) {
        let nanos = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX).clamp(1, HISTOGRAM_MAX_NS);
        self.histogram.lock().unwrap_or_else(PoisonError::into_inner).saturating_record(nanos);
    }

    /// Records the lag of a row created at `created_at` (the database's
    /// clock) and confirmed now (this host's clock); a row that seems to
    /// come from the future, the clocks disagreeing, counts as no lag.
    pub fn record_since(&self, created_at: SystemTime) {
        self.record(SystemTime::now().duration_since(created_at).unwrap_or(Duration::ZERO));
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 2).expect("static histogram bounds are valid")
}

/// One actor's figures. The actor writes them; the registry reads them.
///
/// Recording stays cheap and never waits on anything but the actor itself:
/// counters are relaxed atomics, and the latency histogram sits behind a
/// lock that only its one actor takes on the hot path (a snapshot takes it
/// for the time of a copy), so it is uncontended: one atomic swap to take
/// and one to give back, no channel, no thread to wake.
pub struct ActorMetrics {
    path: String,
    mailbox: Option<DepthGauge>,
    counts: [AtomicU64; 6],
    restarts: AtomicU64,
    status: AtomicU8,
    latency: Mutex<Histogram<u64>>,
}

impl ActorMetrics {
    /// The actor's path in the supervision tree.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Counts one handled message and records its latency.
    pub fn record(&self, outcome: Outcome, latency: Duration) {
        self.count(outcome);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.latency.lock().unwrap_or_else(PoisonError::into_inner).saturating_record(nanos);
    }

    /// Counts one message with no latency sample (e.g. a duplicate skipped).
    pub fn count(&self, outcome: Outcome) {
        self.counts[outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);
    }

    /// Messages that ended with `outcome` so far.
    pub fn handled(&self, outcome: Outcome) -> u64 {
        self.counts[outcome_index(outcome)].load(Ordering::Relaxed)
    }

    /// Messages counted so far, whatever their outcome.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|count| count.load(Ordering::Relaxed)).sum()
    }

    /// Counts one restart by the supervisor.
    pub fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Sets the life-cycle status shown in snapshots.
    pub fn set_status(&self, status: ActorStatus) {
        self.status.store(status.as_u8(), Ordering::Relaxed);
    }

    /// The current life-cycle status.
    pub fn status(&self) -> ActorStatus {
        ActorStatus::from_u8(self.status.load(Ordering::Relaxed))
    }

    fn snapshot(&self) -> ActorSnapshot {
        // Copy under the lock, compute percentiles outside it: the actor
        // waits for a memcpy at most.
        let histogram = self.latency.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let count = |outcome| self.handled(outcome);
        ActorSnapshot {
            path: self.path.clone(),
            status: self.status(),
            depth: self.mailbox.as_ref().map_or(0, DepthGauge::depth),
            capacity: self.mailbox.as_ref().map_or(0, DepthGauge::capacity),
            handled: OutcomeCounts {
                ok: count(Outcome::Ok),
                error: count(Outcome::Error),
                panic: count(Outcome::Panic),
                timeout: count(Outcome::Timeout),
                dead_lettered: count(Outcome::DeadLettered),
                duplicate: count(Outcome::Duplicate),
            },
            latency: Latency::from_histogram(&histogram),
            restarts: self.restarts(),
        }
    }
}

fn outcome_index(outcome: Outcome) -> usize {
    Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_latency_reach_the_snapshot() {
        let registry = MetricsRegistry::new();
        let actor = registry.register("mediator/place_order/0", None);
        for micros in [10, 20, 30, 40, 1000] {
            actor.record(Outcome::Ok, Duration::from_micros(micros));
        }
        actor.record(Outcome::Error, Duration::from_micros(5));
        actor.record_restart();
        let snapshot = registry.snapshot();
        let actor = snapshot.actor("mediator/place_order/0").expect("registered");
        assert_eq!(actor.handled.ok, 5);
        assert_eq!(actor.handled.error, 1);
        assert_eq!(actor.restarts, 1);
        assert_eq!(actor.latency.count, 6);
        assert!(actor.latency.max_ns >= 990_000, "max {}", actor.latency.max_ns);
        assert!(actor.latency.p50_ns >= 19_000 && actor.latency.p50_ns <= 31_000, "p50 {}", actor.latency.p50_ns);
    }

    #[test]
    fn relay_lag_is_per_table_and_never_negative() {
        let registry = MetricsRegistry::new();
        let lag = registry.relay_lag("orders_outbox");
        lag.record_since(SystemTime::now() - Duration::from_millis(250));
        // The database's clock ahead of ours: no lag, not a panic.
        lag.record_since(SystemTime::now() + Duration::from_secs(5));
        assert!(Arc::ptr_eq(&lag, &registry.relay_lag("orders_outbox")), "a restarted relay shares it");
        let lags = registry.relay_lags();
        assert_eq!(lags.len(), 1);
        let (table, latency) = &lags[0];
        assert_eq!(table, "orders_outbox");
        assert_eq!(latency.count, 2);
        assert!(latency.max_ns >= 250_000_000, "max {}", latency.max_ns);
        let histograms = registry.relay_lag_histograms(&[Duration::from_millis(1), Duration::from_secs(1)]);
        assert_eq!(histograms[0].cumulative, vec![1, 2]);
    }
}
