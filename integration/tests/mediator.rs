//! The mediator's delivery contract and failure semantics, against real
//! actors (no mocks): each test builds its own system with the handlers it
//! needs, registered by hand so tests do not see each other's handlers.
//! Only `verify_handlers_names_duplicates_and_missing_handlers` uses
//! discovery, on purpose.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hexeract::metrics::ActorStatus;
use hexeract::middleware::{Dispatch, Middleware, Next, Timeout};
use hexeract::{
    Backoff, BoxError, BoxFuture, Context, DispatchError, Hexeract, Message, MessageId, RestartPolicy, StartError,
    TrySendError, handler,
};
use hexeract_integration::{eventually, within};
use tokio::sync::Semaphore;

const LIMIT: Duration = Duration::from_secs(60);

/// Restarts quickly, so tests that panic do not wait for the default backoff.
fn quick_restarts() -> RestartPolicy {
    RestartPolicy::default().backoff(Backoff::new(Duration::from_millis(5), Duration::from_millis(50)).expect("valid"))
}

/// A gate handlers wait on, opened by the test.
#[derive(Clone)]
struct Gate(Arc<Semaphore>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(Semaphore::new(0)))
    }
}

impl Gate {
    async fn pass(&self) {
        let _ = self.0.acquire().await.map(|permit| permit.forget());
    }
    fn open(&self, n: usize) {
        self.0.add_permits(n);
    }
}

// ---- handler errors ---------------------------------------------------------

#[derive(Debug, PartialEq)]
struct OutOfStock {
    sku: String,
}
impl std::fmt::Display for OutOfStock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is out of stock", self.sku)
    }
}
impl std::error::Error for OutOfStock {}

#[derive(Message)]
#[message(name = "test.reserve.v1", command, output = u32)]
struct Reserve {
    sku: String,
}

