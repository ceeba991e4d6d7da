//! The goim wire protocol, sans-IO: bytes in, frames out. No sockets, no
//! clock, no glommio here, so every rule is unit-tested on plain slices.
//!
//! ```text
//!  0      4        6        8          12         16
//!  +------+--------+--------+----------+----------+---------
//!  | pack | header | ver    | op       | seq      | body ...
//!  | len  | len=16 | (i16)  | (i32)    | (i32)    |
//!  +------+--------+--------+----------+----------+---------
//!  all integers big-endian; pack len = 16 + body length
//! ```

pub mod auth;
pub mod frame;
pub mod op;
