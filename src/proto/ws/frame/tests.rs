//! Tests of `frame`.

use super::*;

const MAX: usize = 4112;
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: masked with `MASK`, minimal length form.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_header(&mut out, first & 0x0F, payload.len());
    out[0] = first;
    out[1] |= 0x80;
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// An owned copy of an event, so tests can collect them across calls.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Binary(Vec<u8>),
    Text(String),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>, String),
    Fragment,
    Compressed(u8, Vec<u8>),
}

fn own(event: Event<'_>) -> Owned {
    match event {
        Event::Binary(p) => Owned::Binary(p.into_owned()),
        Event::Text(t) => Owned::Text(t.into_owned()),
        Event::Ping(p) => Owned::Ping(p.to_vec()),
        Event::Pong => Owned::Pong,
        Event::Close { code, reason } => Owned::Close(code, reason.to_string()),
        Event::Fragment => Owned::Fragment,
        Event::Compressed { opcode, payload } => Owned::Compressed(opcode, payload.into_owned()),
    }
}

/// Decodes a whole stream given at once; stops at the first error.
fn decode_all(decoder: &mut Decoder, input: &[u8]) -> (Vec<Owned>, Option<CloseCode>, usize) {
    let mut buf = input.to_vec();
    let mut events = Vec::new();
    let mut at = 0;
    loop {
        match decoder.decode(&mut buf[at..]) {
            Ok(Some((event, used))) => {
                events.push(own(event));
                at += used;
            }
            Ok(None) => return (events, None, at),
            Err(code) => return (events, Some(code), at),
        }
    }
}

/// Feeds `input` one byte at a time, as a connection loop with a read
/// buffer would, decoding every frame as soon as it is complete.
fn decode_bytewise(decoder: &mut Decoder, input: &[u8]) -> (Vec<Owned>, Option<CloseCode>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    for &byte in input {
        buf.push(byte);
        loop {
            let before = buf.clone();
            match decoder.decode(&mut buf) {
                Ok(Some((event, used))) => {
                    events.push(own(event));
                    buf.drain(..used);
                }
                Ok(None) => {
                    assert_eq!(buf, before, "input changed on Ok(None)");
                    break;
                }
                Err(code) => return (events, Some(code)),
            }
        }
    }
    (events, None)
}

fn one(input: &[u8]) -> Result<Owned, CloseCode> {
    let mut decoder = Decoder::new(MAX);
    let mut buf = input.to_vec();
    match decoder.decode(&mut buf)? {
        Some((event, used)) => {
            assert_eq!(used, input.len());
            Ok(own(event))
        }
        None => panic!("frame incomplete"),
    }
}

fn error(input: &[u8]) -> CloseCode {
    let (_, error, _) = decode_all(&mut Decoder::new(MAX), input);
    error.expect("expected an error")
}

// RFC 6455 section 5.7 examples.

#[test]
fn rfc_masked_hello_text() {
    let input = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    assert_eq!(one(&input), Ok(Owned::Text("Hello".to_string())));
    assert_eq!(client_frame(0x81, b"Hello"), input);
}

