"""WebSocket sessions beyond single frames: the application protocol's part
of issue 2 (ping/pong, errors), timeouts and heartbeats, the connection
limit, isolation between connections, and what the logs say (and never
say)."""
import asyncio
import json
import time
import uuid

import pytest
import websockets

from conftest import SLOW, metric
import wsframes as wf


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout * SLOW))


def disconnects(gw, reason):
    return metric(gw.metrics(), "websocket_disconnections_total", reason=reason)


# -- application protocol ----------------------------------------------------

@pytest.mark.parametrize("id_value", [1, "x", None, {"a": [1, 2]}, 0, -7, 1.5, True, "",
                                      [1, "two", None], "\u00e9\U0001F600", 2 ** 53])
def test_ping_pong_echoes_id(gateway, id_value):
    with wf.open_ws(gateway.port) as ws:
        reply = ws.request({"type": "ping", "id": id_value})
        assert reply["type"] == "pong"
        assert "id" in reply
        assert reply["id"] == id_value and type(reply["id"]) is type(id_value)
        assert set(reply) == {"type", "id", "ts"}


def test_ping_without_id_has_no_id_key(gateway):
    with wf.open_ws(gateway.port) as ws:
        reply = ws.request({"type": "ping"})
        assert reply["type"] == "pong"
        assert "id" not in reply
        assert set(reply) == {"type", "ts"}


def test_pong_ts_is_integer_ms_now(gateway):
    with wf.open_ws(gateway.port) as ws:
        before = int(time.time() * 1000)
        reply = ws.request({"type": "ping", "id": 1})
        after = int(time.time() * 1000)
        ts = reply["ts"]
        assert type(ts) is int, ts
        assert before - 5000 <= ts <= after + 5000, (before, ts, after)


def test_ping_pong_with_websockets_client(gateway):
    async def go():
        async with websockets.connect(gateway.ws_url, open_timeout=10 * SLOW) as ws:
            for i in range(5):
                await ws.send(json.dumps({"type": "ping", "id": i}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5 * SLOW))
                assert reply["type"] == "pong" and reply["id"] == i
            # A protocol-level ping from websockets is answered too.
            pong_waiter = await ws.ping(b"lib")
            await asyncio.wait_for(pong_waiter, 5 * SLOW)
    run(go())


def test_pipelined_requests_answered_in_order(gateway):
    with wf.open_ws(gateway.port) as ws:
        ws.send(b"".join(wf.text(json.dumps({"type": "ping", "id": i})) for i in range(50)))
        ids = [ws.recv_message()["id"] for _ in range(50)]
        assert ids == list(range(50))


BAD_REQUESTS = {
    "not_json": (b"hello", False),
    "truncated_json": (b'{"type":"ping"', False),
    "json_array": (b'[{"type":"ping"}]', False),
    "json_string": (b'"ping"', False),
    "json_number": (b"42", False),
    "json_null": (b"null", False),
    "empty": (b"", False),
    "missing_type": (b'{"id":7}', True),
    "type_not_string": (b'{"type":1,"id":7}', True),
    "type_null": (b'{"type":null,"id":7}', True),
    "unknown_type": (b'{"type":"dance","id":7}', True),
    "type_case": (b'{"type":"PING","id":7}', True),
}


