//! The `hexeract` binary against real databases: SQLite always, PostgreSQL
//! and MariaDB when `HEXERACT_PG_URL` / `HEXERACT_MYSQL_URL` are set (the
//! storage suite's URL-or-skip rule: skipped with a visible line locally,
//! failing under `CI=true`).

use std::process::Stdio;
use std::time::Duration;

use hexeract_runtime::{Message, MessageId, MessageKind};
use hexeract_storage::{Database, LeaseOwner, OutboxConfig, OutboxStore, TableName};
use serde::Serialize;

mod common;
#[path = "../../storage/tests/conformance/env.rs"]
mod env;

use common::{exits, hexeract, text};

#[derive(Serialize)]
struct OrderPlaced {
    order: u64,
}

impl Message for OrderPlaced {
    const NAME: &'static str = "orders.placed.v1";
    const KIND: MessageKind = MessageKind::Notification;
    type Output = ();
}

#[track_caller]
fn succeeds(args: &[&str]) -> String {
    let output = hexeract(args);
    assert_eq!(output.status.code(), Some(0), "hexeract {args:?}:\n{}", text(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn unique(tag: &str) -> String {
    format!("hx_cli_{tag}_{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// Saves `n` events through the dialect's outbox and makes them dead, as a
/// relay would after their last attempt.
async fn dead_rows(url: &str, table: &str, n: u64) -> Vec<MessageId> {
    let table = TableName::new(table).expect("valid");
    let config = OutboxConfig::default().table(table).notify(false);
    macro_rules! kill {
        ($pool:expr, $outbox:ty) => {{
            let pool = $pool;
            let outbox = <$outbox>::new(pool.clone(), config).expect("outbox");
            let mut tx = pool.begin().await.expect("begin");
            let events: Vec<OrderPlaced> = (0..n).map(|order| OrderPlaced { order }).collect();
            let ids = outbox.save_all(&mut tx, &events).await.expect("save");
            tx.commit().await.expect("commit");
            let owner = LeaseOwner::new();
            let claimed =
                outbox.claim(owner, std::num::NonZeroU32::MIN.saturating_add(99), LEASE).await.expect("claim");
            assert_eq!(claimed.len() as u64, n);
            for id in &ids {
                assert!(outbox.mark_dead(owner, *id, "broker rejected it").await.expect("mark_dead"));
            }
            pool.close().await;
            ids
        }};
    }
    if url.starts_with("sqlite:") {
        let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
        let pool = sqlx::SqlitePool::connect_with(hexeract_storage::sqlite::connect_options(path)).await.expect("open");
        kill!(pool, hexeract_storage::sqlite::SqliteOutbox)
    } else if url.starts_with("postgres") {
        kill!(sqlx::PgPool::connect(url).await.expect("connect"), hexeract_storage::postgres::PgOutbox)
    } else {
        kill!(sqlx::MySqlPool::connect(url).await.expect("connect"), hexeract_storage::mysql::MySqlOutbox)
    }
}

const LEASE: Duration = Duration::from_secs(30);

/// Every outbox and inbox command, in the order an operator would use them.
async fn operate(url: &str) {
    let (outbox, inbox) = (unique("out"), unique("in"));
    let tables = ["--url", url, "--table", &outbox, "--inbox-table", &inbox];
    let first = succeeds(&[&["outbox", "migrate"], &tables[..]].concat());
    assert!(
        first.contains(&format!("applied {outbox} v1")) && first.contains(&format!("applied {inbox} v1")),
        "{first}"
    );
    let again = succeeds(&[&["outbox", "migrate"], &tables[..]].concat());
    assert!(again.contains("up to date"), "migrating twice is a no-op: {again}");
    let check = succeeds(&[&["outbox", "check"], &tables[..]].concat());
    assert!(check.contains("schema is complete"), "{check}");
    let absent = unique("absent");
    let missing = exits(1, &["outbox", "check", "--url", url, "--table", &absent, "--no-inbox"]);
    assert!(missing.contains(&format!("table `{absent}` is missing")), "{missing}");

    let ids = dead_rows(url, &outbox, 2).await;
    let on = ["--url", url, "--table", &outbox];
    let stats = succeeds(&[&["outbox", "stats"], &on[..]].concat());
    assert!(stats.lines().any(|l| l.starts_with("dead") && l.ends_with(" 2")), "{stats}");
    let list = succeeds(&[&["outbox", "dead", "list"], &on[..]].concat());
    assert!(ids.iter().all(|id| list.contains(&id.0.to_string())) && list.contains("2 dead rows"), "{list}");
    let id = ids[0].0.to_string();
    let show = succeeds(&[&["outbox", "dead", "show", &id], &on[..]].concat());
    assert!(show.contains("broker rejected it") && show.contains(r#"{"order":0}"#), "{show}");
    let replayed = succeeds(&[&["outbox", "dead", "retry", &id], &on[..]].concat());
    assert!(replayed.contains("pending again"), "{replayed}");
    let not_dead = exits(1, &[&["outbox", "dead", "retry", &id], &on[..]].concat());
    assert!(not_dead.contains("no dead row"), "{not_dead}");
    let all = succeeds(&[&["outbox", "dead", "retry", "--all"], &on[..]].concat());
    assert!(all.contains("1 dead row is pending again"), "{all}");
    let stats = succeeds(&[&["outbox", "stats"], &on[..]].concat());
    assert!(stats.lines().any(|l| l.starts_with("pending") && l.ends_with(" 2")), "{stats}");

    // Replayed rows are pending, none dead (`tests/replay.rs` runs a relay
    // that delivers one).
    let db = Database::connect(url).await.expect("connect");
    let table = TableName::new(outbox.clone()).expect("valid");
    assert_eq!(db.outbox_stats(&table).await.expect("stats").dead, 0);
    db.close().await;

    let purge = succeeds(&[&["outbox", "dead", "purge", "--older-than", "1h"], &on[..]].concat());
    assert_eq!(purge.trim(), "0 dead rows older than 1h deleted");
    let inbox_on = ["--url", url, "--table", &inbox];
    let istats = succeeds(&[&["inbox", "stats"], &inbox_on[..]].concat());
    assert!(istats.lines().any(|l| l.starts_with("entries") && l.ends_with(" 0")), "{istats}");
    let ipurge = succeeds(&[&["inbox", "purge", "--older-than", "30d"], &inbox_on[..]].concat());
    // The age as it was given, the noun agreeing with the count.
    assert_eq!(ipurge.trim(), "0 inbox entries older than 30d deleted");
    drop_tables(url, &[&outbox, &inbox]).await;
}

async fn drop_tables(url: &str, tables: &[&str]) {
    let db = Database::connect(url).await.expect("connect");
    // Dropping is not an operator function; the tests' own SQL does it.
    drop(db);
    for table in tables {
        let sql = format!("DROP TABLE IF EXISTS {table}");
        if url.starts_with("postgres") {
            let pool = sqlx::PgPool::connect(url).await.expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("drop");
        } else if url.starts_with("mysql") || url.starts_with("mariadb") {
            let pool = sqlx::MySqlPool::connect(&url.replacen("mariadb:", "mysql:", 1)).await.expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("drop");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operates_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("ops.db").display());
    operate(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operates_postgres() {
    if let Some(url) = env::database_url("HEXERACT_PG_URL", "PostgreSQL") {
        operate(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operates_mariadb() {
    if let Some(url) = env::database_url("HEXERACT_MYSQL_URL", "MySQL/MariaDB") {
        operate(&url).await;
        // MariaDB's own scheme picks the same dialect.
        operate(&url.replacen("mysql:", "mariadb:", 1)).await;
    }
}

#[test]
fn usage_errors_exit_2() {
    let no_url = exits(2, &["outbox", "stats"]);
    assert!(no_url.contains("HEXERACT_DATABASE_URL"), "{no_url}");
    let scheme = exits(2, &["outbox", "stats", "--url", "redis://127.0.0.1"]);
    assert!(scheme.contains("`redis`"), "{scheme}");
    let duration = exits(2, &["inbox", "purge", "--older-than", "soon", "--url", "sqlite:x.db"]);
    assert!(duration.contains("soon"), "{duration}");
    exits(2, &["outbox", "dead", "retry", "--url", "sqlite:x.db"]);
    exits(2, &["outbox", "stats", "--url", "sqlite:x.db", "--table", "no;such"]);
    exits(2, &["outbox", "frobnicate"]);
    succeeds(&["--help"]);
}

/// Every command but `outbox migrate` on a SQLite file that does not exist
/// fails once, naming the file and the command that creates it, and
/// creates nothing.
#[test]
fn a_missing_sqlite_file_says_how_to_create_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent.db");
    let url = format!("sqlite:{}", path.display());
    for args in [
        vec!["outbox", "check"],
        vec!["outbox", "stats"],
        vec!["outbox", "dead", "list"],
        vec!["outbox", "dead", "retry", "--all"],
        vec!["outbox", "dead", "purge", "--older-than", "1d"],
        vec!["inbox", "stats"],
        vec!["inbox", "purge", "--older-than", "1d"],
    ] {
        let printed = exits(1, &[&args[..], &["--url", &url]].concat());
        let expected =
            format!("error: no SQLite database at {}; create it with `hexeract outbox migrate`", path.display());
        assert_eq!(printed.trim(), expected, "{args:?}");
        assert!(!path.exists(), "{args:?} created the file");
    }
    succeeds(&["outbox", "migrate", "--url", &url]);
    assert!(path.exists(), "migrate creates the file");
}

/// A server with nothing listening fails at once with the cause, not after
/// the connect timeout with the pool's "timed out"; the password is not
/// printed.
#[test]
fn an_unreachable_server_fails_at_once_with_its_cause() {
    for url in
        ["postgres://postgres:Hunter2-TopSecret@127.0.0.1:1/test", "mysql://root:Hunter2-TopSecret@127.0.0.1:1/test"]
    {
        let started = std::time::Instant::now();
        let printed = exits(1, &["outbox", "stats", "--url", url]);
        assert!(started.elapsed() < Duration::from_secs(5), "{url}: {:?}", started.elapsed());
        assert!(printed.contains("Connection refused") && !printed.contains("timed out"), "{printed}");
        assert!(printed.contains("127.0.0.1:1") && !printed.contains("TopSecret"), "{printed}");
        assert_eq!(printed.matches("Connection refused").count(), 1, "said once:\n{printed}");
    }
}

/// No command prints a URL's password: not on success, not in errors,
/// not percent-encoded.
#[test]
fn passwords_are_never_printed() {
    const SECRET: &str = "Hunter2-TopSecret";
    let mut urls = vec![
        format!("postgres://postgres:{SECRET}@127.0.0.1:1/test"),
        format!("mysql://root:{SECRET}@127.0.0.1:1/test"),
        format!("postgres://postgres:{SECRET}%40x@127.0.0.1:1/test"),
    ];
    if let Some(url) = env::database_url("HEXERACT_PG_URL", "PostgreSQL") {
        // Trust authentication accepts any password: the commands succeed.
        urls.push(url.replacen("postgres://postgres@", &format!("postgres://postgres:{SECRET}@"), 1));
    }
    if let Some(url) = env::database_url("HEXERACT_MYSQL_URL", "MySQL/MariaDB") {
        // A wrong password: the server's refusal is printed, the password is not.
        urls.push(url.replacen("mysql://root@", &format!("mysql://root:{SECRET}@"), 1));
    }
    // All at once: an unreachable server costs each command its connect
    // timeout.
    let mut running = Vec::new();
    for url in &urls {
        for args in [
            vec!["outbox", "migrate", "--url", url],
            vec!["outbox", "check", "--url", url],
            vec!["outbox", "stats", "--url", url],
            vec!["outbox", "dead", "list", "--url", url],
            vec!["outbox", "dead", "purge", "--older-than", "400d", "--url", url],
            vec!["inbox", "stats", "--url", url],
        ] {
            let child = common::command()
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run hexeract");
            running.push((format!("{args:?}"), child));
        }
        // Through the environment as well.
        let child = common::command()
            .args(["outbox", "stats"])
            .env("HEXERACT_DATABASE_URL", url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hexeract");
        running.push((format!("outbox stats with HEXERACT_DATABASE_URL={url}"), child));
    }
    for (what, child) in running {
        let output = child.wait_with_output().expect("wait");
        let printed = text(&output);
        assert!(!printed.contains("TopSecret"), "{what} printed the password:\n{printed}");
        assert!(!printed.trim().is_empty(), "{what} printed nothing");
    }
}
