// Test harness for the client library: the real wsgate binary on free
// loopback ports with temporary configs, real redis-server instances, a TCP
// relay that can go silent, and HS256 tokens made with node:crypto (nothing
// shared with the gateway's JWT code). Every wait is bounded and scaled by
// SLOW under sanitizers; everything started is stopped by stopAll().
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
export const WSGATE_BIN = process.env.WSGATE_BIN || path.join(ROOT, "build-test", "wsgate");
export const SLOW = process.env.WSGATE_SANITIZED === "1" ? 4 : 1;
const SANITIZER = /(ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|SUMMARY: UndefinedBehaviorSanitizer)/;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(pred, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs * SLOW;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs * SLOW} ms waiting for ${what}`);
    await sleep(25);
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function tmpDir(name) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `wsgate-js-${name}-`));
}

function renderConfig(values) {
  return Object.entries(values).map(([k, v]) => {
    if (typeof v === "boolean") return `${k}: ${v ? "true" : "false"}`;
    if (typeof v === "string") return `${k}: "${v}"`;
    if (Array.isArray(v)) return `${k}: [${v.map((x) => JSON.stringify(x)).join(", ")}]`;
    return `${k}: ${v}`;
  }).join("\n") + "\n";
}

export function httpGet(port, p) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: p, timeout: 5000 * SLOW }, (res) => {
      let body = "";
      res.on("data", (d) => { body += d; });
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
  });
}

const started = [];

export class Gateway {
  static async create(dir, config = {}) {
    const gw = new Gateway(dir);
    gw.config = {
      port: await freePort(), bind_address: "127.0.0.1", metrics_port: await freePort(),
      workers: 2, environment: "test", log_level: "info", ...config,
    };
    gw.port = gw.config.port;
    gw.writeConfig();
    return gw;
  }

  constructor(dir) {
    this.dir = dir;
    this.configPath = path.join(dir, "websocket.yaml");
    this.stderrPath = path.join(dir, "wsgate.stderr");
    this.proc = null;
  }

  get url() { return `ws://127.0.0.1:${this.port}/ws`; }

  writeConfig(changes = {}) {
    Object.assign(this.config, changes);
    fs.writeFileSync(this.configPath, renderConfig(this.config));
  }

  async start() {
    const err = fs.openSync(this.stderrPath, "a");
    this.proc = spawn(WSGATE_BIN, ["-c", this.configPath], { stdio: ["ignore", "ignore", err] });
    fs.closeSync(err);
    this.exited = new Promise((r) => this.proc.on("exit", (code, sig) => r({ code, sig })));
    started.push(this);
    await this.waitReady();
    return this;
  }

  async detailed() {
    const { body } = await httpGet(this.port, "/health/detailed");
    return JSON.parse(body);
  }

  async waitReady(workers = this.config.workers) {
    return waitFor(async () => {
      if (this.proc.exitCode !== null) throw new Error(`wsgate exited:\n${this.stderr()}`);
      try {
        const d = await this.detailed();
        return d.workers.filter((w) => w.state === "running").length >= workers && d;
      } catch { return false; }
    }, 10000, "wsgate to be ready");
  }

  signal(sig) { this.proc.kill(sig); }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill("SIGTERM");
    const t = setTimeout(() => this.killTree(), 20000 * SLOW);
    await this.exited;
    clearTimeout(t);
  }

  killTree() {
    for (const pid of [...this.workerPids(), this.proc.pid]) {
      try { process.kill(pid, "SIGKILL"); } catch { /* gone */ }
    }
  }

  workerPids() {
    const out = [];
    for (const d of fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const stat = fs.readFileSync(`/proc/${d}/stat`, "utf8");
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        if (Number(fields[1]) === this.proc.pid && fields[0] !== "Z") out.push(Number(d));
      } catch { /* gone */ }
    }
    return out;
  }

  stderr() {
    try { return fs.readFileSync(this.stderrPath, "utf8"); } catch { return ""; }
  }

  sanitizerReports() {
    return this.stderr().split("\n").filter((l) => SANITIZER.test(l));
  }
}

