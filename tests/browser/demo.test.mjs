// End-to-end test of the demo page (examples/web) and the JS client
// (clients/js/goim.js) in headless Chromium against the real corecast binary.
//
//   cargo build && tests/browser/run.sh
//
// Env: CORECAST_BIN (default target/debug/corecast, relative to the repository
// root), CHROMIUM_BIN (default /usr/bin/chromium), SCREENSHOT_DIR (default: a
// new temp dir; the path is printed as a test diagnostic).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

import {
  REPO_ROOT,
  WAIT_MS,
  launchBrowser,
  waitConnected,
  waitOnline,
  waitMessage,
  waitRecovered,
  pageMessages,
  withPageState,
} from './lib.mjs';
import { encodeFrame, decodeFrames, OP } from '../../clients/js/goim.js';

const BIN = path.resolve(REPO_ROOT, process.env.CORECAST_BIN || 'target/debug/corecast');

const CONFIG = `
[server]
shards = 2
online_sync_ms = 100
log_level = "warn"

[tcp]
bind = "127.0.0.1:0"

[http]
bind = "127.0.0.1:0"

[ws]
bind = "127.0.0.1:0"

[demo]
enabled = true

[protocol]
# Short, so the page also gets online counts from heartbeat replies.
heartbeat_s = 2

[backoff]
# Short and fixed (advertised by /goim/nodes/weighted), so a page that lost its
# connection is back after 1 s.
base_delay = 1
max_delay = 1
factor = 1.0
jitter = 0.0
`;

/**
 * Starts corecast with CONFIG; resolves once it printed
 * `corecast ready tcp=ADDR http=ADDR ws=ADDR`, with the parsed addresses.
 */
async function startServer(dir) {
  if (!fs.existsSync(BIN)) throw new Error(`no corecast binary at ${BIN}: run cargo build (or set CORECAST_BIN)`);
  const configPath = path.join(dir, 'corecast.toml');
  fs.writeFileSync(configPath, CONFIG);
  const child = spawn(BIN, ['--config', configPath], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const server = { child, stderr: '', exit: once(child, 'exit') };
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s) => {
    server.stderr = (server.stderr + s).slice(-20_000);
  });
  const lines = readline.createInterface({ input: child.stdout });
  const ready = new Promise((resolve, reject) => {
    lines.on('line', (line) => {
      if (!line.startsWith('corecast ready')) return;
      const addrs = Object.fromEntries(
        line
          .split(/\s+/)
          .filter((token) => token.includes('='))
          .map((token) => token.split(/=(.*)/s, 2)),
      );
      resolve({ line, ...addrs });
    });
    server.exit.then(([code, signal]) =>
      reject(new Error(`corecast exited before ready (code ${code}, signal ${signal}):\n${server.stderr}`)),
    );
  });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ready line within ${WAIT_MS} ms:\n${server.stderr}`)), WAIT_MS);
  });
  try {
    Object.assign(server, await Promise.race([ready, timeout]));
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  } finally {
    clearTimeout(timer);
  }
  return server;
}

async function api(server, method, pathAndQuery, body) {
  const reply = await fetch(`http://${server.http}${pathAndQuery}`, {
    method,
    body,
    signal: AbortSignal.timeout(WAIT_MS),
  });
  assert.equal(reply.status, 200, `${method} ${pathAndQuery}: HTTP ${reply.status}`);
  return { headers: reply.headers, json: await reply.json() };
}

function pushRoom(server, text, room = '1000') {
  return api(server, 'POST', `/goim/push/room?operation=1000&type=live&room=${room}`, text);
}

/**
 * A raw goim connection to the TCP port that authenticates with `token`.
 * Resolves once the auth reply (op 8) came, with `closed` (resolves when the
 * server closes it) and `socket`.
 */
async function tcpAuth(server, token) {
  const at = server.tcp.lastIndexOf(':');
  const socket = net.connect({ host: server.tcp.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(server.tcp.slice(at + 1)) });
  socket.on('error', () => {}); // a reset counts as closed
  const closed = once(socket, 'close');
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no auth reply over TCP within ${WAIT_MS} ms`)), WAIT_MS);
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      // Whole frames only: a frame may span TCP reads.
      let whole = 0;
      while (pending.length - whole >= 16 && pending.readInt32BE(whole) <= pending.length - whole) {
        whole += pending.readInt32BE(whole);
      }
      const frames = decodeFrames(pending.subarray(0, whole));
      pending = pending.subarray(whole);
      if (frames.some((f) => f.op === OP.AUTH_REPLY)) {
        clearTimeout(timer);
        resolve();
      }
    });
    closed.then(() => {
      clearTimeout(timer);
      reject(new Error('TCP connection closed before the auth reply'));
    });
    socket.once('connect', () => socket.write(encodeFrame({ op: OP.AUTH, body: JSON.stringify(token) })));
  });
  return { socket, closed };
}

/** Resolves with `promise`, or rejects after WAIT_MS saying `what`. */
async function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${WAIT_MS} ms`)), WAIT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