#[test]
fn rfc_unmasked_hello_is_what_the_server_sends_and_refused_from_a_client() {
    let unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    let mut out = Vec::new();
    encode_header(&mut out, opcode::TEXT, 5);
    out.extend_from_slice(b"Hello");
    assert_eq!(out, unmasked);
    assert_eq!(error(&unmasked), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn rfc_fragmented_hel_lo_is_reassembled() {
    let mut input = client_frame(0x01, b"Hel");
    input.extend(client_frame(0x80, b"lo"));
    let mut decoder = Decoder::new(MAX);
    let (events, error, used) = decode_all(&mut decoder, &input);
    assert_eq!(error, None);
    assert_eq!(used, input.len());
    assert_eq!(events, vec![Owned::Fragment, Owned::Text("Hello".to_string())]);
    assert_eq!(decoder.buffered_bytes(), 0);
    assert!(decoder.partial.is_none(), "nothing held between messages");
}

#[test]
fn rfc_ping_and_pong() {
    assert_eq!(one(&client_frame(0x89, b"Hello")), Ok(Owned::Ping(b"Hello".to_vec())));
    assert_eq!(encode_pong(b"Hello"), [0x8a, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    let masked_pong = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    assert_eq!(one(&masked_pong), Ok(Owned::Pong));
}

#[test]
fn rfc_256_byte_binary_uses_the_16_bit_length() {
    let payload: Vec<u8> = (0..256).map(|i| i as u8).collect();
    let frame = encode_binary(&payload);
    assert_eq!(frame[..4], [0x82, 0x7E, 0x01, 0x00]);
    assert_eq!(frame.len(), 4 + 256);
    assert_eq!(header_len(256), 4);
    assert_eq!(one(&client_frame(0x82, &payload)), Ok(Owned::Binary(payload)));
}

#[test]
fn rfc_64_kib_binary_uses_the_64_bit_length() {
    let payload: Vec<u8> = (0..65536).map(|i| (i * 7) as u8).collect();
    let frame = encode_binary(&payload);
    assert_eq!(frame[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(frame.len(), 10 + 65536);
    assert_eq!(header_len(65536), 10);
    let mut decoder = Decoder::new(65536);
    let mut input = client_frame(0x82, &payload);
    let (event, used) = decoder.decode(&mut input).unwrap().unwrap();
    assert_eq!(used, 14 + 65536);
    assert_eq!(own(event), Owned::Binary(payload));
}

#[test]
fn header_len_boundaries_match_encode_header() {
    for len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, 1 << 20] {
        let mut out = Vec::new();
        encode_header(&mut out, opcode::BINARY, len);
        assert_eq!(out.len(), header_len(len), "len {len}");
        assert_eq!(out[0], 0x82, "FIN set, no RSV");
        assert_eq!(out[1] & 0x80, 0, "server frames are unmasked");
    }
}

#[test]
fn single_frame_payload_borrows_the_input() {
    let mut input = client_frame(0x82, b"\x00\x00\x00\x10");
    let start = input.as_ptr() as usize;
    let (event, _) = Decoder::new(MAX).decode(&mut input).unwrap().unwrap();
    match event {
        Event::Binary(Cow::Borrowed(bytes)) => assert_eq!(bytes.as_ptr() as usize, start + 6),
        other => panic!("expected a borrowed binary, got {other:?}"),
    }
}

#[test]
fn empty_binary_message() {
    assert_eq!(one(&client_frame(0x82, b"")), Ok(Owned::Binary(Vec::new())));
}

#[test]
fn control_frames_may_interleave_with_fragments() {
    let mut input = client_frame(0x02, b"ab");
    input.extend(client_frame(0x89, b"p"));
    input.extend(client_frame(0x00, b"cd"));
    input.extend(client_frame(0x8A, b""));
    input.extend(client_frame(0x80, b"ef"));
    let (events, error, _) = decode_all(&mut Decoder::new(MAX), &input);
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            Owned::Fragment,
            Owned::Ping(b"p".to_vec()),
            Owned::Fragment,
            Owned::Pong,
            Owned::Binary(b"abcdef".to_vec())
        ]
    );
}

#[test]
fn non_minimal_length_forms_are_accepted() {
    // "Hi" declared with the 16-bit and with the 64-bit form.
    let sixteen = [0x82, 0xFE, 0, 2, 0, 0, 0, 0, b'H', b'i'];
    assert_eq!(one(&sixteen), Ok(Owned::Binary(b"Hi".to_vec())));
    let sixty_four = [0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, b'H', b'i'];
    assert_eq!(one(&sixty_four), Ok(Owned::Binary(b"Hi".to_vec())));
}

#[test]
fn byte_at_a_time_gives_the_same_events_as_all_at_once() {
    let mut input = client_frame(0x82, &[7u8; 300]);
    input.extend(client_frame(0x01, "héllo ".as_bytes()));
    input.extend(client_frame(0x89, b"ping"));
    input.extend(client_frame(0x80, "wörld".as_bytes()));
    input.extend(client_frame(0x82, b""));
    input.extend(client_frame(0x88, b"\x03\xe8bye"));
    let (whole, error, _) = decode_all(&mut Decoder::new(MAX), &input);
    assert_eq!(error, None);
    let (bytewise, error) = decode_bytewise(&mut Decoder::new(MAX), &input);
    assert_eq!(error, None);
    assert_eq!(whole, bytewise);
    assert_eq!(
        whole,
        vec![
            Owned::Binary(vec![7u8; 300]),
            Owned::Fragment,
            Owned::Ping(b"ping".to_vec()),
            Owned::Text("héllo wörld".to_string()),
            Owned::Binary(Vec::new()),
            Owned::Close(Some(1000), "bye".to_string()),
        ]
    );
}

#[test]
fn incomplete_frames_are_none_at_every_cut() {
    for frame in [client_frame(0x82, b"abc"), client_frame(0x82, &[1u8; 200]), client_frame(0x82, &[2u8; 70_000])] {
        let mut decoder = Decoder::new(1 << 17);
        for cut in 0..frame.len().min(300) {
            let mut buf = frame[..cut].to_vec();
            assert_eq!(decoder.decode(&mut buf), Ok(None), "cut at {cut}");
        }
        let mut buf = frame[..frame.len() - 1].to_vec();
        assert_eq!(decoder.decode(&mut buf), Ok(None));
    }
}

// Refusals.

#[test]
fn unmasked_client_frame_is_1002() {
    assert_eq!(error(&[0x82, 0x00]), CloseCode::PROTOCOL_ERROR);
    assert_eq!(error(&[0x89, 0x00]), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn rsv_bits_are_1002() {
    for rsv in [0x40, 0x20, 0x10, 0x70] {
        assert_eq!(error(&client_frame(0x82 | rsv, b"x")), CloseCode::PROTOCOL_ERROR, "rsv {rsv:#x}");
    }
}

#[test]
fn rsv1_marks_a_compressed_message_once_deflate_is_negotiated() {
    let mut decoder = Decoder::new(MAX);
    decoder.allow_compressed();
    let (events, error, _) = decode_all(&mut decoder, &client_frame(0xC2, b"zz"));
    assert_eq!((events, error), (vec![Owned::Compressed(opcode::BINARY, b"zz".to_vec())], None));
    // Fragmented: RSV1 on the first frame only; the message is compressed whole.
    let mut stream = client_frame(0x41, b"ab");
    stream.extend(client_frame(0x80, b"cd"));
    let (events, error, _) = decode_all(&mut decoder, &stream);
    assert_eq!((events, error), (vec![Owned::Fragment, Owned::Compressed(opcode::TEXT, b"abcd".to_vec())], None));
    // Never on a continuation or a control frame, never RSV2/RSV3.
    for bad in [vec![client_frame(0x41, b"ab"), client_frame(0xC0, b"cd")], vec![client_frame(0xC9, b"")]] {
        let mut decoder = Decoder::new(MAX);
        decoder.allow_compressed();
        let (_, error, _) = decode_all(&mut decoder, &bad.concat());
        assert_eq!(error, Some(CloseCode::PROTOCOL_ERROR));
    }
    let mut decoder = Decoder::new(MAX);
    decoder.allow_compressed();
    assert_eq!(decode_all(&mut decoder, &client_frame(0xA2, b"x")).1, Some(CloseCode::PROTOCOL_ERROR));
}

#[test]
fn unknown_opcodes_are_1002() {
    for op in [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
        assert_eq!(error(&client_frame(0x80 | op, b"")), CloseCode::PROTOCOL_ERROR, "opcode {op}");
    }
}

#[test]
fn fragmented_control_frames_are_1002() {
    for op in [0x08u8, 0x09, 0x0A] {
        assert_eq!(error(&client_frame(op, b"")), CloseCode::PROTOCOL_ERROR, "opcode {op}");
    }
}

#[test]
fn control_payload_over_125_is_1002_from_the_header_alone() {
    assert_eq!(one(&client_frame(0x89, &[0u8; 125])), Ok(Owned::Ping(vec![0u8; 125])));
    // Just the two header bytes: refused before the payload arrives.
    assert_eq!(error(&[0x89, 0x80 | 126, 0, 126]), CloseCode::PROTOCOL_ERROR);
    assert_eq!(error(&[0x88, 0x80 | 127]), CloseCode::PROTOCOL_ERROR);
    assert_eq!(error(&client_frame(0x8A, &[0u8; 126])), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn continuation_without_a_message_is_1002() {
    assert_eq!(error(&client_frame(0x80, b"lo")), CloseCode::PROTOCOL_ERROR);
    assert_eq!(error(&client_frame(0x00, b"lo")), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn new_data_frame_inside_a_fragmented_message_is_1002() {
    for next in [0x81u8, 0x82, 0x01, 0x02] {
        let mut input = client_frame(0x01, b"Hel");
        input.extend(client_frame(next, b"lo"));
        assert_eq!(error(&input), CloseCode::PROTOCOL_ERROR, "first byte {next:#x}");
    }
}

#[test]
fn sixty_four_bit_length_with_the_top_bit_is_1002() {
    let input = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1];
    assert_eq!(error(&input), CloseCode::PROTOCOL_ERROR);
}

#[test]
fn message_over_the_limit_is_1009_from_the_header_alone() {
    let mut decoder = Decoder::new(100);
    assert_eq!(decoder.frame_bytes_max(), 114);
    assert!(decoder.decode(&mut client_frame(0x82, &[0u8; 100])).unwrap().is_some());
    // 101 bytes declared, no payload sent: refused at once.
    assert_eq!(decoder.decode(&mut [0x82, 0x80 | 101]), Err(CloseCode::TOO_BIG));
    // A huge 64-bit length is refused without allocating.
    let mut huge = [0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
    assert_eq!(Decoder::new(100).decode(&mut huge), Err(CloseCode::TOO_BIG));
    let mut huge16 = [0x82, 0xFE, 0xFF, 0xFF];
    assert_eq!(Decoder::new(100).decode(&mut huge16), Err(CloseCode::TOO_BIG));
}

#[test]
fn reassembled_message_over_the_limit_is_1009_before_buffering_the_fragment() {
    let mut decoder = Decoder::new(10);
    let mut first = client_frame(0x02, &[1u8; 6]);
    assert_eq!(decoder.decode(&mut first).unwrap().map(|(e, _)| own(e)), Some(Owned::Fragment));
    assert_eq!(decoder.buffered_bytes(), 6);
    let mut exact = client_frame(0x00, &[2u8; 4]);
    assert_eq!(decoder.decode(&mut exact).unwrap().map(|(e, _)| own(e)), Some(Owned::Fragment));
    // 10 bytes held, one more declared: refused from the header.
    assert_eq!(decoder.decode(&mut [0x80, 0x81]), Err(CloseCode::TOO_BIG));
    assert_eq!(decoder.buffered_bytes(), 10);
    // An empty final fragment still completes it.
    let mut last = client_frame(0x80, b"");
    let (event, _) = decoder.decode(&mut last).unwrap().unwrap();
    assert_eq!(own(event), Owned::Binary([[1u8; 6].as_slice(), &[2u8; 4]].concat()));
}

#[test]
fn invalid_utf8_text_is_1007() {
    assert_eq!(error(&client_frame(0x81, b"\xff\xfe")), CloseCode::INVALID_PAYLOAD);
    // A code point split across fragments is fine; an invalid whole is not.
    let mut split = client_frame(0x01, &"é".as_bytes()[..1]);
    split.extend(client_frame(0x80, &"é".as_bytes()[1..]));
    let (events, failure, _) = decode_all(&mut Decoder::new(MAX), &split);
    assert_eq!((events.last(), failure), (Some(&Owned::Text("é".to_string())), None));
    let mut bad = client_frame(0x01, b"ok");
    bad.extend(client_frame(0x80, b"\xc3"));
    assert_eq!(error(&bad), CloseCode::INVALID_PAYLOAD);
}

#[test]
fn binary_is_not_utf8_checked() {
    assert_eq!(one(&client_frame(0x82, b"\xff\xfe")), Ok(Owned::Binary(b"\xff\xfe".to_vec())));
}

#[test]
fn close_payloads() {
    assert_eq!(one(&client_frame(0x88, b"")), Ok(Owned::Close(None, String::new())));
    assert_eq!(one(&client_frame(0x88, b"\x03\xe8")), Ok(Owned::Close(Some(1000), String::new())));
    assert_eq!(
        one(&client_frame(0x88, &[b"\x0f\xa0", "ciao ✓".as_bytes()].concat())),
        Ok(Owned::Close(Some(4000), "ciao ✓".into()))
    );
    assert_eq!(error(&client_frame(0x88, b"\x03")), CloseCode::PROTOCOL_ERROR);
    assert_eq!(error(&client_frame(0x88, b"\x03\xe8\xff")), CloseCode::INVALID_PAYLOAD);
}

#[test]
fn close_code_validity_follows_rfc_6455_section_7_4() {
    let valid = [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999];
    let invalid = [0u16, 1, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 2000, 2999, 5000, 65535];
    for code in valid {
        assert!(CloseCode::is_valid_on_wire(code), "{code}");
        let payload = code.to_be_bytes();
        assert_eq!(one(&client_frame(0x88, &payload)), Ok(Owned::Close(Some(code), String::new())));
    }
    for code in invalid {
        assert!(!CloseCode::is_valid_on_wire(code), "{code}");
        assert_eq!(error(&client_frame(0x88, &code.to_be_bytes())), CloseCode::PROTOCOL_ERROR, "{code}");
    }
}

#[test]
fn encode_close_and_its_reason_limit() {
    assert_eq!(encode_close(1000, ""), [0x88, 0x02, 0x03, 0xe8]);
    assert_eq!(encode_close(1009, "big"), [0x88, 0x05, 0x03, 0xf1, b'b', b'i', b'g']);
    // 2-byte characters: cut at a boundary so the reason stays UTF-8.
    let long = "é".repeat(100);
    let frame = encode_close(1001, &long);
    assert_eq!(frame[1] as usize, frame.len() - 2);
    assert!(frame.len() - 2 <= CONTROL_PAYLOAD_BYTES_MAX);
    assert!(std::str::from_utf8(&frame[4..]).is_ok());
    assert_eq!(frame.len() - 4, 122);
}

#[test]
fn encode_pong_keeps_a_control_frame_valid() {
    let frame = encode_pong(&[1u8; 300]);
    assert_eq!(frame[..2], [0x8A, 125]);
    assert_eq!(frame.len(), 127);
}

#[test]
fn server_frames_round_trip_through_a_masking_client() {
    for len in [0usize, 5, 125, 126, 300, 65535, 65536] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut frame = encode_binary(&payload);
        // What a client does to send it back: set MASK, insert a key.
        let header = header_len(len);
        frame[1] |= 0x80;
        let mut client = frame[..header].to_vec();
        client.extend_from_slice(&MASK);
        client.extend(frame[header..].iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        let client_len = client.len();
        let mut decoder = Decoder::new(1 << 17);
        let (event, used) = decoder.decode(&mut client).unwrap().unwrap();
        assert_eq!(used, client_len);
        assert_eq!(own(event), Owned::Binary(payload));
    }
}

use crate::test_rng::XorShift;

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for round in 0..3_000 {
        let mut input: Vec<u8> = Vec::new();
        if round % 2 == 0 {
            let len = (rng.next() % 512) as usize;
            input.extend((0..len).map(|_| rng.next() as u8));
        } else {
            // Plausible frames with a few bytes flipped reach deeper.
            for _ in 0..(rng.next() % 6 + 1) {
                let first = [0x01u8, 0x02, 0x00, 0x80, 0x81, 0x82, 0x88, 0x89, 0x8A][(rng.next() % 9) as usize];
                let len = (rng.next() % 300) as usize;
                let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                input.extend(client_frame(first, &payload));
            }
            for _ in 0..(rng.next() % 3) {
                if !input.is_empty() {
                    let at = (rng.next() as usize) % input.len();
                    input[at] = rng.next() as u8;
                }
            }
        }
        let limit = (rng.next() % 400) as usize;
        let (whole, whole_error, _) = decode_all(&mut Decoder::new(limit), &input);
        let (bytewise, bytewise_error) = decode_bytewise(&mut Decoder::new(limit), &input);
        assert_eq!(whole, bytewise, "round {round}");
        assert_eq!(whole_error, bytewise_error, "round {round}");
    }
}
