//! Saving events: what the typed `save` functions of every dialect share.

use hexeract_runtime::ports::outbox::StoreError;
use hexeract_runtime::{Codec, CodecError, Envelope, Message, Metadata};
use serde::Serialize;

/// Saving an event to the outbox failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveError {
    /// The event could not be encoded; nothing was written.
    #[error("cannot encode the event for the outbox")]
    Encode(#[source] CodecError),
    /// The insert failed. On PostgreSQL the caller's transaction is then
    /// aborted and must be rolled back.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An encoded event on its way into the outbox, with its optional
/// ordering key.
///
/// # Examples
///
/// ```
/// use hexeract_runtime::{Codec, Envelope, Metadata};
/// use hexeract_storage::Outgoing;
///
/// let envelope = Envelope { meta: Metadata::root("orders.placed.v1"), codec: Codec::Json, payload: b"{}".to_vec() };
/// let row = Outgoing::new(envelope).ordering_key("order-42");
/// assert_eq!(row.ordering_key.as_deref(), Some("order-42"));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Outgoing {
    /// The message; `envelope.meta.id` becomes the row id and the message
    /// id on the bus, for every attempt.
    pub envelope: Envelope,
    /// Rows with the same key are relayed one at a time, in insertion order.
    pub ordering_key: Option<String>,
}

impl Outgoing {
    /// A row for `envelope`, without ordering key.
    pub fn new(envelope: Envelope) -> Self {
        Outgoing { envelope, ordering_key: None }
    }

    /// Encodes `event` under `meta` (the codec is the type's own, else
    /// `default_codec`).
    ///
    /// # Errors
    /// [`SaveError::Encode`] when serde refuses the event.
    pub fn encode<M: Message + Serialize>(event: &M, meta: Metadata, default_codec: Codec) -> Result<Self, SaveError> {
        Envelope::encode_with(event, meta, default_codec).map(Outgoing::new).map_err(SaveError::Encode)
    }

    /// Sets the ordering key.
    pub fn ordering_key(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }
}

/// The longest ordering key (it is an indexed `VARCHAR(255)` on MySQL).
pub(crate) const MAX_ORDERING_KEY_LEN: usize = 255;
/// The longest message name (a `VARCHAR(255)` on MySQL).
pub(crate) const MAX_NAME_LEN: usize = 255;

/// Checks what the schema would otherwise truncate or refuse obscurely.
pub(crate) fn check_outgoing(row: &Outgoing) -> Result<(), StoreError> {
    if let Some(key) = &row.ordering_key
        && (key.is_empty() || key.chars().count() > MAX_ORDERING_KEY_LEN)
    {
        return Err(StoreError::Config(format!(
            "ordering key must be 1..={MAX_ORDERING_KEY_LEN} characters, got {}",
            key.chars().count()
        )));
    }
    let name = &row.envelope.meta.name;
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(StoreError::Config(format!("message name must be 1..={MAX_NAME_LEN} characters, got `{name}`")));
    }
    Ok(())
}
