use std::time::Duration;

use super::{Dispatch, Middleware, Next};
use crate::error::DispatchError;
use hexeract_runtime::BoxFuture;

/// Fails a dispatch that takes longer than its limit (queueing included) with
/// [`DispatchError::Timeout`], and cancels the handler's work: its context
/// reports cancelled and the handler future is dropped.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> Result<(), hexeract::StartError> {
/// use std::time::Duration;
/// let system = hexeract::Hexeract::builder()
///     .middleware(hexeract::middleware::Timeout::new(Duration::from_secs(5)))
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Timeout {
    after: Duration,
}

impl Timeout {
    /// A timeout of `after` for every dispatch.
    pub fn new(after: Duration) -> Self {
        Timeout { after }
    }
}

impl Middleware for Timeout {
    fn handle<'a>(&'a self, dispatch: &'a Dispatch, next: Next<'a>) -> BoxFuture<'a, Result<(), DispatchError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.after, next.run(dispatch)).await {
                Ok(result) => result,
                Err(_elapsed) => {
                    dispatch.cancel();
                    Err(DispatchError::Timeout { message: static_name(dispatch), after: self.after })
                }
            }
        })
    }
}

/// Metadata names are `Cow<'static, str>`; mediator dispatches always carry
/// the static wire name.
fn static_name(dispatch: &Dispatch) -> &'static str {
    match &dispatch.meta().name {
        std::borrow::Cow::Borrowed(name) => name,
        std::borrow::Cow::Owned(_) => "message",
    }
}
