// A publisher streaming at a fixed rate and a fleet of subscribers, all
// WsgateClients, with the library's contract checked message by message:
// per subscription, each seq at most once and in increasing order, every
// seq not delivered announced by onGap or voided by onReset, and every
// delivered message the one the publisher was acknowledged for that
// (epoch, seq).
import WebSocket from "ws";
import { WsgateClient } from "../wsgate.js";
import { SLOW, sleep, waitFor } from "./harness.mjs";

export const STREAM = "patient/1/ecg";

// Every client a test made, so that a failed test still closes them all
// (their reconnect timers would keep the test process alive).
const clients = new Set();
export function client(urls, opts) {
  const c = new WsgateClient(urls, { WebSocket, ...opts });
  clients.add(c);
  return c;
}
export function closeClients() {
  for (const c of clients) c.close();
  clients.clear();
}

export class Publisher {
  constructor(urls, opts = {}) {
    this.client = client(urls, { backoff: { initialMs: 50, maxMs: 500 },
      publishTimeoutMs: 5000, ...opts });
    // The stream's epoch as an index: the test moves it on when it makes the
    // sequence restart (acks on one connection need not come in seq order).
    this.epoch = 0;
    this.acked = new Map(); // k -> {epoch: index, seq}
    this.bySeq = new Map(); // "epoch:seq" -> k
    this.unknown = new Set(); // k whose outcome is unknown
    this.unavailable = new Set(); // k refused "unavailable" by the gateway
    this.refused = new Map(); // code -> count
    this.lastSeq = 0; // highest acked seq in the current epoch
    this.sent = 0;
    this.inflight = new Set();
  }

  // Publish `rate` messages per second for `ms` milliseconds; while
  // `during` runs (the fault), keep going.
  async stream(rate, ms) {
    const t0 = Date.now();
    const start = this.sent;
    while (Date.now() - t0 < ms) {
      const due = Math.floor(((Date.now() - t0) * rate) / 1000) - (this.sent - start);
      for (let i = 0; i < due; i++) this.publishOne();
      await sleep(10);
    }
  }

  publishOne() {
    const k = this.sent++;
    const p = this.client.publish(STREAM, { k, t: Date.now() }).then(({ seq }) => {
      this.lastSeq = Math.max(this.lastSeq, seq);
      this.acked.set(k, { epoch: this.epoch, seq });
      this.bySeq.set(`${this.epoch}:${seq}`, k);
    }, (e) => {
      if (e.code === "outcome_unknown") this.unknown.add(k);
      // The gateway's own unknown: a Redis that stored the message and died
      // before answering. Counted, not held against the client library.
      if (e.code === "unavailable") this.unavailable.add(k);
      this.refused.set(e.code, (this.refused.get(e.code) || 0) + 1);
    });
    this.inflight.add(p);
    p.finally(() => this.inflight.delete(p));
  }

  newEpoch() {
    this.epoch++;
    this.lastSeq = 0;
  }

  async settle() {
    await Promise.all([...this.inflight]);
  }
}

export class Subscriber {
  constructor(urls, opts = {}) {
    this.delivered = 0;
    this.duplicates = 0;
    this.violations = [];
    this.gaps = [];
    this.resets = [];
    this.epoch = 0; // how many resets seen
    this.pos = 0;
    this.msgs = new Map(); // "epoch:seq" -> k
    this.finalPos = [0]; // per epoch index: the last position in it
    this.faultAt = 0;
    this.interrupted = false;
    this.recoveryMs = null;
    this.states = [];
    this.errors = [];
    this.client = client(urls, { backoff: { initialMs: 100, maxMs: 1000 }, ...opts });
    this.client.on("state", (s) => {
      this.states.push(s);
      if (s === "reconnecting" && this.faultAt) this.interrupted = true;
    });
    this.client.on("error", (e) => this.errors.push(e));
    this.sub = this.client.subscribe(STREAM, {
      since: 0,
      onMessage: (m) => this.onMessage(m),
      onGap: (g) => this.onGap(g),
      onReset: (r) => this.onReset(r),
    });
  }

  onMessage(m) {
    if (m.seq <= this.pos) this.duplicates++;
    if (m.seq !== this.pos + 1) this.violations.push(`message ${m.seq} after position ${this.pos}`);
    this.pos = m.seq;
    this.finalPos[this.epoch] = m.seq;
    this.delivered++;
    this.msgs.set(`${this.epoch}:${m.seq}`, m.data.k);
    if (this.interrupted && this.recoveryMs === null) {
      this.recoveryMs = Date.now() - this.faultAt;
      this.interrupted = false;
    }
  }

