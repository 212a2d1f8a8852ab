"""Plain HTTP on the WebSocket port (docs/PROTOCOL.md "Plain HTTP on the same port"), driven by
curl and by a raw socket: /health, /health/detailed, /metrics, 404s, and
the refusals of requests that are too big, malformed or too slow."""
import json
import socket
import subprocess
import time

import pytest

from conftest import SLOW, metric, parse_metrics
import wsframes as wf


def curl(*args, timeout=10):
    """Run curl; return (http_code, headers_text, body_text)."""
    out = subprocess.run(["curl", "-s", "--http1.1", "-D", "-", "-o", "-",
                          "--max-time", str(int(timeout * SLOW)), *args],
                         capture_output=True, timeout=timeout * SLOW + 5)
    raw = out.stdout.decode("utf-8", "replace")
    head, _, body = raw.partition("\r\n\r\n")
    status = int(head.split(" ", 2)[1]) if head.startswith("HTTP/") else None
    return status, head, body


def header_value(head, name):
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


def test_health_get_curl(gateway):
    status, head, body = curl(f"http://127.0.0.1:{gateway.port}/health")
    assert status == 200, head
    assert json.loads(body) == {"status": "ok"}
    assert header_value(head, "Content-Type").startswith("application/json")


def test_health_get_raw_and_connection_closed(gateway):
    resp, closed = wf.get(gateway.port, "/health")
    assert resp.status == 200
    assert resp.json() == {"status": "ok"}
    assert int(resp.header("content-length")) == len(resp.body)
    assert closed, "every plain HTTP response closes the connection"


def test_health_head_has_no_body(gateway):
    # HEAD: the same status and Content-Length as GET, but not a byte of body.
    with wf.connect(gateway.port) as s:
        s.sendall(f"HEAD /health HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n\r\n".encode())
        reader = wf.Reader(s)
        rest = reader.read_to_eof(wf.deadline_in())
    head, sep, body = rest.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 200"), rest
    assert b"content-length: 16" in head.lower()
    assert body == b""
    status, head, _ = curl("-I", f"http://127.0.0.1:{gateway.port}/health")
    assert status == 200, head


def test_health_query_string_ignored(gateway):
    resp, _ = wf.get(gateway.port, "/health?probe=1")
    assert resp.status == 200 and resp.json() == {"status": "ok"}


def test_health_detailed_fields(gateway):
    status, head, body = curl(f"http://127.0.0.1:{gateway.port}/health/detailed")
    assert status == 200, head
    doc = json.loads(body)
    assert doc["status"] == "ok"
    assert isinstance(doc["version"], str) and doc["version"]
    uptime = doc.get("uptime_s", doc.get("uptime"))
    assert isinstance(uptime, (int, float)) and uptime >= 0
    assert isinstance(doc["config_generation"], int)
    workers = doc["workers"]
    assert len(workers) == gateway.config["workers"]
    for w in workers:
        assert isinstance(w["pid"], int) and w["pid"] > 0
        assert w["state"] == "running"
        assert isinstance(w["connections"], int)
        assert isinstance(w["restarts"], int)
        assert isinstance(w["started_at"], int)
    assert sorted(w["pid"] for w in workers) == sorted(gateway.worker_pids())
    assert doc["connections"]["limit"] == 10000
    assert isinstance(doc["connections"]["active"], int)
    assert "streams" in doc
    assert "broker" in doc
    resp, closed = wf.get(gateway.port, "/health/detailed", method="HEAD")
    assert resp.status == 200 and resp.body == b"" and closed


def test_health_detailed_counts_open_connection(gateway_factory):
    gw = gateway_factory(config={"workers": 1})
    def one_open():
        doc = gw.detailed()
        return doc if doc["connections"]["active"] == 1 else None

    with wf.open_ws(gw.port):
        doc = wf.wait_for(one_open)
        assert doc, gw.detailed()
        assert doc["workers"][0]["connections"] == 1
    assert wf.wait_for(lambda: gw.detailed()["connections"]["active"] == 0)


def test_metrics_text_format(gateway):
    status, head, body = curl(f"http://127.0.0.1:{gateway.port}/metrics")
    assert status == 200, head
    ctype = header_value(head, "Content-Type")
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype
    samples = parse_metrics(body)  # asserts every line is well-formed
    types = {}
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
    assert types.get("websocket_connections_total") == "counter"
    assert types.get("websocket_connections_active") == "gauge"
    assert types.get("websocket_message_latency_seconds") == "histogram"
    assert metric(samples, "websocket_max_connections") == 10000
    for (name, labels), _ in samples.items():
        assert ("environment", "test") in labels, name


@pytest.mark.parametrize("path", ["/", "/nope", "/health/", "/healthz", "/ws/x", "/metrics/x"])
def test_unknown_path_404(gateway, path):
    resp, closed = wf.get(gateway.port, path)
    assert resp.status == 404, resp
    assert closed


def test_unknown_path_404_curl(gateway):
    status, head, _ = curl(f"http://127.0.0.1:{gateway.port}/does-not-exist")
    assert status == 404, head


@pytest.mark.parametrize("path", ["/health", "/ws", "/metrics"])
def test_post_is_404(gateway, path):
    status, head, _ = curl("-X", "POST", "-d", '{"x":1}', f"http://127.0.0.1:{gateway.port}{path}")
    assert status == 404, head


