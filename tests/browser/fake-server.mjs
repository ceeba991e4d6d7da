// A stand-in for corecast, for checking the demo page and the JS client in a
// browser without the real server: one port serving
//   - static files of the repository root (so /examples/web/ works as from any
//     static server) and /demo/, /demo/app.js, /demo/goim.js as corecast maps them,
//   - the HTTP API subset the demo uses (nodes/weighted, push/room, online/room),
//     with `Access-Control-Allow-Origin: *`,
//   - a minimal RFC 6455 WebSocket endpoint at /sub speaking goim frames, which
//     delivers room pushes as op-9 batches like goim/corecast do,
//   - corecast's positions: room offsets (one epoch per fake), the op-20 frame
//     after auth and change room for tokens with `positions` or `recover`, and
//     recovery from the last HISTORY_MAX pushes of each room.
// Only node: built-ins. Not used by demo.test.mjs (that one runs the real server).
//
//   node tests/browser/fake-server.mjs [PORT]   then open
//   http://127.0.0.1:PORT/examples/web/  or  http://127.0.0.1:PORT/demo/
import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { encodeFrame, decodeFrames, OP } from '../../clients/js/goim.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8', '.css': 'text/css', '.json': 'application/json', '.png': 'image/png' };
/** Pushes kept per room for recovery. */
const HISTORY_MAX = 100;
const DEMO = { '/demo/': 'examples/web/index.html', '/demo/index.html': 'examples/web/index.html', '/demo/app.js': 'examples/web/app.js', '/demo/goim.js': 'clients/js/goim.js' };

/** One WebSocket server frame (unmasked, unfragmented). */
function wsFrame(opcode, payload) {
  const len = payload.length;
  const head = len < 126 ? Buffer.alloc(2) : len < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  head[0] = 0x80 | opcode;
  if (len < 126) head[1] = len;
  else if (len < 65536) { head[1] = 126; head.writeUInt16BE(len, 2); }
  else { head[1] = 127; head.writeBigUInt64BE(BigInt(len), 2); }
  return Buffer.concat([head, payload]);
}

/** Parses complete client frames off `buf`; returns [{fin, opcode, payload}], rest. */
function wsParse(buf) {
  const frames = [];
  let at = 0;
  for (;;) {
    if (buf.length - at < 2) break;
    const b0 = buf[at], b1 = buf[at + 1];
    let len = b1 & 0x7f, off = at + 2;
    if (len === 126) { if (buf.length - off < 2) break; len = buf.readUInt16BE(off); off += 2; }
    else if (len === 127) { if (buf.length - off < 8) break; len = Number(buf.readBigUInt64BE(off)); off += 8; }
    const masked = (b1 & 0x80) !== 0;
    if (len > 1 << 20) throw new Error('frame too large');
    if (buf.length - off < (masked ? 4 : 0) + len) break;
    const mask = masked ? buf.subarray(off, off + 4) : null;
    if (masked) off += 4;
    const payload = Buffer.from(buf.subarray(off, off + len));
    if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
    frames.push({ fin: (b0 & 0x80) !== 0, opcode: b0 & 0x0f, payload });
    at = off + len;
  }
  return [frames, buf.subarray(at)];
}

