"""Heartbeat round trips (issue 19, the runbook's "add network latency
monitoring"): websocket_client_rtt_seconds counts exactly the pongs that
echo the latest heartbeat ping's payload, a slow client shows up first in
tools/wsstat's "top by RTT" (conn id, remote, RTT, unsent bytes,
subscriptions), /health/detailed gives p50/p99, and a real client library's
automatic pongs are measured too.

Clients here are raw sockets that decide, frame by frame, how to answer the
server's pings: at once, 600 ms late, with a wrong payload, or with pongs
nobody asked for.
"""
import asyncio
import json
import threading
import time

import websockets

from conftest import SLOW, metric
from gwutil import OP_PING, OP_PONG, OP_TEXT, RawWS
from test_wsstat import wsstat_json

DELAY = 0.6  # a late pong; prompt ones stay far below even in a sanitized build


class Answerer(threading.Thread):
    """Reads the server's frames for `seconds` and answers every ping the
    way `mode` says; counts the pongs that echo the ping's payload."""

    def __init__(self, port, mode, seconds, subscribe=None):
        super().__init__(daemon=True)
        self.ws = RawWS(port)
        self.mode = mode
        self.seconds = seconds
        self.echoed = 0
        self.payloads = []
        self.error = None
        if subscribe:
            self.ws.send_json({"type": "subscribe", "stream": subscribe})
            op, payload = self.ws.recv(answer_pings=False)
            assert op == OP_TEXT and json.loads(payload)["type"] == "subscribed", payload
        self.local = "%s:%d" % self.ws.sock.getsockname()[:2]

    def run(self):
        try:
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                try:
                    _, op, payload = self.ws.recv_frame(timeout=max(0.01, end - time.monotonic()) / SLOW)
                except TimeoutError:
                    break
                if op != OP_PING:
                    continue
                self.payloads.append(payload)
                if self.mode == "late":
                    time.sleep(DELAY)
                if self.mode == "wrong":
                    self.ws.send_frame(OP_PONG, bytes(b ^ 0xFF for b in payload))
                elif self.mode == "unsolicited":
                    self.ws.send_frame(OP_PONG, b"\0" * 8)
                    self.ws.send_frame(OP_PONG, payload)
                    self.ws.send_frame(OP_PONG, payload)  # a second echo counts once
                    self.echoed += 1
                else:
                    self.ws.send_frame(OP_PONG, payload)
                    self.echoed += 1
        except Exception as e:  # reported by the test
            self.error = e


def test_rtt_counts_matching_pongs_and_shows_the_slowest(gateway_factory):
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 1})
    before = gw.metrics()
    run_s = 3.5 * SLOW
    quick = Answerer(gw.port, "prompt", run_s)
    late = Answerer(gw.port, "late", run_s, subscribe="rtt/late")
    wrong = Answerer(gw.port, "wrong", run_s)
    noisy = Answerer(gw.port, "unsolicited", run_s)
    clients = [quick, late, wrong, noisy]
    try:
        for c in clients:
            c.start()
        for c in clients:
            c.join(run_s + 5 * SLOW)
            assert not c.is_alive() and c.error is None, c.error
        for c in clients:
            assert len(c.payloads) >= 2, (c.mode, c.payloads)
            assert all(len(p) == 8 for p in c.payloads), c.payloads
            assert len(set(c.payloads)) == len(c.payloads), "every ping has its own payload"
        # the last pongs are read, the next ping is not answered any more
        time.sleep(0.5 * SLOW)
        m = gw.metrics()
        want = quick.echoed + late.echoed + noisy.echoed
        got = metric(m, "websocket_client_rtt_seconds_count") - \
            metric(before, "websocket_client_rtt_seconds_count")
        assert got == want, (got, quick.echoed, late.echoed, noisy.echoed)
        # the late client's round trips are all above DELAY, the others' below
        slow_bucket = metric(m, "websocket_client_rtt_seconds_bucket", le="0.5")
        assert slow_bucket == quick.echoed + noisy.echoed, (slow_bucket, quick.echoed)
        assert metric(m, "websocket_client_rtt_seconds_sum") >= DELAY * late.echoed

        stat = wsstat_json(gw.port)
        slowest = stat["rtt"]["slowest"]
        assert slowest and slowest[0]["remote"] == late.local, slowest
        top = slowest[0]
        assert DELAY <= top["rtt_s"] < DELAY + 1.0 * SLOW, top
        assert top["subscriptions"] == 1 and top["unsent_bytes"] == 0, top
        assert top["conn"].split("-")[0] in {"0", "1"}, top
        # the wrong-payload client has no RTT at all; the others rank below
        remotes = [s["remote"] for s in slowest]
        assert wrong.local not in remotes, slowest
        assert set(remotes) == {quick.local, late.local, noisy.local}, slowest
        assert [s["rtt_s"] for s in slowest] == sorted((s["rtt_s"] for s in slowest), reverse=True)
        assert stat["rtt"]["samples"] == got

        doc = gw.detailed()
        assert doc["rtt"]["samples"] == got, doc["rtt"]
        assert 0 < doc["rtt"]["p50"] <= doc["rtt"]["p99"], doc["rtt"]
        # a quarter of the pongs are the late ones: p99 sits in their bucket
        assert doc["rtt"]["p99"] > 0.5, doc["rtt"]
    finally:
        for c in clients:
            c.ws.close()


def test_rtt_of_a_real_client_library(gateway_factory):
    """Python websockets answers pings by itself (its own pings off)."""
    gw = gateway_factory({"workers": 1, "heartbeat_interval": 1})

    async def scenario():
        async with websockets.connect(gw.ws_url, ping_interval=None) as ws:
            deadline = time.monotonic() + 5 * SLOW
            while time.monotonic() < deadline:
                if metric(gw.metrics(), "websocket_client_rtt_seconds_count") >= 2:
                    break
                await asyncio.sleep(0.1)
            await ws.send(json.dumps({"type": "ping", "id": 1}))
            assert json.loads(await ws.recv())["type"] == "pong"

    asyncio.run(scenario())
    m = gw.metrics()
    assert metric(m, "websocket_client_rtt_seconds_count") >= 2
    assert metric(m, "websocket_client_rtt_seconds_bucket", le="0.1") >= 2


def test_wsstat_text_shows_top_by_rtt(gateway_factory):
    import subprocess
    from test_wsstat import wsstat_bin
    gw = gateway_factory({"workers": 1, "heartbeat_interval": 1})
    late = Answerer(gw.port, "late", 2.5 * SLOW, subscribe="rtt/text")
    late.start()
    late.join(10 * SLOW)
    assert late.error is None and late.echoed >= 1
    time.sleep(1.2)  # the worker's table is refreshed once a second
    out = subprocess.run([wsstat_bin(), "-p", str(gw.port), "-1"], capture_output=True, text=True,
                         timeout=20 * SLOW)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "top by RTT" in text, text
    lines = text[text.index("top by RTT"):].splitlines()
    assert lines[1].split() == ["CONN", "REMOTE", "RTT", "UNSENT", "SUBS"], lines
    row = lines[2].split()
    assert row[1] == late.local and row[2].endswith("ms") and row[4] == "1", row
    late.ws.close()
