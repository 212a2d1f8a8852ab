"""Redis Sentinel groups and a stallable TCP relay for the cluster tests
(test_sentinel.py) and tools/bench-failover.

`SentinelGroup` starts one master, replicas and Sentinels (real
redis-server and redis-sentinel on loopback ports) and waits until the
Sentinels know each other and the replicas, so a failover can happen.
`Relay` forwards TCP to a Redis and can stop forwarding the connections
that subscribed (a pub/sub connection that goes silent without closing:
the failure a health check must see). `Stream` clients record when each
frame arrived. Every wait is bounded; stop() kills what was started.
"""
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

from conftest import SLOW, free_port

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
SENTINEL = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
HAVE_SENTINEL = os.path.exists(REDIS) and os.path.exists(SENTINEL)


def cli(port, *args, timeout=5):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, timeout=timeout).stdout.strip()


def wait(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class RedisNode:
    def __init__(self, directory, port=None, replicaof=None):
        self.port = port or free_port()
        self.dir = directory
        self.replicaof = replicaof
        self.proc = None

    def start(self, replicaof=None):
        os.makedirs(self.dir, exist_ok=True)
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0",
                "--logfile", os.path.join(self.dir, "redis.log")]
        target = replicaof or self.replicaof
        if target:
            args += ["--replicaof", "127.0.0.1", str(target)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: cli(self.port, "ping") == "PONG", 10, f"redis-server on {self.port}")
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def cli(self, *args):
        return cli(self.port, *args)

    def role(self):
        out = self.cli("ROLE").splitlines()
        return out[0] if out else ""

    def info(self, section):
        out = {}
        for line in self.cli("INFO", section).splitlines():
            if ":" in line:
                k, _, v = line.partition(":")
                out[k] = v
        return out


class SentinelGroup:
    """One master, `replicas` replicas and three Sentinels named `name`."""

    def __init__(self, directory, name="mymaster", replicas=2, down_after_ms=1000,
                 failover_timeout_ms=3000):
        self.dir = str(directory)
        self.name = name
        self.master = RedisNode(os.path.join(self.dir, "master"))
        self.nodes = [self.master] + [
            RedisNode(os.path.join(self.dir, f"replica{i}"), replicaof=self.master.port)
            for i in range(replicas)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels = []
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def start(self):
        for n in self.nodes:
            n.start()
        for i, port in enumerate(self.sentinel_ports):
            d = os.path.join(self.dir, f"sentinel{i}")
            os.makedirs(d, exist_ok=True)
            conf = os.path.join(d, "sentinel.conf")
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind 127.0.0.1\ndir {d}\n"
                        f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 2\n"
                        f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}\n"
                        f"sentinel failover-timeout {self.name} {self.failover_timeout_ms}\n"
                        f"sentinel parallel-syncs {self.name} 2\n"
                        f"logfile {d}/sentinel.log\n")
            self.sentinels.append(subprocess.Popen([SENTINEL, conf], stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL))
        wait(self._ready, 20, "the Sentinels to know each other and the replicas", 0.2)
        return self

    def _ready(self):
        for port in self.sentinel_ports:
            fields = cli(port, "SENTINEL", "master", self.name).splitlines()
            kv = dict(zip(fields[::2], fields[1::2]))
            if kv.get("num-other-sentinels") != "2" or \
               kv.get("num-slaves") != str(len(self.nodes) - 1):
                return False
        for n in self.nodes[1:]:
            if n.info("replication").get("master_link_status") != "up":
                return False
        return True

    def master_port(self):
        """The master the Sentinels name now (by the first that answers)."""
        for port in self.sentinel_ports:
            out = cli(port, "SENTINEL", "get-master-addr-by-name", self.name).splitlines()
            if len(out) == 2:
                return int(out[1])
        return None

    def node(self, port):
        return next(n for n in self.nodes if n.port == port)

    def url(self, db=0):
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis-sentinel://{hosts}/{self.name}/{db}"

    def wait_failover(self, old_port, timeout=20):
        wait(lambda: (self.master_port() or old_port) != old_port, timeout, "a failover", 0.1)
        return self.node(self.master_port())

    def stop(self):
        for p in self.sentinels:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=10)
        for n in self.nodes:
            n.kill()


