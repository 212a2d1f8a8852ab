// The client library under faults, against the real gateway on loopback:
// a publisher streaming 200 messages/s and 20 subscribers, the library's
// contract checked message by message (fleet.mjs). Each test reports, as
// diagnostics: published, delivered, gaps announced, duplicates, and the
// time from the fault to each recovered client's first message after it.
import assert from "node:assert/strict";
import { after, afterEach, test } from "node:test";
import { Gateway, Redis, Relay, hs256, makeSecret, stopAll, tmpDir, waitFor } from "./harness.mjs";
import { Publisher, Subscriber, closeAll, summary, waitCaughtUp } from "./fleet.mjs";

const RATE = 200;
const CLIENTS = 20;
const reports = [];

afterEach(async () => {
  await closeAll();
  await stopAll();
});
after(() => {
  // One line per scenario, also collected by tools/test's log.
  for (const r of reports) console.log(`client-recovery ${JSON.stringify(r)}`);
});

async function fleet(subUrls, pubUrls, opts = {}) {
  const pub = new Publisher(pubUrls, opts.pub);
  const subs = Array.from({ length: CLIENTS }, () => new Subscriber(subUrls, opts.sub));
  await waitFor(() => subs.every((s) => s.sub.epoch !== null) && pub.client.state === "open",
    10000, "every client connected and subscribed");
  return { pub, subs };
}

function fault(subs) {
  const t = Date.now();
  for (const s of subs) s.markFault(t);
  return t;
}

async function finish(t, name, pub, subs) {
  await pub.settle();
  await waitCaughtUp(subs, pub);
  const problems = subs.flatMap((s, i) => s.check(pub).map((p) => `subscriber ${i}: ${p}`));
  const r = summary(name, pub, subs);
  reports.push(r);
  t.diagnostic(JSON.stringify(r));
  await closeAll();
  assert.deepEqual(problems, [], "the contract held for every subscriber");
  assert.equal(r.duplicates, 0);
  assert.ok(r.published >= RATE * 2, `published ${r.published}`);
  return r;
}

function workerServing(doc) {
  return doc.workers.reduce((a, b) => (b.connections > a.connections ? b : a));
}

test("SIGKILL of the worker serving the subscribers, mid-stream", { timeout: 120000 }, async (t) => {
  const gw = await (await Gateway.create(tmpDir("kill"), { workers: 2 })).start();
  const { pub, subs } = await fleet([gw.url], [gw.url]);
  await pub.stream(RATE, 1500);
  const victim = workerServing(await gw.detailed());
  assert.ok(victim.connections > 0);
  fault(subs);
  process.kill(victim.pid, "SIGKILL");
  await pub.stream(RATE, 2500);
  const r = await finish(t, "sigkill-worker", pub, subs);
  assert.ok(r.recovered_clients > 0, "clients of the killed worker reconnected");
  assert.equal(r.gap_seqs, 0, "history covered the outage");
});

test("SIGHUP lowering workers: retired workers send reconnect + 1012", { timeout: 120000 }, async (t) => {
  const gw = await (await Gateway.create(tmpDir("hup"), { workers: 2, drain_window: 1 })).start();
  const { pub, subs } = await fleet([gw.url], [gw.url]);
  await pub.stream(RATE, 1500);
  fault(subs);
  gw.writeConfig({ workers: 1 });
  gw.signal("SIGHUP");
  await pub.stream(RATE, 3000);
  const r = await finish(t, "sighup-fewer-workers", pub, subs);
  assert.ok(r.recovered_clients > 0, "clients of the retired worker reconnected");
  assert.equal(r.gap_seqs, 0);
  const doc = await gw.detailed();
  assert.equal(doc.workers.filter((w) => w.state === "running").length, 1);
});

test("SIGTERM drain of one gateway; a second (cluster, shared Redis) takes the clients", { timeout: 120000 }, async (t) => {
  const redis = await Redis.start(tmpDir("redis"));
  const cfg = { workers: 2, broker: [redis.url], stream_memory: 16 << 20, max_streams: 64,
    drain_window: 1, shutdown_timeout: 10 };
  const a = await (await Gateway.create(tmpDir("a"), cfg)).start();
  const b = await (await Gateway.create(tmpDir("b"), cfg)).start();
  const { pub, subs } = await fleet([a.url, b.url], [b.url]);
  await pub.stream(RATE, 1500);
  fault(subs);
  a.signal("SIGTERM");
  await pub.stream(RATE, 3000);
  const r = await finish(t, "drain-to-second-gateway", pub, subs);
  assert.equal(r.recovered_clients, CLIENTS, "every subscriber moved to the second gateway");
  assert.equal(r.gap_seqs, 0);
  const exit = await a.exited;
  assert.equal(exit.code, 0);
});

