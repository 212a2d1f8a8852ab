"""RFC 6455 framing rules the server must enforce, each with its close code
(docs/PROTOCOL.md "Close codes used by the server"), driven from a raw socket with frames built by
hand."""
import json
import struct
import time

import pytest

from conftest import metric
import wsframes as wf

PING = b'{"type":"ping","id":1}'
MAX_MESSAGE = 1024


@pytest.fixture
def gw(gateway_factory):
    return gateway_factory(config={"workers": 1, "max_message_size": MAX_MESSAGE})


def assert_closed_with(gw, data, code, reason_metric=None):
    """Send `data` on a fresh session; the server must answer with a close
    frame carrying `code` and then close TCP (it does not wait for us)."""
    before = metric(gw.metrics(), "websocket_disconnections_total", reason=reason_metric) \
        if reason_metric else None
    with wf.open_ws(gw.port) as ws:
        ws.send(data)
        got, _ = ws.expect_close()
        assert got == code, f"expected close {code}, got {got}"
    if reason_metric:
        assert wf.wait_for(lambda: metric(gw.metrics(), "websocket_disconnections_total",
                                          reason=reason_metric) == before + 1), reason_metric


# -- 1002 protocol errors -------------------------------------------------

def test_unmasked_client_frame_1002(gw):
    assert_closed_with(gw, wf.text(PING, mask=False), 1002, "protocol_error")


def test_unmasked_ping_1002(gw):
    assert_closed_with(gw, wf.frame(wf.OP_PING, b"x", mask=False), 1002)


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_rsv_bits_1002(gw, rsv):
    assert_closed_with(gw, wf.text(PING, rsv=rsv), 1002)


def test_rsv_bit_on_ping_1002(gw):
    assert_closed_with(gw, wf.frame(wf.OP_PING, b"x", rsv=4), 1002)


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_unknown_opcode_1002(gw, opcode):
    assert_closed_with(gw, wf.frame(opcode, b"abc"), 1002, "protocol_error")


def test_unknown_opcode_inside_fragmented_message_1002(gw):
    data = wf.text(b'{"type":', fin=False) + wf.frame(0x3, b"x")
    assert_closed_with(gw, data, 1002)


@pytest.mark.parametrize("opcode", [wf.OP_PING, wf.OP_PONG, wf.OP_CLOSE])
def test_control_frame_over_125_bytes_1002(gw, opcode):
    payload = struct.pack("!H", 1000) + b"r" * 124 if opcode == wf.OP_CLOSE else b"p" * 126
    assert_closed_with(gw, wf.frame(opcode, payload), 1002, "protocol_error")


@pytest.mark.parametrize("opcode", [wf.OP_PING, wf.OP_PONG, wf.OP_CLOSE])
def test_fragmented_control_frame_1002(gw, opcode):
    payload = struct.pack("!H", 1000) if opcode == wf.OP_CLOSE else b"abc"
    assert_closed_with(gw, wf.frame(opcode, payload, fin=False), 1002)


def test_continuation_without_start_1002(gw):
    assert_closed_with(gw, wf.frame(wf.OP_CONT, PING), 1002, "protocol_error")


def test_continuation_without_start_not_final_1002(gw):
    assert_closed_with(gw, wf.frame(wf.OP_CONT, b"abc", fin=False), 1002)


def test_continuation_after_complete_message_1002(gw):
    with wf.open_ws(gw.port) as ws:
        assert ws.request(json.loads(PING))["type"] == "pong"
        ws.send(wf.frame(wf.OP_CONT, b"more"))
        assert ws.expect_close()[0] == 1002


@pytest.mark.parametrize("second", [wf.OP_TEXT, wf.OP_BINARY])
def test_new_data_frame_inside_fragmented_message_1002(gw, second):
    data = wf.text(b'{"type":', fin=False) + wf.frame(second, b'"ping"}')
    assert_closed_with(gw, data, 1002, "protocol_error")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 5000, 65535])
def test_invalid_close_code_1002(gw, code):
    assert_closed_with(gw, wf.close_frame(code), 1002, "protocol_error")


def test_close_with_one_byte_payload_1002(gw):
    # A close body is empty or holds a 2-byte code; one byte is malformed.
    assert_closed_with(gw, wf.frame(wf.OP_CLOSE, b"\x03"), 1002, "protocol_error")


def test_bad_64bit_length_encoding_1002(gw):
    # A 64-bit length with the most significant bit set is illegal.
    head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 1 << 63) + b"\x00\x00\x00\x00"
    with wf.open_ws(gw.port) as ws:
        ws.send(head + b"x")
        code, _ = ws.expect_close()
        assert code in (1002, 1009), code


# -- 1003 binary ---------------------------------------------------------

def test_binary_frame_1003(gw):
    assert_closed_with(gw, wf.frame(wf.OP_BINARY, b"\x00\x01\x02"), 1003, "protocol_error")


def test_binary_first_fragment_1003(gw):
    assert_closed_with(gw, wf.frame(wf.OP_BINARY, b"\x00\x01", fin=False), 1003)


