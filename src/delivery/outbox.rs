//! A connection's outbound queue: encoded bytes waiting for the socket.
//!
//! Owns: the chunks and the byte accounting of one connection. Must never:
//! grow past its byte bound (the caller applies the slow-consumer policy on
//! `Full`), or hold a buffer while empty (an idle connection holds nothing:
//! an empty `VecDeque` owns no allocation).

use bytes::Bytes;
use std::collections::VecDeque;
use std::rc::Rc;

/// A chunk shared by every member that gets it: the refcount is not atomic,
/// so handing one room batch to 10,000 members costs 10,000 plain increments.
pub type Chunk = Rc<Bytes>;

/// Real memory a queued chunk costs beyond its bytes, as the bound counts
/// it: the queue slot (8), the `Rc<Bytes>` box (48, a 64-byte allocation)
/// and the rounding and header of the buffer's own allocation (24). A
/// client that never reads but sends heartbeats queues 20-byte replies that
/// each hold about 120 bytes of heap: counting payload alone let it hold
/// four to five times the bound.
pub const CHUNK_OVERHEAD_BYTES: usize = 96;

/// Chunks written in one `sendmsg`: bounds the iovec array on the stack.
pub const IOVECS_PER_WRITE_MAX: usize = 64;

#[derive(Debug, PartialEq, Eq)]
pub enum Queued {
    Ok,
    /// The chunk would take the queue past its bound; it was not queued.
    Full,
}

#[derive(Default)]
pub struct Outbox {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    front_written: usize,
    queued_bytes: usize,
    /// Unwritten bytes at the front that may leave while the session is
    /// held (`push_open`: a WebSocket 101 or a close frame before the auth
    /// reply, which waits for the directory).
    open_bytes: usize,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// What the queue holds in memory as the bound counts it: its bytes plus
    /// `CHUNK_OVERHEAD_BYTES` a chunk.
    pub fn memory_bytes(&self) -> usize {
        self.queued_bytes + self.chunks.len() * CHUNK_OVERHEAD_BYTES
    }

    /// Queues `chunk` unless that would take `memory_bytes` past `bytes_max`.
    /// An empty queue may go past it with one chunk of at most
    /// `lone_chunk_bytes_max` (one push, which the API bounds by
    /// `request_body_bytes_max`; room batches are cut at half the bound), so
    /// a connection holds at most max(`bytes_max`, one push and its
    /// overhead) and a large push is never undeliverable.
    pub fn push(&mut self, chunk: Chunk, bytes_max: usize, lone_chunk_bytes_max: usize) -> Queued {
        if chunk.is_empty() {
            // Nothing to write; an empty chunk would never be consumed.
            return Queued::Ok;
        }
        let within_bound = self.memory_bytes() + chunk.len() + CHUNK_OVERHEAD_BYTES <= bytes_max;
        let lone_push = self.chunks.is_empty() && chunk.len() <= lone_chunk_bytes_max;
        if !(within_bound || lone_push) {
            return Queued::Full;
        }
        self.queued_bytes += chunk.len();
        self.chunks.push_back(chunk);
        Queued::Ok
    }

    /// Queues bytes that may leave while the session is held, when nothing
    /// held is queued before them (else they queue as any chunk, behind
    /// it). Never refused: they are one handshake answer or close frame.
    pub fn push_open(&mut self, chunk: Chunk) {
        if chunk.is_empty() {
            return;
        }
        if self.open_bytes == self.unwritten_bytes() {
            self.open_bytes += chunk.len();
        }
        self.queued_bytes += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Bytes queued and not yet written.
    fn unwritten_bytes(&self) -> usize {
        self.queued_bytes - self.front_written
    }

    /// How many of the unwritten bytes may leave now: all of them, or only
    /// the open ones while the session is `held`.
    pub fn sendable_bytes(&self, held: bool) -> usize {
        if held {
            self.open_bytes
        } else {
            self.unwritten_bytes()
        }
    }

    /// Fills `iovecs` with up to `bytes_max` unwritten bytes, front first;
    /// returns how many iovecs.
    pub fn iovecs(&self, iovecs: &mut [libc::iovec; IOVECS_PER_WRITE_MAX], bytes_max: usize) -> usize {
        let mut count = 0;
        let mut left = bytes_max;
        for (i, chunk) in self.chunks.iter().take(IOVECS_PER_WRITE_MAX).enumerate() {
            if left == 0 {
                break;
            }
            let skip = if i == 0 { self.front_written } else { 0 };
            let bytes = &chunk[skip..];
            let len = bytes.len().min(left);
            iovecs[i] = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: len };
            left -= len;
            count += 1;
        }
        count
    }

