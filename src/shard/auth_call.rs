//! The business auth URL's calls of one shard (`[auth] url`; the request
//! and the verdict are `protocol::auth_url`'s): one TCP connection per call
//! (`Connection: close`), at most `auth.url_calls_in_flight_per_shard_max`
//! open at once, each given `auth.url_timeout_ms` in all (connect, write,
//! answer). The client waits in `Phase::Checking` meanwhile.
//!
//! Owns: the in-flight count, and what a call's verdict does to
//! the connection: admitted (its held frames then handled), or closed as
//! `auth_denied` / `auth_unavailable` (WebSocket clients get close 1008 /
//! 1013 first), counted by result. The call itself (connect, send, read
//! the answer's head, the timeout) is a driver's (`crate::io::auth_http`).
//! Must never: act on a connection that closed or was replaced in its slot
//! meanwhile (generation-checked `ConnRef`, phase checked).

use crate::conn::close::CloseReason;
use crate::conn::conns::{ConnRef, Phase};
use crate::metrics::AUTH_URL_UNAVAILABLE as UNAVAILABLE;
use crate::metrics::{AUTH_URL_ALLOW as ALLOW, AUTH_URL_BUSY as BUSY, AUTH_URL_DENY as DENY};
use crate::proto::auth_url::{AuthUrl, Verdict};
use crate::proto::ws::frame::{encode_close, CloseCode};
use crate::shard::io::AuthCall;
use crate::shard::session::{self, Admission};
use crate::shard::Shard;
use std::time::Duration;

impl Shard {
    /// Puts `conn`'s auth frame body to the auth URL; the connection is
    /// admitted or closed when the answer comes. Past the in-flight bound
    /// the client is refused at once.
    pub fn ask_auth_url(
        &self,
        conn: ConnRef,
        url: &AuthUrl,
        token_body: &[u8],
        admission: Admission,
    ) -> Result<(), CloseReason> {
        let in_flight_max = self.config.auth.url_calls_in_flight_per_shard_max;
        if self.auth_calls_in_flight.get() >= in_flight_max {
            self.stats.borrow_mut().auth_url_calls[BUSY] += 1;
            crate::log_warn!("shard {}: {in_flight_max} auth URL calls in flight, refusing a client", self.id);
            return Err(close_ws(self, conn, CloseCode(1013), CloseReason::AuthUnavailable));
        }
        let request = {
            let mut state = self.state.borrow_mut();
            let Some(session) = state.conns.get_mut(conn) else { return Ok(()) };
            session.phase = Phase::Checking;
            let transport = crate::metrics::TRANSPORTS[crate::shard::queue::transport_of(session)];
            url.request(token_body, session.ip, transport)
        };
        self.auth_calls_in_flight.set(self.auth_calls_in_flight.get() + 1);
        let timeout = Duration::from_millis(self.config.auth.url_timeout_ms);
        let call = AuthCall { conn, addr: url.addr, request, timeout, admission };
        self.io.call_auth_url(self.rc(), call);
        Ok(())
    }

    /// The auth URL's verdict on `conn` (or the driver's: no answer in time).
    pub fn on_auth_verdict(&self, conn: ConnRef, verdict: Verdict, admission: Admission) {
        self.auth_calls_in_flight.set(self.auth_calls_in_flight.get() - 1);
        settle(self, conn, verdict, admission);
    }
}

/// The answer came: admit the client, or close it with the reason.
fn settle(shard: &Shard, conn: ConnRef, verdict: Verdict, admission: Admission) {
    let result = match verdict {
        Verdict::Allow => ALLOW,
        Verdict::Deny(_) => DENY,
        Verdict::Unavailable(_) => UNAVAILABLE,
    };
    shard.stats.borrow_mut().auth_url_calls[result] += 1;
    let waiting =
        shard.state.borrow().conns.get(conn).is_some_and(|s| s.phase == Phase::Checking && s.close_reason.is_none());
    if !waiting {
        return; // Closed meanwhile (its deadline, or the client left).
    }
    match verdict {
        Verdict::Allow => {
            session::admit(shard, conn, admission);
            // The frames that came after the auth frame, in order.
            session::on_bytes(shard, conn, &mut []);
        }
        Verdict::Deny(status) => {
            crate::log_debug!("shard {}: the auth URL refused a client (status {status})", shard.id);
            let reason = close_ws(shard, conn, CloseCode(1008), CloseReason::AuthDenied);
            shard.close(conn, reason);
        }
        Verdict::Unavailable(why) => {
            crate::log_warn!("shard {}: client refused: no answer from the auth URL: {why}", shard.id);
            let reason = close_ws(shard, conn, CloseCode(1013), CloseReason::AuthUnavailable);
            shard.close(conn, reason);
        }
    }
    shard.flush.raise();
}

/// A WebSocket client is told why before it is closed (1008 policy
/// violation, 1013 try again later); a goim TCP client is just closed.
fn close_ws(shard: &Shard, conn: ConnRef, code: CloseCode, reason: CloseReason) -> CloseReason {
    let ws = shard.state.borrow().conns.get(conn).is_some_and(|s| s.ws.is_some());
    if ws {
        let text = if reason == CloseReason::AuthDenied { "auth denied" } else { "auth unavailable" };
        shard.write_control(conn, encode_close(code.0, text));
    }
    reason
}
