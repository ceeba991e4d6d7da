//! Tests of `members`.

use super::*;

fn member(publishers: usize) -> Member {
    Member {
        fd: -1,
        state: READY,
        lost: false,
        carry: Vec::new(),
        ws_open: false,
        ws_raw: Vec::new(),
        next: vec![0; publishers].into_boxed_slice(),
        received: 0,
        out_of_order: 0,
        gaps: 0,
    }
}

fn stats() -> Stats {
    Stats {
        wire_bytes: 0,
        compressed_messages: 0,
        inflater: None,
        inflated: Vec::new(),
        latency: new_histogram(),
        delivered: 0,
        first_recv_ns: 0,
        last_recv_ns: 0,
        min_latency_ns: u64::MAX,
        max_latency_ns: 0,
        hb_replies: 0,
        foreign_frames: 0,
        push_op: 1000,
    }
}

fn push(seq: u64, publisher: u32, sent: u64) -> Vec<u8> {
    let mut body = vec![0u8; 64];
    body[0..8].copy_from_slice(&seq.to_be_bytes());
    body[8..12].copy_from_slice(&publisher.to_be_bytes());
    body[12..20].copy_from_slice(&sent.to_be_bytes());
    frame(1000, 0, &body)
}

#[test]
fn websocket_messages_are_unwrapped_after_the_101() {
    let mut st = stats();
    let mut m = member(1);
    let mut stream = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
    let reply = frame(OP_AUTH_REPLY, 1, &[]);
    stream.extend_from_slice(&[0x82, reply.len() as u8]);
    stream.extend_from_slice(&reply);
    let mut auths = 0;
    for piece in stream.chunks(5) {
        auths += on_ws_data(&mut st, &mut m, piece, 1_000).unwrap();
    }
    assert_eq!(auths, 1);
    assert!(m.ws_open && m.ws_raw.is_empty());
    assert!(on_ws_data(&mut st, &mut member(1), b"HTTP/1.1 404 Not Found\r\n\r\n", 0).is_err());
}

#[test]
fn frames_split_across_reads_are_reassembled() {
    let (mut st, mut m) = (stats(), member(2));
    let mut stream = frame(OP_AUTH_REPLY, 1, &[]);
    for s in 0..3 {
        stream.extend(push(s, 0, 10));
        stream.extend(push(s, 1, 10));
    }
    stream.extend(frame(OP_HEARTBEAT_REPLY, 2, &7i32.to_be_bytes()));
    let mut auths = 0;
    for piece in stream.chunks(7) {
        auths += on_data(&mut st, &mut m, piece, 1_000).unwrap();
    }
    assert_eq!(auths, 1);
    assert_eq!(m.received, 6);
    assert_eq!((m.gaps, m.out_of_order), (0, 0));
    assert_eq!(st.hb_replies, 1);
    assert!(m.carry.is_empty());
    assert_eq!(st.max_latency_ns, 990);
}

#[test]
fn gaps_and_late_frames_are_counted() {
    let (mut st, mut m) = (stats(), member(1));
    let mut stream = push(0, 0, 1);
    stream.extend(push(2, 0, 1)); // 1 missing
    stream.extend(push(1, 0, 1)); // late
    stream.extend(push(3, 0, 1));
    on_data(&mut st, &mut m, &stream, 5).unwrap();
    assert_eq!((m.received, m.gaps, m.out_of_order), (4, 1, 1));
}

#[test]
fn raw_frames_are_walked_and_bad_headers_rejected() {
    let (mut st, mut m) = (stats(), member(1));
    let mut inner = push(0, 0, 1);
    inner.extend(push(1, 0, 1));
    on_data(&mut st, &mut m, &frame(OP_RAW, 0, &inner), 5).unwrap();
    assert_eq!(m.received, 2);
    let mut bad = frame(OP_HEARTBEAT_REPLY, 0, &[0; 4]);
    bad[5] = 12; // header length 12
    assert!(on_data(&mut st, &mut member(1), &bad, 5).is_err());
}