def test_binary_header_alone_refused_1003(gw):
    # Only the header of a large binary message: refused before its payload.
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.frame(wf.OP_BINARY, b"\x00" * 10, length=MAX_MESSAGE // 2)[:-10])
        ws.send(b"\x00")
        assert ws.expect_close()[0] in (1003,)


# -- 1007 invalid UTF-8 ----------------------------------------------------

INVALID_UTF8 = {
    "overlong_slash": b"\xc0\xaf",
    "overlong_3byte": b"\xe0\x80\xaf",
    "surrogate": b"\xed\xa0\x80",
    "above_10ffff": b"\xf4\x90\x80\x80",
    "f5_lead": b"\xf5\x80\x80\x80",
    "lone_continuation": b"\x80",
    "ff_byte": b"\xff",
}


@pytest.mark.parametrize("bad", list(INVALID_UTF8.values()), ids=list(INVALID_UTF8))
def test_invalid_utf8_1007(gw, bad):
    payload = b'{"type":"ping","id":"' + bad + b'"}'
    assert_closed_with(gw, wf.text(payload), 1007, "protocol_error")


@pytest.mark.parametrize("tail", [b"\xe2\x82", b"\xf0\x9f\x98", b"\xc3"])
def test_truncated_sequence_at_end_1007(gw, tail):
    assert_closed_with(gw, wf.text(b'{"type":"ping"}' + tail), 1007)


def test_valid_code_point_split_across_fragments_accepted(gw):
    # U+20AC (E2 82 AC) and U+1F600 (F0 9F 98 80), each cut in the middle.
    msg = '{"type":"ping","id":"\u20ac-\U0001F600"}'.encode()
    cut1 = msg.index(b"\xe2") + 1
    cut2 = msg.index(b"\xf0") + 2
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.text(msg[:cut1], fin=False) +
                wf.frame(wf.OP_CONT, msg[cut1:cut2], fin=False) +
                wf.frame(wf.OP_CONT, msg[cut2:]))
        reply = ws.recv_message()
        assert reply == {"type": "pong", "id": "\u20ac-\U0001F600", "ts": reply["ts"]}


def test_valid_split_with_ping_between_fragments(gw):
    msg = '{"type":"ping","id":"\u00e9"}'.encode()
    cut = msg.index(b"\xc3") + 1
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.text(msg[:cut], fin=False))
        ws.send(wf.frame(wf.OP_PING, b"mid"))
        ws.send(wf.frame(wf.OP_CONT, msg[cut:]))
        # The pong and the reply may come in either order.
        frames = [ws.recv_frame()[2:] for _ in range(2)]
        assert (wf.OP_PONG, b"mid") in frames, frames
        texts = [json.loads(p) for op, p in frames if op == wf.OP_TEXT]
        assert len(texts) == 1 and texts[0]["id"] == "\u00e9", frames


@pytest.mark.parametrize("first,second", [(b"\xed", b"\xa0\x80"), (b"\xf4", b"\x90\x80\x80"),
                                          (b"\xe2\x82", b"\x28"), (b"\xc0", b"\xaf")])
def test_invalid_sequence_split_across_fragments_1007(gw, first, second):
    data = (wf.text(b'{"type":"ping","id":"' + first, fin=False) +
            wf.frame(wf.OP_CONT, second + b'"}'))
    assert_closed_with(gw, data, 1007)


def test_invalid_split_detected_before_final_fragment(gw):
    # The bad byte is in a non-final fragment and the message never ends:
    # still 1007 (validation is incremental, not at the end of the message).
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.text(b'{"id":"\xed', fin=False) + wf.frame(wf.OP_CONT, b"\xa0\x80", fin=False))
        assert ws.expect_close()[0] == 1007


def test_truncated_sequence_at_end_of_fragmented_message_1007(gw):
    data = wf.text(b'{"type":"ping"}', fin=False) + wf.frame(wf.OP_CONT, b"\xe2\x82")
    assert_closed_with(gw, data, 1007)


def test_invalid_utf8_in_close_reason_1007(gw):
    assert_closed_with(gw, wf.close_frame(1000, b"bye \xc0\xaf"), 1007)


# -- 1009 too large --------------------------------------------------------

def test_message_at_limit_accepted(gw):
    base = b'{"type":"ping","id":""}'
    msg = base[:-2] + b"x" * (MAX_MESSAGE - len(base)) + base[-2:]
    assert len(msg) == MAX_MESSAGE
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.text(msg))
        assert ws.recv_message()["id"] == "x" * (MAX_MESSAGE - len(base))


def test_message_over_limit_1009(gw):
    msg = b'{"type":"ping","id":"' + b"x" * MAX_MESSAGE + b'"}'
    assert_closed_with(gw, wf.text(msg), 1009, "too_large")


