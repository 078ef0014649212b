//! A Python service (pika, `integration/interop/pika_peer.py`) and a
//! Hexeract system on the same RabbitMQ broker (`HEXERACT_AMQP_URL`):
//!
//! - Python publishes a JSON message with only what a foreign service sets
//!   (message id, type, content type, an application header) and a
//!   `#[handler(queue = ...)]` handler receives it;
//! - Hexeract publishes through the system's publisher and Python checks
//!   every property and header `docs/wire-format.md` promises.
//!
//! Skipped with a printed line when `HEXERACT_AMQP_URL` is unset or when
//! `python3` cannot `import pika`; under `CI=true` both are failures
//! (`.ci/run` installs pika with `python3 -m pip install pika`).

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hexeract::bus::rabbitmq::{RabbitConfig, RabbitTransport};
use hexeract::bus::{Binding, Destination, Outgoing, QueueSpec, Topology, Transport, WireMessage};
use hexeract::{BoxError, Codec, Context, Envelope, Hexeract, Message, Metadata, System, handler};
use hexeract_integration::{eventually, service_url, skipped, unique, within};
use serde::{Deserialize, Serialize};

const LIMIT: Duration = Duration::from_secs(90);
/// The exchange the system binds its handler queues to (the relay's default).
const EXCHANGE: &str = "hexeract.events";
const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/pika_peer.py");

/// Published by the Python service, handled by Hexeract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "interop.order-placed.v1", notification)]
struct OrderPlaced {
    order_id: String,
    sku: String,
    qty: u32,
}

/// Published by Hexeract, consumed by the Python service.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[message(name = "interop.invoice-issued.v1", notification)]
struct InvoiceIssued {
    invoice: String,
    amount_cents: u64,
}

/// What the handler received: the metadata and the message, in order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(Metadata, OrderPlaced)>>>);

impl Received {
    fn find(&self, message_id: &str) -> Option<(Metadata, OrderPlaced)> {
        let received = self.0.lock().expect("lock");
        received.iter().find(|(meta, _)| meta.id.to_string() == message_id).cloned()
    }
}

#[handler(queue = "interop.billing")]
async fn bill_order(event: OrderPlaced, ctx: &Context) -> Result<(), BoxError> {
    ctx.state::<Received>()?.0.lock().map_err(|_| "poisoned")?.push((ctx.meta().clone(), event));
    Ok(())
}

/// The broker URL, when the broker and pika are both available.
fn setup() -> Option<String> {
    let url = service_url("HEXERACT_AMQP_URL", "RabbitMQ")?;
    let pika = Command::new("python3").args(["-c", "import pika"]).output();
    match pika {
        Ok(output) if output.status.success() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but `python3 -c 'import pika'` fails: install it with `python3 -m pip install pika`")
        }
        _ => {
            skipped("`python3 -c 'import pika'` fails; the interop tests need Python with pika");
            None
        }
    }
}

/// Runs the Python peer with `args`, off the async runtime (the script
/// bounds its own waits).
async fn peer(args: Vec<String>) -> Output {
    let output = tokio::task::spawn_blocking(move || Command::new("python3").arg(PEER).args(&args).output())
        .await
        .expect("the blocking task ran")
        .expect("python3 runs");
    println!("pika_peer {}", String::from_utf8_lossy(&output.stdout).trim());
    if !output.stderr.is_empty() {
        println!("pika_peer stderr: {}", String::from_utf8_lossy(&output.stderr));
    }
    output
}

/// A system on `rabbit`; with `received`, it runs the `bill_order` handler.
/// Only one test's system consumes `interop.billing`: tests run at the same
/// time, and a second consumer would take some of the other test's messages.
async fn start(rabbit: &Arc<RabbitTransport>, received: Option<&Received>) -> System {
    let builder = Hexeract::builder().transport(Arc::clone(rabbit));
    let builder = match received {
        Some(received) => builder.state(received.clone()).handler(BillOrderHandler),
        None => builder,
    };
    builder.start().await.expect("the system starts on RabbitMQ")
}

