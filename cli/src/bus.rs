//! `hexeract bus …`: the RabbitMQ broker. Each command is one call on
//! `hexeract_transport_rabbitmq::RabbitTransport`: `declare` is
//! `Transport::declare` of a `Topology::from_toml` file, `peek` is
//! `RabbitTransport::peek_deliveries`, `purge` is
//! `RabbitTransport::purge_queue`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use hexeract_runtime::ports::transport::{
    Destination, ExchangeKind, Overflow, QueueKind, QueueSpec, Topology, Transport as _, TransportError,
};
use hexeract_transport_rabbitmq::{
    ConnectError, PeekedMessage, RETRY_TIER_PREFIX, RabbitConfig, RabbitTransport, validate_topology,
};

use crate::Failure;
use crate::output::{Output, counted};

/// How many bytes of a body `bus peek` prints.
const BODY_SHOWN: usize = 512;

/// Where the broker is.
#[derive(Debug, Clone, Args)]
pub struct Broker {
    /// AMQP URL, `amqp://user:password@host:port/vhost` (`amqps://` for
    /// TLS) [env: HEXERACT_AMQP_URL].
    #[arg(long, value_name = "URL")]
    url: Option<String>,
}

impl Broker {
    fn resolve(&self) -> Result<String, Failure> {
        let from_env = std::env::var("HEXERACT_AMQP_URL").ok().filter(|url| !url.trim().is_empty());
        self.url
            .clone()
            .or(from_env)
            .ok_or_else(|| Failure::Usage("no broker URL: pass --url or set HEXERACT_AMQP_URL".into()))
    }

