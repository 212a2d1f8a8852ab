// The ward wall: one panel per stream, lead II swept left to right at
// 25 mm/s like a bedside monitor, on the wsgate client library (which
// reconnects and resumes by itself, and announces what it cannot deliver).
//
// Samples are placed by their own timestamps (data.t0 + i / rate_hz), not by
// when they arrive: a burst replayed after a reconnect lands where it
// belongs. A `gap` is drawn as a red mark where the trace resumes; a stream
// silent for more than 2 s shows NO SIGNAL. Each panel also keeps its counts
// in data-* attributes (received, first/last seq, gaps, first drawn), which
// tests and curious operators can read from the DOM.

import { WsgateClient } from "./wsgate.js";

const PX_PER_MM = 96 / 25.4;            // CSS pixels
const PX_PER_MS = (25 * PX_PER_MM) / 1000; // 25 mm/s
const PX_PER_MV = 10 * PX_PER_MM;          // 10 mm/mV
const BASELINE = 0.62;                     // of the trace's height
const ERASE_PX = 12;                       // cleared ahead of the sweep
const JOIN_MS = 100;                       // samples further apart are not joined
const NO_SIGNAL_MS = 2000;
const TEXT_EVERY_MS = 250;
const FRAME_MS = 1000 / 30;
const MAX_STREAMS = 64;                    // the gateway's default max_subscriptions
const LEAD = "II";
const TRACE_COLOR = "#33ff66";
const GAP_COLOR = "#ff3030";

const $ = (id) => document.getElementById(id);

// ---- one stream's trace ---------------------------------------------------

class Trace {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.pending = []; // {t, mv} samples and {gap} marks, in arrival order
    this.marks = []; // gap marks on screen: {t, lost, until}
    this.resize();
  }

  resize() {
    const r = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.w = Math.max(1, r.width);
    this.h = Math.max(1, r.height);
    this.canvas.width = Math.round(this.w * dpr);
    this.canvas.height = Math.round(this.h * dpr);
    this.ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    this.periodMs = this.w / PX_PER_MS;
    this.prev = null; // the last sample drawn: {t, x, y}
  }

  // A hidden tab gets no animation frames while messages keep coming:
  // keep at most two sweeps of samples waiting (older ones would only be
  // drawn over), and every gap mark.
  bound(rateHz) {
    const keep = Math.ceil((2 * this.periodMs * rateHz) / 1000);
    if (this.pending.length <= 2 * keep) return;
    const cut = this.pending.length - keep;
    this.pending = this.pending.slice(0, cut).filter((it) => it.gap).concat(this.pending.slice(cut));
    this.prev = null;
  }

  x(t) {
    const p = this.periodMs;
    return (((t % p) + p) % p) * PX_PER_MS;
  }

  y(mv) {
    return this.h * BASELINE - mv * PX_PER_MV;
  }

  // Clear from x0 (exclusive) over `span` pixels plus the erase bar, going
  // right and wrapping at the edge.
  clearAhead(x0, span) {
    const ctx = this.ctx;
    const len = span + ERASE_PX;
    if (len >= this.w) {
      ctx.clearRect(0, 0, this.w, this.h);
      return;
    }
    const from = x0 + 1;
    const first = Math.min(len, this.w - from);
    if (first > 0) ctx.clearRect(from, 0, first, this.h);
    if (first < len) ctx.clearRect(Math.max(0, from - this.w + Math.max(first, 0)), 0,
      len - Math.max(first, 0), this.h);
  }

  // Draw what arrived since the last frame. Returns the number of samples drawn.
  draw(now) {
    const items = this.pending;
    if (items.length === 0) return 0;
    this.pending = [];
    const ctx = this.ctx;
    let startT = this.prev ? this.prev.t : null;
    let lastT = startT;
    for (const it of items) {
      if (it.gap) continue;
      if (startT === null) startT = it.t;
      if (lastT === null || it.t > lastT) lastT = it.t;
    }
    if (startT === null) {
      this.pending = items; // only gap marks: wait for the samples after them
      return 0;
    }
    this.clearAhead(this.x(startT) - (this.prev ? 0 : 1), (lastT - startT) * PX_PER_MS);

    let marks = [];
    let prev = this.prev;
    let drawn = 0;
    ctx.beginPath();
    for (const it of items) {
      if (it.gap) {
        marks.push(it.gap);
        prev = null; // never join across what was lost
        continue;
      }
      const x = this.x(it.t);
      const y = this.y(it.mv);
      if (marks.length) {
        // Shown at least one sweep's worth of wall time, even when a
        // replay sweeps the screen several times in one frame.
        const lost = marks.reduce((n, g) => n + Math.max(0, g.to - g.from + 1), 0);
        this.marks.push({ t: it.t, lost, until: now + this.periodMs });
        marks = [];
      }
      if (prev && it.t > prev.t && it.t - prev.t <= JOIN_MS) {
        ctx.moveTo(prev.x, prev.y);
        if (x >= prev.x) {
          ctx.lineTo(x, y);
        } else {
          ctx.lineTo(x + this.w, y);
          ctx.moveTo(prev.x - this.w, prev.y);
          ctx.lineTo(x, y);
        }
      }
      prev = { t: it.t, x, y };
      drawn++;
    }
    ctx.strokeStyle = TRACE_COLOR;
    ctx.lineWidth = 1.5;
    ctx.lineJoin = "round";
    ctx.stroke();
    this.prev = prev;
    if (marks.length) this.pending = marks.map((gap) => ({ gap }));
    // The trace may have been drawn over the marks: put them back on top,
    // and retire those the sweep has passed (in stream and in wall time).
    this.marks = this.marks.filter((m) => now < m.until || !prev || prev.t - m.t < this.periodMs);
    for (const m of this.marks) this.drawGapMark(this.x(m.t), m.lost);
    return drawn;
  }

  drawGapMark(x, lost) {
    const ctx = this.ctx;
    ctx.save();
    ctx.strokeStyle = GAP_COLOR;
    ctx.fillStyle = GAP_COLOR;
    ctx.lineWidth = 2;
    ctx.setLineDash([4, 3]);
    ctx.beginPath();
    ctx.moveTo(x, 0);
    ctx.lineTo(x, this.h);
    ctx.stroke();
    ctx.font = "bold 12px system-ui, sans-serif";
    ctx.fillText(lost > 0 ? `GAP ${lost}` : "RESET", Math.min(x + 4, this.w - 60), 14);
    ctx.restore();
  }
}

