//! The core NATS client protocol, sans IO: what a client writes (CONNECT,
//! PUB, SUB, UNSUB, PING, PONG) and an incremental parser of what a server
//! sends (INFO, MSG, PING, PONG, +OK, -ERR).
//!
//! Owns: the bytes of the protocol (<https://docs.nats.io/reference/reference-protocols/nats-protocol>).
//! Must never: allocate for a message it parses (ops borrow the input),
//! accept a control line past `CONTROL_LINE_BYTES_MAX` or a payload past
//! the caller's bound, or panic on any input.

use std::fmt::Write;

/// nats-server's own limit on a control line (`max_control_line`).
pub const CONTROL_LINE_BYTES_MAX: usize = 4096;

/// One operation from the server. Borrows the parsed buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerOp<'a> {
    Info(&'a [u8]),
    Msg { subject: &'a [u8], sid: u64, reply: Option<&'a [u8]>, payload: &'a [u8] },
    Ping,
    Pong,
    Ok,
    Err(&'a [u8]),
}

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// A control line longer than `CONTROL_LINE_BYTES_MAX`.
    LineTooLong,
    /// A payload larger than the bound given to `parse`.
    PayloadTooLarge(usize),
    /// Anything else the protocol does not allow (named).
    Bad(&'static str),
}

/// Parses the first operation in `input`: `Ok(None)` when it has not fully
/// arrived, else the operation and the bytes it used.
pub fn parse(input: &[u8], payload_bytes_max: usize) -> Result<Option<(ServerOp<'_>, usize)>, ParseError> {
    let window = &input[..input.len().min(CONTROL_LINE_BYTES_MAX + 2)];
    let Some(newline) = window.iter().position(|b| *b == b'\n') else {
        if input.len() > CONTROL_LINE_BYTES_MAX {
            return Err(ParseError::LineTooLong);
        }
        return Ok(None);
    };
    if newline == 0 || input[newline - 1] != b'\r' {
        return Err(ParseError::Bad("control line not ended by CRLF"));
    }
    let line_end = newline - 1;
    let line = &input[..line_end];
    let after_line = line_end + 2;
    let (verb, rest) = match line.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(space) => (&line[..space], trim_start(&line[space + 1..])),
        None => (line, &line[line.len()..]),
    };
    let op = if verb.eq_ignore_ascii_case(b"MSG") {
        return parse_msg(input, rest, after_line, payload_bytes_max);
    } else if verb.eq_ignore_ascii_case(b"PING") {
        ServerOp::Ping
    } else if verb.eq_ignore_ascii_case(b"PONG") {
        ServerOp::Pong
    } else if verb.eq_ignore_ascii_case(b"INFO") {
        ServerOp::Info(rest)
    } else if verb == b"+OK" || verb.eq_ignore_ascii_case(b"+ok") {
        ServerOp::Ok
    } else if verb.eq_ignore_ascii_case(b"-ERR") {
        ServerOp::Err(rest)
    } else {
        return Err(ParseError::Bad("unknown operation"));
    };
    Ok(Some((op, after_line)))
}

fn trim_start(bytes: &[u8]) -> &[u8] {
    let skip = bytes.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
    &bytes[skip..]
}

/// `MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n`
fn parse_msg<'a>(
    input: &'a [u8],
    args: &'a [u8],
    after_line: usize,
    payload_bytes_max: usize,
) -> Result<Option<(ServerOp<'a>, usize)>, ParseError> {
    let mut fields = args.split(|b| *b == b' ' || *b == b'\t').filter(|f| !f.is_empty());
    let (Some(subject), Some(sid)) = (fields.next(), fields.next()) else {
        return Err(ParseError::Bad("MSG without subject and sid"));
    };
    let (reply, size) = match (fields.next(), fields.next(), fields.next()) {
        (Some(size), None, None) => (None, size),
        (Some(reply), Some(size), None) => (Some(reply), size),
        _ => return Err(ParseError::Bad("MSG with a wrong number of fields")),
    };
    let sid = decimal(sid).ok_or(ParseError::Bad("MSG sid is not a number"))?;
    let size = decimal(size).ok_or(ParseError::Bad("MSG size is not a number"))?;
    let size = usize::try_from(size).map_err(|_| ParseError::PayloadTooLarge(usize::MAX))?;
    if size > payload_bytes_max {
        return Err(ParseError::PayloadTooLarge(size));
    }
    let end = after_line + size;
    if input.len() < end + 2 {
        return Ok(None);
    }
    if &input[end..end + 2] != b"\r\n" {
        return Err(ParseError::Bad("MSG payload not followed by CRLF"));
    }
    Ok(Some((ServerOp::Msg { subject, sid, reply, payload: &input[after_line..end] }, end + 2)))
}

fn decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    text.iter().try_fold(0u64, |n, b| b.is_ascii_digit().then(|| n * 10 + (b - b'0') as u64))
}

