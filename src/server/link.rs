//! A shard's connection to NATS: connect (trying each of `nats_urls` in
//! turn), handshake, then one reader and one writer until the connection
//! breaks; then back off and connect again, subscriptions restored.
//!
//! Owns: the socket to the NATS server and its liveness (our PING every
//! `KEEPALIVE_MS`; a PING unanswered for `PONG_TIMEOUT_MS` drops the
//! connection). Must never: hold a `RefCell` borrow across an await, or
//! buffer more than one operation's worth of input (`payload_max` plus a
//! control line).

use crate::proto::nats::{self, ServerOp};
use crate::shard::Shard;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::cell::Cell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

/// A connection attempt (TCP plus handshake) gives up after this long.
const CONNECT_TIMEOUT_MS: u64 = 2000;
/// Reconnect backoff: from the first delay, doubling, up to the last.
const BACKOFF_FIRST_MS: u64 = 50;
const BACKOFF_MAX_MS: u64 = 2000;
/// How often an idle connection is checked with a PING.
const KEEPALIVE_MS: u64 = 1000;
/// A PING unanswered this long means the server is gone.
const PONG_TIMEOUT_MS: u64 = 4000;
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Keeps `shard` connected to the bus until the shard stops.
pub async fn run(shard: Rc<Shard>) {
    let Some(bus) = shard.bus.as_ref() else { return };
    let mut failures = 0u32;
    let mut next_url = 0usize;
    let mut ever_connected = false;
    while !shard.stopping.get() {
        let url = bus.urls[next_url % bus.urls.len()].clone();
        next_url += 1;
        match connect(&shard, &url).await {
            Ok((stream, leftover)) => {
                failures = 0;
                if ever_connected {
                    shard.stats.borrow_mut().bus_reconnects += 1;
                }
                ever_connected = true;
                crate::log_info!("shard {}: connected to the bus at {url}", shard.id);
                shard.on_bus_connected();
                let why = serve(&shard, stream, leftover).await;
                shard.on_bus_disconnected();
                crate::log_warn!("shard {}: bus connection to {url} lost: {why}", shard.id);
            }
            Err(e) => {
                failures += 1;
                crate::log_warn!("shard {}: cannot connect to the bus at {url}: {e}", shard.id);
            }
        }
        let delay_ms = (BACKOFF_FIRST_MS << failures.min(6)).min(BACKOFF_MAX_MS);
        // Up to half again, so that every shard of every node does not
        // reconnect in the same millisecond.
        let jitter_ms = shard.random_below(delay_ms / 2 + 1);
        glommio::timer::sleep(Duration::from_millis(delay_ms + jitter_ms)).await;
    }
}

fn resolve(url: &str) -> Result<SocketAddr, String> {
    let host_port = url.strip_prefix("nats://").unwrap_or(url);
    let host_port = host_port.rsplit('@').next().unwrap_or(host_port).trim_end_matches('/');
    host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host_port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host_port} resolves to nothing"))
}

/// Connects and handshakes: INFO in, CONNECT + subscriptions + PING out.
/// Returns the stream and any bytes read past the INFO.
async fn connect(shard: &Rc<Shard>, url: &str) -> Result<(TcpStream, Vec<u8>), String> {
    let bus = shard.bus.as_ref().ok_or("no bus")?;
    let addr = resolve(url)?;
    let timeout = Duration::from_millis(CONNECT_TIMEOUT_MS);
    let mut stream = TcpStream::connect_timeout(addr, timeout).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut input = Vec::new();
    let info = read_op(&mut stream, &mut input, |op| match op {
        ServerOp::Info(json) => Some(Ok(nats::info_max_payload(json))),
        ServerOp::Err(e) => Some(Err(String::from_utf8_lossy(e).into_owned())),
        _ => None,
    })
    .await??;
    let mut hello = Vec::new();
    bus.on_connect(&format!("corecast {} shard {}", bus.node_id, shard.id), info, shard.now_ms(), &mut hello);
    stream.write_all(&hello).await.map_err(|e| e.to_string())?;
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    // The handshake's PING is answered like any other: a server that
    // refuses us says -ERR and closes, which the reader reports.
    bus.set_connected(true);
    Ok((stream, input))
}

