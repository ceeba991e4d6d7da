//! What arrives from a client socket, in the core: a new connection (its
//! admission under the shard's limits), and the records of a WSS
//! connection (decrypted here, the plaintext handed to the session). The
//! bytes of a plain connection go straight to `session::on_bytes`.
//!
//! Must never: keep a connection past `conns_max`, past
//! `limits.connections_per_ip_per_s_max`, or a WSS one past
//! `wss.handshakes_per_shard_max` handshakes in progress (each refusal is
//! counted; the driver closes the socket).

use super::{session, Shard};
use crate::conn::close::CloseReason;
use crate::conn::conns::{ConnRef, Session};
use std::net::IpAddr;
use std::os::unix::io::RawFd;

/// What a listener's connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    WebSocket,
    SecureWebSocket,
}

impl Shard {
    /// A connection was accepted on socket `fd` from `ip`: its session, or
    /// `None` when a limit refuses it (the caller closes the socket).
    pub fn accepted(&self, fd: RawFd, ip: IpAddr, transport: Transport) -> Option<ConnRef> {
        if self.state.borrow().conns.len() >= self.conns_max {
            self.stats.borrow_mut().refused_full += 1;
            crate::log_warn!("shard {}: connection limit {} reached, refusing", self.id, self.conns_max);
            return None;
        }
        let per_ip_max = self.config.limits.connections_per_ip_per_s_max;
        if per_ip_max > 0 {
            let share = crate::conn::rate::per_shard_share(per_ip_max, self.shards);
            let now_s = self.coarse_ms() / 1000;
            if !self.ip_rate.borrow_mut().admit(ip, now_s, share) {
                self.stats.borrow_mut().refused_ip_rate += 1;
                crate::log_warn!("shard {}: {ip} opens connections faster than {per_ip_max}/s, refusing", self.id);
                return None;
            }
        }
        let deadline_tick = self.tick_after_ms(self.config.protocol.handshake_timeout_ms);
        let mut session = Session::accepted(fd, ip, deadline_tick);
        if transport != Transport::Tcp {
            // One goim frame per message, as goim's clients send them.
            let message_bytes_max = self.config.limits.frame_body_bytes_max + 16;
            session.ws = Some(Box::new(crate::conn::conns::WsState::upgrading(message_bytes_max)));
        }
        if transport == Transport::SecureWebSocket {
            let handshakes_max = self.config.wss.handshakes_per_shard_max;
            if self.tls_handshakes.get() >= handshakes_max {
                self.stats.borrow_mut().refused_tls_handshakes += 1;
                crate::log_warn!("shard {}: {handshakes_max} TLS handshakes in progress, refusing", self.id);
                return None;
            }
            let tls = self.tls_config.as_ref().map(|c| rustls::ServerConnection::new(c.clone()));
            let Some(Ok(tls)) = tls else { return None };
            session.tls = Some(Box::new(tls));
            self.tls_handshakes.set(self.tls_handshakes.get() + 1);
        }
        let conn = {
            let mut state = self.state.borrow_mut();
            let conn = state.conns.insert(session);
            state.wheel.insert(conn, deadline_tick);
            conn
        };
        self.stats.borrow_mut().accepted += 1;
        Some(conn)
    }

    /// Decrypts what arrived on a WSS connection, hands the plaintext on and
    /// sends what TLS wants to say (handshake records). False: stop reading.
    pub fn on_ciphertext(&self, conn: ConnRef, ciphertext: &[u8]) -> bool {
        let mut plain = std::mem::take(&mut *self.plain_scratch.borrow_mut());
        plain.clear();
        let decrypted = {
            let mut state = self.state.borrow_mut();
            match state.conns.get_mut(conn).and_then(|s| s.tls.as_mut()) {
                Some(tls) => {
                    let was_handshaking = tls.is_handshaking();
                    let decrypted = crate::conn::tls::decrypt(tls, ciphertext, &mut plain);
                    if was_handshaking && !tls.is_handshaking() {
                        self.tls_handshakes.set(self.tls_handshakes.get().saturating_sub(1));
                    }
                    decrypted
                }
                None => Ok(true),
            }
        };
        let keep_reading = match decrypted {
            Ok(peer_closed) => {
                if !plain.is_empty() {
                    session::on_bytes(self, conn, &mut plain);
                }
                if peer_closed {
                    self.state.borrow_mut().close(conn, CloseReason::ClientClosed);
                }
                !peer_closed
            }
            Err(error) => {
                crate::log_debug!("shard {}: TLS error: {error}", self.id);
                self.state.borrow_mut().close(conn, CloseReason::BadHandshake);
                false
            }
        };
        *self.plain_scratch.borrow_mut() = plain;
        // Pending records (handshake, alerts) now; writability watched if blocked.
        self.write_now(conn);
        keep_reading
    }
}
