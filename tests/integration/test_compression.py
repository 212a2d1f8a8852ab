"""permessage-deflate (RFC 7692) with real clients: Python `websockets`
(which offers it by default) publishing and receiving compressed ECG;
every negotiation case from a raw socket; compressed frames read back
with zlib at the negotiated window, by one inflate stream per connection
(the server keeps a context unless told not to); the stream's shared
context (the same bytes for every subscriber in step, smaller than
messages compressed alone, never for a client that said
server_no_context_takeover); RSV1 misuse (1002); decompression bombs
(1009, bounded memory); corrupt data and bad UTF-8 (1007); subscribers
with and without the extension, joining late, resuming and reading
several streams at once, all receiving identical JSON; the config keys
live on reload; the metrics."""
import asyncio
import json
import random
import signal
import zlib

import pytest
import websockets

from conftest import SLOW, metric
import wsframes as wf

EXT = "Sec-WebSocket-Extensions"
# The server keeps a context (a 4 KiB window) unless the client says not
# to or allows a smaller window; the client never keeps one.
ACCEPTED = "permessage-deflate; client_no_context_takeover"
NO_CONTEXT = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def ecg_batch(n, rng):
    """A 12-lead, 10-sample batch shaped like tools/ecg-sim's."""
    return {"device": "bedside-1", "t0": 1700000000000 + 20 * n, "rate_hz": 500,
            "leads": {lead: [round(rng.gauss(0.2, 0.3), 3) for _ in range(10)] for lead in LEADS}}


@pytest.fixture
def gw(gateway_factory):
    return gateway_factory(config={"workers": 1, "max_message_size": 1 << 20})


def reload_with(gw, **changes):
    cfg = dict(gw.config)
    cfg.update(changes)
    gw.write_config(cfg)
    before = metric(gw.metrics(), "websocket_config_reloads_total", result="success")
    gw.signal(signal.SIGHUP)
    assert wf.wait_for(lambda: metric(gw.metrics(), "websocket_config_reloads_total",
                                      result="success") == before + 1), gw.stderr()
    gen = gw.detailed()["config_generation"]
    assert wf.wait_for(lambda: all(w["config_generation"] == gen
                                   for w in gw.detailed()["workers"]))


def deflate_raw(data, wbits=15):
    """A client's compressed message: raw deflate, sync flush, tail off."""
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate_raw(payload, wbits):
    """One compressed message on its own (a client without the server's
    context: valid only for messages that refer to nothing before)."""
    d = zlib.decompressobj(-wbits)
    return d.decompress(payload + b"\x00\x00\xff\xff") + d.flush()


def inflate_on(ws, payload, wbits):
    """What the client of `ws` makes of a compressed message: one inflate
    stream for the connection's whole life (RFC 7692 7.2.2)."""
    if getattr(ws, "inflater", None) is None:
        ws.inflater = zlib.decompressobj(-wbits)
    return ws.inflater.decompress(payload + b"\x00\x00\xff\xff")


def open_deflate(port, offer="permessage-deflate"):
    ws = wf.open_ws(port, headers=[(EXT, offer)] if offer else None)
    return ws


def recv_data(ws, wbits=15, timeout=None, sizes=None, raw=None):
    """Next data frame: (rsv, parsed JSON), inflated when RSV1 is set;
    appends (bytes on the wire, bytes inflated) to `sizes` and the
    compressed payload to `raw` if given."""
    for _ in range(100):
        fin, rsv, op, payload = ws.recv_frame(timeout)
        if op in (wf.OP_PING, wf.OP_PONG):
            continue
        assert op == wf.OP_TEXT and fin, (op, fin, payload)
        wire = len(payload)
        if rsv & 4:
            if raw is not None:
                raw.append(payload)
            payload = inflate_on(ws, payload, wbits)
        if sizes is not None:
            sizes.append((wire, len(payload)))
        return rsv, json.loads(payload)
    raise AssertionError("only control frames")


def request(ws, obj, wbits=15):
    ws.send_json(obj)
    return recv_data(ws, wbits)


def subscribe(ws, stream, wbits=15):
    rsv, reply = request(ws, {"type": "subscribe", "stream": stream, "id": "s"}, wbits)
    assert reply["type"] == "subscribed", reply
    assert rsv == 0, "replies are never compressed"


# -- real clients --------------------------------------------------------

