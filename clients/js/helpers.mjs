// Shared by the unit tests of goim.js: byte helpers and a WebSocket stand-in.
import { setTimeout as sleep } from 'node:timers/promises';
import { once } from 'node:events';
import assert from 'node:assert/strict';
import { decodeFrames } from './goim.js';

export const text = (bytes) => new TextDecoder().decode(bytes);

export function int32(n) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setInt32(0, n);
  return out;
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A WebSocket stand-in the test drives from the "server" side. */
export function fakeWebSocketClass() {
  class FakeWebSocket {
    static instances = [];
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.binaryType = 'blob';
      this.sent = [];
      this.closedWith = null;
      FakeWebSocket.instances.push(this);
    }
    send(data) {
      assert.equal(this.readyState, 1, 'send on an open socket only');
      assert.ok(data instanceof Uint8Array);
      const frames = decodeFrames(data, { unpackRaw: false });
      assert.equal(frames.length, 1, 'one goim frame per WebSocket message');
      this.sent.push(frames[0]);
    }
    close(code = 1005, reason = '') {
      if (this.readyState >= 2) return;
      this.closedWith = { code, reason };
      this.readyState = 2;
      setTimeout(() => this.serverClose(code, true), 1);
    }
    // --- the server's side ---
    serverOpen() {
      this.readyState = 1;
      this.onopen?.({});
    }
    serverSend(bytes) {
      // A fresh ArrayBuffer, as a browser delivers with binaryType 'arraybuffer'.
      this.onmessage?.({ data: bytes.slice().buffer });
    }
    serverClose(code = 1006, wasClean = false) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.onclose?.({ code, reason: '', wasClean });
    }
    sentOps() {
      return this.sent.map((f) => f.op);
    }
  }
  return FakeWebSocket;
}

/** Resolves with the detail of the next `type` event. */
export async function next(target, type) {
  const [event] = await once(target, type);
  return event.detail;
}

/** Polls until `check()` is truthy (max 2 s). */
export async function until(check, what) {
  const end = Date.now() + 2000;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

export const FAST_BACKOFF = { base_delay: 0.01, factor: 2, jitter: 0, max_delay: 0.05 };
