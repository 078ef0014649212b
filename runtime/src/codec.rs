//! Codecs: how a message body becomes bytes and back.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::BoxError;

/// A body encoding. JSON is the default because every language reads it;
/// MessagePack is smaller and faster, with field names kept (`to_vec_named`)
/// so that adding a field does not break older readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// `application/json` (serde_json).
    #[default]
    Json,
    /// `application/msgpack` (rmp-serde, named fields).
    MessagePack,
}

impl Codec {
    /// The MIME content type written on the wire.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::MessagePack => "application/msgpack",
        }
    }

    /// The codec for a content type, ignoring parameters such as `; charset=utf-8`.
    ///
    /// # Errors
    /// [`CodecError::UnknownContentType`] for anything but JSON and MessagePack.
    pub fn from_content_type(content_type: &str) -> Result<Codec, CodecError> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        match essence.to_ascii_lowercase().as_str() {
            "application/json" => Ok(Codec::Json),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => Ok(Codec::MessagePack),
            _ => Err(CodecError::UnknownContentType(content_type.to_owned())),
        }
    }

    /// Encodes `value`, the body of the message called `name`.
    ///
    /// # Errors
    /// [`CodecError::Encode`] when serde refuses the value (a map with
    /// non-string keys in JSON, for instance).
    pub fn encode<T: Serialize + ?Sized>(self, name: &str, value: &T) -> Result<Vec<u8>, CodecError> {
        let result: Result<Vec<u8>, BoxError> = match self {
            Codec::Json => serde_json::to_vec(value).map_err(Into::into),
            Codec::MessagePack => rmp_serde::to_vec_named(value).map_err(Into::into),
        };
        result.map_err(|source| CodecError::Encode { message: name.to_owned(), codec: self, source })
    }

    /// Decodes the body of the message called `name`.
    ///
    /// # Errors
    /// [`CodecError::Decode`], naming the message and the codec, with serde's
    /// reason (missing field, wrong type, truncated input...) as the source.
    pub fn decode<T: DeserializeOwned>(self, name: &str, bytes: &[u8]) -> Result<T, CodecError> {
        let result: Result<T, BoxError> = match self {
            Codec::Json => serde_json::from_slice(bytes).map_err(Into::into),
            Codec::MessagePack => rmp_serde::from_slice(bytes).map_err(Into::into),
        };
        result.map_err(|source| CodecError::Decode { message: name.to_owned(), codec: self, source })
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.content_type())
    }
}

/// Why a body could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("cannot encode message `{message}` as {codec}")]
    Encode {
        /// The message's wire name.
        message: String,
        /// The codec that refused it.
        codec: Codec,
        /// serde's reason.
        #[source]
        source: BoxError,
    },
    /// The bytes are not a valid body for the message.
    #[error("cannot decode message `{message}` from {codec}")]
    Decode {
        /// The message's wire name.
        message: String,
        /// The codec that was used.
        codec: Codec,
        /// serde's reason.
        #[source]
        source: BoxError,
    },
    /// The envelope carries another message than the one asked for.
    #[error("envelope holds message `{found}`, not `{expected}`")]
    NameMismatch {
        /// The wire name asked for.
        expected: String,
        /// The wire name in the envelope.
        found: String,
    },
    /// A content type no codec reads.
    #[error("unknown content type `{0}`; expected application/json or application/msgpack")]
    UnknownContentType(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Order {
        sku: String,
        qty: u32,
    }

    #[test]
    fn both_codecs_round_trip() {
        let order = Order { sku: "a-1".into(), qty: 3 };
        for codec in [Codec::Json, Codec::MessagePack] {
            let bytes = codec.encode("orders.v1", &order).expect("encode");
            let back: Order = codec.decode("orders.v1", &bytes).expect("decode");
            assert_eq!(back, order);
        }
    }

    #[test]
    fn msgpack_keeps_field_names_so_new_fields_can_be_skipped() {
        #[derive(Serialize)]
        struct OrderV2 {
            qty: u32,
            extra: bool,
            sku: String,
        }
        let bytes =
            Codec::MessagePack.encode("orders.v1", &OrderV2 { qty: 1, extra: true, sku: "b".into() }).expect("encode");
        let old: Order = Codec::MessagePack.decode("orders.v1", &bytes).expect("decode");
        assert_eq!(old, Order { sku: "b".into(), qty: 1 });
    }

    #[test]
    fn decode_error_names_the_message_and_the_reason() {
        let err = Codec::Json.decode::<Order>("orders.v1", b"{\"sku\": 5}").expect_err("must fail");
        assert!(err.to_string().contains("orders.v1"), "{err}");
        let source = std::error::Error::source(&err).expect("has a source").to_string();
        assert!(source.contains("invalid type"), "{source}");
    }

    #[test]
    fn content_types_parse_with_parameters() {
        assert_eq!(Codec::from_content_type("application/json; charset=utf-8").ok(), Some(Codec::Json));
        assert_eq!(Codec::from_content_type("application/msgpack").ok(), Some(Codec::MessagePack));
        assert!(matches!(Codec::from_content_type("text/plain"), Err(CodecError::UnknownContentType(_))));
    }
}
