//! The tasks a shard's connections need besides the core's: the waits
//! between the steps of a throttled broadcast walk, and the auth URL's
//! calls (one TCP connection per call, `Connection: close`).
//!
//! Must never: hold a borrow of the shard across an await, or read an auth
//! answer past its head bound (`proto::auth_url::verdict` decides when the
//! head is whole).

use crate::proto::auth_url::{self, Verdict};
use crate::shard::dispatch::Walk;
use crate::shard::io::AuthCall;
use crate::shard::Shard;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::rc::Rc;

/// Bytes read from the auth service per read.
const READ_CHUNK_BYTES: usize = 2048;

/// Steps `walk` until the core says it is done.
pub fn run_walk(shard: Rc<Shard>, walk: Walk) {
    glommio::spawn_local(async move {
        while let Some(wait) = shard.walk_step(&walk) {
            glommio::timer::sleep(wait).await;
        }
    })
    .detach();
}

/// Makes `call` within its timeout (connect, write, answer in all) and
/// hands the verdict to the core.
pub fn call_auth_url(shard: Rc<Shard>, call: AuthCall) {
    let AuthCall { conn, addr, request, timeout, admission } = call;
    glommio::spawn_local(async move {
        let verdict = futures_lite::future::or(exchange(addr, request), async move {
            glommio::timer::sleep(timeout).await;
            Verdict::Unavailable(format!("no answer within {} ms", timeout.as_millis()))
        })
        .await;
        shard.on_auth_verdict(conn, verdict, admission);
    })
    .detach();
}

/// One call: connect, send the request, read until the answer's head is
/// complete (or the connection ends).
async fn exchange(addr: std::net::SocketAddr, request: Vec<u8>) -> Verdict {
    let mut stream = match glommio::net::TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) => return Verdict::Unavailable(format!("cannot connect to {addr}: {e}")),
    };
    if let Err(e) = stream.write_all(&request).await {
        return Verdict::Unavailable(format!("cannot send to {addr}: {e}"));
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => {
                return auth_url::verdict(&answer)
                    .unwrap_or_else(|| Verdict::Unavailable(format!("{addr} closed before answering")))
            }
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if let Some(verdict) = auth_url::verdict(&answer) {
                    return verdict;
                }
            }
            Err(e) => return Verdict::Unavailable(format!("cannot read from {addr}: {e}")),
        }
    }
}
