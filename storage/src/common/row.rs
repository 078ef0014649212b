//! Reading an outbox row back as an [`OutboxRecord`]. A row that cannot be
//! read is not an error of the claim: it is marked dead with the reason.

use std::borrow::Cow;

use hexeract_runtime::ports::outbox::OutboxRecord;
use hexeract_runtime::{Codec, Envelope, Headers, MessageId, Metadata};
use time::OffsetDateTime;
use uuid::Uuid;

/// The columns of a claimed row, as decoded by a dialect. Each field that
/// can fail to decode is a `Result` so that the reason can be recorded.
pub(crate) struct RawRow {
    pub id: Uuid,
    pub name: Result<String, String>,
    pub payload: Result<Vec<u8>, String>,
    pub content_type: Result<String, String>,
    pub headers: Result<String, String>,
    pub correlation_id: Result<Uuid, String>,
    pub causation_id: Result<Option<Uuid>, String>,
    pub created_at: Result<OffsetDateTime, String>,
    pub attempts: Result<i64, String>,
    pub ordering_key: Result<Option<String>, String>,
}

/// `column: reason` for a column that did not decode.
pub(crate) fn column_error(column: &'static str) -> impl Fn(sqlx::Error) -> String {
    move |error| format!("column `{column}`: {error}")
}

impl RawRow {
    /// The record, or why the row is unreadable.
    pub(crate) fn into_record(self) -> Result<OutboxRecord, String> {
        let name = self.name?;
        if name.is_empty() {
            return Err("column `name` is empty".into());
        }
        let content_type = self.content_type?;
        let codec =
            Codec::from_content_type(&content_type).map_err(|error| format!("column `content_type`: {error}"))?;
        let headers: Headers = serde_json::from_str(&self.headers?)
            .map_err(|error| format!("column `headers` is not a JSON object of strings: {error}"))?;
        let attempts = self.attempts?;
        let attempt = u32::try_from(attempts)
            .ok()
            .filter(|attempt| *attempt >= 1)
            .ok_or_else(|| format!("column `attempts` is {attempts} after the claim"))?;
        let meta = Metadata {
            id: MessageId(self.id),
            correlation_id: MessageId(self.correlation_id?),
            causation_id: self.causation_id?.map(MessageId),
            name: Cow::Owned(name),
            timestamp: self.created_at?.into(),
            attempt,
            headers,
        };
        Ok(OutboxRecord {
            envelope: Envelope { meta, codec, payload: self.payload? },
            ordering_key: self.ordering_key?,
        })
    }
}

/// The `headers` column text for `headers`.
pub(crate) fn headers_json(headers: &Headers) -> String {
    // A map of strings always serializes.
    serde_json::to_string(headers).unwrap_or_else(|_| "{}".to_owned())
}

/// Dead-row reasons are stored in full but bounded, so that a pathological
/// error text cannot bloat the table.
pub(crate) fn bounded_error(error: &str) -> &str {
    const MAX: usize = 4_000;
    if error.len() <= MAX {
        return error;
    }
    let mut end = MAX;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawRow {
        RawRow {
            id: Uuid::now_v7(),
            name: Ok("orders.placed.v1".into()),
            payload: Ok(b"{}".to_vec()),
            content_type: Ok("application/json".into()),
            headers: Ok(r#"{"tenant":"acme"}"#.into()),
            correlation_id: Ok(Uuid::now_v7()),
            causation_id: Ok(None),
            created_at: Ok(OffsetDateTime::UNIX_EPOCH),
            attempts: Ok(1),
            ordering_key: Ok(Some("order-1".into())),
        }
    }

    #[test]
    fn a_good_row_reads_back() {
        let record = raw().into_record().expect("readable");
        assert_eq!(record.attempt(), 1);
        assert_eq!(record.envelope.meta.headers.get("tenant").map(String::as_str), Some("acme"));
        assert_eq!(record.ordering_key.as_deref(), Some("order-1"));
    }

    #[test]
    fn unreadable_rows_say_why() {
        let mut bad = raw();
        bad.headers = Ok("{not json".into());
        assert!(bad.into_record().unwrap_err().contains("headers"));
        let mut bad = raw();
        bad.content_type = Ok("text/plain".into());
        assert!(bad.into_record().unwrap_err().contains("content_type"));
        let mut bad = raw();
        bad.headers = Ok(r#"{"n": 1}"#.into());
        assert!(bad.into_record().unwrap_err().contains("headers"));
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let text = "é".repeat(3_000);
        let cut = bounded_error(&text);
        assert!(cut.len() <= 4_000 && text.starts_with(cut));
    }
}
