//! Shared dependencies handed to handlers (`builder.state(pool)`,
//! `ctx.state::<Pool>()`).

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;

/// A map from type to one shared value of that type.
#[derive(Default)]
pub struct StateMap {
    values: HashMap<TypeId, (&'static str, Box<dyn Any + Send + Sync>)>,
}

impl StateMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value`, replacing any earlier value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), (type_name::<T>(), Box::new(value)));
    }

    /// The value of type `T`.
    ///
    /// # Errors
    /// [`MissingState`], naming `T`, when no value of that type was registered.
    pub fn get<T: Send + Sync + 'static>(&self) -> Result<&T, MissingState> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|(_, value)| value.downcast_ref::<T>())
            .ok_or(MissingState { type_name: type_name::<T>() })
    }

    /// The names of the registered types, for error messages and debugging.
    pub fn type_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.values.values().map(|(name, _)| *name)
    }
}

impl std::fmt::Debug for StateMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.type_names()).finish()
    }
}

/// A handler asked for a state type nobody registered.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no state of type `{type_name}` was registered; add it with `Hexeract::builder().state(value)`")]
pub struct MissingState {
    /// The Rust type that was asked for.
    pub type_name: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_state_names_the_type() {
        let mut map = StateMap::new();
        map.insert(5_u32);
        assert_eq!(map.get::<u32>().ok(), Some(&5));
        let err = map.get::<String>().expect_err("not registered");
        assert!(err.to_string().contains("alloc::string::String"), "{err}");
    }
}
