//! `hexeract bus …` against the real RabbitMQ in `HEXERACT_AMQP_URL`
//! (skipped with a visible line when unset, failing under `CI=true`).
//! Every queue and exchange has a name of its own and is deleted after.

use std::time::Duration;

use hexeract_runtime::ports::transport::{Destination, Outgoing, QueueSpec, Topology, Transport as _, TransportError};
use hexeract_runtime::ports::wire::WireMessage;
use hexeract_transport_rabbitmq::RabbitTransport;

mod common;
#[path = "../../storage/tests/conformance/env.rs"]
mod env;

use common::{exits, hexeract, text};

fn amqp_url() -> Option<String> {
    env::database_url("HEXERACT_AMQP_URL", "RabbitMQ")
}

fn unique(tag: &str) -> String {
    format!("hx_cli_bus.{tag}.{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

async fn transport(url: &str) -> RabbitTransport {
    RabbitTransport::connect_url(url).await.expect("connect to RabbitMQ")
}

fn topology_file(dir: &tempfile::TempDir, name: &str, toml: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, toml).expect("write the topology file");
    path.display().to_string()
}

/// Declaring twice succeeds twice; a different definition of the same queue
/// fails, naming the queue and the property; a dry run creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_is_idempotent_and_a_conflict_names_the_property() {
    let Some(url) = amqp_url() else { return };
    let (exchange, queue) = (unique("events"), unique("billing"));
    let dir = tempfile::tempdir().expect("temp dir");
    let topology = |extra: &str| {
        format!(
            "[[exchanges]]\nname = \"{exchange}\"\nkind = \"topic\"\n\n\
             [[queues]]\nname = \"{queue}\"\nmessage_ttl_ms = 60000\n{extra}\n\
             [[bindings]]\nexchange = \"{exchange}\"\nqueue = \"{queue}\"\nrouting_key = \"orders.#\"\n"
        )
    };
    let file = topology_file(&dir, "topology.toml", &topology(""));
    let rabbit = transport(&url).await;

    let dry = exits(0, &["bus", "declare", "--file", &file, "--dry-run", "--url", "amqp://nobody@127.0.0.1:1/%2f"]);
    assert!(dry.contains(&exchange) && dry.contains("topic") && dry.contains("message_ttl_ms=60000"), "{dry}");
    assert!(dry.contains(&format!("{exchange} -> {queue}")) && dry.contains("orders.#"), "{dry}");
    assert!(
        matches!(rabbit.queue_depth(&queue).await, Err(TransportError::NotFound(_))),
        "a dry run declared the queue"
    );

    let first = exits(0, &["bus", "declare", "--file", &file, "--url", &url]);
    assert!(first.contains("declared 1 exchange, 1 queue, 1 binding"), "{first}");
    let again = exits(0, &["bus", "declare", "--file", &file, "--url", &url]);
    assert!(again.contains("declared 1 exchange,"), "declaring twice is a no-op: {again}");
    assert_eq!(rabbit.queue_depth(&queue).await.expect("the queue exists"), 0);

    let ttl = topology_file(&dir, "ttl.toml", &topology("").replace("60000", "30000"));
    let conflict = exits(1, &["bus", "declare", "--file", &ttl, "--url", &url]);
    assert!(conflict.contains(&format!("queue `{queue}`")) && conflict.contains("message_ttl_ms"), "{conflict}");
    let quorum = topology_file(&dir, "quorum.toml", &topology("kind = \"quorum\"\n"));
    let conflict = exits(1, &["bus", "declare", "--file", &quorum, "--url", &url]);
    assert!(conflict.contains(&format!("queue `{queue}`")) && conflict.contains("kind"), "{conflict}");
    // The refused declarations changed nothing.
    exits(0, &["bus", "declare", "--file", &file, "--url", &url]);

    rabbit.delete_queue(&queue).await.expect("delete the queue");
    rabbit.delete_exchange(&exchange).await.expect("delete the exchange");
    rabbit.close().await;
}

