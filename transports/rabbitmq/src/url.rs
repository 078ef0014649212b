//! An AMQP URL that never shows its password: not in `Debug`, not in
//! `Display`, not in any error this crate builds.

use std::fmt;
use std::str::FromStr;

use lapin::uri::{AMQPScheme, AMQPUri};

/// A parsed `amqp://` or `amqps://` URL. Printing it masks the password.
#[derive(Clone)]
pub struct AmqpUrl {
    uri: AMQPUri,
}

/// Why a URL was refused. Says what is wrong without repeating the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid AMQP URL: {0}")]
pub struct InvalidUrl(String);

impl AmqpUrl {
    /// Parses `text` (`amqp://user:password@host:port/vhost`, `amqps://` for TLS).
    ///
    /// # Errors
    /// [`InvalidUrl`], whose message never contains the text itself.
    pub fn parse(text: &str) -> Result<Self, InvalidUrl> {
        let scheme = text.split_once("://").map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("amqp" | "amqps")) {
            return Err(InvalidUrl("the scheme must be `amqp://` or `amqps://`".into()));
        }
        // The parser's messages describe the problem, never echo the input.
        let uri = AMQPUri::from_str(text).map_err(InvalidUrl)?;
        Ok(AmqpUrl { uri })
    }

    /// Whether the connection is over TLS (`amqps://`).
    pub fn is_tls(&self) -> bool {
        self.uri.scheme == AMQPScheme::AMQPS
    }

    /// The host and port, for messages.
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.uri.authority.host, self.uri.authority.port)
    }

    pub(crate) fn uri(&self) -> &AMQPUri {
        &self.uri
    }
}

impl FromStr for AmqpUrl {
    type Err = InvalidUrl;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AmqpUrl::parse(text)
    }
}

impl fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.is_tls() { "amqps" } else { "amqp" };
        let authority = &self.uri.authority;
        let vhost = if self.uri.vhost == "/" { "%2f".to_owned() } else { self.uri.vhost.clone() };
        write!(f, "{scheme}://{}:***@{}:{}/{vhost}", authority.userinfo.username, authority.host, authority.port)
    }
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmqpUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_printed() {
        let url = AmqpUrl::parse("amqp://guest:s3cret-pass@127.0.0.1:5672/%2f").expect("valid");
        for shown in [url.to_string(), format!("{url:?}"), format!("{:?}", Some(&url))] {
            assert!(!shown.contains("s3cret-pass"), "{shown}");
            assert!(shown.contains("guest:***@127.0.0.1:5672"), "{shown}");
        }
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        for text in ["http://guest:s3cret@host", "amqp://guest:s3cret@host:notaport/%2f", "s3cret"] {
            let error = AmqpUrl::parse(text).expect_err("refused");
            assert!(!error.to_string().contains("s3cret"), "{error}");
        }
    }
}