def test_websockets_publish_and_receive_compressed(gw):
    rng = random.Random(1)
    batches = [ecg_batch(i, rng) for i in range(30)]

    async def run():
        async with websockets.connect(gw.ws_url, open_timeout=10 * SLOW) as sub, \
                websockets.connect(gw.ws_url, open_timeout=10 * SLOW) as pub:
            for ws in (sub, pub):
                assert ws.response_headers[EXT] == ACCEPTED
            await sub.send(json.dumps({"type": "subscribe", "stream": "patient/1/ecg", "id": 1}))
            assert json.loads(await sub.recv())["type"] == "subscribed"
            for i, b in enumerate(batches):
                await pub.send(json.dumps({"type": "publish", "stream": "patient/1/ecg",
                                           "id": i, "data": b}))
                assert json.loads(await pub.recv())["type"] == "ack"
            got = []
            for _ in batches:
                got.append(json.loads(await asyncio.wait_for(sub.recv(), 10 * SLOW)))
            return got

    got = asyncio.run(run())
    assert [m["data"] for m in got] == batches
    assert [m["seq"] for m in got] == list(range(1, 31))
    m = gw.metrics()
    out_before = metric(m, "websocket_compression_bytes_total", direction="out", stage="before")
    out_after = metric(m, "websocket_compression_bytes_total", direction="out", stage="after")
    in_before = metric(m, "websocket_compression_bytes_total", direction="in", stage="before")
    in_after = metric(m, "websocket_compression_bytes_total", direction="in", stage="after")
    assert out_before > 30 * 900 and 0 < out_after < out_before / 2, (out_before, out_after)
    # websockets compresses what it publishes: the gateway inflated it
    assert in_before > 0 and in_after > in_before


def test_compressed_frames_on_the_wire(gw):
    rng = random.Random(2)
    with open_deflate(gw.port) as sub, wf.open_ws(gw.port) as pub:
        assert sub.response.header(EXT) == ACCEPTED
        assert pub.response.header(EXT) is None
        subscribe(sub, "wire")
        data = ecg_batch(0, rng)
        assert pub.request({"type": "publish", "stream": "wire", "id": 1, "data": data})["type"] == "ack"
        rsv, msg = recv_data(sub)
        assert rsv == 4 and msg["data"] == data
        # pong is a reply: plain
        rsv, pong = request(sub, {"type": "ping", "id": 9})
        assert (rsv, pong["type"]) == (0, "pong")
        # below compression_min_size (256): plain
        pub.request({"type": "publish", "stream": "wire", "id": 2, "data": 1})
        rsv, msg = recv_data(sub)
        assert (rsv, msg["data"]) == (0, 1)


# -- negotiation, raw socket ---------------------------------------------

@pytest.mark.parametrize("offers,answer", [
    (["permessage-deflate"], ACCEPTED),
    (["permessage-deflate; client_max_window_bits"], ACCEPTED),
    (["permessage-deflate; client_max_window_bits=10"], ACCEPTED),
    (["permessage-deflate; server_no_context_takeover"], NO_CONTEXT),
    (["permessage-deflate; client_no_context_takeover"], ACCEPTED),
    (["permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
      "client_max_window_bits"], NO_CONTEXT),
    # a window below the shared contexts' 4 KiB: no server context either
    (["permessage-deflate; server_max_window_bits=10"], NO_CONTEXT + "; server_max_window_bits=10"),
    (["permessage-deflate; server_max_window_bits=11"], NO_CONTEXT + "; server_max_window_bits=11"),
    (['permessage-deflate; server_max_window_bits="12"'], ACCEPTED + "; server_max_window_bits=12"),
    (["permessage-deflate; server_max_window_bits=8"], NO_CONTEXT + "; server_max_window_bits=8"),
    # declined offers: no extension
    (["permessage-deflate; server_max_window_bits"], None),
    (["permessage-deflate; server_max_window_bits=16"], None),
    (["permessage-deflate; server_max_window_bits=08"], None),
    (["permessage-deflate; client_max_window_bits=7"], None),
    (["permessage-deflate; server_no_context_takeover=1"], None),
    (["permessage-deflate; server_no_context_takeover; server_no_context_takeover"], None),
    (["permessage-deflate; client_max_window_bits; client_max_window_bits"], None),
    (["permessage-deflate; unknown_param"], None),
    (["x-webkit-deflate-frame"], None),
    # several offers: the first acceptable one, in order, across header lines
    (["permessage-deflate; bogus, permessage-deflate; server_max_window_bits=11"],
     NO_CONTEXT + "; server_max_window_bits=11"),
    (["permessage-deflate; server_max_window_bits=9, permessage-deflate"],
     NO_CONTEXT + "; server_max_window_bits=9"),
    (["x-foo", "permessage-deflate; server_max_window_bits=13"],
     ACCEPTED + "; server_max_window_bits=13"),
])
def test_negotiation(gw, offers, answer):
    with wf.open_ws(gw.port, headers=[(EXT, o) for o in offers]) as ws:
        assert ws.response.header(EXT) == answer, ws.response
        # the session works either way
        rsv, pong = request(ws, {"type": "ping", "id": 1})
        assert pong["type"] == "pong"