/// A queue holding five messages, the first with a body over the 512 bytes
/// `peek` shows.
async fn queue_with_five(rabbit: &RabbitTransport) -> (String, Vec<String>) {
    let queue = unique("peeked");
    let topology = Topology { queues: vec![QueueSpec::durable(queue.clone())], ..Topology::default() };
    rabbit.declare(&topology).await.expect("declare");
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = uuid::Uuid::new_v4().to_string();
        let mut message = WireMessage {
            message_id: Some(id.clone()),
            correlation_id: Some(format!("corr-{n}")),
            kind: Some("cli.peeked.v1".into()),
            content_type: Some("application/json".into()),
            timestamp: Some(1_700_000_000),
            body: if n == 0 { format!("{{\"pad\":\"{}\"}}", "x".repeat(700)) } else { format!("{{\"n\":{n}}}") }
                .into_bytes(),
            ..WireMessage::default()
        };
        message.headers.insert("x-attempt".into(), "1".into());
        let outgoing = Outgoing { destination: Destination::Queue(queue.clone()), message, delay: None };
        rabbit.publish(outgoing).await.expect("publish");
        ids.push(id);
    }
    (queue, ids)
}

async fn depth_settles_at(rabbit: &RabbitTransport, queue: &str, expected: u32) -> u32 {
    // Messages a closed channel held go back to the queue as the close
    // completes; allow the broker a moment all the same.
    let mut depth = rabbit.queue_depth(queue).await.expect("depth");
    for _ in 0..50 {
        if depth == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        depth = rabbit.queue_depth(queue).await.expect("depth");
    }
    depth
}

/// `peek --count 3` shows the first three messages, each once, with their
/// properties, and leaves all five in the queue; `purge` needs `--yes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peek_leaves_messages_and_purge_needs_yes() {
    let Some(url) = amqp_url() else { return };
    let rabbit = transport(&url).await;
    let (queue, ids) = queue_with_five(&rabbit).await;

    let peeked = exits(0, &["bus", "peek", &queue, "--count", "3", "--url", &url]);
    let shown: Vec<&String> = ids.iter().filter(|id| peeked.contains(id.as_str())).collect();
    assert_eq!(shown, ids.iter().take(3).collect::<Vec<_>>(), "the first three, each once:\n{peeked}");
    for id in &ids[..3] {
        assert_eq!(peeked.matches(id.as_str()).count(), 1, "{id} shown once:\n{peeked}");
    }
    for expected in [
        "cli.peeked.v1",
        "corr-0",
        "application/json",
        "2023-11-14T22:13:20Z",
        "2 (persistent)",
        "x-attempt",
        "body (710 bytes, the first 512 shown)",
        "3 messages shown",
    ] {
        assert!(peeked.contains(expected), "`{expected}` missing:\n{peeked}");
    }
    assert_eq!(depth_settles_at(&rabbit, &queue, 5).await, 5, "peek consumed messages");
    // Peeking again shows the same head: nothing was consumed.
    let again = exits(0, &["bus", "peek", &queue, "--count", "1", "--url", &url]);
    assert!(again.contains(&ids[0]) && again.contains("1 message shown"), "{again}");

    let refused = exits(2, &["bus", "purge", &queue, "--url", &url]);
    assert!(refused.contains("--yes"), "{refused}");
    assert_eq!(depth_settles_at(&rabbit, &queue, 5).await, 5, "purge without --yes deleted messages");
    let purged = exits(0, &["bus", "purge", &queue, "--yes", "--url", &url]);
    assert!(purged.contains("5 messages purged"), "{purged}");
    assert_eq!(rabbit.queue_depth(&queue).await.expect("depth"), 0);

    let missing = unique("missing");
    for args in [vec!["bus", "peek", &missing, "--url", &url], vec!["bus", "purge", &missing, "--yes", "--url", &url]] {
        let printed = exits(1, &args);
        assert!(printed.contains(&format!("queue `{missing}` does not exist")), "{printed}");
    }
    rabbit.delete_queue(&queue).await.expect("delete the queue");
    rabbit.close().await;
}

