//! URL query strings as goim (Go's url.ParseQuery, via gin) reads them:
//! `&`-separated pairs, percent-decoding, `+` as space, repeated keys kept in
//! order. A comma is part of a value.
//!
//! Owns: decoding only. Pairs with a broken percent escape are skipped, as
//! Go skips them.

/// Decoded `(name, value)` pairs in order of appearance.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses the part of a request target after `?` (pass "" for none).
    /// At most `pairs_max` pairs are kept; the caller refuses requests with more.
    pub fn parse(raw: &[u8], pairs_max: usize) -> Result<Query, QueryError> {
        let mut pairs = Vec::new();
        for part in raw.split(|b| *b == b'&') {
            if part.is_empty() {
                continue;
            }
            if pairs.len() == pairs_max {
                return Err(QueryError::TooManyParameters);
            }
            let (name, value) = match part.iter().position(|b| *b == b'=') {
                Some(eq) => (&part[..eq], &part[eq + 1..]),
                None => (part, &b""[..]),
            };
            if let (Some(name), Some(value)) = (decode(name), decode(value)) {
                pairs.push((name, value));
            }
        }
        Ok(Query { pairs })
    }

    /// The first value of `name`, if present.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryError {
    TooManyParameters,
}

fn hex(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one component; `None` for a broken escape.
fn decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let high = hex(*raw.get(i + 1)?)?;
                let low = hex(*raw.get(i + 2)?)?;
                out.push(high << 4 | low);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_repeated_parameters_in_order_and_commas_in_values() {
        let query = Query::parse(b"keys=a&keys=b,c&operation=1000", 100).unwrap();
        assert_eq!(query.all("keys").collect::<Vec<_>>(), vec!["a", "b,c"]);
        assert_eq!(query.first("operation"), Some("1000"));
        assert_eq!(query.first("missing"), None);
    }

    #[test]
    fn percent_decodes_and_reads_plus_as_space() {
        let query = Query::parse(b"keys=k%201%2F%C3%A9&room=a+b&flag", 100).unwrap();
        assert_eq!(query.first("keys"), Some("k 1/é"));
        assert_eq!(query.first("room"), Some("a b"));
        assert_eq!(query.first("flag"), Some(""));
    }

    #[test]
    fn skips_broken_escapes_and_bounds_the_pair_count() {
        let query = Query::parse(b"a=%zz&b=%4&c=ok", 100).unwrap();
        assert_eq!(query.first("a"), None);
        assert_eq!(query.first("b"), None);
        assert_eq!(query.first("c"), Some("ok"));
        assert_eq!(Query::parse(b"a=1&a=2&a=3", 2).unwrap_err(), QueryError::TooManyParameters);
    }
}
