//! HTTP/1.1 responses and goim's JSON envelope `{"code","message","data"}`.
//!
//! Owns: the bytes of every reply the API sends. Must never: emit a string
//! into JSON without escaping it.

use std::fmt::Write;

/// goim's result codes.
pub const OK: i32 = 0;
pub const REQUEST_ERROR: i32 = -400;
pub const SERVER_ERROR: i32 = -500;

/// Appends one complete response to `out`.
pub fn write(out: &mut Vec<u8>, status: u16, reason: &str, content_type: &str, body: &[u8], close: bool) {
    let connection = if close { "close" } else { "keep-alive" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Access-Control-Allow-Origin: *\r\nConnection: {connection}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
}

/// `{"code":code,"message":"..."}` plus `,"data":data` when given (raw JSON).
pub fn envelope(code: i32, message: &str, data: Option<&str>) -> String {
    let mut json = String::with_capacity(64 + data.map_or(0, str::len));
    let _ = write!(json, "{{\"code\":{code},\"message\":");
    push_string(&mut json, message);
    if let Some(data) = data {
        json.push_str(",\"data\":");
        json.push_str(data);
    }
    json.push('}');
    json
}

/// Appends `text` as a JSON string literal.
pub fn push_string(json: &mut String, text: &str) {
    json.push('"');
    for c in text.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            '\n' => json.push_str("\\n"),
            '\r' => json.push_str("\\r"),
            '\t' => json.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(json, "\\u{:04x}", c as u32);
            }
            c => json.push(c),
        }
    }
    json.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_matches_goim() {
        assert_eq!(envelope(OK, "", None), r#"{"code":0,"message":""}"#);
        assert_eq!(envelope(REQUEST_ERROR, "bad \"x\"\n", None), r#"{"code":-400,"message":"bad \"x\"\n"}"#);
        assert_eq!(envelope(OK, "", Some("[]")), r#"{"code":0,"message":"","data":[]}"#);
    }

    #[test]
    fn responses_carry_length_and_connection() {
        let mut out = Vec::new();
        write(&mut out, 200, "OK", "application/json", b"{}", false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 2\r\n"));
        assert!(text.contains("Connection: keep-alive\r\n"));
        assert!(text.ends_with("\r\n\r\n{}"));
    }
}
