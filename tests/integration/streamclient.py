"""Independent stream clients for the integration tests (test_streams.py).

`Client` wraps a Python `websockets` connection: a reader task reads every
frame eagerly into a queue (so the client never applies backpressure unless
a test wants it), and each frame keeps its raw text next to its parsed JSON,
so tests can check `data` byte for byte without re-serialising anything.

`RawWS` is a minimal blocking WebSocket client on a plain socket, for tests
that must control reading (a subscriber that stops reading) or look at the
close frame.

`raw_members` is an independent scanner that returns the raw source text of
each top-level member of a JSON object.

Every wait is bounded (timeouts are multiplied by conftest.SLOW).
"""
import asyncio
import base64
import collections
import json
import os
import socket
import struct
import time

import websockets

from conftest import SLOW


# -- raw JSON --------------------------------------------------------------

def _skip_ws(s, i):
    while i < len(s) and s[i] in " \t\r\n":
        i += 1
    return i


def _skip_value(s, i):
    """Index just past the JSON value starting at s[i]."""
    c = s[i]
    if c == '"':
        i += 1
        while True:
            if s[i] == "\\":
                i += 2
            elif s[i] == '"':
                return i + 1
            else:
                i += 1
    if c in "{[":
        depth = 0
        while True:
            c = s[i]
            if c == '"':
                i = _skip_value(s, i)
                continue
            if c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
    while i < len(s) and s[i] not in ",}] \t\r\n":
        i += 1
    return i


def raw_members(text):
    """{key: raw value text} of the top-level JSON object `text`."""
    out = {}
    i = _skip_ws(text, 0)
    assert text[i] == "{", text
    i = _skip_ws(text, i + 1)
    if text[i] == "}":
        return out
    while True:
        j = _skip_value(text, i)
        key = json.loads(text[i:j])
        i = _skip_ws(text, j)
        assert text[i] == ":", text
        i = _skip_ws(text, i + 1)
        j = _skip_value(text, i)
        out[key] = text[i:j]
        i = _skip_ws(text, j)
        if text[i] == "}":
            return out
        assert text[i] == ",", text
        i = _skip_ws(text, i + 1)


