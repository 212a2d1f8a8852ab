"""The two client programs of test_hostile.py, each run as its own process
so that neither's Python scheduling is measured as the gateway's latency:

  hostile.py watch SPEC.json    20 well-behaved subscribers + 1 publisher
                                (the `websockets` library), prints "ready",
                                then one JSON line of results at the end.
  hostile.py attack SPEC.json   ~1,000 hostile connections at once (raw
                                asyncio sockets, frames built by hand), for
                                a fixed time; prints one JSON line of what
                                each kind of attacker saw.

SPEC.json: {"port", "secret_path", "stream", ...}; see test_hostile.py.
Every loop is bounded by a deadline and a count; every read has a timeout.
"""
import asyncio
import base64
import collections
import json
import os
import resource
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jwtutil  # noqa: E402


def now():
    return time.monotonic()


# -- frames -------------------------------------------------------------------

def xor_mask(data, key):
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def frame(opcode, payload=b"", fin=True):
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    key = os.urandom(4)
    return head + key + xor_mask(payload, key)


async def read_frame(reader, timeout):
    """(opcode, payload) of the next server frame."""
    head = await asyncio.wait_for(reader.readexactly(2), timeout)
    n = head[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), timeout))[0]
    elif n == 127:
        n = struct.unpack("!Q", await asyncio.wait_for(reader.readexactly(8), timeout))[0]
    payload = await asyncio.wait_for(reader.readexactly(n), timeout) if n else b""
    return head[0] & 0x0F, payload


def close_code(payload):
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


# -- attack -------------------------------------------------------------------

