//! The API's connection loop on one shard: read, answer every complete
//! (pipelined) request, write all answers in one write, repeat.
//!
//! Owns: HTTP/1.1 connection handling: keep-alive, pipelining (in request
//! order: see `answer_complete_requests`), `Expect: 100-continue`, idle
//! timeout, and backpressure (a publisher waits while this shard's
//! messages to other shards pile up; a push's reply waits until every
//! shard applied it). Must never: buffer
//! more than one request head plus one body, or answer a malformed request
//! with anything but a 4xx/5xx and a close.

use crate::api::access::Access;
use crate::api::endpoints::{self as api, Handled};
use crate::metrics::Endpoint;
use crate::proto::http::parser::{self, BodyFraming, HttpError};
use crate::shard::Shard;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Accepts API connections until the task is cancelled at shutdown.
pub async fn accept(shard: Rc<Shard>, listener: TcpListener) {
    let open = Rc::new(std::cell::Cell::new(0usize));
    let http = &shard.config.http;
    // Validated with the config; should it fail anyway, nobody may push.
    let access = Rc::new(Access::new(&http.push_bearer_token, &http.push_allowed_networks).unwrap_or_else(|e| {
        crate::log_error!("shard {}: push access rules refused ({e}): every push is denied", shard.id);
        Access::deny_all()
    }));
    let open_max = shard.config.limits.api_connections_per_shard_max;
    loop {
        match listener.accept().await {
            Ok(stream) if open.get() >= open_max => {
                // Past the bound a publisher is refused at once, never queued.
                crate::log_warn!("shard {}: API connection limit {open_max} reached, refusing", shard.id);
                drop(stream);
            }
            Ok(stream) => {
                open.set(open.get() + 1);
                let (shard, open, access) = (shard.clone(), open.clone(), access.clone());
                glommio::spawn_local(async move {
                    serve(shard, stream, access).await;
                    open.set(open.get() - 1);
                })
                .detach();
            }
            Err(e) => {
                crate::log_warn!("shard {}: API accept failed: {e}", shard.id);
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The push access rules and this connection's standing under them.
struct Gate<'a> {
    access: &'a Access,
    network_allowed: bool,
}

/// What the parsing pass decided about the connection.
enum Next {
    ReadMore,
    /// The answers reached `OUTPUT_BYTES_MAX`: write them, then answer the
    /// requests still waiting in the input before reading more.
    WriteFirst,
    Close,
}

/// Answers gathered before they are written (pipelined requests share the
/// write up to this size).
const OUTPUT_BYTES_MAX: usize = 1 << 20;

async fn serve(shard: Rc<Shard>, mut stream: TcpStream, access: Rc<Access>) {
    let _ = stream.set_nodelay(true);
    // The network rule is the peer's, so it is decided once per connection.
    let network_allowed = access.network_allowed(stream.peer_addr().ok().map(|addr| addr.ip()));
    let gate = Gate { access: &access, network_allowed };
    let idle = Duration::from_millis(shard.config.http.idle_timeout_ms.max(1));
    let mut input: Vec<u8> = Vec::new();
    let mut output: Vec<u8> = Vec::new();
    let mut continue_sent = false;
    // The chunked body of the request at the front of `input`, decoded so far.
    let mut chunked = parser::Chunked::default();
    // When the request at the front of `input` began to arrive.
    let mut partial_since: Option<Instant> = None;
    loop {
        let before = input.len();
        let next =
            answer_complete_requests(&shard, &gate, &mut input, &mut output, &mut continue_sent, &mut chunked).await;
        if input.is_empty() {
            partial_since = None;
        } else if input.len() < before || partial_since.is_none() {
            partial_since = Some(Instant::now());
        }
        if !output.is_empty() {
            // A publisher that does not read its answers is dropped after the idle timeout.
            let written = futures_lite::future::or(async { stream.write_all(&output).await.is_ok() }, async {
                glommio::timer::sleep(idle).await;
                false
            })
            .await;
            if !written {
                return;
            }
            output.clear();
            if output.capacity() > 64 * 1024 {
                output = Vec::new();
            }
        }
        match next {
            Next::Close => {
                let _ = stream.close().await;
                return;
            }
            Next::WriteFirst => continue,
            Next::ReadMore => {}
        }
        shard.outgoing.wait_drained().await;
        // Reads and writes that complete at once do not yield: give the
        // flusher (and other connections) a turn between request batches.
        futures_lite::future::yield_now().await;
        let deadline = partial_since.map(|since| since + request_allowance(&shard, input.len()));
        let wait = match deadline {
            Some(deadline) => idle.min(deadline.saturating_duration_since(Instant::now())),
            None => idle,
        };
        let read = futures_lite::future::or(async { read_into(&mut stream, &mut input).await.ok() }, async {
            glommio::timer::sleep(wait).await;
            None
        })
        .await;
        match read {
            Some(n) if n > 0 => {}
            None if deadline.is_some_and(|d| Instant::now() >= d) => {
                // Too slow (slowloris): 408, then close; other connections
                // were served meanwhile.
                crate::log_debug!("shard {}: API request too slow, closing", shard.id);
                let mut refusal = Vec::new();
                crate::proto::http::response::write(
                    &mut refusal,
                    408,
                    "Request Timeout",
                    "text/plain",
                    b"Request Timeout",
                    true,
                );
                let _ = futures_lite::future::or(async { stream.write_all(&refusal).await.is_ok() }, async {
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                    false
                })
                .await;
                let _ = stream.close().await;
                return;
            }
            _ => return,
        }
    }
}

/// How long a request of `bytes_so_far` may take from its first byte:
/// `request_timeout_ms`, plus its bytes at `request_body_bytes_per_s_min`.
fn request_allowance(shard: &Shard, bytes_so_far: usize) -> Duration {
    let http = &shard.config.http;
    let body_ms = bytes_so_far as u64 * 1000 / http.request_body_bytes_per_s_min.max(1);
    Duration::from_millis(http.request_timeout_ms.saturating_add(body_ms))
}

/// Bytes read from an API connection in one read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Reads once, appending to `input` (grown by at most one chunk).
async fn read_into(stream: &mut TcpStream, input: &mut Vec<u8>) -> std::io::Result<usize> {
    let start = input.len();
    input.resize(start + READ_CHUNK_BYTES, 0);
    let result = stream.read(&mut input[start..]).await;
    input.truncate(start + *result.as_ref().unwrap_or(&0));
    result
}

/// Requests of one class in flight on one connection before the loop waits
/// for their replies (each holds a ticket and a reply slot).
const IN_FLIGHT_MAX: usize = 1024;

/// Replies in request order: ready ones, and ones waiting for their pushes
/// (each with whether to close after it, its endpoint and when it started).
struct InFlight {
    shard: Rc<Shard>,
    class: Option<api::Class>,
    replies: Vec<(Handled, bool, Endpoint, Instant)>,
}

impl InFlight {
    fn new(shard: &Rc<Shard>) -> InFlight {
        InFlight { shard: shard.clone(), class: None, replies: Vec::new() }
    }

    /// Counts a reply by endpoint and code, and records its latency.
    fn note(&self, endpoint: Endpoint, started: Instant, reply: &api::Reply) {
        let mut stats = self.shard.stats.borrow_mut();
        let code = crate::metrics::api_code_index(reply.status, &reply.body);
        stats.api_requests[endpoint as usize][code] += 1;
        stats.api_latency[endpoint as usize].record_us(started.elapsed().as_micros() as u64);
    }

    /// Waits for every reply and appends them to `output`, in request order.
    /// One deadline for them all, on one timer made only when some reply is
    /// not ready yet: a fault costs one timeout, not one each, and replies
    /// confirmed already cost no timer at all.
    async fn drain(&mut self, output: &mut Vec<u8>) {
        let mut timer: Option<glommio::timer::Timer> = None;
        let replies = std::mem::take(&mut self.replies);
        for (handled, close, endpoint, started) in replies {
            let reply = match handled {
                Handled::Now(reply) => reply,
                Handled::Later(wait) => match wait.ready() {
                    Some(answer) => api::reply_to(Some(answer)),
                    None => {
                        let timer = timer.get_or_insert_with(|| {
                            glommio::timer::Timer::new(Duration::from_millis(api::CONFIRM_TIMEOUT_MS))
                        });
                        let answer = futures_lite::future::or(async { Some(wait.await) }, async {
                            timer.await;
                            None
                        })
                        .await;
                        api::reply_to(answer)
                    }
                },
            };
            self.note(endpoint, started, &reply);
            api::write_reply(output, &reply, close);
        }
        self.class = None;
    }
}

/// Answers every complete request at the front of `input` into `output`,
/// removing what it used. Requests of one class are started together and
/// their replies awaited together; a request of another class starts only
/// once the ones before it have been applied by every shard, so pipelined
/// requests take effect in request order.
async fn answer_complete_requests(
    shard: &Rc<Shard>,
    gate: &Gate<'_>,
    input: &mut Vec<u8>,
    output: &mut Vec<u8>,
    continue_sent: &mut bool,
    chunked: &mut parser::Chunked,
) -> Next {
    let limits = &shard.config.limits;
    let mut pos = 0;
    let mut in_flight = InFlight::new(shard);
    let next = loop {
        if pos == input.len() {
            break Next::ReadMore;
        }
        if output.len() >= OUTPUT_BYTES_MAX {
            break Next::WriteFirst;
        }
        let head =
            match parser::parse_head(&input[pos..], limits.request_header_bytes_max, limits.request_body_bytes_max) {
                Ok(Some(head)) => head,
                Ok(None) => break Next::ReadMore,
                Err(error) => {
                    in_flight.drain(output).await;
                    refuse(output, error);
                    break Next::Close;
                }
            };
        let body_start = pos + head.head_bytes;
        let (body_range, used, is_chunked) = match head.framing {
            BodyFraming::Length(length) if input.len() - body_start >= length => {
                (body_start..body_start + length, head.head_bytes + length, false)
            }
            BodyFraming::Length(_) => {
                // Earlier replies go first: a 100 before them would answer the wrong request.
                in_flight.drain(output).await;
                send_continue(&head, output, continue_sent);
                break Next::ReadMore;
            }
            BodyFraming::Chunked => match chunked.decode(&input[body_start..], limits.request_body_bytes_max) {
                Ok(Some(length)) => (0..chunked.body.len(), head.head_bytes + length, true),
                Ok(None) => {
                    in_flight.drain(output).await;
                    send_continue(&head, output, continue_sent);
                    break Next::ReadMore;
                }
                Err(error) => {
                    chunked.reset();
                    in_flight.drain(output).await;
                    refuse(output, error);
                    break Next::Close;
                }
            },
        };
        let target = &input[pos + head.target_start..pos + head.target_end];
        let started = Instant::now();
        let endpoint = Endpoint::of(target.split(|b| *b == b'?').next().unwrap_or_default());
        let mut request = api::parse(shard, head.method, target);
        if request.is_push() {
            let authorization = head.authorization.map(|(start, end)| &input[pos + start..pos + end]);
            if let Err(denial) = gate.access.check(gate.network_allowed, authorization) {
                request = api::Request::Denied(denial);
            }
        }
        let class = request.class(shard);
        if in_flight.class.is_some_and(|c| c != class) || in_flight.replies.len() >= IN_FLIGHT_MAX {
            in_flight.drain(output).await;
        }
        let body = if is_chunked { &chunked.body[body_range] } else { &input[body_range] };
        let handled = api::start(shard, request, head.method, target, body);
        if is_chunked {
            chunked.reset();
        }
        in_flight.class = Some(class);
        in_flight.replies.push((handled, !head.keep_alive, endpoint, started));
        if class == api::Class::Read {
            // Reads are answered one by one, so `OUTPUT_BYTES_MAX` bounds what
            // a pipelining client makes us buffer (a history page can be
            // megabytes); only pushes, whose replies are a few bytes, stay in
            // flight together.
            in_flight.drain(output).await;
        }
        pos += used;
        *continue_sent = false;
        if !head.keep_alive {
            break Next::Close;
        }
    };
    in_flight.drain(output).await;
    input.drain(..pos);
    if input.is_empty() && input.capacity() > 64 * 1024 {
        *input = Vec::new();
    }
    // An incomplete request may hold at most one head and one body, plus
    // chunk framing; anything beyond (endless trailers, tiny chunks) is refused.
    let input_max = limits.request_header_bytes_max + 2 * limits.request_body_bytes_max + 64 * 1024;
    if matches!(next, Next::ReadMore) && input.len() > input_max {
        refuse(output, HttpError::BodyTooLarge);
        return Next::Close;
    }
    next
}

fn send_continue(head: &parser::Head, output: &mut Vec<u8>, continue_sent: &mut bool) {
    if head.expect_continue && !*continue_sent {
        output.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        *continue_sent = true;
    }
}

fn refuse(output: &mut Vec<u8>, error: HttpError) {
    let (status, reason) = error.status();
    crate::log_debug!("API request refused: {status} {reason}");
    crate::proto::http::response::write(output, status, reason, "text/plain", reason.as_bytes(), true);
}
