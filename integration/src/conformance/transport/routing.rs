//! Declaring topology and routing publishes through it.

use hexeract_runtime::ports::transport::{ExchangeKind, PublishError, QueueSpec, Topology, TransportError};

use super::TestedTransport;
use super::support::{
    bind, declare, declare_queues, ensure, exchange, expect_queue, message, publish, publish_to, to_exchange, to_queue,
};

/// Declaring the same topology twice changes nothing: in particular the
/// binding is not doubled, so one publish is one delivery.
pub async fn declare_twice_is_a_no_op(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let (orders, queue) = (format!("{prefix}.orders"), format!("{prefix}.billing"));
    let topology = Topology {
        exchanges: vec![exchange(&orders, ExchangeKind::Direct)],
        queues: vec![QueueSpec::durable(&queue)],
        bindings: vec![bind(&orders, &queue, "placed")],
    };
    declare(transport, topology.clone()).await?;
    declare(transport, topology).await.map_err(|error| format!("the second, identical declaration: {error}"))?;
    publish(transport, to_exchange(&orders, "placed"), message(prefix, "one")).await?;
    expect_queue(transport, &queue, prefix, &["one"]).await
}

/// Re-declaring with a different property is a conflict naming the thing
/// and the property, and leaves what exists untouched.
pub async fn conflicting_declare_names_the_property(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let (orders, queue) = (format!("{prefix}.orders"), format!("{prefix}.billing"));
    declare(
        transport,
        Topology {
            exchanges: vec![exchange(&orders, ExchangeKind::Direct)],
            queues: vec![QueueSpec::durable(&queue)],
            bindings: vec![bind(&orders, &queue, "placed")],
        },
    )
    .await?;

    let topic = Topology { exchanges: vec![exchange(&orders, ExchangeKind::Topic)], ..Topology::default() };
    match transport.declare(&topic).await {
        Err(ref error @ TransportError::Conflict { kind: "exchange", ref name, ref property })
            if *name == orders && property.contains("kind") =>
        {
            ensure!(error.to_string().contains(&orders), "the conflict message does not name `{orders}`: {error}");
        }
        other => return Err(format!("re-declaring `{orders}` as topic: expected a conflict on `kind`, got {other:?}")),
    }

    let mut transient = QueueSpec::durable(&queue);
    transient.durable = false;
    match transport.declare(&Topology { queues: vec![transient], ..Topology::default() }).await {
        Err(TransportError::Conflict { kind: "queue", ref name, ref property })
            if *name == queue && property.contains("durable") => {}
        other => {
            return Err(format!(
                "re-declaring `{queue}` as transient: expected a conflict on `durable`, got {other:?}"
            ));
        }
    }

    publish(transport, to_exchange(&orders, "placed"), message(prefix, "still-routed")).await?;
    expect_queue(transport, &queue, prefix, &["still-routed"]).await
}

/// Empty names and names or routing keys past AMQP's 255-byte short-string
/// limit are refused, before they could reach (and kill) a connection.
pub async fn overlong_names_are_refused(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    for name in [String::new(), format!("{prefix}.{}", "q".repeat(256))] {
        let topology = Topology { queues: vec![QueueSpec::durable(&name)], ..Topology::default() };
        match transport.declare(&topology).await {
            Err(TransportError::Invalid { .. }) => {}
            other => {
                return Err(format!("declaring a queue named {} bytes: expected Invalid, got {other:?}", name.len()));
            }
        }
    }
    let orders = format!("{prefix}.orders");
    let queue = format!("{prefix}.all");
    declare(
        transport,
        Topology {
            exchanges: vec![exchange(&orders, ExchangeKind::Topic)],
            queues: vec![QueueSpec::durable(&queue)],
            bindings: vec![bind(&orders, &queue, "#")],
        },
    )
    .await?;
    let long_key = "k".repeat(256);
    let result = publish_to(transport, to_exchange(&orders, &long_key), message(prefix, "long-key")).await;
    ensure!(result.is_err(), "a publish with a 256-byte routing key was confirmed");
    expect_queue(transport, &queue, prefix, &[]).await
}

