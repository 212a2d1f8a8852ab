// wsgate client library: a VitalStream WebSocket protocol v1 client that
// reconnects and resumes by itself.
//
// Contract (docs/PROTOCOL.md, section 11): for every subscription, across any number of
// reconnects, onMessage sees each seq at most once and in increasing order,
// and every seq it does not see is announced by onGap, or voided by onReset
// (the stream's epoch changed, after which seqs start again). The client
// keeps each subscription's position (epoch, seq) and resumes with `since`
// and `epoch`; whatever the server sends that does not continue the position
// exactly (a seq going back, a hole nobody announced) is never passed on:
// the subscription is re-established from its position instead, and the
// server's answer (replay, gap or new epoch) decides what the caller sees.
//
// No runtime dependencies; runs in browsers (global WebSocket) and in Node
// (pass a WebSocket constructor, e.g. the `ws` package's, as an option).

const SUBPROTOCOL = "vitalstream.v1";
const STATES = ["connecting", "open", "reconnecting", "closed"];
// Close codes that say this client sent something wrong: reconnecting would
// only repeat it.
const FATAL_CLOSE_CODES = new Set([1002, 1003, 1007]);
// Close codes after which the same server is the right one to come back to.
const SAME_SERVER_CLOSE_CODES = new Set([1012, 1013]);
// Refusals of a subscribe that may succeed later on the same connection.
const RETRYABLE_CODES = new Set(["unavailable", "capacity", "internal", "rate_limited"]);
const MAX_POLICY_CLOSES = 3;

export class WsgateError extends Error {
  constructor(code, message, extra) {
    super(message);
    this.name = "WsgateError";
    this.code = code;
    if (extra) Object.assign(this, extra);
  }
}

function jwtExpMs(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(b64 + "===".slice((b64.length + 3) % 4)));
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

// How long before a token's expiry to replace it: a fifth of what is left,
// between 1 s and 60 s.
function refreshMarginMs(remainingMs) {
  return Math.min(60000, Math.max(1000, remainingMs / 5));
}

class Subscription {
  constructor(client, stream, opts) {
    this._client = client;
    this.stream = stream;
    this._onMessage = opts.onMessage || (() => {});
    this._onGap = opts.onGap || (() => {});
    this._onReset = opts.onReset || (() => {});
    // Position: the last seq accounted for (delivered or announced as a
    // gap) within `epoch`. null until the server first tells us.
    this._seq = Number.isInteger(opts.since) && opts.since >= 0 ? opts.since : null;
    this._epoch = typeof opts.epoch === "string" ? opts.epoch : null;
    this._active = false; // subscribed on the current connection
    this._reqId = null;
    this._sentSince = false;
    this._closed = false;
    this._retryTimer = null;
  }

  get seq() { return this._seq; }
  get epoch() { return this._epoch; }

  unsubscribe() {
    if (this._closed) return;
    this._closed = true;
    this._client._dropSubscription(this);
  }
}

export class WsgateClient {
  constructor(urls, opts = {}) {
    this._urls = Array.isArray(urls) ? urls.slice() : [urls];
    if (this._urls.length === 0) throw new TypeError("WsgateClient: at least one URL");
    this._WS = opts.WebSocket || globalThis.WebSocket;
    if (typeof this._WS !== "function") {
      throw new TypeError("WsgateClient: no WebSocket constructor (pass opts.WebSocket in Node)");
    }
    this._token = opts.token;
    const b = opts.backoff || {};
    this._backoffInitial = b.initialMs ?? 250;
    this._backoffMax = b.maxMs ?? 30000;
    this._pingInterval = opts.pingIntervalMs ?? 15000;
    this._pongTimeout = opts.pongTimeoutMs ?? 10000;
    this._connectTimeout = opts.connectTimeoutMs ?? 10000;
    this._publishTimeout = opts.publishTimeoutMs ?? 10000;
    this._maxQueued = opts.maxQueuedPublishes ?? 1000;

    this._listeners = new Map();
    this._subs = new Map(); // stream -> Subscription
    this._pending = new Map(); // request id -> {kind, ...}
    this._queue = []; // publishes waiting for a connection
    this._nextId = 1;
    this._urlIndex = 0;
    this._attempt = 0;
    this._policyCloses = 0;
    this._conn = null;
    this._state = null;
    this._closing = false;
    this._reconnectTimer = null;
    this.stats = { connects: 0, reconnects: 0, resyncs: 0, tokenRefreshes: 0 };
    // Let callers attach listeners before the first state change.
    Promise.resolve().then(() => this._connect());
  }

