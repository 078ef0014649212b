//! `hexeract outbox …` and `hexeract inbox …`: each command is one call on
//! `hexeract_storage::Database`.

use std::time::Duration;

use anyhow::Context as _;
use hexeract_runtime::MessageId;
use hexeract_storage::{Database, StorageConfig, StoreError, TableName};

use crate::output::{Output, counted};
use crate::secret::redacted;
use crate::{Connection, DeadCommand, Failure, InboxCommand, OutboxCommand, SchemaTables};

fn table(name: &str) -> Result<TableName, Failure> {
    TableName::new(name).map_err(|error| Failure::Usage(error.to_string()))
}

fn storage_config(tables: &SchemaTables) -> Result<StorageConfig, Failure> {
    let inbox = if tables.no_inbox { None } else { Some(table(&tables.inbox_table)?) };
    Ok(StorageConfig::default().outbox(table(&tables.table)?).inbox(inbox))
}

async fn connect(connection: &Connection, create: bool) -> Result<Database, Failure> {
    let url = connection.resolve()?;
    let connected = if create { Database::connect_creating(&url).await } else { Database::connect(&url).await };
    connected.map_err(|error| match error {
        // A URL that cannot work is a usage error; an unreachable server is not.
        StoreError::Config(message) => Failure::Usage(message),
        error @ StoreError::MissingDatabase { .. } => {
            Failure::Operation(anyhow::anyhow!("{error}; create it with `hexeract outbox migrate`"))
        }
        error => Failure::Operation(anyhow::Error::new(error).context(format!("connecting to {}", redacted(&url)))),
    })
}

fn age(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "-".to_owned(), |age| humantime::format_duration(round_ms(age)).to_string())
}

fn round_ms(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

fn timestamp(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| at.to_string())
}

pub async fn outbox(command: OutboxCommand, out: &Output) -> Result<(), Failure> {
    match command {
        OutboxCommand::Migrate { tables, connection } => {
            let config = storage_config(&tables)?;
            let db = connect(&connection, true).await?;
            let applied = db.migrate(&config).await.context("migrating")?;
            if applied.is_empty() {
                out.line(format!("{} schema is up to date", db.dialect()));
            }
            for step in applied {
                out.line(format!("applied {} v{}: {}", step.table, step.version, step.description));
            }
            db.close().await;
        }
        OutboxCommand::Check { tables, connection } => {
            let config = storage_config(&tables)?;
            let db = connect(&connection, false).await?;
            let problems = db.check_schema(&config).await.context("checking the schema")?;
            db.close().await;
            if !problems.is_empty() {
                for problem in &problems {
                    out.line(problem.to_string());
                }
                return Err(Failure::Operation(anyhow::anyhow!(
                    "the schema has {}; `hexeract outbox migrate` creates what is missing",
                    counted(problems.len() as u64, "problem", "problems")
                )));
            }
            out.line(format!("{} schema is complete", db.dialect()));
        }
        OutboxCommand::Stats { table: name, connection } => {
            let table = table(&name.table)?;
            let db = connect(&connection, false).await?;
            let stats = db.outbox_stats(&table).await.context("reading outbox stats")?;
            db.close().await;
            out.pairs(&[
                ("table", table.to_string()),
                ("pending", stats.pending.to_string()),
                ("in flight", stats.in_flight.to_string()),
                ("dead", stats.dead.to_string()),
                ("sent (kept)", stats.sent.to_string()),
                ("oldest pending", age(stats.oldest_pending_age)),
            ]);
        }
        OutboxCommand::Dead { command } => dead(command, out).await?,
    }
    Ok(())
}

