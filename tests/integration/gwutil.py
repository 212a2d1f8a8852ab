"""Helpers for the process, config, metrics and supervision tests: a small
raw-socket WebSocket client (independent of the server's code and of the
`websockets` library, so framing is under the test's control), bounded
waiting, and process/shared-memory inspection.

Every wait here is bounded by a deadline scaled by conftest.SLOW.
"""
import base64
import hashlib
import json
import os
import select
import socket
import struct
import time

from conftest import SLOW

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class Closed(Exception):
    """The peer closed the TCP connection (EOF or reset)."""


def wait_for(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a truthy value; return it. Bounded by
    timeout*SLOW seconds (and by a poll count); raises AssertionError."""
    deadline = time.monotonic() + timeout * SLOW
    last = None
    for _ in range(int(timeout * SLOW / interval) + 100):
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout * SLOW:.1f}s waiting for {what} (last: {last!r})")


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return False
    state = data.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def pids_with_arg(arg):
    """Live processes whose command line contains arg (e.g. a config path)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if arg.encode() in argv and pid_alive(int(d)):
            out.append(int(d))
    return out


def shm_path(port):
    return f"/dev/shm/wsgate-{port}"


def workers_by_slot(doc):
    return {w["slot"]: w for w in doc["workers"]}


class RawWS:
    """A blocking raw-socket WebSocket client."""

    def __init__(self, port, path="/ws", timeout=5.0, host="127.0.0.1", extra_headers="",
                 handshake=True):
        self.timeout = timeout * SLOW
        self.sock = socket.create_connection((host, port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.port = port
        self.path = path
        self.extra_headers = extra_headers
        self.status = None
        self.headers = {}
        self.body = b""
        self.eof = False
        if handshake:
            self.send_request()
            self.read_response()

    # -- handshake ---------------------------------------------------------
    def send_request(self):
        self.key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n"
               f"{self.extra_headers}\r\n")
        self.sock.sendall(req.encode())

    def read_response(self):
        """Read the HTTP response head; returns the status code. A non-101
        answer's body (Content-Length) is read into self.body."""
        deadline = time.monotonic() + self.timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        if self.status == 101:
            expect = base64.b64encode(hashlib.sha1(self.key.encode() + GUID).digest()).decode()
            assert self.headers.get("sec-websocket-accept") == expect, self.headers
        else:
            n = int(self.headers.get("content-length", "0"))
            while len(self.buf) < n:
                self._fill(deadline)
            self.body, self.buf = self.buf[:n], self.buf[n:]
        return self.status

    # -- I/O ---------------------------------------------------------------
    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data from the server in time")
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            raise TimeoutError("no data from the server in time")
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError) as e:
            self.eof = True
            raise Closed(str(e))
        if not data:
            self.eof = True
            raise Closed("EOF")
        self.buf += data

    def send_raw(self, data):
        self.sock.sendall(data)

    @staticmethod
    def frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
        if isinstance(payload, str):
            payload = payload.encode()
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            hdr = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, mbit | 127, n)
        if not mask:
            return hdr + payload
        key = os.urandom(4)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return hdr + key + masked

    def send_frame(self, opcode, payload=b"", fin=True, mask=True):
        data = self.frame(opcode, payload, fin, mask)
        self.sock.sendall(data)
        return len(data)

    def send_json(self, obj):
        return self.send_frame(OP_TEXT, json.dumps(obj))

    def send_close(self, code=1000, reason=b""):
        return self.send_frame(OP_CLOSE, struct.pack("!H", code) + reason)

    def recv_frame(self, timeout=None):
        """(fin, opcode, payload) of the next frame; raises TimeoutError,
        Closed."""
        deadline = time.monotonic() + (timeout * SLOW if timeout is not None else self.timeout)
        while True:
            if len(self.buf) >= 2:
                b0, b1 = self.buf[0], self.buf[1]
                assert not b1 & 0x80, "server frames must not be masked"
                n = b1 & 0x7F
                off = 2
                if n == 126:
                    if len(self.buf) >= 4:
                        n = struct.unpack("!H", self.buf[2:4])[0]
                        off = 4
                    else:
                        n = None
                elif n == 127:
                    if len(self.buf) >= 10:
                        n = struct.unpack("!Q", self.buf[2:10])[0]
                        off = 10
                    else:
                        n = None
                if n is not None and len(self.buf) >= off + n:
                    payload = self.buf[off:off + n]
                    self.buf = self.buf[off + n:]
                    return bool(b0 & 0x80), b0 & 0x0F, payload
            self._fill(deadline)

    def recv(self, timeout=None, answer_pings=True):
        """Next data or close frame (server pings answered and skipped):
        (opcode, payload)."""
        deadline = time.monotonic() + (timeout * SLOW if timeout is not None else self.timeout)
        for _ in range(10000):
            left = max(0.0, deadline - time.monotonic()) / SLOW
            fin, op, payload = self.recv_frame(timeout=left)
            if op == OP_PING:
                if answer_pings:
                    self.send_frame(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            return op, payload
        raise AssertionError("too many control frames")

    def recv_json(self, timeout=None):
        op, payload = self.recv(timeout)
        assert op == OP_TEXT, (op, payload)
        return json.loads(payload)

    def ping(self, id_=1, timeout=None):
        """Application-level ping; returns the pong."""
        self.send_json({"type": "ping", "id": id_})
        reply = self.recv_json(timeout)
        assert reply.get("type") == "pong" and reply.get("id") == id_, reply
        return reply

    def expect_close(self, timeout=None, reply=True):
        """Read until the server's close frame; returns (code, reason,
        [text messages received before it]). Answers the close when reply."""
        msgs = []
        for _ in range(1000):
            op, payload = self.recv(timeout)
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                if reply:
                    try:
                        self.send_frame(OP_CLOSE, payload[:2])
                    except OSError:
                        pass
                return code, payload[2:].decode("utf-8", "replace"), msgs
            msgs.append((op, payload))
        raise AssertionError("no close frame")

    def wait_eof(self, timeout=None):
        """True once the server has closed the TCP connection."""
        deadline = time.monotonic() + (timeout * SLOW if timeout is not None else self.timeout)
        try:
            for _ in range(100000):
                self._fill(deadline)
                self.buf = b""
        except Closed:
            return True
        except TimeoutError:
            return False
        return False

    def close_clean(self, code=1000):
        """Client-initiated close handshake; returns the server's close code."""
        self.send_close(code)
        rcode, _, _ = self.expect_close(reply=False)
        self.wait_eof()
        self.sock.close()
        return rcode

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def has_data(self, timeout=0.0):
        if self.buf:
            return True
        r, _, _ = select.select([self.sock], [], [], timeout * SLOW)
        return bool(r)


def open_many(port, n, timeout=10.0):
    """Open n WebSocket connections concurrently: connect all sockets, send
    every request, then read every response. Returns the RawWS objects."""
    clients = []
    try:
        for _ in range(n):
            clients.append(RawWS(port, timeout=timeout, handshake=False))
        for c in clients:
            c.send_request()
        for c in clients:
            assert c.read_response() == 101, (c.status, c.body)
    except BaseException:
        for c in clients:
            c.close()
        raise
    return clients


def close_all(clients):
    for c in clients:
        c.close()
