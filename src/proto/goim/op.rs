//! goim operation numbers (the `op` field of a frame).

pub const HEARTBEAT: i32 = 2;
pub const HEARTBEAT_REPLY: i32 = 3;
pub const SEND_MSG: i32 = 4;
pub const AUTH: i32 = 7;
pub const AUTH_REPLY: i32 = 8;
/// A body made of one or more complete frames (batched delivery).
pub const RAW: i32 = 9;
pub const CHANGE_ROOM: i32 = 12;
pub const CHANGE_ROOM_REPLY: i32 = 13;
pub const SUB: i32 = 14;
pub const SUB_REPLY: i32 = 15;
pub const UNSUB: i32 = 16;
pub const UNSUB_REPLY: i32 = 17;
/// corecast: where a connection with positions joined its room's order
/// (JSON body; docs/positions.md section 3).
pub const POSITION: i32 = 20;

/// Version carried by server-originated pushes.
pub const PUSH_VERSION: i16 = 1;
