//! WebSocket members: the upgrade (with or without a permessage-deflate
//! offer), masked client messages, and server messages unwrapped (and
//! inflated when compressed) into goim frames for `on_data`.

use super::{on_data, Member, Stats, FRAME_MAX};

/// The WebSocket upgrade request every member sends.
pub(super) const UPGRADE: &[u8] = b"GET /sub HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// The same, offering permessage-deflate as browsers do.
pub(super) const UPGRADE_DEFLATE: &[u8] =
    b"GET /sub HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

/// A permessage-deflate payload inflated into `st.inflated` (RFC 7692: the
/// sync tail appended).
fn inflate(st: &mut Stats, payload: &[u8]) -> Result<(), String> {
    let inflater = st.inflater.get_or_insert_with(|| flate2::Decompress::new(false));
    inflater.reset(false);
    st.inflated.clear();
    st.inflated.reserve(FRAME_MAX * 2);
    for input in [payload, &[0, 0, 0xff, 0xff][..]] {
        let before = inflater.total_in();
        inflater
            .decompress_vec(input, &mut st.inflated, flate2::FlushDecompress::Sync)
            .map_err(|e| format!("inflate: {e}"))?;
        if (inflater.total_in() - before) as usize != input.len() {
            return Err("compressed message inflates past the bench's buffer".into());
        }
    }
    st.compressed_messages += 1;
    Ok(())
}

/// One goim frame as a masked binary client message (an all-zero mask: the
/// bytes stay as they are, which RFC 6455 allows).
pub(super) fn ws_message(goim: &[u8]) -> Vec<u8> {
    let mut out = vec![0x82];
    if goim.len() < 126 {
        out.push(0x80 | goim.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(goim.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(goim);
    out
}

/// WebSocket bytes: skips the 101 response, then hands every binary
/// message's payload (goim frames) to `on_data`.
pub(super) fn on_ws_data(st: &mut Stats, m: &mut Member, data: &[u8], now: u64) -> Result<u32, String> {
    let mut raw = std::mem::take(&mut m.ws_raw);
    raw.extend_from_slice(data);
    let mut pos = 0;
    if !m.ws_open {
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            m.ws_raw = raw;
            return Ok(0);
        };
        if !raw.starts_with(b"HTTP/1.1 101") {
            return Err(format!("upgrade refused: {:?}", String::from_utf8_lossy(&raw[..end])));
        }
        m.ws_open = true;
        pos = end + 4;
    }
    let mut auths = 0;
    while raw.len() - pos >= 2 {
        let (opcode, len7) = (raw[pos] & 0x0f, (raw[pos + 1] & 0x7f) as usize);
        let (len, header) = match len7 {
            126 if raw.len() - pos >= 4 => (u16::from_be_bytes([raw[pos + 2], raw[pos + 3]]) as usize, 4),
            127 if raw.len() - pos >= 10 => {
                (u64::from_be_bytes(raw[pos + 2..pos + 10].try_into().unwrap_or([0; 8])) as usize, 10)
            }
            126 | 127 => break,
            n => (n, 2),
        };
        if len > FRAME_MAX {
            return Err(format!("WebSocket message of {len} bytes"));
        }
        if raw.len() - pos < header + len {
            break;
        }
        let payload = &raw[pos + header..pos + header + len];
        let compressed = raw[pos] & 0x40 != 0;
        match opcode {
            2 if compressed => {
                inflate(st, payload)?;
                // Lent out while on_data borrows the stats, then given back
                // (no copy per message).
                let inflated = std::mem::take(&mut st.inflated);
                let walked = on_data(st, m, &inflated, now);
                st.inflated = inflated;
                auths += walked?
            }
            2 => auths += on_data(st, m, payload, now)?,
            8 => return Err("WebSocket close from server".into()),
            _ => {}
        }
        pos += header + len;
    }
    raw.drain(..pos);
    m.ws_raw = raw;
    Ok(auths)
}
