// Helpers shared by the browser tests: Chromium through playwright-core, and
// waits on the demo page's DOM.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Every wait on the page or the server. */
export const WAIT_MS = 10_000;

export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Launches Chromium with a fresh user-data dir. Returns {context, dir, close()}.
 * Pages opened with `context.newPage()` record their console output and
 * uncaught errors in `page.logs` / `page.errors`.
 */
export async function launchBrowser() {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM_BIN)`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'corecast-chromium-'));
  const context = await chromium.launchPersistentContext(path.join(dir, 'profile'), {
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    headless: true,
    viewport: { width: 1000, height: 760 },
    timeout: 30_000,
  });
  context.setDefaultTimeout(WAIT_MS);
  context.on('page', (page) => {
    page.logs = [];
    page.errors = [];
    page.on('console', (m) => page.logs.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => page.errors.push(String(e?.stack ?? e)));
  });
  return {
    context,
    dir,
    async close() {
      await context.close().catch(() => {});
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Waits until `#status` reports an authenticated connection. */
export async function waitConnected(page) {
  await page.waitForFunction(() => document.querySelector('#status')?.dataset.state === 'connected', null, {
    timeout: WAIT_MS,
  });
}

/** Waits until `#online` shows `count`. */
export async function waitOnline(page, count) {
  await page.waitForFunction((n) => document.querySelector('#online')?.textContent.trim() === String(n), count, {
    timeout: WAIT_MS,
  });
}

/** Waits until one `#messages li` holds `text`; returns the number of list items then. */
export async function waitMessage(page, text) {
  const handle = await page.waitForFunction(
    (t) => {
      const items = [...document.querySelectorAll('#messages li')];
      return items.some((li) => li.querySelector('.text')?.textContent === t) && items.length;
    },
    text,
    { timeout: WAIT_MS },
  );
  return handle.jsonValue();
}

/**
 * The messages `#messages` shows, oldest first (the page prepends new ones):
 * [{offset, text}], `offset` the number of the `#N` mark (null without one).
 */
export async function pageMessages(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('#messages li')].reverse().map((li) => {
      const mark = li.querySelector('.offset')?.textContent ?? '';
      return { offset: /^#\d+$/.test(mark) ? Number(mark.slice(1)) : null, text: li.querySelector('.text')?.textContent };
    }),
  );
}

/** Waits until `#recovery` says "recovered N missed message(s)"; returns N. */
export async function waitRecovered(page) {
  const handle = await page.waitForFunction(
    () => {
      const match = /^recovered (\d+) missed messages?$/.exec(document.querySelector('#recovery')?.textContent.trim() ?? '');
      return match ? match[1] : false; // a string: "0" is truthy
    },
    null,
    { timeout: WAIT_MS },
  );
  return Number(await handle.jsonValue());
}

/** What the page showed and logged, for a failure message. */
export async function pageState(page) {
  const dom = await page
    .evaluate(() => ({
      status: document.querySelector('#status')?.textContent,
      online: document.querySelector('#online')?.textContent,
      offset: document.querySelector('#offset')?.textContent,
      recovery: document.querySelector('#recovery')?.textContent,
      messages: [...document.querySelectorAll('#messages li')].map((li) => li.textContent),
      pushResult: document.querySelector('#push-result')?.textContent,
    }))
    .catch((e) => ({ unavailable: String(e) }));
  return JSON.stringify({ url: page.url(), dom, console: page.logs, errors: page.errors }, null, 2);
}

/** Runs `step`; on failure, adds what the pages showed to the error. */
export async function withPageState(pages, step) {
  try {
    return await step();
  } catch (error) {
    const states = await Promise.all(pages.filter(Boolean).map(pageState));
    error.message += `\n--- page state ---\n${states.join('\n')}`;
    throw error;
  }
}
