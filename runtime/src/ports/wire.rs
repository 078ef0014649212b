//! The wire format: how an [`Envelope`] travels as broker properties,
//! headers and a body, so that a service in another language can produce and
//! consume Hexeract messages with nothing but its standard client.
//!
//! | envelope field     | AMQP property / header         |
//! |--------------------|--------------------------------|
//! | `id`               | `message_id` (UUID text)       |
//! | `correlation_id`   | `correlation_id` (UUID text)   |
//! | `causation_id`     | header `x-causation-id`        |
//! | `name`             | `type`                         |
//! | `codec`            | `content_type`                 |
//! | `timestamp`        | `timestamp` (Unix seconds) and header `x-timestamp-ms` |
//! | `attempt`          | header `x-attempt` (decimal)   |
//! | `headers`          | other headers, as strings      |

use std::borrow::Cow;

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

use crate::{Codec, CodecError, Envelope, Headers, MessageId, Metadata};

/// Header carrying the causation id.
pub const CAUSATION_ID: &str = "x-causation-id";
/// Header carrying the delivery attempt (1 for the first delivery).
pub const ATTEMPT: &str = "x-attempt";
/// Header carrying the creation time in Unix milliseconds (AMQP's own
/// timestamp property has whole seconds only).
pub const TIMESTAMP_MS: &str = "x-timestamp-ms";
/// Header set on dead letters: why the message was dead-lettered.
pub const DEAD_LETTER_REASON: &str = "x-dead-letter-reason";
/// Header set on dead letters: the queue it was consumed from.
pub const ORIGINAL_QUEUE: &str = "x-original-queue";
/// Header set on dead letters: the exchange it was first published to.
pub const ORIGINAL_EXCHANGE: &str = "x-original-exchange";
/// Header set on dead letters: the routing key it was first published with.
pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";

/// Set by a transport adapter on a message whose headers it could not read
/// as text (an AMQP table or array, bytes that are not UTF-8), naming them.
/// Such a message does not decode ([`WireMessage::to_envelope`] fails), so
/// the consumer dead-letters it with this reason instead of guessing.
pub const UNREADABLE_HEADERS: &str = "x-hexeract-unreadable-headers";

/// The highest attempt number accepted from the wire. A forged or corrupted
/// header must not mean "retry forever".
pub const MAX_WIRE_ATTEMPT: u32 = 1_000_000;

/// A message as a broker carries it: properties, string headers, body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WireMessage {
    /// `message_id` property.
    pub message_id: Option<String>,
    /// `correlation_id` property.
    pub correlation_id: Option<String>,
    /// `type` property: the message's wire name.
    pub kind: Option<String>,
    /// `content_type` property.
    pub content_type: Option<String>,
    /// `timestamp` property, Unix seconds.
    pub timestamp: Option<u64>,
    /// Headers, each as a string (adapters refuse or stringify other types).
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

/// Why a wire message is not a valid envelope. The consumer dead-letters it
/// with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A required property is absent.
    #[error("missing `{0}`")]
    Missing(&'static str),
    /// A property or header does not parse.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The property or header.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The content type is not one Hexeract reads.
    #[error("unsupported content type `{0}`")]
    ContentType(String),
}

impl WireMessage {
    /// The wire form of `envelope`.
    pub fn from_envelope(envelope: &Envelope) -> Self {
        let meta = &envelope.meta;
        let mut headers = meta.headers.clone();
        if let Some(causation) = meta.causation_id {
            headers.insert(CAUSATION_ID.into(), causation.to_string());
        }
        headers.insert(ATTEMPT.into(), meta.attempt.to_string());
        let since_epoch = meta.timestamp.duration_since(UNIX_EPOCH).unwrap_or_default();
        let millis = since_epoch.as_millis();
        headers.insert(TIMESTAMP_MS.into(), millis.to_string());
        WireMessage {
            message_id: Some(meta.id.to_string()),
            correlation_id: Some(meta.correlation_id.to_string()),
            kind: Some(meta.name.to_string()),
            content_type: Some(envelope.codec.content_type().to_owned()),
            timestamp: Some(since_epoch.as_secs()),
            headers,
            body: envelope.payload.clone(),
        }
    }

