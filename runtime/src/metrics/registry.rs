use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use hdrhistogram::Histogram;

use super::snapshot::{ActorSnapshot, Latency, MetricsSnapshot, OutcomeCounts};
use super::{ActorStatus, Outcome};
use crate::mailbox::DepthGauge;

/// Latency samples waiting for the reporter. Past this the hot path drops
/// samples rather than wait: a histogram missing a few points beats a
/// handler slowed by its own instrumentation.
const SAMPLE_QUEUE: usize = 64 * 1024;

/// Histograms record nanoseconds from 1 ns to one hour, 2 significant digits.
const HISTOGRAM_MAX_NS: u64 = 3_600_000_000_000;

/// While samples keep coming, the reporter folds them in this often. The
/// queue holds `SAMPLE_QUEUE` samples, so this keeps up with ~13 M samples/s.
const REPORT_PERIOD: Duration = Duration::from_millis(5);

struct Sample {
    actor: usize,
    nanos: u64,
}

/// The registry every actor of one system reports into.
#[derive(Clone)]
pub struct MetricsRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    actors: RwLock<Vec<Arc<ActorMetrics>>>,
    samples: Sender<Sample>,
    // The reporter's queue, also drained by `snapshot`: a snapshot includes
    // every sample recorded before it, whenever the reporter last ran.
    pending: Receiver<Sample>,
    dropped: Arc<AtomicU64>,
    histograms: Arc<Mutex<Vec<Histogram<u64>>>>,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsRegistry {
    /// A registry with its reporter thread. The thread ends when the registry
    /// and every [`ActorMetrics`] it handed out are dropped.
    pub fn new() -> Self {
        let (samples, rx) = crossbeam_channel::bounded(SAMPLE_QUEUE);
        let histograms = Arc::new(Mutex::new(Vec::new()));
        let reporter_histograms = Arc::clone(&histograms);
        let pending = rx.clone();
        let spawned = std::thread::Builder::new()
            .name("hexeract-metrics".into())
            .spawn(move || run_reporter(&rx, &reporter_histograms));
        if let Err(error) = spawned {
            // Without a reporter, samples fill the queue and are counted as
            // dropped; counters and depth still work.
            tracing::warn!(%error, "metrics reporter thread did not start; latency will be missing");
        }
        MetricsRegistry {
            inner: Arc::new(Inner {
                actors: RwLock::new(Vec::new()),
                samples,
                pending,
                dropped: Arc::new(AtomicU64::new(0)),
                histograms,
            }),
        }
    }

    /// Registers an actor under its tree path (`mediator/place_order/2`).
    /// `mailbox` gives its depth and capacity, when it has one.
    pub fn register(&self, path: impl Into<String>, mailbox: Option<DepthGauge>) -> Arc<ActorMetrics> {
        let mut actors = self.inner.actors.write().unwrap_or_else(PoisonError::into_inner);
        let mut histograms = self.inner.histograms.lock().unwrap_or_else(PoisonError::into_inner);
        let id = actors.len();
        histograms.push(new_histogram());
        let metrics = Arc::new(ActorMetrics {
            id,
            path: path.into(),
            mailbox,
            counts: Default::default(),
            restarts: AtomicU64::new(0),
            status: AtomicU8::new(ActorStatus::Running.as_u8()),
            samples: self.inner.samples.clone(),
            dropped: Arc::clone(&self.inner.dropped),
        });
        actors.push(Arc::clone(&metrics));
        metrics
    }

    /// A consistent-enough snapshot of every actor: counters are read one by
    /// one, so two counters may be a message apart under load.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let actors = self.inner.actors.read().unwrap_or_else(PoisonError::into_inner);
        let mut histograms = self.inner.histograms.lock().unwrap_or_else(PoisonError::into_inner);
        // Fold in what the reporter has not got to yet (it wakes every
        // `REPORT_PERIOD` while busy), so latency is as fresh as the counters.
        for sample in self.inner.pending.try_iter().take(SAMPLE_QUEUE) {
            record_sample(&mut histograms, &sample);
        }
        let snapshots = actors.iter().map(|actor| actor.snapshot(histograms.get(actor.id))).collect();
        MetricsSnapshot::from_actors(snapshots, self.inner.dropped.load(Ordering::Relaxed))
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 2).expect("static histogram bounds are valid")
}

fn run_reporter(rx: &Receiver<Sample>, histograms: &Mutex<Vec<Histogram<u64>>>) {
    // Idle, the thread blocks and the next sample wakes it. Busy, it drains
    // the queue every `REPORT_PERIOD` without being woken: a sender only
    // pays for waking it (a system call) once per idle spell, not once per
    // sample.
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(first) = next.take() {
            fold(first, rx, histograms);
            std::thread::sleep(REPORT_PERIOD);
            match rx.try_recv() {
                Ok(sample) => next = Some(sample),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }
}

/// Records `first` and everything already queued, a bounded batch per lock
/// so that a snapshot never waits long.
fn fold(first: Sample, rx: &Receiver<Sample>, histograms: &Mutex<Vec<Histogram<u64>>>) {
    let mut first = Some(first);
    loop {
        let mut histograms = histograms.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sample) = first.take() {
            record_sample(&mut histograms, &sample);
        }
        let mut taken = 0;
        for sample in rx.try_iter().take(4096) {
            taken += 1;
            record_sample(&mut histograms, &sample);
        }
        if taken < 4096 {
            return;
        }
    }
}

fn record_sample(histograms: &mut [Histogram<u64>], sample: &Sample) {
    if let Some(histogram) = histograms.get_mut(sample.actor) {
        histogram.saturating_record(sample.nanos.max(1));
    }
}

/// One actor's figures. The actor writes them; the registry reads them.
pub struct ActorMetrics {
    id: usize,
    path: String,
    mailbox: Option<DepthGauge>,
    counts: [AtomicU64; 6],
    restarts: AtomicU64,
    status: AtomicU8,
    samples: Sender<Sample>,
    dropped: Arc<AtomicU64>,
}

impl ActorMetrics {
    /// The actor's path in the supervision tree.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Counts one handled message and sends its latency to the reporter.
    pub fn record(&self, outcome: Outcome, latency: Duration) {
        self.count(outcome);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        match self.samples.try_send(Sample { actor: self.id, nanos }) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts one message with no latency sample (e.g. a duplicate skipped).
    pub fn count(&self, outcome: Outcome) {
        self.counts[outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);
    }

    /// Messages that ended with `outcome` so far.
    pub fn handled(&self, outcome: Outcome) -> u64 {
        self.counts[outcome_index(outcome)].load(Ordering::Relaxed)
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

    fn snapshot(&self, histogram: Option<&Histogram<u64>>) -> ActorSnapshot {
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
            latency: histogram.map(Latency::from_histogram).unwrap_or_default(),
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
        // The reporter thread folds samples in asynchronously.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let snapshot = loop {
            let snapshot = registry.snapshot();
            let latency = snapshot.actor("mediator/place_order/0").expect("registered").latency;
            if latency.count == 6 || std::time::Instant::now() > deadline {
                break snapshot;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let actor = snapshot.actor("mediator/place_order/0").expect("registered");
        assert_eq!(actor.handled.ok, 5);
        assert_eq!(actor.handled.error, 1);
        assert_eq!(actor.restarts, 1);
        assert_eq!(actor.latency.count, 6);
        assert!(actor.latency.max_ns >= 990_000, "max {}", actor.latency.max_ns);
        assert!(actor.latency.p50_ns >= 19_000 && actor.latency.p50_ns <= 31_000, "p50 {}", actor.latency.p50_ns);
    }
}