/// A direct exchange routes on equal keys only, to every queue bound with it.
pub async fn direct_exchange_routes_by_exact_key(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let orders = format!("{prefix}.orders");
    let [placed, shipped, audit] = [format!("{prefix}.placed"), format!("{prefix}.shipped"), format!("{prefix}.audit")];
    declare(
        transport,
        Topology {
            exchanges: vec![exchange(&orders, ExchangeKind::Direct)],
            queues: vec![QueueSpec::durable(&placed), QueueSpec::durable(&shipped), QueueSpec::durable(&audit)],
            bindings: vec![
                bind(&orders, &placed, "order.placed"),
                bind(&orders, &shipped, "order.shipped"),
                bind(&orders, &audit, "order.placed"),
            ],
        },
    )
    .await?;
    publish(transport, to_exchange(&orders, "order.placed"), message(prefix, "p")).await?;
    publish(transport, to_exchange(&orders, "order.shipped"), message(prefix, "s")).await?;
    expect_queue(transport, &placed, prefix, &["p"]).await?;
    expect_queue(transport, &shipped, prefix, &["s"]).await?;
    expect_queue(transport, &audit, prefix, &["p"]).await
}

/// A topic exchange: `*` is one word, `#` zero or more.
pub async fn topic_exchange_routes_by_pattern(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let events = format!("{prefix}.events");
    let bindings = [
        ("star", "orders.*.placed"),
        ("tail", "orders.#"),
        ("all", "#"),
        ("exact", "orders.eu.placed"),
        ("middle", "orders.#.late"),
        ("none", "invoices.#"),
    ];
    let queue = |label: &str| format!("{prefix}.{label}");
    declare(
        transport,
        Topology {
            exchanges: vec![exchange(&events, ExchangeKind::Topic)],
            queues: bindings.iter().map(|(label, _)| QueueSpec::durable(queue(label))).collect(),
            bindings: bindings.iter().map(|(label, pattern)| bind(&events, &queue(label), pattern)).collect(),
        },
    )
    .await?;
    for (label, key) in
        [("eu", "orders.eu.placed"), ("bare", "orders"), ("late", "orders.eu.placed.late"), ("other", "shipping.x")]
    {
        publish(transport, to_exchange(&events, key), message(prefix, label)).await?;
    }
    expect_queue(transport, &queue("star"), prefix, &["eu"]).await?;
    expect_queue(transport, &queue("tail"), prefix, &["eu", "bare", "late"]).await?;
    expect_queue(transport, &queue("all"), prefix, &["eu", "bare", "late", "other"]).await?;
    expect_queue(transport, &queue("exact"), prefix, &["eu"]).await?;
    expect_queue(transport, &queue("middle"), prefix, &["late"]).await?;
    expect_queue(transport, &queue("none"), prefix, &[]).await
}

/// A fanout exchange ignores the key and reaches every bound queue, and
/// only those.
pub async fn fanout_exchange_routes_to_every_bound_queue(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let broadcast = format!("{prefix}.broadcast");
    let other = format!("{prefix}.other");
    let queues: Vec<String> = (1..=3).map(|n| format!("{prefix}.q{n}")).collect();
    let unbound = format!("{prefix}.unbound");
    let mut specs: Vec<QueueSpec> = queues.iter().map(QueueSpec::durable).collect();
    specs.push(QueueSpec::durable(&unbound));
    declare(
        transport,
        Topology {
            exchanges: vec![exchange(&broadcast, ExchangeKind::Fanout), exchange(&other, ExchangeKind::Fanout)],
            queues: specs,
            bindings: vec![
                bind(&broadcast, &queues[0], ""),
                bind(&broadcast, &queues[1], "ignored"),
                bind(&broadcast, &queues[2], "a.b"),
                bind(&other, &unbound, ""),
            ],
        },
    )
    .await?;
    publish(transport, to_exchange(&broadcast, "anything"), message(prefix, "news")).await?;
    for queue in &queues {
        expect_queue(transport, queue, prefix, &["news"]).await?;
    }
    expect_queue(transport, &unbound, prefix, &[]).await
}

