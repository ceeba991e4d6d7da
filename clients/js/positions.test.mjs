// Unit tests for goim.js positions and recovery (docs/positions.md): `node --test clients/js/`.
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
// Positions and recovery (op 20, room offsets in the sequence field)
// ---------------------------------------------------------------------------

const ROOM = 'live://1000';

/** An op-20 frame as the server sends it: version 1, sequence 0, JSON body. */
function positionFrame({ room = ROOM, epoch, offset, recovered = false, missed = 0 }) {
  return encodeFrame({ op: OP.POSITION, body: JSON.stringify({ room, epoch, offset, recovered, missed }) });
}

/** An op-9 batch of room pushes `[offset, text]` (op 1000). */
function roomBatch(...pushes) {
  return encodeFrame({
    op: OP.RAW,
    body: concat(...pushes.map(([offset, body]) => encodeFrame({ op: 1000, seq: offset, body }))),
  });
}

/** Records the events of a client as [type, detail] pairs. */
function recorder(client, types = ['message', 'position', 'recovered', 'duplicate']) {
  const events = [];
  for (const type of types) {
    client.addEventListener(type, (e) => {
      const d = e.detail;
      events.push([type, d instanceof Frame ? { op: d.op, seq: d.seq, offset: d.offset, text: d.text() } : d]);
    });
  }
  return events;
}

/** Opens socket `ws` and answers its auth; returns the auth token it sent. */
function accept(ws) {
  ws.serverOpen();
  assert.equal(ws.sent[0].op, OP.AUTH);
  const token = JSON.parse(ws.sent[0].text());
  ws.serverSend(encodeFrame({ op: OP.AUTH_REPLY, seq: ws.sent[0].seq }));
  return token;
}

test('parsePosition reads the op-20 body and refuses anything else', () => {
  const frame = (body) => decodeFrames(encodeFrame({ op: OP.POSITION, body }))[0];
  assert.deepEqual(
    parsePosition(frame('{"room":"live://1000","epoch":"a1","offset":42,"recovered":true,"missed":3}')),
    { room: 'live://1000', epoch: 'a1', offset: 42, recovered: true, missed: 3 },
  );
  assert.deepEqual(parsePosition(frame('{"room":"live://1","epoch":"E","offset":0}')), {
    room: 'live://1',
    epoch: 'E',
    offset: 0,
    recovered: false,
    missed: 0,
  });
  assert.equal(parsePosition(frame('{"room":"r","epoch":"E","offset":4294967295}')).offset, 4294967295);
  for (const bad of [
    '',
    'nope',
    'null',
    '[]',
    '{"epoch":"E","offset":1}',
    '{"room":"r","epoch":"","offset":1}',
    '{"room":"r","epoch":"E","offset":-1}',
    '{"room":"r","epoch":"E","offset":1.5}',
    '{"room":"r","epoch":"E","offset":4294967296}',
    '{"room":"r","epoch":"E","offset":"1"}',
    '{"room":"r","epoch":"E","offset":1,"missed":-2}',
  ]) {
    assert.throws(() => parsePosition(frame(bad)), ProtocolError, bad);
  }
});

test('positions: the token asks for them; op 20 and the offsets of room pushes are tracked', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({
    url: 'ws://x/sub',
    token: { mid: 5, room_id: ROOM, accepts: [1000] },
    positions: true,
    backoff: FAST_BACKOFF,
    WebSocket: WS,
  });
  t.after(() => client.close());
  assert.equal(client.positions, true);
  assert.equal(client.position, null);
  const events = recorder(client);
  client.connect();
  const ws = WS.instances[0];
  const token = accept(ws);
  assert.deepEqual(token, { mid: 5, key: '', room_id: ROOM, platform: 'web', accepts: [1000], positions: true });
  assert.equal('positions' in client.token, false, 'the wire fields are not kept in client.token');

  // The op-20 frame: a `position` event, not a message.
  ws.serverSend(positionFrame({ epoch: 'E1', offset: 41 }));
  assert.deepEqual(events, [
    ['position', { room: ROOM, epoch: 'E1', offset: 41, recovered: false, missed: 0, requested: null }],
  ]);
  assert.deepEqual(client.position, { room: ROOM, epoch: 'E1', offset: 41 });

  // Room pushes carry their offsets (seq) in an op-9 batch; a key push carries 0.
  events.length = 0;
  ws.serverSend(roomBatch([42, 'a'], [43, 'b']));
  ws.serverSend(encodeFrame({ op: OP.RAW, body: encodeFrame({ op: 1000, body: 'to my key' }) }));
  assert.deepEqual(events, [
    ['message', { op: 1000, seq: 42, offset: 42, text: 'a' }],
    ['message', { op: 1000, seq: 43, offset: 43, text: 'b' }],
    ['message', { op: 1000, seq: 0, offset: null, text: 'to my key' }],
  ]);
  assert.deepEqual(client.position, { room: ROOM, epoch: 'E1', offset: 43 });

  // Offsets are unsigned 32-bit: the sequence field read unsigned.
  const big = new GoimClient({ url: 'ws://x/sub', token: { room_id: ROOM }, positions: true, WebSocket: WS });
  t.after(() => big.close());
  const bigEvents = recorder(big, ['message']);
  big.connect();
  accept(WS.instances[1]);
  WS.instances[1].serverSend(positionFrame({ epoch: 'E', offset: 0x80000000 }));
  WS.instances[1].serverSend(roomBatch([0x80000001, 'high']));
  assert.equal(bigEvents[0][1].offset, 0x80000001);
  assert.equal(big.position.offset, 0x80000001);
});

