//! Validated SQL identifiers for the configurable table names.

use std::fmt;

use hexeract_runtime::ports::outbox::StoreError;

/// The longest table name accepted. Index names are derived from the table
/// name with a suffix of up to 15 characters (`_key_idx`, `_claim_idx`...),
/// and they must fit PostgreSQL's 63-byte and MySQL's 64-character limits.
pub const MAX_TABLE_NAME_LEN: usize = 48;

/// A table name that is a plain SQL identifier: an ASCII letter or `_`,
/// then ASCII letters, digits or `_`, at most [`MAX_TABLE_NAME_LEN`]
/// characters (`^[A-Za-z_][A-Za-z0-9_]{0,47}$`).
///
/// Only such names are ever put into SQL text, and always quoted for the
/// dialect (`"name"` on PostgreSQL and SQLite, `` `name` `` on MySQL). The
/// pattern admits no quote character, so quoting cannot be escaped.
///
/// # Examples
///
/// ```
/// use hexeract_storage::TableName;
///
/// let table = TableName::new("orders_outbox")?;
/// assert_eq!(table.as_str(), "orders_outbox");
/// assert!(TableName::new("orders; DROP TABLE users").is_err());
/// # Ok::<(), hexeract_runtime::ports::outbox::StoreError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName(pub(crate) String);

impl TableName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`StoreError::InvalidTableName`] naming the rule the name breaks:
    /// empty, too long, a first character that is not a letter or `_`, or
    /// any character other than ASCII letters, digits and `_` (quotes,
    /// semicolons, spaces, dots...).
    pub fn new(name: impl Into<String>) -> Result<Self, StoreError> {
        let name = name.into();
        match check(&name) {
            Ok(()) => Ok(TableName(name)),
            Err(reason) => Err(StoreError::InvalidTableName { name, reason }),
        }
    }

    /// The name as given (unquoted).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name quoted as a PostgreSQL or SQLite identifier: `"name"`.
    pub fn ansi_quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// The name quoted as a MySQL/MariaDB identifier: `` `name` ``.
    pub fn backtick_quoted(&self) -> String {
        format!("`{}`", self.0)
    }

    /// A derived identifier (index name), `name` + `suffix`, unquoted. The
    /// suffix is one of ours, so the result stays a valid identifier.
    pub(crate) fn derived(&self, suffix: &'static str) -> String {
        debug_assert!(suffix.len() <= 15 && suffix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        format!("{}{suffix}", self.0)
    }
}

fn check(name: &str) -> Result<(), &'static str> {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return Err("must not be empty");
    };
    if name.len() > MAX_TABLE_NAME_LEN {
        return Err("must be at most 48 characters (derived index names must fit the 63-byte identifier limit)");
    }
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return Err("must start with an ASCII letter or `_`");
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err("may contain only ASCII letters, digits and `_` (no quotes, semicolons, spaces, dots or dashes)");
    }
    Ok(())
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TableName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for TableName {
    type Error = StoreError;

    fn try_from(name: &str) -> Result<Self, StoreError> {
        TableName::new(name)
    }
}

impl TryFrom<String> for TableName {
    type Error = StoreError;

    fn try_from(name: String) -> Result<Self, StoreError> {
        TableName::new(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> &'static str {
        match TableName::new(name) {
            Err(StoreError::InvalidTableName { reason, .. }) => reason,
            other => panic!("`{name}` was accepted: {other:?}"),
        }
    }

    #[test]
    fn plain_identifiers_are_accepted() {
        for name in ["outbox", "_x", "Orders_Outbox_2", &"a".repeat(MAX_TABLE_NAME_LEN)] {
            assert_eq!(TableName::new(name).expect("valid").as_str(), name);
        }
    }

    #[test]
    fn each_rule_is_named() {
        assert!(reason("").contains("empty"));
        assert!(reason("1outbox").contains("start"));
        assert!(reason("out\"box").contains("quotes"));
        assert!(reason("out`box").contains("quotes"));
        assert!(reason("outbox; DROP TABLE x").contains("semicolons"));
        assert!(reason("out box").contains("spaces"));
        assert!(reason("public.outbox").contains("dots"));
        assert!(reason("outbøx").contains("ASCII"));
        assert!(reason(&"a".repeat(64)).contains("48"));
        assert!(reason(&"a".repeat(MAX_TABLE_NAME_LEN + 1)).contains("48"));
    }

    #[test]
    fn quoting_per_dialect() {
        let name = TableName::new("events").expect("valid");
        assert_eq!(name.ansi_quoted(), "\"events\"");
        assert_eq!(name.backtick_quoted(), "`events`");
        assert_eq!(name.derived("_claim_idx"), "events_claim_idx");
    }
}
