// Unit tests for goim.js: `node --test clients/js/` (Node >= 20, no dependencies).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  GoimClient,
  OP,
  HEADER_LEN,
  DEFAULT_BACKOFF,
  ProtocolError,
  encodeFrame,
  decodeFrames,
  backoffDelayMs,
  parseRoomKey,
  parsePosition,
  Frame,
} from './goim.js';

import { text, int32, concat, fakeWebSocketClass, next, until, FAST_BACKOFF } from './helpers.mjs';

// ---------------------------------------------------------------------------
// Frame codec
// ---------------------------------------------------------------------------

test('encodeFrame writes the 16-byte big-endian header and the body', () => {
  const frame = encodeFrame({ op: 7, ver: 1, seq: 258, body: 'hi' });
  assert.deepEqual(
    Array.from(frame),
    [0, 0, 0, 18, 0, 16, 0, 1, 0, 0, 0, 7, 0, 0, 1, 2, 0x68, 0x69],
  );
});

test('encodeFrame defaults: ver 1, seq 0, empty body; accepts bytes and ArrayBuffer', () => {
  assert.deepEqual(Array.from(encodeFrame({ op: 2 })), [0, 0, 0, 16, 0, 16, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0]);
  const bytes = new Uint8Array([1, 2, 3]);
  assert.deepEqual(Array.from(encodeFrame({ op: 4, body: bytes }).subarray(HEADER_LEN)), [1, 2, 3]);
  assert.deepEqual(Array.from(encodeFrame({ op: 4, body: bytes.buffer }).subarray(HEADER_LEN)), [1, 2, 3]);
  assert.throws(() => encodeFrame({ op: 'x' }), TypeError);
  assert.throws(() => encodeFrame({ op: 4, body: 42 }), TypeError);
});

test('decodeFrames round-trips every header field and UTF-8 bodies', () => {
  const body = 'héllo, 世界 🚀';
  const [frame, ...rest] = decodeFrames(encodeFrame({ op: 1000, ver: -2, seq: -5, body }));
  assert.equal(rest.length, 0);
  assert.equal(frame.op, 1000);
  assert.equal(frame.ver, -2);
  assert.equal(frame.seq, -5);
  assert.equal(frame.text(), body);
  assert.equal(frame.body.length, new TextEncoder().encode(body).length);
});

test('decodeFrames walks frames back to back and accepts ArrayBuffer and views at an offset', () => {
  const stream = concat(
    encodeFrame({ op: 3, seq: 1, body: int32(42) }),
    encodeFrame({ op: 8, seq: 2 }),
    encodeFrame({ op: 1001, body: 'x' }),
  );
  const padded = concat(new Uint8Array([9, 9, 9]), stream);
  for (const input of [stream, stream.buffer, padded.subarray(3), new DataView(padded.buffer, 3)]) {
    const frames = decodeFrames(input);
    assert.deepEqual(frames.map((f) => [f.op, f.seq]), [[3, 1], [8, 2], [1001, 0]]);
    assert.equal(new DataView(frames[0].body.buffer, frames[0].body.byteOffset).getInt32(0), 42);
    assert.equal(frames[2].text(), 'x');
  }
  assert.deepEqual(decodeFrames(new Uint8Array(0)), []);
});

test('decodeFrames rejects malformed input', () => {
  const good = encodeFrame({ op: 1000, body: 'abc' });
  // Truncated header.
  assert.throws(() => decodeFrames(good.subarray(0, 10)), ProtocolError);
  // Truncated body.
  assert.throws(() => decodeFrames(good.subarray(0, good.length - 1)), ProtocolError);
  // Trailing partial frame after a good one.
  assert.throws(() => decodeFrames(concat(good, good.subarray(0, 5))), ProtocolError);
  // header_len != 16.
  const badHeader = good.slice();
  new DataView(badHeader.buffer).setInt16(4, 18);
  assert.throws(() => decodeFrames(badHeader), /header length 18/);
  // packet_len < 16 (and negative): never loops or allocates.
  for (const len of [0, 15, -1]) {
    const bad = good.slice();
    new DataView(bad.buffer).setInt32(0, len);
    assert.throws(() => decodeFrames(bad), /packet length/);
  }
  // packet_len larger than the buffer.
  const long = good.slice();
  new DataView(long.buffer).setInt32(0, 1 << 30);
  assert.throws(() => decodeFrames(long), /exceeds/);
});

