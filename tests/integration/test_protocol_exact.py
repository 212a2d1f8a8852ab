"""The protocol exactly as written (issue 19), each found by trying the
gateway as a new user against PROTOCOL.md:

- a request line without an HTTP version is a 400, on 8003 and on the
  master's metrics_port; HTTP/2 on a request line is a 505; HTTP/1.0 works;
- a request's `id` comes back as the very bytes the client sent, in every
  reply that carries it (pong, subscribed, unsubscribed, ack, error,
  authenticated, rate_limited), whatever JSON value it is;
- /health/detailed names its uptime `uptime` (seconds).
"""
import json
import time

import pytest

from conftest import SLOW
import jwtutil
from streamclient import raw_members
import wsframes as wf


def raw_exchange(port, request, timeout=5):
    """Send raw bytes, read to EOF; (status line, body bytes)."""
    with wf.connect(port) as s:
        s.sendall(request)
        data = wf.Reader(s).read_to_eof(wf.deadline_in(timeout))
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(), body


@pytest.mark.parametrize("which", ["port", "metrics_port"])
def test_request_line_without_http_version_is_400(gateway, which):
    port = getattr(gateway, which)
    for path in (b"/health", b"/health/detailed", b"/metrics", b"/ws"):
        line, body = raw_exchange(port, b"GET " + path + b"\r\n\r\n")
        assert line.startswith("HTTP/1.1 400 "), (path, line, body)
        doc = json.loads(body)
        assert doc["status"] == 400 and "version" in doc["error"], doc
    # the same request with a header after it (http-parser reads on)
    line, _ = raw_exchange(port, b"GET /health\r\nHost: x\r\n\r\n")
    assert line.startswith("HTTP/1.1 400 "), line
    line, body = raw_exchange(port, b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n")
    assert line.startswith("HTTP/1.1 505 "), (line, body)
    assert "version" in json.loads(body)["error"]
    # HTTP/1.0 and 1.1 still get their answer
    for version in (b"HTTP/1.0", b"HTTP/1.1"):
        line, body = raw_exchange(port, b"GET /health " + version + b"\r\nHost: x\r\n\r\n")
        assert line.startswith("HTTP/1.1 200 "), (version, line)
        assert json.loads(body) == {"status": "ok"}


def test_version_less_request_counts_as_handshake_error(gateway):
    before = gateway.metrics()
    raw_exchange(gateway.port, b"GET /health\r\n\r\n")
    key = ("websocket_connection_errors_total",
           frozenset({"environment": "test", "error_type": "handshake"}.items()))
    deadline = time.monotonic() + 3 * SLOW
    while gateway.metrics()[key] != before[key] + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.metrics()[key] == before[key] + 1
    assert any(l.get("status") == 400 and "version" in l.get("message", "")
               for l in gateway.logs() if l.get("event") == "error"), gateway.stderr()


# Every id the protocol allows, as a client may spell it.
RAW_IDS = [
    "123456789012345678901234567890",
    "-123456789012345678901234567890",
    "-7",
    "0.1",
    "2.50",
    "-0.0",
    "1E+2",
    '"x\\u00e9\\n\\"q\\""',
    '"\\ud83d\\ude00"',
    '{"b": [1, 2.0, {"c": null}], "a": "z"}',
    "[ ]",
    "null",
    "true",
    "18446744073709551616",
]


def recv_text(ws, timeout=5):
    """The next text message's raw payload (server pings skipped)."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        fin, _, op, payload = ws.recv_frame(max(0.01, deadline - time.monotonic()) / SLOW)
        if op == wf.OP_TEXT:
            assert fin
            return payload.decode()


def ask(ws, text):
    ws.send_text(text)
    reply = recv_text(ws)
    return json.loads(reply), raw_members(reply)


def test_id_echoed_verbatim_in_every_reply(gateway):
    ws = wf.open_ws(gateway.port)
    try:
        for i, rid in enumerate(RAW_IDS):
            stream = f"exact/{i}"
            doc, raw = ask(ws, '{"type":"ping","id":%s}' % rid)
            assert doc["type"] == "pong" and raw["id"] == rid, (rid, raw)
            doc, raw = ask(ws, '{"id": %s , "type":"subscribe","stream":"%s"}' % (rid, stream))
            assert doc["type"] == "subscribed" and raw["id"] == rid, (rid, raw)
            # the ack and our own publish delivered to us, in either order
            ws.send_text('{"type":"publish","stream":"%s","data":1,"id":%s}' % (stream, rid))
            got = {}
            for _ in range(2):
                text = recv_text(ws)
                got[json.loads(text)["type"]] = text
            assert set(got) == {"ack", "message"}, got
            assert raw_members(got["ack"])["id"] == rid, (rid, got)
            assert "id" not in raw_members(got["message"]), got
            doc, raw = ask(ws, '{"type":"unsubscribe","stream":"%s","id":%s}' % (stream, rid))
            assert doc["type"] == "unsubscribed" and raw["id"] == rid, (rid, raw)
            # refusals: unknown type, bad stream name, not subscribed, auth disabled
            for bad in ('{"type":"nope","id":%s}',
                        '{"type":"subscribe","stream":"bad name!","id":%s}',
                        '{"type":"unsubscribe","stream":"never/here","id":%s}',
                        '{"type":"auth","token":"t","id":%s}'):
                doc, raw = ask(ws, bad % rid)
                assert doc["type"] == "error" and raw["id"] == rid, (bad, rid, raw)
    finally:
        ws.close_socket()


def test_id_echoed_verbatim_when_rate_limited(gateway_factory):
    gw = gateway_factory({"workers": 1, "max_messages_per_second": 1, "message_burst": 1})
    ws = wf.open_ws(gw.port)
    try:
        rid = "123456789012345678901234567890"
        ws.send_text('{"type":"ping","id":1}')
        ws.send_text('{"type":"ping","id":%s}' % rid)
        first = json.loads(recv_text(ws))
        assert first["type"] == "pong", first
        reply = recv_text(ws)
        assert json.loads(reply)["code"] == "rate_limited", reply
        assert raw_members(reply)["id"] == rid, reply
    finally:
        ws.close_socket()


def test_id_echoed_verbatim_by_auth(gateway_factory, tmp_path):
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    keys = jwtutil.Keys(keys_dir)
    gw = gateway_factory({"workers": 1, "auth_mode": "jwt", "jwt_algorithms": ["HS256"],
                          "jwt_key_file": keys.secret_path})
    token = jwtutil.token(jwtutil.claims(), keys.secret)
    ws = wf.open_ws(gw.port, headers=[("Authorization", "Bearer " + token)])
    try:
        rid = '{"n": 123456789012345678901234567890}'
        fresh = jwtutil.token(jwtutil.claims(), keys.secret)
        doc, raw = ask(ws, '{"type":"auth","token":"%s","id":%s}' % (fresh, rid))
        assert doc["type"] == "authenticated" and raw["id"] == rid, raw
        doc, raw = ask(ws, '{"type":"auth","token":"garbage","id":%s}' % rid)
        assert doc["type"] == "error" and doc["code"] == "unauthorized" and raw["id"] == rid, raw
        doc, raw = ask(ws, '{"type":"publish","stream":"not/granted","data":1,"id":%s}' % rid)
        assert doc["code"] == "forbidden" and raw["id"] == rid, raw
    finally:
        ws.close_socket()


def test_health_detailed_names_uptime(gateway):
    time.sleep(0.2)
    for port in (gateway.port, gateway.metrics_port):
        doc = gateway.detailed(port=port)
        assert isinstance(doc["uptime"], (int, float)) and doc["uptime"] > 0, doc
        assert abs(doc["uptime"] - doc["uptime_s"]) < 1, doc


def test_port_answers_draining_until_workers_exit(gateway_factory):
    """During a drain the WebSocket port keeps answering (README, PROTOCOL.md,
    the runbook's readiness probe): /health 503 draining, /health/detailed
    503, an upgrade 503 with Retry-After; it closes when the workers exit."""
    import signal
    import socket
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600, "handshake_timeout": 60,
                          "shutdown_timeout": 60})
    # idle connections hold both workers' drain open (a worker exits when
    # its last connection is gone)
    idle = [socket.create_connection(("127.0.0.1", gw.port), timeout=5 * SLOW) for _ in range(8)]
    try:
        time.sleep(0.3)
        gw.signal(signal.SIGTERM)
        deadline = time.monotonic() + 3 * SLOW
        while gw.http("/health", port=gw.metrics_port)[0] != 503:
            assert time.monotonic() < deadline, "master /health never said draining"
            time.sleep(0.05)
        time.sleep(0.3)  # both workers have had the signal
        for _ in range(6):
            line, body = raw_exchange(gw.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert line.startswith("HTTP/1.1 503 "), line
            assert json.loads(body) == {"status": "draining"}, body
            status, body = gw.http("/health/detailed")
            assert status == 503 and json.loads(body)["status"] == "draining", body
            ws = wf.RawWS(gw.port)
            try:
                resp = ws.handshake(expect=503)
                assert resp.header("retry-after"), resp
            finally:
                ws.close_socket()
        assert gw.proc.poll() is None
    finally:
        for s in idle:
            s.close()
    assert gw.proc.wait(timeout=5 * SLOW) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", gw.port), timeout=2)


def test_message_latency_counts_deliveries_only(gateway_factory):
    """websocket_message_latency_seconds: one sample per stream message
    delivered to a subscriber, none for replies. 10 messages to 2
    subscribers: exactly +20; the replies (subscribed, ack) go to
    websocket_request_duration_seconds{type} instead."""
    from conftest import metric
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600})
    before = gw.metrics()
    subs = [wf.open_ws(gw.port) for _ in range(2)]
    pub = wf.open_ws(gw.port)
    try:
        for s in subs:
            s.send_text('{"type":"subscribe","stream":"lat/1","id":1}')
            assert json.loads(recv_text(s))["type"] == "subscribed"
        for i in range(10):
            pub.send_text('{"type":"publish","stream":"lat/1","data":%d,"id":%d}' % (i, i))
            assert json.loads(recv_text(pub))["type"] == "ack"
        for s in subs:
            for i in range(10):
                assert json.loads(recv_text(s))["data"] == i
        pub.send_text('{"type":"ping","id":1}')
        assert json.loads(recv_text(pub))["type"] == "pong"
    finally:
        for c in subs + [pub]:
            c.close_socket()

    def moved(name, **labels):
        return metric(gw.metrics(), name, **labels) - metric(before, name, **labels)
    deadline = time.monotonic() + 3 * SLOW
    while moved("websocket_request_duration_seconds_count", type="ping") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert moved("websocket_message_latency_seconds_count") == 20
    assert moved("websocket_message_latency_seconds_bucket", le="+Inf") == 20
    assert moved("websocket_request_duration_seconds_count", type="subscribe") == 2
    assert moved("websocket_request_duration_seconds_count", type="publish") == 10
    assert moved("websocket_request_duration_seconds_count", type="ping") == 1
    for t in ("unsubscribe", "auth", "invalid"):
        assert moved("websocket_request_duration_seconds_count", type=t) == 0, t
