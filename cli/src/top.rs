//! `hexeract top`: a live view of a running system, read from its metrics
//! endpoint's `/snapshot` (a JSON `SystemSnapshot`).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use clap::Args;
use hexeract_runtime::metrics::{ActorSnapshot, SystemSnapshot, TreeNode};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};

use crate::Failure;
use crate::output::Output;

/// Arguments of `hexeract top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The metrics endpoint of the running system
    /// (`Builder::metrics_endpoint`).
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "HOST:PORT")]
    connect: String,
    /// Print one snapshot as text and exit.
    #[arg(long)]
    once: bool,
}

const REFRESH: Duration = Duration::from_secs(1);

/// Reads `/snapshot` from `address`.
///
/// # Errors
/// When the endpoint cannot be reached, answers other than 200, or sends
/// something that is not a snapshot.
pub async fn fetch(address: &str) -> anyhow::Result<SystemSnapshot> {
    let connect = tokio::net::TcpStream::connect(address);
    let stream = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| anyhow!("connecting to {address} timed out"))?
        .with_context(|| format!("connecting to the metrics endpoint at {address}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get("/snapshot").header("host", address).body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await.context("requesting /snapshot")?;
    let status = response.status();
    let body = response.into_body().collect().await.context("reading /snapshot")?.to_bytes();
    driver.abort();
    if !status.is_success() {
        return Err(anyhow!("{address}/snapshot answered {status}"));
    }
    serde_json::from_slice(&body).context("the endpoint's answer is not a Hexeract snapshot")
}

pub async fn run(args: TopArgs, out: &Output) -> Result<(), Failure> {
    let snapshot = fetch(&args.connect).await?;
    if args.once {
        out.line(render_text(&snapshot));
        return Ok(());
    }
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| interactive(&args.connect, snapshot, &handle)).map_err(Failure::Operation)
}

/// One snapshot as text: the tree table, then the outbox and bus figures.
pub fn render_text(snapshot: &SystemSnapshot) -> String {
    let mut text = format!("hexeract top — up {:.0}s\n\n{}", snapshot.uptime_secs, snapshot.actors);
    text.push('\n');
    for line in panel_lines(snapshot) {
        let _ = writeln!(text, "{line}");
    }
    text
}

/// The outbox and bus lines shared by both views.
fn panel_lines(snapshot: &SystemSnapshot) -> Vec<String> {
    let mut lines = Vec::new();
    for outbox in &snapshot.outboxes {
        lines.push(match (&outbox.stats, &outbox.error) {
            (Some(stats), _) => format!(
                "outbox {}: pending {}  in flight {}  dead {}  oldest {}",
                outbox.table,
                stats.pending,
                stats.in_flight,
                stats.dead,
                stats.oldest_pending_age.map_or_else(|| "-".into(), |age| format!("{:.1}s", age.as_secs_f64()))
            ),
            (None, Some(error)) => format!("outbox {}: cannot count: {error}", outbox.table),
            (None, None) => format!("outbox {}: not sampled yet", outbox.table),
        });
        let lag = outbox.relay_lag;
        lines.push(if lag.count == 0 {
            "  relay lag (commit to confirm): no row relayed yet".to_owned()
        } else {
            format!(
                "  relay lag (commit to confirm): p50 {}  p99 {}  max {}  ({} rows)",
                seconds(lag.p50_ns),
                seconds(lag.p99_ns),
                seconds(lag.max_ns),
                lag.count
            )
        });
    }
    let actors = snapshot.actors.actors();
    if let Some(publisher) = actors.iter().find(|a| a.path == "bus/publisher") {
        let consumers: Vec<&&ActorSnapshot> = actors.iter().filter(|a| a.path.starts_with("bus/consumer/")).collect();
        lines.push(format!(
            "bus: published {}  confirm failures {}  redeliveries {}  dead letters {}",
            publisher.handled.ok,
            publisher.handled.error,
            consumers.iter().map(|a| a.handled.error).sum::<u64>(),
            consumers.iter().map(|a| a.handled.dead_lettered).sum::<u64>(),
        ));
    }
    if lines.is_empty() {
        lines.push("no outbox, no bus".into());
    }
    lines
}

/// A lag for people: milliseconds under ten seconds, then seconds.
fn seconds(nanos: u64) -> String {
    match nanos {
        n if n < 10_000_000_000 => format!("{}ms", n / 1_000_000),
        n => format!("{:.1}s", n as f64 / 1e9),
    }
}

/// A visible line of the tree.
struct TreeRow {
    path: String,
    depth: usize,
    label: String,
    has_children: bool,
    actor: Option<ActorSnapshot>,
}

fn visible_rows(root: &TreeNode, folded: &HashSet<String>) -> Vec<TreeRow> {
    fn walk(node: &TreeNode, depth: usize, folded: &HashSet<String>, rows: &mut Vec<TreeRow>) {
        for child in &node.children {
            rows.push(TreeRow {
                path: child.path.clone(),
                depth,
                label: child.name.clone(),
                has_children: !child.children.is_empty(),
                actor: child.actor.clone(),
            });
            if !folded.contains(&child.path) {
                walk(child, depth + 1, folded, rows);
            }
        }
    }
    let mut rows = Vec::new();
    walk(root, 0, folded, &mut rows);
    rows
}

