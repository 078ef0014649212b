//! How an exchange matches a published message against its bindings, and
//! the name rules every declaration and publish is checked against.

use hexeract_runtime::Headers;
use hexeract_runtime::ports::transport::{ExchangeKind, TransportError};

/// The longest name, routing key or header name AMQP can carry (a
/// "short string"). The memory broker holds every transport to it, so code
/// that runs here does not kill a RabbitMQ connection later.
pub(crate) const MAX_SHORT_STRING: usize = 255;

/// The binding key of a headers exchange that selects the match mode.
const X_MATCH: &str = "x-match";

/// Checks an exchange or queue name: non-empty, at most 255 bytes, and not
/// in the `amq.` namespace AMQP brokers reserve for themselves.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), TransportError> {
    if name.is_empty() {
        return Err(TransportError::Invalid { what, reason: "the name is empty".into() });
    }
    check_short(what, name)?;
    if name.starts_with("amq.") {
        return Err(TransportError::Invalid { what, reason: format!("`{name}` is in the reserved `amq.` namespace") });
    }
    Ok(())
}

/// Checks that `text` fits an AMQP short string (at most 255 bytes).
pub(crate) fn check_short(what: &'static str, text: &str) -> Result<(), TransportError> {
    if text.len() > MAX_SHORT_STRING {
        return Err(TransportError::Invalid {
            what,
            reason: format!("`{}…` is {} bytes; at most {MAX_SHORT_STRING} are allowed", prefix(text), text.len()),
        });
    }
    Ok(())
}

/// The first few characters of `text`, for error messages about long names.
pub(crate) fn prefix(text: &str) -> &str {
    let end = text.char_indices().nth(32).map_or(text.len(), |(index, _)| index);
    &text[..end]
}

/// A binding's routing key, compiled for its exchange's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// Direct: the routing key must equal this.
    Exact(String),
    /// Topic: dot-separated words, `*` and `#`.
    Topic(Vec<TopicWord>),
    /// Fanout: every message.
    Everything,
    /// Headers: see [`HeaderMatch`].
    Headers(HeaderMatch),
}

/// One word of a topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TopicWord {
    /// This word exactly.
    Literal(String),
    /// `*`: exactly one word.
    One,
    /// `#`: zero or more words.
    Any,
}

/// A headers-exchange binding: `name=value` rules that must all (`x-match=all`,
/// the default) or at least one (`x-match=any`) hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeaderMatch {
    all: bool,
    rules: Vec<HeaderRule>,
}

/// One rule: the header is present, with this value when one is given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeaderRule {
    name: String,
    value: Option<String>,
}

impl Pattern {
    /// Compiles a binding's routing key for an exchange of `kind`.
    ///
    /// # Errors
    /// [`TransportError::Invalid`] for a headers binding that does not parse.
    pub(crate) fn compile(kind: ExchangeKind, routing_key: &str) -> Result<Self, TransportError> {
        Ok(match kind {
            ExchangeKind::Direct => Pattern::Exact(routing_key.to_owned()),
            ExchangeKind::Fanout => Pattern::Everything,
            ExchangeKind::Topic => Pattern::Topic(compile_topic(routing_key)),
            ExchangeKind::Headers => Pattern::Headers(HeaderMatch::parse(routing_key)?),
        })
    }

    /// Whether a message published with `routing_key` and `headers` matches.
    pub(crate) fn matches(&self, routing_key: &str, headers: &Headers) -> bool {
        match self {
            Pattern::Exact(key) => key == routing_key,
            Pattern::Everything => true,
            Pattern::Topic(pattern) => topic_matches(pattern, &words(routing_key)),
            Pattern::Headers(rules) => rules.matches(headers),
        }
    }
}

/// The dot-separated words of a routing key; the empty key has none.
fn words(key: &str) -> Vec<&str> {
    if key.is_empty() { Vec::new() } else { key.split('.').collect() }
}

fn compile_topic(pattern: &str) -> Vec<TopicWord> {
    let mut compiled: Vec<TopicWord> = Vec::new();
    for word in words(pattern) {
        let word = match word {
            "*" => TopicWord::One,
            "#" => TopicWord::Any,
            literal => TopicWord::Literal(literal.to_owned()),
        };
        // `#.#` means the same as `#`; folding them keeps matching linear in
        // practice.
        if !(word == TopicWord::Any && compiled.last() == Some(&TopicWord::Any)) {
            compiled.push(word);
        }
    }
    compiled
}

/// Whether `pattern` matches `words`, by dynamic programming over
/// (pattern position, word position), so a hostile pattern such as
/// `#.a.#.a.#…` costs at most pattern × key steps instead of backtracking
/// exponentially.
fn topic_matches(pattern: &[TopicWord], words: &[&str]) -> bool {
    let count = words.len();
    // `after[j]`: whether the pattern past the current position matches
    // `words[j..]`.
    let mut after = vec![false; count + 1];
    after[count] = true;
    for element in pattern.iter().rev() {
        let mut here = vec![false; count + 1];
        for j in (0..=count).rev() {
            here[j] = match element {
                TopicWord::Any => after[j] || (j < count && here[j + 1]),
                TopicWord::One => j < count && after[j + 1],
                TopicWord::Literal(literal) => j < count && words[j] == literal && after[j + 1],
            };
        }
        after = here;
    }
    after[0]
}