def same_json(a, b):
    """JSON equality that does not confuse true with 1 or 1 with 1.0."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


AUTO = object()  # "pick an id for me"


class Frame(dict):
    """A parsed server frame that remembers its raw text (`.raw`)."""

    def __init__(self, raw):
        self.raw = raw
        super().__init__(json.loads(raw) if isinstance(raw, str) else {"type": "<binary>"})

    def __repr__(self):
        r = self.raw if len(self.raw) < 300 else self.raw[:300] + "..."
        return f"Frame({r!r})"


# -- websockets client -----------------------------------------------------

class Client:
    """One WebSocket connection with an eager reader."""

    def __init__(self, ws, gw):
        self.ws = ws
        self.gw = gw
        self.inbox = asyncio.Queue()
        self.buf = collections.deque()  # frames pulled but not consumed yet
        self.eof = False
        self.close_code = None
        self._ids = 0
        self.received = 0  # frames read so far (consumed or not)
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, gw, timeout=10):
        ws = await websockets.connect(gw.ws_url, compression=None, max_queue=None, max_size=None,
                                      ping_interval=None, open_timeout=timeout * SLOW,
                                      close_timeout=2 * SLOW)
        return cls(ws, gw)

    @property
    def local_port(self):
        return self.ws.local_address[1]

    async def _read(self):
        try:
            async for raw in self.ws:
                self.received += 1
                self.inbox.put_nowait(Frame(raw))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.inbox.put_nowait(None)

    def new_id(self):
        self._ids += 1
        return self._ids

    async def send(self, msg):
        """Send a dict (serialised here) or raw text (sent as is)."""
        await self.ws.send(msg if isinstance(msg, str) else json.dumps(msg))

    async def _pull(self, deadline, what):
        left = deadline - time.monotonic()
        if self.eof:
            raise AssertionError(f"connection closed (code {self.close_code}) while waiting for {what}")
        try:
            f = await asyncio.wait_for(self.inbox.get(), max(left, 0.001))
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; unconsumed: {list(self.buf)[:5]}")
        if f is None:
            self.eof = True
            raise AssertionError(f"connection closed (code {self.close_code}) while waiting for {what}")
        return f

    async def next(self, timeout=5, what="a frame"):
        """The next frame, in arrival order."""
        if self.buf:
            return self.buf.popleft()
        return await self._pull(time.monotonic() + timeout * SLOW, what)

    async def take(self, pred, timeout=5, what="a matching frame"):
        """The first frame (in arrival order) for which pred is true; frames
        passed over stay buffered for later calls."""
        for f in self.buf:
            if pred(f):
                self.buf.remove(f)
                return f
        deadline = time.monotonic() + timeout * SLOW
        while True:
            f = await self._pull(deadline, what)
            if pred(f):
                return f
            self.buf.append(f)

    async def reply(self, rid, timeout=5):
        """The reply (not a message or gap) carrying id `rid`."""
        return await self.take(lambda f: f.get("type") not in ("message", "gap")
                               and "id" in f and same_json(f["id"], rid),
                               timeout, what=f"the reply to id {rid!r}")

    async def request(self, msg, timeout=5):
        """Send msg (a dict; an int id is added when it has none) and return its reply."""
        msg = dict(msg)
        if "id" not in msg:
            msg["id"] = self.new_id()
        await self.send(msg)
        return await self.reply(msg["id"], timeout)

    async def subscribe(self, stream, timeout=5, **extra):
        return await self.request(dict(type="subscribe", stream=stream, **extra), timeout)

    async def publish(self, stream, data_raw, rid=AUTO, timeout=5):
        """Publish raw JSON text as data; returns the ack (or error) frame."""
        if rid is AUTO:
            rid = self.new_id()
        await self.send('{"type":"publish","stream":%s,"id":%s,"data":%s}'
                        % (json.dumps(stream), json.dumps(rid), data_raw))
        return await self.reply(rid, timeout)

    async def stream_frames(self, stream, until_seq, timeout=10):
        """`message` and `gap` frames of `stream`, in arrival order, until a
        message with seq >= until_seq has arrived."""
        out = []
        deadline = time.monotonic() + timeout * SLOW
        while True:
            left = (deadline - time.monotonic()) / SLOW
            f = await self.take(lambda f: f.get("type") in ("message", "gap")
                                and f.get("stream") == stream, max(left, 0.001),
                                what=f"messages of {stream} up to seq {until_seq} "
                                     f"(have {len(out)}, last {out[-1] if out else None})")
            out.append(f)
            if f["type"] == "message" and f["seq"] >= until_seq:
                return out

    async def sync(self, timeout=5):
        """Ping and return the frames that arrived before the pong."""
        rid = f"sync-{self.new_id()}"
        await self.send({"type": "ping", "id": rid})
        before = []
        while True:
            f = await self.next(timeout, what="the pong")
            if f.get("type") == "pong" and f.get("id") == rid:
                return before
            before.append(f)

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 5 * SLOW)
        except (asyncio.TimeoutError, OSError):
            pass
        self.reader.cancel()

    async def wait_closed(self, timeout=10):
        """Wait for the server to end the connection; returns the close code."""
        try:
            await asyncio.wait_for(asyncio.shield(self.reader), timeout * SLOW)
        except asyncio.TimeoutError:
            raise AssertionError("the connection was not closed")
        return self.close_code


async def publish_many(client, stream, datas, window=16, timeout=30):
    """Publish every raw JSON text in `datas` with ids, keeping at most
    `window` unacknowledged; returns the reply frames in publish order."""
    replies = {}
    ids = []
    deadline = time.monotonic() + timeout * SLOW
    pending = 0
    for data in datas:
        while pending >= window:
            f = await client.take(lambda f: f.get("type") in ("ack", "error"),
                                  max((deadline - time.monotonic()) / SLOW, 0.001),
                                  what="acks")
            replies[json.dumps(f.get("id"))] = f
            pending -= 1
        rid = client.new_id()
        ids.append(rid)
        await client.send('{"type":"publish","stream":%s,"id":%d,"data":%s}'
                          % (json.dumps(stream), rid, data))
        pending += 1
    while pending:
        f = await client.take(lambda f: f.get("type") in ("ack", "error"),
                              max((deadline - time.monotonic()) / SLOW, 0.001), what="acks")
        replies[json.dumps(f.get("id"))] = f
        pending -= 1
    return [replies[json.dumps(i)] for i in ids]


# -- which worker serves a connection --------------------------------------

def worker_of_port(gw, local_port, timeout=5):
    """The worker slot whose `connect` log line names our local port."""
    remote = f"127.0.0.1:{local_port}"
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        for line in reversed(gw.logs()):
            if line.get("event") == "connect" and line.get("remote") == remote:
                return line["worker"]
        time.sleep(0.02)
    raise AssertionError(f"no connect log line for {remote}:\n{gw.stderr()[-3000:]}")


async def worker_of(client):
    return await asyncio.to_thread(worker_of_port, client.gw, client.local_port)


async def connect_on(gw, slots, max_tries=100):
    """Open connections until there is one on each worker slot listed in
    `slots` (repeats allowed); extra connections are closed. Returns the
    clients in the order of `slots`."""
    wanted = list(slots)
    got = [None] * len(wanted)
    for _ in range(max_tries):
        if all(g is not None for g in got):
            return got
        c = await Client.connect(gw)
        slot = await worker_of(c)
        for i, s in enumerate(wanted):
            if s == slot and got[i] is None:
                got[i] = c
                c.slot = slot
                break
        else:
            await c.close()
    if all(g is not None for g in got):
        return got
    raise AssertionError(f"could not place connections on workers {wanted} in {max_tries} tries")


def worker_pid(gw, slot):
    for w in gw.detailed()["workers"]:
        if w["slot"] == slot:
            return w["pid"]
    raise AssertionError(f"no worker slot {slot} in /health/detailed")


# -- raw socket client -----------------------------------------------------

class RawWS:
    """Blocking WebSocket client on a plain socket; reads only when told."""

    def __init__(self, port, rcvbuf=None, timeout=10):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout * SLOW)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the handshake"
            data += chunk
        head, _, self.buf = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        self.eof = False

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    def send_text(self, text):
        payload = text.encode() if isinstance(text, str) else text
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(hdr + mask + masked)

    def _parse_one(self):
        """(opcode, payload) from the buffer, or None if incomplete."""
        b = self.buf
        if len(b) < 2:
            return None
        op, ln = b[0] & 0x0F, b[1] & 0x7F
        assert b[1] & 0x80 == 0, "server frames must not be masked"
        pos = 2
        if ln == 126:
            if len(b) < 4:
                return None
            ln = struct.unpack("!H", b[2:4])[0]
            pos = 4
        elif ln == 127:
            if len(b) < 10:
                return None
            ln = struct.unpack("!Q", b[2:10])[0]
            pos = 10
        if len(b) < pos + ln:
            return None
        self.buf = b[pos + ln:]
        return op, b[pos:pos + ln]

    def read_frame(self, timeout=10):
        """Next frame, or None at EOF (or when the server reset the connection)."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            f = self._parse_one()
            if f is not None:
                return f
            if self.eof:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out reading a frame")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
            self.buf += chunk

    def read_all(self, timeout=20):
        """Every frame until EOF."""
        out = []
        deadline = time.monotonic() + timeout * SLOW
        while True:
            f = self.read_frame(max((deadline - time.monotonic()) / SLOW, 0.001))
            if f is None:
                return out
            out.append(f)

    def close(self):
        self.sock.close()