export async function startFakeServer({ host = '127.0.0.1', port = 0, heartbeat = 2 } = {}) {
  const conns = new Set();
  const roomCount = (room) => [...conns].filter((c) => c.authed && c.room === room).length;
  const epoch = `fake${crypto.randomBytes(4).toString('hex')}`;
  const rooms = new Map(); // room key -> {offset, history: [{offset, op, body}]}
  const roomState = (room) => {
    if (!rooms.has(room)) rooms.set(room, { offset: 0, history: [] });
    return rooms.get(room);
  };
  const control = { refuse: false };

  /** The op-20 frame for `conn`'s room; with `recover`, the replay after it. */
  function sendPosition(conn, recover) {
    const state = roomState(conn.room);
    const oldest = state.history.length ? state.history[0].offset : state.offset + 1;
    const from = recover && recover.epoch === epoch ? Number(recover.offset) : -1;
    const recovered = from >= 0 && from <= state.offset && from + 1 >= oldest;
    const missed = recovered ? state.offset - from : 0;
    const body = JSON.stringify({ room: conn.room, epoch, offset: state.offset, recovered, missed });
    conn.send(encodeFrame({ op: OP.POSITION, body }));
    if (missed > 0) {
      const replay = state.history.filter((m) => m.offset > from);
      conn.send(encodeFrame({ op: OP.RAW, body: Buffer.concat(replay.map((m) => encodeFrame({ op: m.op, seq: m.offset, body: m.body }))) }));
    }
  }

  function handleGoim(conn, frame) {
    const reply = (op, body) => conn.send(encodeFrame({ op, ver: frame.ver, seq: frame.seq, body }));
    if (!conn.authed) {
      if (frame.op !== OP.AUTH) return;
      const token = JSON.parse(frame.text());
      conn.authed = true;
      conn.room = token.room_id || '';
      conn.positions = token.positions === true || !!token.recover;
      reply(OP.AUTH_REPLY);
      if (conn.positions && conn.room) sendPosition(conn, token.recover);
      return;
    }
    switch (frame.op) {
      case OP.HEARTBEAT: {
        const body = Buffer.alloc(4);
        body.writeInt32BE(conn.room ? roomCount(conn.room) : 0);
        return reply(OP.HEARTBEAT_REPLY, body);
      }
      case OP.CHANGE_ROOM:
        conn.room = frame.text();
        reply(OP.CHANGE_ROOM_REPLY, frame.body);
        if (conn.positions && conn.room) sendPosition(conn, null);
        return;
      case OP.SUB:
      case OP.UNSUB:
        return reply(frame.op + 1, frame.body);
      default:
        return reply(frame.op);
    }
  }

  function upgrade(req, socket) {
    const key = req.headers['sec-websocket-key'];
    if (new URL(req.url, 'http://x').pathname !== '/sub' || !key || control.refuse) return socket.destroy();
    const accept = crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    socket.setNoDelay(true);
    const conn = {
      authed: false,
      room: '',
      positions: false,
      send: (bytes) => socket.writable && socket.write(wsFrame(0x2, Buffer.from(bytes))),
      close: () => socket.end(wsFrame(0x8, Buffer.from([0x03, 0xe8]))),
    };
    conns.add(conn);
    let pending = Buffer.alloc(0);
    let message = [];
    socket.on('data', (chunk) => {
      let frames;
      try {
        [frames, pending] = wsParse(Buffer.concat([pending, chunk]));
      } catch {
        return socket.destroy();
      }
      for (const f of frames) {
        if (f.opcode === 0x8) return conn.close();
        if (f.opcode === 0x9) { socket.write(wsFrame(0xa, f.payload)); continue; }
        if (f.opcode === 0xa) continue;
        message.push(f.payload);
        if (!f.fin) continue;
        const data = Buffer.concat(message);
        message = [];
        try {
          for (const g of decodeFrames(data, { unpackRaw: false })) handleGoim(conn, g);
        } catch {
          return socket.destroy();
        }
      }
    });
    socket.on('close', () => conns.delete(conn));
    socket.on('error', () => conns.delete(conn));
  }

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    const json = (value) => {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Access-Control-Allow-Origin': '*' });
      res.end(JSON.stringify(value));
    };
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks);
    if (req.method === 'GET' && url.pathname === '/goim/nodes/weighted') {
      const port = server.address().port;
      return json({ code: 0, message: '', data: { domain: 'localhost', tcp_port: 0, ws_port: port, wss_port: 0, heartbeat, heartbeat_max: 2, nodes: ['localhost'], backoff: { max_delay: 5, base_delay: 0.5, factor: 1.8, jitter: 0.3 } } });
    }
    if (req.method === 'POST' && url.pathname === '/goim/push/room') {
      const op = Number(url.searchParams.get('operation'));
      const type = url.searchParams.get('type');
      const room = url.searchParams.get('room');
      if (!op || !type || !room) return json({ code: -400, message: 'bad request' });
      // A batch of one frame, as an op-9 frame (what WebSocket clients get);
      // with positions, the frame's sequence is the room offset.
      const key = `${type}://${room}`;
      const state = roomState(key);
      state.offset += 1;
      state.history.push({ offset: state.offset, op, body });
      if (state.history.length > HISTORY_MAX) state.history.shift();
      const batch = encodeFrame({ op: OP.RAW, body: encodeFrame({ op, body }) });
      const numbered = encodeFrame({ op: OP.RAW, body: encodeFrame({ op, seq: state.offset, body }) });
      for (const c of conns) if (c.authed && c.room === key) c.send(c.positions ? numbered : batch);
      return json({ code: 0, message: '' });
    }
    if (req.method === 'GET' && url.pathname === '/goim/online/room') {
      const type = url.searchParams.get('type');
      const data = {};
      for (const id of url.searchParams.getAll('rooms')) data[id] = roomCount(`${type}://${id}`);
      return json({ code: 0, message: '', data });
    }
    if (req.method !== 'GET') return json({ code: -400, message: 'unknown' });
    let rel = DEMO[url.pathname] ?? decodeURIComponent(url.pathname).replace(/^\/+/, '');
    if (rel === '' || rel.endsWith('/')) rel += 'index.html';
    const file = path.resolve(REPO_ROOT, rel);
    if (!file.startsWith(REPO_ROOT + path.sep)) { res.writeHead(403); return res.end(); }
    try {
      const content = await fs.readFile(file);
      res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'Cache-Control': 'no-store' });
      res.end(content);
    } catch {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found');
    }
  });
  server.on('upgrade', upgrade);
  await new Promise((resolve) => server.listen(port, host, resolve));
  return {
    port: server.address().port,
    conns,
    epoch,
    /** Set `control.refuse` to turn WebSocket upgrades away (clients stay disconnected). */
    control,
    close: () =>
      new Promise((resolve) => {
        for (const c of conns) c.close();
        server.close(resolve);
        server.closeAllConnections?.();
      }),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const fake = await startFakeServer({ port: Number(process.argv[2] ?? 0) });
  console.log(`fake corecast on http://127.0.0.1:${fake.port}/examples/web/ and /demo/ (ws on the same port)`);
}