async fn dead(command: DeadCommand, out: &Output) -> Result<(), Failure> {
    match command {
        DeadCommand::List { limit, table: name, connection } => {
            let table = table(&name.table)?;
            let db = connect(&connection, false).await?;
            let rows = db.list_dead(&table, limit).await.context("listing dead rows")?;
            db.close().await;
            out.line(format!("{:<36}  {:<24}  {:>8}  {:<25}  last error", "id", "name", "attempts", "created"));
            for row in &rows {
                let error = row.last_error.as_deref().unwrap_or("-").replace('\n', " ");
                let error: String =
                    if error.chars().count() > 60 { error.chars().take(59).chain(['…']).collect() } else { error };
                out.line(format!(
                    "{:<36}  {:<24}  {:>8}  {:<25}  {error}",
                    row.id.0.to_string(),
                    row.name,
                    row.attempts,
                    timestamp(row.created_at)
                ));
            }
            out.line(counted(rows.len() as u64, "dead row", "dead rows"));
        }
        DeadCommand::Show { id, table: name, connection } => {
            let table = table(&name.table)?;
            let db = connect(&connection, false).await?;
            let shown = db.show_dead(&table, MessageId(id)).await.context("reading the dead row")?;
            db.close().await;
            let Some(dead) = shown else {
                return Err(Failure::Operation(anyhow::anyhow!("no dead row `{id}` in table `{table}`")));
            };
            out.pairs(&[
                ("id", dead.row.id.0.to_string()),
                ("name", dead.row.name.clone()),
                ("attempts", dead.row.attempts.to_string()),
                ("created", timestamp(dead.row.created_at)),
                ("correlation id", dead.correlation_id.0.to_string()),
                ("causation id", dead.causation_id.map_or_else(|| "-".into(), |id| id.0.to_string())),
                ("ordering key", dead.row.ordering_key.clone().unwrap_or_else(|| "-".into())),
                ("content type", dead.content_type.clone()),
                ("headers", dead.headers.clone()),
                ("last error", dead.row.last_error.clone().unwrap_or_else(|| "-".into())),
            ]);
            out.line("payload:");
            match std::str::from_utf8(&dead.payload) {
                Ok(text) => out.line(text),
                Err(_) => out.line(hex(&dead.payload)),
            }
        }
        DeadCommand::Retry { id, all, table: name, connection } => {
            let table = table(&name.table)?;
            let db = connect(&connection, false).await?;
            let result = match (id, all) {
                (_, true) => {
                    let n = db.retry_all_dead(&table).await.context("replaying dead rows")?;
                    let verb = if n == 1 { "is" } else { "are" };
                    out.line(format!("{} {verb} pending again", counted(n, "dead row", "dead rows")));
                    Ok(())
                }
                (Some(id), false) => {
                    if db.retry_dead(&table, MessageId(id)).await.context("replaying the dead row")? {
                        out.line(format!("row {id} is pending again"));
                        Ok(())
                    } else {
                        Err(Failure::Operation(anyhow::anyhow!("no dead row `{id}` in table `{table}`")))
                    }
                }
                (None, false) => Err(Failure::Usage("give a row id or --all".into())),
            };
            db.close().await;
            result?;
        }
        DeadCommand::Purge { older_than, table: name, connection } => {
            let table = table(&name.table)?;
            let db = connect(&connection, false).await?;
            let n = db.purge_dead(&table, older_than.duration()).await.context("purging dead rows")?;
            db.close().await;
            out.line(format!("{} older than {older_than} deleted", counted(n, "dead row", "dead rows")));
        }
    }
    Ok(())
}

pub async fn inbox(command: InboxCommand, out: &Output) -> Result<(), Failure> {
    match command {
        InboxCommand::Stats { table: name, connection } => {
            let table = table(&name)?;
            let db = connect(&connection, false).await?;
            let stats = db.inbox_stats(&table).await.context("reading inbox stats")?;
            db.close().await;
            out.pairs(&[
                ("table", table.to_string()),
                ("entries", stats.entries.to_string()),
                ("consumers", stats.consumers.to_string()),
                ("duplicates", stats.duplicates.to_string()),
                ("oldest entry", age(stats.oldest_age)),
            ]);
        }
        InboxCommand::Purge { older_than, table: name, connection } => {
            let table = table(&name)?;
            let db = connect(&connection, false).await?;
            let n = db.purge_inbox(&table, older_than.duration()).await.context("purging the inbox")?;
            db.close().await;
            out.line(format!("{} older than {older_than} deleted", counted(n, "inbox entry", "inbox entries")));
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