class Attack:
    def __init__(self, spec):
        self.spec = spec
        self.port = spec["port"]
        with open(spec["secret_path"], "rb") as f:
            self.secret = f.read().strip()
        self.deadline = now() + spec["duration"]
        self.stats = collections.defaultdict(collections.Counter)
        self.open = 0
        self.peak = 0
        self.max_message = spec["max_message_size"]

    def token(self, i, ttl=600, **kw):
        return jwtutil.token(jwtutil.claims(sub=f"attacker-{i}", ttl=ttl, **kw), self.secret)

    def left(self):
        return self.deadline - now()

    async def connect(self):
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 10)
        self.open += 1
        self.peak = max(self.peak, self.open)
        return r, w

    def close(self, w):
        self.open -= 1
        try:
            w.close()
        except Exception:
            pass

    async def upgrade(self, token=None, path="/ws"):
        """(status, reader, writer); the writer is closed unless 101."""
        r, w = await self.connect()
        key = base64.b64encode(os.urandom(16)).decode()
        head = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n")
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        w.write((head + "\r\n").encode())
        try:
            resp = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            status = int(resp.split()[1])
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            status = 0
        if status != 101:
            self.close(w)
        return status, r, w

    async def drain(self, kind, r, limit=100000):
        """Read and classify server frames until EOF or the deadline."""
        for _ in range(limit):
            try:
                op, payload = await read_frame(r, max(0.1, self.left() + 2))
            except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            if op == 0x8:
                self.stats[kind][f"close_{close_code(payload)}"] += 1
                return
            if op == 0x1:
                msg = json.loads(payload)
                self.stats[kind][msg.get("code", msg["type"])] += 1
            elif op == 0xA:
                self.stats[kind]["pong_frame"] += 1

    # Slow head: one byte every 200 ms; the gateway answers 408 at
    # handshake_timeout.
    async def slowloris(self, i):
        req = (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\nX-Padding: " + "a" * 200 + "\r\n\r\n").encode()
        for _ in range(100):
            if self.left() <= 0:
                return
            r, w = await self.connect()
            try:
                for b in range(len(req)):
                    if self.left() <= 0:
                        return
                    w.write(req[b:b + 1])
                    try:
                        data = await asyncio.wait_for(r.read(4096), 0.2)
                    except asyncio.TimeoutError:
                        continue
                    self.stats["slowloris"][data.split(b" ")[1].decode() if data else "eof"] += 1
                    break
            except ConnectionError:
                self.stats["slowloris"]["reset"] += 1
            finally:
                self.close(w)

    # Handshakes without a valid token: 401 every time.
    async def unauthorized(self, i):
        bad = [None, self.token(i, ttl=-5), jwtutil.token(jwtutil.claims(), b"x" * 48),
               "not.a.token"]
        for n in range(60):
            if self.left() <= 0:
                return
            status, r, w = await self.upgrade(bad[n % len(bad)])
            self.stats["unauthorized"][str(status)] += 1
            if status == 101:
                self.close(w)
            await asyncio.sleep(0.25)

    # Tokens for other streams asking for the watched one.
    async def forbidden(self, i):
        stream = self.spec["stream"]
        status, r, w = await self.upgrade(self.token(i, subscribe=[f"attacker/{i}/*"],
                                                     publish=[f"attacker/{i}/x"]))
        self.stats["forbidden"][str(status)] += 1
        if status != 101:
            return
        reader = asyncio.ensure_future(self.drain("forbidden", r))
        try:
            for n in range(1000):
                if self.left() <= 0:
                    break
                msg = ({"type": "subscribe", "stream": stream, "id": n} if n % 2 == 0 else
                       {"type": "publish", "stream": stream, "data": {"evil": n}, "id": n})
                w.write(frame(0x1, json.dumps(msg)))
                await asyncio.sleep(0.25)
        finally:
            self.close(w)
            reader.cancel()

    # Messages in 1-byte frames, one frame every 20 ms.
    async def one_byte_frames(self, i):
        status, r, w = await self.upgrade(self.token(i))
        self.stats["one_byte"][str(status)] += 1
        if status != 101:
            return
        reader = asyncio.ensure_future(self.drain("one_byte", r))
        try:
            for n in range(1000):
                text = json.dumps({"type": "ping", "id": n}).encode()
                for k in range(len(text)):
                    if self.left() <= 0:
                        return
                    op = 0x1 if k == 0 else 0x0
                    w.write(frame(op, text[k:k + 1], fin=k == len(text) - 1))
                    await asyncio.sleep(0.02)
        finally:
            self.close(w)
            reader.cancel()

    # WebSocket ping frames in bursts; half the flooders never read a pong.
    async def ping_flood(self, i):
        status, r, w = await self.upgrade(self.token(i))
        self.stats["ping_flood"][str(status)] += 1
        if status != 101:
            return
        reader = asyncio.ensure_future(self.drain("ping_flood", r)) if i % 2 else None
        burst = b"".join(frame(0x9, b"flood%03d" % k) for k in range(100))
        try:
            for n in range(40):
                if self.left() <= 0:
                    break
                w.write(burst)
                self.stats["ping_flood"]["pings_sent"] += 100
                try:
                    await asyncio.wait_for(w.drain(), max(0.1, self.left()))
                except (asyncio.TimeoutError, ConnectionError):
                    break
                await asyncio.sleep(0.1)
        finally:
            self.close(w)
            if reader:
                reader.cancel()

    # Far over max_messages_per_second: rate_limited, then closed 1008.
    async def rate_abuse(self, i):
        blast = b"".join(frame(0x1, json.dumps({"type": "ping", "id": k})) for k in range(300))
        for _ in range(5):
            if self.left() <= 1:
                return
            status, r, w = await self.upgrade(self.token(i))
            self.stats["rate_abuse"][str(status)] += 1
            if status != 101:
                await asyncio.sleep(0.5)
                continue
            try:
                w.write(blast)
                await self.drain("rate_abuse", r)
            finally:
                self.close(w)
            await asyncio.sleep(0.5)

    # Messages of exactly max_message_size: handled (a pong each).
    async def max_size(self, i):
        status, r, w = await self.upgrade(self.token(i))
        self.stats["max_size"][str(status)] += 1
        if status != 101:
            return
        try:
            for n in range(3):
                if self.left() <= 1:
                    break
                head = '{"type":"ping","id":%d,"pad":"' % n
                pad = self.max_message - len(head) - 2
                w.write(frame(0x1, (head + "x" * pad + '"}').encode()))
                try:
                    op, payload = await read_frame(r, max(1.0, self.left() + 2))
                    self.stats["max_size"][json.loads(payload)["type"] if op == 1 else
                                           f"op{op}"] += 1
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    self.stats["max_size"]["no_reply"] += 1
                    break
                await asyncio.sleep(1.0)
        finally:
            self.close(w)

    # 1 MiB text whose last byte makes it invalid UTF-8: closed 1007.
    async def bad_utf8(self, i):
        for _ in range(2):
            if self.left() <= 1:
                return
            status, r, w = await self.upgrade(self.token(i))
            self.stats["bad_utf8"][str(status)] += 1
            if status != 101:
                continue
            try:
                body = b'{"type":"ping","pad":"' + b"y" * (self.max_message - 23) + b"\xff"
                w.write(frame(0x1, body))
                await self.drain("bad_utf8", r, limit=10)
            finally:
                self.close(w)
            await asyncio.sleep(1.0)

    async def run(self):
        mix = self.spec["mix"]
        jobs = []
        kinds = [("slowloris", self.slowloris), ("unauthorized", self.unauthorized),
                 ("forbidden", self.forbidden), ("one_byte", self.one_byte_frames),
                 ("ping_flood", self.ping_flood), ("rate_abuse", self.rate_abuse),
                 ("max_size", self.max_size), ("bad_utf8", self.bad_utf8)]
        for name, fn in kinds:
            for i in range(mix.get(name, 0)):
                jobs.append(self.guard(name, fn, i))
        await asyncio.wait_for(asyncio.gather(*jobs), self.spec["duration"] + 30)

    async def guard(self, name, fn, i):
        await asyncio.sleep((i % 50) * 0.01)  # stagger the first SYNs a little
        try:
            await fn(i)
        except (ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError, OSError) as e:
            self.stats[name]["exc_" + type(e).__name__] += 1


def attack(spec):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.nice(spec.get("nice", 10))
    a = Attack(spec)
    asyncio.run(a.run())
    print(json.dumps({"peak_open": a.peak, "stats": {k: dict(v) for k, v in a.stats.items()}}),
          flush=True)


# -- the well-behaved ------------------------------------------------------------

async def watch_async(spec):
    import websockets

    port, stream = spec["port"], spec["stream"]
    with open(spec["secret_path"], "rb") as f:
        secret = f.read().strip()
    url = f"ws://127.0.0.1:{port}/ws"

    def headers(tok):
        return {"Authorization": f"Bearer {tok}"}

    n_subs = spec["subscribers"]
    subs = []
    for i in range(n_subs):
        tok = jwtutil.token(jwtutil.claims(sub=f"nurse-{i}", ttl=3600,
                                           subscribe=[stream.rsplit("/", 1)[0] + "/*"]), secret)
        ws = await websockets.connect(url, extra_headers=headers(tok), open_timeout=20,
                                      max_size=2 ** 20, ping_interval=None)
        # One large message each first (parsed on the thread pool), so the
        # baseline taken after "ready" includes each worker's pool threads.
        await ws.send(json.dumps({"type": "ping", "id": "warm", "pad": "w" * 100000}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert reply["type"] == "pong", reply
        await ws.send(json.dumps({"type": "subscribe", "stream": stream, "id": i}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert reply["type"] == "subscribed", reply
        subs.append((ws, reply["seq"]))
    ptok = jwtutil.token(jwtutil.claims(sub="bed-7", ttl=3600, publish=[stream]), secret)
    pub = await websockets.connect(url, extra_headers=headers(ptok), open_timeout=20,
                                   ping_interval=None)

    received = [[] for _ in range(n_subs)]  # (seq, latency_ns, sent_ns)
    other = [collections.Counter() for _ in range(n_subs)]
    acks = []
    pub_errors = []
    total = int(spec["duration"] * spec["rate"])

    async def reader(k, ws):
        for _ in range(total + 1000):
            try:
                raw = await asyncio.wait_for(ws.recv(), 30)
            except asyncio.TimeoutError:
                other[k]["timeout"] += 1
                return
            except websockets.ConnectionClosed as e:
                other[k][f"closed_{e.code}"] += 1
                return
            t = time.monotonic_ns()
            msg = json.loads(raw)
            if msg["type"] == "message":
                received[k].append((msg["seq"], t - msg["data"]["t"], msg["data"]["t"]))
            else:
                other[k][msg["type"]] += 1

    async def ack_reader():
        for _ in range(total):
            try:
                msg = json.loads(await asyncio.wait_for(pub.recv(), 30))
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                pub_errors.append("recv")
                return
            if msg["type"] == "ack":
                acks.append(msg["seq"])
            else:
                pub_errors.append(msg)

    tasks = [asyncio.ensure_future(reader(k, ws)) for k, (ws, _) in enumerate(subs)]
    acker = asyncio.ensure_future(ack_reader())
    print("ready", flush=True)
    start = time.monotonic()
    for i in range(total):
        slot = start + i / spec["rate"]
        delay = slot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await pub.send(json.dumps({"type": "publish", "stream": stream, "id": i,
                                   "data": {"i": i, "t": time.monotonic_ns()}}))
    await asyncio.wait_for(acker, 30)
    for _ in range(400):  # up to 20 s for the last deliveries
        if all(len(r) >= len(acks) for r in received) or all(t.done() for t in tasks):
            break
        await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()
    for ws, _ in subs:
        await ws.close()
    await pub.close()
    return {
        "published": total,
        "acks": acks,
        "pub_errors": pub_errors,
        "subscribed_seq": [s for _, s in subs],
        "received": received,
        "other": [dict(o) for o in other],
    }


def watch(spec):
    result = asyncio.run(asyncio.wait_for(watch_async(spec), spec["duration"] + 120))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    with open(sys.argv[2]) as f:
        spec = json.load(f)
    {"watch": watch, "attack": attack}[sys.argv[1]](spec)
