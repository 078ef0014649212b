//! Dead rows, as operators list them.

use hexeract_runtime::MessageId;
use time::OffsetDateTime;

/// An outbox row that exhausted its attempts or could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadRow {
    /// The row id (the message id).
    pub id: MessageId,
    /// The message name.
    pub name: String,
    /// Attempts used.
    pub attempts: u32,
    /// Why it is dead: the last dispatch error, or why it was unreadable.
    pub last_error: Option<String>,
    /// The ordering key, if any.
    pub ordering_key: Option<String>,
    /// When it was saved (database clock).
    pub created_at: OffsetDateTime,
}

/// A dead row with everything needed to judge it: the message as it would
/// be published, and why it died.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadMessage {
    /// Id, name, attempts, last error, ordering key, creation time.
    pub row: DeadRow,
    /// The content type of `payload` (`application/json`...).
    pub content_type: String,
    /// The message headers, as the JSON object stored in the row.
    pub headers: String,
    /// The correlation id.
    pub correlation_id: MessageId,
    /// The causation id, if any.
    pub causation_id: Option<MessageId>,
    /// The encoded message.
    pub payload: Vec<u8>,
}