@pytest.mark.parametrize("payload,has_id", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_bad_request_gets_error_and_connection_stays_open(gateway, payload, has_id):
    with wf.open_ws(gateway.port) as ws:
        ws.send(wf.text(payload))
        err = ws.recv_message()
        assert err["type"] == "error", err
        assert err["code"] == "bad_request", err
        assert isinstance(err["message"], str) and err["message"]
        if has_id:
            assert err["id"] == 7
        else:
            assert "id" not in err
        # The connection is still usable.
        reply = ws.request({"type": "ping", "id": "after"})
        assert reply["type"] == "pong" and reply["id"] == "after"


def test_error_echoes_null_and_object_ids(gateway):
    with wf.open_ws(gateway.port) as ws:
        for id_value in (None, {"k": [1]}, "s"):
            err = ws.request({"type": "nope", "id": id_value})
            assert err["type"] == "error" and err["code"] == "bad_request"
            assert "id" in err and err["id"] == id_value


def test_many_bad_requests_never_close(gateway):
    with wf.open_ws(gateway.port) as ws:
        ws.send(b"".join(wf.text(b"not json %d" % i) for i in range(100)))
        for _ in range(100):
            assert ws.recv_message()["code"] == "bad_request"
        assert ws.request({"type": "ping", "id": 1})["id"] == 1


def test_auth_refused_while_authentication_is_off(gateway):
    # Without auth configured, {"type":"auth"} is a bad_request naming the
    # type; the stream requests are served (test_streams.py covers them).
    with wf.open_ws(gateway.port) as ws:
        err = ws.request({"type": "auth", "token": "x", "id": 1})
        assert err["type"] == "error" and err["code"] == "bad_request", err
        assert err["id"] == 1
        assert "auth" in err["message"], err
        sub = ws.request({"type": "subscribe", "stream": "patient/1/ecg", "id": 2})
        assert sub["type"] == "subscribed" and sub["id"] == 2, sub
        assert ws.request({"type": "ping", "id": 4})["id"] == 4


# -- close handshake, idle timeout, heartbeat -----------------------------------

def test_websockets_clean_close_counted_client_close(gateway):
    before = disconnects(gateway, "client_close")

    async def go():
        async with websockets.connect(gateway.ws_url, open_timeout=10 * SLOW,
                                      close_timeout=5 * SLOW) as ws:
            await ws.send(json.dumps({"type": "ping"}))
            await asyncio.wait_for(ws.recv(), 5 * SLOW)
            await ws.close(code=1000, reason="done")
            assert ws.close_code == 1000
    run(go())
    assert wf.wait_for(lambda: disconnects(gateway, "client_close") == before + 1)
    assert metric(gateway.metrics(), "websocket_disconnections_total", reason="error") == 0


def test_client_closing_tcp_without_close_frame(gateway):
    with wf.open_ws(gateway.port) as ws:
        assert ws.request({"type": "ping"})["type"] == "pong"
    assert wf.wait_for(lambda: gateway.detailed()["connections"]["active"] == 0)


def test_idle_timeout_closes_with_1001(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "connection_timeout": 2})
    before = disconnects(gw, "timeout")
    with wf.open_ws(gw.port) as ws:
        start = time.monotonic()
        code, reason = ws.expect_close(timeout=10, expect_eof=False)
        elapsed = time.monotonic() - start
        assert code == 1001
        assert elapsed >= 1.5, elapsed  # not before connection_timeout
        # Complete the closing handshake from our side.
        ws.send(wf.close_frame(1001))
        assert wf.wait_closed(ws.sock, ws.reader)
    assert wf.wait_for(lambda: disconnects(gw, "timeout") == before + 1)

    def logged():
        return [l for l in gw.logs() if l.get("event") == "disconnect"
                and l.get("reason") == "timeout" and l.get("code") == 1001]
    assert wf.wait_for(logged), gw.stderr()


def test_idle_timeout_without_close_reply_still_closes(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "connection_timeout": 1})
    with wf.open_ws(gw.port) as ws:
        code, _ = ws.expect_close(timeout=10, expect_eof=False)
        assert code == 1001
        # We never answer: the server gives up waiting and closes TCP.
        assert wf.wait_closed(ws.sock, ws.reader, timeout=10)


def test_activity_keeps_connection_open(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "connection_timeout": 2})
    with wf.open_ws(gw.port) as ws:
        end = time.monotonic() + 3.5
        for _ in range(100):
            if time.monotonic() >= end:
                break
            assert ws.request({"type": "ping"})["type"] == "pong"
            time.sleep(0.5)
        assert ws.request({"type": "ping", "id": "alive"})["id"] == "alive"


