//! Bounded mailboxes that outlive the actors reading them.
//!
//! ractor's own mailbox is unbounded and dies with its actor. A [`Mailbox`]
//! is the queue Hexeract puts in front of an actor instead:
//!
//! - **Bounded.** A capacity is fixed at creation. [`Mailbox::send`] waits
//!   for room, [`Mailbox::try_send`] fails fast and hands the job back.
//! - **Exact depth.** A slot is taken when a job is queued and released when
//!   the job has been *handled* (its [`Slot`] dropped), not when it was
//!   dequeued, so [`Mailbox::depth`] counts queued plus in-progress work.
//! - **Owned by the address.** Each actor incarnation borrows the receiving
//!   end with [`Mailbox::receiver`]; when an incarnation dies, the jobs queued
//!   behind the one that killed it stay here for the next incarnation.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Mutex, OwnedMutexGuard, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// The capacity of a handler's mailbox when none is configured: large enough
/// to absorb bursts on one core, small enough that a stuck handler pushes
/// back on its callers within a few milliseconds of traffic.
pub const DEFAULT_CAPACITY: NonZeroUsize = NonZeroUsize::new(1024).expect("non-zero");

/// A bounded queue of jobs of type `J` in front of one actor.
pub struct Mailbox<J> {
    inner: Arc<Inner<J>>,
}

struct Inner<J> {
    capacity: usize,
    slots: Arc<Semaphore>,
    // The slots are the bound: a sender holds one before it pushes, so the
    // channel never holds more than `capacity` jobs. It is an unbounded
    // channel only because a second, redundant bound would cost a semaphore
    // round trip per job.
    tx: mpsc::UnboundedSender<Item<J>>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Item<J>>>>,
    stop: CancellationToken,
    // Mirrors `stop` for the reader's check on every job: a load, where the
    // token's check takes a lock.
    stopped: Arc<AtomicBool>,
}

/// What travels through the channel: a job, or a nudge from
/// [`Mailbox::stop_reader`] that wakes a reader waiting on an empty mailbox
/// (cheaper than making every wait also watch the stop token).
enum Item<J> {
    Job(J),
    Wake,
}

impl<J> Clone for Mailbox<J> {
    fn clone(&self) -> Self {
        Mailbox { inner: Arc::clone(&self.inner) }
    }
}

/// A job waiting in, or taken from, a mailbox, with the slot it occupies.
pub struct Queued<J> {
    job: J,
    slot: Slot,
}

impl<J> Queued<J> {
    /// Splits the job from its slot. Keep the slot until the job is handled:
    /// dropping it frees room in the mailbox.
    pub fn into_parts(self) -> (J, Slot) {
        (self.job, self.slot)
    }
}

/// A place in a mailbox, released when dropped.
///
/// Senders take their place without touching the semaphore's reference
/// count (the permit is forgotten, not owned); the reader makes the `Slot`,
/// so the count's cache line stays with the actor that frees places.
pub struct Slot {
    slots: Arc<Semaphore>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.add_permits(1);
    }
}

/// Why [`Mailbox::try_send`] refused a job; the job is handed back.
#[derive(Debug)]
pub enum TrySendError<J> {
    /// The mailbox holds `capacity` jobs.
    Full(J),
    /// The mailbox was closed (shutdown or the actor was given up on).
    Closed(J),
}

/// [`Mailbox::send`] found the mailbox closed; the job is handed back.
#[derive(Debug)]
pub struct Closed<J>(pub J);

