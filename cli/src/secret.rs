//! Keeping passwords out of everything the CLI prints: a URL's password is
//! replaced by `***` wherever it would appear, errors included.

/// The password in `url`'s user info (`scheme://user:password@host/...`),
/// if it has one.
fn password(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let (user_info, _) = authority.rsplit_once('@')?;
    let (_, password) = user_info.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// Percent-decodes `text` (the form a driver may echo back).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What must never be printed, learnt from the URLs the CLI was given.
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    words: Vec<String>,
}

impl Secrets {
    /// Remembers the password of `url`, raw and percent-decoded.
    pub fn learn(&mut self, url: &str) {
        if let Some(password) = password(url) {
            let decoded = percent_decoded(password);
            self.words.push(password.to_owned());
            if decoded != password {
                self.words.push(decoded);
            }
            // Longest first, so that a password containing another is
            // replaced whole.
            self.words.sort_by_key(|word| std::cmp::Reverse(word.len()));
        }
    }

    /// `text` with every known password replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for word in &self.words {
            out = out.replace(word.as_str(), "***");
        }
        out
    }
}

/// `url` with its password replaced by `***`, for display.
pub fn redacted(url: &str) -> String {
    let mut secrets = Secrets::default();
    secrets.learn(url);
    secrets.scrub(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_and_scrubbed() {
        assert_eq!(password("postgres://app:s3cret@db:5432/orders"), Some("s3cret"));
        assert_eq!(password("mysql://root@db/test"), None);
        assert_eq!(password("sqlite:app.db"), None);
        assert_eq!(password("postgres://u:p%40ss@db/x?sslmode=require"), Some("p%40ss"));
        assert_eq!(redacted("postgres://app:s3cret@db:5432/orders"), "postgres://app:***@db:5432/orders");
        let mut secrets = Secrets::default();
        secrets.learn("postgres://u:p%40ss@db/x");
        assert_eq!(secrets.scrub("auth failed for p@ss and p%40ss"), "auth failed for *** and ***");
    }
}
