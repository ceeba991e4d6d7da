// goim v2 client for browsers and Node (>= 20). A plain ES module: no build
// step, no dependencies. Talks to corecast (or goim) over WebSocket.
//
// Wire format (all integers big-endian, signed), one goim frame per WebSocket
// message the client sends:
//
//   packet_len int32 (= 16 + body length) | header_len int16 (= 16)
//   ver int16 | op int32 | seq int32 | body
//
// The server sends either one frame per message, or an op-9 ("raw") frame
// whose body holds one or more complete frames back to back (batched pushes);
// decodeFrames() walks those inner frames by their packet lengths.
//
// Usage:
//
//   import { GoimClient } from './goim.js';
//   const client = await GoimClient.fromNodes('http://127.0.0.1:3111',
//     { mid: 1, room_id: 'live://1000', accepts: [1000, 1001, 1002] });
//   client.addEventListener('message', (e) => console.log(e.detail.op, e.detail.text()));
//   client.addEventListener('online', (e) => console.log('online', e.detail.count));
//   client.connect();
//
// In Node 20 (no global WebSocket) pass a constructor: `{ WebSocket }` from
// the `ws` package or any object with the browser WebSocket interface.
//
// Positions and recovery (a corecast extension, off by default; goim ignores
// it): with `positions: true` the token asks the server for the room's offsets.
// The server then sends one op-20 (position) frame after the auth reply and
// after each change of room, and every room push carries its room offset in
// the frame's sequence field. The client remembers the epoch and the last
// offset of its room, and every reconnect asks for the pushes it missed
// (`recover` in the token); the server replays them before the live ones:
//
//   const client = await GoimClient.fromNodes(api, { room_id: 'live://1000' }, { positions: true });
//   client.addEventListener('message', (e) => console.log(e.detail.offset, e.detail.text()));
//   client.addEventListener('recovered', (e) => console.log('replayed', e.detail.missed));

/** Length of every goim header. */
export const HEADER_LEN = 16;

/** Largest body the server accepts from a client (goim's limit). */
export const CLIENT_BODY_MAX = 4096;

/** goim operations (docs/goim-compat.md, section 1). */
export const OP = Object.freeze({
  HEARTBEAT: 2,
  HEARTBEAT_REPLY: 3,
  SEND_MSG: 4,
  AUTH: 7,
  AUTH_REPLY: 8,
  RAW: 9,
  CHANGE_ROOM: 12,
  CHANGE_ROOM_REPLY: 13,
  SUB: 14,
  SUB_REPLY: 15,
  UNSUB: 16,
  UNSUB_REPLY: 17,
  /** corecast extension: the room's epoch and offset (JSON body), server -> client. */
  POSITION: 20,
});

/** Largest room offset: offsets are unsigned 32-bit (the frame's sequence field read unsigned). */
export const OFFSET_MAX = 0xffffffff;

/** Echoes of send() the client keeps apart from room pushes (bounded: old ones are forgotten). */
const ECHOES_MAX = 64;

/** goim's default reconnect backoff, in seconds (as /goim/nodes/weighted reports it). */
export const DEFAULT_BACKOFF = Object.freeze({ base_delay: 3, factor: 1.8, jitter: 0.3, max_delay: 300 });

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8');

/** Thrown by decodeFrames on a malformed frame. */
export class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/**
 * One decoded goim frame. `body` is a view into the received bytes. `offset`
 * is the room offset of a room push on a connection with positions (the
 * sequence field read unsigned), null otherwise.
 */
export class Frame {
  constructor(op, ver, seq, body) {
    this.op = op;
    this.ver = ver;
    this.seq = seq;
    this.body = body;
    this.offset = null;
  }

  /** The body decoded as UTF-8 (invalid sequences become U+FFFD). */
  text() {
    return decoder.decode(this.body);
  }
}

function toBytes(body) {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  throw new TypeError('frame body must be a string, Uint8Array, ArrayBuffer or view');
}

/**
 * Encodes one goim frame.
 * @param {{op: number, ver?: number, seq?: number, body?: string|Uint8Array|ArrayBuffer}} frame
 * @returns {Uint8Array} header + body
 */
export function encodeFrame({ op, ver = 1, seq = 0, body } = {}) {
  if (!Number.isInteger(op)) throw new TypeError('op must be an integer');
  const bytes = toBytes(body);
  const out = new Uint8Array(HEADER_LEN + bytes.length);
  const view = new DataView(out.buffer);
  view.setInt32(0, out.length);
  view.setInt16(4, HEADER_LEN);
  view.setInt16(6, ver);
  view.setInt32(8, op);
  view.setInt32(12, seq);
  out.set(bytes, HEADER_LEN);
  return out;
}