test('recovery: every reconnect sends the last offset; recovered and not recovered', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({
    url: 'ws://x/sub',
    token: { room_id: ROOM },
    positions: true,
    backoff: FAST_BACKOFF,
    WebSocket: WS,
  });
  t.after(() => client.close());
  const events = recorder(client);
  client.connect();
  let ws = WS.instances[0];
  accept(ws);
  ws.serverSend(positionFrame({ epoch: 'E1', offset: 10 }));
  ws.serverSend(roomBatch([11, 'm11'], [12, 'm12']));

  // Connection lost: the reconnect asks for what follows offset 12.
  ws.serverClose(1006);
  await until(() => WS.instances.length === 2, 'reconnect');
  ws = WS.instances[1];
  let token = accept(ws);
  assert.equal(token.positions, true);
  assert.deepEqual(token.recover, { epoch: 'E1', offset: 12 });
  assert.equal('recover' in client.token, false);

  // The server recovers: offset 15 now, 3 missed; the replay follows, then live pushes.
  events.length = 0;
  ws.serverSend(positionFrame({ epoch: 'E1', offset: 15, recovered: true, missed: 3 }));
  assert.deepEqual(events, [
    [
      'position',
      { room: ROOM, epoch: 'E1', offset: 15, recovered: true, missed: 3, requested: { epoch: 'E1', offset: 12 } },
    ],
    ['recovered', { room: ROOM, epoch: 'E1', offset: 15, missed: 3 }],
  ]);
  // The client has everything up to 12 until the replayed pushes arrive.
  assert.deepEqual(client.position, { room: ROOM, epoch: 'E1', offset: 12 });
  events.length = 0;
  ws.serverSend(roomBatch([13, 'm13'], [14, 'm14']));
  ws.serverSend(roomBatch([15, 'm15'], [16, 'm16 live']));
  assert.deepEqual(
    events.map(([type, d]) => [type, d.offset, d.text]),
    [
      ['message', 13, 'm13'],
      ['message', 14, 'm14'],
      ['message', 15, 'm15'],
      ['message', 16, 'm16 live'],
    ],
  );
  assert.equal(client.position.offset, 16);

  // Again: the server cannot recover (new epoch); only live pushes follow.
  ws.serverClose(1006);
  await until(() => WS.instances.length === 3, 'second reconnect');
  ws = WS.instances[2];
  token = accept(ws);
  assert.deepEqual(token.recover, { epoch: 'E1', offset: 16 });
  events.length = 0;
  ws.serverSend(positionFrame({ epoch: 'E2', offset: 4, recovered: false, missed: 0 }));
  assert.deepEqual(events, [
    [
      'position',
      { room: ROOM, epoch: 'E2', offset: 4, recovered: false, missed: 0, requested: { epoch: 'E1', offset: 16 } },
    ],
  ]);
  assert.deepEqual(client.position, { room: ROOM, epoch: 'E2', offset: 4 });
  ws.serverSend(roomBatch([5, 'e2-5']));
  assert.equal(client.position.offset, 5);

  // And the next reconnect resumes in the new epoch.
  ws.serverClose(1006);
  await until(() => WS.instances.length === 4, 'third reconnect');
  assert.deepEqual(accept(WS.instances[3]).recover, { epoch: 'E2', offset: 5 });
  assert.equal(client.duplicates, 0);
});

