//! The metrics endpoint (feature `prometheus`): an HTTP listener serving
//! Prometheus text at `/metrics` and a JSON [`SystemSnapshot`] at
//! `/snapshot` (what `hexeract top` reads).
//!
//! Scrapes read the registry (atomics, and a copy of each latency
//! histogram): nothing on the handlers' path waits for them. Outbox counts
//! come from the stores' `stats` queries, sampled by a task of their own
//! every [`SAMPLE_EVERY`], so a scrape never queries the database and a
//! slow database never slows a scrape.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hexeract_runtime::metrics::{Latency, LatencyHistogram, MetricsRegistry, OutboxFigures, SystemSnapshot};
use hexeract_runtime::ports::outbox::OutboxStore;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How often the outbox tables are counted.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Upper bounds of the relay lag buckets, in seconds: from a relay woken at
/// once (milliseconds) to one polling, backing off or down (minutes).
const LAG_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// What the endpoint reads.
struct Source {
    metrics: MetricsRegistry,
    outboxes: Vec<Arc<dyn OutboxStore>>,
    figures: Mutex<Vec<OutboxFigures>>,
    started: Instant,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").finish_non_exhaustive()
    }
}

impl Source {
    fn snapshot(&self) -> SystemSnapshot {
        let mut outboxes = self.figures.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let lags = self.metrics.relay_lags();
        for figures in &mut outboxes {
            if let Some((_, lag)) = lags.iter().find(|(table, _)| *table == figures.table) {
                figures.relay_lag = *lag;
            }
        }
        SystemSnapshot { actors: self.metrics.snapshot(), outboxes, uptime_secs: self.started.elapsed().as_secs_f64() }
    }

    async fn sample(&self) {
        let mut figures = Vec::with_capacity(self.outboxes.len());
        for store in &self.outboxes {
            let (stats, error) = match store.stats().await {
                Ok(stats) => (Some(stats), None),
                Err(error) => (None, Some(error.to_string())),
            };
            let relay_lag = Latency::default(); // filled in live by `snapshot`
            figures.push(OutboxFigures { table: store.table().to_owned(), stats, error, relay_lag });
        }
        *self.figures.lock().unwrap_or_else(PoisonError::into_inner) = figures;
    }
}

/// The running endpoint: its address, and the tasks to stop at shutdown.
#[derive(Debug)]
pub(crate) struct MetricsEndpoint {
    address: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl MetricsEndpoint {
    /// Binds `address` and starts serving and sampling.
    pub(crate) async fn start(
        address: &str,
        metrics: MetricsRegistry,
        outboxes: Vec<Arc<dyn OutboxStore>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let source = Arc::new(Source { metrics, outboxes, figures: Mutex::new(Vec::new()), started: Instant::now() });
        source.sample().await;
        let sampler = Arc::clone(&source);
        let sampling = tokio::spawn(async move {
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                sampler.sample().await;
            }
        });
        let serving = tokio::spawn(serve(listener, source));
        tracing::info!(%address, "metrics endpoint listening (/metrics, /snapshot)");
        Ok(MetricsEndpoint { address, tasks: vec![sampling, serving] })
    }

    /// The address bound (useful with port 0).
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops listening and sampling.
    pub(crate) fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(listener: TcpListener, source: Arc<Source>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(%error, "metrics endpoint cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let source = Arc::clone(&source);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let source = Arc::clone(&source);
                async move { Ok::<_, Infallible>(respond(&source, &request)) }
            });
            if let Err(error) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                tracing::debug!(%error, "metrics connection ended with an error");
            }
        });
    }
}

fn respond(source: &Arc<Source>, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    if request.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match request.uri().path() {
        "/metrics" => match prometheus_text(source) {
            Ok(text) => reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", text),
            Err(error) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{error}\n")),
        },
        "/snapshot" => match serde_json::to_string(&source.snapshot()) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(error) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{error}\n")),
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "try /metrics or /snapshot\n".into()),
    }
}

fn prometheus_text(source: &Arc<Source>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Figures(Arc::clone(source))));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// The registry's figures, encoded at scrape time.
#[derive(Debug)]
struct Figures(Arc<Source>);

/// What kind of actor a path names, for the `kind` label.
fn kind(path: &str) -> &'static str {
    match path.split('/').next() {
        Some("mediator") => "handler",
        Some("bus") if path == "bus/publisher" => "publisher",
        Some("bus") if path == "bus/connection" => "connection",
        Some("bus") => "consumer",
        Some("outbox") => "poller",
        _ => "other",
    }
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: its samples, each with its labels.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut samples: Vec<(Labels, M)> = samples.into_iter().collect();
    if samples.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    // A family without labels is one sample, written `name value` (not
    // `name{} value`).
    if samples.len() == 1 && samples[0].0.is_empty() {
        if let Some((_, value)) = samples.pop() {
            value.encode(metric)?;
        }
        return Ok(());
    }
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn bounds(seconds: &[f64]) -> Vec<Duration> {
    seconds.iter().map(|secs| Duration::from_secs_f64(*secs)).collect()
}

