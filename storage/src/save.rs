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

/// The typed save functions every dialect's outbox offers, written once:
/// they differ only in the transaction type, and all end in the dialect's own
/// `save_outgoing`. Expanded inside `impl SqliteOutbox` (and Pg, MySql).
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")), allow(unused_macros))]
macro_rules! save_api {
    ($db:ty) => {
        /// Saves `event` in the caller's transaction, under fresh root
        /// metadata. The row becomes claimable when `tx` commits (on
        /// PostgreSQL the `NOTIFY` is delivered then); rolling back leaves no
        /// row. Returns the message id. Saving outside a transaction (with a
        /// pool or a bare connection) does not compile.
        ///
        /// # Errors
        /// [`SaveError::Encode`](crate::SaveError::Encode) when the event
        /// cannot be encoded, [`SaveError::Store`](crate::SaveError::Store)
        /// when the insert fails (on PostgreSQL the transaction is then
        /// aborted: roll it back).
        pub async fn save<M: hexeract_runtime::Message + serde::Serialize>(
            &self,
            tx: &mut sqlx::Transaction<'_, $db>,
            event: &M,
        ) -> Result<hexeract_runtime::MessageId, crate::SaveError> {
            self.save_with(tx, event, hexeract_runtime::Metadata::root(M::NAME)).await
        }

        /// Saves `event` under `meta`: pass `ctx.meta().child(M::NAME)` from
        /// a handler to chain correlation and causation. When a row with
        /// `meta.id` exists already, nothing is written (idempotent enqueue).
        ///
        /// # Errors
        /// As [`save`](Self::save).
        pub async fn save_with<M: hexeract_runtime::Message + serde::Serialize>(
            &self,
            tx: &mut sqlx::Transaction<'_, $db>,
            event: &M,
            meta: hexeract_runtime::Metadata,
        ) -> Result<hexeract_runtime::MessageId, crate::SaveError> {
            let row = crate::Outgoing::encode(event, meta, self.inner.config.codec)?;
            let id = row.envelope.meta.id;
            self.save_outgoing(tx, std::slice::from_ref(&row)).await?;
            Ok(id)
        }

        /// Saves `event` under `meta` with an ordering key: rows with the
        /// same key are relayed one at a time, in insertion order (see the
        /// crate docs for exactly what that guarantees).
        ///
        /// # Errors
        /// As [`save`](Self::save); `StoreError::Config` for an empty key or
        /// one over 255 characters.
        pub async fn save_keyed<M: hexeract_runtime::Message + serde::Serialize>(
            &self,
            tx: &mut sqlx::Transaction<'_, $db>,
            event: &M,
            meta: hexeract_runtime::Metadata,
            ordering_key: impl Into<String>,
        ) -> Result<hexeract_runtime::MessageId, crate::SaveError> {
            let row = crate::Outgoing::encode(event, meta, self.inner.config.codec)?.ordering_key(ordering_key);
            let id = row.envelope.meta.id;
            self.save_outgoing(tx, std::slice::from_ref(&row)).await?;
            Ok(id)
        }

        /// Saves several events in the caller's transaction (multi-row
        /// inserts), each under fresh root metadata. Returns their ids, in
        /// order.
        ///
        /// # Errors
        /// As [`save`](Self::save).
        pub async fn save_all<'e, M, I>(
            &self,
            tx: &mut sqlx::Transaction<'_, $db>,
            events: I,
        ) -> Result<Vec<hexeract_runtime::MessageId>, crate::SaveError>
        where
            M: hexeract_runtime::Message + serde::Serialize + 'e,
            I: IntoIterator<Item = &'e M>,
        {
            let codec = self.inner.config.codec;
            let rows = events
                .into_iter()
                .map(|event| crate::Outgoing::encode(event, hexeract_runtime::Metadata::root(M::NAME), codec))
                .collect::<Result<Vec<_>, _>>()?;
            self.save_outgoing(tx, &rows).await?;
            Ok(rows.iter().map(|row| row.envelope.meta.id).collect())
        }
    };
}
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) use save_api;
