//! Where the database tests find their servers: the URL-or-skip rule,
//! shared by every test binary that talks to PostgreSQL or MariaDB (it is
//! included with `#[path]`).

#![allow(dead_code)]

use std::io::Write as _;
use std::sync::Mutex;

/// Writes straight to the terminal: libtest does not capture this, so a
/// skipped dialect is visible in a passing run.
pub fn announce(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "\n{line}");
}

/// The URL in `var`, or `None` (skipped) when unset outside CI.
pub fn database_url(var: &str, dialect: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{var} is not set and CI=true: the {dialect} cases must run in CI");
            }
            static ONCE: Mutex<Vec<String>> = Mutex::new(Vec::new());
            let mut seen = ONCE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !seen.iter().any(|v| v == var) {
                seen.push(var.to_owned());
                announce(&format!("SKIPPED: {var} not set; the {dialect} cases did not run"));
            }
            None
        }
    }
}
