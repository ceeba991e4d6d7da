//! The one place that writes to a client socket, plain or TLS.
//!
//! Every byte a client receives leaves through `write_out`: the outbox's
//! chunks, up to 64 in one `sendmsg` on a plain socket; on WSS the same
//! chunks encrypted by rustls, whose records leave through the same
//! `sendmsg` (`Socket`). What a write left is settled by the core
//! (`shard::flush::write_session`).
//!
//! Must never: block (MSG_DONTWAIT), raise SIGPIPE (MSG_NOSIGNAL), or write
//! a held session's bytes past its open prefix (`Outbox::sendable_bytes`).

use crate::conn::conns::Session;
use crate::delivery::outbox::IOVECS_PER_WRITE_MAX;
use crate::shard::io::WriteOutcome;
use std::io::Write;
use std::os::unix::io::RawFd;

/// Writes as much as the kernel takes of what `session` may send now, one
/// `sendmsg` per 64 chunks (through TLS on the WSS port).
pub fn write_out(session: &mut Session, written_bytes: &mut u64) -> WriteOutcome {
    if session.tls.is_some() {
        return write_out_tls(session, written_bytes);
    }
    let mut iovecs = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; IOVECS_PER_WRITE_MAX];
    loop {
        let sendable = session.outbox.sendable_bytes(session.held);
        let count = session.outbox.iovecs(&mut iovecs, sendable);
        if count == 0 {
            return WriteOutcome::Drained;
        }
        let asked: usize = iovecs[..count].iter().map(|v| v.iov_len).sum();
        match send_vectored(session.fd, &iovecs[..count]) {
            Ok(written) => {
                *written_bytes += written as u64;
                session.outbox.consume(written);
                if written < asked {
                    return WriteOutcome::Blocked;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return WriteOutcome::Blocked,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return WriteOutcome::Broken,
        }
    }
}

/// The WSS path: what may be sent from the outbox into rustls, then every
/// pending record (handshake ones included) to the socket.
fn write_out_tls(session: &mut Session, written_bytes: &mut u64) -> WriteOutcome {
    let Session { tls, outbox, held, fd, .. } = session;
    let Some(tls) = tls.as_mut() else { return WriteOutcome::Drained };
    let mut socket = Socket(*fd);
    loop {
        while let Some(front) = outbox.front(outbox.sendable_bytes(*held)) {
            let taken = crate::conn::tls::encrypt(tls, front);
            if taken == 0 {
                break;
            }
            *written_bytes += taken as u64;
            outbox.consume(taken);
        }
        match crate::conn::tls::write_records(tls, &mut socket) {
            crate::conn::tls::Records::Blocked => return WriteOutcome::Blocked,
            crate::conn::tls::Records::Broken => return WriteOutcome::Broken,
            crate::conn::tls::Records::Written if outbox.sendable_bytes(*held) == 0 => return WriteOutcome::Drained,
            crate::conn::tls::Records::Written => {}
        }
    }
}

/// A client socket as `io::Write`, for rustls's records.
struct Socket(RawFd);

impl Write for Socket {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let iovec = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
        send_vectored(self.0, &[iovec])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The one syscall that writes to a client socket: `sendmsg` with
/// MSG_DONTWAIT (never block the shard) and MSG_NOSIGNAL (a closed peer is
/// an error, not a SIGPIPE).
fn send_vectored(fd: RawFd, iovecs: &[libc::iovec]) -> std::io::Result<usize> {
    // SAFETY: msghdr is a plain C struct; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iovecs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iovecs.len() as _;
    // SAFETY: the iovecs point into buffers the caller keeps alive for the
    // duration of the call; fd is the session's open socket.
    let sent = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
    if sent < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::os::unix::io::AsRawFd;
    use std::rc::Rc;

    fn read_all(peer: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
        use std::io::Read;
        let mut got = Vec::new();
        let mut buffer = [0u8; 65536];
        while let Ok(n) = peer.read(&mut buffer) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buffer[..n]);
        }
        got
    }

    /// A 101 larger than the kernel takes at once: the rest waits (Blocked,
    /// for EPOLLOUT), then leaves whole, and the held auth reply queued
    /// behind it does not leave until the session is released.
    #[test]
    fn open_bytes_resume_after_a_refusal_and_held_ones_wait() {
        let (ours, mut peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        ours.set_nonblocking(true).expect("nonblocking");
        peer.set_nonblocking(true).expect("nonblocking");
        let mut session = Session::accepted(ours.as_raw_fd(), std::net::Ipv4Addr::LOCALHOST.into(), 0);
        assert!(session.held);
        let answer: Vec<u8> = (0..4 << 20).map(|i| i as u8).collect();
        session.outbox.push_open(Rc::new(Bytes::from(answer.clone())));
        let mut written = 0;
        assert_eq!(write_out(&mut session, &mut written), WriteOutcome::Blocked, "4 MiB is more than the kernel takes");
        assert!(written > 0 && (written as usize) < answer.len());
        assert_eq!(
            session.outbox.push(Rc::new(Bytes::from_static(b"auth reply")), 1 << 30, 0),
            crate::delivery::outbox::Queued::Ok
        );
        let mut got = Vec::new();
        loop {
            got.extend(read_all(&mut peer));
            match write_out(&mut session, &mut written) {
                WriteOutcome::Blocked => continue,
                outcome => {
                    assert_eq!(outcome, WriteOutcome::Drained);
                    break;
                }
            }
        }
        got.extend(read_all(&mut peer));
        assert_eq!(got.len(), answer.len(), "the whole answer and nothing held");
        assert!(got == answer);
        session.held = false;
        assert_eq!(write_out(&mut session, &mut written), WriteOutcome::Drained);
        assert_eq!(read_all(&mut peer), b"auth reply");
        assert_eq!(written as usize, answer.len() + 10);
    }
}
