//! Everything the CLI prints goes through [`Output`], which scrubs
//! passwords.

use std::io::Write as _;

use crate::secret::Secrets;

/// Standard output, scrubbed.
#[derive(Debug, Clone)]
pub struct Output {
    secrets: Secrets,
}

impl Output {
    pub fn new(secrets: Secrets) -> Self {
        Output { secrets }
    }

    /// Prints `text` and a newline.
    pub fn line(&self, text: impl AsRef<str>) {
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`| head`) is not an error worth reporting.
        let _ = writeln!(stdout, "{}", self.secrets.scrub(text.as_ref()));
    }

    /// Prints `warning: text` on standard error: something worth a look
    /// that does not fail the command.
    pub fn warn(&self, text: impl AsRef<str>) {
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "warning: {}", self.secrets.scrub(text.as_ref()));
    }

    /// Prints aligned `label  value` pairs.
    pub fn pairs(&self, pairs: &[(&str, String)]) {
        let width = pairs.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        for (label, value) in pairs {
            self.line(format!("{label:<width$}  {value}"));
        }
    }
}

/// `n` and the noun that agrees with it: `1 queue`, `0 queues`,
/// `2 inbox entries`.
pub fn counted(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::counted;

    #[test]
    fn the_noun_agrees_with_the_count() {
        assert_eq!(counted(0u32, "inbox entry", "inbox entries"), "0 inbox entries");
        assert_eq!(counted(1u32, "inbox entry", "inbox entries"), "1 inbox entry");
        assert_eq!(counted(2u64, "dead row", "dead rows"), "2 dead rows");
    }
}
