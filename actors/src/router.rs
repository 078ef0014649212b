//! Message type → handler endpoints.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use dashmap::DashMap;
use hexeract_runtime::Message;

use crate::pool::Endpoint;

/// The routing table while the system starts: handlers add their routes.
/// Once every handler is in, [`Router::freeze`] turns it into the
/// [`RouteTable`] the mediator reads on every dispatch.
#[derive(Default)]
pub(crate) struct Router {
    // Each value is a `Vec<Arc<dyn Endpoint<M>>>` for the `M` of its key.
    routes: DashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl Router {
    pub(crate) fn add<M: Message>(&self, endpoint: Arc<dyn Endpoint<M>>) {
        let mut entry =
            self.routes.entry(TypeId::of::<M>()).or_insert_with(|| Box::new(Vec::<Arc<dyn Endpoint<M>>>::new()));
        if let Some(endpoints) = entry.downcast_mut::<Vec<Arc<dyn Endpoint<M>>>>() {
            endpoints.push(endpoint);
        }
    }

    /// The finished table. Routes never change once the system runs, so it
    /// is read without a lock and without cloning an endpoint per dispatch.
    pub(crate) fn freeze(self) -> RouteTable {
        RouteTable { routes: self.routes.into_iter().collect() }
    }
}

/// The routing table of a running system: read-only.
pub(crate) struct RouteTable {
    // Each value is a `Vec<Arc<dyn Endpoint<M>>>` for the `M` of its key.
    routes: HashMap<TypeId, Box<dyn Any + Send + Sync>, BuildHasherDefault<TypeIdHasher>>,
}

impl RouteTable {
    /// The first endpoint for `M` (commands and queries have exactly one).
    pub(crate) fn first<M: Message>(&self) -> Option<&dyn Endpoint<M>> {
        self.all::<M>().first().map(|endpoint| &**endpoint)
    }

    /// Every endpoint for `M` (a notification's subscribers).
    pub(crate) fn all<M: Message>(&self) -> &[Arc<dyn Endpoint<M>>] {
        self.routes
            .get(&TypeId::of::<M>())
            .and_then(|entry| entry.downcast_ref::<Vec<Arc<dyn Endpoint<M>>>>())
            .map_or(&[], Vec::as_slice)
    }
}

/// A `TypeId` is a hash already: use its bits instead of hashing them again.
#[derive(Default)]
pub(crate) struct TypeIdHasher(u64);

impl Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }

    // `TypeId` hashes itself with `write_u64`; this only keeps the hasher
    // correct should that ever change.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher as _, BuildHasherDefault};

    use super::TypeIdHasher;

    #[test]
    fn distinct_type_ids_hash_apart() {
        let build = BuildHasherDefault::<TypeIdHasher>::default();
        let ids = [
            std::any::TypeId::of::<u8>(),
            std::any::TypeId::of::<u16>(),
            std::any::TypeId::of::<String>(),
            std::any::TypeId::of::<Vec<u8>>(),
        ];
        let mut hashes: Vec<u64> = ids.iter().map(|id| build.hash_one(id)).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), ids.len());
    }
}
