//! Durations handed to the database: checked and converted to microseconds.

use std::time::Duration;

use hexeract_runtime::ports::outbox::StoreError;

/// The longest lease, backoff or retention the stores accept: a year.
/// `Duration::MAX` and friends are configuration mistakes, not "forever".
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);

/// `duration` in whole microseconds (rounded up, so a positive duration
/// never becomes zero).
///
/// # Errors
/// [`StoreError::Config`] when it is longer than [`MAX_DELAY`], or zero
/// while `positive` is required.
pub(crate) fn micros(what: &'static str, duration: Duration, positive: bool) -> Result<i64, StoreError> {
    if duration > MAX_DELAY {
        return Err(StoreError::Config(format!("{what} of {duration:?} is longer than a year")));
    }
    if positive && duration.is_zero() {
        return Err(StoreError::Config(format!("{what} must be positive")));
    }
    let micros = duration.as_nanos().div_ceil(1_000);
    // At most a year of microseconds: far inside i64.
    Ok(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// `duration` in whole milliseconds, rounded up (SQLite keeps milliseconds).
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) fn millis(what: &'static str, duration: Duration, positive: bool) -> Result<i64, StoreError> {
    micros(what, duration, positive).map(|us| (us + 999) / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_bounded() {
        assert_eq!(micros("lease", Duration::from_millis(1500), true).ok(), Some(1_500_000));
        assert_eq!(micros("lease", Duration::from_nanos(1), true).ok(), Some(1));
        assert_eq!(millis("lease", Duration::from_micros(1), true).ok(), Some(1));
        assert!(micros("lease", Duration::ZERO, true).is_err());
        assert_eq!(micros("retry_after", Duration::ZERO, false).ok(), Some(0));
        assert!(micros("lease", Duration::MAX, true).is_err());
    }
}