test("silent network cut: the ping timeout notices and the client recovers", { timeout: 120000 }, async (t) => {
  const gw = await (await Gateway.create(tmpDir("cut"), { workers: 2 })).start();
  const relay = await Relay.start(gw.port);
  const { pub, subs } = await fleet([relay.url], [gw.url],
    { sub: { pingIntervalMs: 300, pongTimeoutMs: 300 } });
  await pub.stream(RATE, 1500);
  fault(subs);
  relay.cut();
  await pub.stream(RATE, 2500);
  const r = await finish(t, "silent-cut", pub, subs);
  assert.equal(r.recovered_clients, CLIENTS);
  assert.equal(r.gap_seqs, 0);
  // Noticed through the ping, not earlier (nothing told the client).
  assert.ok(r.recovery_p50_ms >= 300, `recovered after ${r.recovery_p50_ms} ms`);
});

test("token expiry: short-lived tokens refreshed with auth, never closed 1008", { timeout: 120000 }, async (t) => {
  const dir = tmpDir("jwt");
  const { secret, file } = makeSecret(dir);
  const gw = await (await Gateway.create(dir, { workers: 2, auth_mode: "jwt",
    jwt_algorithms: ["HS256"], jwt_key_file: file })).start();
  let issued = 0;
  const token = async () => {
    issued++;
    const now = Math.floor(Date.now() / 1000);
    return hs256({ sub: "dashboard-1", iat: now, exp: now + 3,
      streams: { subscribe: ["patient/*"], publish: ["patient/*"] } }, secret);
  };
  const { pub, subs } = await fleet([gw.url], [gw.url], { sub: { token }, pub: { token } });
  await pub.stream(RATE, 7000);
  const r = await finish(t, "token-expiry", pub, subs);
  for (const s of [...subs, pub]) {
    assert.deepEqual(s.client.stats.reconnects, 0, "never reconnected");
    assert.ok(s.client.stats.tokenRefreshes >= 2, `refreshed ${s.client.stats.tokenRefreshes} times`);
  }
  for (const s of subs) assert.deepEqual(s.errors.map((e) => e.code), []);
  assert.equal(r.gap_seqs, 0);
  assert.ok(issued >= (CLIENTS + 1) * 3);
});

test("history outrun: onGap reports exactly the missing range", { timeout: 120000 }, async (t) => {
  const history = 50;
  const gw = await (await Gateway.create(tmpDir("outrun"), { workers: 2, history_size: history })).start();
  const relay = await Relay.start(gw.port);
  const { pub, subs } = await fleet([relay.url], [gw.url]);
  await pub.stream(RATE, 1000);
  fault(subs);
  relay.refuse();
  const before = subs.map((s) => s.pos);
  await pub.stream(RATE, 1500);
  relay.restore();
  await pub.stream(RATE, 2000);
  const r = await finish(t, "history-outrun", pub, subs);
  subs.forEach((s, i) => {
    assert.equal(s.gaps.length, 1, `subscriber ${i}: one gap`);
    const g = s.gaps[0];
    assert.equal(g.from, before[i] + 1, "the gap starts right after the last message seen");
    // What follows the gap is the first message the gateway still held,
    // and it was delivered: nothing more, nothing less is announced.
    assert.ok(s.msgs.has(`0:${g.to + 1}`), "the gap ends right before a delivered message");
    assert.ok(g.to - g.from + 1 >= RATE - history, `gap of ${g.to - g.from + 1}`);
  });
  assert.equal(r.recovered_clients, CLIENTS);
});

test("Redis restarted without persistence: onReset with the new epoch", { timeout: 120000 }, async (t) => {
  const rdir = tmpDir("redis");
  const redis = await Redis.start(rdir);
  const cfg = { workers: 2, broker: [redis.url], stream_memory: 16 << 20, max_streams: 64 };
  const gw = await (await Gateway.create(tmpDir("gw"), cfg)).start();
  const { pub, subs } = await fleet([gw.url], [gw.url]);
  const oldEpoch = subs[0].sub.epoch;
  await pub.stream(RATE, 1500);
  fault(subs);
  await redis.stop();
  await pub.stream(RATE, 1000);
  // Everything acknowledged from now on is of the new Redis's sequence.
  await pub.settle();
  pub.newEpoch();
  await Redis.start(rdir, redis.port);
  await pub.stream(RATE, 3000);
  const r = await finish(t, "redis-restart", pub, subs);
  const newSeqs = [...pub.acked.values()].filter((a) => a.epoch === 1).map((a) => a.seq);
  assert.equal(Math.min(...newSeqs), 1, "the new Redis started the sequence again");
  const epochs = new Set(subs.map((s) => s.sub.epoch));
  assert.equal(epochs.size, 1, "every subscriber on the same new epoch");
  assert.notEqual([...epochs][0], oldEpoch);
  for (const s of subs) assert.equal(s.resets.at(-1), s.sub.epoch);
  assert.equal(r.recovered_clients, CLIENTS);
  assert.ok(pub.refused.get("unavailable") > 0, "publishes were refused during the outage");
});
