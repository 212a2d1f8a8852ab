"""The WebSocket opening handshake (RFC 6455 §4.2, docs/PROTOCOL.md "Transport", "The upgrade")
from a raw socket and from Python websockets."""
import asyncio
import json

import pytest
import websockets

import wsframes as wf


def test_accept_key_rfc_sample(gateway):
    # RFC 6455 §1.3's own example.
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    with wf.RawWS(gateway.port) as ws:
        ws.sock.sendall(wf.upgrade_request(gateway.port, key=key))
        resp = wf.read_response(ws.reader, wf.deadline_in())
        assert resp.status == 101, resp
        assert resp.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        assert resp.header("upgrade").lower() == "websocket"
        assert "upgrade" in resp.header("connection").lower()
        assert resp.header("sec-websocket-protocol") is None
        # The session really is open.
        assert ws.request({"type": "ping", "id": 1})["id"] == 1


def test_accept_key_random_keys(gateway):
    for _ in range(5):
        with wf.open_ws(gateway.port) as ws:  # open_ws checks the accept value
            assert ws.response.status == 101


def test_query_string_allowed(gateway):
    with wf.RawWS(gateway.port) as ws:
        key = wf.new_key()
        ws.sock.sendall(wf.upgrade_request(gateway.port, path="/ws?access_token=abc&x=1", key=key))
        resp = wf.read_response(ws.reader, wf.deadline_in())
        assert resp.status == 101, resp
        assert resp.header("sec-websocket-accept") == wf.accept_for(key)


def test_subprotocol_selected_when_offered(gateway):
    with wf.open_ws(gateway.port, protocols=["vitalstream.v1"]) as ws:
        assert ws.response.header("sec-websocket-protocol") == "vitalstream.v1"
    with wf.open_ws(gateway.port, protocols=["chat", "vitalstream.v1", "other"]) as ws:
        assert ws.response.header("sec-websocket-protocol") == "vitalstream.v1"
        assert ws.request({"type": "ping"})["type"] == "pong"


def test_subprotocol_in_separate_header_lines(gateway):
    with wf.open_ws(gateway.port, headers=[("Sec-WebSocket-Protocol", "chat"),
                                           ("Sec-WebSocket-Protocol", "vitalstream.v1")]) as ws:
        assert ws.response.header("sec-websocket-protocol") == "vitalstream.v1"


def test_only_other_subprotocols_400(gateway):
    for protocols in (["chat"], ["chat", "superchat"], ["vitalstream.v2"], ["vitalstream"]):
        resp, closed = wf.http_exchange(gateway.port,
                                        wf.upgrade_request(gateway.port, protocols=protocols))
        assert resp.status == 400, (protocols, resp)
        assert closed


def test_subprotocol_with_websockets_client(gateway):
    async def run():
        async with websockets.connect(gateway.ws_url, subprotocols=["vitalstream.v1"],
                                      open_timeout=10 * wf.SLOW) as ws:
            assert ws.subprotocol == "vitalstream.v1"
        async with websockets.connect(gateway.ws_url, open_timeout=10 * wf.SLOW) as ws:
            assert ws.subprotocol is None
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            async with websockets.connect(gateway.ws_url, subprotocols=["chat"],
                                          open_timeout=10 * wf.SLOW):
                pass
        assert e.value.status_code == 400
    asyncio.run(asyncio.wait_for(run(), 30 * wf.SLOW))


def test_header_names_and_tokens_in_odd_case(gateway):
    key = wf.new_key()
    req = (f"GET /ws HTTP/1.1\r\n"
           f"hOsT: 127.0.0.1:{gateway.port}\r\n"
           f"uPGRADE: WebSocket\r\n"
           f"CONNECTION: UPGRADE\r\n"
           f"sec-websocket-key: {key}\r\n"
           f"SEC-WEBSOCKET-VERSION: 13\r\n"
           f"sec-WebSocket-PROTOCOL: VitalStream.V1, vitalstream.v1\r\n"
           f"\r\n").encode()
    with wf.RawWS(gateway.port) as ws:
        ws.sock.sendall(req)
        resp = wf.read_response(ws.reader, wf.deadline_in())
        assert resp.status == 101, resp
        assert resp.header("sec-websocket-accept") == wf.accept_for(key)
        assert ws.request({"type": "ping", "id": "odd"})["id"] == "odd"


@pytest.mark.parametrize("connection", ["keep-alive, Upgrade", "Upgrade, keep-alive",
                                        "keep-alive,upgrade", "  Upgrade  "])
def test_connection_token_lists(gateway, connection):
    key = wf.new_key()
    req = (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           f"Connection: {connection}\r\nSec-WebSocket-Key: {key}\r\n"
           f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
    with wf.RawWS(gateway.port) as ws:
        ws.sock.sendall(req)
        resp = wf.read_response(ws.reader, wf.deadline_in())
        assert resp.status == 101, (connection, resp)
        assert resp.header("sec-websocket-accept") == wf.accept_for(key)


def test_connection_without_upgrade_token_426(gateway):
    req = wf.upgrade_request(gateway.port).replace(b"Connection: Upgrade", b"Connection: keep-alive")
    resp, closed = wf.http_exchange(gateway.port, req)
    assert resp.status == 426, resp
    assert resp.header("upgrade").lower() == "websocket"


def test_frame_in_same_packet_as_head(gateway):
    # The client does not wait for the 101: its first frame rides in the
    # same write (and the same TCP segment) as the request head.
    with wf.RawWS(gateway.port) as ws:
        ws.handshake(extra=wf.text('{"type":"ping","id":"early"}'))
        reply = ws.recv_message()
        assert reply["type"] == "pong" and reply["id"] == "early"


def test_two_frames_and_a_ping_in_same_packet_as_head(gateway):
    with wf.RawWS(gateway.port) as ws:
        extra = (wf.text('{"type":"ping","id":1}') + wf.frame(wf.OP_PING, b"hb") +
                 wf.text('{"type":"ping","id":2}'))
        ws.handshake(extra=extra)
        seen = []
        for _ in range(3):
            fin, rsv, op, payload = ws.recv_frame()
            seen.append((op, payload))
        assert (wf.OP_PONG, b"hb") in seen
        ids = [json.loads(p)["id"] for op, p in seen if op == wf.OP_TEXT]
        assert ids == [1, 2]


def test_head_split_across_many_writes(gateway):
    key = wf.new_key()
    req = wf.upgrade_request(gateway.port, key=key)
    with wf.RawWS(gateway.port) as ws:
        for i in range(0, len(req), 7):
            ws.sock.sendall(req[i:i + 7])
        resp = wf.read_response(ws.reader, wf.deadline_in())
        assert resp.status == 101
        assert resp.header("sec-websocket-accept") == wf.accept_for(key)
        assert ws.request({"type": "ping"})["type"] == "pong"


def test_http_1_0_upgrade_refused(gateway):
    req = wf.upgrade_request(gateway.port).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    resp, closed = wf.http_exchange(gateway.port, req)
    assert resp.status in (400, 426), resp
    assert closed


def test_duplicate_key_400(gateway):
    req = wf.upgrade_request(gateway.port, headers=[("Sec-WebSocket-Key", wf.new_key())])
    resp, closed = wf.http_exchange(gateway.port, req)
    assert resp.status == 400, resp
