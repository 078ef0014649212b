//! The handler actor: one supervised `ActorLoop` (a ractor actor) serving
//! one bounded mailbox.
//!
//! ractor's own mailbox carries a single control message; the messages to
//! handle wait in the address's [`Mailbox`], which outlives the
//! incarnation. The actor loops over that mailbox one job at a time. A job
//! that panics is answered with `HandlerPanicked`, and then the actor fails
//! on purpose so that its supervisor restarts it with fresh state; the jobs
//! queued behind it wait for the new incarnation.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::Either;
use hexeract_runtime::mailbox::{Mailbox, Slot};
use hexeract_runtime::metrics::{ActorMetrics, Outcome, Stopwatch};
use hexeract_runtime::supervision::ActorLoop;
use hexeract_runtime::{BoxFuture, Message};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::context::{Cancel, Seed};
use crate::error::DispatchError;
use crate::handler::{HandlerResult, Handles};

/// Queued work for an actor whose state is `S`: runs one message against
/// the state, records the outcome, frees the message's mailbox slot and
/// answers the caller, in that order.
pub(crate) type Job<S> = Box<dyn for<'a> FnOnce(&'a mut S, &'a WorkerInfo, Slot) -> BoxFuture<'a, JobEnd> + Send>;

/// How a job left the actor.
pub(crate) enum JobEnd {
    /// Keep serving.
    Continue,
    /// The handler panicked: the actor must be restarted with fresh state.
    Panicked(String),
}

/// What a worker incarnation knows about itself; shared by all of them.
pub(crate) struct WorkerInfo {
    pub(crate) path: String,
    pub(crate) handler: &'static str,
    pub(crate) timeout: Option<Duration>,
    pub(crate) metrics: Arc<ActorMetrics>,
    /// Cancelled at the shutdown deadline: in-progress work gives up.
    pub(crate) stop: CancellationToken,
    /// Jobs given up at the shutdown deadline while in progress.
    pub(crate) abandoned: AtomicU64,
    /// Set once the mediator exists (it is built after its workers); no
    /// message can reach a worker before.
    pub(crate) mediator: std::sync::OnceLock<crate::mediator::Mediator>,
}

/// Wraps one message into a job for an actor of state `S`.
pub(crate) fn job<S, M>(message: M, ctx: Seed, reply: oneshot::Sender<Result<M::Output, DispatchError>>) -> Job<S>
where
    S: Handles<M>,
    M: Message,
{
    // The caller's span (the dispatch span of the tracing middleware) becomes
    // the parent of the handler's span, across the hop to the actor's task.
    // `None` rather than `Span::none()`: even an empty span costs a `log`
    // check when dropped under tracing's `log` feature.
    let parent = tracing::span_enabled!(tracing::Level::INFO).then(tracing::Span::current);
    Box::new(move |state: &mut S, worker: &WorkerInfo, slot: Slot| {
        Box::pin(run::<S, M>(state, worker, slot, message, ctx, reply, parent))
    })
}

enum Ended<T> {
    Finished(Result<T, Box<dyn std::any::Any + Send>>),
    CallerGaveUp,
    ShutdownDeadline,
    TimedOut(Duration),
}

async fn run<S, M>(
    state: &mut S,
    worker: &WorkerInfo,
    slot: Slot,
    message: M,
    seed: Seed,
    reply: oneshot::Sender<Result<M::Output, DispatchError>>,
    parent: Option<tracing::Span>,
) -> JobEnd
where
    S: Handles<M>,
    M: Message,
{
    let started = Stopwatch::start();
    let Some(mediator) = worker.mediator.get() else {
        let _ = reply.send(Err(DispatchError::HandlerStopped { handler: worker.handler, message: M::NAME }));
        return JobEnd::Continue;
    };
    let ctx = seed.into_context(mediator);
    if ctx.cancel.is_cancelled() {
        // The caller's timeout fired while the message was queued: it has its
        // answer already, and the work must not start.
        worker.metrics.count(Outcome::Timeout);
        return JobEnd::Continue;
    }
    // Made only when a subscriber wants it: a disabled span still costs a
    // `log` check on creation, every poll and drop when tracing's `log`
    // feature is on (sqlx turns it on).
    let span = parent.map(|parent| {
        tracing::info_span!(parent: &parent, "handle", handler = worker.handler, actor = %worker.path, outcome = tracing::field::Empty)
    });
    let ended = {
        let handling = AssertUnwindSafe(state.handle(message, &ctx)).catch_unwind();
        // Not even an empty span's `Instrumented` wrapper when none is wanted.
        let mut handling = std::pin::pin!(match &span {
            Some(span) => Either::Left(handling.instrument(span.clone())),
            None => Either::Right(handling),
        });
        // Most handlers finish on their first poll, and then there is nothing
        // to race: the cancellation and timeout futures are only made (and
        // boxed, to keep this future small) for a handler that has to wait.
        match std::future::poll_fn(|cx| Poll::Ready(handling.as_mut().poll(cx))).await {
            Poll::Ready(result) => Ended::Finished(result),
            Poll::Pending => Box::pin(race(handling, &ctx.cancel, &worker.stop, worker.timeout)).await,
        }
        // The handler's future is dropped here, before anyone is answered:
        // a handler given up on has stopped by the time its caller hears so.
    };
    let (outcome, answer, end) = match ended {
        Ended::Finished(Ok(result)) => match result.into_result() {
            Ok(output) => {
                let outcome = if ctx.is_duplicate() { Outcome::Duplicate } else { Outcome::Ok };
                (outcome, Some(Ok(output)), JobEnd::Continue)
            }
            Err(source) => (
                Outcome::Error,
                Some(Err(DispatchError::Handler { handler: worker.handler, message: M::NAME, source })),
                JobEnd::Continue,
            ),
        },
        Ended::Finished(Err(payload)) => {
            let panic = panic_message(payload.as_ref());
            let error =
                DispatchError::HandlerPanicked { handler: worker.handler, message: M::NAME, panic: panic.clone() };
            (Outcome::Panic, Some(Err(error)), JobEnd::Panicked(panic))
        }
        // The caller already returned `Timeout`; nobody waits for an answer.
        Ended::CallerGaveUp => (Outcome::Timeout, None, JobEnd::Continue),
        Ended::TimedOut(after) => {
            ctx.cancel.cancel();
            (Outcome::Timeout, Some(Err(DispatchError::Timeout { message: M::NAME, after })), JobEnd::Continue)
        }
        Ended::ShutdownDeadline => {
            worker.abandoned.fetch_add(1, Ordering::Relaxed);
            drop(slot);
            let _ = reply.send(Err(DispatchError::ShuttingDown { message: M::NAME }));
            return JobEnd::Continue;
        }
    };
    if let Some(span) = &span {
        span.record("outcome", outcome.as_str());
    }
    // Metrics before the answer: a caller that reads them after its reply
    // sees its own message counted.
    worker.metrics.record(outcome, started.elapsed());
    // The message is handled: its slot is free before the answer goes out,
    // so a caller that reads the depth after its reply no longer sees it.
    drop(slot);
    if let Some(answer) = answer {
        // The caller may have gone away (dropped its future); that is its right.
        let _ = reply.send(answer);
    }
    end
}

