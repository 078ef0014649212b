//! Declaring exchanges, queues and bindings on RabbitMQ, and the retry tier
//! queues that give delayed delivery without the delayed-message plugin.
//!
//! Every name is checked before it is sent (an over-long short string would
//! kill the connection). Each declaration runs on a channel of its own, so
//! that a refusal (`PRECONDITION_FAILED` for a conflicting declaration,
//! which closes the channel) leaves other traffic alone; the broker's
//! message is read to name the property that differs.

use std::time::Duration;

use hexeract_runtime::ports::transport::{
    Binding, Destination, ExchangeKind, ExchangeSpec, Overflow, QueueKind, QueueSpec, Topology, TransportError,
};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind as AmqpExchangeKind};

use crate::error::{broker_text, is_precondition_failed, transport_error};

/// Checks a name or key against AMQP's short-string limit (and emptiness
/// where that is not allowed).
pub(crate) fn short_name(what: &'static str, name: &str, allow_empty: bool) -> Result<ShortString, TransportError> {
    if name.is_empty() && !allow_empty {
        return Err(TransportError::Invalid { what, reason: "empty".into() });
    }
    ShortString::try_new(name).map_err(|_| {
        // The name itself is too long to be worth printing whole.
        let start: String = name.chars().take(40).collect();
        TransportError::Invalid {
            what, reason: format!("`{start}…`: {} bytes, over AMQP's limit of 255", name.len())
        }
    })
}

pub(crate) fn declared_name(what: &'static str, name: &str) -> Result<ShortString, TransportError> {
    if name.starts_with("amq.") {
        return Err(TransportError::Invalid { what, reason: format!("`{name}`: the `amq.` prefix is the broker's") });
    }
    short_name(what, name, false)
}

fn long(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text.as_bytes()))
}

fn exchange_kind(kind: ExchangeKind) -> AmqpExchangeKind {
    match kind {
        ExchangeKind::Direct => AmqpExchangeKind::Direct,
        ExchangeKind::Topic => AmqpExchangeKind::Topic,
        ExchangeKind::Fanout => AmqpExchangeKind::Fanout,
        ExchangeKind::Headers => AmqpExchangeKind::Headers,
    }
}

/// The `x-…` arguments of a queue.
fn queue_arguments(spec: &QueueSpec) -> Result<FieldTable, TransportError> {
    let mut arguments = FieldTable::default();
    if spec.kind == QueueKind::Quorum {
        if !spec.durable {
            return Err(TransportError::Invalid {
                what: "queue",
                reason: format!("`{}`: a quorum queue is always durable", spec.name),
            });
        }
        arguments.insert("x-queue-type".into(), long("quorum"));
    }
    if let Some(max_length) = spec.max_length {
        arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(i64::from(max_length)));
        match spec.overflow {
            Overflow::RejectPublish => arguments.insert("x-overflow".into(), long("reject-publish")),
            Overflow::Block => {
                return Err(TransportError::Invalid {
                    what: "queue",
                    reason: format!(
                        "`{}`: RabbitMQ cannot hold publishers back on a full queue; use `reject_publish`",
                        spec.name
                    ),
                });
            }
        };
    }
    if let Some(ttl) = spec.message_ttl_ms {
        let ttl = i64::try_from(ttl)
            .map_err(|_| TransportError::Invalid { what: "queue", reason: format!("TTL {ttl} ms is too long") })?;
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
    }
    match &spec.dead_letter {
        None => {}
        Some(Destination::Queue(queue)) => {
            short_name("dead-letter queue", queue, false)?;
            arguments.insert("x-dead-letter-exchange".into(), long(""));
            arguments.insert("x-dead-letter-routing-key".into(), long(queue));
        }
        Some(Destination::Exchange { exchange, routing_key }) => {
            short_name("dead-letter exchange", exchange, true)?;
            short_name("dead-letter routing key", routing_key, true)?;
            arguments.insert("x-dead-letter-exchange".into(), long(exchange));
            arguments.insert("x-dead-letter-routing-key".into(), long(routing_key));
        }
    }
    Ok(arguments)
}

/// A headers binding's match, which [`Binding`] carries in its routing key
/// (`x-match=any,format=pdf,type=report`), as binding arguments.
fn headers_arguments(rules: &str) -> Result<FieldTable, TransportError> {
    let mut arguments = FieldTable::default();
    for rule in rules.split(',').map(str::trim).filter(|rule| !rule.is_empty()) {
        let (name, value) =
            rule.split_once('=').map_or((rule, None), |(name, value)| (name.trim(), Some(value.trim())));
        let name = short_name("header name", name, false)?;
        match value {
            Some(value) => arguments.insert(name, long(value)),
            // "present with any value" has no AMQP form but `x-match=any`
            // with no rules; refuse rather than mean something else.
            None => {
                return Err(TransportError::Invalid {
                    what: "headers binding",
                    reason: format!("`{rule}`: RabbitMQ matches header values, write `name=value`"),
                });
            }
        };
    }
    if !arguments.contains_key("x-match") {
        arguments.insert("x-match".into(), long("all"));
    }
    Ok(arguments)
}

