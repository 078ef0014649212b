//! Shared helpers for Hexeract's integration tests and benchmarks.
//!
//! The tests live in `tests/` (one binary per subsystem) and the benchmarks
//! in `benches/`. Tests that need a real broker or database read
//! `HEXERACT_PG_URL`, `HEXERACT_MYSQL_URL` and `HEXERACT_AMQP_URL`.

pub mod conformance;

use std::future::Future;
use std::io::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Runs `test` with a hard limit, so a regression that hangs fails the test
/// with a message instead of stalling the suite.
///
/// # Panics
/// When `test` does not finish within `limit`.
pub async fn within<T>(limit: Duration, test: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, test).await {
        Ok(value) => value,
        Err(_) => panic!("test did not finish within {limit:?}: something hangs"),
    }
}

/// The connection URL in the environment variable `var` for `service`, or
/// `None` when it is unset: the caller skips, after this printed a line
/// saying so. Under `CI=true` an unset variable is a failure instead, so a
/// CI run can never pass by skipping its real-service tests.
///
/// # Panics
/// When `var` is unset and `CI=true`.
pub fn service_url(var: &str, service: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{var} is not set and CI=true: the {service} tests must run in CI")
        }
        _ => {
            skipped(&format!("{var} is not set; the {service} tests need a real {service}"));
            None
        }
    }
}

/// Prints `SKIPPED: <why>` once per test binary and reason, on stderr
/// past the test harness's capture (which hides what a passing test prints):
/// a skipped test must be visible in `cargo test`'s output.
pub fn skipped(why: &str) {
    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(PoisonError::into_inner);
    if !said.iter().any(|line| line == why) {
        said.push(why.to_owned());
        let _ = writeln!(std::io::stderr().lock(), "\nSKIPPED: {why}");
    }
}

/// A name no earlier run used: brokers keep durable queues between runs.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{prefix}.{:x}{:04x}", nanos, fastrand::u16(..))
}

/// Polls `condition` every few milliseconds until it holds or `limit` passes.
/// Returns whether it held.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
