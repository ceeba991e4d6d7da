// The demo page and the JS client in headless Chromium against fake-server.mjs
// (a Node stand-in for corecast): the "serve the repository root" mode
// (/examples/web/, goim.js through the re-export), a cross-origin API (CORS),
// op-9 batches, a change of room, and positions (room offsets, recovery after
// a reconnect). Needs no corecast binary; the real end-to-end test is
// demo.test.mjs.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { startFakeServer } from './fake-server.mjs';
import {
  launchBrowser,
  waitConnected,
  waitOnline,
  waitMessage,
  waitRecovered,
  pageMessages,
  withPageState,
  WAIT_MS,
} from './lib.mjs';

describe('demo page in Chromium against the fake server', { timeout: 120_000 }, () => {
  let fake;
  let browser;
  const pages = [];

  before(async () => {
    fake = await startFakeServer({ heartbeat: 1 });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await fake?.close();
  });

  const push = async (room, text) => {
    const reply = await fetch(`http://127.0.0.1:${fake.port}/goim/push/room?operation=1001&type=live&room=${room}`, {
      method: 'POST',
      body: text,
    });
    assert.equal((await reply.json()).code, 0);
  };

  it('static-root page with a cross-origin API: connects, counts, receives, pushes', async () => {
    const page = await browser.context.newPage();
    pages.push(page);
    // Page on 127.0.0.1, API and WebSocket on localhost: a cross-origin API.
    await withPageState(pages, async () => {
      await page.goto(`http://127.0.0.1:${fake.port}/examples/web/?api=http://localhost:${fake.port}&mid=7`);
      await waitConnected(page);
      assert.equal(await page.textContent('#ws-url'), `ws://localhost:${fake.port}/sub`);
      await waitOnline(page, 1);
      await push(1000, 'batched ✓');
      assert.equal(await waitMessage(page, 'batched ✓'), 1);
      await page.fill('#push-text', 'from the form');
      await page.press('#push-text', 'Enter');
      assert.equal(await waitMessage(page, 'from the form'), 2);
      // Room offsets from the op-20 frame on: #1, #2.
      assert.deepEqual(await pageMessages(page), [
        { offset: 1, text: 'batched ✓' },
        { offset: 2, text: 'from the form' },
      ]);
      assert.equal((await page.textContent('#offset')).trim(), '2');
    });
  });

  it('/demo/ page: change room moves the online count and the pushes', async () => {
    const page = await browser.context.newPage();
    pages.push(page);
    await withPageState(pages, async () => {
      await page.goto(`http://127.0.0.1:${fake.port}/demo/?room=live://1000`);
      await waitConnected(page);
      await waitOnline(pages[0], 2);
      await page.fill('#room-input', 'live://2000');
      await page.click('#room-form button');
      await page.waitForFunction(() => document.querySelector('#room').textContent === 'live://2000', null, {
        timeout: WAIT_MS,
      });
      await waitOnline(page, 1);
      await waitOnline(pages[0], 1);
      await push(2000, 'room 2000 only');
      assert.equal(await waitMessage(page, 'room 2000 only'), 1);
      assert.equal(await pages[0].locator('#messages li').count(), 2);
    });
  });

  it('the pages reconnect when the server drops them, and recover what was pushed meanwhile', async () => {
    await withPageState(pages, async () => {
      // Keep them out until the pushes are done.
      fake.control.refuse = true;
      for (const c of fake.conns) c.close();
      for (const page of pages) {
        await page.waitForFunction(() => document.querySelector('#status').dataset.state !== 'connected', null, {
          timeout: WAIT_MS,
        });
      }
      await push(2000, 'while away 1');
      await push(2000, 'while away 2');
      fake.control.refuse = false;
      // The fake advertises base_delay 0.5 s; the second page keeps its new room.
      await waitConnected(pages[0]);
      await waitConnected(pages[1]);
      assert.equal(await waitRecovered(pages[1]), 2);
      assert.equal(await waitRecovered(pages[0]), 0);
      await push(2000, 'after reconnect');
      await waitMessage(pages[1], 'after reconnect');
      assert.deepEqual(await pageMessages(pages[1]), [
        { offset: 1, text: 'room 2000 only' },
        { offset: 2, text: 'while away 1' },
        { offset: 3, text: 'while away 2' },
        { offset: 4, text: 'after reconnect' },
      ]);
    });
  });

  it('no uncaught errors on the pages', () => {
    for (const page of pages) assert.deepEqual(page.errors, [], page.logs.join('\n'));
  });
});