/// Runs a handler that did not finish on its first poll against the caller
/// giving up, the shutdown deadline and the per-handler timeout, in that
/// order of priority after the handler itself.
async fn race<F, T>(
    handling: Pin<&mut F>,
    cancel: &Cancel,
    stop: &CancellationToken,
    timeout: Option<Duration>,
) -> Ended<T>
where
    F: Future<Output = Result<T, Box<dyn std::any::Any + Send>>>,
{
    let per_handler_timeout = async {
        match timeout {
            Some(after) => {
                tokio::time::sleep(after).await;
                after
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        result = handling => Ended::Finished(result),
        () = cancel.cancelled() => Ended::CallerGaveUp,
        () = stop.cancelled() => Ended::ShutdownDeadline,
        after = per_handler_timeout => Ended::TimedOut(after),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// One worker as its supervisor and the shutdown sequence see it.
pub(crate) struct WorkerChild<S> {
    pub(crate) mailbox: Mailbox<Job<S>>,
    pub(crate) factory: Arc<dyn Fn() -> S + Send + Sync>,
    pub(crate) info: Arc<WorkerInfo>,
}

impl<S: Send + 'static> ActorLoop for WorkerChild<S> {
    fn path(&self) -> &str {
        &self.info.path
    }

    fn metrics(&self) -> &ActorMetrics {
        &self.info.metrics
    }

    /// One incarnation: fresh state from the factory, then the mailbox, one
    /// job at a time, until told to stop. A panicking job ends the
    /// incarnation on purpose: the supervisor restarts it with fresh state.
    fn run(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut handler = (self.factory)();
            let mut receiver = self.mailbox.receiver().await;
            while let Some(queued) = receiver.recv().await {
                let (job, slot) = queued.into_parts();
                // The job frees the slot once the message is handled (or
                // when dropped): depth counts work in progress.
                if let JobEnd::Panicked(panic) = job(&mut handler, &self.info, slot).await {
                    return Err(format!("handler `{}` panicked: {panic}", self.info.handler));
                }
            }
            Ok(())
        })
    }

    fn give_up(&self) {
        // Dropping the queued jobs drops their reply senders: each waiting
        // caller gets `HandlerStopped` at once instead of waiting forever.
        self.mailbox.discard();
    }
}

/// The type-erased controls the shutdown sequence needs from a worker.
pub(crate) trait WorkerControl: Send + Sync {
    fn path(&self) -> &str;
    fn depth(&self) -> usize;
    fn handled_total(&self) -> u64;
    /// Closes intake and tells the reader to stop (in-progress work gives up).
    fn stop_reader(&self);
    /// Once the reader is gone: drops what is still queued (each caller gets
    /// `ShuttingDown`) and returns how many that was.
    fn take_remaining(&self) -> u64;
    fn abandoned_in_progress(&self) -> u64;
    /// Gives the worker its handle on the mediator, once that exists.
    fn attach(&self, mediator: &crate::mediator::Mediator);
}

impl<S: Send + 'static> WorkerControl for WorkerChild<S> {
    fn attach(&self, mediator: &crate::mediator::Mediator) {
        let _ = self.info.mediator.set(mediator.clone());
    }

    fn path(&self) -> &str {
        &self.info.path
    }

    fn depth(&self) -> usize {
        self.mailbox.depth()
    }

    fn handled_total(&self) -> u64 {
        self.info.metrics.total()
    }

    fn stop_reader(&self) {
        self.mailbox.close();
        self.mailbox.stop_reader();
    }

    fn take_remaining(&self) -> u64 {
        self.mailbox.take_remaining().len() as u64
    }

    fn abandoned_in_progress(&self) -> u64 {
        self.info.abandoned.load(Ordering::Relaxed)
    }
}