    async fn connect(&self) -> Result<RabbitTransport, Failure> {
        let url = self.resolve()?;
        // A bad URL cannot work: usage. The parser never echoes the URL.
        let config = RabbitConfig::new(&url)
            .map_err(|error| Failure::Usage(error.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .app_id("hexeract-cli");
        RabbitTransport::connect(config).await.map_err(|error| match error {
            ConnectError::InvalidUrl(error) => Failure::Usage(error.to_string()),
            // Its message names the broker with the password masked.
            error => Failure::Operation(anyhow::Error::new(error)),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum BusCommand {
    /// Declare the exchanges, queues and bindings of a topology file
    /// (idempotent: what exists already is left alone; a different
    /// definition is refused, naming the property).
    Declare {
        /// The topology file (TOML; the format of `Topology::from_toml`).
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
        /// Print what would be declared, without connecting.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        broker: Broker,
    },
    /// Show messages at the head of a queue and leave them there
    /// (properties, headers, the first 512 bytes of the body).
    Peek {
        /// The queue.
        queue: String,
        /// At most this many messages, each a different one.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
        count: u16,
        #[command(flatten)]
        broker: Broker,
    },
    /// Delete every ready message of a queue, for good. Needs --yes.
    Purge {
        /// The queue.
        queue: String,
        /// Confirm: the messages cannot be recovered.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        broker: Broker,
    },
}

pub async fn bus(command: BusCommand, out: &Output) -> Result<(), Failure> {
    match command {
        BusCommand::Declare { file, dry_run, broker } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|error| Failure::Usage(format!("cannot read `{}`: {error}", file.display())))?;
            let topology =
                Topology::from_toml(&text).map_err(|error| Failure::Usage(format!("`{}`: {error}", file.display())))?;
            // What the transport would refuse before sending anything
            // cannot work: a usage error, dry run or not.
            validate_topology(&topology).map_err(|error| Failure::Usage(format!("`{}`: {error}", file.display())))?;
            for warning in undeclared_dead_letter_targets(&topology) {
                out.warn(warning);
            }
            if dry_run {
                out.line(format!("dry run: nothing is sent; `{}` declares:", file.display()));
                describe(&topology, out);
                return Ok(());
            }
            let transport = broker.connect().await?;
            let declared = transport.declare(&topology).await;
            transport.close().await;
            declared.map_err(|error| match error {
                // It names the queue or exchange and the property.
                error @ (TransportError::Conflict { .. } | TransportError::Invalid { .. }) => {
                    Failure::Operation(anyhow::Error::new(error))
                }
                error => Failure::Operation(anyhow::Error::new(error).context("declaring the topology")),
            })?;
            describe(&topology, out);
            out.line(format!(
                "declared {}, {}, {} on {}",
                counted(topology.exchanges.len() as u64, "exchange", "exchanges"),
                counted(topology.queues.len() as u64, "queue", "queues"),
                counted(topology.bindings.len() as u64, "binding", "bindings"),
                transport.config().url
            ));
        }
        BusCommand::Peek { queue, count, broker } => {
            let transport = broker.connect().await?;
            let peeked = transport.peek_deliveries(&queue, usize::from(count)).await;
            transport.close().await;
            let peeked = peeked.map_err(|error| operation(error, &queue, "peeking"))?;
            for (n, message) in peeked.iter().enumerate() {
                show(n + 1, message, out);
            }
            let shown = counted(peeked.len() as u64, "message", "messages");
            let left = match peeked.len() {
                0 => "",
                1 => ", left in the queue",
                _ => ", all left in the queue",
            };
            out.line(format!("{shown} shown from `{queue}`{left}"));
        }
        BusCommand::Purge { queue, yes, broker } => {
            if !yes {
                return Err(Failure::Usage(format!(
                    "purging `{queue}` deletes its ready messages for good; add --yes to confirm"
                )));
            }
            let transport = broker.connect().await?;
            let purged = transport.purge_queue(&queue).await;
            transport.close().await;
            let purged = purged.map_err(|error| operation(error, &queue, "purging"))?;
            out.line(format!("{} purged from `{queue}`", counted(purged, "message", "messages")));
        }
    }
    Ok(())
}

/// A queue whose dead-letter target the file does not declare: unless the
/// target exists on the broker already, RabbitMQ drops what the queue
/// dead-letters, silently. One sentence per such queue.
fn undeclared_dead_letter_targets(topology: &Topology) -> Vec<String> {
    let has_queue = |name: &str| topology.queues.iter().any(|queue| queue.name == name);
    let has_exchange = |name: &str| topology.exchanges.iter().any(|exchange| exchange.name == name);
    let consequence = "unless it exists on the broker, what the queue dead-letters is dropped";
    let mut warnings = Vec::new();
    for queue in &topology.queues {
        let missing = match &queue.dead_letter {
            None => continue,
            Some(Destination::Queue(target)) if !has_queue(target) => format!("queue `{target}`"),
            // The default exchange routes by queue name.
            Some(Destination::Exchange { exchange, routing_key }) if exchange.is_empty() && !has_queue(routing_key) => {
                format!("queue `{routing_key}` (through the default exchange)")
            }
            // `amq.*` exchanges are the broker's own and always exist.
            Some(Destination::Exchange { exchange, .. })
                if !exchange.is_empty() && !exchange.starts_with("amq.") && !has_exchange(exchange) =>
            {
                format!("exchange `{exchange}`")
            }
            Some(_) => continue,
        };
        warnings.push(format!(
            "queue `{}` dead-letters to {missing}, which the file does not declare; {consequence}",
            queue.name
        ));
    }
    warnings
}

/// A failed operation on `queue`.
fn operation(error: TransportError, queue: &str, doing: &str) -> Failure {
    Failure::Operation(match error {
        TransportError::NotFound(_) => anyhow::anyhow!("queue `{queue}` does not exist"),
        error @ TransportError::Invalid { .. } => anyhow::Error::new(error),
        error => anyhow::Error::new(error).context(format!("{doing} queue `{queue}`")),
    })
}

/// One line per exchange, queue (retry tiers apart) and binding.
fn describe(topology: &Topology, out: &Output) {
    for exchange in &topology.exchanges {
        let kind = match exchange.kind {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Headers => "headers",
        };
        out.line(format!("exchange    {}  {kind}, {}", exchange.name, durability(exchange.durable)));
    }
    let (tiers, queues): (Vec<&QueueSpec>, Vec<&QueueSpec>) =
        topology.queues.iter().partition(|queue| queue.name.starts_with(RETRY_TIER_PREFIX));
    for queue in queues {
        out.line(format!("queue       {}  {}", queue.name, queue_properties(queue)));
    }
    for tier in &tiers {
        out.line(format!("retry tier  {}  {}", tier.name, queue_properties(tier)));
    }
    for binding in &topology.bindings {
        out.line(format!(
            "binding     {} -> {}  routing key `{}`",
            binding.exchange, binding.queue, binding.routing_key
        ));
    }
    if tiers.is_empty() {
        out.line("retry tiers: none in the file (the transport declares them on the first delayed retry)");
    }
}

fn durability(durable: bool) -> &'static str {
    if durable { "durable" } else { "transient" }
}

fn queue_properties(queue: &QueueSpec) -> String {
    let kind = match queue.kind {
        QueueKind::Classic => "classic",
        QueueKind::Quorum => "quorum",
    };
    let mut properties = vec![kind.to_owned(), durability(queue.durable).to_owned()];
    if let Some(max_length) = queue.max_length {
        let overflow = match queue.overflow {
            Overflow::RejectPublish => "reject_publish",
            Overflow::Block => "block",
        };
        properties.push(format!("max_length={max_length} overflow={overflow}"));
    }
    if let Some(ttl) = queue.message_ttl_ms {
        properties.push(format!("message_ttl_ms={ttl}"));
    }
    match &queue.dead_letter {
        None => {}
        Some(Destination::Queue(target)) => properties.push(format!("dead_letter=queue {target}")),
        Some(Destination::Exchange { exchange, routing_key }) => {
            properties.push(format!("dead_letter=exchange {exchange} key `{routing_key}`"));
        }
    }
    properties.join(", ")
}

fn show(n: usize, peeked: &PeekedMessage, out: &Output) {
    let message = &peeked.message;
    let text = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    let timestamp = message.timestamp.map_or_else(
        || "-".into(),
        |seconds| {
            let at = i64::try_from(seconds).ok().and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok());
            at.and_then(|at| at.format(&time::format_description::well_known::Rfc3339).ok())
                .map_or_else(|| seconds.to_string(), |at| format!("{at} ({seconds})"))
        },
    );
    let delivery_mode = match peeked.delivery_mode {
        Some(2) => "2 (persistent)".to_owned(),
        Some(1) => "1 (transient)".to_owned(),
        Some(other) => other.to_string(),
        None => "-".to_owned(),
    };
    out.line(format!("--- message {n}"));
    out.pairs(&[
        ("message id", text(&message.message_id)),
        ("type", text(&message.kind)),
        ("correlation id", text(&message.correlation_id)),
        ("content type", text(&message.content_type)),
        ("timestamp", timestamp),
        ("delivery mode", delivery_mode),
        ("app id", text(&peeked.app_id)),
        ("exchange", if peeked.exchange.is_empty() { "(default)".into() } else { peeked.exchange.clone() }),
        ("routing key", peeked.routing_key.clone()),
        ("redelivered", peeked.redelivered.to_string()),
    ]);
    if peeked.headers.is_empty() {
        out.line("headers: none");
    } else {
        out.line("headers:");
        let width = peeked.headers.keys().map(String::len).max().unwrap_or(0);
        for (name, value) in &peeked.headers {
            out.line(format!("  {name:<width$}  {value}"));
        }
    }
    let body = &message.body;
    if body.len() > BODY_SHOWN {
        out.line(format!("body ({} bytes, the first {BODY_SHOWN} shown):", body.len()));
    } else {
        out.line(format!("body ({} bytes):", body.len()));
    }
    out.line(String::from_utf8_lossy(&body[..body.len().min(BODY_SHOWN)]));
}
