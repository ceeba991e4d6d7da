//! The auth token: the JSON body of the first frame (op 7).
//!
//! Owns: parsing and normalising the token. Must never: trust its sizes
//! (the frame body limit bounds the token; accepts are capped below).

use serde::Deserialize;

/// Accept lists longer than this are refused: a token is at most one frame
/// body (4 KiB), and no client needs more distinct operations than this.
pub const ACCEPTS_MAX: usize = 512;

/// `{"mid": 123, "key": "", "room_id": "live://1000", "platform": "web", "accepts": [1000]}`,
/// plus corecast's optional `"positions": true` and
/// `"recover": {"epoch": "E", "offset": N}` (docs/positions.md sections 3 and 4).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(default)]
pub struct Token {
    pub mid: i64,
    pub key: String,
    pub room_id: String,
    pub platform: String,
    pub accepts: Vec<i32>,
    pub positions: bool,
    pub recover: Option<Recover>,
    /// A signed JWT binding the fields above, when `[auth]` verifies tokens
    /// (`jwt`); ignored otherwise.
    pub token: String,
}

/// "I have every push of my room up to `offset` of `epoch`."
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct Recover {
    pub epoch: String,
    pub offset: u32,
}

impl Token {
    /// Positions were asked for, directly or by asking to recover.
    pub fn wants_positions(&self) -> bool {
        self.positions || self.recover.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    NotJson(String),
    TooManyAccepts(usize),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::NotJson(why) => write!(f, "auth token is not valid JSON: {why}"),
            TokenError::TooManyAccepts(n) => {
                write!(f, "auth token lists {n} accepts (max {ACCEPTS_MAX})")
            }
        }
    }
}

/// Parses a token. `scratch` is reused between calls (simd-json parses in place).
pub fn parse(body: &[u8], scratch: &mut Vec<u8>) -> Result<Token, TokenError> {
    scratch.clear();
    scratch.extend_from_slice(body);
    let mut token: Token = simd_json::serde::from_slice(scratch).map_err(|e| TokenError::NotJson(e.to_string()))?;
    if token.accepts.len() > ACCEPTS_MAX {
        return Err(TokenError::TooManyAccepts(token.accepts.len()));
    }
    token.accepts.sort_unstable();
    token.accepts.dedup();
    Ok(token)
}

/// Parses a comma list of operations (`"1000,1001"`) as goim's sub/unsub do.
/// A list with anything that is not an int32 is ignored as a whole (None).
pub fn parse_op_list(body: &[u8]) -> Option<Vec<i32>> {
    let text = std::str::from_utf8(body).ok()?;
    let mut ops = Vec::new();
    for part in text.split(',') {
        if ops.len() >= ACCEPTS_MAX {
            return None;
        }
        ops.push(part.trim().parse::<i32>().ok()?);
    }
    Some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_goim_token() {
        let body =
            br#"{"mid": 123, "key": "k1", "room_id": "live://1000", "platform": "web", "accepts": [1002, 1000, 1000]}"#;
        let token = parse(body, &mut Vec::new()).unwrap();
        assert_eq!(token.mid, 123);
        assert_eq!(token.key, "k1");
        assert_eq!(token.room_id, "live://1000");
        assert_eq!(token.accepts, vec![1000, 1002]);
    }

    #[test]
    fn positions_and_recover_are_read() {
        let token = parse(br#"{"room_id":"live://1","positions":true}"#, &mut Vec::new()).unwrap();
        assert!(token.wants_positions());
        assert_eq!(token.recover, None);
        let token = parse(br#"{"recover":{"epoch":"Ab3","offset":42}}"#, &mut Vec::new()).unwrap();
        assert!(token.wants_positions());
        assert_eq!(token.recover, Some(Recover { epoch: "Ab3".into(), offset: 42 }));
        assert!(parse(br#"{"recover":{"epoch":"E","offset":-1}}"#, &mut Vec::new()).is_err());
        assert!(!parse(b"{}", &mut Vec::new()).unwrap().wants_positions());
    }

    #[test]
    fn missing_fields_take_defaults() {
        let token = parse(b"{}", &mut Vec::new()).unwrap();
        assert_eq!(token, Token::default());
    }

    #[test]
    fn garbage_and_wrong_types_are_refused() {
        assert!(parse(b"not json", &mut Vec::new()).is_err());
        assert!(parse(b"", &mut Vec::new()).is_err());
        assert!(parse(br#"{"mid":"abc"}"#, &mut Vec::new()).is_err());
        assert!(parse(br#"{"accepts":[99999999999]}"#, &mut Vec::new()).is_err());
    }

    #[test]
    fn op_lists_parse_or_are_ignored_whole() {
        assert_eq!(parse_op_list(b"1000,1001"), Some(vec![1000, 1001]));
        assert_eq!(parse_op_list(b"1000,x"), None);
        assert_eq!(parse_op_list(b""), None);
    }
}