def test_fragmented_message_over_limit_1009(gw):
    half = b"x" * (MAX_MESSAGE // 2 + 10)
    data = wf.text(b'{"id":"' + half, fin=False) + wf.frame(wf.OP_CONT, half + b'"}')
    assert_closed_with(gw, data, 1009, "too_large")


@pytest.mark.parametrize("announced", [MAX_MESSAGE + 1, 1 << 20, 1 << 40])
def test_huge_length_refused_before_payload_1009(gw, announced):
    # Only the header (with its mask key) is ever sent: the close must come
    # as soon as the length is known, without waiting for the payload.
    header = wf.frame(wf.OP_TEXT, b"", length=announced)
    assert len(header) in (8, 14)
    with wf.open_ws(gw.port) as ws:
        ws.send(header)
        try:
            code, _ = ws.expect_close()
        except TimeoutError:
            raise AssertionError(f"no close after a header announcing {announced} bytes "
                                 f"(max_message_size {MAX_MESSAGE}): the server waits for "
                                 f"payload before checking the length") from None
        assert code == 1009


def test_huge_continuation_refused_before_payload_1009(gw):
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.text(b'{"id":"', fin=False))
        ws.send(wf.frame(wf.OP_CONT, b"", length=1 << 32))
        try:
            code, _ = ws.expect_close()
        except TimeoutError:
            raise AssertionError("no close after a continuation header announcing 4 GiB: "
                                 "the server waits for payload before checking") from None
        assert code == 1009


# -- byte by byte, ping/pong, close handshake ------------------------------

def test_frame_one_byte_at_a_time(gw):
    with wf.open_ws(gw.port) as ws:
        data = wf.frame(wf.OP_PING, b"slowly") + wf.text(b'{"type":"ping","id":"bytewise"}')
        for i in range(len(data)):
            ws.send(data[i:i + 1])
            time.sleep(0.002)
        fin, rsv, op, payload = ws.recv_frame()
        assert (op, payload) == (wf.OP_PONG, b"slowly")
        assert ws.recv_message()["id"] == "bytewise"


def test_extended_length_frames(gw):
    # 16-bit extended length (126..65535) crossing read boundaries.
    with wf.open_ws(gw.port) as ws:
        msg = b'{"type":"ping","id":"' + b"y" * 500 + b'"}'
        data = wf.text(msg)
        ws.send(data[:3])
        time.sleep(0.01)
        ws.send(data[3:])
        assert ws.recv_message()["id"] == "y" * 500


@pytest.mark.parametrize("payload", [b"", b"hello", bytes(range(125))])
def test_ping_answered_with_same_payload(gw, payload):
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.frame(wf.OP_PING, payload))
        fin, rsv, op, got = ws.recv_frame()
        assert (fin, rsv, op, got) == (True, 0, wf.OP_PONG, payload)


def test_unsolicited_pong_ignored(gw):
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.frame(wf.OP_PONG, b"unsolicited"))
        assert ws.request({"type": "ping", "id": 5})["id"] == 5


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
def test_client_initiated_close_echoed(gw, code):
    before = metric(gw.metrics(), "websocket_disconnections_total", reason="client_close")
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.close_frame(code, b"bye"))
        got, _ = ws.expect_close()  # also waits for the server to close TCP
        assert got == code
    assert wf.wait_for(lambda: metric(gw.metrics(), "websocket_disconnections_total",
                                      reason="client_close") == before + 1)


def test_client_close_without_code(gw):
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.close_frame())
        got, _ = ws.expect_close()
        assert got in (None, 1000)


def test_close_between_fragments_echoed(gw):
    # Control frames may come between the fragments of a message; a close
    # there ends the session normally.
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.text(b'{"type":"ping"', fin=False) + wf.close_frame(1000))
        assert ws.expect_close()[0] == 1000


def test_empty_final_fragment(gw):
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.text(b'{"type":"ping","id":3}', fin=False) + wf.frame(wf.OP_CONT, b""))
        assert ws.recv_message()["id"] == 3


def test_64bit_length_message_and_reply(gateway_factory):
    # Default max_message_size (1 MiB): a 100 KB message uses the 64-bit
    # length form, and so does the reply echoing it.
    gw = gateway_factory(config={"workers": 1})
    big = "z" * 100000
    with wf.open_ws(gw.port) as ws:
        data = wf.text(json.dumps({"type": "ping", "id": big}))
        assert data[1] & 0x7F == 127
        ws.send(data)
        fin, rsv, op, payload = ws.recv_frame()
        assert fin and op == wf.OP_TEXT
        assert json.loads(payload)["id"] == big


def test_nothing_processed_after_close(gw):
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.close_frame(1000) + wf.text(PING))
        fin, rsv, op, payload = ws.recv_frame()
        assert op == wf.OP_CLOSE, (op, payload)
        assert wf.wait_closed(ws.sock, ws.reader)


def test_protocol_error_counted_and_logged(gw):
    assert_closed_with(gw, wf.text(PING, mask=False), 1002, "protocol_error")
    def logged():
        return [l for l in gw.logs() if l.get("event") == "disconnect"
                and l.get("reason") == "protocol_error" and l.get("code") == 1002]
    assert wf.wait_for(logged), gw.stderr()