/// A headers exchange with `x-match=all` needs every rule, `x-match=any`
/// one; a message matching neither is unroutable.
pub async fn headers_exchange_matches_all_or_any(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let documents = format!("{prefix}.documents");
    let (all, any) = (format!("{prefix}.all"), format!("{prefix}.any"));
    declare(
        transport,
        Topology {
            exchanges: vec![exchange(&documents, ExchangeKind::Headers)],
            queues: vec![QueueSpec::durable(&all), QueueSpec::durable(&any)],
            bindings: vec![
                bind(&documents, &all, "x-match=all,format=pdf,type=report"),
                bind(&documents, &any, "x-match=any,format=pdf,type=report"),
            ],
        },
    )
    .await?;
    let with_headers = |label: &str, headers: &[(&str, &str)]| {
        let mut message = message(prefix, label);
        message.headers.extend(headers.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())));
        message
    };
    let both = with_headers("both", &[("format", "pdf"), ("type", "report")]);
    publish(transport, to_exchange(&documents, ""), both).await?;
    let one = with_headers("one", &[("format", "pdf"), ("type", "log")]);
    publish(transport, to_exchange(&documents, ""), one).await?;
    let neither = with_headers("neither", &[("format", "txt")]);
    match publish_to(transport, to_exchange(&documents, ""), neither).await {
        Err(PublishError::Unroutable(_)) => {}
        other => return Err(format!("a message matching no headers binding: expected Unroutable, got {other:?}")),
    }
    expect_queue(transport, &all, prefix, &["both"]).await?;
    expect_queue(transport, &any, prefix, &["both", "one"]).await
}

/// A publish no binding matches is an error, never a silent drop.
pub async fn unroutable_publish_is_an_error(tested: &TestedTransport, prefix: &str) -> Result<(), String> {
    let transport = &*tested.transport;
    let (orders, empty) = (format!("{prefix}.orders"), format!("{prefix}.empty"));
    let queue = format!("{prefix}.placed");
    declare(
        transport,
        Topology {
            exchanges: vec![exchange(&orders, ExchangeKind::Direct), exchange(&empty, ExchangeKind::Fanout)],
            queues: vec![QueueSpec::durable(&queue)],
            bindings: vec![bind(&orders, &queue, "placed")],
        },
    )
    .await?;
    for destination in [to_exchange(&orders, "cancelled"), to_exchange(&empty, "")] {
        match publish_to(transport, destination.clone(), message(prefix, "lost")).await {
            Err(PublishError::Unroutable(returned)) if returned == destination => {}
            other => return Err(format!("publishing to {destination:?}: expected Unroutable, got {other:?}")),
        }
    }
    expect_queue(transport, &queue, prefix, &[]).await
}

/// A publish to an exchange or a queue that does not exist is `NotFound`.
pub async fn publish_to_a_missing_exchange_or_queue_is_an_error(
    tested: &TestedTransport,
    prefix: &str,
) -> Result<(), String> {
    let transport = &*tested.transport;
    let missing = format!("{prefix}.missing");
    for destination in [to_exchange(&missing, "key"), to_queue(&missing)] {
        match publish_to(transport, destination.clone(), message(prefix, "nowhere")).await {
            Err(PublishError::NotFound(_)) => {}
            other => return Err(format!("publishing to {destination:?}: expected NotFound, got {other:?}")),
        }
    }
    // The failures above must not have broken the transport (on AMQP they
    // close the channel, which the adapter has to recover from).
    let exists = format!("{prefix}.exists");
    declare_queues(transport, &[&exists]).await?;
    publish(transport, to_queue(&exists), message(prefix, "after")).await?;
    expect_queue(transport, &exists, prefix, &["after"]).await
}
