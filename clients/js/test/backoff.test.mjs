// Reconnect timing with an injected WebSocket constructor that never
// connects (no gateway needed): full-jitter exponential delays within
// [0, min(maxMs, initialMs * 2^attempt)), URLs tried in turn.
import assert from "node:assert/strict";
import { test } from "node:test";
import { WsgateClient } from "../wsgate.js";

function failingWebSocket(log) {
  return class {
    constructor(url) {
      log.push({ url, t: Date.now() });
      setTimeout(() => this.onclose && this.onclose({ code: 1006, reason: "" }), 1);
    }
    send() { throw new Error("not open"); }
    close() {}
  };
}

test("full-jitter backoff, capped, over every URL in turn", { timeout: 30000 }, async () => {
  const log = [];
  const client = new WsgateClient(["ws://a/ws", "ws://b/ws", "ws://c/ws"], {
    WebSocket: failingWebSocket(log), backoff: { initialMs: 20, maxMs: 160 },
  });
  const states = [];
  client.on("state", (s) => states.push(s));
  await new Promise((r) => setTimeout(r, 2500));
  client.close();
  assert.ok(log.length >= 12, `${log.length} attempts`);
  assert.deepEqual(log.slice(0, 6).map((x) => x.url),
    ["ws://a/ws", "ws://b/ws", "ws://c/ws", "ws://a/ws", "ws://b/ws", "ws://c/ws"]);
  const waits = log.slice(1).map((x, i) => x.t - log[i].t);
  // attempt n waits at most min(160, 20 * 2^n) (plus slack for a loaded machine); from the
  // fourth on, the cap: spread over [0, 160), not a fixed step.
  waits.forEach((w, n) => assert.ok(w <= Math.min(160, 20 * 2 ** n) + 150, `wait ${n}: ${w} ms`));
  const capped = waits.slice(4);
  assert.ok(Math.max(...capped) - Math.min(...capped) > 40, `jittered: ${capped}`);
  assert.deepEqual(states.slice(0, 2), ["connecting", "reconnecting"]);
  assert.equal(states.at(-1), "closed");
});

test("the server's reconnect.after_ms is followed instead of the backoff", { timeout: 30000 }, async () => {
  const log = [];
  let n = 0;
  class HintingWebSocket {
    constructor(url) {
      log.push({ url, t: Date.now() });
      const first = n++ === 0;
      setTimeout(() => {
        this.onopen();
        if (first) {
          this.onmessage({ data: JSON.stringify({ type: "reconnect", after_ms: 600, reason: "reload" }) });
          this.onclose({ code: 1012, reason: "reload" });
        }
      }, 1);
    }
    send() {}
    close() {}
  }
  const client = new WsgateClient(["ws://a/ws", "ws://b/ws"], {
    WebSocket: HintingWebSocket, backoff: { initialMs: 1, maxMs: 2 },
  });
  await new Promise((r) => setTimeout(r, 1000));
  client.close();
  assert.equal(log.length, 2);
  const wait = log[1].t - log[0].t;
  assert.ok(wait >= 590 && wait < 800, `waited ${wait} ms`);
  assert.equal(log[1].url, "ws://a/ws", "a reload keeps the same server");
});
