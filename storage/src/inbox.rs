//! What the inbox stores of every dialect share.

use hexeract_runtime::ports::outbox::StoreError;

/// What recording a message id in the inbox found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InboxOutcome {
    /// The first time this consumer sees this message: run the side effect
    /// in the same transaction, then commit.
    First,
    /// Seen before (or being recorded by a transaction that committed
    /// first): skip the side effect. The duplicate was counted on the
    /// existing row; commit to keep the count.
    Duplicate,
}

/// Counts for monitoring an inbox table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InboxStats {
    /// Message ids recorded (and not yet purged).
    pub entries: u64,
    /// Distinct consumers among them.
    pub consumers: u64,
    /// Duplicates skipped, summed over the rows still kept.
    pub duplicates: u64,
    /// Age of the oldest entry, on the database clock: how far back
    /// duplicates are recognised.
    pub oldest_age: Option<std::time::Duration>,
}

/// The longest consumer name (part of the inbox key).
pub(crate) const MAX_CONSUMER_LEN: usize = 200;

/// Checks a consumer name.
pub(crate) fn check_consumer(consumer: &str) -> Result<(), StoreError> {
    if consumer.is_empty() || consumer.chars().count() > MAX_CONSUMER_LEN {
        return Err(StoreError::Config(format!(
            "consumer name must be 1..={MAX_CONSUMER_LEN} characters, got {}",
            consumer.chars().count()
        )));
    }
    Ok(())
}
