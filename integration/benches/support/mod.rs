//! What the benchmarks share: knobs, statistics, and the PostgreSQL outbox
//! plumbing of the raw loops they are measured against.

#![allow(dead_code)] // each bench binary uses its own part

use std::future::Future;
use std::io::Write as _;
use std::process::ExitCode;

use hexeract::MessageId;
use hexeract::outbox::RelayConfig;
use hexeract::storage::TableName;
use hexeract::storage::sqlx::postgres::{PgPool, PgRow};
use hexeract::storage::sqlx::types::Uuid;
use hexeract::storage::sqlx::types::time::OffsetDateTime;
use hexeract::storage::sqlx::{self, AssertSqlSafe, Row};

pub type Failure = String;

pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> Result<T, Failure>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map_err(|e| format!("{name} `{v}`: {e}")),
        Err(_) => Ok(default),
    }
}

/// `BENCH_ONLY`: the parts to run (a comma list); empty means all.
pub fn only() -> Vec<String> {
    std::env::var("BENCH_ONLY")
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default()
}

/// Runs `bench` on a two-worker tokio runtime: exit code 0 when it
/// returns, 1 with the correctness failure it returned otherwise.
pub fn run(bench: impl Future<Output = Result<(), Failure>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot build the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("\nCORRECTNESS FAILURE: {failure}");
            ExitCode::FAILURE
        }
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// The `p`-th percentile (0..=100), nearest rank.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * values.len() as f64).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

pub fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

pub fn flush() {
    let _ = std::io::stdout().flush();
}

pub fn unique(tag: &str) -> Result<TableName, Failure> {
    let id = MessageId::new().0.simple().to_string();
    TableName::new(format!("hxb_{tag}_{}", &id[20..])).map_err(|e| e.to_string())
}

pub async fn exec(pool: &PgPool, sql: String) -> Result<(), Failure> {
    sqlx::query(AssertSqlSafe(sql.clone())).execute(pool).await.map_err(|e| format!("`{sql}`: {e}"))?;
    Ok(())
}

pub async fn count(pool: &PgPool, table: &TableName) -> Result<i64, Failure> {
    sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {}", table.ansi_quoted())))
        .fetch_one(pool)
        .await
        .map_err(|e| format!("count: {e}"))
}

pub async fn drop_table(pool: &PgPool, table: &TableName) -> Result<(), Failure> {
    exec(pool, format!("DROP TABLE IF EXISTS {}", table.ansi_quoted())).await?;
    sqlx::query("DELETE FROM hexeract_migrations WHERE table_name = $1")
        .bind(table.as_str())
        .execute(pool)
        .await
        .map_err(|e| format!("forget migrations: {e}"))?;
    Ok(())
}

/// Bulk-inserts `rows` pending rows that the relay can read (a JSON payload
/// of a `Placed` event named `name`, no headers), then vacuums and analyzes.
pub async fn fill(pool: &PgPool, table: &TableName, name: &str, rows: u32) -> Result<(), Failure> {
    let t = table.ansi_quoted();
    exec(pool, format!("TRUNCATE {t}")).await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {t} (id, name, payload, content_type, headers, correlation_id) \
         SELECT u, $2, convert_to('{{\"order\":' || g || ',\"sku\":\"SKU-0042\",\"qty\":3}}', 'UTF8'), \
           'application/json', '{{}}', u \
         FROM (SELECT g, gen_random_uuid() AS u FROM generate_series(1, $1) AS g) AS s"
    )))
    .bind(i64::from(rows))
    .bind(name)
    .execute(pool)
    .await
    .map_err(|e| format!("fill: {e}"))?;
    exec(pool, format!("VACUUM ANALYZE {t}")).await
}

/// One claimed row, decoded as the store decodes it.
#[allow(dead_code)]
pub struct Claimed {
    pub seq: i64,
    pub id: Uuid,
    pub name: String,
    pub payload: Vec<u8>,
    pub content_type: String,
    pub headers: String,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub attempts: i32,
    pub ordering_key: Option<String>,
}

fn claimed(row: &PgRow) -> Result<Claimed, sqlx::Error> {
    Ok(Claimed {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        payload: row.try_get("payload")?,
        content_type: row.try_get("content_type")?,
        headers: row.try_get("headers")?,
        correlation_id: row.try_get("correlation_id")?,
        causation_id: row.try_get("causation_id")?,
        created_at: row.try_get("created_at")?,
        attempts: row.try_get("attempts")?,
        ordering_key: row.try_get("ordering_key")?,
    })
}

/// One statement that claims up to `$3` due rows of table `t` (quoted) for
/// lease owner `$1` for `$2` microseconds, and commits on its own: what the
/// relay's claim does, written by hand.
fn raw_claim_sql(t: &str) -> String {
    format!(
        "WITH due AS ( \
           SELECT o.id FROM {t} AS o \
           WHERE o.status = 'pending' AND o.next_attempt_at <= now() \
           ORDER BY o.seq LIMIT $3 \
           FOR UPDATE OF o SKIP LOCKED) \
         UPDATE {t} AS u SET attempts = u.attempts + 1, lease_owner = $1, \
           lease_expires_at = now() + ($2::float8 * interval '1 microsecond'), \
           next_attempt_at = now() + ($2::float8 * interval '1 microsecond') \
         FROM due WHERE u.id = due.id \
         RETURNING u.seq, u.id, u.name, u.payload, u.content_type, u.headers, u.correlation_id, u.causation_id, \
           u.created_at, u.attempts, u.ordering_key"
    )
}

/// The raw loop's two statements on one outbox table, written by hand:
/// claim a batch with a lease (committed on its own), and delete what was
/// sent (the relay's default retention), fenced on the lease owner.
pub struct RawOutbox<'a> {
    pool: &'a PgPool,
    claim: String,
    mark_sent: String,
    owner: Uuid,
    lease_micros: f64,
    batch: i64,
}

impl<'a> RawOutbox<'a> {
    /// Batches of `batch` rows, with the relay's default lease.
    pub fn new(pool: &'a PgPool, table: &TableName, batch: u32) -> Self {
        let t = table.ansi_quoted();
        RawOutbox {
            pool,
            claim: raw_claim_sql(&t),
            mark_sent: format!("DELETE FROM {t} WHERE id = ANY($2) AND lease_owner = $1 AND status = 'pending'"),
            owner: Uuid::new_v4(),
            lease_micros: RelayConfig::default().lease().as_micros() as f64,
            batch: i64::from(batch),
        }
    }

    /// The next batch in commit order, decoded; empty when nothing is due.
    pub async fn claim(&self) -> Result<Vec<Claimed>, Failure> {
        let rows = sqlx::query(AssertSqlSafe(self.claim.clone()))
            .bind(self.owner)
            .bind(self.lease_micros)
            .bind(self.batch)
            .fetch_all(self.pool)
            .await
            .map_err(|e| format!("raw claim: {e}"))?;
        let mut claimed = rows.iter().map(claimed).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
        claimed.sort_by_key(|row| row.seq);
        Ok(claimed)
    }

    /// Deletes the rows `ids`, checking that every one was still held.
    pub async fn mark_sent(&self, ids: &[Uuid]) -> Result<(), Failure> {
        let done = sqlx::query(AssertSqlSafe(self.mark_sent.clone()))
            .bind(self.owner)
            .bind(ids)
            .execute(self.pool)
            .await
            .map_err(|e| format!("raw mark sent: {e}"))?;
        if done.rows_affected() != ids.len() as u64 {
            return Err(format!("raw: {} of {} rows marked", done.rows_affected(), ids.len()));
        }
        Ok(())
    }
}