fn bar(depth: usize, capacity: usize) -> String {
    if capacity == 0 {
        return "-".into();
    }
    const WIDTH: usize = 8;
    let filled = (depth * WIDTH).div_ceil(capacity).min(WIDTH);
    format!("{}{} {depth}/{capacity}", "█".repeat(filled), "·".repeat(WIDTH - filled))
}

fn latency(nanos: u64, count: u64) -> String {
    match (count, nanos) {
        (0, _) => "-".into(),
        (_, n) if n < 1_000_000 => format!("{}µs", n / 1_000),
        (_, n) if n < 10_000_000_000 => format!("{}ms", n / 1_000_000),
        (_, n) => format!("{}s", n / 1_000_000_000),
    }
}

fn interactive(address: &str, first: SystemSnapshot, handle: &tokio::runtime::Handle) -> anyhow::Result<()> {
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        let mut snapshot = first;
        let mut previous: Option<(SystemSnapshot, Instant)> = None;
        let mut taken = Instant::now();
        let mut folded: HashSet<String> = HashSet::new();
        let mut state = TableState::default().with_selected(Some(0));
        let mut problem: Option<String> = None;
        loop {
            let rows = visible_rows(&snapshot.actors.root, &folded);
            if let Some(selected) = state.selected() {
                state.select(Some(selected.min(rows.len().saturating_sub(1))));
            }
            terminal.draw(|frame| {
                let panel = panel_lines(&snapshot);
                let [title, tree, bottom, keys] = Layout::vertical([
                    Constraint::Length(1),
                    Constraint::Min(4),
                    Constraint::Length(panel.len() as u16 + 2),
                    Constraint::Length(1),
                ])
                .areas(frame.area());
                let status = problem.as_deref().map_or_else(String::new, |p| format!("  ! {p}"));
                frame.render_widget(
                    Paragraph::new(format!("hexeract top — {address} — up {:.0}s{status}", snapshot.uptime_secs))
                        .style(Style::default().add_modifier(Modifier::BOLD)),
                    title,
                );
                let elapsed = previous.as_ref().map(|(_, at)| taken.duration_since(*at).as_secs_f64());
                let table_rows = rows.iter().map(|row| {
                    let marker = match (row.has_children, folded.contains(&row.path)) {
                        (false, _) => " ",
                        (true, true) => "▸",
                        (true, false) => "▾",
                    };
                    let name = format!("{}{marker} {}", "  ".repeat(row.depth), row.label);
                    match &row.actor {
                        Some(actor) => {
                            let rate = previous
                                .as_ref()
                                .and_then(|(before, _)| before.actors.actor(&actor.path))
                                .zip(elapsed)
                                .map_or_else(
                                    || "-".to_owned(),
                                    |(before, secs)| {
                                        let done = actor.handled.total().saturating_sub(before.handled.total());
                                        format!("{:.0}", done as f64 / secs.max(0.001))
                                    },
                                );
                            let errors = actor.handled.error + actor.handled.panic + actor.handled.timeout;
                            Row::new(vec![
                                name,
                                bar(actor.depth, actor.capacity),
                                rate,
                                latency(actor.latency.p99_ns, actor.latency.count),
                                errors.to_string(),
                                actor.restarts.to_string(),
                            ])
                        }
                        None => Row::new(vec![name]),
                    }
                });
                let table = Table::new(
                    table_rows,
                    [
                        Constraint::Min(22),
                        Constraint::Length(20),
                        Constraint::Length(7),
                        Constraint::Length(7),
                        Constraint::Length(6),
                        Constraint::Length(4),
                    ],
                )
                .header(
                    Row::new(["actor", "mailbox", "msg/s", "p99", "errors", "rst"])
                        .style(Style::default().add_modifier(Modifier::UNDERLINED)),
                )
                .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
                .block(Block::default().borders(Borders::TOP).title("supervision tree"));
                frame.render_stateful_widget(table, tree, &mut state);
                frame.render_widget(
                    Paragraph::new(panel.into_iter().map(Line::from).collect::<Vec<_>>())
                        .block(Block::default().borders(Borders::TOP | Borders::BOTTOM).title("outbox and bus")),
                    bottom,
                );
                frame.render_widget(Paragraph::new("↑/↓ move  Enter fold/unfold  q quit"), keys);
            })?;

            let deadline = taken + REFRESH;
            while Instant::now() < deadline {
                if !event::poll(deadline.saturating_duration_since(Instant::now()))? {
                    break;
                }
                if let Event::Key(key) = event::read()? {
                    if key.kind != KeyEventKind::Press {
                        continue;
                    }
                    match key.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Down | KeyCode::Char('j') => state.select_next(),
                        KeyCode::Up | KeyCode::Char('k') => state.select_previous(),
                        KeyCode::Enter => {
                            if let Some(row) = state.selected().and_then(|i| rows.get(i))
                                && row.has_children
                                && !folded.remove(&row.path)
                            {
                                folded.insert(row.path.clone());
                            }
                        }
                        _ => {}
                    }
                    break;
                }
            }
            if Instant::now() >= deadline {
                match handle.block_on(fetch(address)) {
                    Ok(next) => {
                        previous = Some((std::mem::replace(&mut snapshot, next), taken));
                        taken = Instant::now();
                        problem = None;
                    }
                    Err(error) => {
                        problem = Some(format!("{error:#}"));
                        taken = Instant::now();
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}