test('op-9 batches are unpacked into their inner frames, in order', () => {
  const inner = concat(
    encodeFrame({ op: 1000, body: 'one' }),
    encodeFrame({ op: 1001, body: 'two' }),
    encodeFrame({ op: 1002, body: '' }),
  );
  const batch = encodeFrame({ op: OP.RAW, body: inner });
  const frames = decodeFrames(batch);
  assert.deepEqual(frames.map((f) => [f.op, f.text()]), [[1000, 'one'], [1001, 'two'], [1002, '']]);

  // A plain frame and a batch in one buffer.
  const mixed = decodeFrames(concat(encodeFrame({ op: 3, body: int32(7) }), batch));
  assert.deepEqual(mixed.map((f) => f.op), [3, 1000, 1001, 1002]);

  // Without unpacking, the batch stays one frame.
  const raw = decodeFrames(batch, { unpackRaw: false });
  assert.equal(raw.length, 1);
  assert.equal(raw[0].op, OP.RAW);
  assert.equal(raw[0].body.length, inner.length);

  // An empty batch holds no frames; a truncated inner frame is an error.
  assert.deepEqual(decodeFrames(encodeFrame({ op: OP.RAW })), []);
  assert.throws(() => decodeFrames(encodeFrame({ op: OP.RAW, body: inner.subarray(0, inner.length - 2) })), ProtocolError);
});

// ---------------------------------------------------------------------------
// Backoff
// ---------------------------------------------------------------------------

test('backoff: base_delay * factor^(attempt-1), capped at max_delay, within ± jitter', () => {
  const b = DEFAULT_BACKOFF; // 3 s, x1.8, ±30 %, max 300 s
  const mid = () => 0.5;
  assert.equal(backoffDelayMs(1, b, mid), 3000);
  assert.equal(backoffDelayMs(2, b, mid), 5400);
  assert.equal(backoffDelayMs(3, b, mid), 9720);
  assert.equal(backoffDelayMs(1, b, () => 0), 2100);
  assert.equal(backoffDelayMs(1, b, () => 0.999999), 3900);
  // 3 * 1.8^8 = 330.6 s > 300 s: capped from attempt 9 on, for ever.
  assert.equal(backoffDelayMs(8, b, mid), Math.round(3 * 1.8 ** 7 * 1000));
  for (const attempt of [9, 10, 50, 1000]) assert.equal(backoffDelayMs(attempt, b, mid), 300000);

  let previousCentre = 0;
  for (let attempt = 1; attempt <= 40; attempt++) {
    const centre = Math.min(b.max_delay, b.base_delay * b.factor ** (attempt - 1)) * 1000;
    assert.ok(centre >= previousCentre);
    previousCentre = centre;
    for (let i = 0; i < 200; i++) {
      const d = backoffDelayMs(attempt, b);
      assert.ok(d >= Math.floor(centre * (1 - b.jitter)) && d <= Math.ceil(centre * (1 + b.jitter)), `${attempt}: ${d}`);
    }
  }
  // Partial settings fall back to goim's defaults; attempt 0 counts as the first.
  assert.equal(backoffDelayMs(1, { base_delay: 1 }, mid), 1000);
  assert.equal(backoffDelayMs(0, undefined, mid), 3000);
  assert.equal(backoffDelayMs(1, { base_delay: 2, jitter: 0 }), 2000);
});

test('parseRoomKey splits type://id', () => {
  assert.deepEqual(parseRoomKey('live://1000'), { type: 'live', id: '1000' });
  assert.deepEqual(parseRoomKey('chat://a/b'), { type: 'chat', id: 'a/b' });
  assert.equal(parseRoomKey(''), null);
  assert.equal(parseRoomKey('1000'), null);
});

// ---------------------------------------------------------------------------
// Client state machine over a fake WebSocket
// ---------------------------------------------------------------------------