impl<J: Send + 'static> Mailbox<J> {
    /// An empty, open mailbox holding at most `capacity` jobs.
    pub fn new(capacity: NonZeroUsize) -> Self {
        let capacity = capacity.get();
        // Bounded by `slots`, not by the channel: see `Inner::tx`.
        #[allow(clippy::disallowed_methods)]
        let (tx, rx) = mpsc::unbounded_channel();
        Mailbox {
            inner: Arc::new(Inner {
                capacity,
                slots: Arc::new(Semaphore::new(capacity)),
                tx,
                rx: Arc::new(Mutex::new(rx)),
                stop: CancellationToken::new(),
                stopped: Arc::new(AtomicBool::new(false)),
            }),
        }
    }

    /// Waits for room, then holds a place for one job. Reserving before the
    /// job exists lets a caller keep its message when the mailbox is closed.
    ///
    /// # Errors
    /// [`Closed`] when the mailbox is closed or closes while this call waits.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future reserves nothing.
    pub async fn reserve(&self) -> Result<Reservation<'_, J>, Closed<()>> {
        match self.inner.slots.acquire().await {
            Ok(permit) => {
                permit.forget();
                Ok(Reservation { mailbox: self, sent: false })
            }
            Err(_closed) => Err(Closed(())),
        }
    }

    /// Holds a place for one job if there is room now.
    ///
    /// # Errors
    /// [`TrySendError::Full`] or [`TrySendError::Closed`].
    pub fn try_reserve(&self) -> Result<Reservation<'_, J>, TrySendError<()>> {
        match self.inner.slots.try_acquire() {
            Ok(permit) => {
                permit.forget();
                Ok(Reservation { mailbox: self, sent: false })
            }
            Err(tokio::sync::TryAcquireError::NoPermits) => Err(TrySendError::Full(())),
            Err(tokio::sync::TryAcquireError::Closed) => Err(TrySendError::Closed(())),
        }
    }

    /// Queues `job`, waiting while the mailbox is full.
    ///
    /// # Errors
    /// [`Closed`], with the job, when the mailbox is closed.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future before it resolves queues nothing.
    pub async fn send(&self, job: J) -> Result<(), Closed<J>> {
        match self.reserve().await {
            Ok(reservation) => reservation.send(job).map_err(Closed),
            Err(Closed(())) => Err(Closed(job)),
        }
    }

    /// Queues `job` if there is room now.
    ///
    /// # Errors
    /// [`TrySendError::Full`] or [`TrySendError::Closed`], with the job.
    pub fn try_send(&self, job: J) -> Result<(), TrySendError<J>> {
        match self.try_reserve() {
            Ok(reservation) => reservation.send(job).map_err(TrySendError::Closed),
            Err(TrySendError::Full(())) => Err(TrySendError::Full(job)),
            Err(TrySendError::Closed(())) => Err(TrySendError::Closed(job)),
        }
    }

    /// Jobs queued or being handled right now.
    pub fn depth(&self) -> usize {
        self.inner.capacity - self.inner.slots.available_permits()
    }

    /// The most jobs the mailbox holds.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// A read-only view of the depth, for the metrics registry. It holds no
    /// job, so it keeps nothing alive.
    pub fn depth_gauge(&self) -> DepthGauge {
        DepthGauge { slots: Arc::clone(&self.inner.slots), capacity: self.inner.capacity }
    }

    /// Refuses new jobs from now on. Jobs already queued stay and can still
    /// be received.
    pub fn close(&self) {
        self.inner.slots.close();
    }

    /// Whether [`Mailbox::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.slots.is_closed()
    }

    /// Tells the current reader to stop: its next [`MailboxReceiver::recv`]
    /// returns `None` even if jobs remain (they are then
    /// [taken back](Mailbox::take_remaining)). Used at the shutdown deadline.
    pub fn stop_reader(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.stop.cancel();
        // Wakes a reader blocked on an empty mailbox; it then sees the token.
        // The receiver lives as long as the mailbox, so this cannot fail.
        let _ = self.inner.tx.send(Item::Wake);
    }

    /// A token cancelled by [`Mailbox::stop_reader`], for work in progress
    /// that must give up at the same moment.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.inner.stop
    }

    /// The receiving end, for one actor incarnation. Waits while an earlier
    /// incarnation still holds it (it is released when that one dies).
    pub async fn receiver(&self) -> MailboxReceiver<J> {
        MailboxReceiver {
            rx: Arc::clone(&self.inner.rx).lock_owned().await,
            slots: Arc::clone(&self.inner.slots),
            stopped: Arc::clone(&self.inner.stopped),
        }
    }

    /// Closes the mailbox for good: no new job, the reader stops, and what is
    /// queued is dropped (each job's caller learns it was not handled).
    /// Used when the supervisor gives up on the actor. Returns how many jobs
    /// were dropped.
    pub fn discard(&self) -> usize {
        self.close();
        self.stop_reader();
        self.take_remaining().len()
    }

    /// Removes and returns every job still queued, for the owner to fail
    /// them explicitly (no caller is left waiting on a job nobody will run).
    /// Returns nothing while an incarnation holds the receiver.
    pub fn take_remaining(&self) -> Vec<J> {
        let Ok(mut rx) = self.inner.rx.try_lock() else {
            return Vec::new();
        };
        let mut jobs = Vec::new();
        while let Ok(item) = rx.try_recv() {
            if let Item::Job(job) = item {
                jobs.push(job);
            }
        }
        // Their places are free again: the depth reads true.
        self.inner.slots.add_permits(jobs.len());
        jobs
    }
}

/// A place held in a mailbox for one job; dropping it gives the place back.
pub struct Reservation<'a, J> {
    mailbox: &'a Mailbox<J>,
    sent: bool,
}

impl<J> Drop for Reservation<'_, J> {
    fn drop(&mut self) {
        if !self.sent {
            self.mailbox.inner.slots.add_permits(1);
        }
    }
}

