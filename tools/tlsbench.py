#!/usr/bin/python3
"""tlsbench — what TLS costs on wsgate, next to plain ws://, until wsbench
speaks TLS.

Three measurements, each run plain and over TLS against the same gateway
build (two gateways: one plain port, one TLS port), from this one Python
process (so absolute numbers include Python's own cost; compare the two
columns):

  handshakes  sequential new connections for --seconds: TCP connect, TLS
              handshake (TLS column), WebSocket upgrade, close. Rate and
              latency percentiles.
  ping        one connection, --pings sequential application pings
              ({"type":"ping"} -> pong); RTT percentiles.
  idle        --idle connections held open after the upgrade; the gateway's
              RSS growth per connection (master and workers, from /proc of
              --pid), after a few seconds so quiet sessions shed buffers.

Loopback only: this is a local benchmark.

  tools/tlsbench.py --plain-port 8003 --tls-port 8443 --ca ca.pem \
      [--plain-pid PID --tls-pid PID] [--seconds 10] [--pings 2000] [--idle 1000]
"""
import argparse
import base64
import json
import os
import socket
import ssl
import statistics
import struct
import time


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))]


def connect(port, ctx):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if ctx:
        s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    return s


def upgrade(s, port):
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    for _ in range(1000):
        if b"\r\n\r\n" in buf:
            break
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed during upgrade")
        buf += chunk
    assert buf.startswith(b"HTTP/1.1 101"), buf[:80]
    return buf.split(b"\r\n\r\n", 1)[1]


def text_frame(payload):
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    return head + mask + body


def read_frame(s, buf):
    """(opcode, payload, rest)."""
    for _ in range(10000):
        if len(buf) >= 2:
            n = buf[1] & 0x7F
            off = 2
            if n == 126 and len(buf) >= 4:
                n, off = struct.unpack("!H", buf[2:4])[0], 4
            elif n == 127 and len(buf) >= 10:
                n, off = struct.unpack("!Q", buf[2:10])[0], 10
            if n < 126 or off > 2:
                if len(buf) >= off + n:
                    return buf[0] & 0x0F, buf[off:off + n], buf[off + n:]
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    raise RuntimeError("no frame")


def bench_handshakes(port, ctx, seconds):
    times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(times) < 1000000:
        t0 = time.monotonic()
        s = connect(port, ctx)
        upgrade(s, port)
        times.append(time.monotonic() - t0)
        s.close()
    return {"count": len(times), "per_s": len(times) / seconds,
            "p50_ms": percentile(times, 50) * 1e3, "p99_ms": percentile(times, 99) * 1e3}


def bench_ping(port, ctx, pings):
    s = connect(port, ctx)
    buf = upgrade(s, port)
    rtts = []
    for i in range(pings):
        msg = json.dumps({"type": "ping", "id": i}).encode()
        t0 = time.monotonic()
        s.sendall(text_frame(msg))
        for _ in range(100):
            op, payload, buf = read_frame(s, buf)
            if op == 1:
                break
        rtts.append(time.monotonic() - t0)
        assert json.loads(payload)["id"] == i
    s.close()
    return {"count": len(rtts), "p50_us": percentile(rtts, 50) * 1e6,
            "p99_us": percentile(rtts, 99) * 1e6, "mean_us": statistics.mean(rtts) * 1e6}


def rss_kib(pid):
    """RSS of pid and its children (the master and its workers)."""
    total = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def bench_idle(port, ctx, count, pid):
    before = rss_kib(pid) if pid else 0
    conns = []
    try:
        for _ in range(count):
            s = connect(port, ctx)
            upgrade(s, port)
            conns.append(s)
        time.sleep(3)  # past the quiet threshold: idle sessions shed buffers
        after = rss_kib(pid) if pid else 0
    finally:
        for s in conns:
            s.close()
    return {"count": count,
            "rss_per_conn_kib": (after - before) / count if pid else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plain-port", type=int, required=True)
    ap.add_argument("--tls-port", type=int, required=True)
    ap.add_argument("--ca", required=True, help="CA that signed the gateway's certificate")
    ap.add_argument("--plain-pid", type=int)
    ap.add_argument("--tls-pid", type=int)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--pings", type=int, default=2000)
    ap.add_argument("--idle", type=int, default=1000)
    a = ap.parse_args()
    ctx = ssl.create_default_context(cafile=a.ca)
    out = {}
    for name, port, c, pid in (("plain", a.plain_port, None, a.plain_pid),
                               ("tls", a.tls_port, ctx, a.tls_pid)):
        out[name] = {
            "handshakes": bench_handshakes(port, c, a.seconds),
            "ping": bench_ping(port, c, a.pings),
            "idle": bench_idle(port, c, a.idle, pid),
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
