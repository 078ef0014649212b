use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::ActorStatus;

/// What a system's metrics endpoint serves as JSON (`/snapshot`), and what
/// `hexeract top` reads: the actor tree and the outbox figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemSnapshot {
    /// Every actor's figures.
    pub actors: MetricsSnapshot,
    /// One entry per relayed outbox table, as last sampled.
    pub outboxes: Vec<OutboxFigures>,
    /// Seconds since the system started.
    pub uptime_secs: f64,
}

/// An outbox table's counts, sampled periodically off the relay's path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxFigures {
    /// The table.
    pub table: String,
    /// The last successful sample, if any.
    pub stats: Option<crate::ports::outbox::OutboxStats>,
    /// Why the last sample failed, if it did.
    pub error: Option<String>,
    /// Relay lag: for each row the broker confirmed, the time from its
    /// commit (`created_at`, on the database's clock) to the confirm (on
    /// this host's), clamped at zero. Live, not sampled.
    #[serde(default)]
    pub relay_lag: Latency,
}

/// Every actor's figures at one moment, arranged as the supervision tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// The root of the tree; its children are the subsystems (`mediator`...).
    pub root: TreeNode,
}

/// A node of the supervision tree: an actor, a group of actors, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeNode {
    /// The last segment of the path (`2` in `mediator/place_order/2`).
    pub name: String,
    /// The full path (`mediator/place_order/2`); empty for the root.
    pub path: String,
    /// The actor at this node, when the node is one.
    pub actor: Option<ActorSnapshot>,
    /// The nodes below, in registration order.
    pub children: Vec<TreeNode>,
}

/// One actor's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorSnapshot {
    /// Its path in the supervision tree.
    pub path: String,
    /// Running, restarting, stopped or given up.
    pub status: ActorStatus,
    /// Messages queued or being handled.
    pub depth: usize,
    /// Mailbox capacity (0 for an actor without a bounded mailbox).
    pub capacity: usize,
    /// Messages handled, by outcome.
    pub handled: OutcomeCounts,
    /// Handling latency.
    pub latency: Latency,
    /// Restarts by its supervisor.
    pub restarts: u64,
}

/// Messages handled, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    /// Handler returned `Ok`.
    pub ok: u64,
    /// Handler returned `Err`.
    pub error: u64,
    /// Handler panicked.
    pub panic: u64,
    /// Handler cancelled by a timeout.
    pub timeout: u64,
    /// Sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// Recognised as a duplicate and skipped.
    pub duplicate: u64,
}

impl OutcomeCounts {
    /// Every message counted, whatever its outcome.
    pub fn total(&self) -> u64 {
        self.ok + self.error + self.panic + self.timeout + self.dead_lettered + self.duplicate
    }
}

/// Handling latency, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Slowest.
    pub max_ns: u64,
}

impl Latency {
    pub(crate) fn from_histogram(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            count: histogram.len(),
            p50_ns: histogram.value_at_quantile(0.5),
            p99_ns: histogram.value_at_quantile(0.99),
            max_ns: histogram.max(),
        }
    }
}

impl MetricsSnapshot {
    pub(crate) fn from_actors(actors: Vec<ActorSnapshot>) -> Self {
        let mut root = TreeNode { name: String::new(), path: String::new(), actor: None, children: Vec::new() };
        for actor in actors {
            root.insert(actor);
        }
        MetricsSnapshot { root }
    }

    /// The actor at `path`, if there is one.
    pub fn actor(&self, path: &str) -> Option<&ActorSnapshot> {
        self.actors().into_iter().find(|actor| actor.path == path)
    }

    /// Every actor, depth first in tree order.
    pub fn actors(&self) -> Vec<&ActorSnapshot> {
        let mut out = Vec::new();
        self.root.collect(&mut out);
        out
    }

    /// Every actor whose path starts with `prefix` (a subtree such as
    /// `mediator/place_order`).
    pub fn subtree(&self, prefix: &str) -> Vec<&ActorSnapshot> {
        self.actors()
            .into_iter()
            .filter(|actor| actor.path == prefix || actor.path.starts_with(&format!("{prefix}/")))
            .collect()
    }
}