    /// The unwritten part of the front chunk, up to `bytes_max` bytes.
    pub fn front(&self, bytes_max: usize) -> Option<&[u8]> {
        let front = self.chunks.front().map(|chunk| &chunk[self.front_written..])?;
        (bytes_max > 0).then(|| &front[..front.len().min(bytes_max)])
    }

    /// Marks `written` bytes as sent, dropping finished chunks.
    pub fn consume(&mut self, mut written: usize) {
        assert!(written <= self.unwritten_bytes(), "consumed more than queued");
        self.open_bytes = self.open_bytes.saturating_sub(written);
        while written > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.len() - self.front_written;
            if written < left {
                self.front_written += written;
                return;
            }
            written -= left;
            self.queued_bytes -= front.len();
            self.front_written = 0;
            self.chunks.pop_front();
        }
        if self.chunks.is_empty() {
            // Give the ring's memory back: an idle connection holds no buffer.
            self.chunks = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &'static [u8]) -> Chunk {
        Rc::new(Bytes::from_static(text))
    }

    #[test]
    fn partial_writes_resume_mid_chunk() {
        let mut outbox = Outbox::default();
        assert_eq!(outbox.push(chunk(b"hello"), 1000, 0), Queued::Ok);
        assert_eq!(outbox.push(chunk(b"world"), 1000, 0), Queued::Ok);
        outbox.consume(3);
        assert_eq!(outbox.front(usize::MAX), Some(&b"lo"[..]));
        let mut iovecs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; IOVECS_PER_WRITE_MAX];
        assert_eq!(outbox.iovecs(&mut iovecs, usize::MAX), 2);
        assert_eq!(iovecs[0].iov_len, 2);
        assert_eq!(outbox.iovecs(&mut iovecs, 4), 2);
        assert_eq!((iovecs[0].iov_len, iovecs[1].iov_len), (2, 2), "cut at the byte limit");
        outbox.consume(7);
        assert!(outbox.is_empty());
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn open_bytes_leave_while_held_and_nothing_behind_them() {
        let mut outbox = Outbox::default();
        outbox.push_open(chunk(b"HTTP/1.1 101"));
        assert_eq!(outbox.push(chunk(b"auth reply"), 1000, 0), Queued::Ok);
        assert_eq!(outbox.sendable_bytes(true), 12, "only the 101 while held");
        assert_eq!(outbox.front(outbox.sendable_bytes(true)), Some(&b"HTTP/1.1 101"[..]));
        outbox.consume(5);
        assert_eq!(outbox.sendable_bytes(true), 7);
        outbox.consume(7);
        assert_eq!((outbox.sendable_bytes(true), outbox.front(0)), (0, None), "the auth reply waits");
        assert_eq!(outbox.sendable_bytes(false), 10);
        // Behind held bytes, open bytes queue as any chunk.
        outbox.push_open(chunk(b"close"));
        assert_eq!((outbox.sendable_bytes(true), outbox.sendable_bytes(false)), (0, 15));
    }

    #[test]
    fn an_empty_chunk_is_never_queued() {
        let mut outbox = Outbox::default();
        assert_eq!(outbox.push(chunk(b""), 100, 0), Queued::Ok);
        assert!(outbox.is_empty());
    }

    #[test]
    fn the_byte_bound_refuses_without_queueing() {
        let mut outbox = Outbox::default();
        let bound = 8 + 3 + 2 * CHUNK_OVERHEAD_BYTES;
        assert_eq!(outbox.push(chunk(b"12345678"), bound, 0), Queued::Ok);
        assert_eq!(outbox.push(chunk(b"1234"), bound, 100), Queued::Full, "its overhead counts too");
        assert_eq!(outbox.push(chunk(b"123"), bound, 0), Queued::Ok);
        assert_eq!((outbox.queued_bytes(), outbox.memory_bytes()), (11, bound));
        // One push larger than the bound still goes to an empty queue, so a
        // big message is never undeliverable; a larger chunk does not.
        let mut empty = Outbox::default();
        assert_eq!(empty.push(chunk(b"0123456789abc"), 10, 12), Queued::Full, "past one push");
        assert_eq!(empty.push(chunk(b"0123456789abc"), 10, 13), Queued::Ok, "one push");
        assert_eq!(empty.push(chunk(b"x"), 10, 13), Queued::Full, "not empty any more");
    }
}
