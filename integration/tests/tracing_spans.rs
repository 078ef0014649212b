//! The spans a dispatch makes when a tracing subscriber wants them: a
//! `dispatch` span from the default `Tracing` middleware and, as its child
//! across the hop to the handler actor's task, the handler's `handle` span,
//! each with its outcome. Without a subscriber neither is made (the hot
//! path's concern, measured in the mediator bench).
//!
//! A test binary of its own: the recording subscriber is the process-wide
//! default, since the handler runs on another task and thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hexeract::{Context, Hexeract, Message, handler};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

/// One span as the subscriber saw it.
#[derive(Debug, Clone)]
struct Seen {
    name: &'static str,
    parent: Option<u64>,
    fields: HashMap<String, String>,
}

#[derive(Default)]
struct Spans {
    next: AtomicU64,
    seen: Mutex<HashMap<u64, (Seen, &'static Metadata<'static>)>>,
}

thread_local! {
    /// The spans entered on this thread, innermost last.
    static ENTERED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Records span names, parents and fields; enough of a subscriber for
/// `Span::current()` and explicit parents to work.
#[derive(Clone, Default)]
struct Recorder(Arc<Spans>);

impl Recorder {
    fn spans(&self) -> HashMap<u64, Seen> {
        let seen = self.0.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.iter().map(|(id, (span, _))| (*id, span.clone())).collect()
    }
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Recorder {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::always()
    }

    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attributes: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        let parent = match attributes.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if attributes.is_contextual() => ENTERED.with(|entered| entered.borrow().last().copied()),
            None => None,
        };
        let mut fields = HashMap::new();
        attributes.record(&mut Fields(&mut fields));
        let seen = Seen { name: attributes.metadata().name(), parent, fields };
        self.0.seen.lock().unwrap_or_else(PoisonError::into_inner).insert(id, (seen, attributes.metadata()));
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some((seen, _)) = self.0.seen.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut seen.fields));
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, span: &Id) {
        ENTERED.with(|entered| entered.borrow_mut().push(span.into_u64()));
    }

    fn exit(&self, span: &Id) {
        ENTERED.with(|entered| {
            let mut entered = entered.borrow_mut();
            if let Some(at) = entered.iter().rposition(|id| *id == span.into_u64()) {
                entered.remove(at);
            }
        });
    }

    fn current_span(&self) -> tracing_core::span::Current {
        let Some(id) = ENTERED.with(|entered| entered.borrow().last().copied()) else {
            return tracing_core::span::Current::none();
        };
        match self.0.seen.lock().unwrap_or_else(PoisonError::into_inner).get(&id) {
            Some((_, metadata)) => tracing_core::span::Current::new(Id::from_u64(id), metadata),
            None => tracing_core::span::Current::none(),
        }
    }
}

#[derive(Debug, Message)]
#[message(name = "spans.triple.v1", command, output = u32)]
struct Triple(u32);

#[handler]
async fn triple(command: Triple, _ctx: &Context) -> Result<u32, std::convert::Infallible> {
    // Waits once, so that the span is carried across a suspension.
    tokio::time::sleep(Duration::from_millis(1)).await;
    Ok(command.0 * 3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_span_and_its_handle_child_carry_ids_and_outcomes() {
    let recorder = Recorder::default();
    tracing::subscriber::set_global_default(recorder.clone()).expect("the only subscriber of this test binary");

    let system = Hexeract::builder().handler(TripleHandler).start().await.expect("starts");
    assert_eq!(system.mediator().send(Triple(14)).await.expect("answered"), 42);
    let report = system.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_clean(), "{report}");

    let spans = recorder.spans();
    let dispatches: Vec<(&u64, &Seen)> = spans
        .iter()
        .filter(|(_, span)| {
            span.name == "dispatch" && span.fields.get("message").map(String::as_str) == Some("spans.triple.v1")
        })
        .collect();
    assert_eq!(dispatches.len(), 1, "one dispatch span: {spans:#?}");
    let (dispatch_id, dispatch) = dispatches[0];
    for field in ["message_id", "correlation_id", "kind"] {
        assert!(dispatch.fields.contains_key(field), "dispatch span without `{field}`: {dispatch:?}");
    }
    assert_eq!(dispatch.fields.get("outcome").map(String::as_str), Some("ok"), "{dispatch:?}");

    let handles: Vec<&Seen> = spans.values().filter(|span| span.name == "handle").collect();
    assert_eq!(handles.len(), 1, "one handle span: {spans:#?}");
    let handle = handles[0];
    assert_eq!(handle.parent, Some(*dispatch_id), "the handle span is not the dispatch span's child: {spans:#?}");
    assert_eq!(handle.fields.get("handler").map(String::as_str), Some("triple"), "{handle:?}");
    assert_eq!(handle.fields.get("outcome").map(String::as_str), Some("ok"), "{handle:?}");
}