/// Reads until `want` accepts an operation (others are skipped).
async fn read_op<T>(
    stream: &mut TcpStream,
    input: &mut Vec<u8>,
    mut want: impl FnMut(&ServerOp<'_>) -> Option<T>,
) -> Result<T, String> {
    let mut chunk = vec![0u8; 4096];
    loop {
        while let Some((op, used)) = nats::parse(input, 0).map_err(|e| format!("{e:?}"))? {
            let found = want(&op);
            input.drain(..used);
            if let Some(found) = found {
                return Ok(found);
            }
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed by the server".into());
        }
        input.extend_from_slice(&chunk[..n]);
    }
}

/// Runs the reader and the writer until either ends; returns why.
async fn serve(shard: &Rc<Shard>, stream: TcpStream, leftover: Vec<u8>) -> String {
    let (reader, writer) = futures_lite::io::split(stream);
    let due = Rc::new(Cell::new(false));
    let read = read_loop(shard.clone(), reader, leftover);
    let write = write_loop(shard.clone(), writer, due.clone());
    let tick = keepalive(shard.clone(), due);
    futures_lite::future::or(read, futures_lite::future::or(write, tick)).await
}

async fn read_loop(shard: Rc<Shard>, mut reader: futures_lite::io::ReadHalf<TcpStream>, mut input: Vec<u8>) -> String {
    let Some(bus) = shard.bus.as_ref() else { return "no bus".into() };
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let payload_max = bus.payload_max();
        let mut used = 0;
        loop {
            match nats::parse(&input[used..], payload_max) {
                Ok(Some((op, n))) => {
                    used += n;
                    handle(&shard, op);
                }
                Ok(None) => break,
                Err(e) => return format!("protocol error from the server: {e:?}"),
            }
        }
        input.drain(..used);
        if input.capacity() > payload_max + READ_CHUNK_BYTES && input.len() < READ_CHUNK_BYTES {
            input.shrink_to(READ_CHUNK_BYTES);
        }
        match reader.read(&mut chunk).await {
            Ok(0) => return "closed by the server".into(),
            Ok(n) => input.extend_from_slice(&chunk[..n]),
            Err(e) => return e.to_string(),
        }
    }
}

pub(crate) fn handle(shard: &Rc<Shard>, op: ServerOp<'_>) {
    let Some(bus) = shard.bus.as_ref() else { return };
    match op {
        ServerOp::Msg { subject, sid, payload, .. } => {
            shard.stats.borrow_mut().bus_messages_in += 1;
            shard.on_bus_message(subject, sid, payload);
        }
        ServerOp::Ping => bus.queue_raw(nats::PONG),
        ServerOp::Pong => {
            for ack in bus.on_pong() {
                shard.confirm(ack);
            }
        }
        ServerOp::Info(json) => {
            if let Some(max) = nats::info_max_payload(json) {
                bus.set_payload_max(max);
            }
        }
        ServerOp::Ok => {}
        ServerOp::Err(e) => crate::log_warn!("shard {}: bus server error: {}", shard.id, String::from_utf8_lossy(e)),
    }
}

/// Raises the writer every `KEEPALIVE_MS` with `due` set (one timer per
/// connection, not one per write).
async fn keepalive(shard: Rc<Shard>, due: Rc<Cell<bool>>) -> String {
    loop {
        glommio::timer::sleep(Duration::from_millis(KEEPALIVE_MS)).await;
        due.set(true);
        if let Some(bus) = shard.bus.as_ref() {
            bus.wake.raise();
        }
    }
}

async fn write_loop(
    shard: Rc<Shard>,
    mut writer: futures_lite::io::WriteHalf<TcpStream>,
    keepalive_due: Rc<Cell<bool>>,
) -> String {
    let Some(bus) = shard.bus.as_ref() else { return "no bus".into() };
    let mut output = Vec::new();
    let mut last_write_ms = shard.now_ms();
    loop {
        bus.wake.wait().await;
        // Let every task ready in this pass publish first: one write for all.
        futures_lite::future::yield_now().await;
        if shard.stopping.get() {
            return "shutting down".into();
        }
        let now_ms = shard.now_ms();
        if bus.oldest_ping_ms().is_some_and(|at| now_ms.saturating_sub(at) > PONG_TIMEOUT_MS) {
            return format!("no PONG within {PONG_TIMEOUT_MS} ms");
        }
        let idle = keepalive_due.replace(false) && now_ms.saturating_sub(last_write_ms) >= KEEPALIVE_MS;
        bus.take_output(now_ms, idle && bus.oldest_ping_ms().is_none(), &mut output);
        if output.is_empty() {
            continue;
        }
        if let Err(e) = writer.write_all(&output).await {
            return e.to_string();
        }
        last_write_ms = shard.now_ms();
        if output.capacity() > 1 << 20 {
            output = Vec::new();
        }
    }
}