/**
 * Decodes a buffer holding one or more complete goim frames back to back.
 * With `unpackRaw` (the default), each op-9 frame is replaced by the frames
 * its body holds, so the result is the flat list of frames in order.
 * Throws ProtocolError on a short, truncated or malformed frame.
 * @param {Uint8Array|ArrayBuffer|ArrayBufferView} data
 * @param {{unpackRaw?: boolean}} [options]
 * @returns {Frame[]}
 */
export function decodeFrames(data, { unpackRaw = true } = {}) {
  const bytes = toBytes(data);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const frames = [];
  let offset = 0;
  while (offset < bytes.length) {
    const left = bytes.length - offset;
    if (left < HEADER_LEN) throw new ProtocolError(`truncated header: ${left} bytes at offset ${offset}`);
    const packetLen = view.getInt32(offset);
    const headerLen = view.getInt16(offset + 4);
    if (headerLen !== HEADER_LEN) throw new ProtocolError(`header length ${headerLen} at offset ${offset}`);
    if (packetLen < HEADER_LEN) throw new ProtocolError(`packet length ${packetLen} at offset ${offset}`);
    if (packetLen > left) throw new ProtocolError(`packet length ${packetLen} exceeds the ${left} bytes left`);
    const ver = view.getInt16(offset + 6);
    const op = view.getInt32(offset + 8);
    const seq = view.getInt32(offset + 12);
    const body = bytes.subarray(offset + HEADER_LEN, offset + packetLen);
    if (unpackRaw && op === OP.RAW) {
      for (const inner of decodeFrames(body, { unpackRaw: false })) frames.push(inner);
    } else {
      frames.push(new Frame(op, ver, seq, body));
    }
    offset += packetLen;
  }
  return frames;
}

/**
 * Delay before reconnect attempt `attempt` (1 = the first retry after a
 * failure), in milliseconds: min(max_delay, base_delay * factor^(attempt-1))
 * seconds, then multiplied by a random factor in [1 - jitter, 1 + jitter]
 * (gRPC-style backoff, as goim advertises it).
 * @param {number} attempt 1-based
 * @param {{base_delay?: number, factor?: number, jitter?: number, max_delay?: number}} [backoff] seconds
 * @param {() => number} [random] returns [0, 1)
 */
export function backoffDelayMs(attempt, backoff = DEFAULT_BACKOFF, random = Math.random) {
  const b = { ...DEFAULT_BACKOFF, ...backoff };
  const n = Math.max(0, Math.floor(attempt) - 1);
  const seconds = Math.min(b.max_delay, b.base_delay * Math.pow(b.factor, n));
  const spread = 1 + b.jitter * (2 * random() - 1);
  return Math.max(0, Math.round(seconds * spread * 1000));
}

/** Parses a room key `type://id` into `{type, id}` (null for anything else). */
export function parseRoomKey(key) {
  const match = /^([^:/]+):\/\/(.+)$/.exec(String(key ?? ''));
  return match ? { type: match[1], id: match[2] } : null;
}

function opsList(ops) {
  if (typeof ops === 'string') return ops.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (typeof ops === 'number') return [ops];
  return Array.from(ops, Number);
}

/**
 * Parses the JSON body of an op-20 frame:
 * `{room, epoch, offset, recovered, missed}`. Throws ProtocolError when the
 * body is not such an object.
 * @param {Frame} frame
 */
export function parsePosition(frame) {
  let body;
  try {
    body = JSON.parse(frame.text());
  } catch {
    throw new ProtocolError('position frame: invalid JSON');
  }
  const isCount = (n) => Number.isInteger(n) && n >= 0 && n <= OFFSET_MAX;
  if (
    !body ||
    typeof body.room !== 'string' ||
    typeof body.epoch !== 'string' ||
    body.epoch === '' ||
    !isCount(body.offset) ||
    (body.missed !== undefined && !isCount(body.missed))
  ) {
    throw new ProtocolError(`position frame: unexpected body ${frame.text().slice(0, 200)}`);
  }
  return {
    room: body.room,
    epoch: body.epoch,
    offset: body.offset,
    recovered: body.recovered === true,
    missed: body.missed ?? 0,
  };
}

function makeEvent(type, detail) {
  if (typeof CustomEvent === 'function') return new CustomEvent(type, { detail });
  const event = new Event(type);
  Object.defineProperty(event, 'detail', { value: detail });
  return event;
}