impl TreeNode {
    fn insert(&mut self, actor: ActorSnapshot) {
        let segments: Vec<String> = actor.path.split('/').map(str::to_owned).collect();
        let mut node = self;
        for (depth, segment) in segments.iter().enumerate() {
            let position = node.children.iter().position(|child| &child.name == segment);
            let index = position.unwrap_or_else(|| {
                node.children.push(TreeNode {
                    name: segment.clone(),
                    path: segments[..=depth].join("/"),
                    actor: None,
                    children: Vec::new(),
                });
                node.children.len() - 1
            });
            node = &mut node.children[index];
        }
        node.actor = Some(actor);
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a ActorSnapshot>) {
        if let Some(actor) = &self.actor {
            out.push(actor);
        }
        for child in &self.children {
            child.collect(out);
        }
    }

    fn rows(&self, depth: usize, rows: &mut Vec<[String; 13]>) {
        for child in &self.children {
            let label = format!("{}{}", "  ".repeat(depth), child.name);
            let row = match &child.actor {
                Some(a) => [
                    label,
                    a.status.as_str().to_owned(),
                    if a.capacity > 0 { format!("{}/{}", a.depth, a.capacity) } else { "-".into() },
                    a.handled.ok.to_string(),
                    a.handled.error.to_string(),
                    a.handled.panic.to_string(),
                    a.handled.timeout.to_string(),
                    a.handled.dead_lettered.to_string(),
                    a.handled.duplicate.to_string(),
                    duration(a.latency.p50_ns, a.latency.count),
                    duration(a.latency.p99_ns, a.latency.count),
                    duration(a.latency.max_ns, a.latency.count),
                    a.restarts.to_string(),
                ],
                None => {
                    let mut row: [String; 13] = Default::default();
                    row[0] = label;
                    row
                }
            };
            rows.push(row);
            child.rows(depth + 1, rows);
        }
    }
}

fn duration(nanos: u64, count: u64) -> String {
    if count == 0 {
        return "-".into();
    }
    match nanos {
        n if n < 10_000 => format!("{n}ns"),
        n if n < 10_000_000 => format!("{}µs", n / 1_000),
        n if n < 10_000_000_000 => format!("{}ms", n / 1_000_000),
        n => format!("{}s", n / 1_000_000_000),
    }
}

/// An aligned table, one row per node, indented by depth in the tree.
impl fmt::Display for MetricsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEADER: [&str; 13] = [
            "actor", "status", "depth", "ok", "error", "panic", "timeout", "dead", "dup", "p50", "p99", "max",
            "restarts",
        ];
        let mut rows = Vec::new();
        self.root.rows(0, &mut rows);
        let mut widths = HEADER.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[&str]| {
            for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
                let pad = width.saturating_sub(cell.chars().count());
                if i == 0 || i == 1 {
                    let _ = write!(out, "{cell}{}", " ".repeat(pad));
                } else {
                    let _ = write!(out, "{}{cell}", " ".repeat(pad));
                }
                out.push_str(if i + 1 < cells.len() { "  " } else { "\n" });
            }
        };
        line(&HEADER);
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            line(&cells);
        }
        let trimmed: Vec<&str> = out.lines().map(str::trim_end).collect();
        writeln!(f, "{}", trimmed.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(path: &str, ok: u64) -> ActorSnapshot {
        ActorSnapshot {
            path: path.into(),
            status: ActorStatus::Running,
            depth: 1,
            capacity: 8,
            handled: OutcomeCounts { ok, ..Default::default() },
            latency: Latency { count: ok, p50_ns: 1500, p99_ns: 25_000, max_ns: 30_000 },
            restarts: 0,
        }
    }

    #[test]
    fn paths_become_a_tree_and_an_aligned_table() {
        let snapshot = MetricsSnapshot::from_actors(vec![
            actor("mediator/place_order/0", 7),
            actor("mediator/place_order/1", 12345),
            actor("mediator/audit", 3),
        ]);
        let mediator = &snapshot.root.children[0];
        assert_eq!(mediator.name, "mediator");
        assert_eq!(mediator.children.len(), 2);
        assert_eq!(mediator.children[0].children.len(), 2);
        assert_eq!(snapshot.subtree("mediator/place_order").len(), 2);

        let table = snapshot.to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("actor"), "{table}");
        assert!(lines.iter().any(|l| l.starts_with("    1 ") && l.contains("12345")), "{table}");
        // Right-aligned numeric columns end at the same place on every row.
        let ok_end = lines[0].find("ok").expect("ok column") + 2;
        for row in lines.iter().filter(|l| l.contains("running")) {
            assert_eq!(&row[ok_end - 1..ok_end].trim().is_empty(), &false, "{table}");
        }
        let json = serde_json::to_string(&snapshot).expect("serializes");
        let back: MetricsSnapshot = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, snapshot);
    }
}