  get state() { return this._state; }

  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    const set = this._listeners.get(event);
    if (set) set.delete(fn);
  }

  _emit(event, value) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(value); } catch (e) { this._report(e); }
    }
  }

  _report(e) {
    // A listener that throws must not break the connection's handling.
    if (typeof queueMicrotask === "function") queueMicrotask(() => { throw e; });
  }

  _setState(s) {
    if (this._state === s || !STATES.includes(s)) return;
    this._state = s;
    this._emit("state", s);
  }

  _error(code, message, extra) {
    this._emit("error", new WsgateError(code, message, extra));
  }

  // ---- public API -------------------------------------------------------

  subscribe(stream, opts = {}) {
    if (this._closing) throw new WsgateError("closed", "the client is closed");
    if (this._subs.has(stream)) {
      throw new WsgateError("bad_request", `already subscribed to ${stream}`);
    }
    const sub = new Subscription(this, stream, opts);
    this._subs.set(stream, sub);
    if (this._isOpen()) this._sendSubscribe(sub);
    return sub;
  }

  publish(stream, data) {
    return new Promise((resolve, reject) => {
      if (this._closing) {
        reject(new WsgateError("closed", "the client is closed: not published"));
        return;
      }
      const p = { kind: "publish", stream, data, resolve, reject, id: null, timer: null };
      p.timer = setTimeout(() => this._publishTimedOut(p), this._publishTimeout);
      if (this._isOpen()) {
        this._sendPublish(p);
      } else if (this._queue.length >= this._maxQueued) {
        clearTimeout(p.timer);
        reject(new WsgateError("unavailable",
          "not connected and maxQueuedPublishes are waiting: not published"));
      } else {
        this._queue.push(p);
      }
    });
  }

  close() {
    if (this._closing) return;
    this._closing = true;
    clearTimeout(this._reconnectTimer);
    for (const sub of this._subs.values()) clearTimeout(sub._retryTimer);
    this._subs.clear();
    this._failQueued("closed", "the client was closed before the publish was sent: not published");
    const conn = this._conn;
    if (conn) {
      this._teardown(conn);
      try { conn.ws.close(1000, "client closing"); } catch { /* already closed */ }
    }
    this._setState("closed");
  }

  // ---- connection -------------------------------------------------------

  _isOpen() {
    return this._conn !== null && this._conn.open;
  }

  async _connect() {
    if (this._closing) return;
    this._setState(this.stats.connects === 0 && this._state !== "reconnecting"
      ? "connecting" : "reconnecting");
    let token = null;
    if (typeof this._token === "function") {
      try {
        token = await this._token();
      } catch (e) {
        this._error("token", `the token function failed: ${e && e.message}`);
        this._scheduleReconnect(null, false);
        return;
      }
    } else if (typeof this._token === "string") {
      token = this._token;
    }
    if (this._closing) return;
    let url = this._urls[this._urlIndex % this._urls.length];
    if (token) url += (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token);
    let ws;
    try {
      ws = new this._WS(url, SUBPROTOCOL);
    } catch (e) {
      this._error("bad_url", `cannot open ${this._urls[this._urlIndex % this._urls.length]}: ${e.message}`);
      this._scheduleReconnect(null, true);
      return;
    }
    const conn = {
      ws, open: false, token, tokenExpMs: jwtExpMs(token), lastRx: Date.now(),
      pingSentAt: 0, pingId: null, hint: null, ticker: null, refreshTimer: null,
      connectTimer: null, openedAt: 0,
    };
    this._conn = conn;
    this.stats.connects++;
    conn.connectTimer = setTimeout(() => {
      this._lost(conn, 4000, "connect timeout");
    }, this._connectTimeout);
    ws.onopen = () => { if (this._conn === conn) this._opened(conn); };
    ws.onmessage = (ev) => { if (this._conn === conn) this._received(conn, ev.data); };
    ws.onerror = () => { /* the close event that follows decides */ };
    ws.onclose = (ev) => {
      if (this._conn === conn) this._lost(conn, ev.code, ev.reason || "");
    };
  }

  _opened(conn) {
    clearTimeout(conn.connectTimer);
    conn.open = true;
    conn.openedAt = Date.now();
    conn.lastRx = Date.now();
    this._attempt = 0;
    this._setState("open");
    const tick = Math.max(20, Math.min(this._pingInterval, this._pongTimeout) / 4);
    conn.ticker = setInterval(() => this._tick(conn), tick);
    this._scheduleRefresh(conn, conn.tokenExpMs);
    for (const sub of this._subs.values()) {
      if (this._conn !== conn) return; // the connection broke meanwhile
      this._sendSubscribe(sub);
    }
    while (this._queue.length && this._conn === conn) this._sendPublish(this._queue.shift());
  }

  _send(conn, msg) {
    if (!conn || this._conn !== conn) return false;
    try {
      conn.ws.send(JSON.stringify(msg));
      return true;
    } catch (e) {
      this._lost(conn, 4001, `send failed: ${e.message}`);
      return false;
    }
  }

  _tick(conn) {
    const now = Date.now();
    if (conn.pingId !== null) {
      if (conn.lastRx >= conn.pingSentAt) {
        conn.pingId = null;
      } else if (now - conn.pingSentAt >= this._pongTimeout) {
        this._lost(conn, 4002, "no answer to ping: connection presumed dead");
        return;
      }
    }
    if (conn.pingId === null && now - conn.lastRx >= this._pingInterval) {
      conn.pingId = this._nextId++;
      conn.pingSentAt = now;
      this._send(conn, { type: "ping", id: conn.pingId });
    }
  }

  // Stop everything tied to one connection: timers, in-flight requests,
  // subscriptions' liveness on it.
  _teardown(conn) {
    clearTimeout(conn.connectTimer);
    clearInterval(conn.ticker);
    clearTimeout(conn.refreshTimer);
    conn.ws.onopen = conn.ws.onmessage = conn.ws.onclose = null;
    conn.ws.onerror = () => {};
    if (this._conn === conn) this._conn = null;
    for (const sub of this._subs.values()) {
      sub._active = false;
      sub._reqId = null;
      clearTimeout(sub._retryTimer);
    }
    for (const [id, p] of this._pending) {
      this._pending.delete(id);
      if (p.kind === "publish") {
        clearTimeout(p.timer);
        p.reject(new WsgateError("outcome_unknown",
          "the connection broke before the publish was acknowledged: it may or may not have " +
          "been accepted", { stream: p.stream }));
      }
    }
  }

  _lost(conn, code, reason) {
    if (this._conn !== conn) return;
    const wasOpen = conn.open;
    const hint = conn.hint;
    this._teardown(conn);
    if (code >= 4000) {
      // Our own decision (dead line, timeout): drop the socket now, since a
      // closing handshake over a dead line would never finish.
      try {
        if (typeof conn.ws.terminate === "function") conn.ws.terminate();
        else conn.ws.close(4000, reason.slice(0, 100));
      } catch { /* already closed */ }
    }
    if (this._closing) return;
    if (FATAL_CLOSE_CODES.has(code)) {
      this._error("protocol_error",
        `the server closed the connection with ${code} (${reason}): not reconnecting`,
        { closeCode: code });
      this._closeAfterFatal();
      return;
    }
    if (code === 1008) {
      this._policyCloses++;
      this._error("policy", `the server closed the connection with 1008 (${reason})`,
        { closeCode: code });
      if (typeof this._token !== "function" || this._policyCloses >= MAX_POLICY_CLOSES) {
        this._closeAfterFatal();
        return;
      }
    } else if (wasOpen) {
      this._policyCloses = 0;
    }
    this.stats.reconnects++;
    if (hint && Number.isFinite(hint.afterMs)) {
      this._setState("reconnecting");
      clearTimeout(this._reconnectTimer);
      // A reload keeps the same server; a shutdown sends us elsewhere.
      if (hint.reason !== "reload") this._urlIndex++;
      this._reconnectTimer = setTimeout(() => this._connect(), Math.max(0, hint.afterMs));
      return;
    }
    this._scheduleReconnect(code, !SAME_SERVER_CLOSE_CODES.has(code));
  }

  _closeAfterFatal() {
    this._closing = true;
    this._subs.clear();
    this._failQueued("closed", "the client stopped reconnecting: not published");
    this._setState("closed");
  }

  _scheduleReconnect(code, nextUrl) {
    if (this._closing) return;
    this._setState("reconnecting");
    if (nextUrl) this._urlIndex++;
    const cap = Math.min(this._backoffMax, this._backoffInitial * 2 ** Math.min(this._attempt, 30));
    this._attempt++;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => this._connect(), Math.random() * cap);
  }

  // ---- token refresh ----------------------------------------------------

  _scheduleRefresh(conn, expMs) {
    clearTimeout(conn.refreshTimer);
    if (typeof this._token !== "function" || !expMs) return;
    const remaining = expMs - Date.now();
    const delay = Math.max(0, remaining - refreshMarginMs(remaining));
    conn.refreshTimer = setTimeout(() => this._refresh(conn, expMs), delay);
  }

  async _refresh(conn, expMs) {
    let token;
    try {
      token = await this._token();
    } catch (e) {
      this._error("token", `the token function failed: ${e && e.message}`);
    }
    if (this._conn !== conn || !conn.open) return;
    if (typeof token !== "string") {
      this._retryRefresh(conn, expMs);
      return;
    }
    const id = this._nextId++;
    this._pending.set(id, { kind: "auth", token, expMs });
    this._send(conn, { type: "auth", token, id });
  }

  _retryRefresh(conn, expMs) {
    const left = expMs - Date.now();
    if (left <= 0) return; // the server closes 1008; we reconnect with a fresh token
    conn.refreshTimer = setTimeout(() => this._refresh(conn, expMs), Math.min(1000, left / 2));
  }

  // ---- requests ---------------------------------------------------------

  _sendSubscribe(sub) {
    const conn = this._conn;
    clearTimeout(sub._retryTimer);
    const id = this._nextId++;
    const msg = { type: "subscribe", stream: sub.stream, id };
    sub._sentSince = sub._seq !== null;
    if (sub._sentSince) msg.since = sub._seq;
    if (sub._epoch !== null) msg.epoch = sub._epoch;
    sub._reqId = id;
    sub._active = false;
    this._pending.set(id, { kind: "subscribe", sub });
    this._send(conn, msg);
  }

  _sendPublish(p) {
    p.id = this._nextId++;
    this._pending.set(p.id, p);
    this._send(this._conn, { type: "publish", stream: p.stream, data: p.data, id: p.id });
  }

  _publishTimedOut(p) {
    const i = this._queue.indexOf(p);
    if (i >= 0) {
      this._queue.splice(i, 1);
      p.reject(new WsgateError("unavailable",
        "no connection within publishTimeoutMs: not published", { stream: p.stream }));
      return;
    }
    if (p.id !== null && this._pending.get(p.id) === p) {
      this._pending.delete(p.id);
      p.reject(new WsgateError("outcome_unknown",
        "no acknowledgement within publishTimeoutMs: it may or may not have been accepted",
        { stream: p.stream }));
    }
  }

  _failQueued(code, message) {
    const q = this._queue;
    this._queue = [];
    for (const p of q) {
      clearTimeout(p.timer);
      p.reject(new WsgateError(code, message, { stream: p.stream }));
    }
  }

  _dropSubscription(sub) {
    if (this._subs.get(sub.stream) !== sub) return;
    this._subs.delete(sub.stream);
    clearTimeout(sub._retryTimer);
    if (this._isOpen() && (sub._active || sub._reqId !== null)) {
      this._send(this._conn, { type: "unsubscribe", stream: sub.stream, id: this._nextId++ });
    }
  }

  // Re-establish a subscription from its position on the same connection:
  // whatever arrives for the stream before the new `subscribed` reply
  // belongs to the old one and is dropped.
  _resync(sub) {
    this.stats.resyncs++;
    sub._active = false;
    this._send(this._conn, { type: "unsubscribe", stream: sub.stream, id: this._nextId++ });
    this._sendSubscribe(sub);
  }

  // ---- incoming ---------------------------------------------------------

  _received(conn, data) {
    conn.lastRx = Date.now();
    let msg;
    try {
      msg = JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data));
    } catch {
      this._error("protocol_error", "the server sent a frame that is not JSON");
      return;
    }
    if (msg === null || typeof msg !== "object") return;
    switch (msg.type) {
      case "message": this._onMessage(msg); break;
      case "gap": this._onGap(msg); break;
      case "reset": this._onStreamReset(msg); break;
      case "subscribed": this._onSubscribed(msg); break;
      case "ack": this._onAck(msg); break;
      case "error": this._onErrorReply(conn, msg); break;
      case "authenticated": this._onAuthenticated(conn, msg); break;
      case "reconnect":
        conn.hint = { afterMs: Number(msg.after_ms), reason: msg.reason };
        break;
      default: break; // pong, unsubscribed: liveness only
    }
  }

  _onMessage(msg) {
    const sub = this._subs.get(msg.stream);
    if (!sub || !sub._active) return;
    if (!Number.isInteger(msg.seq) || msg.seq !== sub._seq + 1) {
      // A seq going back (the stream restarted under us) or a hole nobody
      // announced: never pass it on; ask the server from our position.
      this._resync(sub);
      return;
    }
    sub._seq = msg.seq;
    this._call(sub._onMessage, { stream: msg.stream, seq: msg.seq, ts: msg.ts, data: msg.data });
  }

  _onGap(msg) {
    const sub = this._subs.get(msg.stream);
    if (!sub || !sub._active || !Number.isInteger(msg.to) || msg.to <= sub._seq) return;
    if (!Number.isInteger(msg.from) || msg.from > sub._seq + 1) {
      this._resync(sub);
      return;
    }
    const from = sub._seq + 1;
    sub._seq = msg.to;
    this._call(sub._onGap, { stream: msg.stream, from, to: msg.to });
  }

  // The stream's sequence restarted in a new epoch while we were
  // subscribed (cluster mode: the broker lost it): every position before is
  // void, and the new epoch's messages follow from seq 1.
  _onStreamReset(msg) {
    const sub = this._subs.get(msg.stream);
    if (!sub || !sub._active || typeof msg.epoch !== "string" || msg.epoch === sub._epoch) return;
    sub._epoch = msg.epoch;
    sub._seq = 0;
    this._call(sub._onReset, { stream: sub.stream, epoch: msg.epoch });
  }

  _onSubscribed(msg) {
    const p = this._pending.get(msg.id);
    if (!p || p.kind !== "subscribe") return;
    this._pending.delete(msg.id);
    const sub = p.sub;
    if (sub._closed || this._subs.get(sub.stream) !== sub || sub._reqId !== msg.id) return;
    const changed = sub._epoch !== null && msg.epoch !== sub._epoch;
    const behind = !changed && sub._sentSince && msg.seq < sub._seq;
    sub._epoch = msg.epoch;
    if (changed) {
      // The server replays everything it holds of the new epoch (a gap
      // first when it no longer holds seq 1).
      sub._seq = sub._sentSince ? 0 : msg.seq;
    } else if (behind || !sub._sentSince) {
      // behind: our position is ahead of the server's in what it calls the
      // same epoch (a caller's since for another epoch): void as well.
      sub._seq = msg.seq;
    }
    sub._active = true;
    if (changed || behind) this._call(sub._onReset, { stream: sub.stream, epoch: msg.epoch });
  }

  _onAck(msg) {
    const p = this._pending.get(msg.id);
    if (!p || p.kind !== "publish") return;
    this._pending.delete(msg.id);
    clearTimeout(p.timer);
    p.resolve({ stream: msg.stream, seq: msg.seq });
  }

  _onAuthenticated(conn, msg) {
    const p = this._pending.get(msg.id);
    if (!p || p.kind !== "auth") return;
    this._pending.delete(msg.id);
    this.stats.tokenRefreshes++;
    conn.token = p.token;
    conn.tokenExpMs = Number.isFinite(msg.exp) ? msg.exp * 1000 : jwtExpMs(p.token);
    this._scheduleRefresh(conn, conn.tokenExpMs);
  }

  _onErrorReply(conn, msg) {
    const p = msg.id === undefined ? undefined : this._pending.get(msg.id);
    const text = msg.message || msg.code;
    if (!p) {
      this._error(msg.code || "internal", text);
      return;
    }
    this._pending.delete(msg.id);
    if (p.kind === "publish") {
      clearTimeout(p.timer);
      p.reject(new WsgateError(msg.code, text, { stream: p.stream }));
    } else if (p.kind === "subscribe") {
      const sub = p.sub;
      this._error(msg.code, text, { stream: sub.stream });
      if (sub._closed || sub._reqId !== msg.id || !RETRYABLE_CODES.has(msg.code)) return;
      // Try again on this connection after a backoff step; other refusals
      // (forbidden, bad_request) wait for the next connection.
      const delay = Math.random() * Math.min(this._backoffMax, this._backoffInitial * 4);
      sub._retryTimer = setTimeout(() => {
        if (this._conn === conn && conn.open && !sub._closed) this._sendSubscribe(sub);
      }, delay);
    } else if (p.kind === "auth") {
      this._error(msg.code, text);
      this._retryRefresh(conn, p.expMs);
    }
  }

  _call(fn, arg) {
    try { fn(arg); } catch (e) { this._report(e); }
  }
}