def test_get_ws_without_upgrade_426(gateway):
    status, head, body = curl(f"http://127.0.0.1:{gateway.port}/ws")
    assert status == 426, head
    assert header_value(head, "Upgrade").lower() == "websocket"
    resp, closed = wf.get(gateway.port, "/ws", method="HEAD")
    assert resp.status == 426 and resp.header("upgrade").lower() == "websocket"
    assert resp.body == b"" and closed


def test_ws_missing_key_426(gateway):
    resp, closed = wf.get(gateway.port, "/ws", headers=[("Upgrade", "websocket"),
                                                        ("Connection", "Upgrade"),
                                                        ("Sec-WebSocket-Version", "13")])
    assert resp.status == 426 and resp.header("upgrade").lower() == "websocket"
    assert closed


def test_bad_key_400_curl(gateway):
    status, head, _ = curl("-H", "Connection: Upgrade", "-H", "Upgrade: websocket",
                           "-H", "Sec-WebSocket-Key: not-a-key", "-H", "Sec-WebSocket-Version: 13",
                           f"http://127.0.0.1:{gateway.port}/ws")
    assert status == 400, head
    assert header_value(head, "Sec-WebSocket-Version") == "13"


@pytest.mark.parametrize("key", ["", "abc", "dGhlIHNhbXBsZSBub25jZQ", "dGhlIHNhbXBsZSBub25jZQ=",
                                 "dGhlIHNhbXBsZSBub25jZQ==AA", "!!!!!!!!!!!!!!!!!!!!!!==",
                                 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"])
def test_bad_key_400(gateway, key):
    req = wf.upgrade_request(gateway.port, key=key)
    resp, closed = wf.http_exchange(gateway.port, req)
    assert resp.status == 400, (key, resp)
    assert resp.header("sec-websocket-version") == "13"
    assert closed


@pytest.mark.parametrize("version", ["12", "8", "14", "13, 12", "thirteen"])
def test_bad_version_400(gateway, version):
    req = wf.upgrade_request(gateway.port, version=version)
    resp, closed = wf.http_exchange(gateway.port, req)
    assert resp.status == 400, (version, resp)
    assert resp.header("sec-websocket-version") == "13"
    assert closed


def test_handshake_errors_counted(gateway):
    before = metric(gateway.metrics(), "websocket_connection_errors_total", error_type="handshake")
    resp, _ = wf.http_exchange(gateway.port, wf.upgrade_request(gateway.port, version="12"))
    assert resp.status == 400
    assert wf.wait_for(lambda: metric(gateway.metrics(), "websocket_connection_errors_total",
                                      error_type="handshake") == before + 1)


def test_oversized_head_431_and_closed(gateway):
    big = "x" * 9000
    req = (f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {big}\r\n\r\n").encode()
    resp, closed = wf.http_exchange(gateway.port, req)
    assert resp.status in (431, 400), resp
    assert closed


def test_oversized_head_without_terminator_431(gateway):
    # More than 8 KiB of headers and the head never ends: refused, not buffered.
    with wf.connect(gateway.port) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for i in range(120):  # ~9 KiB in all
            try:
                s.sendall(f"X-Filler-{i:03d}: {'y' * 60}\r\n".encode())
            except (ConnectionResetError, BrokenPipeError):
                break  # refused while we were still sending: read the answer
        reader = wf.Reader(s)
        resp = wf.read_response(reader, wf.deadline_in())
        assert resp.status in (431, 400), resp
        assert wf.wait_closed(s, reader)


def test_many_headers_refused(gateway):
    lines = "".join(f"X-H{i}: v\r\n" for i in range(100))
    req = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}\r\n".encode()
    resp, closed = wf.http_exchange(gateway.port, req)
    assert resp.status in (431, 400), resp
    assert closed


@pytest.mark.parametrize("req", [
    b"GARBAGE\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n",
    b"GET /health HTTP/9.9x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
])
def test_malformed_request_400(gateway, req):
    resp, closed = wf.http_exchange(gateway.port, req)
    assert resp.status == 400, (req, resp)
    assert closed


def test_stalled_head_closed_after_handshake_timeout(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "handshake_timeout": 1})
    before = metric(gw.metrics(), "websocket_connection_errors_total", error_type="timeout")
    with wf.connect(gw.port) as s:
        start = time.monotonic()
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webso")
        reader = wf.Reader(s)
        data = reader.read_to_eof(wf.deadline_in(6))
        elapsed = time.monotonic() - start
        assert reader.eof, "connection still open after handshake_timeout"
    # Not before the timeout (the head was incomplete, not wrong) ...
    assert elapsed >= 0.9, elapsed
    # ... and if anything was said, it is a 408.
    if data:
        assert data.startswith(b"HTTP/1.1 408"), data
    assert wf.wait_for(lambda: metric(gw.metrics(), "websocket_connection_errors_total",
                                      error_type="timeout") == before + 1)


def test_silent_connection_closed_after_handshake_timeout(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "handshake_timeout": 1})
    with wf.connect(gw.port) as s:
        assert wf.wait_closed(s, timeout=6), "a connection that never sends is never closed"


def test_handshake_timeout_does_not_hit_fast_clients(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "handshake_timeout": 1})
    with wf.open_ws(gw.port) as ws:
        time.sleep(1.6)
        assert ws.request({"type": "ping", "id": 1})["type"] == "pong"
