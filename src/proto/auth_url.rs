//! Asking the business back end whether a client may connect (`[auth] url`,
//! off by default): the URL, the request and the verdict, sans IO
//! (`shard::auth_call` makes the call).
//!
//! The request is `POST <path>` carrying the client's auth frame body as it
//! came (goim's token JSON), with `X-Corecast-Client-Ip` and
//! `X-Corecast-Transport` (tcp, ws or wss). A 2xx answer admits the client;
//! any other 1xx-4xx status refuses it (`auth_denied`); a 5xx, an answer
//! that is not HTTP, a closed connection or no answer within
//! `auth.url_timeout_ms` refuses it too (`auth_unavailable`): the check
//! fails closed. Only the status line and headers are read.
//!
//! Owns: the URL's rules (http:// only; the host is resolved once, at
//! start), the request bytes and the verdict. Must never: admit on anything
//! but a 2xx, or read an answer's head past `ANSWER_HEAD_BYTES_MAX`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// An answer whose head is not complete within this many bytes is not
/// taken as an answer (`Verdict::Unavailable`).
pub const ANSWER_HEAD_BYTES_MAX: usize = 8192;

/// The business auth URL, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUrl {
    pub addr: SocketAddr,
    /// The `Host` header: the URL's authority as written.
    host: String,
    path: String,
}

/// What the back end said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// A status that is neither 2xx nor 5xx.
    Deny(u16),
    /// No usable answer: why.
    Unavailable(String),
}

impl AuthUrl {
    /// `None` when `url` is empty (the check is off).
    pub fn from_config(auth: &crate::config::AuthSection) -> Result<Option<AuthUrl>, String> {
        if auth.url.is_empty() {
            return Ok(None);
        }
        AuthUrl::parse(&auth.url).map(Some)
    }

    /// `http://host[:port][/path]`; the host is resolved now.
    pub fn parse(url: &str) -> Result<AuthUrl, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(format!(
                "auth.url must start with http:// (got {url:?}); https is not supported: \
                 reach the auth service over a trusted network or a local proxy"
            ));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) if rest.as_bytes()[at] == b'/' => (&rest[..at], &rest[at..]),
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("auth.url {url:?}: a host is needed, and no user info"));
        }
        let visible = |text: &str| text.bytes().all(|b| b.is_ascii_graphic());
        if !visible(authority) || !visible(&path) || path.contains('#') {
            return Err(format!("auth.url {url:?}: only visible ASCII, no fragment"));
        }
        let has_port = match authority.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => authority.contains(':'),
        };
        let with_port = if has_port { authority.to_string() } else { format!("{authority}:80") };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("auth.url {url:?}: cannot resolve {with_port}: {e}"))?
            .next()
            .ok_or_else(|| format!("auth.url {url:?}: {with_port} resolves to no address"))?;
        Ok(AuthUrl { addr, host: authority.to_string(), path })
    }

    /// The whole request for one client.
    pub fn request(&self, token_body: &[u8], client_ip: IpAddr, transport: &str) -> Vec<u8> {
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\nX-Corecast-Client-Ip: {client_ip}\r\nX-Corecast-Transport: {transport}\r\n\r\n",
            self.path,
            self.host,
            token_body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(token_body);
        request
    }
}

/// The verdict on the answer so far; `None`: its head is not complete yet.
pub fn verdict(answer: &[u8]) -> Option<Verdict> {
    match crate::proto::http::head::parse_response(answer, ANSWER_HEAD_BYTES_MAX) {
        Ok(None) => None,
        Ok(Some(status)) if (200..300).contains(&status) => Some(Verdict::Allow),
        Ok(Some(status)) if status >= 500 => Some(Verdict::Unavailable(format!("status {status}"))),
        Ok(Some(status)) => Some(Verdict::Deny(status)),
        Err(crate::proto::http::head::HeadError::TooLarge) => {
            Some(Verdict::Unavailable(format!("answer head past {ANSWER_HEAD_BYTES_MAX} bytes")))
        }
        Err(crate::proto::http::head::HeadError::Malformed) => Some(Verdict::Unavailable("not an HTTP answer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_with_a_host_and_visible_ascii_only() {
        let url = AuthUrl::parse("http://127.0.0.1:8080/goim/auth?app=1").unwrap();
        assert_eq!(url.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((url.host.as_str(), url.path.as_str()), ("127.0.0.1:8080", "/goim/auth?app=1"));
        assert_eq!(AuthUrl::parse("http://127.0.0.1").unwrap().addr.port(), 80);
        assert_eq!(AuthUrl::parse("http://[::1]:81").unwrap().addr, "[::1]:81".parse().unwrap());
        assert_eq!(AuthUrl::parse("http://[::1]").unwrap().path, "/");
        assert_eq!(AuthUrl::parse("http://127.0.0.1:9?q").unwrap().path, "/?q");
        for bad in [
            "https://127.0.0.1/",
            "127.0.0.1:80",
            "http://",
            "http://u:p@127.0.0.1/",
            "http://h/a b",
            "http://h/\r\nX: y",
        ] {
            assert!(AuthUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_request_carries_the_token_as_it_came() {
        let url = AuthUrl::parse("http://127.0.0.1:8080/auth").unwrap();
        let request = url.request(br#"{"mid":1}"#, "10.0.0.7".parse().unwrap(), "ws");
        let text = String::from_utf8(request).unwrap();
        assert!(text.starts_with("POST /auth HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"), "{text}");
        assert!(text.contains("Content-Length: 9\r\n") && text.contains("X-Corecast-Client-Ip: 10.0.0.7\r\n"));
        assert!(text.contains("X-Corecast-Transport: ws\r\n") && text.ends_with("\r\n\r\n{\"mid\":1}"));
    }

    #[test]
    fn only_a_2xx_admits() {
        assert_eq!(verdict(b"HTTP/1.1 200 OK\r\n\r\n"), Some(Verdict::Allow));
        assert_eq!(verdict(b"HTTP/1.0 204 No Content\r\nX: y\r\n\r\n"), Some(Verdict::Allow));
        assert_eq!(verdict(b"HTTP/1.1 403 Forbidden\r\n\r\n"), Some(Verdict::Deny(403)));
        assert_eq!(verdict(b"HTTP/1.1 302 Found\r\n\r\n"), Some(Verdict::Deny(302)));
        assert!(matches!(verdict(b"HTTP/1.1 503 Busy\r\n\r\n"), Some(Verdict::Unavailable(_))));
        assert!(matches!(verdict(b"garbage\r\n\r\n"), Some(Verdict::Unavailable(_))));
        assert_eq!(verdict(b"HTTP/1.1 200 OK\r\n"), None, "the head is not complete");
        let endless = [&b"HTTP/1.1 200 OK\r\n"[..], &b"X: y\r\n".repeat(2000)].concat();
        assert!(matches!(verdict(&endless), Some(Verdict::Unavailable(_))), "bounded");
    }
}