  onGap(g) {
    if (g.from !== this.pos + 1 || g.to < g.from) this.violations.push(`gap ${g.from}-${g.to} after position ${this.pos}`);
    this.gaps.push({ epoch: this.epoch, from: g.from, to: g.to });
    this.pos = g.to;
    this.finalPos[this.epoch] = g.to;
  }

  onReset(r) {
    this.resets.push(r.epoch);
    this.epoch++;
    this.pos = 0;
    this.finalPos[this.epoch] = 0;
    if (this.faultAt) this.interrupted = true;
  }

  markFault(t) { this.faultAt = t; }

  // Check every message against the publisher's acknowledgements; returns
  // the list of problems (empty when the contract held).
  check(pub) {
    const problems = [...this.violations];
    if (this.duplicates) problems.push(`${this.duplicates} duplicates`);
    for (const [key, k] of this.msgs) {
      const claimed = pub.bySeq.get(key);
      if (claimed !== undefined && claimed !== k) problems.push(`${key} delivered k=${k}, acked for k=${claimed}`);
      const a = pub.acked.get(k);
      if (a && `${a.epoch}:${a.seq}` !== key) problems.push(`k=${k} delivered as ${key}, acked as ${a.epoch}:${a.seq}`);
      if (!a && pub.unavailable.has(k)) this.deliveredThoughRefused = (this.deliveredThoughRefused || 0) + 1;
      else if (!a && !pub.unknown.has(k)) problems.push(`k=${k} delivered as ${key} but its publish was refused`);
    }
    // Every acknowledged seq up to this subscriber's final position in its
    // epoch was delivered or announced as a gap.
    let voided = 0;
    for (const [k, a] of pub.acked) {
      const key = `${a.epoch}:${a.seq}`;
      if (this.msgs.has(key)) continue;
      if (a.seq > (this.finalPos[a.epoch] ?? 0)) { voided++; continue; }
      if (!this.gaps.some((g) => g.epoch === a.epoch && g.from <= a.seq && a.seq <= g.to)) {
        problems.push(`acked k=${k} (${key}) silently skipped`);
      }
    }
    this.voided = voided;
    return problems.slice(0, 10);
  }
}

// Wait until every subscriber has accounted for the publisher's last
// acknowledged seq in the publisher's last epoch.
export async function waitCaughtUp(subs, pub, timeoutMs = 15000) {
  await waitFor(() => subs.every((s) => s.epoch === pub.epoch && s.pos >= pub.lastSeq),
    timeoutMs, "subscribers to catch up").catch((e) => {
    const behind = subs.filter((s) => !(s.epoch === pub.epoch && s.pos >= pub.lastSeq))
      .map((s) => `epoch ${s.epoch}/${pub.epoch} pos ${s.pos}/${pub.lastSeq} state ${s.client.state}`);
    throw new Error(`${e.message}: ${behind.slice(0, 5).join("; ")}`);
  });
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

export function summary(name, pub, subs) {
  const rec = subs.map((s) => s.recoveryMs).filter((x) => x !== null).sort((a, b) => a - b);
  const gapSeqs = subs.reduce((n, s) => n + s.gaps.reduce((m, g) => m + g.to - g.from + 1, 0), 0);
  return {
    scenario: name,
    published: pub.acked.size,
    outcome_unknown: pub.unknown.size,
    refused: Object.fromEntries(pub.refused),
    subscribers: subs.length,
    delivered: subs.reduce((n, s) => n + s.delivered, 0),
    gaps_announced: subs.reduce((n, s) => n + s.gaps.length, 0),
    gap_seqs: gapSeqs,
    resets: subs.reduce((n, s) => n + s.resets.length, 0),
    voided_by_reset: subs.reduce((n, s) => n + (s.voided || 0), 0),
    duplicates: subs.reduce((n, s) => n + s.duplicates, 0),
    delivered_though_refused: subs.reduce((n, s) => n + (s.deliveredThoughRefused || 0), 0),
    recovered_clients: rec.length,
    recovery_p50_ms: percentile(rec, 50),
    recovery_p99_ms: percentile(rec, 99),
  };
}

export async function closeAll() {
  closeClients();
  await sleep(50 * SLOW);
}
