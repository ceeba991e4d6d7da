//! Verified auth tokens (off by default: goim trusts whatever mid a client
//! claims). When `[auth] jwt_algorithm` is set, the goim token must carry
//! `"token": "<JWT>"` signed by the business back end (HS256 with
//! `jwt_secret`, RS256 or ES256 with the PEM public key at
//! `jwt_public_key_path`), whose claims bind the connection:
//!
//! - `exp` (required): past it the token is refused;
//! - `mid` (required) and `key` (when present) must equal the token's;
//! - `room_id` must equal the room the client asks for, and later room
//!   changes may go only to it or to the rooms listed in `rooms`;
//! - `accepts` (when present) replaces the operations the client asked for.
//!
//! Owns: the verification and the claim rules. Must never: accept an
//! algorithm other than the configured one (no "none", no HS256 with a
//! public key), or log a token.

use crate::proto::goim::auth::Token;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Seconds of clock difference tolerated on `exp`.
const LEEWAY_S: u64 = 5;

#[derive(Debug, Deserialize)]
struct Claims {
    mid: i64,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    room_id: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    accepts: Option<Vec<i32>>,
}

/// Why a token was refused (for the log; the close reason is `token_refused`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Expired,
    BadSignature,
    Malformed(String),
    WrongMid,
    WrongKey,
    WrongRoom,
}

/// The rooms a verified connection may be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    rooms: Vec<Box<str>>,
}

impl Grant {
    pub fn allows(&self, room: &str) -> bool {
        self.rooms.iter().any(|r| &**r == room)
    }
}

pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// The verifier `[auth]` asks for, or `None` when tokens are not verified.
    pub fn from_config(auth: &crate::config::AuthSection) -> Result<Option<Verifier>, String> {
        let read_key = || {
            std::fs::read(&auth.jwt_public_key_path)
                .map_err(|e| format!("auth.jwt_public_key_path: {}: {e}", auth.jwt_public_key_path))
        };
        let (algorithm, key) = match auth.jwt_algorithm.as_str() {
            "" => return Ok(None),
            "HS256" if auth.jwt_secret.is_empty() => return Err("auth.jwt_secret is needed for HS256".into()),
            "HS256" => (Algorithm::HS256, DecodingKey::from_secret(auth.jwt_secret.as_bytes())),
            "RS256" => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(&read_key()?).map_err(|e| format!("auth.jwt_public_key_path: {e}"))?,
            ),
            "ES256" => (
                Algorithm::ES256,
                DecodingKey::from_ec_pem(&read_key()?).map_err(|e| format!("auth.jwt_public_key_path: {e}"))?,
            ),
            other => return Err(format!("auth.jwt_algorithm must be \"\", HS256, RS256 or ES256, not {other:?}")),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_S;
        validation.set_required_spec_claims(&["exp"]);
        Ok(Some(Verifier { key, validation }))
    }

    /// Checks `token.token` against the claim rules; on success the token's
    /// accepts are the signed ones (when signed) and the grant says where
    /// the connection may go.
    pub fn verify(&self, token: &mut Token) -> Result<Grant, Refusal> {
        if token.token.is_empty() {
            return Err(Refusal::Missing);
        }
        let claims = jsonwebtoken::decode::<Claims>(&token.token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Refusal::Expired,
                jsonwebtoken::errors::ErrorKind::InvalidSignature => Refusal::BadSignature,
                _ => Refusal::Malformed(e.to_string()),
            })?
            .claims;
        if claims.mid != token.mid {
            return Err(Refusal::WrongMid);
        }
        if claims.key.as_ref().is_some_and(|key| *key != token.key) {
            return Err(Refusal::WrongKey);
        }
        let mut rooms: Vec<Box<str>> = claims.rooms.into_iter().map(String::into_boxed_str).collect();
        if let Some(room) = claims.room_id {
            rooms.push(room.into_boxed_str());
        }
        let grant = Grant { rooms };
        if !token.room_id.is_empty() && !grant.allows(&token.room_id) {
            return Err(Refusal::WrongRoom);
        }
        if let Some(mut accepts) = claims.accepts {
            accepts.sort_unstable();
            accepts.dedup();
            accepts.truncate(crate::proto::goim::auth::ACCEPTS_MAX);
            token.accepts = accepts;
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn verifier() -> Verifier {
        let auth = crate::config::AuthSection {
            jwt_algorithm: "HS256".into(),
            jwt_secret: "business-secret".into(),
            ..Default::default()
        };
        Verifier::from_config(&auth).unwrap().unwrap()
    }

    fn signed(claims: serde_json::Value, secret: &str) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    fn token(jwt: String) -> Token {
        Token { mid: 7, key: "k".into(), room_id: "live://1".into(), token: jwt, ..Default::default() }
    }

    fn later() -> u64 {
        jsonwebtoken::get_current_timestamp() + 600
    }

    #[test]
    fn a_signed_token_binds_mid_key_room_and_accepts() {
        let jwt = signed(
            serde_json::json!({"mid": 7, "key": "k", "room_id": "live://1", "rooms": ["live://2"], "accepts": [1001, 1000], "exp": later()}),
            "business-secret",
        );
        let mut t = token(jwt);
        t.accepts = vec![1, 2, 3];
        let grant = verifier().verify(&mut t).unwrap();
        assert_eq!(t.accepts, vec![1000, 1001], "the signed accepts win");
        assert!(grant.allows("live://1") && grant.allows("live://2") && !grant.allows("live://3"));
    }

    #[test]
    fn forged_expired_and_mismatched_tokens_are_refused() {
        let v = verifier();
        let claims = |mid: i64, room: &str, exp: u64| serde_json::json!({"mid": mid, "room_id": room, "exp": exp});
        let cases = [
            (signed(claims(7, "live://1", later()), "someone-else"), Refusal::BadSignature),
            (signed(claims(7, "live://1", 1_000), "business-secret"), Refusal::Expired),
            (signed(claims(8, "live://1", later()), "business-secret"), Refusal::WrongMid),
            (signed(claims(7, "live://9", later()), "business-secret"), Refusal::WrongRoom),
            (String::new(), Refusal::Missing),
        ];
        for (jwt, refusal) in cases {
            assert_eq!(v.verify(&mut token(jwt)), Err(refusal));
        }
        let no_exp = signed(serde_json::json!({"mid": 7, "room_id": "live://1"}), "business-secret");
        assert!(matches!(v.verify(&mut token(no_exp)), Err(Refusal::Malformed(_))));
        assert!(matches!(v.verify(&mut token("not.a.jwt".into())), Err(Refusal::Malformed(_))));
    }
}