// ---- one panel ------------------------------------------------------------

class Panel {
  constructor(stream) {
    this.stream = stream;
    const el = $("panel-template").content.firstElementChild.cloneNode(true);
    this.el = el;
    el.dataset.stream = stream;
    el.querySelector(".name").textContent = stream;
    this.stateEl = el.querySelector(".state");
    this.seqEl = el.querySelector(".seq");
    this.rateEl = el.querySelector(".rate");
    this.gapsEl = el.querySelector(".gaps");
    this.received = 0;
    this.firstSeq = null;
    this.lastSeq = null;
    this.gaps = 0;
    this.gapSeqs = 0;
    this.resets = 0;
    this.arrivals = []; // performance.now() of the last second's messages
    this.lastArrival = null;
    this.maxStallMs = 0;
    this.firstDrawnMs = null;
    this.refused = null;
    this.sub = null;
    this.trace = null;
    this.textAt = 0;
  }

  attach(container) {
    container.appendChild(this.el);
    this.trace = new Trace(this.el.querySelector("canvas"));
    this.createdAt = performance.now();
  }

  onMessage({ seq, ts, data }) {
    const now = performance.now();
    if (this.lastArrival !== null) this.maxStallMs = Math.max(this.maxStallMs, now - this.lastArrival);
    this.lastArrival = now;
    this.arrivals.push(now);
    while (now - this.arrivals[0] > 1000) this.arrivals.shift();
    this.received++;
    if (this.firstSeq === null) this.firstSeq = seq;
    this.lastSeq = seq;
    const leads = data && typeof data === "object" ? data.leads : null;
    const samples = leads && (leads[LEAD] || Object.values(leads)[0]);
    if (!Array.isArray(samples)) return;
    const rate = Number(data.rate_hz) > 0 ? Number(data.rate_hz) : 500;
    const t0 = Number.isFinite(data.t0) ? data.t0 : ts;
    for (let i = 0; i < samples.length; i++) {
      const mv = Number(samples[i]);
      if (Number.isFinite(mv)) this.trace.pending.push({ t: t0 + (i * 1000) / rate, mv });
    }
    this.trace.bound(rate);
  }

  onGap({ from, to }) {
    this.gaps++;
    this.gapSeqs += to - from + 1;
    this.lastSeq = to;
    this.trace.pending.push({ gap: { from, to } });
  }

  onReset() {
    this.resets++;
    this.trace.pending.push({ gap: { from: 0, to: -1 } });
  }

  state(conn, now) {
    if (this.refused) return "refused";
    if (conn === "reconnecting" || conn === "connecting") return "reconnecting";
    const since = this.lastArrival ?? this.createdAt;
    if (now - since > NO_SIGNAL_MS) return "nosignal";
    return this.lastArrival === null ? "waiting" : "live";
  }

