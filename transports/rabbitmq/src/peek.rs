//! [`PeekedMessage`]: a message looked at in its queue by an operator, with
//! the AMQP properties Hexeract itself does not read (delivery mode, app
//! id) and every header, the broker's own included.

use std::collections::BTreeMap;

use hexeract_runtime::ports::wire::WireMessage;
use lapin::BasicProperties;

use crate::wire;

/// A message fetched from a queue and left there, as
/// [`RabbitTransport::peek_deliveries`](crate::RabbitTransport::peek_deliveries)
/// returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeekedMessage {
    /// The message as a Hexeract consumer would read it (broker
    /// bookkeeping headers such as `x-death` left out).
    pub message: WireMessage,
    /// `delivery_mode`: 2 is persistent, 1 transient.
    pub delivery_mode: Option<u8>,
    /// `app_id`: who published it.
    pub app_id: Option<String>,
    /// Every header as text, the broker's (`x-death`, …) included; a value
    /// that is not text (a table, an array) is shown in AMQP's debug form.
    pub headers: BTreeMap<String, String>,
    /// The exchange it was published to (empty: straight to the queue).
    pub exchange: String,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Whether the broker delivered it before.
    pub redelivered: bool,
}

impl PeekedMessage {
    pub(crate) fn from_amqp(delivery: lapin::message::Delivery) -> Self {
        let headers = all_headers(&delivery.properties);
        PeekedMessage {
            delivery_mode: *delivery.properties.delivery_mode(),
            app_id: delivery.properties.app_id().as_ref().map(|id| id.as_str().to_owned()),
            headers,
            exchange: delivery.exchange.as_str().to_owned(),
            routing_key: delivery.routing_key.as_str().to_owned(),
            redelivered: delivery.redelivered,
            message: wire::from_amqp(&delivery.properties, delivery.data),
        }
    }
}

fn all_headers(properties: &BasicProperties) -> BTreeMap<String, String> {
    let Some(table) = properties.headers() else {
        return BTreeMap::new();
    };
    table
        .inner()
        .iter()
        .map(|(name, value)| {
            let text = wire::header_text(value).unwrap_or_else(|| format!("{value:?}"));
            (name.as_str().to_owned(), text)
        })
        .collect()
}