class Relay:
    """TCP relay 127.0.0.1:port -> target, on its own thread (so a busy
    test loop never stalls it by accident). stall_subscribed() makes every
    connection that sent SUBSCRIBE stop forwarding, both ways, without
    closing; with persistent=True connections that subscribe later stall
    too, until resume()."""

    def __init__(self, target_port):
        self.target = target_port
        self.port = free_port()
        self.persistent = False
        self.conns = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port))
        self.ready.set()
        self.loop.run_forever()

    async def _client(self, reader, writer):
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        conn = {"subscribed": False, "stalled": False, "writers": (writer, uwriter)}
        self.conns.append(conn)

        async def pump(src, dst, upstream):
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    if upstream and b"SUBSCRIBE" in data.upper():
                        conn["subscribed"] = True
                        if self.persistent:
                            conn["stalled"] = True
                    if conn["stalled"]:
                        continue  # a black hole: read and drop, never close
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                for w in conn["writers"]:
                    w.close()
        await asyncio.gather(pump(reader, uwriter, True), pump(ureader, writer, False))

    def _call(self, fn):
        done = threading.Event()

        def run():
            fn()
            done.set()
        self.loop.call_soon_threadsafe(run)
        assert done.wait(5)

    def stall_subscribed(self, persistent=False):
        def fn():
            self.persistent = persistent
            for c in self.conns:
                if c["subscribed"]:
                    c["stalled"] = True
        self._call(fn)

    def resume(self):
        """New connections forward again (stalled ones stay stalled)."""
        def fn():
            self.persistent = False
        self._call(fn)

    def close(self):
        def fn():
            self.server.close()
            for c in self.conns:
                for w in c["writers"]:
                    w.close()
            for t in asyncio.all_tasks(self.loop):
                t.cancel()
            self.loop.call_later(0.1, self.loop.stop)
        self._call(fn)
        self.thread.join(5)
        self.loop.close()