/// The `max_payload` of an INFO's JSON, if it says one.
pub fn info_max_payload(info: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(info).ok()?;
    let at = text.find("\"max_payload\"")? + "\"max_payload\"".len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// CONNECT: no +OK per message (`verbose` off), no headers, named for the
/// server's monitoring (`connz`).
pub fn connect(out: &mut Vec<u8>, name: &str) {
    let mut line = String::from("CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"rust\",\"version\":\"");
    line.push_str(env!("CARGO_PKG_VERSION"));
    line.push_str("\",\"protocol\":1,\"headers\":false,\"name\":\"");
    line.extend(name.chars().filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\'));
    line.push_str("\"}\r\n");
    out.extend_from_slice(line.as_bytes());
}

/// PUB: `subject` and `reply` must be valid subjects (see `subject`).
pub fn publish(out: &mut Vec<u8>, subject: &str, reply: Option<&str>, payload: &[u8]) {
    let mut line = String::with_capacity(subject.len() + 32);
    line.push_str("PUB ");
    line.push_str(subject);
    if let Some(reply) = reply {
        line.push(' ');
        line.push_str(reply);
    }
    let _ = write!(line, " {}\r\n", payload.len());
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

pub fn subscribe(out: &mut Vec<u8>, subject: &str, sid: u64) {
    let _ = writeln_crlf(out, format_args!("SUB {subject} {sid}"));
}

pub fn unsubscribe(out: &mut Vec<u8>, sid: u64) {
    let _ = writeln_crlf(out, format_args!("UNSUB {sid}"));
}

pub const PING: &[u8] = b"PING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";

fn writeln_crlf(out: &mut Vec<u8>, args: std::fmt::Arguments<'_>) -> std::fmt::Result {
    let mut line = String::new();
    line.write_fmt(args)?;
    line.push_str("\r\n");
    out.extend_from_slice(line.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_ops(input: &[u8]) -> Vec<String> {
        let mut used = 0;
        let mut ops = Vec::new();
        while let Some((op, n)) = parse(&input[used..], 1024).unwrap() {
            ops.push(format!("{op:?}"));
            used += n;
        }
        assert_eq!(used, input.len());
        ops
    }

    #[test]
    fn every_server_op_parses_and_byte_at_a_time_agrees_with_whole() {
        let input = b"INFO {\"max_payload\":1048576}\r\nPING\r\nMSG a.b 7 5\r\nhello\r\nMSG a.b 9 in.x 0\r\n\r\n+OK\r\n-ERR 'x'\r\npong\r\n";
        let whole = all_ops(input);
        assert_eq!(whole.len(), 7);
        assert!(whole[2].contains("sid: 7") && whole[2].contains("[104, 101, 108, 108, 111]"));
        // Fed one byte at a time, the same ops come out.
        let mut buffer = Vec::new();
        let mut ops = Vec::new();
        for byte in input {
            buffer.push(*byte);
            while let Some((op, n)) = parse(&buffer, 1024).unwrap() {
                ops.push(format!("{op:?}"));
                buffer.drain(..n);
            }
        }
        assert_eq!(ops, whole);
        assert_eq!(info_max_payload(b"{\"a\":1, \"max_payload\" : 2048,\"b\":2}"), Some(2048));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic_or_an_allocation() {
        assert_eq!(parse(b"MSG a 1 99999\r\n", 1024), Err(ParseError::PayloadTooLarge(99999)));
        assert_eq!(
            parse(b"MSG a 1 99999999999999999999999\r\n", 1024).unwrap_err(),
            ParseError::Bad("MSG size is not a number")
        );
        assert!(parse(b"MSG a 1 3\r\nabcXY", 1024).is_err());
        assert!(parse(b"HELLO\r\n", 1024).is_err());
        assert!(parse(b"MSG a\r\n", 1024).is_err());
        assert!(parse(b"PING\n", 1024).is_err());
        assert_eq!(parse(&vec![b'x'; CONTROL_LINE_BYTES_MAX + 1], 1024), Err(ParseError::LineTooLong));
        assert_eq!(parse(b"MSG a 1 3\r\nab", 1024), Ok(None));
    }

    #[test]
    fn what_the_client_writes() {
        let mut out = Vec::new();
        publish(&mut out, "p.key.k", Some("p.in.n.0"), b"xy");
        subscribe(&mut out, "p.room.r", 3);
        unsubscribe(&mut out, 3);
        assert_eq!(out, b"PUB p.key.k p.in.n.0 2\r\nxy\r\nSUB p.room.r 3\r\nUNSUB 3\r\n");
        let mut out = Vec::new();
        connect(&mut out, "node \"1\"");
        assert!(out.starts_with(b"CONNECT {\"verbose\":false") && out.ends_with(b"\"name\":\"node1\"}\r\n"));
    }
}
