use super::*;

const ME: &str = "n:1";

/// The receiving shard.
fn to() -> usize {
    1
}

fn ack(node: Option<&str>) -> Ack {
    Ack { node: node.map(Arc::from), shard: 2, id: 7, weight: 1 << 40, started_us: 0 }
}

fn conn() -> ConnRef {
    ConnRef { shard: 1, slot: 3, generation: 9 }
}

fn frames(list: &[(u32, &'static [u8])]) -> Vec<(u32, Bytes)> {
    list.iter().map(|(offset, frame)| (*offset, Bytes::from_static(frame))).collect()
}

/// Every command the bus carries, with what its subject says on arrival.
fn samples() -> Vec<(Command, fn() -> On)> {
    let room = || On::Room(Arc::from("live://1"));
    let conns = || On::Conns(vec![conn()]);
    let other = || On::Other;
    let frame = Bytes::from_static(b"frame");
    let report = Report {
        node: "n".into(),
        seq: 3,
        part: 0,
        parts: 1,
        hostname: "h".into(),
        addr: "127.0.0.1".into(),
        domain: "d".into(),
        tcp_port: 1,
        ws_port: 2,
        wss_port: 3,
        weight: 10,
        shards: 2,
        conn_count: 4,
        ip_count: 1,
        rooms: vec![("live://1".into(), 4)],
    };
    let joined = Joined {
        epoch: Arc::from("E"),
        offset: 5,
        recovery: Recovery::Refused(Refusal::Gone),
        replay: frames(&[(4, b"a"), (5, b"bc")]),
    };
    let page = HistoryPage { epoch: Arc::from("E"), offset: 9, complete: true, messages: frames(&[(9, b"x")]) };
    let holder = Holder { at_ms: 5, node: Arc::from("n:2"), shard: 1, slot: 2, generation: 3 };
    vec![
        (Command::Sequence { room: Arc::from("live://1"), frame: frame.clone(), ack: ack(Some("n:2")) }, other),
        (
            Command::Attach {
                room: Arc::from("live://1"),
                conn: conn(),
                home: Some(Arc::from("n:2")),
                attach_seq: 2,
                recover: Some((Box::from("Ep0ch"), 41)),
                replay_bytes_max: 9000,
            },
            other,
        ),
        (
            Command::Attach {
                room: Arc::from("r"),
                conn: conn(),
                home: Some(Arc::from(ME)),
                attach_seq: 0,
                recover: None,
                replay_bytes_max: 0,
            },
            other,
        ),
        (Command::Detach { room: Arc::from("live://1") }, other),
        (Command::History { room: Arc::from("r"), since: 2, limit: 3, ack: ack(Some("n:3")) }, other),
        (Command::Confirms(vec![(1, 2), (u64::MAX, 1 << 62)]), other),
        (Command::Attached(Box::new(Attached { room: Arc::from("r"), conn: conn(), attach_seq: 2, joined })), other),
        (Command::Page { id: 2, weight: 1 << 62, page: Box::new(page) }, other),
        (Command::Failed { id: 4, error: BusError::TooLarge }, other),
        (
            Command::Room {
                room: Arc::from("live://1"),
                epoch: Some(Arc::from("E")),
                offset: 1,
                new_epoch: false,
                frame: frame.clone(),
                ack: Ack::none(0),
            },
            room,
        ),
        (Command::Conns { conns: vec![conn()], op: -3, frame: Bytes::new(), ack: Ack::none(0) }, conns),
        (Command::Claim { conns: Vec::new(), by: Some(holder) }, conns),
        (Command::All { op: 1000, frame: Bytes::from_static(b"z"), speed: 20, ack: Ack::none(0) }, other),
        (Command::Report(Box::new(report)), other),
    ]
}

fn encoded(command: &Command) -> Vec<u8> {
    let mut bytes = Vec::new();
    assert!(encode(command, ME, &mut bytes), "{command:?} has a bus encoding");
    bytes
}

#[test]
fn every_command_round_trips_and_every_truncation_is_refused() {
    for (command, on) in samples() {
        let bytes = encoded(&command);
        let decoded = decode(&bytes, on(), to()).unwrap_or_else(|| panic!("{command:?} decodes"));
        assert_eq!(encoded(&decoded), bytes, "{command:?} round trips");
        assert_eq!(format!("{decoded:?}"), format!("{command:?}"), "decoded as sent");
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], on(), to()).is_none(), "{command:?} cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, on(), to()).is_none(), "trailing bytes are refused");
    }
}

#[test]
fn a_message_off_the_subject_that_carries_it_is_refused() {
    for (command, on) in samples() {
        let bytes = encoded(&command);
        for wrong in [On::Room(Arc::from("r")), On::Conns(Vec::new()), On::Other] {
            if std::mem::discriminant(&wrong) != std::mem::discriminant(&on()) {
                assert!(decode(&bytes, wrong, to()).is_none(), "{command:?} off its subject");
            }
        }
    }
}

#[test]
fn the_commands_that_stay_inside_a_node_have_no_bus_encoding() {
    let local = [
        Command::Register { key: None, mid: Some(1), conn: conn(), ack: ack(None) },
        Command::Unregister { key: None, mid: Some(1), conn: conn() },
        Command::Claim { conns: vec![conn()], by: None },
        Command::Ip { ip: std::net::IpAddr::from([127, 0, 0, 1]), delta: 1 },
    ];
    for command in local {
        let mut bytes = Vec::new();
        assert!(!encode(&command, ME, &mut bytes), "{command:?}");
        assert!(bytes.is_empty());
    }
}

#[test]
fn a_flag_byte_other_than_0_or_1_is_refused() {
    let page = HistoryPage { epoch: Arc::from("E"), offset: 1, complete: true, messages: Vec::new() };
    let mut bytes = encoded(&Command::Page { id: 1, weight: 1, page: Box::new(page) });
    let flag = bytes.len() - 5;
    assert_eq!(bytes[flag], 1);
    bytes[flag] = 28;
    assert!(decode(&bytes, On::Other, to()).is_none());
}

#[test]
fn lying_counts_do_not_allocate() {
    let mut bytes = vec![PAGE];
    bytes.extend_from_slice(&1u64.to_be_bytes());
    bytes.extend_from_slice(&1u64.to_be_bytes());
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.push(1);
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(decode(&bytes, On::Other, to()).is_none());
    let mut confirms = vec![CONFIRMS];
    confirms.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(decode(&confirms, On::Other, to()).is_none());
}

#[test]
fn a_ticket_or_a_joiner_of_this_node_is_answered_over_the_bus_by_name() {
    // A home that travelled on the bus is named, this node's too: its
    // answer goes back the way the question came (over the bus, behind
    // the room's pushes), never over the mesh.
    let bytes = encoded(&Command::History { room: Arc::from("r"), since: 0, limit: 1, ack: ack(None) });
    let Some(Command::History { ack, .. }) = decode(&bytes, On::Other, to()) else { panic!("a history query") };
    assert_eq!(ack.node.as_deref(), Some(ME));
    let attach = Command::Attach {
        room: Arc::from("r"),
        conn: conn(),
        home: None,
        attach_seq: 0,
        recover: None,
        replay_bytes_max: 0,
    };
    let Some(Command::Attach { home, .. }) = decode(&encoded(&attach), On::Other, to()) else { panic!("an attach") };
    assert_eq!(home.as_deref(), Some(ME));
}
