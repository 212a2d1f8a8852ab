"""Many cheap stream subscribers in one asyncio loop (test_live_integrity.py).

A `FanSub` is an asyncio.Protocol on a plain socket: it does the WebSocket
handshake, subscribes to one stream, and then accounts for every frame
without keeping it: from each text frame it reads only the head of the
payload (the gateway writes `type`, `stream` and `seq` first), checks that
`message` seqs arrive in order, once each, and records every `gap`. So a
thousand of them can take megabytes each without the test process holding
the data. A frame whose head does not parse is read whole and parsed as
JSON, so the accounting never depends on the field order.

A subscriber built with `rcvbuf` (a small SO_RCVBUF set before connecting)
and told to `stop_reading()` models a client that has stopped reading: the
kernel's window closes and the gateway's queue for it grows. `resume()`
later reads what it was sent, up to the close frame.

Every wait is bounded (timeouts are multiplied by conftest.SLOW).
"""
import asyncio
import base64
import json
import os
import re
import socket
import struct
import time

from conftest import SLOW

HEAD = 256  # payload bytes looked at per text frame (a 128-character stream name fits)
TYPE_RE = re.compile(rb'^\{"type":"([a-z_]+)"')
SEQ_RE = re.compile(rb'"seq":(\d+)[,}]')
GAP_RE = re.compile(rb'"from":(\d+),"to":(\d+)[,}]')


