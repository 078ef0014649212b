//! Message type → handler endpoints.

use std::any::{Any, TypeId};
use std::sync::Arc;

use dashmap::DashMap;
use hexeract_runtime::Message;

use crate::pool::Endpoint;

/// The routing table. Reads take a shard read lock for the time of one Arc
/// clone; there is no lock shared by all message types.
#[derive(Default)]
pub(crate) struct Router {
    // Each value is a `Vec<Arc<dyn Endpoint<M>>>` for the `M` of its key.
    routes: DashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl Router {
    pub(crate) fn add<M: Message>(&self, endpoint: Arc<dyn Endpoint<M>>) {
        let mut entry = self
            .routes
            .entry(TypeId::of::<M>())
            .or_insert_with(|| Box::new(Vec::<Arc<dyn Endpoint<M>>>::new()));
        if let Some(endpoints) = entry.downcast_mut::<Vec<Arc<dyn Endpoint<M>>>>() {
            endpoints.push(endpoint);
        }
    }

    /// The first endpoint for `M` (commands and queries have exactly one).
    pub(crate) fn first<M: Message>(&self) -> Option<Arc<dyn Endpoint<M>>> {
        let entry = self.routes.get(&TypeId::of::<M>())?;
        entry.downcast_ref::<Vec<Arc<dyn Endpoint<M>>>>()?.first().cloned()
    }

    /// Every endpoint for `M` (a notification's subscribers).
    pub(crate) fn all<M: Message>(&self) -> Vec<Arc<dyn Endpoint<M>>> {
        self.routes
            .get(&TypeId::of::<M>())
            .and_then(|entry| entry.downcast_ref::<Vec<Arc<dyn Endpoint<M>>>>().cloned())
            .unwrap_or_default()
    }
}