async fn connect(url: &str, app_id: &str) -> Arc<RabbitTransport> {
    let config = RabbitConfig::new(url).expect("a valid URL").app_id(app_id);
    Arc::new(RabbitTransport::connect(config).await.expect("HEXERACT_AMQP_URL is set but RabbitMQ is unreachable"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_by_pika_reaches_a_hexeract_handler() {
    let Some(url) = setup() else { return };
    within(LIMIT, async {
        let rabbit = connect(&url, "interop-billing").await;
        let received = Received::default();
        let system = start(&rabbit, Some(&received)).await;

        let body = r#"{"order_id": "py-7", "sku": "widget", "qty": 3}"#;
        let args = ["publish", "--url", &url, "--exchange", EXCHANGE, "--type", OrderPlaced::NAME, "--body", body];
        let output = peer(args.map(String::from).to_vec()).await;
        assert!(output.status.success(), "the Python publish failed");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let message_id = stdout
            .lines()
            .find_map(|line| line.strip_prefix("PUBLISHED "))
            .expect("the peer printed the message id")
            .trim()
            .to_owned();

        assert!(
            eventually(Duration::from_secs(15), || received.find(&message_id).is_some()).await,
            "the handler never saw message {message_id}"
        );
        let (meta, event) = received.find(&message_id).expect("seen");
        assert_eq!(event, OrderPlaced { order_id: "py-7".into(), sku: "widget".into(), qty: 3 });
        assert_eq!(meta.name, OrderPlaced::NAME);
        assert_eq!(meta.attempt, 1, "no x-attempt header means the first attempt");
        assert_eq!(meta.correlation_id, meta.id, "no correlation id makes the message its own root");
        assert_eq!(meta.causation_id, None);
        assert_eq!(meta.headers.get("tenant").map(String::as_str), Some("acme"));
        assert_eq!(meta.headers.get("source-version").map(String::as_str), Some("3"), "an integer header as text");

        let report = system.shutdown(Duration::from_secs(5)).await;
        assert!(report.is_clean(), "{report}");
        rabbit.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_by_hexeract_is_read_by_pika_with_every_property() {
    let Some(url) = setup() else { return };
    within(LIMIT, async {
        let rabbit = connect(&url, "interop-invoicing").await;
        let system = start(&rabbit, None).await;

        // The Python service's queue, bound to the system's exchange.
        let queue = unique("interop.python");
        let binding =
            Binding { exchange: EXCHANGE.into(), queue: queue.clone(), routing_key: InvoiceIssued::NAME.into() };
        let topology =
            Topology { queues: vec![QueueSpec::durable(&queue)], bindings: vec![binding], ..Topology::default() };
        rabbit.declare(&topology).await.expect("declared");

        // An event caused by a command: its correlation and causation ids
        // point at the command.
        let command = Metadata::root("interop.issue-invoice.v1");
        let mut meta = command.child(InvoiceIssued::NAME);
        meta.headers.insert("tenant".into(), "acme".into());
        let invoice = InvoiceIssued { invoice: "INV-42".into(), amount_cents: 1999 };
        let envelope = Envelope::encode_with(&invoice, meta, Codec::Json).expect("encodes");
        let destination = Destination::Exchange { exchange: EXCHANGE.into(), routing_key: InvoiceIssued::NAME.into() };
        let outgoing = Outgoing { destination, message: WireMessage::from_envelope(&envelope), delay: None };
        system.publisher().expect("the system has a bus").publish(outgoing).await.expect("confirmed");

        let meta = &envelope.meta;
        let causation = meta.causation_id.expect("a child has a causation id").to_string();
        let args = vec![
            "consume".into(),
            format!("--url={url}"),
            format!("--queue={queue}"),
            format!("--type={}", InvoiceIssued::NAME),
            format!("--message-id={}", meta.id),
            format!("--correlation-id={}", meta.correlation_id),
            format!("--causation-id={causation}"),
            "--app-id=interop-invoicing".into(),
            "--header=tenant=acme".into(),
            format!("--body={}", r#"{"invoice": "INV-42", "amount_cents": 1999}"#),
            "--timeout=15".into(),
        ];
        let output = peer(args).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let verdict = stdout.lines().find(|line| line.starts_with("VERDICT")).unwrap_or("no verdict printed");
        assert_eq!(verdict, "VERDICT ok", "the Python consumer disagrees");
        assert!(output.status.success());

        assert_eq!(rabbit.delete_queue(&queue).await.expect("deleted"), 0, "pika acked the message");
        let report = system.shutdown(Duration::from_secs(5)).await;
        assert!(report.is_clean(), "{report}");
        rabbit.close().await;
    })
    .await;
}