class FanSub(asyncio.Protocol):
    def __init__(self, name):
        self.name = name
        self.transport = None
        self.handshake = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.subscribed = asyncio.Event()
        self.ended = asyncio.Event()
        self.head = bytearray()   # current frame header + payload head
        self.skip = 0             # payload bytes of the current frame still to pass
        self.whole = None         # payload being collected whole (head did not parse)
        self.op = 0
        self.next_seq = None      # next message seq expected (set by `subscribed`)
        self.covered = 0          # highest seq delivered or announced by a gap
        self.messages = 0
        self.gaps = []            # (from, to) in arrival order
        self.problems = []        # first few ordering problems, as text
        self.bad_orders = 0
        self.close_code = None
        self.close_reason = None
        self.frames_after_close = 0
        self.slot = None
        self.local_port = None

    # -- connection ----------------------------------------------------------
    @classmethod
    async def open(cls, port, name, rcvbuf=None, timeout=10):
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout * SLOW)
            _, sub = await loop.create_connection(lambda: cls(name), sock=sock)
        except BaseException:
            sock.close()
            raise
        sub.local_port = sock.getsockname()[1]
        key = base64.b64encode(os.urandom(16)).decode()
        sub.transport.write((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        await asyncio.wait_for(sub.upgraded, timeout * SLOW)
        return sub

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"{self.name}: closed during the handshake"))
        self.ended.set()

    def send_text(self, text):
        # Mask key 0 (RFC 6455 allows any key): the payload goes as is.
        payload = text.encode()
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", 0x81, 0x80 | n)
        else:
            hdr = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        self.transport.write(hdr + b"\0\0\0\0" + payload)

    async def subscribe(self, stream, timeout=10):
        self.send_text(json.dumps({"type": "subscribe", "stream": stream, "id": self.name}))
        await asyncio.wait_for(self.subscribed.wait(), timeout * SLOW)

    def stop_reading(self):
        self.transport.pause_reading()

    def resume(self):
        self.transport.resume_reading()

    def close(self):
        if self.transport is not None:
            self.transport.abort()

    # -- frames --------------------------------------------------------------
    def data_received(self, data):
        if not self.upgraded.done():
            self.handshake += data
            end = self.handshake.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.handshake.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(AssertionError(
                    f"{self.name}: handshake refused: {bytes(self.handshake[:200])!r}"))
                self.transport.abort()
                return
            data = bytes(self.handshake[end + 4:])
            self.handshake = None
            self.upgraded.set_result(True)
        i, n = 0, len(data)
        while i < n:
            if self.skip:
                k = min(self.skip, n - i)
                if self.whole is not None:
                    self.whole += data[i:i + k]
                self.skip -= k
                i += k
                if not self.skip and self.whole is not None:
                    self._frame(self.op, bytes(self.whole), True)
                    self.whole = None
                continue
            want, final = self._want()
            k = min(want - len(self.head), n - i)
            self.head += data[i:i + k]
            i += k
            if len(self.head) < want:
                break
            if not final:
                continue
            self._header_done()

    def _want(self):
        """(bytes of header + payload head needed, whether that is final)."""
        h = self.head
        if len(h) < 2:
            return 2, False
        n = h[1] & 0x7F
        hl = 2 + (2 if n == 126 else 8 if n == 127 else 0)
        if len(h) < hl:
            return hl, False
        return hl + min(self._length(), HEAD), True

    def _length(self):
        h = self.head
        n = h[1] & 0x7F
        if n == 126:
            return struct.unpack("!H", h[2:4])[0]
        if n == 127:
            return struct.unpack("!Q", h[2:10])[0]
        return n

    def _header_done(self):
        h = self.head
        n = h[1] & 0x7F
        hl = 2 + (2 if n == 126 else 8 if n == 127 else 0)
        length = self._length()
        self.op = h[0] & 0x0F
        part = bytes(h[hl:])
        self.head = bytearray()
        rest = length - len(part)
        if rest == 0:
            self._frame(self.op, part, True)
        elif self._frame(self.op, part, False):
            self.skip = rest
        else:
            self.whole = bytearray(part)
            self.skip = rest

    def _frame(self, op, payload, complete):
        """Account for one frame; with only its head (complete False),
        returns False when the head is not enough."""
        if self.close_code is not None:
            self.frames_after_close += 1
            return True
        if op == 0x8:
            if not complete:
                return False
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.close_reason = payload[2:].decode("utf-8", "replace")
            return True
        if op != 0x1:
            return True  # ping/pong: the heartbeat is far longer than a test
        m = TYPE_RE.match(payload)
        kind = m.group(1).decode() if m else None
        seq = gap = None
        if kind == "message":
            s = SEQ_RE.search(payload)
            seq = int(s.group(1)) if s else None
        elif kind == "gap":
            g = GAP_RE.search(payload)
            gap = (int(g.group(1)), int(g.group(2))) if g else None
        if kind not in ("message", "gap") or (kind == "message" and seq is None) \
                or (kind == "gap" and gap is None):
            if not complete:
                return False
            f = json.loads(payload)
            kind = f.get("type")
            seq = f.get("seq")
            gap = (f.get("from"), f.get("to")) if kind == "gap" else None
            if kind not in ("message", "gap"):
                self._reply(f)
                return True
        if kind == "message":
            self._message(seq)
        else:
            self._gap(*gap)
        return True

    def _reply(self, f):
        if f.get("type") == "subscribed" and f.get("id") == self.name:
            self.next_seq = f["seq"] + 1
            self.covered = f["seq"]
            self.subscribed.set()
        elif f.get("type") == "error":
            self._problem(f"error reply {f}")

    def _problem(self, text):
        self.bad_orders += 1
        if len(self.problems) < 5:
            self.problems.append(text)

    def _message(self, seq):
        self.messages += 1
        if self.next_seq is None:
            self._problem(f"message seq {seq} before the subscribed reply")
        elif seq != self.next_seq:
            self._problem(f"message seq {seq} where {self.next_seq} was due")
        self.next_seq = seq + 1
        self.covered = max(self.covered, seq)

    def _gap(self, lo, hi):
        self.gaps.append((lo, hi))
        if self.next_seq is not None and lo != self.next_seq:
            self._problem(f"gap {lo}..{hi} where {self.next_seq} was due")
        self.next_seq = hi + 1
        self.covered = max(self.covered, hi)

    def summary(self):
        return (f"{self.name} (worker {self.slot}, port {self.local_port}): {self.messages} messages, "
                f"through seq {self.covered}, gaps {self.gaps[:5]}, problems {self.problems}, "
                f"close {self.close_code} {self.close_reason!r}")


async def open_many(port, names, rcvbuf=None, batch=100, timeout=20):
    """FanSubs named `names`, opened `batch` at a time."""
    subs = []
    deadline = time.monotonic() + timeout * SLOW
    try:
        for k in range(0, len(names), batch):
            left = max(deadline - time.monotonic(), 0.001) / SLOW
            got = await asyncio.gather(*(FanSub.open(port, nm, rcvbuf, timeout=left)
                                         for nm in names[k:k + batch]), return_exceptions=True)
            subs += [s for s in got if isinstance(s, FanSub)]
            errors = [e for e in got if not isinstance(e, FanSub)]
            if errors:
                raise AssertionError(f"{len(errors)} of {len(got)} connections failed: {errors[0]!r}")
    except BaseException:
        for s in subs:
            s.close()
        raise
    return subs