// WebSocket readyState values (the same on every implementation).
const WS_OPEN = 1;

/**
 * A goim connection that authenticates, keeps itself alive with heartbeats and
 * reconnects with exponential backoff.
 *
 * Events (all with `event.detail`):
 * - `state`        {state}: 'idle' | 'connecting' | 'authenticating' | 'connected' | 'reconnecting' | 'closed'
 * - `open`         {}: the WebSocket is open, the auth frame is sent
 * - `auth`         {}: the server accepted the token (op 8)
 * - `message`      Frame {op, ver, seq, offset, body, text()}: one pushed frame (op-9 batches
 *                   unpacked); `offset` is the room offset of a room push with positions, else null
 * - `position`     {room, epoch, offset, recovered, missed, requested}: an op-20 frame (positions
 *                   only): the room's epoch and its last offset (live pushes follow it; after a
 *                   recovery the `missed` replayed ones up to it come first); `requested` is the
 *                   {epoch, offset} the auth token asked to recover, or null
 * - `recovered`    {room, epoch, offset, missed}: the server replays the `missed` room pushes after
 *                   the requested offset (they follow as `message` events, then the live ones)
 * - `duplicate`    Frame: a room push at or below the remembered offset, dropped (no `message`)
 * - `online`       {count}: the room's online count from a heartbeat reply (op 3)
 * - `reply`        Frame: a change-room / sub / unsub echo (op 13 / 15 / 17)
 * - `close`        {code, reason, wasClean}: the WebSocket closed
 * - `reconnecting` {attempt, delayMs}: a reconnect is scheduled
 * - `error`        {error}: a protocol error or a socket error (the connection is then closed)
 */
export class GoimClient extends EventTarget {
  /**
   * @param {object} options
   * @param {string} options.url  ws:// or wss:// URL of the server's /sub endpoint
   * @param {{mid?: number, key?: string, room_id?: string, platform?: string, accepts?: number[],
   *   positions?: boolean, recover?: {epoch: string, offset: number}}} [options.token]
   *   `positions: true` in the token is the same as the option; `recover` in the token is the
   *   position of `room_id` to resume from on the first connect (e.g. one saved by the page), and
   *   turns positions on.
   * @param {boolean} [options.positions=false] ask for room offsets (op 20, offsets in the
   *   sequence field) and recover missed room pushes on every reconnect
   * @param {number} [options.heartbeatMs=30000] heartbeat interval
   * @param {number} [options.heartbeatMax=2] heartbeats that may go unanswered before the connection is dropped
   * @param {number} [options.authTimeoutMs=10000] time from connect() to the auth reply
   * @param {{base_delay?: number, factor?: number, jitter?: number, max_delay?: number}} [options.backoff] seconds
   * @param {boolean} [options.reconnect=true]
   * @param {Function} [options.WebSocket] WebSocket constructor (default: globalThis.WebSocket)
   * @param {() => number} [options.random] for tests: the jitter source
   */
  constructor({
    url,
    token = {},
    heartbeatMs = 30000,
    heartbeatMax = 2,
    authTimeoutMs = 10000,
    backoff = DEFAULT_BACKOFF,
    reconnect = true,
    positions = false,
    WebSocket: WebSocketImpl = globalThis.WebSocket,
    random = Math.random,
  } = {}) {
    super();
    if (!url) throw new TypeError('url is required');
    if (typeof WebSocketImpl !== 'function') {
      throw new TypeError('no WebSocket implementation: pass options.WebSocket (Node < 22)');
    }
    this.url = url;
    this.token = {
      mid: 0,
      key: '',
      room_id: '',
      platform: 'web',
      accepts: [],
      ...token,
    };
    this.token.accepts = opsList(this.token.accepts);
    // The wire fields of positions are built per connect (see _authBody).
    const { recover } = this.token;
    /** Positions (op 20, room offsets, recovery) are asked for. */
    this.positions = positions === true || this.token.positions === true || !!recover;
    delete this.token.positions;
    delete this.token.recover;
    /**
     * What the client has of its room: {room, epoch, offset} (offset = the last
     * room push received), null when unknown. Sent as `recover` on every connect.
     */
    this.position = null;
    if (recover && this.token.room_id) {
      this.position = { room: this.token.room_id, epoch: String(recover.epoch), offset: Number(recover.offset) };
    }
    /** Room pushes dropped because their offset was not above the remembered one. */
    this.duplicates = 0;
    this.heartbeatMs = heartbeatMs;
    this.heartbeatMax = Math.max(1, heartbeatMax);
    this.authTimeoutMs = authTimeoutMs;
    this.backoff = { ...DEFAULT_BACKOFF, ...backoff };
    this.reconnect = reconnect;
    this.state = 'idle';
    /** Online count of the room from the last heartbeat reply (null before the first). */
    this.online = null;
    /** Reconnect attempts since the last successful auth. */
    this.attempt = 0;
    /** The /goim/nodes/weighted data when built by fromNodes(). */
    this.nodes = null;
    this._WebSocket = WebSocketImpl;
    this._random = random;
    this._ws = null;
    this._seq = 0;
    this._stopped = true;
    this._timers = { heartbeat: null, auth: null, reconnect: null };
    this._unanswered = 0;
    this._pending = new Map(); // reply op -> [{resolve, reject}]
    this._inbound = Promise.resolve(); // keeps Blob messages in order
    this._echoes = []; // "op:seq" of send() frames whose echo is not a room push
    this._requested = null; // the recover position sent on this connection
  }

