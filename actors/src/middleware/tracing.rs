use tracing::Instrument as _;

use super::{Dispatch, Middleware, Next};
use crate::error::DispatchError;
use hexeract_runtime::BoxFuture;

/// A `dispatch` span per message with `message_id`, `correlation_id`,
/// `message`, `kind` and, when it ends, `outcome`. The handler's own
/// `handle` span is its child. On by default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tracing;

impl Middleware for Tracing {
    fn handle<'a>(&'a self, dispatch: &'a Dispatch, next: Next<'a>) -> BoxFuture<'a, Result<(), DispatchError>> {
        let meta = dispatch.meta();
        let span = tracing::info_span!(
            "dispatch",
            message_id = %meta.id,
            correlation_id = %meta.correlation_id,
            message = %meta.name,
            kind = %dispatch.kind(),
            outcome = tracing::field::Empty,
        );
        if span.is_disabled() {
            // No subscriber wants it: nothing to attach or record, so no
            // wrapper future either.
            return next.run(dispatch);
        }
        Box::pin(async move {
            // The span is attached to the future, never entered across an await.
            let result = next.run(dispatch).instrument(span.clone()).await;
            span.record("outcome", outcome(&result));
            result
        })
    }

    fn is_active(&self) -> bool {
        tracing::span_enabled!(tracing::Level::INFO)
    }
}

fn outcome(result: &Result<(), DispatchError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(DispatchError::HandlerPanicked { .. }) => "panic",
        Err(DispatchError::Timeout { .. }) => "timeout",
        Err(_) => "error",
    }
}
