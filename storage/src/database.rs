//! [`Database`]: one outbox database chosen by URL at run time, with every
//! operator function of the dialect behind it. The `hexeract` CLI is a thin
//! layer over this type; code can do everything the CLI does.

use std::fmt;
use std::time::Duration;

use hexeract_runtime::MessageId;
use hexeract_runtime::ports::outbox::{OutboxStats, OutboxStore, StoreError};

use crate::{AppliedMigration, OutboxConfig, StorageConfig, TableName};
#[cfg(doc)]
use crate::{DeadMessage, DeadRow, InboxStats, SchemaProblem};

/// The SQL dialect of a [`Database`], picked by the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// `sqlite:path` or `sqlite://path`.
    Sqlite,
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `mysql://` or `mariadb://` (MySQL 8, MariaDB 10.6+).
    MySql,
}

impl Dialect {
    /// The dialect a connection URL names by its scheme.
    ///
    /// # Errors
    /// [`StoreError::Config`] for any other scheme. The message names the
    /// scheme only, never the rest of the URL (it may hold a password).
    pub fn of_url(url: &str) -> Result<Dialect, StoreError> {
        let scheme = url.split_once(':').map(|(scheme, _)| scheme.to_ascii_lowercase()).unwrap_or_default();
        match scheme.as_str() {
            "sqlite" => Ok(Dialect::Sqlite),
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            "mysql" | "mariadb" => Ok(Dialect::MySql),
            _ => Err(StoreError::Config(format!(
                "unknown database URL scheme `{scheme}`: expected sqlite:, postgres:, mysql: or mariadb:"
            ))),
        }
    }

    /// The name used in messages: `SQLite`, `PostgreSQL`, `MySQL/MariaDB`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SQLite",
            Dialect::Postgres => "PostgreSQL",
            Dialect::MySql => "MySQL/MariaDB",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection pool to one outbox database, whatever its dialect, with
/// the operator functions: migrate and check the schema, outbox and inbox
/// statistics, inspect, replay and purge dead rows, purge the inbox.
///
/// Each function takes the table it works on, so one `Database` serves
/// every outbox and inbox table it holds.
///
/// # Examples
///
/// ```no_run
/// use hexeract_storage::{Database, StorageConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let db = Database::connect("sqlite:app.db").await?;
/// let config = StorageConfig::default();
/// for problem in db.check_schema(&config).await? {
///     println!("{problem}");
/// }
/// let stats = db.outbox_stats(config.outbox_table()).await?;
/// println!("{} pending, {} dead", stats.pending, stats.dead);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Database {
    pool: Pool,
}

#[derive(Clone)]
enum Pool {
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
}

/// How long connecting may take before the database counts as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `$body` with `$store` bound to the dialect's outbox over `$table`.
macro_rules! with_outbox {
    ($self:ident, $table:expr, |$store:ident| $body:expr) => {
        match &$self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => {
                let $store = crate::sqlite::SqliteOutbox::new(pool.clone(), outbox_config($table))?;
                $body
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => {
                let $store = crate::postgres::PgOutbox::new(pool.clone(), outbox_config($table))?;
                $body
            }
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => {
                let $store = crate::mysql::MySqlOutbox::new(pool.clone(), outbox_config($table))?;
                $body
            }
        }
    };
}

/// Runs `$body` with `$inbox` bound to the dialect's inbox over `$table`.
macro_rules! with_inbox {
    ($self:ident, $table:expr, |$inbox:ident| $body:expr) => {
        match &$self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => {
                let $inbox = crate::sqlite::SqliteInbox::new(pool.clone(), $table.clone());
                $body
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => {
                let $inbox = crate::postgres::PgInbox::new(pool.clone(), $table.clone());
                $body
            }
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => {
                let $inbox = crate::mysql::MySqlInbox::new(pool.clone(), $table.clone());
                $body
            }
        }
    };
}

fn outbox_config(table: &TableName) -> OutboxConfig {
    // Operator functions never wait for wake-ups: no listener.
    OutboxConfig::default().table(table.clone()).notify(false)
}

fn connect_error(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::Configuration(cause) => StoreError::Config(format!("invalid database URL: {cause}")),
        error => StoreError::Unavailable { operation: "connecting", source: Box::new(error) },
    }
}

/// One connection attempt to a server, within [`CONNECT_TIMEOUT`], before
/// the pool is built: a pool retries a refused connection until its
/// acquire timeout and then says only that it timed out, where this says
/// why at once (connection refused, login refused, no such database).
#[cfg(any(feature = "postgres", feature = "mysql"))]
async fn try_connect<C: sqlx::Connection>(options: &C::Options) -> Result<(), StoreError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, C::connect_with(options)).await {
        Ok(Ok(connection)) => {
            // The pool opens its own; this one only proved the server answers.
            let _ = connection.close().await;
            Ok(())
        }
        Ok(Err(error)) => Err(connect_error(error)),
        Err(_) => Err(StoreError::Unavailable {
            operation: "connecting",
            source: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()).into(),
        }),
    }
}