def test_pongs_count_as_activity(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "connection_timeout": 2, "heartbeat_interval": 1})
    with wf.open_ws(gw.port) as ws:
        end = time.monotonic() + 4.0
        for _ in range(200):
            if time.monotonic() >= end:
                break
            try:
                fin, rsv, op, payload = ws.recv_frame(timeout=0.3)
            except wf.socket.timeout:
                continue
            assert op == wf.OP_PING, (op, payload)  # never a close
            ws.send(wf.frame(wf.OP_PONG, payload))
        assert ws.request({"type": "ping", "id": "alive"})["id"] == "alive"


def test_heartbeat_pings_every_interval(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "heartbeat_interval": 1})
    with wf.open_ws(gw.port) as ws:
        times = []
        deadline = time.monotonic() + 10 * SLOW
        for _ in range(50):
            if len(times) >= 3 or time.monotonic() > deadline:
                break
            try:
                fin, rsv, op, payload = ws.recv_frame(timeout=2)
            except wf.socket.timeout:
                continue
            assert op == wf.OP_PING, (op, payload)
            assert fin and len(payload) <= 125
            times.append(time.monotonic())
            ws.send(wf.frame(wf.OP_PONG, payload))
        assert len(times) >= 3, times
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(g >= 0.5 for g in gaps), gaps  # an interval, not a flood


def test_no_heartbeat_before_interval(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "heartbeat_interval": 30})
    with wf.open_ws(gw.port) as ws:
        with pytest.raises(wf.socket.timeout):
            ws.recv_frame(timeout=1.5 / SLOW)


def test_websockets_survives_heartbeats(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "heartbeat_interval": 1, "connection_timeout": 2})

    async def go():
        async with websockets.connect(gw.ws_url, open_timeout=10 * SLOW, ping_interval=None) as ws:
            await asyncio.sleep(3.5)  # websockets answers the server's pings by itself
            await ws.send(json.dumps({"type": "ping", "id": "late"}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5 * SLOW))
            assert reply["id"] == "late"
    run(go())


# -- connection limit ---------------------------------------------------------

def test_max_connections_503_then_recovers(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "max_connections": 3})
    before = metric(gw.metrics(), "websocket_connection_errors_total", error_type="capacity")
    conns = [wf.open_ws(gw.port) for _ in range(3)]
    try:
        req = wf.upgrade_request(gw.port)
        resp, closed = wf.http_exchange(gw.port, req)
        assert resp.status == 503, resp
        assert resp.header("retry-after") is not None and int(resp.header("retry-after")) >= 0
        assert closed
        assert wf.wait_for(lambda: metric(gw.metrics(), "websocket_connection_errors_total",
                                          error_type="capacity") == before + 1)
        # The refused one did not disturb the admitted ones.
        for i, ws in enumerate(conns):
            assert ws.request({"type": "ping", "id": i})["id"] == i
        assert gw.detailed()["connections"]["active"] == 3
        # Plain HTTP still answers at capacity.
        assert wf.get(gw.port, "/health")[0].status == 200
        # One leaves; a new one gets in.
        ws0 = conns.pop(0)
        ws0.send(wf.close_frame(1000))
        ws0.expect_close()
        ws0.close_socket()
        assert wf.wait_for(lambda: gw.detailed()["connections"]["active"] == 2)
        conns.append(wf.open_ws(gw.port))
        assert conns[-1].request({"type": "ping", "id": "new"})["id"] == "new"
    finally:
        for ws in conns:
            ws.close_socket()


def test_max_connections_websockets_client_sees_503(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "max_connections": 1})

    async def go():
        async with websockets.connect(gw.ws_url, open_timeout=10 * SLOW):
            with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
                async with websockets.connect(gw.ws_url, open_timeout=10 * SLOW):
                    pass
            assert e.value.status_code == 503
    run(go())


# -- isolation ------------------------------------------------------------------

@pytest.mark.parametrize("bad,code", [(wf.text(b"x", mask=False), 1002),
                                      (wf.frame(wf.OP_BINARY, b"\x00"), 1003),
                                      (wf.text(b"\xc0\xaf"), 1007),
                                      (wf.text(b"x" * 8, length=1 << 30), 1009)],
                         ids=["unmasked", "binary", "utf8", "too_large"])
