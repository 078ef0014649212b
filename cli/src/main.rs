//! `hexeract`: operate Hexeract's outbox and inbox tables and its RabbitMQ
//! bus, and watch a running system.
//!
//! Every command is a thin layer over a library function
//! (`hexeract_storage::Database` for the tables,
//! `hexeract_transport_rabbitmq::RabbitTransport` for the bus), so code can
//! do whatever the CLI does.
//! Exit codes: 0 success, 1 the operation failed, 2 usage error (bad
//! arguments, no URL, an unknown URL scheme). A password given in a URL is
//! never printed, in errors either. See `docs/reference/cli.md`.

mod bus;
mod output;
mod secret;
mod storage;
mod top;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::secret::Secrets;

/// Operate Hexeract's outbox and inbox tables and its RabbitMQ bus; watch a
/// running system.
#[derive(Debug, Parser)]
#[command(name = "hexeract", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The transactional outbox: schema, statistics, dead rows.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// The inbox: statistics and retention.
    Inbox {
        #[command(subcommand)]
        command: InboxCommand,
    },
    /// The RabbitMQ bus: declare a topology file, peek at and purge queues.
    Bus {
        #[command(subcommand)]
        command: bus::BusCommand,
    },
    /// A live view of a running system's supervision tree, read from its
    /// metrics endpoint.
    Top(top::TopArgs),
}

/// Where the database is. The URL scheme picks the dialect: `sqlite:`,
/// `postgres:`/`postgresql:`, `mysql:`/`mariadb:`.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Database URL [env: HEXERACT_DATABASE_URL, then DATABASE_URL].
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,
}

impl Connection {
    /// The URL from `--url`, `HEXERACT_DATABASE_URL` or `DATABASE_URL`.
    fn resolve(&self) -> Result<String, Failure> {
        let from_env = |name: &str| std::env::var(name).ok().filter(|url| !url.trim().is_empty());
        self.url.clone().or_else(|| from_env("HEXERACT_DATABASE_URL")).or_else(|| from_env("DATABASE_URL")).ok_or_else(
            || Failure::Usage("no database URL: pass --url or set HEXERACT_DATABASE_URL or DATABASE_URL".into()),
        )
    }
}

/// The tables a schema command works on.
#[derive(Debug, Clone, Args)]
pub struct SchemaTables {
    /// The outbox table.
    #[arg(long, default_value = "hexeract_outbox", value_name = "NAME")]
    table: String,
    /// The inbox table.
    #[arg(long, default_value = "hexeract_inbox", value_name = "NAME", conflicts_with = "no_inbox")]
    inbox_table: String,
    /// Leave the inbox table out.
    #[arg(long)]
    no_inbox: bool,
}

/// The outbox table a command works on.
#[derive(Debug, Clone, Args)]
pub struct OutboxTable {
    /// The outbox table.
    #[arg(long, default_value = "hexeract_outbox", value_name = "NAME")]
    table: String,
}

#[derive(Debug, Subcommand)]
enum OutboxCommand {
    /// Create or upgrade the outbox and inbox tables (idempotent).
    Migrate {
        #[command(flatten)]
        tables: SchemaTables,
        #[command(flatten)]
        connection: Connection,
    },
    /// Verify the schema: every missing table, column and index, named.
    /// Exits 1 when something is missing.
    Check {
        #[command(flatten)]
        tables: SchemaTables,
        #[command(flatten)]
        connection: Connection,
    },
    /// Pending, in-flight, dead and kept rows, and the oldest pending age.
    Stats {
        #[command(flatten)]
        table: OutboxTable,
        #[command(flatten)]
        connection: Connection,
    },
    /// Rows that exhausted their attempts: list, inspect, replay, purge.
    Dead {
        #[command(subcommand)]
        command: DeadCommand,
    },
}

#[derive(Debug, Subcommand)]
enum DeadCommand {
    /// The oldest dead rows with their last error.
    List {
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        table: OutboxTable,
        #[command(flatten)]
        connection: Connection,
    },
    /// One dead row: headers, payload, last error.
    Show {
        /// The row (message) id.
        id: uuid::Uuid,
        #[command(flatten)]
        table: OutboxTable,
        #[command(flatten)]
        connection: Connection,
    },
    /// Make a dead row (or every one, with --all) pending again, with a
    /// fresh attempt count; a running relay then publishes it.
    Retry {
        /// The row (message) id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<uuid::Uuid>,
        /// Every dead row.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        table: OutboxTable,
        #[command(flatten)]
        connection: Connection,
    },
    /// Delete dead rows saved more than the given time ago.
    Purge {
        /// An age such as `30d`, `12h`, `90m`.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        older_than: Age,
        #[command(flatten)]
        table: OutboxTable,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Debug, Subcommand)]
enum InboxCommand {
    /// Entries, consumers, duplicates skipped, the oldest entry's age.
    Stats {
        /// The inbox table.
        #[arg(long, default_value = "hexeract_inbox", value_name = "NAME")]
        table: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Delete entries received more than the given time ago.
    Purge {
        /// An age such as `30d`, `12h`, `90m`.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        older_than: Age,
        /// The inbox table.
        #[arg(long, default_value = "hexeract_inbox", value_name = "NAME")]
        table: String,
        #[command(flatten)]
        connection: Connection,
    },
}

/// An age given on the command line, with the text it was written as
/// (`30d`), which is how messages repeat it.
#[derive(Debug, Clone)]
pub struct Age {
    text: String,
    duration: Duration,
}

impl Age {
    /// How long it is.
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

impl std::fmt::Display for Age {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_duration(text: &str) -> Result<Age, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|error| format!("`{text}` is not a duration such as 30d, 12h or 90m: {error}"))?;
    Ok(Age { text: text.trim().to_owned(), duration })
}

/// Why a command did not succeed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The arguments cannot work (exit 2).
    Usage(String),
    /// The operation was tried and failed (exit 1).
    Operation(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Operation(error)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version exit 0, usage errors 2.
        Err(error) => error.exit(),
    };
    let mut secrets = Secrets::default();
    for arg in std::env::args().chain(
        ["HEXERACT_DATABASE_URL", "DATABASE_URL", "HEXERACT_AMQP_URL"].iter().filter_map(|v| std::env::var(v).ok()),
    ) {
        secrets.learn(&arg);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli.command, &secrets));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {}", secrets.scrub(&message));
            ExitCode::from(2)
        }
        Err(Failure::Operation(error)) => {
            eprintln!("error: {}", secrets.scrub(&causes(&error)));
            ExitCode::from(1)
        }
    }
}

/// `error` and its causes joined by `: `, each said once: sqlx repeats its
/// cause's text in its own (`error communicating with database: Connection
/// refused`, then `Connection refused`).
fn causes(error: &anyhow::Error) -> String {
    let mut said: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !said.last().is_some_and(|last| last.contains(&text)) {
            said.push(text);
        }
    }
    said.join(": ")
}

async fn run(command: Command, secrets: &Secrets) -> Result<(), Failure> {
    let out = output::Output::new(secrets.clone());
    match command {
        Command::Outbox { command } => storage::outbox(command, &out).await,
        Command::Inbox { command } => storage::inbox(command, &out).await,
        Command::Bus { command } => bus::bus(command, &out).await,
        Command::Top(args) => top::run(args, &out).await,
    }
}