/// SQLite's "unable to open database file" for a file that is not there.
#[cfg(feature = "sqlite")]
fn is_missing_file(error: &sqlx::Error, file: &std::path::Path) -> bool {
    // SQLITE_CANTOPEN; also the answer for an unreadable file or directory,
    // hence the look at the path.
    let cannot_open = matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("14"));
    cannot_open && !file.exists()
}

impl Database {
    /// Connects to the database `url` names (see [`Dialect::of_url`]). A
    /// SQLite file must exist: use [`Database::connect_creating`] to create
    /// one.
    ///
    /// A server is tried once before the pool is built, so that a refused
    /// connection or login fails at once with its cause; a host that does
    /// not answer fails after ten seconds.
    ///
    /// # Errors
    /// [`StoreError::Config`] for an unknown scheme, a dialect this build
    /// was compiled without, or a malformed URL;
    /// [`StoreError::MissingDatabase`] for a SQLite file that does not
    /// exist; [`StoreError::Unavailable`] when the server refuses the
    /// connection or the login, or does not answer within ten seconds.
    pub async fn connect(url: &str) -> Result<Database, StoreError> {
        Self::open(url, false).await
    }

    /// Like [`Database::connect`], but creates a missing SQLite file (for
    /// migrating a new database). Servers are unaffected: their databases
    /// must exist.
    ///
    /// # Errors
    /// As [`Database::connect`].
    pub async fn connect_creating(url: &str) -> Result<Database, StoreError> {
        Self::open(url, true).await
    }

    #[cfg_attr(not(feature = "sqlite"), allow(unused_variables))]
    async fn open(url: &str, create: bool) -> Result<Database, StoreError> {
        let dialect = Dialect::of_url(url)?;
        let missing =
            |feature: &str| StoreError::Config(format!("this build has no {dialect} support (feature `{feature}`)"));
        let pool = match dialect {
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => {
                use std::str::FromStr as _;
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                    .map_err(connect_error)?
                    .create_if_missing(create)
                    .busy_timeout(Duration::from_secs(5));
                let file = options.get_filename().to_owned();
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(|error| {
                        if is_missing_file(&error, &file) {
                            StoreError::MissingDatabase { dialect: "SQLite", location: file.display().to_string() }
                        } else {
                            connect_error(error)
                        }
                    })?;
                Pool::Sqlite(pool)
            }
            #[cfg(feature = "postgres")]
            Dialect::Postgres => {
                use std::str::FromStr as _;
                let options = sqlx::postgres::PgConnectOptions::from_str(url).map_err(connect_error)?;
                try_connect::<sqlx::PgConnection>(&options).await?;
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(connect_error)?;
                Pool::Postgres(pool)
            }
            #[cfg(feature = "mysql")]
            Dialect::MySql => {
                // sqlx knows the protocol as `mysql:`; MariaDB speaks it.
                let url = match url.get(..8) {
                    Some(scheme) if scheme.eq_ignore_ascii_case("mariadb:") => format!("mysql:{}", &url[8..]),
                    _ => url.to_owned(),
                };
                use std::str::FromStr as _;
                let options = sqlx::mysql::MySqlConnectOptions::from_str(&url).map_err(connect_error)?;
                try_connect::<sqlx::MySqlConnection>(&options).await?;
                let pool = sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(connect_error)?;
                Pool::MySql(pool)
            }
            #[allow(unreachable_patterns)]
            Dialect::Sqlite => return Err(missing("sqlite")),
            #[allow(unreachable_patterns)]
            Dialect::Postgres => return Err(missing("postgres")),
            #[allow(unreachable_patterns)]
            Dialect::MySql => return Err(missing("mysql")),
        };
        Ok(Database { pool })
    }