impl<J> Reservation<'_, J> {
    /// Queues `job` in the reserved place.
    ///
    /// # Errors
    /// Hands the job back if the channel refused it, which cannot happen
    /// while the mailbox exists (it owns the receiving end too).
    pub fn send(mut self, job: J) -> Result<(), J> {
        match self.mailbox.inner.tx.send(Item::Job(job)) {
            Ok(()) => {
                // The place now belongs to the job; the reader's `Slot` frees it.
                self.sent = true;
                Ok(())
            }
            Err(mpsc::error::SendError(Item::Job(job))) => Err(job),
            Err(mpsc::error::SendError(Item::Wake)) => Ok(()),
        }
    }
}

/// Reads a mailbox's depth without holding the mailbox.
#[derive(Clone)]
pub struct DepthGauge {
    slots: Arc<Semaphore>,
    capacity: usize,
}

impl DepthGauge {
    /// Jobs queued or being handled right now.
    pub fn depth(&self) -> usize {
        self.capacity - self.slots.available_permits()
    }

    /// The most jobs the mailbox holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The receiving end of a [`Mailbox`], held by one actor incarnation.
pub struct MailboxReceiver<J> {
    rx: OwnedMutexGuard<mpsc::UnboundedReceiver<Item<J>>>,
    slots: Arc<Semaphore>,
    stopped: Arc<AtomicBool>,
}

impl<J> MailboxReceiver<J> {
    /// The next job, or `None` once the reader was told to stop.
    ///
    /// # Cancel safety
    /// Cancel safe: a job is only removed when this resolves with it.
    pub async fn recv(&mut self) -> Option<Queued<J>> {
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return None;
            }
            // `stop_reader` sends a `Wake` after cancelling, so a reader
            // waiting here on an empty mailbox always gets to the check above.
            match self.rx.recv().await? {
                Item::Job(job) => return Some(Queued { job, slot: Slot { slots: Arc::clone(&self.slots) } }),
                Item::Wake => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).expect("non-zero")
    }

    #[tokio::test]
    async fn try_send_hands_the_job_back_when_full() {
        let mailbox = Mailbox::new(cap(2));
        mailbox.try_send(1).expect("room");
        mailbox.try_send(2).expect("room");
        match mailbox.try_send(3) {
            Err(TrySendError::Full(3)) => {}
            other => panic!("expected Full(3), got {other:?}"),
        }
        assert_eq!(mailbox.depth(), 2);
    }

    #[tokio::test]
    async fn a_slot_is_released_when_the_job_is_handled_not_when_dequeued() {
        let mailbox = Mailbox::new(cap(1));
        mailbox.try_send("a").expect("room");
        let mut rx = mailbox.receiver().await;
        let (job, slot) = rx.recv().await.expect("job").into_parts();
        assert_eq!(job, "a");
        assert_eq!(mailbox.depth(), 1, "still being handled");
        assert!(matches!(mailbox.try_send("b"), Err(TrySendError::Full("b"))));
        drop(slot);
        assert_eq!(mailbox.depth(), 0);
        mailbox.try_send("b").expect("room again");
    }

    #[tokio::test]
    async fn jobs_survive_the_reader_that_held_them() {
        let mailbox = Mailbox::new(cap(8));
        for i in 0..5 {
            mailbox.send(i).await.expect("open");
        }
        {
            let mut first = mailbox.receiver().await;
            let (job, _slot) = first.recv().await.expect("job").into_parts();
            assert_eq!(job, 0);
            // the first incarnation dies here, with four jobs behind it
        }
        let mut second = mailbox.receiver().await;
        let mut rest = Vec::new();
        for _ in 0..4 {
            rest.push(second.recv().await.expect("job").into_parts().0);
        }
        assert_eq!(rest, vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn closing_refuses_new_jobs_and_wakes_waiting_senders() {
        let mailbox = Mailbox::new(cap(1));
        mailbox.try_send(1).expect("room");
        let waiting = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move { mailbox.send(2).await })
        };
        tokio::task::yield_now().await;
        mailbox.close();
        let result = waiting.await.expect("task");
        assert!(matches!(result, Err(Closed(2))));
        assert_eq!(mailbox.take_remaining(), vec![1]);
    }

    #[tokio::test]
    async fn stopping_wakes_a_reader_waiting_on_an_empty_mailbox() {
        let mailbox = Mailbox::<u32>::new(cap(4));
        let reader = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move { mailbox.receiver().await.recv().await.is_none() })
        };
        tokio::task::yield_now().await;
        mailbox.stop_reader();
        let stopped = tokio::time::timeout(std::time::Duration::from_secs(5), reader).await;
        assert!(matches!(stopped, Ok(Ok(true))), "the waiting reader returned None");
        mailbox.try_send(7).expect("stopping the reader does not close intake");
        assert_eq!(mailbox.take_remaining(), vec![7]);
    }

    #[tokio::test]
    async fn a_stopped_reader_returns_none() {
        let mailbox = Mailbox::new(cap(4));
        mailbox.try_send(1).expect("room");
        let mut rx = mailbox.receiver().await;
        mailbox.stop_reader();
        assert!(rx.recv().await.is_none());
    }
}