test('recovery: a room push at or below the remembered offset is dropped as a duplicate', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({ url: 'ws://x/sub', token: { room_id: ROOM }, positions: true, WebSocket: WS });
  t.after(() => client.close());
  const events = recorder(client);
  client.connect();
  const ws = WS.instances[0];
  accept(ws);
  ws.serverSend(positionFrame({ epoch: 'E', offset: 7 }));
  events.length = 0;
  ws.serverSend(roomBatch([7, 'old'], [8, 'new'], [8, 'again'], [3, 'older'], [9, 'newer']));
  assert.deepEqual(
    events.map(([type, d]) => [type, d.offset, d.text]),
    [
      ['duplicate', 7, 'old'],
      ['message', 8, 'new'],
      ['duplicate', 8, 'again'],
      ['duplicate', 3, 'older'],
      ['message', 9, 'newer'],
    ],
  );
  assert.equal(client.duplicates, 3);
  assert.equal(client.position.offset, 9);
});

test('positions: changeRoom forgets the position; the new room\'s op 20 sets it', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({
    url: 'ws://x/sub',
    token: { room_id: ROOM },
    positions: true,
    backoff: FAST_BACKOFF,
    WebSocket: WS,
  });
  t.after(() => client.close());
  const events = recorder(client);
  client.connect();
  let ws = WS.instances[0];
  accept(ws);
  ws.serverSend(positionFrame({ epoch: 'E', offset: 20 }));
  ws.serverSend(roomBatch([21, 'in 1000']));

  const changed = client.changeRoom('live://2000');
  assert.equal(client.position, null);
  const request = ws.sent.at(-1);
  assert.deepEqual([request.op, request.text()], [OP.CHANGE_ROOM, 'live://2000']);
  // A push of the old room still in flight: delivered, not tracked.
  events.length = 0;
  ws.serverSend(roomBatch([22, 'late from 1000']));
  assert.deepEqual(events, [['message', { op: 1000, seq: 22, offset: 22, text: 'late from 1000' }]]);
  assert.equal(client.position, null);
  ws.serverSend(encodeFrame({ op: OP.CHANGE_ROOM_REPLY, seq: request.seq, body: 'live://2000' }));
  assert.equal(await changed, 'live://2000');
  ws.serverSend(positionFrame({ room: 'live://2000', epoch: 'F', offset: 3 }));
  assert.deepEqual(client.position, { room: 'live://2000', epoch: 'F', offset: 3 });
  ws.serverSend(roomBatch([4, 'in 2000']));
  assert.equal(client.position.offset, 4);

  // An op-20 frame of a room left meanwhile does not set the position.
  const third = client.changeRoom('live://3000');
  ws.serverSend(positionFrame({ room: 'live://2000', epoch: 'F', offset: 9 }));
  assert.equal(client.position, null);
  assert.equal(events.at(-1)[0], 'position', 'still reported');
  ws.serverSend(encodeFrame({ op: OP.CHANGE_ROOM_REPLY, seq: ws.sent.at(-1).seq, body: 'live://3000' }));
  assert.equal(await third, 'live://3000');
  ws.serverSend(positionFrame({ room: 'live://3000', epoch: 'G', offset: 1 }));
  assert.deepEqual(client.position, { room: 'live://3000', epoch: 'G', offset: 1 });

  // Reconnect: recover in the current room.
  ws.serverClose(1006);
  await until(() => WS.instances.length === 2, 'reconnect');
  ws = WS.instances[1];
  const token = accept(ws);
  assert.equal(token.room_id, 'live://3000');
  assert.deepEqual(token.recover, { epoch: 'G', offset: 1 });

  // Offline: a change to the same room keeps the position, to another room drops it.
  ws.serverClose(1006);
  assert.equal(await client.changeRoom('live://3000'), null);
  assert.deepEqual(client.position, { room: 'live://3000', epoch: 'G', offset: 1 });
  assert.equal(await client.changeRoom('live://4000'), null);
  assert.equal(client.position, null);
  await until(() => WS.instances.length === 3, 'second reconnect');
  const fresh = accept(WS.instances[2]);
  assert.equal(fresh.room_id, 'live://4000');
  assert.equal(fresh.positions, true);
  assert.equal('recover' in fresh, false);

  // Leaving the room: no position (the server sends no op 20), no recover on reconnect.
  ws = WS.instances[2];
  ws.serverSend(positionFrame({ room: 'live://4000', epoch: 'H', offset: 0 }));
  assert.equal(client.position.epoch, 'H');
  const left = client.changeRoom('');
  assert.equal(client.position, null);
  ws.serverSend(encodeFrame({ op: OP.CHANGE_ROOM_REPLY, seq: ws.sent.at(-1).seq }));
  assert.equal(await left, '');
  ws.serverClose(1006);
  await until(() => WS.instances.length === 4, 'third reconnect');
  const roomless = accept(WS.instances[3]);
  assert.equal(roomless.room_id, '');
  assert.equal('recover' in roomless, false);
});

