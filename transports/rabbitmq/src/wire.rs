//! [`WireMessage`] to AMQP properties and back (the mapping is the table in
//! `docs/wire-format.md`).
//!
//! Headers travel as AMQP long strings. Coming in, numbers, booleans and
//! timestamps from other clients are read as their decimal text; a header
//! we cannot read as text (a table, an array, raw bytes that are not UTF-8,
//! a decimal, a void) is named under [`UNREADABLE_HEADERS`], which makes the
//! message fail to decode, so the consumer dead-letters it with the reason
//! instead of guessing. The broker's own dead-letter bookkeeping (`x-death`
//! and friends, added when a retry tier hands a message back) is dropped:
//! Hexeract counts attempts in its own header.

use hexeract_runtime::ports::transport::PublishError;
use hexeract_runtime::ports::wire::{UNREADABLE_HEADERS, WireMessage};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Persistent delivery: the message is written to disk in a durable queue.
const PERSISTENT: u8 = 2;

/// Broker-written headers that are not part of the message.
fn is_broker_bookkeeping(name: &str) -> bool {
    name == "x-death" || name.starts_with("x-first-death-") || name.starts_with("x-last-death-")
}

fn short(what: &'static str, text: &str) -> Result<ShortString, PublishError> {
    ShortString::try_new(text).map_err(|_| PublishError::Invalid {
        what,
        reason: format!("{} bytes, over AMQP's short-string limit of 255", text.len()),
    })
}

/// The AMQP properties carrying `message` (everything but the body).
pub(crate) fn properties(message: &WireMessage, app_id: &ShortString) -> Result<BasicProperties, PublishError> {
    let mut headers = FieldTable::default();
    for (name, value) in &message.headers {
        headers.insert(short("header name", name)?, AMQPValue::LongString(LongString::from(value.as_bytes())));
    }
    let mut properties =
        BasicProperties::default().with_delivery_mode(PERSISTENT).with_app_id(app_id.clone()).with_headers(headers);
    if let Some(id) = &message.message_id {
        properties = properties.with_message_id(short("message_id", id)?);
    }
    if let Some(id) = &message.correlation_id {
        properties = properties.with_correlation_id(short("correlation_id", id)?);
    }
    if let Some(kind) = &message.kind {
        properties = properties.with_type(short("type", kind)?);
    }
    if let Some(content_type) = &message.content_type {
        properties = properties.with_content_type(short("content_type", content_type)?);
    }
    if let Some(timestamp) = message.timestamp {
        properties = properties.with_timestamp(timestamp);
    }
    Ok(properties)
}

/// The size `message` takes on the wire, near enough to enforce a limit.
pub(crate) fn size(message: &WireMessage) -> usize {
    let strings = [&message.message_id, &message.correlation_id, &message.kind, &message.content_type];
    let properties: usize = strings.iter().map(|text| text.as_ref().map_or(0, String::len)).sum();
    let headers: usize = message.headers.iter().map(|(name, value)| name.len() + value.len() + 6).sum();
    message.body.len() + properties + headers + 64
}

/// The wire message in an AMQP delivery.
pub(crate) fn from_amqp(properties: &BasicProperties, body: Vec<u8>) -> WireMessage {
    let text = |value: &Option<ShortString>| value.as_ref().map(|value| value.as_str().to_owned());
    let mut headers = std::collections::BTreeMap::new();
    let mut unreadable = Vec::new();
    if let Some(table) = properties.headers() {
        for (name, value) in table.inner() {
            let name = name.as_str();
            if is_broker_bookkeeping(name) || name == UNREADABLE_HEADERS {
                continue;
            }
            match header_text(value) {
                Some(text) => {
                    headers.insert(name.to_owned(), text);
                }
                None => unreadable.push(format!("`{name}` ({:?})", value.get_type())),
            }
        }
    }
    if !unreadable.is_empty() {
        headers.insert(UNREADABLE_HEADERS.to_owned(), unreadable.join(", "));
    }
    WireMessage {
        message_id: text(properties.message_id()),
        correlation_id: text(properties.correlation_id()),
        kind: text(properties.kind()),
        content_type: text(properties.content_type()),
        timestamp: *properties.timestamp(),
        headers,
        body,
    }
}

pub(crate) fn header_text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(text) => String::from_utf8(text.as_bytes().to_vec()).ok()?,
        AMQPValue::ShortString(text) => text.as_str().to_owned(),
        AMQPValue::ByteArray(bytes) => String::from_utf8(bytes.as_slice().to_vec()).ok()?,
        AMQPValue::Boolean(flag) => flag.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::DecimalValue(_) | AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) | AMQPValue::Void => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip() {
        let mut message = WireMessage {
            message_id: Some("0190f6b4-7c1e-7000-8000-000000000001".into()),
            correlation_id: Some("0190f6b4-7c1e-7000-8000-000000000002".into()),
            kind: Some("orders.placed.v1".into()),
            content_type: Some("application/json".into()),
            timestamp: Some(1_700_000_000),
            body: b"{}".to_vec(),
            ..WireMessage::default()
        };
        message.headers.insert("x-attempt".into(), "2".into());
        let properties = properties(&message, &"test".into()).expect("valid");
        assert_eq!(*properties.delivery_mode(), Some(PERSISTENT));
        assert_eq!(from_amqp(&properties, message.body.clone()), message);
    }

    #[test]
    fn foreign_header_types_are_read_or_named() {
        let mut table = FieldTable::default();
        table.insert("x-attempt".into(), AMQPValue::LongInt(3));
        table.insert("flag".into(), AMQPValue::Boolean(true));
        table.insert("nested".into(), AMQPValue::FieldTable(FieldTable::default()));
        table.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        let message = from_amqp(&BasicProperties::default().with_headers(table), Vec::new());
        assert_eq!(message.headers.get("x-attempt").map(String::as_str), Some("3"));
        assert_eq!(message.headers.get("flag").map(String::as_str), Some("true"));
        assert!(!message.headers.contains_key("x-death"));
        let unreadable = message.headers.get(UNREADABLE_HEADERS).expect("named");
        assert!(unreadable.contains("`nested`"), "{unreadable}");
    }

    #[test]
    fn an_overlong_property_is_refused_before_sending() {
        let message = WireMessage { kind: Some("k".repeat(256)), ..WireMessage::default() };
        assert!(matches!(properties(&message, &"test".into()), Err(PublishError::Invalid { what: "type", .. })));
    }
}
