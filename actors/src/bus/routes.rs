//! Bus routes: from a message name on the wire to the typed handler actor
//! that subscribed to it.

use std::collections::HashMap;
use std::sync::Arc;

use hexeract_runtime::{BoxFuture, CodecError, Envelope, Message};
use serde::de::DeserializeOwned;

use crate::error::DispatchError;
use crate::mediator::Mediator;
use crate::pool::Endpoint;

/// Why a delivery was not handled.
pub(crate) enum DeliveryError {
    /// The body is not a valid message of its declared type: dead-letter now,
    /// a retry cannot fix it.
    Undecodable(CodecError),
    /// The handler failed: worth a retry.
    Handler(DispatchError),
}

/// Decodes one message type and hands it to one handler's endpoint.
pub(crate) trait BusRoute: Send + Sync {
    fn deliver<'a>(&'a self, envelope: Envelope, mediator: &'a Mediator) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

struct TypedRoute<M: Message> {
    endpoint: Arc<dyn Endpoint<M>>,
}

impl<M: Message + DeserializeOwned> BusRoute for TypedRoute<M> {
    fn deliver<'a>(&'a self, envelope: Envelope, mediator: &'a Mediator) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let message: M = envelope.decode().map_err(DeliveryError::Undecodable)?;
            mediator.deliver(&*self.endpoint, message, envelope.meta).await.map(drop).map_err(DeliveryError::Handler)
        })
    }
}

/// The routes of every queue, built at start.
#[derive(Default)]
pub(crate) struct BusRoutes {
    /// queue → message name → route
    queues: HashMap<String, HashMap<&'static str, Arc<dyn BusRoute>>>,
}

impl BusRoutes {
    pub(crate) fn add<M: Message + DeserializeOwned>(&mut self, queue: &str, endpoint: Arc<dyn Endpoint<M>>) {
        self.queues.entry(queue.to_owned()).or_default().insert(M::NAME, Arc::new(TypedRoute { endpoint }));
    }

    pub(crate) fn queues(&self) -> impl Iterator<Item = (&String, &HashMap<&'static str, Arc<dyn BusRoute>>)> {
        self.queues.iter()
    }
}
