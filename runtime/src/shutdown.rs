//! Shutdown reports and the signal helper for `main`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What `shutdown` did, per actor, in the order the tree stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownReport {
    /// One entry per actor with a mailbox, in stopping order.
    pub actors: Vec<ActorShutdown>,
    /// How long shutdown took.
    pub elapsed: Duration,
    /// Whether the deadline passed before every mailbox drained.
    pub deadline_reached: bool,
}

/// One actor's part of a [`ShutdownReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorShutdown {
    /// The actor's path in the tree.
    pub path: String,
    /// Messages that were queued or in progress when shutdown began and were
    /// handled before the actor stopped.
    pub drained: u64,
    /// Messages that could not be handled before the deadline. Their callers
    /// received `ShuttingDown`; nothing was dropped silently.
    pub abandoned: u64,
}

impl ShutdownReport {
    /// Messages drained across all actors.
    pub fn drained(&self) -> u64 {
        self.actors.iter().map(|a| a.drained).sum()
    }

    /// Messages abandoned across all actors.
    pub fn abandoned(&self) -> u64 {
        self.actors.iter().map(|a| a.abandoned).sum()
    }

    /// True when every message was handled.
    pub fn is_clean(&self) -> bool {
        self.abandoned() == 0
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "shutdown in {:?}: {} drained, {} abandoned{}",
            self.elapsed,
            self.drained(),
            self.abandoned(),
            if self.deadline_reached { " (deadline reached)" } else { "" }
        )?;
        let width = self.actors.iter().map(|a| a.path.len()).max().unwrap_or(0);
        for actor in self.actors.iter().filter(|a| a.drained > 0 || a.abandoned > 0) {
            writeln!(f, "  {:width$}  drained {:>6}  abandoned {:>6}", actor.path, actor.drained, actor.abandoned)?;
        }
        Ok(())
    }
}

/// Resolves on Ctrl-C, or on SIGTERM on Unix (what container runtimes send).
///
/// # Examples
///
/// ```no_run
/// # async fn run(system: hexeract::System) {
/// hexeract::shutdown_signal().await;
/// let report = system.shutdown(std::time::Duration::from_secs(10)).await;
/// println!("{report}");
/// # }
/// ```
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
