"""Independent WebSocket client pieces for the integration tests: RFC 6455
frames built and parsed by hand over a raw socket, so that every framing rule
of the gateway can be exercised exactly (masks, RSV bits, lengths, partial
writes), plus a small raw HTTP client.

Everything talks to 127.0.0.1 only. Every read is bounded by a deadline
scaled by conftest.SLOW (sanitizer builds are several times slower).
"""
import base64
import hashlib
import json
import os
import socket
import struct
import time

from conftest import SLOW

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# Default socket timeout for one read (seconds, before SLOW scaling).
TIMEOUT = 5.0
# Upper bound on recv() calls in any one read loop (besides its deadline).
MAX_READS = 100000


class Closed(Exception):
    """The server closed TCP (EOF or reset) while we waited for bytes."""


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def mask_bytes(payload, key):
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, mask_key=None, length=None):
    """One frame. `length` overrides the announced payload length (to announce
    bytes that never follow); `mask=False` sends an unmasked (illegal) frame."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return head + key + mask_bytes(payload, key)


def text(payload, **kw):
    return frame(OP_TEXT, payload, **kw)


def close_frame(code=None, reason=b"", **kw):
    body = b"" if code is None else struct.pack("!H", code) + reason
    return frame(OP_CLOSE, body, **kw)


def upgrade_request(port, path="/ws", key=None, headers=None, version="13", protocols=None,
                    method="GET"):
    """The bytes of an upgrade request; `headers` (list of (name, value)) are
    appended; pass None-valued defaults via headers to leave a header out."""
    key = key if key is not None else new_key()
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}"]
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    if protocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(port, timeout=TIMEOUT):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Response:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case name -> list of values
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:200]!r}>"


class Reader:
    """Buffered reads from a socket with deadlines."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline passed")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            raise Closed()
        self.buf += data

    def read_exact(self, n, deadline):
        for _ in range(MAX_READS):
            if len(self.buf) >= n:
                break
            self._fill(deadline)
        assert len(self.buf) >= n, "too many reads"
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_until(self, marker, deadline, limit=1 << 20):
        for _ in range(MAX_READS):
            if marker in self.buf:
                break
            if len(self.buf) > limit:
                raise AssertionError("no %r within %d bytes" % (marker, limit))
            self._fill(deadline)
        assert marker in self.buf, "too many reads"
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_to_eof(self, deadline):
        for _ in range(MAX_READS):
            try:
                self._fill(deadline)
            except Closed:
                out, self.buf = self.buf, b""
                return out
        raise AssertionError("too many reads before EOF")


def deadline_in(seconds=TIMEOUT):
    return time.monotonic() + seconds * SLOW


def read_response(reader, deadline, head_only=False):
    raw = reader.read_until(b"\r\n\r\n", deadline)
    lines = raw.decode("latin-1").split("\r\n")
    proto, status, *reason = lines[0].split(" ", 2)
    assert proto == "HTTP/1.1", lines[0]
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    body = b""
    length = headers.get("content-length")
    if not head_only and int(status) != 101 and length:
        body = reader.read_exact(int(length[0]), deadline)
    return Response(int(status), reason[0] if reason else "", headers, body, raw)


def http_exchange(port, request, timeout=TIMEOUT, head_only=None):
    """Send raw request bytes; return (Response, closed) where `closed` says
    whether the server closed the connection after answering."""
    if head_only is None:
        head_only = request.startswith(b"HEAD ")
    with connect(port, timeout) as s:
        s.sendall(request)
        reader = Reader(s)
        deadline = deadline_in(timeout)
        resp = read_response(reader, deadline, head_only=head_only)
        closed = wait_closed(s, reader, timeout)
        return resp, closed


def wait_closed(sock, reader=None, timeout=TIMEOUT):
    """True when the peer closes TCP within the timeout (data before EOF is
    discarded, bounded at 1 MiB)."""
    reader = reader or Reader(sock)
    deadline = deadline_in(timeout)
    total = 0
    try:
        while total < (1 << 20):
            reader._fill(deadline)
            total += len(reader.buf)
            reader.buf = b""
    except Closed:
        return True
    except socket.timeout:
        return False
    return False


def get(port, path, method="GET", headers=None, timeout=TIMEOUT):
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    req = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return http_exchange(port, req, timeout=timeout)


class RawWS:
    """A WebSocket client on a raw socket: the handshake and every frame by
    hand. Use as a context manager."""

    def __init__(self, port, timeout=TIMEOUT):
        self.port = port
        self.timeout = timeout
        self.sock = connect(port, timeout)
        self.reader = Reader(self.sock)
        self.response = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close_socket()

    def close_socket(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def handshake(self, extra=b"", protocols=None, headers=None, expect=101):
        key = new_key()
        req = upgrade_request(self.port, key=key, protocols=protocols, headers=headers)
        self.sock.sendall(req + extra)
        self.response = read_response(self.reader, deadline_in(self.timeout))
        assert self.response.status == expect, self.response
        if expect == 101:
            assert self.response.header("sec-websocket-accept") == accept_for(key), self.response
        return self.response

    def send(self, data):
        self.sock.sendall(data)

    def send_text(self, payload, **kw):
        self.sock.sendall(text(payload, **kw))

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def recv_frame(self, timeout=None):
        """(fin, rsv, opcode, payload) of the next server frame."""
        deadline = deadline_in(timeout or self.timeout)
        b0, b1 = self.reader.read_exact(2, deadline)
        assert not (b1 & 0x80), "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.reader.read_exact(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.reader.read_exact(8, deadline))[0]
        payload = self.reader.read_exact(n, deadline)
        return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, payload

    def recv_message(self, timeout=None, skip_pings=True):
        """The next text message as parsed JSON (server pings skipped)."""
        deadline = deadline_in(timeout or self.timeout)
        for _ in range(1000):
            fin, rsv, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()) / SLOW)
            if skip_pings and op in (OP_PING, OP_PONG):
                continue
            assert op == OP_TEXT and fin, (op, fin, payload)
            return json.loads(payload)
        raise AssertionError("only control frames")

    def request(self, obj, timeout=None):
        self.send_json(obj)
        return self.recv_message(timeout)

    def expect_close(self, timeout=None, expect_eof=True):
        """Read frames until the server's close frame; return (code, reason).
        Text and ping frames before it are ignored (bounded). With
        expect_eof, also require the server to close TCP right after."""
        deadline = deadline_in(timeout or self.timeout)
        for _ in range(10000):
            try:
                fin, rsv, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()) / SLOW)
            except Closed:
                raise AssertionError("TCP closed without a close frame")
            if op == OP_CLOSE:
                assert fin
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                if expect_eof:
                    assert wait_closed(self.sock, self.reader, timeout or self.timeout), \
                        "server did not close TCP after its close frame"
                return code, payload[2:]
        raise AssertionError("no close frame")


def open_ws(port, **kw):
    ws = RawWS(port)
    try:
        ws.handshake(**kw)
    except BaseException:
        ws.close_socket()
        raise
    return ws


def wait_for(predicate, timeout=TIMEOUT, interval=0.05):
    """Poll predicate() until truthy (returned) or the scaled timeout ends
    (returns the last falsy value)."""
    deadline = deadline_in(timeout)
    value = predicate()
    for _ in range(100000):
        if value or time.monotonic() >= deadline:
            break
        time.sleep(interval)
        value = predicate()
    return value
