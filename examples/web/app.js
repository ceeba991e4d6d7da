// corecast browser demo: join a room over WebSocket, show the room's online
// count and the messages pushed to it, push messages through the HTTP API.
// The client asks for positions: each room message shows its room offset, and
// after a reconnect the server replays what the page missed ("recovered N
// missed messages"). Settings: see the comment in index.html.
import { GoimClient, parseRoomKey } from './goim.js';

const MESSAGES_MAX = 200;
const ONLINE_POLL_MS = 2000;
const NODES_RETRY_MS = 3000;

const params = new URLSearchParams(location.search);
const servedOverHttp = location.protocol === 'http:' || location.protocol === 'https:';
const api = (params.get('api') || (servedOverHttp ? location.origin : 'http://127.0.0.1:3111')).replace(/\/+$/, '');
const wsOverride = params.get('ws') || undefined;
const operation = Number(params.get('op')) || 1000;
const token = {
  mid: Number(params.get('mid')) || 0,
  key: params.get('key') ?? '',
  room_id: params.get('room') ?? 'live://1000',
  platform: 'web',
  accepts: [1000, 1001, 1002],
};

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  room: $('room'),
  online: $('online'),
  offset: $('offset'),
  recovery: $('recovery'),
  messages: $('messages'),
  pushForm: $('push-form'),
  pushText: $('push-text'),
  pushButton: $('push-button'),
  pushResult: $('push-result'),
  roomForm: $('room-form'),
  roomInput: $('room-input'),
  apiUrl: $('api-url'),
  wsUrl: $('ws-url'),
};

let client = null;
// The client keeps its own copy of the token (changeRoom updates it).
const roomKey = () => (client ? client.token.room_id : token.room_id);

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

function showRoom() {
  ui.room.textContent = roomKey() || '(none)';
  ui.roomInput.value = roomKey();
}

function showOnline(count) {
  ui.online.textContent = count === null ? '–' : String(count);
}

function showPosition() {
  const p = client?.position;
  ui.offset.textContent = p ? String(p.offset) : '–';
  ui.offset.title = p ? `epoch ${p.epoch}, last offset ${p.offset}` : 'room epoch and offset';
}

function showRecovery(text, bad = false) {
  ui.recovery.className = bad ? 'bad' : '';
  ui.recovery.textContent = text;
}

// After a reconnect (the client asked to recover): what the server could replay.
function onPosition({ recovered, missed, requested }) {
  showPosition();
  if (recovered) {
    showRecovery(`recovered ${missed} missed message${missed === 1 ? '' : 's'}`);
  } else if (requested) {
    showRecovery('could not recover the missed messages (the room restarted or they left the history)', true);
  }
}

function addMessage(frame) {
  const li = document.createElement('li');
  const time = document.createElement('time');
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString();
  const op = document.createElement('span');
  op.className = 'op';
  op.textContent = `op ${frame.op}`;
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = frame.text();
  li.append(time, op);
  if (frame.offset !== null && frame.offset !== undefined) {
    const offset = document.createElement('span');
    offset.className = 'offset';
    offset.textContent = `#${frame.offset}`;
    li.append(offset);
  }
  li.append(text);
  ui.messages.prepend(li);
  while (ui.messages.children.length > MESSAGES_MAX) ui.messages.lastElementChild.remove();
}

const STATE_TEXT = {
  idle: 'idle',
  connecting: 'connecting…',
  authenticating: 'authenticating…',
  connected: 'connected',
  closed: 'disconnected',
};

function wire(c) {
  c.addEventListener('state', (e) => {
    const { state } = e.detail;
    if (state !== 'reconnecting') setStatus(state, STATE_TEXT[state] ?? state);
  });
  c.addEventListener('reconnecting', (e) => {
    const { attempt, delayMs } = e.detail;
    setStatus('reconnecting', `reconnecting in ${(delayMs / 1000).toFixed(1)} s (attempt ${attempt})`);
  });
  c.addEventListener('online', (e) => showOnline(e.detail.count));
  c.addEventListener('message', (e) => {
    addMessage(e.detail);
    showPosition();
  });
  c.addEventListener('position', (e) => onPosition(e.detail));
  c.addEventListener('duplicate', (e) => console.warn('goim: dropped a duplicate of offset', e.detail.offset));
  c.addEventListener('error', (e) => console.warn('goim:', e.detail.error));
}

async function start() {
  ui.apiUrl.textContent = api;
  showRoom();
  setStatus('connecting', 'loading nodes…');
  try {
    client = await GoimClient.fromNodes(api, token, { url: wsOverride, positions: true });
  } catch (error) {
    console.warn('nodes/weighted failed:', error);
    if (!wsOverride) {
      setStatus('error', `API unreachable, retrying (${error.message})`);
      setTimeout(start, NODES_RETRY_MS);
      return;
    }
    // The WebSocket URL is known: connect with goim's default settings.
    client = new GoimClient({ url: wsOverride, token, positions: true });
  }
  ui.wsUrl.textContent = client.url;
  wire(client);
  client.connect();
  window.corecastDemo = { client, api };
}

// Online count: heartbeat replies update it too, but they may be minutes apart.
async function pollOnline() {
  const key = roomKey();
  const room = parseRoomKey(key);
  if (!room) {
    showOnline(null);
    return;
  }
  try {
    const url = `${api}/goim/online/room?type=${encodeURIComponent(room.type)}&rooms=${encodeURIComponent(room.id)}`;
    const reply = await fetch(url);
    const json = await reply.json();
    // Ignore a reply for a room we have left meanwhile.
    if (json.code === 0 && json.data && roomKey() === key) {
      showOnline(json.data[room.id] ?? 0);
    }
  } catch (error) {
    console.warn('online/room failed:', error);
  }
}

ui.pushForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = ui.pushText.value;
  const room = parseRoomKey(roomKey());
  if (!text || !room) {
    ui.pushResult.className = 'bad';
    ui.pushResult.textContent = room ? 'Type a message first.' : 'Join a room (type://id) first.';
    return;
  }
  ui.pushButton.disabled = true;
  try {
    const query = new URLSearchParams({ operation: String(operation), type: room.type, room: room.id });
    // A text/plain body keeps this a "simple" cross-origin request (no preflight).
    const reply = await fetch(`${api}/goim/push/room?${query}`, {
      method: 'POST',
      headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
      body: text,
    });
    const json = await reply.json();
    if (json.code !== 0) throw new Error(`code ${json.code} ${json.message}`);
    ui.pushResult.className = '';
    ui.pushResult.textContent = `Pushed to ${roomKey()} at ${new Date().toLocaleTimeString()}.`;
    ui.pushText.value = '';
  } catch (error) {
    ui.pushResult.className = 'bad';
    ui.pushResult.textContent = `Push failed: ${error.message}`;
  } finally {
    ui.pushButton.disabled = false;
    ui.pushText.focus();
  }
});

ui.roomForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const next = ui.roomInput.value.trim();
  if (next && !parseRoomKey(next)) {
    ui.pushResult.className = 'bad';
    ui.pushResult.textContent = 'A room key looks like type://id, e.g. live://1000.';
    return;
  }
  showOnline(null);
  // Updates the token too, so a reconnect joins the new room.
  const change = client ? client.changeRoom(next) : Promise.resolve((token.room_id = next));
  showRoom();
  ui.messages.replaceChildren();
  showRecovery('');
  showPosition();
  try {
    await change;
  } catch (error) {
    console.warn('change room failed:', error);
  }
  pollOnline();
});

start();
pollOnline();
setInterval(pollOnline, ONLINE_POLL_MS);