class Stream:
    """A WebSocket client on a plain socket that records every frame it gets
    with its arrival time: (time, parsed JSON). Publishes are framed in
    bulk (mask key 0, as RFC 6455 allows)."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.frames = []
        self.task = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, port, timeout=10):
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port),
                                                timeout * SLOW)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout * SLOW)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    @staticmethod
    def frame(text):
        payload = text.encode()
        n = len(payload)
        hdr = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else \
            struct.pack("!BBH", 0x81, 0x80 | 126, n)
        return hdr + b"\0\0\0\0" + payload

    def send(self, *msgs):
        self.writer.write(b"".join(self.frame(json.dumps(m)) for m in msgs))

    async def _read(self):
        try:
            while True:
                b0, b1 = await self.reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                payload = await self.reader.readexactly(n)
                if b0 & 0x0F == 1:
                    self.frames.append((time.monotonic(), json.loads(payload)))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def of_type(self, kind):
        return [f for _, f in self.frames if f.get("type") == kind]

    async def wait_for(self, pred, what, timeout=10):
        deadline = time.monotonic() + timeout * SLOW
        while not pred():
            if self.task.done() or time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; last frames "
                                     f"{[f for _, f in self.frames[-3:]]}")
            await asyncio.sleep(0.01)

    async def subscribe(self, stream, **kw):
        self.send({"type": "subscribe", "stream": stream, "id": "sub", **kw})
        await self.wait_for(lambda: any(f.get("id") == "sub" for _, f in self.frames),
                            f"the answer to subscribe {stream}")
        reply = next(f for _, f in self.frames if f.get("id") == "sub")
        assert reply["type"] == "subscribed", reply
        return reply

    async def close(self):
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5 * SLOW)
        except (asyncio.TimeoutError, OSError):
            pass
        self.task.cancel()


class Publisher:
    """Streams publishes with ids 0, 1, … at `rate` per second on one
    connection, without waiting for answers: acks {id: (seq, time)},
    refusals {id: (code, time)}, sent {id: time}."""

    def __init__(self, client, stream, rate=500):
        self.c, self.stream, self.rate = client, stream, rate
        self.sent = {}
        self.next_id = 0
        self.running = False

    async def run(self, until):
        """Publish until until() is true (checked every 10 ms)."""
        self.running = True
        start = time.monotonic()
        while not until():
            due = int((time.monotonic() - start) * self.rate) + 1
            batch = []
            while self.next_id < due:
                batch.append({"type": "publish", "stream": self.stream, "id": self.next_id,
                              "data": {"k": self.next_id}})
                self.sent[self.next_id] = time.monotonic()
                self.next_id += 1
            if batch:
                self.c.send(*batch)
            await asyncio.sleep(0.01)
        self.running = False

    def answers(self):
        acks, refused = {}, {}
        for t, f in self.c.frames:
            if f.get("type") == "ack":
                acks[f["id"]] = (f["seq"], t)
            elif f.get("type") == "error" and "id" in f:
                refused[f["id"]] = (f.get("code"), t)
        return acks, refused

    def all_answered(self):
        acks, refused = self.answers()
        return len(acks) + len(refused) >= self.next_id


def healthy(gw):
    try:
        return gw.detailed()["status"] == "ok"
    except (OSError, ValueError):
        return False


async def failover_run(group, pub_gw, sub_gws, stream, subs_per_gateway=20, rate=500,
                       before_kill=1.5, after_resume=1.0):
    """Stream publishes with ids into `stream` on pub_gw while
    subs_per_gateway subscribers on each of sub_gws read it; SIGKILL the
    master mid-stream; keep publishing until acks resume (plus
    after_resume seconds); then wait until every subscriber holds every
    acknowledged message. Returns what happened, for the caller to check
    and report."""
    subs = []
    for gw in sub_gws:
        for _ in range(subs_per_gateway):
            s = await Stream.connect(gw.port)
            await s.subscribe(stream)
            subs.append(s)
    pc = await Stream.connect(pub_gw.port)
    pub = Publisher(pc, stream, rate)
    state = {"t_kill": None, "k_kill": None}
    killed_port = group.master.port if group.master_port() is None else group.master_port()
    old = group.node(killed_port)

    def resumed():
        if state["t_kill"] is None:
            return False
        acks, _ = pub.answers()
        after = [t for k, (_, t) in acks.items() if k >= state["k_kill"]]
        return bool(after) and time.monotonic() - min(after) > after_resume

    async def killer():
        await asyncio.sleep(before_kill)
        state["k_kill"] = pub.next_id
        state["t_kill"] = time.monotonic()
        old.kill()

    deadline = time.monotonic() + 30 * SLOW
    await asyncio.gather(killer(), pub.run(lambda: resumed() or time.monotonic() > deadline))
    await pc.wait_for(pub.all_answered, "an answer to every publish", timeout=15)
    acks, refused = pub.answers()
    top = max((seq for seq, _ in acks.values()), default=0)
    for s in subs:
        await s.wait_for(lambda s=s: any(f.get("seq", 0) >= top for f in s.of_type("message")),
                         f"seq {top} at every subscriber", timeout=20)
    t_kill, k_kill = state["t_kill"], state["k_kill"]
    first_ack = min((t for k, (_, t) in acks.items() if k >= k_kill), default=None)
    first_delivery = min((t for s in subs for t, f in s.frames
                          if f.get("type") == "message" and f["data"]["k"] >= k_kill),
                         default=None)
    result = {
        "killed_port": killed_port,
        "acks": acks, "refused": refused, "sent": pub.next_id,
        "subs": [[(f["seq"], f["data"]["k"]) for f in s.of_type("message")] for s in subs],
        "gaps": [s.of_type("gap") for s in subs],
        "kill_to_first_ack": first_ack - t_kill if first_ack else None,
        "kill_to_first_delivery": first_delivery - t_kill if first_delivery else None,
    }
    acked = {seq: k for k, (seq, _) in acks.items()}
    result["lost"] = max(len(set(acked.items()) - set(got)) for got in result["subs"])
    result["delivered"] = min(len(got) for got in result["subs"])
    for s in subs + [pc]:
        await s.close()
    return result
