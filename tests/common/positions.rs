//! The op-20 position frame of docs/positions.md section 3, as tests read it.

use super::Frame;
use simd_json::prelude::*;

/// goim op of the position frame.
pub const POSITION: i32 = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub room: String,
    pub epoch: String,
    pub offset: u32,
    pub recovered: bool,
    pub missed: u32,
}

/// Reads an op-20 frame (version 1, sequence 0, JSON body); panics on anything else.
pub fn position_of(frame: &Frame) -> Position {
    assert_eq!((frame.ver, frame.op, frame.seq), (1, POSITION, 0), "an op-20 frame: {frame:?}");
    let json = super::json(&String::from_utf8_lossy(&frame.body));
    Position {
        room: json.get_str("room").expect("room").to_string(),
        epoch: json.get_str("epoch").expect("epoch").to_string(),
        offset: json.get_u64("offset").expect("offset") as u32,
        recovered: json.get_bool("recovered").expect("recovered"),
        missed: json.get_u64("missed").expect("missed") as u32,
    }
}