#[handler]
async fn reserve(cmd: Reserve) -> Result<u32, OutOfStock> {
    if cmd.sku == "none" { Err(OutOfStock { sku: cmd.sku }) } else { Ok(7) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_reaches_the_caller_and_the_actor_keeps_serving() {
    within(LIMIT, async {
        let system = Hexeract::builder().handler(ReserveHandler).start().await.expect("start");
        let mediator = system.mediator();
        let error = mediator.send(Reserve { sku: "none".into() }).await.expect_err("out of stock");
        assert_eq!(error.handler_error::<OutOfStock>(), Some(&OutOfStock { sku: "none".into() }));
        assert!(matches!(error, DispatchError::Handler { handler: "reserve", message: "test.reserve.v1", .. }));
        assert_eq!(mediator.send(Reserve { sku: "tea".into() }).await.expect("still serving"), 7);

        let snapshot = system.metrics();
        let actor = snapshot.actor("mediator/reserve").expect("actor listed");
        assert_eq!((actor.handled.ok, actor.handled.error, actor.restarts), (1, 1, 0));
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

// ---- panics, restarts, messages queued behind a panic -------------------------

#[derive(Message)]
#[message(name = "test.flaky.v1", command, output = u32)]
struct Flaky;

/// Panics on its first two messages, then answers how many it has seen.
#[derive(Clone, Default)]
struct FlakyActor {
    seen_by_this_incarnation: u32,
}

#[handler(manual)]
impl FlakyActor {
    async fn handle_flaky(&mut self, _cmd: Flaky, ctx: &Context) -> Result<u32, BoxError> {
        let attempts = ctx.state::<Arc<AtomicUsize>>()?.fetch_add(1, Ordering::SeqCst);
        self.seen_by_this_incarnation += 1;
        if attempts < 2 {
            panic!("flaky attempt {attempts}");
        }
        Ok(self.seen_by_this_incarnation)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_answers_handler_panicked_and_the_actor_restarts_with_fresh_state() {
    within(LIMIT, async {
        let attempts = Arc::new(AtomicUsize::new(0));
        let system = Hexeract::builder()
            .state(Arc::clone(&attempts))
            .handler(FlakyActor::default())
            .restart_policy(quick_restarts())
            .start()
            .await
            .expect("start");
        let mediator = system.mediator();
        for attempt in 0..2 {
            match mediator.send(Flaky).await {
                Err(DispatchError::HandlerPanicked { handler: "flaky_actor", panic, .. }) => {
                    assert_eq!(panic, format!("flaky attempt {attempt}"));
                }
                other => panic!("expected HandlerPanicked, got {other:?}"),
            }
        }
        // Served by the third incarnation, which starts from the initial state.
        assert_eq!(mediator.send(Flaky).await.expect("recovered"), 1);
        let snapshot = system.metrics();
        let actor = snapshot.actor("mediator/flaky_actor").expect("listed");
        assert_eq!(actor.restarts, 2);
        assert_eq!((actor.handled.panic, actor.handled.ok), (2, 1));
        assert_eq!(actor.status, ActorStatus::Running);
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

#[derive(Message)]
#[message(name = "test.queued.v1", command, output = u32)]
struct Queued {
    n: u32,
    explode: bool,
}

#[handler(capacity = 64)]
async fn queued(cmd: Queued, ctx: &Context) -> Result<u32, BoxError> {
    if cmd.explode {
        // Hold the actor until the test has queued everything behind us.
        ctx.state::<Gate>()?.pass().await;
        panic!("exploding with 50 messages queued behind");
    }
    Ok(cmd.n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_messages_queued_behind_a_panic_are_handled_by_the_restarted_actor() {
    within(LIMIT, async {
        let gate = Gate::default();
        let system = Hexeract::builder()
            .state(gate.clone())
            .handler(QueuedHandler)
            .restart_policy(quick_restarts())
            .start()
            .await
            .expect("start");
        let mediator = system.mediator();
        // try_send queues synchronously, so the order in the mailbox is known.
        let exploding = mediator.try_send(Queued { n: 0, explode: true }).expect("room");
        let behind: Vec<_> = (1..=50).map(|n| mediator.try_send(Queued { n, explode: false }).expect("room")).collect();
        assert_eq!(system.metrics().actor("mediator/queued").expect("listed").depth, 51);
        gate.open(1);

        assert!(matches!(exploding.await, Err(DispatchError::HandlerPanicked { .. })));
        let answers: Vec<u32> = futures::future::join_all(behind)
            .await
            .into_iter()
            .map(|answer| answer.expect("handled after the restart"))
            .collect();
        assert_eq!(answers, (1..=50).collect::<Vec<_>>());
        let snapshot = system.metrics();
        let actor = snapshot.actor("mediator/queued").expect("listed");
        assert_eq!((actor.restarts, actor.handled.ok, actor.handled.panic, actor.depth), (1, 50, 1, 0));
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

#[derive(Message)]
#[message(name = "test.doomed.v1", command, output = ())]
struct Doomed;

#[handler]
async fn doomed(_cmd: Doomed) -> Result<(), BoxError> {
    panic!("always");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_restart_intensity_the_actor_is_given_up_and_callers_are_told() {
    within(LIMIT, async {
        let policy = quick_restarts().intensity(2, Duration::from_secs(60)).expect("valid");
        let system = Hexeract::builder().handler(DoomedHandler).restart_policy(policy).start().await.expect("start");
        let mediator = system.mediator();
        for _ in 0..3 {
            assert!(matches!(mediator.send(Doomed).await, Err(DispatchError::HandlerPanicked { .. })));
        }
        let given_up = eventually(Duration::from_secs(5), || {
            system.metrics().actor("mediator/doomed").is_some_and(|a| a.status == ActorStatus::GivenUp)
        })
        .await;
        assert!(given_up, "the supervisor gives up after the third failure in the window");
        assert!(matches!(mediator.send(Doomed).await, Err(DispatchError::HandlerStopped { handler: "doomed", .. })));
        let escalations = system.escalations();
        assert_eq!(escalations.len(), 1);
        assert_eq!(escalations[0].path, "mediator/doomed");
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

// ---- timeouts -------------------------------------------------------------------

/// Set when the handler's future is dropped before it finished.
struct DroppedFlag(Arc<AtomicBool>);
impl Drop for DroppedFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[derive(Message)]
#[message(name = "test.stuck.v1", command, output = ())]
struct Stuck;

#[handler(timeout = "50ms")]
async fn stuck(_cmd: Stuck, ctx: &Context) -> Result<(), BoxError> {
    let _guard = DroppedFlag(Arc::clone(ctx.state::<Arc<AtomicBool>>()?));
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_timeout_answers_timeout_and_cancels_the_work() {
    within(LIMIT, async {
        let dropped = Arc::new(AtomicBool::new(false));
        let system =
            Hexeract::builder().state(Arc::clone(&dropped)).handler(StuckHandler).start().await.expect("start");
        let started = std::time::Instant::now();
        let result = system.mediator().send(Stuck).await;
        assert!(matches!(result, Err(DispatchError::Timeout { message: "test.stuck.v1", after }) if after == Duration::from_millis(50)));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(dropped.load(Ordering::SeqCst), "the handler's future was dropped, not left running");
        let snapshot = system.metrics();
        assert_eq!(snapshot.actor("mediator/stuck").expect("listed").handled.timeout, 1);
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

#[derive(Message)]
#[message(name = "test.patient.v1", command, output = ())]
struct Patient;

#[handler]
async fn patient(_cmd: Patient, ctx: &Context) -> Result<(), BoxError> {
    let _guard = DroppedFlag(Arc::clone(ctx.state::<Arc<AtomicBool>>()?));
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_middleware_cancels_the_handler_context() {
    within(LIMIT, async {
        let dropped = Arc::new(AtomicBool::new(false));
        let system = Hexeract::builder()
            .state(Arc::clone(&dropped))
            .middleware(Timeout::new(Duration::from_millis(50)))
            .handler(PatientHandler)
            .start()
            .await
            .expect("start");
        let result = system.mediator().send(Patient).await;
        assert!(matches!(result, Err(DispatchError::Timeout { message: "test.patient.v1", .. })), "{result:?}");
        let cancelled = eventually(Duration::from_secs(5), || dropped.load(Ordering::SeqCst)).await;
        assert!(cancelled, "the handler's work was cancelled when the timeout fired");
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

// ---- routing errors and back-pressure ---------------------------------------------

#[derive(Debug, Message)]
#[message(name = "test.unhandled.v1", command, output = ())]
struct Unhandled;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_handler_is_no_handler_naming_the_type() {
    within(LIMIT, async {
        let system = Hexeract::builder().start().await.expect("start");
        let error = system.mediator().send(Unhandled).await.expect_err("nobody handles it");
        assert!(matches!(error, DispatchError::NoHandler { message: "test.unhandled.v1", .. }));
        assert!(error.to_string().contains("mediator::Unhandled"), "{error}");
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

#[derive(Debug, Message)]
#[message(name = "test.slow-one.v1", command, output = u32)]
struct SlowOne(u32);

#[handler(capacity = 1)]
async fn slow_one(cmd: SlowOne, ctx: &Context) -> Result<u32, BoxError> {
    ctx.state::<Gate>()?.pass().await;
    Ok(cmd.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_send_on_a_full_mailbox_is_mailbox_full_and_hands_the_message_back() {
    within(LIMIT, async {
        let gate = Gate::default();
        let system = Hexeract::builder().state(gate.clone()).handler(SlowOneHandler).start().await.expect("start");
        let mediator = system.mediator();
        let first = mediator.try_send(SlowOne(1)).expect("room for one");
        match mediator.try_send(SlowOne(2)) {
            Err(TrySendError::MailboxFull { message, handler: "slow_one", capacity: 1 }) => assert_eq!(message.0, 2),
            Err(other) => panic!("expected MailboxFull, got {other}"),
            Ok(_) => panic!("expected MailboxFull, the mailbox holds one message"),
        }
        gate.open(1);
        assert_eq!(first.await.expect("handled"), 1);
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

#[derive(Message)]
#[message(name = "test.bounded.v1", command, output = ())]
struct Bounded(u32);

#[derive(Clone, Default)]
struct BoundedActor;

#[handler(capacity = 8, manual)]
impl BoundedActor {
    async fn handle_bounded(&mut self, cmd: Bounded, ctx: &Context) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        ctx.state::<Arc<Mutex<Vec<u32>>>>()?.lock().map_err(|_| "poisoned")?.push(cmd.0);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_never_holds_more_than_its_capacity_and_every_message_is_handled_once() {
    within(LIMIT, async {
        let handled: Arc<Mutex<Vec<u32>>> = Arc::new(Mutex::new(Vec::new()));
        let system =
            Hexeract::builder().state(Arc::clone(&handled)).handler(BoundedActor).start().await.expect("start");
        let mediator = system.mediator();
        let senders: Vec<_> = (0..100)
            .map(|n| {
                let mediator = mediator.clone();
                tokio::spawn(async move { mediator.send(Bounded(n)).await })
            })
            .collect();
        let mut max_depth = 0;
        let mut samples = 0;
        while !senders.iter().all(|s| s.is_finished()) {
            let snapshot = system.metrics();
            let actor = snapshot.actor("mediator/bounded_actor").expect("listed");
            assert_eq!(actor.capacity, 8);
            max_depth = max_depth.max(actor.depth);
            samples += 1;
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        for sender in senders {
            sender.await.expect("task").expect("handled");
        }
        assert!(max_depth <= 8, "depth reached {max_depth}");
        assert_eq!(max_depth, 8, "100 senders keep the mailbox full ({samples} samples)");
        let handled = handled.lock().expect("lock").clone();
        assert_eq!(handled.len(), 100);
        assert_eq!(handled.iter().collect::<HashSet<_>>().len(), 100, "each message handled exactly once");
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

// ---- notifications --------------------------------------------------------------

#[derive(Clone, Message)]
#[message(name = "test.order-shipped.v1", notification)]
struct OrderShipped;

#[derive(Default)]
struct Counters {
    email: AtomicUsize,
    ledger: AtomicUsize,
}

#[handler]
async fn email_customer(_event: OrderShipped, ctx: &Context) -> Result<(), BoxError> {
    ctx.state::<Arc<Counters>>()?.email.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[handler]
async fn broken_subscriber(_event: OrderShipped) -> Result<(), BoxError> {
    Err("warehouse is closed".into())
}

#[handler]
async fn update_ledger(_event: OrderShipped, ctx: &Context) -> Result<(), BoxError> {
    ctx.state::<Arc<Counters>>()?.ledger.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_subscriber_does_not_stop_the_others_and_its_failure_is_reported() {
    within(LIMIT, async {
        let counters = Arc::new(Counters::default());
        let system = Hexeract::builder()
            .state(Arc::clone(&counters))
            .handler(EmailCustomerHandler)
            .handler(BrokenSubscriberHandler)
            .handler(UpdateLedgerHandler)
            .start()
            .await
            .expect("start");
        let error = system.mediator().publish(OrderShipped).await.expect_err("one subscriber fails");
        assert_eq!(error.subscribers, 3);
        assert_eq!(error.failures.len(), 1);
        assert_eq!(error.failures[0].handler, "broken_subscriber");
        assert!(error.to_string().contains("broken_subscriber"), "{error}");
        assert_eq!(counters.email.load(Ordering::SeqCst), 1);
        assert_eq!(counters.ledger.load(Ordering::SeqCst), 1);
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

// ---- per-key order in pools ---------------------------------------------------------

#[derive(Message)]
#[message(name = "test.account-entry.v1", command, output = (), key = account)]
struct AccountEntry {
    account: u32,
    seq: u32,
}

type Ledger = Arc<Mutex<HashMap<u32, Vec<u32>>>>;

#[handler(workers = 4, capacity = 10000)]
async fn record_entry(entry: AccountEntry, ctx: &Context) -> Result<(), BoxError> {
    // Yield so that the four workers really interleave.
    tokio::task::yield_now().await;
    ctx.state::<Ledger>()?.lock().map_err(|_| "poisoned")?.entry(entry.account).or_default().push(entry.seq);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_handles_each_keys_messages_in_order() {
    within(LIMIT, async {
        let ledger = Ledger::default();
        let system =
            Hexeract::builder().state(Arc::clone(&ledger)).handler(RecordEntryHandler).start().await.expect("start");
        let mediator = system.mediator();
        // 10,000 messages over 50 keys, queued in one sequence without waiting.
        let replies: Vec<_> = (0..10_000)
            .map(|i| mediator.try_send(AccountEntry { account: i % 50, seq: i / 50 }).expect("room"))
            .collect();
        for reply in futures::future::join_all(replies).await {
            reply.expect("handled");
        }
        let ledger = ledger.lock().expect("lock").clone();
        assert_eq!(ledger.len(), 50);
        for (account, seqs) in &ledger {
            assert_eq!(seqs, &(0..200).collect::<Vec<_>>(), "account {account} out of order");
        }
        let snapshot = system.metrics();
        let workers = snapshot.subtree("mediator/record_entry");
        assert_eq!(workers.len(), 4);
        assert!(workers.iter().all(|w| w.handled.ok > 0), "keys spread over all workers");
        assert_eq!(workers.iter().map(|w| w.handled.ok).sum::<u64>(), 10_000);
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

// ---- shutdown -------------------------------------------------------------------

#[derive(Message)]
#[message(name = "test.drain.v1", command, output = u32)]
struct Drain(u32);

#[handler(capacity = 100)]
async fn drain(cmd: Drain) -> Result<u32, BoxError> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(cmd.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_queued_work_and_reports_it() {
    within(LIMIT, async {
        let system = Hexeract::builder().handler(DrainHandler).start().await.expect("start");
        let mediator = system.mediator();
        let replies: Vec<_> = (0..20).map(|n| mediator.try_send(Drain(n)).expect("room")).collect();
        let report = system.shutdown(Duration::from_secs(10)).await;
        assert!(report.is_clean(), "{report}");
        assert!(!report.deadline_reached);
        assert_eq!(report.drained(), 20, "{report}");
        let answers: Vec<u32> =
            futures::future::join_all(replies).await.into_iter().map(|r| r.expect("drained")).collect();
        assert_eq!(answers, (0..20).collect::<Vec<_>>());
        assert!(matches!(mediator.send(Drain(99)).await, Err(DispatchError::ShuttingDown { .. })));
    })
    .await;
}

#[derive(Message)]
#[message(name = "test.long-haul.v1", command, output = ())]
struct LongHaul;

#[handler(capacity = 10)]
async fn long_haul(_cmd: LongHaul) -> Result<(), BoxError> {
    tokio::time::sleep(Duration::from_secs(30)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_deadline_unfinished_work_is_answered_shutting_down_and_counted() {
    within(LIMIT, async {
        let system = Hexeract::builder().handler(LongHaulHandler).start().await.expect("start");
        let mediator = system.mediator();
        let replies: Vec<_> = (0..5).map(|_| mediator.try_send(LongHaul).expect("room")).collect();
        let report = system.shutdown(Duration::from_millis(200)).await;
        assert!(report.deadline_reached);
        assert_eq!((report.drained(), report.abandoned()), (0, 5), "{report}");
        assert!(report.elapsed < Duration::from_secs(5), "shutdown honours its deadline: {report}");
        for reply in futures::future::join_all(replies).await {
            assert!(matches!(reply, Err(DispatchError::ShuttingDown { message: "test.long-haul.v1" })), "{reply:?}");
        }
    })
    .await;
}

// ---- context: state, correlation, middleware ----------------------------------------

#[derive(Message)]
#[message(name = "test.needs-state.v1", query, output = ())]
struct NeedsState;

struct NotRegistered;

#[handler]
async fn needs_state(_q: NeedsState, ctx: &Context) -> Result<(), BoxError> {
    ctx.state::<NotRegistered>()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_state_is_an_error_naming_the_type() {
    within(LIMIT, async {
        let system = Hexeract::builder().handler(NeedsStateHandler).start().await.expect("start");
        let error = system.mediator().query(NeedsState).await.expect_err("state missing");
        let source = std::error::Error::source(&error).expect("handler error").to_string();
        assert!(source.contains("mediator::NotRegistered") && source.contains(".state("), "{source}");
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

#[derive(Message)]
#[message(name = "test.outer.v1", command, output = (MessageId, MessageId, MessageId, Option<MessageId>))]
struct Outer;

#[derive(Message)]
#[message(name = "test.inner.v1", query, output = (MessageId, Option<MessageId>))]
struct Inner;

#[handler]
async fn outer(_cmd: Outer, ctx: &Context) -> Result<(MessageId, MessageId, MessageId, Option<MessageId>), BoxError> {
    let (inner_correlation, inner_causation) = ctx.query(Inner).await?;
    Ok((ctx.meta().id, ctx.meta().correlation_id, inner_correlation, inner_causation))
}

#[handler]
async fn inner(_q: Inner, ctx: &Context) -> Result<(MessageId, Option<MessageId>), BoxError> {
    Ok((ctx.meta().correlation_id, ctx.meta().causation_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_up_messages_share_the_correlation_id_and_name_their_cause() {
    within(LIMIT, async {
        let system = Hexeract::builder().handler(OuterHandler).handler(InnerHandler).start().await.expect("start");
        let (outer_id, outer_correlation, inner_correlation, inner_causation) =
            system.mediator().send(Outer).await.expect("handled");
        assert_eq!(outer_correlation, outer_id, "a root message correlates with itself");
        assert_eq!(inner_correlation, outer_correlation);
        assert_eq!(inner_causation, Some(outer_id));
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

struct Record(&'static str, Arc<Mutex<Vec<String>>>);

impl Middleware for Record {
    fn handle<'a>(&'a self, dispatch: &'a Dispatch, next: Next<'a>) -> BoxFuture<'a, Result<(), DispatchError>> {
        Box::pin(async move {
            self.1.lock().expect("lock").push(format!("{} before {}", self.0, dispatch.meta().name));
            let result = next.run(dispatch).await;
            self.1.lock().expect("lock").push(format!("{} after", self.0));
            result
        })
    }
}

struct Refuse;

impl Middleware for Refuse {
    fn handle<'a>(&'a self, dispatch: &'a Dispatch, next: Next<'a>) -> BoxFuture<'a, Result<(), DispatchError>> {
        if dispatch.meta().name == "test.inner.v1" {
            return Box::pin(async {
                Err(DispatchError::Rejected { message: "test.inner.v1", source: "not today".into() })
            });
        }
        next.run(dispatch)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_runs_in_registration_order_and_can_refuse() {
    within(LIMIT, async {
        let log = Arc::new(Mutex::new(Vec::new()));
        let system = Hexeract::builder()
            .middleware(Record("first", Arc::clone(&log)))
            .middleware(Record("second", Arc::clone(&log)))
            .middleware(Refuse)
            .handler(ReserveHandler)
            .handler(InnerHandler)
            .start()
            .await
            .expect("start");
        system.mediator().send(Reserve { sku: "tea".into() }).await.expect("passes");
        assert_eq!(
            *log.lock().expect("lock"),
            vec!["first before test.reserve.v1", "second before test.reserve.v1", "second after", "first after"]
        );
        let refused = system.mediator().query(Inner).await;
        assert!(matches!(refused, Err(DispatchError::Rejected { .. })));
        let snapshot = system.metrics();
        assert_eq!(snapshot.actor("mediator/inner").expect("listed").handled.total(), 0, "never reached the handler");
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

// ---- metrics --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_tree_print_as_a_table_and_serialize() {
    within(LIMIT, async {
        let system = Hexeract::builder()
            .handler(ReserveHandler)
            .handler(RecordEntryHandler)
            .state(Ledger::default())
            .start()
            .await
            .expect("start");
        for _ in 0..10 {
            system.mediator().send(Reserve { sku: "tea".into() }).await.expect("ok");
        }
        let snapshot = system.metrics();
        let reserve = snapshot.actor("mediator/reserve").expect("listed");
        assert_eq!(reserve.handled.ok, 10);
        assert_eq!(reserve.capacity, hexeract::DEFAULT_MAILBOX_CAPACITY);
        let mediator_node = &snapshot.root.children[0];
        assert_eq!(mediator_node.name, "mediator");
        assert!(mediator_node.children.iter().any(|c| c.name == "record_entry" && c.children.len() == 4));

        let latency_recorded = eventually(Duration::from_secs(5), || {
            system.metrics().actor("mediator/reserve").is_some_and(|a| a.latency.count == 10)
        })
        .await;
        assert!(latency_recorded, "latency samples reach the histogram");
        let table = system.metrics().to_string();
        assert!(table.lines().next().is_some_and(|header| header.starts_with("actor")), "{table}");
        assert!(table.contains("  reserve") && table.contains("    3"), "{table}");
        let json = serde_json::to_value(system.metrics()).expect("serializes");
        assert_eq!(json["root"]["children"][0]["name"], "mediator");
        system.shutdown(Duration::from_secs(5)).await;
    })
    .await;
}

// ---- verification ----------------------------------------------------------------

#[derive(Message)]
#[message(name = "test.orphan.v1", command, output = ())]
struct Orphan;

#[derive(Message)]
#[message(name = "test.contested.v1", command, output = ())]
struct Contested;

#[handler]
async fn contested_first(_cmd: Contested) -> Result<(), BoxError> {
    Ok(())
}

#[handler]
async fn contested_second(_cmd: Contested) -> Result<(), BoxError> {
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_handlers_names_duplicates_and_missing_handlers() {
    within(LIMIT, async {
        // The two `manual` handlers of this binary are registered by hand, as
        // an application would; everything else comes from discovery.
        let builder = Hexeract::builder().handler(BoundedActor).handler(FlakyActor::default());
        let error = match builder.discover_handlers().start().await {
            Err(StartError::Verify(error)) => error,
            Err(other) => panic!("expected a verification error, got {other}"),
            Ok(_) => panic!("expected a verification error, the system started"),
        };
        let text = error.to_string();
        assert!(text.contains("`test.orphan.v1`") && text.contains("has no handler"), "{text}");
        assert!(text.contains("`test.contested.v1` has 2 handlers (contested_first, contested_second)"), "{text}");
        assert!(text.contains("`test.unhandled.v1` (mediator::Unhandled) has no handler"), "{text}");
        // Every other command and query in this binary has exactly one handler.
        assert_eq!(error.problems.len(), 3, "{text}");
        let _ = Orphan;
    })
    .await;
}

// ---- breaking things under load ----------------------------------------------------

#[derive(Message)]
#[message(name = "test.mixed-load.v1", command, output = u32)]
struct MixedLoad(u32);

#[handler(workers = 4, capacity = 16)]
async fn mixed_load(cmd: MixedLoad) -> Result<u32, BoxError> {
    tokio::task::yield_now().await;
    if cmd.0.is_multiple_of(50) {
        panic!("poison {}", cmd.0);
    }
    Ok(cmd.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_with_panics_every_caller_gets_an_answer_and_the_counts_add_up() {
    within(LIMIT, async {
        let policy = quick_restarts().intensity(1_000, Duration::from_secs(60)).expect("valid");
        let system = Hexeract::builder()
            .handler(MixedLoadHandler)
            .restart_policy(policy)
            .mailbox_capacity(16)
            .start()
            .await
            .expect("start");
        let tasks: Vec<_> = (0..16_u32)
            .map(|t| {
                let mediator = system.mediator();
                tokio::spawn(async move {
                    let (mut ok, mut panicked) = (0_u32, 0_u32);
                    for i in 0..125 {
                        let n = t * 125 + i;
                        match mediator.send(MixedLoad(n)).await {
                            Ok(answer) => {
                                assert_eq!(answer, n);
                                ok += 1;
                            }
                            Err(DispatchError::HandlerPanicked { .. }) => {
                                assert!(n.is_multiple_of(50), "only poison messages panic");
                                panicked += 1;
                            }
                            Err(other) => panic!("message {n}: unexpected {other}"),
                        }
                    }
                    (ok, panicked)
                })
            })
            .collect();
        let (mut ok, mut panicked) = (0, 0);
        for task in tasks {
            let (o, p) = task.await.expect("sender task");
            ok += o;
            panicked += p;
        }
        assert_eq!((ok, panicked), (1_960, 40), "2,000 messages, 1 in 50 poisoned, none lost");
        let snapshot = system.metrics();
        let workers = snapshot.subtree("mediator/mixed_load");
        assert_eq!(workers.iter().map(|w| w.handled.ok).sum::<u64>(), 1_960);
        assert_eq!(workers.iter().map(|w| w.handled.panic).sum::<u64>(), 40);
        let restarted = eventually(Duration::from_secs(10), || {
            system.metrics().subtree("mediator/mixed_load").iter().map(|w| w.restarts).sum::<u64>() == 40
        })
        .await;
        assert!(restarted, "every panic restarted its worker");
        let report = system.shutdown(Duration::from_secs(5)).await;
        assert!(report.is_clean(), "{report}");
    })
    .await;
}