  /**
   * Builds a client from the server's `GET /goim/nodes/weighted?platform=web`:
   * the WebSocket URL (ws_port on the API host, or wss_port when the API is
   * https), the heartbeat interval and the backoff.
   * @param {string} apiBase e.g. 'http://127.0.0.1:3111'
   * @param {object} token the auth token (see the constructor)
   * @param {object} [options] constructor options (e.g. `positions: true`), plus `host` (the WebSocket
   *   host name; default: the API's), `fetch` (default: globalThis.fetch).
   *   An explicit `url` wins over the one built from the nodes data.
   */
  static async fromNodes(apiBase, token, options = {}) {
    const { host, fetch: fetchImpl = globalThis.fetch, ...rest } = options;
    const base = new URL(apiBase);
    const reply = await fetchImpl(new URL('/goim/nodes/weighted?platform=web', base).toString());
    if (!reply.ok) throw new Error(`nodes/weighted: HTTP ${reply.status}`);
    const json = await reply.json();
    if (json.code !== 0 || !json.data) throw new Error(`nodes/weighted: code ${json.code} ${json.message ?? ''}`);
    const data = json.data;
    const secure = base.protocol === 'https:';
    const port = secure ? data.wss_port : data.ws_port;
    const url = rest.url ?? `${secure ? 'wss' : 'ws'}://${host ?? base.hostname}:${port}/sub`;
    const settings = { ...rest, url, token };
    if (rest.heartbeatMs === undefined && data.heartbeat > 0) settings.heartbeatMs = data.heartbeat * 1000;
    if (rest.heartbeatMax === undefined && data.heartbeat_max > 0) settings.heartbeatMax = data.heartbeat_max;
    if (rest.backoff === undefined && data.backoff) settings.backoff = data.backoff;
    const client = new GoimClient(settings);
    client.nodes = data;
    return client;
  }

  /** Opens the connection (and keeps it open until close()). */
  connect() {
    this._stopped = false;
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = null;
    if (this._ws) return this;
    this._open();
    return this;
  }