@pytest.mark.parametrize("value", [
    "permessage-deflate;",
    "permessage-deflate; =10",
    'permessage-deflate; server_max_window_bits="10',
    "permessage-deflate server_no_context_takeover",
    "permessage-deflate; a=b=c",
])
def test_malformed_extensions_header_400(gw, value):
    with wf.RawWS(gw.port) as ws:
        resp = ws.handshake(headers=[(EXT, value)], expect=400)
        assert "Sec-WebSocket-Extensions is malformed" in resp.json()["error"], resp
    assert wf.wait_for(lambda: metric(gw.metrics(), "websocket_connection_errors_total",
                                      error_type="handshake") >= 1)


@pytest.mark.parametrize("wbits", [8, 9, 10, 15])
def test_frames_fit_the_negotiated_window(gw, wbits):
    """Each window gets its own compressed frame, readable with exactly
    that window (8: Huffman-only, zlib has no 256-byte raw window)."""
    rng = random.Random(wbits)
    with open_deflate(gw.port, f"permessage-deflate; server_max_window_bits={wbits}") as sub, \
            wf.open_ws(gw.port) as pub:
        subscribe(sub, "win", wbits)
        # long enough for matches further back than any small window
        data = {"leads": [ecg_batch(i, rng)["leads"] for i in range(8)]}
        pub.request({"type": "publish", "stream": "win", "id": 1, "data": data})
        rsv, msg = recv_data(sub, wbits)
        assert rsv == 4 and msg["data"] == data


def test_compression_off_offers_ignored_and_rsv1_refused(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "compression": False})
    with open_deflate(gw.port) as ws:
        assert ws.response.header(EXT) is None
        ws.send(wf.text(deflate_raw(b'{"type":"ping","id":1}'), rsv=4))
        code, _ = ws.expect_close()
        assert code == 1002


# -- incoming compressed messages ------------------------------------------

def test_compressed_fragmented_publish(gw):
    rng = random.Random(3)
    data = ecg_batch(0, rng)
    body = deflate_raw(json.dumps({"type": "publish", "stream": "frag", "id": 5,
                                   "data": data}).encode())
    with open_deflate(gw.port) as pub, wf.open_ws(gw.port) as sub:
        sub.request({"type": "subscribe", "stream": "frag", "id": 1})
        a, b = len(body) // 3, 2 * len(body) // 3
        # RSV1 on the first frame only (RFC 7692 6.1)
        pub.send(wf.frame(wf.OP_TEXT, body[:a], fin=False, rsv=4) +
                 wf.frame(wf.OP_CONT, body[a:b], fin=False) +
                 wf.frame(wf.OP_PING, b"mid") +
                 wf.frame(wf.OP_CONT, body[b:], fin=True))
        for _ in range(3):
            fin, rsv, op, payload = pub.recv_frame()
            if op == wf.OP_TEXT:
                break
        assert json.loads(payload) == {"type": "ack", "id": 5, "stream": "frag", "seq": 1}
        assert sub.recv_message()["data"] == data


def test_rsv1_on_control_frame_1002(gw):
    with open_deflate(gw.port) as ws:
        ws.send(wf.frame(wf.OP_PING, b"x", rsv=4))
        assert ws.expect_close()[0] == 1002


def test_rsv1_on_continuation_frame_1002(gw):
    body = deflate_raw(b'{"type":"ping","id":1}')
    with open_deflate(gw.port) as ws:
        ws.send(wf.frame(wf.OP_TEXT, body[:4], fin=False, rsv=4) +
                wf.frame(wf.OP_CONT, body[4:], fin=True, rsv=4))
        assert ws.expect_close()[0] == 1002