/// One histogram family: `buckets` are the bounds each histogram was
/// counted at.
fn histogram_family<'h>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    buckets: &[f64],
    histograms: impl IntoIterator<Item = (Labels, &'h LatencyHistogram)>,
) -> Result<(), std::fmt::Error> {
    let histograms: Vec<(Labels, &LatencyHistogram)> = histograms.into_iter().collect();
    if histograms.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, histogram) in histograms {
        let mut counts: Vec<(f64, u64)> = buckets.iter().copied().zip(histogram.cumulative.clone()).collect();
        counts.push((f64::INFINITY, histogram.count));
        // prometheus-client wants per-bucket counts and sums them.
        let mut previous = 0;
        for bucket in &mut counts {
            let cumulative = bucket.1.max(previous);
            bucket.1 = cumulative - previous;
            previous = cumulative;
        }
        metric.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            histogram.sum_seconds,
            histogram.count,
            &counts,
            None,
        )?;
    }
    Ok(())
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

fn gauge(value: f64) -> ConstGauge<f64> {
    ConstGauge::new(value)
}

impl Collector for Figures {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.snapshot();
        let actors = snapshot.actors.actors();
        let actor = |path: &str| -> Labels { vec![("actor", path.to_owned()), ("kind", kind(path).to_owned())] };

        family(
            &mut encoder,
            "hexeract_actor_mailbox_depth",
            "Messages queued or being handled",
            MetricType::Gauge,
            actors.iter().filter(|a| a.capacity > 0).map(|a| (actor(&a.path), gauge(a.depth as f64))),
        )?;
        family(
            &mut encoder,
            "hexeract_actor_mailbox_capacity",
            "Mailbox bound",
            MetricType::Gauge,
            actors.iter().filter(|a| a.capacity > 0).map(|a| (actor(&a.path), gauge(a.capacity as f64))),
        )?;
        family(
            &mut encoder,
            "hexeract_actor_messages",
            "Messages handled, by outcome",
            MetricType::Counter,
            actors.iter().flat_map(|a| {
                let h = a.handled;
                [
                    ("ok", h.ok),
                    ("error", h.error),
                    ("panic", h.panic),
                    ("timeout", h.timeout),
                    ("dead_lettered", h.dead_lettered),
                    ("duplicate", h.duplicate),
                ]
                .map(|(outcome, n)| {
                    let mut labels = actor(&a.path);
                    labels.push(("outcome", outcome.to_owned()));
                    (labels, counter(n))
                })
            }),
        )?;
        family(
            &mut encoder,
            "hexeract_actor_restarts",
            "Restarts by the supervisor",
            MetricType::Counter,
            actors.iter().map(|a| (actor(&a.path), counter(a.restarts))),
        )?;
        family(
            &mut encoder,
            "hexeract_actor_up",
            "1 while the actor is running, 0 while restarting, stopped or given up",
            MetricType::Gauge,
            actors.iter().map(|a| {
                let up = matches!(a.status, hexeract_runtime::metrics::ActorStatus::Running);
                (actor(&a.path), gauge(if up { 1.0 } else { 0.0 }))
            }),
        )?;
        let histograms = self.0.metrics.latency_histograms(&bounds(&BUCKETS));
        histogram_family(
            &mut encoder,
            "hexeract_actor_handling_seconds",
            "Time to handle one message",
            &BUCKETS,
            histograms.iter().map(|histogram| (actor(&histogram.path), histogram)),
        )?;