impl HeaderMatch {
    /// Parses the binding-key syntax of a headers exchange: comma-separated
    /// `name=value` rules (a bare `name` only requires the header to be
    /// present), plus an optional `x-match=all` (default) or `x-match=any`.
    /// Whitespace around names and values is ignored. An empty key is
    /// `x-match=all` with no rules, which matches every message.
    fn parse(key: &str) -> Result<Self, TransportError> {
        let invalid = |reason: String| TransportError::Invalid { what: "headers binding", reason };
        let mut all = true;
        let mut rules: Vec<HeaderRule> = Vec::new();
        for part in key.split(',').map(str::trim).filter(|part| !part.is_empty()) {
            let (name, value) = match part.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim())),
                None => (part, None),
            };
            if name.is_empty() {
                return Err(invalid(format!("`{part}` has no header name")));
            }
            if name == X_MATCH {
                all = match value {
                    Some("all") => true,
                    Some("any") => false,
                    _ => return Err(invalid(format!("`{part}`: x-match is `all` or `any`"))),
                };
                continue;
            }
            if rules.iter().any(|rule| rule.name == name) {
                return Err(invalid(format!("header `{name}` appears twice")));
            }
            rules.push(HeaderRule { name: name.to_owned(), value: value.map(str::to_owned) });
        }
        Ok(HeaderMatch { all, rules })
    }

    fn matches(&self, headers: &Headers) -> bool {
        let holds = |rule: &HeaderRule| match (headers.get(&rule.name), &rule.value) {
            (Some(found), Some(wanted)) => found == wanted,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if self.all { self.rules.iter().all(holds) } else { self.rules.iter().any(holds) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(pattern: &str, key: &str) -> bool {
        Pattern::compile(ExchangeKind::Topic, pattern).expect("compiles").matches(key, &Headers::new())
    }

    #[test]
    fn star_matches_exactly_one_word() {
        assert!(topic("orders.*", "orders.placed"));
        assert!(!topic("orders.*", "orders"));
        assert!(!topic("orders.*", "orders.placed.eu"));
        assert!(topic("*.placed", "orders.placed"));
        assert!(!topic("*", ""));
    }

    #[test]
    fn hash_matches_zero_or_more_words() {
        assert!(topic("orders.#", "orders"));
        assert!(topic("orders.#", "orders.placed.eu"));
        assert!(topic("#", ""));
        assert!(topic("#", "a.b.c"));
        assert!(topic("#.eu", "orders.placed.eu"));
        assert!(topic("orders.#.eu", "orders.eu"));
        assert!(topic("orders.#.eu", "orders.x.y.eu"));
        assert!(!topic("orders.#.eu", "orders.x.y.us"));
        assert!(topic("a.#.#.b", "a.b"));
    }

    #[test]
    fn literal_words_match_exactly() {
        assert!(topic("orders.placed", "orders.placed"));
        assert!(!topic("orders.placed", "orders.placed2"));
        assert!(!topic("orders", "Orders"));
        assert!(topic("", ""));
        assert!(!topic("", "a"));
    }

    #[test]
    fn a_hostile_pattern_stays_cheap() {
        let pattern = vec!["#.a"; 60].join(".");
        let key = format!("{}.b", vec!["a"; 120].join("."));
        assert!(!topic(&pattern, &key));
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    fn binding(key: &str) -> Pattern {
        Pattern::compile(ExchangeKind::Headers, key).expect("parses")
    }

    #[test]
    fn headers_all_needs_every_rule() {
        let pattern = binding("format=pdf, type=report");
        assert!(pattern.matches("", &headers(&[("format", "pdf"), ("type", "report"), ("other", "x")])));
        assert!(!pattern.matches("", &headers(&[("format", "pdf")])));
        assert!(!pattern.matches("", &headers(&[("format", "pdf"), ("type", "log")])));
    }

    #[test]
    fn headers_any_needs_one_rule() {
        let pattern = binding("x-match=any,format=pdf,type=report");
        assert!(pattern.matches("", &headers(&[("type", "report")])));
        assert!(!pattern.matches("", &headers(&[("type", "log")])));
        assert!(!pattern.matches("", &Headers::new()));
    }

    #[test]
    fn a_bare_header_name_checks_presence() {
        let pattern = binding("tenant");
        assert!(pattern.matches("", &headers(&[("tenant", "acme")])));
        assert!(!pattern.matches("", &Headers::new()));
    }

    #[test]
    fn an_empty_headers_binding_matches_everything() {
        assert!(binding("").matches("any.key", &Headers::new()));
    }

    #[test]
    fn bad_headers_bindings_are_invalid() {
        for key in ["x-match=some", "=pdf", "a=1,a=2"] {
            let error = Pattern::compile(ExchangeKind::Headers, key).expect_err(key);
            assert!(matches!(error, TransportError::Invalid { what: "headers binding", .. }), "{key}: {error}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("queue name", "orders").is_ok());
        assert!(check_name("queue name", "").is_err());
        assert!(check_name("queue name", &"q".repeat(255)).is_ok());
        assert!(check_name("queue name", &"q".repeat(256)).is_err());
        assert!(check_name("exchange name", "amq.topic").is_err());
    }
}
