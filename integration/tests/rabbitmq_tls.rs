//! `amqps://` for real: an in-process TLS proxy with a certificate made at
//! test time sits in front of the local broker (`HEXERACT_AMQP_URL`), and
//! the RabbitMQ transport declares, publishes with a confirm and consumes
//! through it, trusting that certificate with `tls_roots_pem`. Without the
//! certificate trusted, connecting fails at once with a typed error.
//!
//! Skipped, with a printed line, when `HEXERACT_AMQP_URL` is unset; a
//! failure when it is unset under `CI=true`.

use std::num::NonZeroU16;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hexeract::bus::rabbitmq::{AmqpUrl, ConnectError, RabbitConfig, RabbitTransport};
use hexeract::bus::{Destination, Outgoing, QueueSpec, SubscriptionEvent, Topology, Transport, WireMessage};
use hexeract::{Codec, Envelope, Message};
use hexeract_integration::{service_url, unique, within};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

const LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Message)]
#[message(name = "tls.test.ping.v1", notification)]
struct Ping {
    n: u32,
}

/// A TLS terminator in front of the broker: every connection it accepts is
/// decrypted and forwarded, byte for byte, to the broker's plain port.
struct TlsProxy {
    port: u16,
    /// PEM of the self-signed certificate it presents (for `localhost` and
    /// 127.0.0.1), to be trusted by the client.
    certificate_pem: String,
    /// Completed TLS handshakes: proof that the traffic went through TLS.
    handshakes: Arc<AtomicUsize>,
}

impl TlsProxy {
    async fn start(upstream: String) -> TlsProxy {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("a self-signed certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        // The provider is named, not left to rustls's process default: the
        // test then behaves the same whatever else installed one.
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .expect("the key matches the certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("an ephemeral port");
        let port = listener.local_addr().expect("bound").port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&handshakes);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, upstream, counted) = (acceptor.clone(), upstream.clone(), Arc::clone(&counted));
                tokio::spawn(async move {
                    // A client that does not trust the certificate aborts the
                    // handshake: nothing to forward then.
                    let Ok(mut client) = acceptor.accept(client).await else { return };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut broker) = TcpStream::connect(&upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                });
            }
        });
        TlsProxy { port, certificate_pem: certified.cert.pem(), handshakes }
    }

    /// `url` (an `amqp://` URL of the broker) rewritten to reach the broker
    /// through this proxy: same credentials and virtual host, `amqps://`,
    /// host `localhost` (the name the certificate is for).
    fn amqps_url(&self, url: &str) -> String {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let (userinfo, address) = rest.rsplit_once('@').map_or(("", rest), |(user, address)| (user, address));
        let vhost = address.find('/').map_or("/%2f", |slash| &address[slash..]);
        let userinfo = if userinfo.is_empty() { String::new() } else { format!("{userinfo}@") };
        format!("amqps://{userinfo}localhost:{}{vhost}", self.port)
    }
}

/// The proxy in front of the broker in `HEXERACT_AMQP_URL`, and that URL;
/// `None` (skip) when the variable is unset.
async fn proxy() -> Option<(TlsProxy, String)> {
    let url = service_url("HEXERACT_AMQP_URL", "RabbitMQ")?;
    let broker = AmqpUrl::parse(&url).expect("HEXERACT_AMQP_URL is a valid AMQP URL");
    assert!(!broker.is_tls(), "HEXERACT_AMQP_URL must be the broker's plain amqp:// port for this test");
    Some((TlsProxy::start(broker.host_port()).await, url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_declares_publishes_and_consumes_over_tls() {
    let Some((proxy, url)) = proxy().await else { return };
    within(LIMIT, async {
        let config = RabbitConfig::new(&proxy.amqps_url(&url))
            .expect("a valid amqps:// URL")
            .tls_roots_pem(proxy.certificate_pem.clone())
            .connect_timeout(Duration::from_secs(5));
        let rabbit = RabbitTransport::connect(config).await.expect("connected through the TLS proxy");
        assert!(rabbit.config().url.is_tls());

        let queue = unique("tls.test");
        rabbit
            .declare(&Topology { queues: vec![QueueSpec::durable(&queue)], ..Topology::default() })
            .await
            .expect("declared");
        let envelope = Envelope::encode(&Ping { n: 42 }, Codec::Json).expect("encodes");
        let outgoing = Outgoing {
            destination: Destination::Queue(queue.clone()),
            message: WireMessage::from_envelope(&envelope),
            delay: None,
        };
        rabbit.publish(outgoing).await.expect("confirmed by the broker over TLS");

        let mut subscription = rabbit.consume(&queue, NonZeroU16::MIN).await.expect("consuming over TLS");
        let delivery = match subscription.next().await {
            SubscriptionEvent::Delivery(delivery) => delivery,
            SubscriptionEvent::Ended(reason) => panic!("the subscription ended: {reason}"),
        };
        let received = delivery.message.to_envelope().expect("a valid envelope");
        assert_eq!(received.meta.id, envelope.meta.id);
        assert_eq!(received.decode::<Ping>().expect("decodes"), Ping { n: 42 });
        subscription.ack(delivery.tag).await.expect("acked");
        subscription.cancel().await.expect("cancelled");

        assert_eq!(rabbit.delete_queue(&queue).await.expect("deleted"), 0, "the message was acked");
        assert!(proxy.handshakes.load(Ordering::SeqCst) >= 1, "the connection went through the TLS proxy");
        rabbit.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_typed_connect_error_without_waiting_for_the_timeout() {
    let Some((proxy, url)) = proxy().await else { return };
    within(LIMIT, async {
        let timeout = Duration::from_secs(10);
        // Only the public web roots are trusted: the proxy's certificate is not.
        let config = RabbitConfig::new(&proxy.amqps_url(&url)).expect("a valid amqps:// URL").connect_timeout(timeout);
        let started = Instant::now();
        let error = RabbitTransport::connect(config).await.expect_err("an untrusted certificate is refused");
        let elapsed = started.elapsed();
        println!("refused as expected after {elapsed:?}: {error}");
        match &error {
            ConnectError::Unreachable { url, reason } => {
                assert!(url.starts_with("amqps://") && url.contains(":***@"), "password masked: {url}");
                assert!(reason.to_lowercase().contains("certificate"), "the reason names the certificate: {reason}");
            }
            other => panic!("expected ConnectError::Unreachable, got {other:?}"),
        }
        assert!(elapsed < timeout / 2, "failed in {elapsed:?}: the handshake failure must not wait for the timeout");
        assert_eq!(proxy.handshakes.load(Ordering::SeqCst), 0, "no handshake completed");
    })
    .await;
}
