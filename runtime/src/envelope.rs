//! Envelopes: a message's identity and routing metadata, plus its encoded body.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::{Codec, CodecError, Message};

/// Extra string headers carried with a message (on the bus: AMQP headers).
pub type Headers = BTreeMap<String, String>;

/// A message id: a UUIDv7, so ids sort by creation time and index well.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub Uuid);

impl MessageId {
    /// A fresh UUIDv7: the current Unix time in milliseconds, then 74 random
    /// bits. Ids sort by creation time to the millisecond; within one
    /// millisecond their order is random (order that matters, such as an
    /// outbox's, comes from the database, not from ids).
    pub fn new() -> Self {
        Self::at(SystemTime::now())
    }

    /// A UUIDv7 for the instant `now`.
    ///
    /// One id is minted per dispatch, so this stays cheap: no process-wide
    /// lock (uuid's `now_v7` takes one to order ids within a millisecond) and
    /// a thread-local generator for the random bits.
    fn at(now: SystemTime) -> Self {
        let millis =
            now.duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        let random = fastrand::u128(..).to_le_bytes();
        let mut counter = [0_u8; 10];
        counter.copy_from_slice(&random[..10]);
        MessageId(uuid::Builder::from_unix_timestamp_millis(millis, &counter).into_uuid())
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_7_unique_and_carry_the_creation_time() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis();
        let ids: std::collections::HashSet<MessageId> = (0..10_000).map(|_| MessageId::new()).collect();
        assert_eq!(ids.len(), 10_000);
        let id = MessageId::new();
        assert_eq!(id.0.get_version_num(), 7);
        let (seconds, nanos) = id.0.get_timestamp().expect("v7 has a timestamp").to_unix();
        let millis = u128::from(seconds) * 1000 + u128::from(nanos / 1_000_000);
        assert!(millis >= before && millis <= before + 60_000, "{millis} vs {before}");
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Who a message is and where it comes from: everything but its body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// This message's id. Kept across redeliveries so consumers can deduplicate.
    pub id: MessageId,
    /// The id shared by every message of one conversation; a root message's
    /// correlation id is its own id.
    pub correlation_id: MessageId,
    /// The id of the message whose handling produced this one.
    pub causation_id: Option<MessageId>,
    /// The message's wire name (see [`Message::NAME`]).
    pub name: Cow<'static, str>,
    /// When the message was created. Serialized as RFC 3339 text.
    #[serde(with = "rfc3339")]
    pub timestamp: SystemTime,
    /// Delivery attempt, starting at 1.
    pub attempt: u32,
    /// Extra headers.
    pub headers: Headers,
}

impl Metadata {
    /// Metadata for a new root message: a fresh id that is also its
    /// correlation id, attempt 1.
    pub fn root(name: impl Into<Cow<'static, str>>) -> Self {
        // One clock read for both the id and the timestamp.
        let now = SystemTime::now();
        let id = MessageId::at(now);
        Metadata {
            id,
            correlation_id: id,
            causation_id: None,
            name: name.into(),
            timestamp: now,
            attempt: 1,
            headers: Headers::new(),
        }
    }

    /// Metadata for a message produced while handling `self`: same
    /// correlation id, caused by `self`.
    pub fn child(&self, name: impl Into<Cow<'static, str>>) -> Self {
        Metadata { correlation_id: self.correlation_id, causation_id: Some(self.id), ..Metadata::root(name) }
    }
}

/// `SystemTime` as RFC 3339 text. The conversion to a calendar date happens
/// here, when a message is written out, not on every dispatch.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserializer, Serializer};
    use time::OffsetDateTime;

    pub(super) fn serialize<S: Serializer>(value: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::serialize(&OffsetDateTime::from(*value), serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        time::serde::rfc3339::deserialize(deserializer).map(SystemTime::from)
    }
}

/// A message ready for the wire: metadata plus the encoded body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Identity and routing metadata.
    pub meta: Metadata,
    /// How `payload` is encoded.
    pub codec: Codec,
    /// The encoded body.
    pub payload: Vec<u8>,
}

impl Envelope {
    /// Encodes `message` under fresh root metadata. The codec is the
    /// message type's own ([`Message::CODEC`]) or else `default_codec`.
    ///
    /// # Errors
    /// [`CodecError::Encode`] when the body cannot be encoded.
    pub fn encode<M: Message + Serialize>(message: &M, default_codec: Codec) -> Result<Self, CodecError> {
        Self::encode_with(message, Metadata::root(M::NAME), default_codec)
    }

    /// Encodes `message` under the given metadata.
    ///
    /// # Errors
    /// [`CodecError::Encode`] when the body cannot be encoded.
    pub fn encode_with<M: Message + Serialize>(
        message: &M,
        meta: Metadata,
        default_codec: Codec,
    ) -> Result<Self, CodecError> {
        let codec = M::CODEC.unwrap_or(default_codec);
        let payload = codec.encode(M::NAME, message)?;
        Ok(Envelope { meta, codec, payload })
    }

    /// Decodes the body as `M`, checking first that the envelope holds `M`.
    ///
    /// # Errors
    /// [`CodecError::NameMismatch`] when the envelope names another message,
    /// [`CodecError::Decode`] when the body is not a valid `M`.
    pub fn decode<M: Message + DeserializeOwned>(&self) -> Result<M, CodecError> {
        if self.meta.name != M::NAME {
            return Err(CodecError::NameMismatch { expected: M::NAME.to_owned(), found: self.meta.name.to_string() });
        }
        self.codec.decode(M::NAME, &self.payload)
    }
}
