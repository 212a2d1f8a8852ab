// The client library's connection policy against the real gateway: several
// URLs, close codes that must not loop (1003, 1008 with a token that cannot
// be refreshed), a publish whose connection breaks before its ack, unsubscribe.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import WebSocket from "ws";
import { client as makeClient, closeClients } from "./fleet.mjs";
import { Gateway, Relay, SLOW, freePort, hs256, makeSecret, sleep, stopAll, tmpDir, waitFor } from "./harness.mjs";

afterEach(async () => {
  closeClients();
  await stopAll();
});

const opened = (client) => waitFor(() => client.state === "open", 10000, "the client to open");

test("several URLs: a refused one is skipped for the next", { timeout: 60000 }, async () => {
  const gw = await (await Gateway.create(tmpDir("urls"))).start();
  const dead = `ws://127.0.0.1:${await freePort()}/ws`;
  const client = makeClient([dead, gw.url], { WebSocket, backoff: { initialMs: 50, maxMs: 200 } });
  const got = [];
  client.subscribe("patient/9/ecg", { onMessage: (m) => got.push(m.seq) });
  await opened(client);
  const { seq } = await client.publish("patient/9/ecg", { v: 1 });
  assert.equal(seq, 1);
  await waitFor(() => got.length === 1, 5000, "the message");
  assert.deepEqual(got, [1]);
  assert.equal(client.stats.connects, 2);
  client.close();
  assert.equal(client.state, "closed");
});

test("a publish whose connection breaks before its ack rejects outcome_unknown", { timeout: 60000 }, async () => {
  const gw = await (await Gateway.create(tmpDir("unknown"))).start();
  const relay = await Relay.start(gw.port);
  const client = makeClient(relay.url, { WebSocket, pingIntervalMs: 200, pongTimeoutMs: 200,
    backoff: { initialMs: 50, maxMs: 200 } });
  await opened(client);
  assert.equal((await client.publish("patient/9/ecg", 1)).seq, 1);
  relay.cut();
  const err = await client.publish("patient/9/ecg", 2).catch((e) => e);
  assert.equal(err.code, "outcome_unknown", String(err));
  // The line was silent: the gateway never got it. After the reconnect the
  // next publish is acknowledged with the next seq.
  await opened(client);
  assert.equal((await client.publish("patient/9/ecg", 3)).seq, 2);
  client.close();
});

test("close 1003 (the client sent binary) is reported and not retried", { timeout: 60000 }, async () => {
  const gw = await (await Gateway.create(tmpDir("binary"))).start();
  // A broken WebSocket that sends text as binary frames: the gateway closes 1003.
  class BinaryWS extends WebSocket {
    send(data) { super.send(Buffer.from(data)); }
  }
  const client = makeClient(gw.url, { WebSocket: BinaryWS, backoff: { initialMs: 10, maxMs: 20 } });
  const errors = [];
  client.on("error", (e) => errors.push(e));
  client.subscribe("patient/9/ecg", {});
  await waitFor(() => client.state === "closed", 5000, "the client to give up");
  await sleep(300 * SLOW);
  assert.equal(client.stats.connects, 1, "no reconnect loop");
  assert.deepEqual(errors.map((e) => [e.code, e.closeCode]), [["protocol_error", 1003]]);
});

test("1008 with a token that cannot be refreshed: reported, no reconnect loop", { timeout: 60000 }, async () => {
  const dir = tmpDir("static");
  const { secret, file } = makeSecret(dir);
  const gw = await (await Gateway.create(dir, { auth_mode: "jwt", jwt_algorithms: ["HS256"],
    jwt_key_file: file })).start();
  const now = Math.floor(Date.now() / 1000);
  const token = hs256({ sub: "d", exp: now + 2, streams: { subscribe: ["patient/*"] } }, secret);
  const client = makeClient(gw.url, { WebSocket, token, backoff: { initialMs: 10, maxMs: 20 } });
  const errors = [];
  client.on("error", (e) => errors.push(e));
  await opened(client);
  await waitFor(() => client.state === "closed", 6000, "the expiry close");
  assert.equal(client.stats.connects, 1);
  assert.deepEqual(errors.map((e) => [e.code, e.closeCode]), [["policy", 1008]]);
  assert.match(errors[0].message, /token expired/);
});

test("unsubscribe stops delivery; the connection stays", { timeout: 60000 }, async () => {
  const gw = await (await Gateway.create(tmpDir("unsub"))).start();
  const client = makeClient(gw.url, { WebSocket });
  const got = [];
  const sub = client.subscribe("patient/9/ecg", { onMessage: (m) => got.push(m.seq) });
  await waitFor(() => sub.epoch !== null, 5000, "subscribed");
  await client.publish("patient/9/ecg", 1);
  await waitFor(() => got.length === 1, 5000, "first message");
  sub.unsubscribe();
  await client.publish("patient/9/ecg", 2);
  await client.publish("patient/9/ecg", 3);
  await sleep(200 * SLOW);
  assert.deepEqual(got, [1]);
  assert.equal(client.state, "open");
  const again = client.subscribe("patient/9/ecg", { since: 1, onMessage: (m) => got.push(m.seq) });
  await waitFor(() => got.length === 3, 5000, "the replay after since");
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(again.seq, 3);
  client.close();
});
