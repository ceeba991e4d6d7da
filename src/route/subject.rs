//! Subject names on the bus. Everything a node publishes or subscribes
//! lives under `<subject_prefix>.`:
//!
//! - `room.<room>`: a room's numbered pushes, from its sequencer; a shard
//!   subscribes while it has members of the room (interest).
//! - `key.<key>`, `mid.<mid>`: pushes to a key or mid, and key claims; the
//!   shard holding the connection subscribes.
//! - `all`: broadcasts; every shard subscribes.
//! - `shard.<node>.<shard>`: commands to one shard of one node: requests
//!   to a room's sequencer, and answers to a ticket's or a joiner's home.
//! - `report`: every node's counts and address, every `report_ms`.
//!
//! Owns: the mapping from names to subject tokens. Must never: put a byte
//! in a subject that NATS gives a meaning to (`.`, `*`, `>`, whitespace).

use sha1::{Digest, Sha1};

/// Escaped tokens longer than this are replaced by a digest, so a subject
/// stays far below NATS's 4,096-byte control line.
const TOKEN_BYTES_MAX: usize = 200;

/// `text` as one subject token: ASCII letters, digits and `-` as they are,
/// any other byte as `_xx` (hex). Long tokens become `~` + SHA-1 (hex).
pub fn token(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push('_');
            out.push(hex(byte >> 4));
            out.push(hex(byte & 15));
        }
    }
    if out.len() > TOKEN_BYTES_MAX {
        let digest = Sha1::digest(text.as_bytes());
        out.clear();
        out.push('~');
        for byte in digest {
            out.push(hex(byte >> 4));
            out.push(hex(byte & 15));
        }
    }
    out
}

fn hex(nibble: u8) -> char {
    b"0123456789abcdef"[nibble as usize & 15] as char
}

/// The subjects of one cluster (one prefix).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: &str) -> Subjects {
        Subjects { prefix: prefix.to_string() }
    }

    pub fn room(&self, room: &str) -> String {
        format!("{}.room.{}", self.prefix, token(room))
    }

    pub fn key(&self, key: &str) -> String {
        format!("{}.key.{}", self.prefix, token(key))
    }

    pub fn mid(&self, mid: i64) -> String {
        format!("{}.mid.{mid}", self.prefix)
    }

    pub fn all(&self) -> String {
        format!("{}.all", self.prefix)
    }

    pub fn shard(&self, node: &str, shard: usize) -> String {
        format!("{}.shard.{}.{shard}", self.prefix, token(node))
    }

    pub fn report(&self) -> String {
        format!("{}.report", self.prefix)
    }
}

/// Whether `prefix` is usable as the first tokens of a subject.
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix
            .split('.')
            .all(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_safe_bytes_escape_the_rest_and_hash_long_ones() {
        assert_eq!(token("live://1000"), "live_3a_2f_2f1000");
        assert_eq!(token("a.b c*>"), "a_2eb_20c_2a_3e");
        assert_ne!(token("a_2e"), token("a."), "the escape byte is escaped itself");
        let long = "x".repeat(500);
        assert_eq!(token(&long).len(), 41);
        assert_ne!(token(&long), token(&"x".repeat(501)));
        let subjects = Subjects::new("cc");
        assert_eq!(subjects.shard("host.example:3101", 1), "cc.shard.host_2eexample_3a3101.1");
        assert!(valid_prefix("corecast") && valid_prefix("a.b-c") && !valid_prefix("a..b") && !valid_prefix("a*"));
    }
}
