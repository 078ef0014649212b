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