test('client: auth -> heartbeat -> online -> messages -> room change -> reconnect', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({
    url: 'ws://127.0.0.1:3102/sub',
    token: { mid: 123, room_id: 'live://1000', accepts: [1000, 1001] },
    heartbeatMs: 30,
    backoff: FAST_BACKOFF,
    WebSocket: WS,
  });
  t.after(() => client.close());
  const states = [];
  client.addEventListener('state', (e) => states.push(e.detail.state));
  const messages = [];
  client.addEventListener('message', (e) => messages.push([e.detail.op, e.detail.text()]));

  client.connect();
  assert.equal(WS.instances.length, 1);
  const ws = WS.instances[0];
  assert.equal(ws.url, 'ws://127.0.0.1:3102/sub');
  assert.equal(ws.binaryType, 'arraybuffer');

  // Open: the first frame is op 7 with the JSON token.
  const opened = next(client, 'open');
  ws.serverOpen();
  await opened;
  assert.equal(client.state, 'authenticating');
  assert.deepEqual(ws.sentOps(), [OP.AUTH]);
  const token = JSON.parse(ws.sent[0].text());
  assert.deepEqual(token, { mid: 123, key: '', room_id: 'live://1000', platform: 'web', accepts: [1000, 1001] });
  assert.equal(ws.sent[0].ver, 1);

  // Auth reply: connected, and a heartbeat goes out at once.
  const authed = next(client, 'auth');
  ws.serverSend(encodeFrame({ op: OP.AUTH_REPLY, seq: ws.sent[0].seq }));
  await authed;
  assert.equal(client.state, 'connected');
  assert.ok(client.connected);
  assert.deepEqual(ws.sentOps(), [OP.AUTH, OP.HEARTBEAT]);

  // Heartbeat reply carries the room's online count.
  const online = next(client, 'online');
  ws.serverSend(encodeFrame({ op: OP.HEARTBEAT_REPLY, body: int32(5) }));
  assert.deepEqual(await online, { count: 5 });
  assert.equal(client.online, 5);

  // Heartbeats keep going every heartbeatMs while answered.
  await until(() => ws.sentOps().filter((op) => op === OP.HEARTBEAT).length >= 3, 'three heartbeats');
  ws.serverSend(encodeFrame({ op: OP.HEARTBEAT_REPLY, body: int32(6) }));
  assert.equal(client.online, 6);

  // A single push, then an op-9 batch: one message event per inner frame.
  ws.serverSend(encodeFrame({ op: 1000, body: 'single' }));
  ws.serverSend(
    encodeFrame({
      op: OP.RAW,
      body: concat(encodeFrame({ op: 1000, body: 'b1' }), encodeFrame({ op: 1001, body: 'b2 ✓' })),
    }),
  );
  assert.deepEqual(messages, [[1000, 'single'], [1000, 'b1'], [1001, 'b2 ✓']]);

  // Change room, sub, unsub: requests resolve with the echoes, the token follows.
  const roomChanged = client.changeRoom('live://2000');
  const subbed = client.sub([1002]);
  const unsubbed = client.unsub('1000');
  const sent = ws.sent.slice(-3);
  assert.deepEqual(sent.map((f) => [f.op, f.text()]), [[12, 'live://2000'], [14, '1002'], [16, '1000']]);
  for (const f of sent) ws.serverSend(encodeFrame({ op: f.op + 1, seq: f.seq, body: f.body }));
  assert.equal(await roomChanged, 'live://2000');
  assert.equal(await subbed, '1002');
  assert.equal(await unsubbed, '1000');
  assert.equal(client.token.room_id, 'live://2000');
  assert.deepEqual(client.token.accepts, [1001, 1002]);
  assert.equal(messages.length, 3, 'echoes are not messages');

  // The server goes away: close, then a reconnect after base_delay.
  const closed = next(client, 'close');
  const reconnecting = next(client, 'reconnecting');
  ws.serverClose(1006);
  assert.equal((await closed).code, 1006);
  assert.deepEqual(await reconnecting, { attempt: 1, delayMs: 10 });
  assert.equal(client.state, 'reconnecting');
  const heartbeatsBefore = ws.sent.length;

  await until(() => WS.instances.length === 2, 'second socket');
  const ws2 = WS.instances[1];
  ws2.serverOpen();
  // The new auth carries the room and accepts changed on the old connection.
  assert.deepEqual(JSON.parse(ws2.sent[0].text()).room_id, 'live://2000');
  assert.deepEqual(JSON.parse(ws2.sent[0].text()).accepts, [1001, 1002]);
  ws2.serverSend(encodeFrame({ op: OP.AUTH_REPLY }));
  assert.equal(client.state, 'connected');
  assert.equal(client.attempt, 0, 'a successful auth resets the backoff');
  await sleep(50);
  assert.equal(ws.sent.length, heartbeatsBefore, 'the old socket gets no more heartbeats');

  // close(): no further reconnects.
  const finalClose = next(client, 'close');
  client.close();
  await finalClose;
  assert.equal(client.state, 'closed');
  assert.equal(ws2.closedWith.code, 1000);
  await sleep(40);
  assert.equal(WS.instances.length, 2);

  assert.deepEqual(states, [
    'connecting',
    'authenticating',
    'connected',
    'reconnecting',
    'connecting',
    'authenticating',
    'connected',
    'closed',
  ]);
});

