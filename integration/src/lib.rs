//! Shared helpers for Hexeract's integration tests and benchmarks.
//!
//! The tests live in `tests/` (one binary per subsystem) and the benchmarks
//! in `benches/`. Tests that need a real broker or database read
//! `HEXERACT_PG_URL`, `HEXERACT_MYSQL_URL` and `HEXERACT_AMQP_URL`.

pub mod conformance;

use std::future::Future;
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