  /** Closes the connection and stops reconnecting. */
  close(code = 1000, reason = '') {
    this._stopped = true;
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = null;
    const ws = this._ws;
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        // already closing
      }
      // Done now: detach from the socket without waiting for its close event,
      // so that connect() may be called again at once.
      this._afterClose({ code, reason, wasClean: true });
    } else if (this.state !== 'closed') {
      this._setState('closed');
    }
  }

  /** True once the server has accepted the token, until the socket closes. */
  get connected() {
    return this.state === 'connected';
  }

  /**
   * Moves to another room (op 12; '' leaves the room). The room is also kept
   * in the token for later reconnects. Resolves with the echoed room key when
   * connected, or null when the change only applies to the next connection.
   */
  changeRoom(room) {
    const next = room ?? '';
    // The new room's op-20 frame brings its position; until then the client
    // knows none (a reconnect meanwhile joins without `recover`).
    if (next !== this.token.room_id || !next) this.position = null;
    this.token.room_id = next;
    return this._request(OP.CHANGE_ROOM, OP.CHANGE_ROOM_REPLY, this.token.room_id);
  }

  /** Adds operations to the accepted ones (op 14). Resolves with the echo, or null if offline. */
  sub(ops) {
    const list = opsList(ops);
    for (const op of list) if (!this.token.accepts.includes(op)) this.token.accepts.push(op);
    return this._request(OP.SUB, OP.SUB_REPLY, list.join(','));
  }

  /** Removes operations from the accepted ones (op 16). Resolves with the echo, or null if offline. */
  unsub(ops) {
    const list = opsList(ops);
    this.token.accepts = this.token.accepts.filter((op) => !list.includes(op));
    return this._request(OP.UNSUB, OP.UNSUB_REPLY, list.join(','));
  }

  /** Sends one raw frame (e.g. op 4 upstream). Returns its sequence number, or -1 if not connected. */
  send(op, body) {
    const seq = this._send(op, body);
    // The server echoes other ops with the same op and sequence: that echo
    // must not be taken for a room push at offset `seq`.
    if (seq > 0) {
      this._echoes.push(`${op}:${seq}`);
      if (this._echoes.length > ECHOES_MAX) this._echoes.shift();
    }
    return seq;
  }

  // -- internals ----------------------------------------------------------

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(makeEvent('state', { state }));
  }

  _emit(type, detail) {
    this.dispatchEvent(makeEvent(type, detail));
  }

  _open() {
    this._setState('connecting');
    let ws;
    try {
      ws = new this._WebSocket(this.url);
    } catch (error) {
      this._emit('error', { error });
      this._afterClose({ code: 1006, reason: String(error?.message ?? error), wasClean: false });
      return;
    }
    this._ws = ws;
    ws.binaryType = 'arraybuffer';
    this._unanswered = 0;
    this._timers.auth = setTimeout(() => {
      if (this._ws === ws && this.state !== 'connected') {
        this._emit('error', { error: new Error('auth timed out') });
        this._drop(ws, 4000, 'auth timeout');
      }
    }, this.authTimeoutMs);
    ws.onopen = () => {
      if (this._ws !== ws) return;
      this._setState('authenticating');
      this._emit('open', {});
      this._send(OP.AUTH, this._authBody());
    };
    ws.onmessage = (event) => {
      if (this._ws !== ws) return;
      this._receive(ws, event.data);
    };
    ws.onerror = (event) => {
      if (this._ws !== ws) return;
      this._emit('error', { error: event?.error ?? new Error('WebSocket error') });
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._afterClose({ code: event?.code ?? 1006, reason: event?.reason ?? '', wasClean: !!event?.wasClean });
    };
  }

  /**
   * The op-7 body for this connect: the token, plus `positions` and, when the
   * client knows a position of its room, `recover` from it.
   */
  _authBody() {
    const token = { ...this.token };
    this._requested = null;
    if (this.positions) {
      token.positions = true;
      const p = this.position;
      if (p && token.room_id && p.room === token.room_id) {
        this._requested = { epoch: p.epoch, offset: p.offset };
        token.recover = { ...this._requested };
      }
    }
    return JSON.stringify(token);
  }

  _drop(ws, code, reason) {
    try {
      ws.close(code, reason);
    } catch {
      // ignore
    }
    // Don't wait for the closing handshake of a dead peer.
    if (this._ws === ws) this._afterClose({ code: 1006, reason, wasClean: false });
  }

  _afterClose(detail) {
    const ws = this._ws;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    }
    this._ws = null;
    this._stopTimers();
    for (const [, queue] of this._pending) {
      for (const waiter of queue) waiter.reject(new Error('connection closed'));
    }
    this._pending.clear();
    this._echoes = [];
    this._emit('close', detail);
    if (this._stopped || !this.reconnect) {
      this._setState('closed');
      return;
    }
    this.attempt += 1;
    const delayMs = backoffDelayMs(this.attempt, this.backoff, this._random);
    this._setState('reconnecting');
    this._emit('reconnecting', { attempt: this.attempt, delayMs });
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      if (!this._stopped && !this._ws) this._open();
    }, delayMs);
  }

  _stopTimers() {
    clearTimeout(this._timers.auth);
    clearInterval(this._timers.heartbeat);
    this._timers.auth = null;
    this._timers.heartbeat = null;
  }

  _send(op, body) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WS_OPEN) return -1;
    const bytes = toBytes(body);
    if (bytes.length > CLIENT_BODY_MAX) throw new RangeError(`body of ${bytes.length} bytes exceeds ${CLIENT_BODY_MAX}`);
    this._seq = (this._seq + 1) | 0;
    ws.send(encodeFrame({ op, ver: 1, seq: this._seq, body: bytes }));
    return this._seq;
  }

  _request(op, replyOp, body) {
    if (!this.connected) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      // Send first (it throws on an oversized body); the echo can only come
      // in a later event.
      if (this._send(op, body) < 0) return resolve(null);
      if (!this._pending.has(replyOp)) this._pending.set(replyOp, []);
      this._pending.get(replyOp).push({ resolve, reject });
    });
  }

  _receive(ws, data) {
    if (typeof data === 'string') {
      this._emit('error', { error: new ProtocolError('text message from the server') });
      return;
    }
    if (typeof Blob !== 'undefined' && data instanceof Blob) {
      // binaryType could not be set: keep messages in order.
      this._inbound = this._inbound
        .then(() => data.arrayBuffer())
        .then((buffer) => {
          if (this._ws === ws) this._handle(ws, buffer);
        });
      return;
    }
    this._handle(ws, data);
  }

  _handle(ws, data) {
    let frames;
    try {
      frames = decodeFrames(data);
    } catch (error) {
      this._emit('error', { error });
      this._drop(ws, 1002, 'protocol error');
      return;
    }
    for (const frame of frames) {
      if (this._ws !== ws) return; // a listener closed the connection
      this._frame(frame);
    }
  }

  _frame(frame) {
    switch (frame.op) {
      case OP.AUTH_REPLY:
        clearTimeout(this._timers.auth);
        this._timers.auth = null;
        this.attempt = 0;
        this._setState('connected');
        this._emit('auth', {});
        this._heartbeat();
        clearInterval(this._timers.heartbeat);
        this._timers.heartbeat = setInterval(() => this._heartbeat(), this.heartbeatMs);
        return;
      case OP.HEARTBEAT_REPLY: {
        this._unanswered = 0;
        if (frame.body.length >= 4) {
          const count = new DataView(frame.body.buffer, frame.body.byteOffset, 4).getInt32(0);
          this.online = count;
          this._emit('online', { count });
        }
        return;
      }
      case OP.CHANGE_ROOM_REPLY:
      case OP.SUB_REPLY:
      case OP.UNSUB_REPLY: {
        const waiter = this._pending.get(frame.op)?.shift();
        if (waiter) waiter.resolve(frame.text());
        this._emit('reply', frame);
        return;
      }
      case OP.POSITION:
        if (this.positions) {
          this._position(frame);
          return;
        }
        this._emit('message', frame);
        return;
      default:
        this._push(frame);
    }
  }

  _position(frame) {
    let position;
    try {
      position = parsePosition(frame);
    } catch (error) {
      // Not worth a reconnect: offsets are unknown until the next op-20 frame.
      this._emit('error', { error });
      this._requested = null;
      if (this.position?.room === this.token.room_id) this.position = null;
      return;
    }
    const requested = this._requested;
    this._requested = null;
    // A frame for a room the client has left meanwhile (changeRoom twice in
    // a row) says nothing about the current one.
    if (position.room === this.token.room_id) {
      // After a recovery, `offset` is the room's current offset and the
      // `missed` pushes up to it follow: the client has everything up to
      // offset - missed, and each replayed push moves it on.
      const last = position.recovered ? Math.max(0, position.offset - position.missed) : position.offset;
      this.position = { room: position.room, epoch: position.epoch, offset: last };
    }
    this._emit('position', { ...position, requested });
    if (position.recovered) {
      const { room, epoch, offset, missed } = position;
      this._emit('recovered', { room, epoch, offset, missed });
    }
  }

  _push(frame) {
    if (this.positions && frame.seq !== 0 && !this._isEcho(frame)) {
      const offset = frame.seq >>> 0;
      frame.offset = offset;
      const p = this.position;
      if (p && p.room === this.token.room_id) {
        // The server sends every room push once; this guards against a
        // replay overlapping what the client already has.
        if (offset <= p.offset) {
          this.duplicates += 1;
          this._emit('duplicate', frame);
          return;
        }
        p.offset = offset;
      }
    }
    this._emit('message', frame);
  }

  _isEcho(frame) {
    if (frame.body.length !== 0) return false;
    const at = this._echoes.indexOf(`${frame.op}:${frame.seq}`);
    if (at < 0) return false;
    this._echoes.splice(at, 1);
    return true;
  }

  _heartbeat() {
    const ws = this._ws;
    if (!ws) return;
    if (this._unanswered >= this.heartbeatMax) {
      this._emit('error', { error: new Error(`${this._unanswered} heartbeats unanswered`) });
      this._drop(ws, 4001, 'heartbeat timeout');
      return;
    }
    this._unanswered += 1;
    this._send(OP.HEARTBEAT);
  }
}