export class Redis {
  static async start(dir, port) {
    const r = new Redis();
    r.dir = dir;
    r.port = port || await freePort();
    await r.launch();
    return r;
  }

  async launch() {
    this.proc = spawn("redis-server", ["--port", String(this.port), "--bind", "127.0.0.1",
      "--save", "", "--appendonly", "no", "--dir", this.dir], { stdio: "ignore" });
    this.exited = new Promise((r) => this.proc.on("exit", r));
    started.push(this);
    await waitFor(() => this.ping(), 10000, "redis-server to answer PING");
  }

  ping() {
    return new Promise((resolve) => {
      const s = net.connect(this.port, "127.0.0.1");
      let buf = "";
      s.setTimeout(1000, () => { s.destroy(); resolve(false); });
      s.on("error", () => resolve(false));
      s.on("connect", () => s.write("PING\r\n"));
      s.on("data", (d) => { buf += d; if (buf.includes("\r\n")) { s.destroy(); resolve(buf.startsWith("+PONG")); } });
    });
  }

  get url() { return `redis://127.0.0.1:${this.port}/0`; }

  async stop() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill("SIGKILL");
    await this.exited;
  }
}

// A TCP relay in front of a gateway. cut(): every open connection stops
// forwarding in both directions but stays open (a silent network failure);
// refuse(): new connections are closed at once (the server is unreachable);
// restore(): new connections work again (cut ones stay cut).
export class Relay {
  static async start(targetPort) {
    const r = new Relay();
    r.target = targetPort;
    r.refusing = false;
    r.pairs = new Set();
    r.server = net.createServer((c) => r.accept(c));
    await new Promise((res) => r.server.listen(0, "127.0.0.1", res));
    r.port = r.server.address().port;
    started.push(r);
    return r;
  }

  get url() { return `ws://127.0.0.1:${this.port}/ws`; }

  accept(client) {
    if (this.refusing) { client.destroy(); return; }
    const upstream = net.connect(this.target, "127.0.0.1");
    const pair = { client, upstream, cut: false };
    this.pairs.add(pair);
    const end = () => { client.destroy(); upstream.destroy(); this.pairs.delete(pair); };
    client.on("data", (d) => { if (!pair.cut) upstream.write(d); });
    upstream.on("data", (d) => { if (!pair.cut) client.write(d); });
    for (const s of [client, upstream]) { s.on("error", end); s.on("close", end); }
  }

  cut() { for (const p of this.pairs) p.cut = true; }
  refuse() { this.refusing = true; this.cut(); for (const p of this.pairs) { p.client.destroy(); p.upstream.destroy(); } }
  restore() { this.refusing = false; }

  async stop() {
    for (const p of this.pairs) { p.client.destroy(); p.upstream.destroy(); }
    await new Promise((res) => this.server.close(res));
  }
}

export async function stopAll() {
  const problems = [];
  while (started.length) {
    const x = started.pop();
    try { await x.stop(); } catch (e) { problems.push(String(e)); }
    if (x instanceof Gateway) {
      const reports = x.sanitizerReports();
      if (reports.length) problems.push(`sanitizer reports:\n${x.stderr()}`);
    }
  }
  if (problems.length) throw new Error(problems.join("\n"));
}

// ---- JWT (HS256) ----------------------------------------------------------

const b64url = (buf) => Buffer.from(buf).toString("base64").replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");

export function makeSecret(dir) {
  const secret = b64url(crypto.randomBytes(48));
  const file = path.join(dir, "hmac.secret");
  fs.writeFileSync(file, secret + "\n");
  return { secret, file };
}

export function hs256(claims, secret) {
  const input = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" })) + "." + b64url(JSON.stringify(claims));
  return input + "." + b64url(crypto.createHmac("sha256", secret).update(input).digest());
}