        // Subsystems, named for what operators alert on.
        let publisher = actors.iter().find(|a| a.path == "bus/publisher");
        family(
            &mut encoder,
            "hexeract_bus_publishes",
            "Publishes confirmed by the broker",
            MetricType::Counter,
            publisher.map(|p| (Labels::new(), counter(p.handled.ok))),
        )?;
        family(
            &mut encoder,
            "hexeract_bus_confirm_failures",
            "Publishes the broker nacked, returned or did not confirm in time",
            MetricType::Counter,
            publisher.map(|p| (Labels::new(), counter(p.handled.error))),
        )?;
        let consumers: Vec<_> = actors
            .iter()
            .filter_map(|a| a.path.strip_prefix("bus/consumer/").map(|queue| (queue.to_owned(), *a)))
            .collect();
        family(
            &mut encoder,
            "hexeract_bus_redeliveries",
            "Deliveries that failed and were published again for a delayed retry",
            MetricType::Counter,
            consumers.iter().map(|(queue, a)| (vec![("queue", queue.clone())], counter(a.handled.error))),
        )?;
        family(
            &mut encoder,
            "hexeract_bus_dead_letters",
            "Deliveries moved to the queue's dead-letter queue",
            MetricType::Counter,
            consumers.iter().map(|(queue, a)| (vec![("queue", queue.clone())], counter(a.handled.dead_lettered))),
        )?;
        family(
            &mut encoder,
            "hexeract_inbox_duplicates",
            "Messages recognised by an inbox as already processed, and skipped",
            MetricType::Counter,
            actors
                .iter()
                .filter(|a| a.handled.duplicate > 0 || kind(&a.path) == "handler")
                .map(|a| (vec![("actor", a.path.clone())], counter(a.handled.duplicate))),
        )?;
        family(
            &mut encoder,
            "hexeract_supervisor_restarts",
            "Actor restarts, all actors together",
            MetricType::Counter,
            [(Labels::new(), counter(actors.iter().map(|a| a.restarts).sum()))],
        )?;
        let pollers: Vec<_> =
            actors.iter().filter_map(|a| a.path.strip_prefix("outbox/").map(|table| (table.to_owned(), *a))).collect();
        family(
            &mut encoder,
            "hexeract_outbox_relayed",
            "Outbox rows handed to the bus, by outcome (ok: confirmed; error: will retry; dead_lettered: marked dead)",
            MetricType::Counter,
            pollers.iter().flat_map(|(table, a)| {
                [("ok", a.handled.ok), ("error", a.handled.error), ("dead_lettered", a.handled.dead_lettered)]
                    .map(|(outcome, n)| (vec![("table", table.clone()), ("outcome", outcome.to_owned())], counter(n)))
            }),
        )?;
        family(
            &mut encoder,
            "hexeract_outbox_relay_p99_seconds",
            "99th percentile of the time from publishing a row to the broker's confirm",
            MetricType::Gauge,
            pollers.iter().map(|(table, a)| (vec![("table", table.clone())], gauge(a.latency.p99_ns as f64 / 1e9))),
        )?;
        let lags = self.0.metrics.relay_lag_histograms(&bounds(&LAG_BUCKETS));
        histogram_family(
            &mut encoder,
            "hexeract_outbox_relay_lag_seconds",
            "Time from a row's commit (its created_at, database clock) to the broker's confirm, per confirmed row",
            &LAG_BUCKETS,
            lags.iter().map(|lag| (vec![("table", lag.path.clone())], lag)),
        )?;
        let sampled: Vec<_> =
            snapshot.outboxes.iter().filter_map(|f| f.stats.map(|stats| (f.table.clone(), stats))).collect();
        let table = |name: &String| vec![("table", name.clone())];
        family(
            &mut encoder,
            "hexeract_outbox_pending_rows",
            "Rows waiting to be relayed, not leased",
            MetricType::Gauge,
            sampled.iter().map(|(name, s)| (table(name), gauge(s.pending as f64))),
        )?;
        family(
            &mut encoder,
            "hexeract_outbox_in_flight_rows",
            "Rows leased to a poller",
            MetricType::Gauge,
            sampled.iter().map(|(name, s)| (table(name), gauge(s.in_flight as f64))),
        )?;
        family(
            &mut encoder,
            "hexeract_outbox_dead_rows",
            "Rows that exhausted their attempts",
            MetricType::Gauge,
            sampled.iter().map(|(name, s)| (table(name), gauge(s.dead as f64))),
        )?;
        family(
            &mut encoder,
            "hexeract_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending row (0 when none): the relay lag an alert should watch",
            MetricType::Gauge,
            sampled
                .iter()
                .map(|(name, s)| (table(name), gauge(s.oldest_pending_age.map_or(0.0, |age| age.as_secs_f64())))),
        )?;
        family(
            &mut encoder,
            "hexeract_outbox_sample_errors",
            "1 when the last count of the table failed",
            MetricType::Gauge,
            snapshot.outboxes.iter().map(|f| (table(&f.table), gauge(if f.error.is_some() { 1.0 } else { 0.0 }))),
        )?;
        family(
            &mut encoder,
            "hexeract_uptime_seconds",
            "Seconds since the system started",
            MetricType::Gauge,
            [(Labels::new(), gauge(snapshot.uptime_secs))],
        )?;
        Ok(())
    }
}