class RawPublisher:
    """A fast asyncio publisher on a plain socket: frames are built in bulk
    (mask key 0, which RFC 6455 allows) and written many per write, so the
    gateway sees long bursts of requests and handles them in one read.
    Replies are parsed by a reader task: acks into `acks` ({id: seq}),
    errors into `errors`, everything else (replies, messages, gaps) into
    `frames`, in arrival order; `replied_at` has the time.monotonic() at
    which each ack or error arrived ({id: seconds})."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.acks, self.errors, self.frames = {}, [], []
        self.replied_at = {}
        self.max_seq = 0
        self.task = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, gw, timeout=10):
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", gw.port),
                                                timeout * SLOW)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout * SLOW)
        assert head.startswith(b"HTTP/1.1 101"), head
        c = cls(reader, writer)
        c.gw = gw
        c.local_port = writer.get_extra_info("sockname")[1]
        return c

    @staticmethod
    def frame(text):
        payload = text.encode()
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        return hdr + b"\0\0\0\0" + payload

    async def send_texts(self, texts):
        self.writer.write(b"".join(self.frame(t) for t in texts))
        await self.writer.drain()

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
                if b0 & 0x0F != 1:
                    continue  # ping (the server's heartbeat) or close
                f = Frame(payload.decode())
                if f.get("type") in ("ack", "error") and "id" in f:
                    self.replied_at[f["id"]] = time.monotonic()
                if f.get("type") == "ack":
                    self.acks[f["id"]] = f["seq"]
                    self.max_seq = max(self.max_seq, f["seq"])
                elif f.get("type") == "error":
                    self.errors.append(f)
                else:
                    self.frames.append(f)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    async def wait_for(self, pred, what, timeout=10):
        deadline = time.monotonic() + timeout * SLOW
        while not pred():
            assert not self.errors, self.errors[:3]
            if self.task.done() or time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; last frames {self.frames[-3:]}")
            await asyncio.sleep(0.005)

    async def close(self):
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5 * SLOW)
        except (asyncio.TimeoutError, OSError):
            pass
        self.task.cancel()