  frame(now, conn) {
    if (this.trace.draw(now) > 0) {
      if (this.firstDrawnMs === null) this.firstDrawnMs = now;
      this.lastDrawnMs = now;
    }
    while (this.arrivals.length && now - this.arrivals[0] > 1000) this.arrivals.shift();
    const st = this.state(conn, now);
    if (this.el.dataset.state !== st) {
      this.el.dataset.state = st;
      this.stateEl.textContent = st === "nosignal" ? "NO SIGNAL"
        : st === "refused" ? `refused: ${this.refused}` : st;
    }
    if (now - this.textAt >= TEXT_EVERY_MS) {
      this.textAt = now;
      this.seqEl.textContent = `seq ${this.lastSeq ?? "–"}`;
      this.rateEl.textContent = `${this.arrivals.length} msg/s`;
      this.gapsEl.textContent = this.gaps ? `gaps ${this.gaps} (${this.gapSeqs} lost)` : "";
      const d = this.el.dataset;
      d.subscribed = this.sub && this.sub.seq !== null ? "1" : "0";
      d.received = this.received;
      d.firstSeq = this.firstSeq ?? "";
      d.lastSeq = this.lastSeq ?? "";
      d.gaps = this.gaps;
      d.gapSeqs = this.gapSeqs;
      d.resets = this.resets;
      d.firstDrawnMs = this.firstDrawnMs === null ? "" : Math.round(this.firstDrawnMs);
      d.lastDrawnMs = this.firstDrawnMs === null ? "" : Math.round(this.lastDrawnMs);
      d.maxStallMs = Math.round(this.maxStallMs);
    }
  }
}

// ---- the wall -------------------------------------------------------------

let client = null;
let panels = [];
let conn = "connecting";
let reconnects = 0;

function parseStreams(text) {
  const out = [];
  for (const s of (text || "").split(",")) {
    const name = s.trim();
    if (name && !out.includes(name)) out.push(name);
  }
  return out.slice(0, MAX_STREAMS);
}

function say(text) {
  const m = $("message");
  m.textContent = text || "";
  m.hidden = !text;
}

function setConn(s) {
  conn = s;
  if (s === "reconnecting") reconnects++;
  document.body.dataset.conn = s;
  document.body.dataset.reconnects = reconnects;
  document.body.dataset.connHistory = (document.body.dataset.connHistory
    ? document.body.dataset.connHistory + "," : "") + s;
  $("conn").textContent = s;
}

function start(streams, token) {
  if (client) client.close();
  panels = [];
  const wall = $("wall");
  wall.replaceChildren();
  if (streams.length === 0) {
    say("Name the streams to show, e.g. patient/1/ecg, patient/2/ecg.");
    return;
  }
  say("");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  client = new WsgateClient(`${scheme}//${location.host}/ws`, {
    token: token ? () => token : undefined,
    // A wall on the ward comes back quickly, and notices a dead line soon.
    backoff: { initialMs: 250, maxMs: 5000 },
    pingIntervalMs: 5000,
    pongTimeoutMs: 5000,
  });
  client.on("state", setConn);
  client.on("error", (e) => {
    document.body.dataset.errors = Number(document.body.dataset.errors || 0) + 1;
    const p = e.stream && panels.find((x) => x.stream === e.stream);
    if (p && (e.code === "forbidden" || e.code === "bad_request")) p.refused = e.code;
    say(`${e.stream ? e.stream + ": " : ""}${e.code}: ${e.message}`);
  });
  for (const stream of streams) {
    const p = new Panel(stream);
    p.attach(wall);
    p.sub = client.subscribe(stream, {
      onMessage: (m) => p.onMessage(m),
      onGap: (g) => p.onGap(g),
      onReset: (r) => p.onReset(r),
    });
    panels.push(p);
  }
}

let lastFrame = 0;
function frame() {
  const now = performance.now();
  if (now - lastFrame >= FRAME_MS - 2) {
    lastFrame = now;
    for (const p of panels) p.frame(now, conn);
  }
  requestAnimationFrame(frame);
}

async function authMode() {
  try {
    const r = await fetch("/view/config.json", { cache: "no-store" });
    return (await r.json()).auth_mode;
  } catch {
    return "none";
  }
}

async function main() {
  const streams = parseStreams(new URLSearchParams(location.search).get("streams"));
  $("streams").value = streams.join(", ");
  const jwt = (await authMode()) === "jwt";
  $("token-field").hidden = !jwt;
  $("pick").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const chosen = parseStreams($("streams").value);
    // The token stays in this page's memory: never in the URL or storage.
    const token = $("token").value.trim();
    if (jwt && !token) {
      say("This gateway needs a token: paste one (it is sent as access_token).");
      return;
    }
    const q = chosen.length ? `?streams=${chosen.map((s) => encodeURIComponent(s).replace(/%2F/g, "/")).join(",")}` : "";
    history.replaceState(null, "", location.pathname + q);
    start(chosen, token);
  });
  window.addEventListener("resize", () => panels.forEach((p) => p.trace.resize()));
  requestAnimationFrame(frame);
  if (jwt) {
    say("This gateway needs a token: paste one and press Show.");
    document.body.dataset.conn = "token";
    $("conn").textContent = "token needed";
    return;
  }
  start(streams);
}

main();