test('positions: token.recover resumes a saved position on the first connect', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({
    url: 'ws://x/sub',
    token: { room_id: ROOM, recover: { epoch: 'S', offset: 99 } },
    WebSocket: WS,
  });
  t.after(() => client.close());
  assert.equal(client.positions, true, 'recover implies positions');
  assert.deepEqual(client.position, { room: ROOM, epoch: 'S', offset: 99 });
  assert.equal('recover' in client.token, false);
  const recovered = [];
  client.addEventListener('recovered', (e) => recovered.push(e.detail.missed));
  client.connect();
  const ws = WS.instances[0];
  const token = accept(ws);
  assert.deepEqual(token.recover, { epoch: 'S', offset: 99 });
  assert.equal(token.positions, true);
  ws.serverSend(positionFrame({ epoch: 'S', offset: 101, recovered: true, missed: 2 }));
  assert.deepEqual(recovered, [2]);
  assert.equal(client.position.offset, 99);
});

test('positions: echoes of send() are not room pushes; a bad op-20 body is an error, not a drop', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({ url: 'ws://x/sub', token: { room_id: ROOM }, positions: true, WebSocket: WS });
  t.after(() => client.close());
  const events = recorder(client, ['message', 'error']);
  client.connect();
  const ws = WS.instances[0];
  accept(ws);
  ws.serverSend(positionFrame({ epoch: 'E', offset: 0 }));
  const seq = client.send(OP.SEND_MSG, 'upstream');
  assert.ok(seq > 0);
  ws.serverSend(encodeFrame({ op: OP.SEND_MSG, seq })); // goim's echo: same op and seq, no body
  assert.deepEqual(events, [['message', { op: OP.SEND_MSG, seq, offset: null, text: '' }]]);
  assert.deepEqual(client.position, { room: ROOM, epoch: 'E', offset: 0 });

  events.length = 0;
  ws.serverSend(encodeFrame({ op: OP.POSITION, body: 'not json' }));
  assert.equal(events.length, 1);
  assert.equal(events[0][0], 'error');
  assert.ok(events[0][1].error instanceof ProtocolError);
  assert.equal(client.position, null, 'the position is unknown after a bad frame');
  assert.equal(client.state, 'connected');
  assert.equal(ws.closedWith, null);
});

test('without positions: no token field, sequences are not offsets, op 20 is a plain message', async (t) => {
  const WS = fakeWebSocketClass();
  const client = new GoimClient({ url: 'ws://x/sub', token: { room_id: ROOM }, WebSocket: WS });
  t.after(() => client.close());
  assert.equal(client.positions, false);
  const events = recorder(client);
  client.connect();
  const token = accept(WS.instances[0]);
  assert.equal('positions' in token, false);
  assert.equal('recover' in token, false);
  WS.instances[0].serverSend(positionFrame({ epoch: 'E', offset: 1 }));
  WS.instances[0].serverSend(roomBatch([2, 'x']));
  assert.deepEqual(
    events.map(([type, d]) => [type, d.op, d.offset]),
    [
      ['message', OP.POSITION, null],
      ['message', 1000, null],
    ],
  );
  assert.equal(client.position, null);
});

test('GoimClient.fromNodes passes positions through', async () => {
  const fetch = async () => ({
    ok: true,
    status: 200,
    json: async () => ({ code: 0, message: '', data: { ws_port: 1, heartbeat: 1, heartbeat_max: 2 } }),
  });
  const client = await GoimClient.fromNodes('http://h:1', { room_id: ROOM }, {
    fetch,
    WebSocket: fakeWebSocketClass(),
    positions: true,
  });
  assert.equal(client.positions, true);
});