test('client: consecutive failures back off exponentially up to max_delay, then reset on auth', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({
    url: 'ws://x/sub',
    backoff: FAST_BACKOFF, // 10, 20, 40, 50, 50 ms
    WebSocket: WS,
  });
  t.after(() => client.close());
  const schedule = [];
  client.addEventListener('reconnecting', (e) => schedule.push(e.detail));
  client.connect();
  for (let i = 1; i <= 5; i++) {
    await until(() => WS.instances.length === i, `socket ${i}`);
    WS.instances[i - 1].serverClose(1006); // refused before open
  }
  assert.deepEqual(schedule.map((s) => s.delayMs), [10, 20, 40, 50, 50]);
  assert.deepEqual(schedule.map((s) => s.attempt), [1, 2, 3, 4, 5]);

  await until(() => WS.instances.length === 6, 'socket 6');
  const ws = WS.instances[5];
  ws.serverOpen();
  ws.serverSend(encodeFrame({ op: OP.AUTH_REPLY }));
  assert.equal(client.attempt, 0);
  ws.serverClose(1006);
  assert.deepEqual(schedule.at(-1), { attempt: 1, delayMs: 10 });
});

test('client: unanswered heartbeats drop the connection and reconnect', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({ url: 'ws://x/sub', heartbeatMs: 10, heartbeatMax: 2, backoff: FAST_BACKOFF, WebSocket: WS });
  t.after(() => client.close());
  client.connect();
  const ws = WS.instances[0];
  ws.serverOpen();
  ws.serverSend(encodeFrame({ op: OP.AUTH_REPLY }));
  const errors = [];
  client.addEventListener('error', (e) => errors.push(e.detail.error.message));
  const reconnecting = next(client, 'reconnecting');
  await reconnecting;
  assert.match(errors[0], /heartbeats unanswered/);
  assert.equal(ws.closedWith.code, 4001);
  assert.equal(ws.sentOps().filter((op) => op === OP.HEARTBEAT).length, 2);
});

test('client: a malformed frame is a protocol error that closes and reconnects', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({ url: 'ws://x/sub', backoff: FAST_BACKOFF, WebSocket: WS });
  t.after(() => client.close());
  client.connect();
  const ws = WS.instances[0];
  ws.serverOpen();
  ws.serverSend(encodeFrame({ op: OP.AUTH_REPLY }));
  const error = next(client, 'error');
  const reconnecting = next(client, 'reconnecting');
  ws.serverSend(new Uint8Array([0, 0, 0, 99, 0, 16, 0, 1])); // truncated header
  assert.ok((await error).error instanceof ProtocolError);
  await reconnecting;
  assert.equal(ws.closedWith.code, 1002);
  await until(() => WS.instances.length === 2, 'reconnect');
});

test('client: no auth reply within authTimeoutMs closes and reconnects', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({ url: 'ws://x/sub', authTimeoutMs: 20, backoff: FAST_BACKOFF, WebSocket: WS });
  t.after(() => client.close());
  client.connect();
  WS.instances[0].serverOpen();
  const detail = await next(client, 'reconnecting');
  assert.equal(detail.attempt, 1);
  assert.equal(WS.instances[0].closedWith.code, 4000);
});

test('client: requests while offline apply to the next auth; oversized bodies are refused', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({ url: 'ws://x/sub', token: { room_id: 'live://1' }, WebSocket: WS });
  t.after(() => client.close());
  assert.equal(await client.changeRoom('live://9'), null);
  assert.equal(await client.sub('1000, 1001'), null);
  assert.equal(client.send(4, 'x'), -1);
  client.connect();
  WS.instances[0].serverOpen();
  const token = JSON.parse(WS.instances[0].sent[0].text());
  assert.equal(token.room_id, 'live://9');
  assert.deepEqual(token.accepts, [1000, 1001]);
  WS.instances[0].serverSend(encodeFrame({ op: OP.AUTH_REPLY }));
  await assert.rejects(client.changeRoom('r'.repeat(5000)), RangeError);
  // A pending request fails when the connection closes.
  const pending = client.sub([7]);
  WS.instances[0].serverClose(1006);
  await assert.rejects(pending, /connection closed/);
});