def test_other_connections_never_notice(gateway_factory, bad, code):
    gw = gateway_factory(config={"workers": 1, "max_message_size": 4096})
    with wf.open_ws(gw.port) as good, wf.open_ws(gw.port) as victim:
        assert good.request({"type": "ping", "id": 0})["id"] == 0
        victim.send(bad)
        good.send_json({"type": "ping", "id": 1})
        assert victim.expect_close()[0] == code
        assert good.recv_message()["id"] == 1
        for i in range(2, 12):
            assert good.request({"type": "ping", "id": i})["id"] == i
        good.send(wf.frame(wf.OP_PING, b"still"))
        assert good.recv_frame()[2:] == (wf.OP_PONG, b"still")


# -- logs -------------------------------------------------------------------------

def test_disconnect_log_has_reason_and_code(gateway_factory):
    gw = gateway_factory(config={"workers": 1})
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.close_frame(1000))
        assert ws.expect_close()[0] == 1000
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.frame(wf.OP_BINARY, b"\x01"))
        assert ws.expect_close()[0] == 1003

    def found():
        lines = [l for l in gw.logs() if l.get("event") == "disconnect"]
        got = {(l.get("reason"), l.get("code")) for l in lines}
        return ("client_close", 1000) in got and ("protocol_error", 1003) in got and lines
    lines = wf.wait_for(found)
    assert lines, gw.stderr()
    for l in lines:
        assert l["level"] == "info"
        assert "conn" in l and "remote" in l and "ts" in l
        assert isinstance(l["code"], int)
    connects = [l for l in gw.logs() if l.get("event") == "connect"]
    assert len(connects) == 2, gw.stderr()


def test_payloads_never_logged(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "log_level": "debug", "max_message_size": 256})
    markers = {k: f"MARK{k}{uuid.uuid4().hex}" for k in
               ("PINGID", "BADJSON", "TYPE", "STREAM", "DATA", "PINGFRAME", "CLOSE", "UTF8",
                "BINARY", "BIG", "PATH")}
    with wf.open_ws(gw.port) as ws:
        assert ws.request({"type": "ping", "id": markers["PINGID"]})["id"] == markers["PINGID"]
        ws.send_text("{not json " + markers["BADJSON"])
        assert ws.recv_message()["code"] == "bad_request"
        assert ws.request({"type": markers["TYPE"], "id": 1})["code"] == "bad_request"
        assert ws.request({"type": "subscribe", "stream": markers["STREAM"]})["type"] \
            == "subscribed"
        assert ws.request({"type": "publish", "stream": "s", "data": markers["DATA"],
                           "id": 2})["type"] == "ack"
        ws.send(wf.frame(wf.OP_PING, markers["PINGFRAME"].encode()))
        assert ws.recv_frame()[3] == markers["PINGFRAME"].encode()
        ws.send(wf.close_frame(1000, markers["CLOSE"].encode()))
        ws.expect_close()
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.text(markers["UTF8"].encode() + b"\xc0\xaf"))
        assert ws.expect_close()[0] == 1007
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.frame(wf.OP_BINARY, markers["BINARY"].encode()))
        assert ws.expect_close()[0] == 1003
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.text(markers["BIG"].encode() * 20))
        assert ws.expect_close()[0] == 1009
    # Nor HTTP request paths/headers from refused requests.
    resp, _ = wf.http_exchange(gw.port, wf.upgrade_request(gw.port, version="12",
                                                           headers=[("X-Secret", markers["PATH"])]))
    assert resp.status == 400
    assert wf.wait_for(lambda: len([l for l in gw.logs() if l.get("event") == "disconnect"]) >= 4)
    gw.stop()
    err = gw.stderr()
    assert "disconnect" in err
    leaked = [k for k, m in markers.items() if m in err]
    assert not leaked, (leaked, err)