/// No `bus` command prints the URL's password: on success, on a refused
/// login, from `--url` or from `HEXERACT_AMQP_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_commands_never_print_the_password() {
    let Some(url) = amqp_url() else { return };
    let rabbit = transport(&url).await;
    let (queue, _) = queue_with_five(&rabbit).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = topology_file(&dir, "topology.toml", &format!("[[queues]]\nname = \"{queue}\"\n"));
    let host = url.rsplit_once('@').map_or("127.0.0.1:5672/%2f", |(_, host)| host);
    // The local broker's guest login, and a password it refuses.
    let guest = format!("amqp://guest:guest@{host}");
    let wrong = format!("amqp://guest:Hunter2-TopSecret@{host}");
    for (with, secret) in [(&guest, ":guest@"), (&wrong, "TopSecret")] {
        for args in [
            vec!["bus", "declare", "--file", &file, "--url", with],
            vec!["bus", "declare", "--file", &file, "--dry-run", "--url", with],
            vec!["bus", "peek", &queue, "--count", "2", "--url", with],
            vec!["bus", "purge", &queue, "--url", with],
        ] {
            let printed = text(&hexeract(&args));
            assert!(!printed.contains(secret), "{args:?} printed the password:\n{printed}");
            assert!(!printed.trim().is_empty(), "{args:?} printed nothing");
        }
        let output = common::command()
            .args(["bus", "peek", &queue])
            .env("HEXERACT_AMQP_URL", with)
            .output()
            .expect("run hexeract");
        let printed = text(&output);
        assert!(!printed.contains(secret), "peek with HEXERACT_AMQP_URL printed the password:\n{printed}");
    }
    let refused = text(&hexeract(&["bus", "peek", &queue, "--url", &wrong]));
    assert!(refused.contains("refused the login"), "{refused}");
    rabbit.delete_queue(&queue).await.expect("delete the queue");
    rabbit.close().await;
}

#[test]
fn bus_usage_errors_exit_2() {
    let no_url = exits(2, &["bus", "peek", "orders"]);
    assert!(no_url.contains("HEXERACT_AMQP_URL"), "{no_url}");
    let scheme = exits(2, &["bus", "purge", "orders", "--yes", "--url", "http://127.0.0.1"]);
    assert!(scheme.contains("amqp://"), "{scheme}");
    let missing = exits(2, &["bus", "declare", "--file", "/nonexistent/topology.toml", "--dry-run"]);
    assert!(missing.contains("/nonexistent/topology.toml"), "{missing}");
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = topology_file(&dir, "bad.toml", "[[queues]]\nname = \"q\"\ncolour = \"red\"\n");
    let invalid = exits(2, &["bus", "declare", "--file", &bad, "--dry-run"]);
    assert!(invalid.contains("colour"), "{invalid}");
    exits(2, &["bus", "peek", "orders", "--count", "0", "--url", "amqp://127.0.0.1"]);
    exits(2, &["bus", "purge", "orders", "--url", "amqp://127.0.0.1"]);
}

/// A dry run refuses what the real declaration refuses before sending
/// anything (exit 2, naming the queue or exchange), and warns about a
/// dead-letter target the file does not declare. No broker needed.
#[test]
fn dry_run_refuses_what_declare_refuses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let refused = [
        ("quorum.toml", "[[queues]]\nname = \"billing\"\nkind = \"quorum\"\ndurable = false\n", "`billing`"),
        ("queue.toml", "[[queues]]\nname = \"amq.x\"\n", "`amq.x`"),
        ("exchange.toml", "[[exchanges]]\nname = \"amq.x\"\nkind = \"topic\"\n", "exchange name: `amq.x`"),
        ("empty.toml", "[[queues]]\nname = \"\"\n", "queue name: empty"),
        ("long.toml", &format!("[[queues]]\nname = \"{}\"\n", "q".repeat(256)), "256 bytes"),
    ];
    for (name, toml, named) in refused {
        let file = topology_file(&dir, name, toml);
        let printed = exits(2, &["bus", "declare", "--file", &file, "--dry-run"]);
        assert!(printed.contains(named) && printed.contains(name), "{name}:\n{printed}");
        // Refused before connecting: a URL with nothing behind it is never tried.
        let real = exits(2, &["bus", "declare", "--file", &file, "--url", "amqp://nobody@127.0.0.1:1/%2f"]);
        assert!(real.contains(named), "{name}:\n{real}");
    }

    let dead_letters = topology_file(
        &dir,
        "dead_letters.toml",
        "[[exchanges]]\nname = \"events\"\nkind = \"topic\"\n\n\
         [[queues]]\nname = \"billing\"\ndead_letter = { queue = \"billing.dead\" }\n\n\
         [[queues]]\nname = \"audit\"\ndead_letter = { exchange = { exchange = \"graveyard\", routing_key = \"k\" } }\n\n\
         [[queues]]\nname = \"kept\"\ndead_letter = { exchange = { exchange = \"events\", routing_key = \"k\" } }\n",
    );
    let output = hexeract(&["bus", "declare", "--file", &dead_letters, "--dry-run"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(stderr.contains("warning: queue `billing` dead-letters to queue `billing.dead`"), "{stderr}");
    assert!(stderr.contains("warning: queue `audit` dead-letters to exchange `graveyard`"), "{stderr}");
    assert!(!stderr.contains("`kept`"), "`events` is declared:\n{stderr}");
}