/// Checks `topology` the way a declaration does before it sends anything:
/// names (not empty, at most 255 bytes, no `amq.` prefix on a declared
/// queue or exchange), quorum queues durable, no `block` overflow, TTLs in
/// range, dead-letter targets and routing keys within AMQP's limits,
/// headers bindings written `name=value`. Connects to nothing: `hexeract
/// bus declare --dry-run` runs it on a topology file.
///
/// A binding is checked as a headers binding when its exchange is a
/// headers exchange of `topology`.
///
/// # Errors
/// [`TransportError::Invalid`] naming the first queue, exchange or binding
/// that RabbitMQ would refuse, or that [`Transport::declare`] refuses
/// before sending it.
///
/// # Examples
///
/// ```
/// use hexeract_runtime::ports::transport::{QueueKind, QueueSpec, Topology};
/// use hexeract_transport_rabbitmq::validate_topology;
///
/// let mut queue = QueueSpec::durable("billing");
/// queue.kind = QueueKind::Quorum;
/// queue.durable = false;
/// let topology = Topology { queues: vec![queue], ..Topology::default() };
/// let error = validate_topology(&topology).expect_err("a quorum queue is durable");
/// assert!(error.to_string().contains("`billing`"));
/// ```
///
/// [`Transport::declare`]: hexeract_runtime::ports::transport::Transport::declare
pub fn validate_topology(topology: &Topology) -> Result<(), TransportError> {
    Declarations::check(topology, topology).map(drop)
}