describe('demo page in Chromium against corecast', { timeout: 180_000 }, () => {
  let dir;
  let server;
  let browser;
  let pageUrl;
  const pages = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corecast-browser-'));
    server = await startServer(dir);
    if (!server.ws) {
      throw new Error(`the server has no WebSocket listener (no ws= in its ready line: "${server.line}")`);
    }
    const query = new URLSearchParams({ api: `http://${server.http}`, ws: `ws://${server.ws}/sub`, room: 'live://1000' });
    pageUrl = `http://${server.http}/demo/?${query}`;
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    if (server && server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('serves the demo files under /demo/ (the ones in this tree)', async () => {
    const files = {
      '/demo/': 'examples/web/index.html',
      '/demo/app.js': 'examples/web/app.js',
      '/demo/goim.js': 'clients/js/goim.js',
    };
    for (const [route, file] of Object.entries(files)) {
      const reply = await fetch(`http://${server.http}${route}`, { signal: AbortSignal.timeout(WAIT_MS) });
      assert.equal(reply.status, 200, `GET ${route}`);
      const type = reply.headers.get('content-type') ?? '';
      assert.match(type, route.endsWith('.js') ? /javascript/ : /text\/html/, `GET ${route} content-type`);
      const served = await reply.text();
      const local = fs.readFileSync(path.join(REPO_ROOT, file), 'utf8');
      assert.ok(served === local, `GET ${route} differs from ${file}: rebuild corecast (files are embedded at build time)`);
    }
  });

  it('API replies carry Access-Control-Allow-Origin: *', async () => {
    for (const [method, route] of [
      ['GET', '/goim/nodes/weighted?platform=web'],
      ['GET', '/goim/online/room?type=live&rooms=1000'],
    ]) {
      const { headers, json } = await api(server, method, route);
      assert.equal(json.code, 0);
      assert.equal(headers.get('access-control-allow-origin'), '*', `${method} ${route}`);
    }
  });

  it('the page connects and authenticates', async () => {
    const page = await browser.context.newPage();
    pages.push(page);
    await withPageState(pages, async () => {
      await page.goto(pageUrl);
      await waitConnected(page);
      assert.equal((await page.textContent('#room')).trim(), 'live://1000');
    });
  });

  it('#online shows 1', async () => {
    await withPageState(pages, () => waitOnline(pages[0], 1));
  });

  it('a message pushed through the HTTP API appears in #messages', async () => {
    const text = 'hello from node ✓ <b>not bold</b>';
    const { json } = await pushRoom(server, text);
    assert.deepEqual(json, { code: 0, message: '' });
    const count = await withPageState(pages, () => waitMessage(pages[0], text));
    assert.equal(count, 1, 'one <li> per message');
  });

  it("the page's push form pushes to the room", async () => {
    const page = pages[0];
    const text = `from the form ${Date.now()}`;
    await withPageState(pages, async () => {
      await page.fill('#push-text', text);
      await page.click('#push-form button[type=submit]');
      assert.equal(await waitMessage(page, text), 2);
      await page.waitForFunction(() => document.querySelector('#push-text').value === '', null, { timeout: WAIT_MS });
    });
  });

  it('a second page: #online shows 2 on both, and both get a push', async () => {
    const second = await browser.context.newPage();
    pages.push(second);
    await withPageState(pages, async () => {
      await second.goto(pageUrl);
      await waitConnected(second);
      await waitOnline(pages[0], 2);
      await waitOnline(second, 2);
      const text = `to both ${Date.now()}`;
      assert.equal((await pushRoom(server, text)).json.code, 0);
      assert.equal(await waitMessage(pages[0], text), 3);
      assert.equal(await waitMessage(second, text), 1);
    });
  });

  it('the browser negotiated permessage-deflate on its own: a long push arrives whole and went out compressed', async () => {
    const scrape = async (name) => {
      const text = await (await fetch(`http://${server.http}/metrics`, { signal: AbortSignal.timeout(WAIT_MS) })).text();
      const line = text.split('\n').find((l) => l.startsWith(`${name} `));
      return line ? Number(line.split(' ')[1]) : 0;
    };
    const before = await scrape('corecast_ws_compressed_messages_total');
    const gifts = Array.from({ length: 14 }, (_, i) => `{"user":"viewer${i}","gift":"rose","count":${i}}`);
    const text = `[${gifts.join(',')}] ${Date.now()}`;
    assert.ok(text.length > 500);
    assert.equal((await pushRoom(server, text)).json.code, 0);
    await withPageState(pages, async () => {
      // waitMessage resolves with the page's message count once `text` is shown.
      assert.equal(await waitMessage(pages[0], text), 4);
      assert.equal(await waitMessage(pages[1], text), 2);
    });
    const deadline = Date.now() + WAIT_MS;
    let after = before;
    while (after <= before && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      after = await scrape('corecast_ws_compressed_messages_total');
    }
    assert.ok(after > before, `corecast_ws_compressed_messages_total went from ${before} to ${after}`);
  });

  it('positions: the page loses its connection while pushes continue, recovers, shows every message once, in order', async (t) => {
    // A room of its own, and a known key: a newer connection with the same
    // key replaces (closes) the page's, and the page's reconnect replaces that
    // one in turn.
    const room = '2000';
    const key = `recovery-page-${process.pid}`;
    const query = new URLSearchParams({ api: `http://${server.http}`, ws: `ws://${server.ws}/sub`, room: `live://${room}`, key });
    const page = await browser.context.newPage();
    pages.push(page);
    await withPageState(pages, async () => {
      await page.goto(`http://${server.http}/demo/?${query}`);
      await waitConnected(page);
      // The op-20 frame came: the page knows the room's epoch and offset.
      await page.waitForFunction(() => !!window.corecastDemo?.client?.position, null, { timeout: WAIT_MS });
      const start = await page.evaluate(() => ({ ...window.corecastDemo.client.position }));
      assert.match(start.epoch, /^[A-Za-z0-9]{1,32}$/);
      assert.equal((await page.textContent('#recovery')).trim(), '', 'nothing to recover on the first connect');

      const texts = [];
      const push = async (text) => {
        texts.push(text);
        assert.equal((await pushRoom(server, text, room)).json.code, 0);
      };
      for (let i = 1; i <= 3; i++) await push(`before ${i}`);
      await waitMessage(page, 'before 3');

      // Kick the page: same key over the TCP port. Then push while it is away.
      const intruder = await tcpAuth(server, { mid: 0, key, room_id: '', platform: 'test', accepts: [] });
      await page.waitForFunction(() => document.querySelector('#status').dataset.state !== 'connected', null, {
        timeout: WAIT_MS,
      });
      const away = 5;
      for (let i = 1; i <= away; i++) await push(`while away ${i}`);

      // The page reconnects by itself (1 s backoff), asks to recover, and its
      // connection replaces the intruder's.
      const missed = await waitRecovered(page);
      t.diagnostic(`the page recovered ${missed} missed messages`);
      assert.ok(missed > 0 && missed <= away, `recovered ${missed} of the ${away} pushed while away`);
      await waitConnected(page);
      await within(intruder.closed, "the page's reconnect closes the TCP connection with its key");

      for (let i = 1; i <= 3; i++) await push(`after ${i}`);
      await waitMessage(page, 'after 3');

      // Every message once, in push order, with consecutive room offsets.
      const shown = await pageMessages(page);
      assert.deepEqual(shown.map((m) => m.text), texts);
      assert.deepEqual(
        shown.map((m) => m.offset),
        texts.map((_, i) => start.offset + 1 + i),
      );
      assert.equal((await page.textContent('#offset')).trim(), String(start.offset + texts.length));
      assert.equal(await page.evaluate(() => window.corecastDemo.client.duplicates), 0, 'no duplicates dropped');
      assert.deepEqual(await page.evaluate(() => window.corecastDemo.client.position.epoch), start.epoch);
    });
  });

  it('takes a screenshot', async (t) => {
    const out = process.env.SCREENSHOT_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'corecast-screenshot-'));
    fs.mkdirSync(out, { recursive: true });
    const file = path.join(out, 'demo.png');
    await pages[0].screenshot({ path: file, fullPage: true });
    assert.ok(fs.statSync(file).size > 1000);
    t.diagnostic(`screenshot: ${file}`);
  });

  it('no uncaught errors on the pages', () => {
    for (const page of pages) assert.deepEqual(page.errors, [], page.logs.join('\n'));
  });

  it('SIGTERM stops the server (exit 0) and the pages start reconnecting', async () => {
    server.child.kill('SIGTERM');
    let timer;
    const [code, signal] = await Promise.race([
      server.exit,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no exit within ${WAIT_MS} ms of SIGTERM`)), WAIT_MS);
      }),
    ]).finally(() => clearTimeout(timer));
    assert.equal(signal, null, `killed by ${signal}:\n${server.stderr}`);
    assert.equal(code, 0, `exit code ${code}:\n${server.stderr}`);
    await withPageState(pages, () =>
      pages[0].waitForFunction(() => document.querySelector('#status').dataset.state === 'reconnecting', null, {
        timeout: WAIT_MS,
      }),
    );
  });
});