    /// The envelope this wire message carries. A missing correlation id
    /// means a root message (its own id); a missing attempt means 1.
    ///
    /// # Errors
    /// [`WireError`] naming the first property that is missing or invalid.
    pub fn to_envelope(&self) -> Result<Envelope, WireError> {
        let id = parse_id("message_id", self.message_id.as_deref().ok_or(WireError::Missing("message_id"))?)?;
        let correlation_id = match self.correlation_id.as_deref() {
            Some(text) => parse_id("correlation_id", text)?,
            None => id,
        };
        let name = self.kind.clone().ok_or(WireError::Missing("type"))?;
        if name.is_empty() {
            return Err(WireError::Missing("type"));
        }
        let content_type = self.content_type.as_deref().ok_or(WireError::Missing("content_type"))?;
        let codec = Codec::from_content_type(content_type).map_err(|error| match error {
            CodecError::UnknownContentType(found) => WireError::ContentType(found),
            other => WireError::Invalid { field: "content_type", reason: other.to_string() },
        })?;
        if let Some(names) = self.headers.get(UNREADABLE_HEADERS) {
            return Err(WireError::Invalid { field: "headers", reason: format!("not text: {names}") });
        }
        let mut headers = self.headers.clone();
        let causation_id = headers.remove(CAUSATION_ID).map(|text| parse_id(CAUSATION_ID, &text)).transpose()?;
        let attempt = match headers.remove(ATTEMPT) {
            None => 1,
            Some(text) => match text.trim().parse::<u32>() {
                Ok(attempt) if (1..=MAX_WIRE_ATTEMPT).contains(&attempt) => attempt,
                _ => {
                    return Err(WireError::Invalid {
                        field: ATTEMPT,
                        reason: format!("`{text}` is not in 1..={MAX_WIRE_ATTEMPT}"),
                    });
                }
            },
        };
        let timestamp = match (headers.remove(TIMESTAMP_MS), self.timestamp) {
            (Some(millis), _) => {
                let parsed: u64 = millis.trim().parse().map_err(|_| WireError::Invalid {
                    field: TIMESTAMP_MS,
                    reason: format!("`{millis}` is not a number of milliseconds since 1970"),
                })?;
                UNIX_EPOCH
                    .checked_add(Duration::from_millis(parsed))
                    .ok_or(WireError::Invalid { field: TIMESTAMP_MS, reason: format!("{parsed} is out of range") })?
            }
            (None, Some(seconds)) => UNIX_EPOCH
                .checked_add(Duration::from_secs(seconds))
                .ok_or(WireError::Invalid { field: "timestamp", reason: format!("{seconds} is out of range") })?,
            (None, None) => SystemTime::now(),
        };
        Ok(Envelope {
            meta: Metadata { id, correlation_id, causation_id, name: Cow::Owned(name), timestamp, attempt, headers },
            codec,
            payload: self.body.clone(),
        })
    }
}

fn parse_id(field: &'static str, text: &str) -> Result<MessageId, WireError> {
    Uuid::parse_str(text.trim()).map(MessageId).map_err(|error| WireError::Invalid { field, reason: error.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_survives_the_wire() {
        let parent = Metadata::root("orders.place.v1");
        let mut meta = parent.child("orders.placed.v1");
        meta.attempt = 3;
        meta.headers.insert("tenant".into(), "acme".into());
        let envelope = Envelope { meta, codec: Codec::MessagePack, payload: vec![1, 2, 3] };
        let wire = WireMessage::from_envelope(&envelope);
        assert_eq!(wire.kind.as_deref(), Some("orders.placed.v1"));
        assert_eq!(wire.headers.get(ATTEMPT).map(String::as_str), Some("3"));
        let back = wire.to_envelope().expect("valid");
        assert_eq!(back.meta.id, envelope.meta.id);
        assert_eq!(back.meta.correlation_id, parent.id);
        assert_eq!(back.meta.causation_id, Some(parent.id));
        assert_eq!(back.meta.attempt, 3);
        assert_eq!(back.meta.headers.get("tenant").map(String::as_str), Some("acme"));
        let millis = |t: SystemTime| t.duration_since(UNIX_EPOCH).expect("after 1970").as_millis();
        assert_eq!(millis(back.meta.timestamp), millis(envelope.meta.timestamp));
        assert_eq!((back.codec, back.payload), (Codec::MessagePack, vec![1, 2, 3]));
    }

    #[test]
    fn a_minimal_foreign_message_is_accepted() {
        let wire = WireMessage {
            message_id: Some("0190f6b4-7c1e-7000-8000-000000000001".into()),
            kind: Some("orders.placed.v1".into()),
            content_type: Some("application/json".into()),
            body: b"{}".to_vec(),
            ..WireMessage::default()
        };
        let envelope = wire.to_envelope().expect("valid");
        assert_eq!(envelope.meta.correlation_id, envelope.meta.id);
        assert_eq!(envelope.meta.attempt, 1);
    }

    #[test]
    fn bad_properties_are_named() {
        let valid = WireMessage {
            message_id: Some("0190f6b4-7c1e-7000-8000-000000000001".into()),
            kind: Some("a.b".into()),
            content_type: Some("application/json".into()),
            ..WireMessage::default()
        };
        let mut no_id = valid.clone();
        no_id.message_id = None;
        assert_eq!(no_id.to_envelope().err(), Some(WireError::Missing("message_id")));
        let mut text = valid.clone();
        text.content_type = Some("text/plain".into());
        assert_eq!(text.to_envelope().err(), Some(WireError::ContentType("text/plain".into())));
        let mut forged = valid;
        forged.headers.insert(ATTEMPT.into(), "4294967295".into());
        assert!(matches!(forged.to_envelope(), Err(WireError::Invalid { field: ATTEMPT, .. })));
    }
}