    /// The dialect connected to.
    pub fn dialect(&self) -> Dialect {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => Dialect::Sqlite,
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => Dialect::Postgres,
            #[cfg(feature = "mysql")]
            Pool::MySql(_) => Dialect::MySql,
        }
    }

    /// Creates or upgrades the tables `config` names (the dialect's
    /// `migrate`). Returns the steps applied; none when up to date.
    ///
    /// # Errors
    /// The dialect's `migrate` errors.
    pub async fn migrate(&self, config: &StorageConfig) -> Result<Vec<AppliedMigration>, StoreError> {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => crate::sqlite::migrate(pool, config).await,
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => crate::postgres::migrate(pool, config).await,
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => crate::mysql::migrate(pool, config).await,
        }
    }

    /// Every [`SchemaProblem`] of the tables `config` names: missing
    /// tables, columns and indexes. Empty when the schema is complete.
    ///
    /// # Errors
    /// The catalog queries' errors.
    pub async fn check_schema(&self, config: &StorageConfig) -> Result<Vec<crate::SchemaProblem>, StoreError> {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => crate::sqlite::check_schema(pool, config).await,
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => crate::postgres::check_schema(pool, config).await,
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => crate::mysql::check_schema(pool, config).await,
        }
    }

    /// Pending, in-flight (leased), dead and kept-sent rows of the outbox
    /// `table`, and the age of its oldest pending row.
    ///
    /// # Errors
    /// [`StoreError::MissingTable`] before migrating; the query's error.
    pub async fn outbox_stats(&self, table: &TableName) -> Result<OutboxStats, StoreError> {
        with_outbox!(self, table, |store| store.stats().await)
    }

    /// The oldest `limit` [`DeadRow`]s of `table`.
    ///
    /// # Errors
    /// The query's error.
    pub async fn list_dead(&self, table: &TableName, limit: u32) -> Result<Vec<crate::DeadRow>, StoreError> {
        with_outbox!(self, table, |store| store.list_dead(limit).await)
    }

    /// The dead row `id` of `table` with its message ([`DeadMessage`]),
    /// or `None` when no dead row has that id.
    ///
    /// # Errors
    /// The query's error.
    pub async fn show_dead(&self, table: &TableName, id: MessageId) -> Result<Option<crate::DeadMessage>, StoreError> {
        with_outbox!(self, table, |store| store.show_dead(id).await)
    }

    /// Makes the dead row `id` pending again with a fresh attempt count, so
    /// that a running relay publishes it. Returns whether it was dead.
    ///
    /// # Errors
    /// The update's error.
    pub async fn retry_dead(&self, table: &TableName, id: MessageId) -> Result<bool, StoreError> {
        with_outbox!(self, table, |store| store.retry_dead(id).await)
    }

    /// Makes every dead row of `table` pending again. Returns how many.
    ///
    /// # Errors
    /// The update's error.
    pub async fn retry_all_dead(&self, table: &TableName) -> Result<u64, StoreError> {
        with_outbox!(self, table, |store| store.retry_all_dead().await)
    }

    /// Deletes the dead rows of `table` saved more than `older_than` ago.
    /// Returns how many.
    ///
    /// # Errors
    /// [`StoreError::Config`] for an age over a year; the delete's error.
    pub async fn purge_dead(&self, table: &TableName, older_than: Duration) -> Result<u64, StoreError> {
        with_outbox!(self, table, |store| store.purge_dead(older_than).await)
    }

    /// [`InboxStats`] of the inbox `table`.
    ///
    /// # Errors
    /// [`StoreError::MissingTable`] before migrating; the query's error.
    pub async fn inbox_stats(&self, table: &TableName) -> Result<crate::InboxStats, StoreError> {
        with_inbox!(self, table, |inbox| inbox.stats().await)
    }

    /// Deletes inbox entries of `table` received more than `older_than`
    /// ago. Returns how many.
    ///
    /// # Errors
    /// [`StoreError::Config`] for an age over a year; the delete's error.
    pub async fn purge_inbox(&self, table: &TableName, older_than: Duration) -> Result<u64, StoreError> {
        with_inbox!(self, table, |inbox| inbox.purge_older_than(older_than).await)
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => pool.close().await,
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => pool.close().await,
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => pool.close().await,
        }
    }
}

#[cfg(feature = "sqlite")]
impl From<sqlx::SqlitePool> for Database {
    fn from(pool: sqlx::SqlitePool) -> Self {
        Database { pool: Pool::Sqlite(pool) }
    }
}

#[cfg(feature = "postgres")]
impl From<sqlx::PgPool> for Database {
    fn from(pool: sqlx::PgPool) -> Self {
        Database { pool: Pool::Postgres(pool) }
    }
}

#[cfg(feature = "mysql")]
impl From<sqlx::MySqlPool> for Database {
    fn from(pool: sqlx::MySqlPool) -> Self {
        Database { pool: Pool::MySql(pool) }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("Database").field("dialect", &self.dialect()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_picks_the_dialect() {
        assert_eq!(Dialect::of_url("sqlite:app.db").ok(), Some(Dialect::Sqlite));
        assert_eq!(Dialect::of_url("postgresql://u:p@h/db").ok(), Some(Dialect::Postgres));
        assert_eq!(Dialect::of_url("MariaDB://root@h/db").ok(), Some(Dialect::MySql));
        let error = Dialect::of_url("redis://user:secret@h").expect_err("unknown").to_string();
        assert!(error.contains("`redis`") && !error.contains("secret"), "{error}");
    }
}
