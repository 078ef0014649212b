use std::time::Duration;

/// Exponential backoff with full jitter: the delay before attempt `n` is
/// drawn uniformly from `[0, min(cap, base × 2ⁿ)]`, so restarts of many
/// actors that failed together do not fire together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// A backoff growing from `base` up to `cap`.
    ///
    /// # Errors
    /// [`PolicyError`] when `base` is zero or `cap` is below `base`.
    pub fn new(base: Duration, cap: Duration) -> Result<Self, PolicyError> {
        if base.is_zero() {
            return Err(PolicyError::ZeroBackoff);
        }
        if cap < base {
            return Err(PolicyError::CapBelowBase { base, cap });
        }
        Ok(Backoff { base, cap })
    }

    /// The first step.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest step.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The upper bound of the delay before attempt `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1_u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A random delay before attempt `attempt` (0-based), full jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

impl Default for Backoff {
    /// 50 ms growing to 5 s: quick enough that a one-off panic costs little,
    /// slow enough that a crash loop does not burn a core.
    fn default() -> Self {
        Backoff { base: Duration::from_millis(50), cap: Duration::from_secs(5) }
    }
}

/// How a supervisor treats a failing child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    backoff: Backoff,
    max_restarts: u32,
    window: Duration,
}

impl Default for RestartPolicy {
    /// The default [`Backoff`]; at most 10 restarts in 60 s, after which the
    /// child is given up on and the failure escalated.
    fn default() -> Self {
        RestartPolicy { backoff: Backoff::default(), max_restarts: 10, window: Duration::from_secs(60) }
    }
}

impl RestartPolicy {
    /// Sets the delay between a failure and the restart.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the restart intensity: at most `max_restarts` within `window`.
    ///
    /// # Errors
    /// [`PolicyError`] for zero restarts or an empty window.
    pub fn intensity(mut self, max_restarts: u32, window: Duration) -> Result<Self, PolicyError> {
        if max_restarts == 0 {
            return Err(PolicyError::ZeroRestarts);
        }
        if window.is_zero() {
            return Err(PolicyError::ZeroWindow);
        }
        self.max_restarts = max_restarts;
        self.window = window;
        Ok(self)
    }

    /// The backoff between failure and restart.
    pub fn backoff_policy(&self) -> Backoff {
        self.backoff
    }

    /// Restarts allowed within [`RestartPolicy::window`].
    pub fn max_restarts(&self) -> u32 {
        self.max_restarts
    }

    /// The window the restart intensity is measured over.
    pub fn window(&self) -> Duration {
        self.window
    }
}

/// A restart policy that cannot work as configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A zero base would restart in a hot loop.
    #[error("backoff base must be greater than zero")]
    ZeroBackoff,
    /// The cap must allow at least one base step.
    #[error("backoff cap {cap:?} is below its base {base:?}")]
    CapBelowBase {
        /// The configured base.
        base: Duration,
        /// The configured cap.
        cap: Duration,
    },
    /// Zero restarts would give up on the first failure; say so explicitly
    /// by not supervising instead.
    #[error("max_restarts must be at least 1")]
    ZeroRestarts,
    /// An empty window counts nothing.
    #[error("restart window must be greater than zero")]
    ZeroWindow,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(100)).expect("valid");
        assert_eq!(backoff.ceiling(0), Duration::from_millis(10));
        assert_eq!(backoff.ceiling(1), Duration::from_millis(20));
        assert_eq!(backoff.ceiling(3), Duration::from_millis(80));
        assert_eq!(backoff.ceiling(4), Duration::from_millis(100));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_millis(100));
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        let backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1)).expect("valid");
        let delays: Vec<Duration> = (0..200).map(|_| backoff.delay(2)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(40)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "full jitter spreads delays");
    }

    #[test]
    fn invalid_policies_are_typed_errors() {
        assert_eq!(Backoff::new(Duration::ZERO, Duration::from_secs(1)), Err(PolicyError::ZeroBackoff));
        assert!(matches!(
            Backoff::new(Duration::from_secs(2), Duration::from_secs(1)),
            Err(PolicyError::CapBelowBase { .. })
        ));
        assert_eq!(RestartPolicy::default().intensity(0, Duration::from_secs(1)), Err(PolicyError::ZeroRestarts));
        assert_eq!(RestartPolicy::default().intensity(1, Duration::ZERO), Err(PolicyError::ZeroWindow));
    }
}