def test_rsv1_without_negotiation_1002(gw):
    with wf.open_ws(gw.port) as ws:
        ws.send(wf.text(deflate_raw(b'{"type":"ping","id":1}'), rsv=4))
        assert ws.expect_close()[0] == 1002


def test_corrupt_deflate_data_1007(gw):
    with open_deflate(gw.port) as ws:
        ws.send(wf.text(b"\xff\xff\xff\xff", rsv=4))
        code, reason = ws.expect_close()
        assert code == 1007 and b"deflate" in reason


def test_inflated_text_not_utf8_1007(gw):
    with open_deflate(gw.port) as ws:
        ws.send(wf.text(deflate_raw(b'{"type":"ping","id":"\xc0\xaf"}'), rsv=4))
        code, reason = ws.expect_close()
        assert code == 1007 and b"UTF-8" in reason


def worker_peak_rss_kib(gw):
    pid = gw.detailed()["workers"][0]["pid"]
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def bomb(chunks):
    """Raw deflate of chunks x 16 MiB of zeros, cheaply: one full-flushed
    block set repeated (each stands alone after a full flush)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = c.compress(bytes(16 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    return one * chunks


@pytest.mark.parametrize("fragmented", [False, True])
def test_decompression_bomb_1009_with_bounded_memory(gw, fragmented):
    # ~1 MB on the wire (under max_message_size), 960 MiB inflated
    body = bomb(60)
    assert len(body) < gw.config["max_message_size"]
    with open_deflate(gw.port) as ws:
        assert request(ws, {"type": "ping", "id": 1})[1]["type"] == "pong"
        peak = worker_peak_rss_kib(gw)
        if fragmented:
            parts = [body[i:i + 100000] for i in range(0, len(body), 100000)]
            data = b"".join(wf.frame(wf.OP_TEXT if i == 0 else wf.OP_CONT, p,
                                     fin=i == len(parts) - 1, rsv=4 if i == 0 else 0)
                            for i, p in enumerate(parts))
        else:
            data = wf.text(body, rsv=4)
        ws.send(data)
        code, reason = ws.expect_close(timeout=20)
        assert code == 1009 and b"inflated" in reason
    # the compressed message is held once, the output stops at
    # max_message_size: nowhere near the 960 MiB it inflates to
    grown = worker_peak_rss_kib(gw) - peak
    assert grown < 16 * 1024, f"worker peak RSS grew by {grown} KiB"
    assert wf.wait_for(lambda: metric(gw.metrics(), "websocket_disconnections_total",
                                      reason="too_large") == 1)
    # other connections never noticed
    with open_deflate(gw.port) as ws:
        assert request(ws, {"type": "ping", "id": 2})[1]["type"] == "pong"


def test_large_compressed_publish_inflated_off_the_loop(gw):
    """Over 64 KiB once inflated: inflated and parsed on the thread pool
    (a few compressed bytes must not buy the loop milliseconds), in order
    with what follows."""
    data = {"leads": {"II": [round(0.001 * (i % 997), 3) for i in range(60000)]}}
    msg = json.dumps({"type": "publish", "stream": "big", "id": 1, "data": data}).encode()
    assert 300000 < len(msg) < gw.config["max_message_size"]
    with open_deflate(gw.port) as pub, wf.open_ws(gw.port) as sub:
        sub.request({"type": "subscribe", "stream": "big", "id": 1})
        pub.send(wf.text(deflate_raw(msg), rsv=4) +
                 wf.text(deflate_raw(b'{"type":"ping","id":2}'), rsv=4))
        assert recv_data(pub)[1] == {"type": "ack", "id": 1, "stream": "big", "seq": 1}
        pong = recv_data(pub)[1]
        assert (pong["type"], pong["id"]) == ("pong", 2)
        assert sub.recv_message(timeout=10)["data"] == data
        # bad text found off the loop closes all the same
        pub.send(wf.text(deflate_raw(b'{"type":"ping","id":"' + b"\xc0\xaf" * 40000 + b'"}'), rsv=4))
        code, reason = pub.expect_close()
        assert code == 1007 and b"UTF-8" in reason


def test_inflated_size_limit_exact(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "max_message_size": 4096})
    msg = json.dumps({"type": "ping", "id": "x" * 4000})
    msg = msg.replace("x" * 4000, "x" * (4000 + 4096 - len(msg)))
    assert len(msg) == 4096
    with open_deflate(gw.port) as ws:
        rsv, pong = request(ws, {"type": "ping", "id": 1})
        ws.send(wf.text(deflate_raw(msg.encode()), rsv=4))
        assert recv_data(ws)[1]["type"] == "pong"
        ws.send(wf.text(deflate_raw((msg[:-1] + ' }').encode()), rsv=4))
        assert ws.expect_close()[0] == 1009


# -- mixed subscribers ------------------------------------------------------

def test_mixed_subscribers_get_identical_json(gw):
    rng = random.Random(4)
    offers = [None, "permessage-deflate", None, "permessage-deflate; server_max_window_bits=10",
              None, "permessage-deflate; client_max_window_bits"]
    wbits = [15, 15, 15, 10, 15, 15]
    subs = [open_deflate(gw.port, o) for o in offers]
    try:
        for s, wb in zip(subs, wbits):
            subscribe(s, "mixed", wb)
        with wf.open_ws(gw.port) as pub:
            sent = [ecg_batch(i, rng) for i in range(20)] + [{"small": 1}]
            for i, d in enumerate(sent):
                pub.request({"type": "publish", "stream": "mixed", "id": i, "data": d})
        got = []
        sizes = []
        for s, o, wb in zip(subs, offers, wbits):
            msgs = [recv_data(s, wb, sizes=sizes if o else None) for _ in sent]
            rsvs = [r for r, _ in msgs]
            if o:
                assert rsvs == [4] * 20 + [0], rsvs
            else:
                assert rsvs == [0] * 21
            got.append([m for _, m in msgs])
        assert all(g == got[0] for g in got)
        assert [m["data"] for m in got[0]] == sent
    finally:
        for s in subs:
            s.close_socket()
    # "out" counts every delivery to a negotiated subscriber of a message
    # over compression_min_size: exactly the bytes they got and inflated
    big = [(w, p) for w, p in sizes if p >= 256]
    assert len(big) == 3 * 20
    m = gw.metrics()
    for stage, n in (("before", sum(p for _, p in big)), ("after", sum(w for w, _ in big))):
        assert metric(m, "websocket_compression_bytes_total", direction="out", stage=stage) == n



def test_replay_is_compressed_too(gw):
    rng = random.Random(5)
    with wf.open_ws(gw.port) as pub:
        sent = [ecg_batch(i, rng) for i in range(5)]
        for i, d in enumerate(sent):
            pub.request({"type": "publish", "stream": "replay", "id": i, "data": d})
    with open_deflate(gw.port) as sub:
        sub.send_json({"type": "subscribe", "stream": "replay", "since": 0, "id": 1})
        assert recv_data(sub)[1]["type"] == "subscribed"
        msgs = [recv_data(sub) for _ in sent]
        assert [r for r, _ in msgs] == [4] * 5
        assert [m["data"] for _, m in msgs] == sent


# -- the stream's shared context --------------------------------------------

def test_shared_context_same_bytes_for_subscribers_in_step(gw):
    """Subscribers that allow context takeover get one compressed form of
    each message, which refers back to the stream's previous messages:
    the same bytes for all of them, smaller than each message alone. A
    client that said server_no_context_takeover gets messages that each
    read alone. Every one reads every message right."""
    rng = random.Random(8)
    offers = ["permessage-deflate", "permessage-deflate; server_max_window_bits=12",
              "permessage-deflate; server_no_context_takeover"]
    wbits = [15, 12, 15]
    subs = [open_deflate(gw.port, o) for o in offers]
    try:
        assert [s.response.header(EXT) for s in subs] == [
            ACCEPTED, ACCEPTED + "; server_max_window_bits=12", NO_CONTEXT]
        for s, wb in zip(subs, wbits):
            subscribe(s, "ctx", wb)
        sent = [ecg_batch(i, rng) for i in range(40)]
        with wf.open_ws(gw.port) as pub:
            for i, d in enumerate(sent):
                pub.request({"type": "publish", "stream": "ctx", "id": i, "data": d})
        raws = [[], [], []]
        for s, wb, raw in zip(subs, wbits, raws):
            got = [recv_data(s, wb, raw=raw)[1]["data"] for _ in sent]
            assert got == sent
        shared, alone = raws[0], raws[2]
        assert raws[1] == shared, "one compressed form for every subscriber in step"
        assert sum(map(len, shared)) < 0.85 * sum(map(len, alone)), (
            sum(map(len, shared)), sum(map(len, alone)))
        # the shared form refers to earlier messages: most do not read alone
        unreadable = 0
        for p, d in zip(shared[1:], sent[1:]):
            try:
                unreadable += json.loads(inflate_raw(p, 15))["data"] != d
            except (zlib.error, ValueError, UnicodeDecodeError):
                unreadable += 1
        assert unreadable > len(sent) // 2, unreadable
        # without the server's context, each reads alone
        assert [json.loads(inflate_raw(p, 15))["data"] for p in alone] == sent
    finally:
        for s in subs:
            s.close_socket()


def test_shared_context_late_resuming_and_multi_stream_subscribers(gw):
    """Subscribers out of step with a stream's context — joining late,
    resuming from history, reading two streams interleaved, skipping
    small plain messages — read every message right, and a single-stream
    one comes back in step: its frames become the shared bytes."""
    rng = random.Random(9)
    first = open_deflate(gw.port)
    late = resumer = both = None
    try:
        subscribe(first, "a")
        with wf.open_ws(gw.port) as pub:
            def publish(stream, i, data):
                assert pub.request({"type": "publish", "stream": stream, "id": i,
                                    "data": data})["type"] == "ack"
            sent_a = []
            for i in range(10):
                sent_a.append(ecg_batch(i, rng))
                publish("a", i, sent_a[-1])
            late = open_deflate(gw.port)
            subscribe(late, "a")
            resumer = open_deflate(gw.port)
            resumer.send_json({"type": "subscribe", "stream": "a", "since": 3, "id": "r"})
            assert recv_data(resumer)[1]["type"] == "subscribed"
            both = open_deflate(gw.port)
            subscribe(both, "a")
            subscribe(both, "b")
            sent_b = []
            for i in range(10, 40):
                sent_a.append({"small": i} if i % 7 == 0 else ecg_batch(i, rng))
                publish("a", i, sent_a[-1])
                if i % 2:
                    sent_b.append(ecg_batch(100 + i, rng))
                    publish("b", i, sent_b[-1])
        raw_first, raw_late, raw_resumer = [], [], []
        assert [recv_data(first, raw=raw_first)[1]["data"] for _ in sent_a] == sent_a
        assert [recv_data(late, raw=raw_late)[1]["data"] for _ in sent_a[10:]] == sent_a[10:]
        assert ([recv_data(resumer, raw=raw_resumer)[1]["data"] for _ in sent_a[3:]]
                == sent_a[3:])
        got = [recv_data(both)[1] for _ in range(len(sent_a) - 10 + len(sent_b))]
        assert [m["data"] for m in got if m["stream"] == "a"] == sent_a[10:]
        assert [m["data"] for m in got if m["stream"] == "b"] == sent_b
        # back in step: the last messages are the very bytes `first` got
        assert raw_late[-5:] == raw_first[-5:]
        assert raw_resumer[-5:] == raw_first[-5:]
    finally:
        for s in (first, late, resumer, both):
            if s:
                s.close_socket()


# -- config ---------------------------------------------------------------

def test_config_live_on_reload(gw):
    rng = random.Random(6)
    old = open_deflate(gw.port)
    try:
        subscribe(old, "cfg")
        reload_with(gw, compression=False, compression_min_size=100000)
        with open_deflate(gw.port) as new:
            assert new.response.header(EXT) is None
        with wf.open_ws(gw.port) as pub:
            data = ecg_batch(0, rng)
            pub.request({"type": "publish", "stream": "cfg", "id": 1, "data": data})
            # the old connection keeps its extension; the new minimum applies
            rsv, msg = recv_data(old)
            assert (rsv, msg["data"]) == (0, data)
            reload_with(gw, compression=True, compression_min_size=0, compression_level=1)
            pub.request({"type": "publish", "stream": "cfg", "id": 2, "data": {"x": 1}})
            rsv, msg = recv_data(old)
            assert (rsv, msg["data"]) == (4, {"x": 1})
        with open_deflate(gw.port) as new:
            assert new.response.header(EXT) == ACCEPTED
    finally:
        old.close_socket()


@pytest.mark.parametrize("key,value", [("compression_level", 0), ("compression_level", 10),
                                       ("compression_min_size", -1), ("compression", 2)])
def test_config_bad_values_refused(gateway_factory, key, value):
    gw = gateway_factory(config={"workers": 1, key: value}, start=False)
    gw.start(wait=False)
    assert gw.proc.wait(timeout=10 * SLOW) != 0
    assert key in gw.stderr()