/// A topology checked and turned into AMQP arguments, ready to send.
pub(crate) struct Declarations<'a> {
    exchanges: Vec<(ShortString, &'a ExchangeSpec)>,
    queues: Vec<(ShortString, FieldTable, &'a QueueSpec)>,
    bindings: Vec<(ShortString, ShortString, ShortString, FieldTable)>,
}

impl<'a> Declarations<'a> {
    /// Checks everything in `topology`, so that nothing is sent when any
    /// part of it would be refused. `known` tells the kind of exchanges
    /// declared earlier (a headers binding takes its match as arguments).
    pub(crate) fn check(topology: &'a Topology, known: &Topology) -> Result<Self, TransportError> {
        let exchanges = topology
            .exchanges
            .iter()
            .map(|spec| Ok((declared_name("exchange name", &spec.name)?, spec)))
            .collect::<Result<_, TransportError>>()?;
        let queues = topology
            .queues
            .iter()
            .map(|spec| Ok((declared_name("queue name", &spec.name)?, queue_arguments(spec)?, spec)))
            .collect::<Result<_, TransportError>>()?;
        let bindings = topology
            .bindings
            .iter()
            .map(|binding| binding_parts(topology, known, binding))
            .collect::<Result<_, TransportError>>()?;
        Ok(Declarations { exchanges, queues, bindings })
    }

    /// Declares everything on `channel`, stopping at the first refusal.
    pub(crate) async fn send(self, channel: &Channel) -> Result<(), TransportError> {
        for (name, spec) in self.exchanges {
            let options = ExchangeDeclareOptions { durable: spec.durable, ..ExchangeDeclareOptions::default() };
            channel
                .exchange_declare(name, exchange_kind(spec.kind), options, FieldTable::default())
                .await
                .map_err(|error| refusal("exchange", &spec.name, &error))?;
        }
        for (name, arguments, spec) in self.queues {
            let options = QueueDeclareOptions { durable: spec.durable, ..QueueDeclareOptions::default() };
            channel
                .queue_declare(name, options, arguments)
                .await
                .map_err(|error| refusal("queue", &spec.name, &error))?;
        }
        for (queue, exchange, routing_key, arguments) in self.bindings {
            let what = format!("binding of `{queue}` to `{exchange}`");
            channel
                .queue_bind(queue, exchange, routing_key, QueueBindOptions::default(), arguments)
                .await
                .map_err(|error| transport_error(&what, &error))?;
        }
        Ok(())
    }
}

/// Declares `topology` on `channel`, checking all of it before sending
/// anything and stopping at the first refusal. `known` as in
/// [`Declarations::check`].
pub(crate) async fn declare_on(channel: &Channel, topology: &Topology, known: &Topology) -> Result<(), TransportError> {
    Declarations::check(topology, known)?.send(channel).await
}

fn binding_parts(
    topology: &Topology,
    known: &Topology,
    binding: &Binding,
) -> Result<(ShortString, ShortString, ShortString, FieldTable), TransportError> {
    let queue = short_name("queue name", &binding.queue, false)?;
    let exchange = short_name("exchange name", &binding.exchange, false)?;
    let is_headers = topology
        .exchanges
        .iter()
        .chain(&known.exchanges)
        .any(|spec| spec.name == binding.exchange && spec.kind == ExchangeKind::Headers);
    if is_headers {
        Ok((queue, exchange, ShortString::default(), headers_arguments(&binding.routing_key)?))
    } else {
        Ok((queue, exchange, short_name("routing key", &binding.routing_key, true)?, FieldTable::default()))
    }
}

/// A refused declaration as the port's error: a conflict names the
/// property, from the broker's `inequivalent arg 'x-max-length' for queue …`.
fn refusal(kind: &'static str, name: &str, error: &lapin::Error) -> TransportError {
    if !is_precondition_failed(error) {
        return transport_error(&format!("declaring {kind} `{name}`"), error);
    }
    let text = broker_text(error);
    let argument = text.split('\'').nth(1).unwrap_or("unknown");
    let property = match argument {
        "type" | "x-queue-type" => "kind",
        "durable" => "durable",
        "x-max-length" => "max_length",
        "x-overflow" => "overflow",
        "x-message-ttl" => "message_ttl_ms",
        "x-dead-letter-exchange" | "x-dead-letter-routing-key" => "dead_letter",
        other => other,
    };
    TransportError::Conflict { kind, name: name.to_owned(), property: format!("{property} ({text})") }
}

/// How the names of retry tier queues begin: `hexeract.delay.<ms>ms.<queue>`.
pub const RETRY_TIER_PREFIX: &str = "hexeract.delay.";

/// The retry tier holding messages for `queue` for about `delay`: delays
/// are rounded up to a power of two of milliseconds, so a queue has at most
/// a couple of dozen tiers. Each tier is a queue whose messages all share
/// one TTL (RabbitMQ only expires messages at a queue's head, so mixed
/// TTLs in one queue would hold short delays behind long ones) and
/// dead-letter back into `queue` when it expires.
pub(crate) fn delay_tier(queue: &str, delay: Duration) -> Result<(String, QueueSpec), TransportError> {
    let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX).max(1);
    let tier = millis.checked_next_power_of_two().unwrap_or(1 << 62);
    let name = format!("{RETRY_TIER_PREFIX}{tier}ms.{queue}");
    short_name("retry tier queue name", &name, false)?;
    let mut spec = QueueSpec::durable(name.clone());
    spec.message_ttl_ms = Some(tier);
    spec.dead_letter = Some(Destination::Queue(queue.to_owned()));
    Ok((name, spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_a_tier() {
        let (name, spec) = delay_tier("billing", Duration::from_millis(1000)).expect("valid");
        assert_eq!(name, "hexeract.delay.1024ms.billing");
        assert_eq!(spec.message_ttl_ms, Some(1024));
        assert_eq!(spec.dead_letter, Some(Destination::Queue("billing".into())));
        assert!(delay_tier(&"q".repeat(250), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn headers_rules_become_arguments() {
        let arguments = headers_arguments("x-match=any, format=pdf,type=report").expect("valid");
        assert_eq!(arguments.inner().get("x-match"), Some(&long("any")));
        assert_eq!(arguments.inner().get("format"), Some(&long("pdf")));
        assert!(headers_arguments("format").is_err());
    }

    fn invalid(topology: &Topology) -> String {
        match validate_topology(topology) {
            Err(error @ TransportError::Invalid { .. }) => error.to_string(),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn validation_refuses_what_a_declaration_refuses() {
        let queue = |spec: QueueSpec| Topology { queues: vec![spec], ..Topology::default() };
        let mut transient_quorum = QueueSpec::durable("billing");
        transient_quorum.kind = QueueKind::Quorum;
        transient_quorum.durable = false;
        assert!(invalid(&queue(transient_quorum)).contains("`billing`: a quorum queue is always durable"));
        assert!(invalid(&queue(QueueSpec::durable("amq.x"))).contains("`amq.x`"));
        let exchange = Topology {
            exchanges: vec![ExchangeSpec { name: "amq.x".into(), kind: ExchangeKind::Topic, durable: true }],
            ..Topology::default()
        };
        assert!(invalid(&exchange).contains("invalid exchange name: `amq.x`"));
        assert!(invalid(&queue(QueueSpec::durable(""))).contains("empty"));
        let long = invalid(&queue(QueueSpec::durable("q".repeat(256))));
        assert!(long.contains("256 bytes") && long.contains(&"q".repeat(40)), "{long}");
        let mut dead_letter = QueueSpec::durable("orders");
        dead_letter.dead_letter = Some(Destination::Queue("d".repeat(300)));
        assert!(invalid(&queue(dead_letter)).contains("dead-letter queue"));
    }

    #[test]
    fn validation_accepts_a_valid_topology() {
        let mut quorum = QueueSpec::durable("billing");
        quorum.kind = QueueKind::Quorum;
        quorum.dead_letter = Some(Destination::Queue("billing.dead".into()));
        let topology = Topology {
            exchanges: vec![ExchangeSpec { name: "events".into(), kind: ExchangeKind::Topic, durable: true }],
            queues: vec![quorum, QueueSpec::durable("billing.dead")],
            bindings: vec![Binding {
                exchange: "events".into(),
                queue: "billing".into(),
                routing_key: "orders.#".into(),
            }],
        };
        assert!(validate_topology(&topology).is_ok());
    }

    #[test]
    fn block_overflow_is_refused() {
        let mut spec = QueueSpec::durable("q");
        spec.max_length = Some(1);
        spec.overflow = Overflow::Block;
        assert!(matches!(queue_arguments(&spec), Err(TransportError::Invalid { .. })));
    }
}