test('client: Blob messages (binaryType ignored) are decoded in order', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({ url: 'ws://x/sub', WebSocket: WS });
  t.after(() => client.close());
  const texts = [];
  client.addEventListener('message', (e) => texts.push(e.detail.text()));
  client.connect();
  const ws = WS.instances[0];
  ws.serverOpen();
  for (const body of ['a', 'b', 'c']) ws.onmessage({ data: new Blob([encodeFrame({ op: 1000, body })]) });
  await until(() => texts.length === 3, 'three messages');
  assert.deepEqual(texts, ['a', 'b', 'c']);
});

test('GoimClient.fromNodes builds the URL, heartbeat and backoff from /goim/nodes/weighted', async () => {
  const requested = [];
  const data = {
    domain: 'conn.goim.io',
    tcp_port: 3101,
    ws_port: 3102,
    wss_port: 3103,
    heartbeat: 240,
    heartbeat_max: 3,
    nodes: ['conn.goim.io'],
    backoff: { max_delay: 300, base_delay: 3, factor: 1.8, jitter: 0.3 },
  };
  const fetch = async (url) => {
    requested.push(url);
    return { ok: true, status: 200, json: async () => ({ code: 0, message: '', data }) };
  };
  const WS = fakeWebSocketClass();
  const token = { mid: 1, room_id: 'live://1000' };
  const client = await GoimClient.fromNodes('http://127.0.0.1:3111', token, { fetch, WebSocket: WS });
  assert.deepEqual(requested, ['http://127.0.0.1:3111/goim/nodes/weighted?platform=web']);
  assert.equal(client.url, 'ws://127.0.0.1:3102/sub');
  assert.equal(client.heartbeatMs, 240000);
  assert.equal(client.heartbeatMax, 3);
  assert.deepEqual(client.backoff, data.backoff);
  assert.equal(client.token.mid, 1);
  assert.equal(client.nodes, data);

  const secure = await GoimClient.fromNodes('https://api.example/', token, { fetch, WebSocket: WS, host: 'ws.example' });
  assert.equal(secure.url, 'wss://ws.example:3103/sub');
  const explicit = await GoimClient.fromNodes('http://h:1', token, { fetch, WebSocket: WS, url: 'ws://other/sub', heartbeatMs: 5 });
  assert.equal(explicit.url, 'ws://other/sub');
  assert.equal(explicit.heartbeatMs, 5);

  const failing = async () => ({ ok: true, status: 200, json: async () => ({ code: -500, message: 'boom' }) });
  await assert.rejects(GoimClient.fromNodes('http://h:1', token, { fetch: failing, WebSocket: WS }), /code -500 boom/);
  assert.equal(WS.instances.length, 0, 'fromNodes does not connect');
});

test('GoimClient needs a WebSocket implementation and a URL', () => {
  assert.throws(() => new GoimClient({ WebSocket: fakeWebSocketClass() }), /url/);
  if (typeof globalThis.WebSocket !== 'function') {
    assert.throws(() => new GoimClient({ url: 'ws://x/sub' }), /WebSocket/);
  }
});

test('client: close() stops a pending reconnect; connect() again opens a new socket at once', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({ url: 'ws://x/sub', backoff: { base_delay: 0.02, jitter: 0 }, WebSocket: WS });
  t.after(() => client.close());
  client.connect();
  WS.instances[0].serverClose(1006);
  assert.equal(client.state, 'reconnecting');
  client.close();
  assert.equal(client.state, 'closed');
  await sleep(60);
  assert.equal(WS.instances.length, 1, 'no reconnect after close()');

  client.connect();
  assert.equal(WS.instances.length, 2);
  WS.instances[1].serverOpen();
  WS.instances[1].serverSend(encodeFrame({ op: OP.AUTH_REPLY }));
  const closes = [];
  client.addEventListener('close', (e) => closes.push(e.detail.code));
  client.close(4321, 'bye');
  client.connect();
  assert.equal(WS.instances.length, 3, 'a new socket without waiting for the old one to close');
  assert.deepEqual(WS.instances[1].closedWith, { code: 4321, reason: 'bye' });
  await sleep(20);
  assert.deepEqual(closes, [4321], 'the old socket closing late changes nothing');
  assert.equal(client.state, 'connecting');
});
