"""Cluster mode (issue 8): replicas share streams through real redis-server
instances on loopback. Every test starts its own Redis and gateways on free
ports; everything is stopped at the end."""
import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
import websockets

from conftest import SLOW, free_port, metric

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
pytestmark = pytest.mark.skipif(not os.path.exists(REDIS), reason="redis-server not installed")


class Redis:
    def __init__(self, tmp_path, port=None):
        self.port = port or free_port()
        self.dir = tmp_path
        self.proc = None

    def start(self, persistent=False):
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else \
            ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *durability, "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                out = subprocess.run(["redis-cli", "-p", str(self.port), "ping"],
                                     capture_output=True, text=True, timeout=2)
                if out.stdout.strip() == "PONG":
                    return self
            except (OSError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                              text=True, timeout=5).stdout.strip()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def redis_factory(tmp_path):
    started = []

    def make(port=None, persistent=False, subdir=None):
        d = tmp_path / (subdir or f"redis{len(started)}")
        d.mkdir(exist_ok=True)
        r = Redis(d, port).start(persistent)
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


@pytest.fixture
def gateway_factory(gateway_factory):
    """conftest's, waiting until the new replica's brokers are up (command
    and subscription): a subscribe before that is refused `unavailable`."""
    def make(*args, **kw):
        gw = gateway_factory(*args, **kw)
        if gw.proc is not None:
            deadline = time.monotonic() + 10 * SLOW
            while gw.detailed()["status"] != "ok":
                assert time.monotonic() < deadline, gw.detailed()
                time.sleep(0.02)
        return gw
    return make


def cluster_config(*urls, **extra):
    cfg = {"workers": 2, "broker": list(urls), "stream_memory": 16 << 20, "max_streams": 64}
    cfg.update(extra)
    return cfg


async def ws_request(ws, msg):
    await ws.send(json.dumps(msg))
    return json.loads(await asyncio.wait_for(ws.recv(), 5 * SLOW))


async def subscribe(url, stream, **kw):
    ws = await websockets.connect(url, open_timeout=10 * SLOW)
    reply = await ws_request(ws, {"type": "subscribe", "stream": stream, "id": "s", **kw})
    assert reply["type"] == "subscribed", reply
    return ws, reply


async def receive(ws, n, timeout=10):
    out = []
    deadline = time.monotonic() + timeout * SLOW
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"received {len(out)} of {n}: {out[-3:]}"
        out.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
    return out


async def publish_many(url, stream, n, start=0):
    """Publish n messages with ids, waiting for each ack; returns the seqs."""
    seqs = []
    async with websockets.connect(url, open_timeout=10 * SLOW) as ws:
        for k in range(start, start + n):
            reply = await ws_request(ws, {"type": "publish", "stream": stream, "id": k,
                                          "data": {"k": k}})
            assert reply["type"] == "ack", reply
            seqs.append(reply["seq"])
    return seqs


def test_three_replicas_one_sequence(gateway_factory, redis_factory):
    r = redis_factory()
    a, b, c = (gateway_factory(cluster_config(r.url)) for _ in range(3))

    async def go():
        subs = []
        for gw in (b, c):
            for _ in range(3):
                subs.append((await subscribe(gw.ws_url, "patient/1/ecg"))[0])
        seqs = await publish_many(a.ws_url, "patient/1/ecg", 200)
        assert seqs == list(range(1, 201))
        for ws in subs:
            got = await receive(ws, 200)
            assert [m["seq"] for m in got] == list(range(1, 201))
            assert [m["data"]["k"] for m in got] == list(range(200))
            await ws.close()
    asyncio.run(go())
    # One Redis round trip per publish: the broker histogram counted 200.
    assert metric(a.metrics(), "websocket_broker_latency_seconds_count") == 200
    assert metric(b.metrics(), "websocket_broker_up", connection="command") == 1
    assert metric(b.metrics(), "websocket_broker_up", connection="subscription") == 1


def test_compressed_stream_across_replicas_with_a_resume(gateway_factory, redis_factory):
    """ECG-sized messages reach `websockets` subscribers (which offer
    permessage-deflate, the server keeping its context) on two replicas
    compressed against each previous message; one resumes on another
    replica from Redis's history mid-stream and still reads every message
    right."""
    r = redis_factory()
    a, b, c = (gateway_factory(cluster_config(r.url)) for _ in range(3))
    data = [{"k": k, "leads": {lead: [round(0.001 * ((k * 37 + i * 11) % 900), 3)
                                      for i in range(10)] for lead in ("I", "II", "III", "V1")}}
            for k in range(60)]

    async def go():
        subs = [(await subscribe(gw.ws_url, "patient/3/ecg"))[0] for gw in (b, b, c)]
        mover, first = await subscribe(b.ws_url, "patient/3/ecg")
        async with websockets.connect(a.ws_url, open_timeout=10 * SLOW) as pub:
            for k in range(30):
                reply = await ws_request(pub, {"type": "publish", "stream": "patient/3/ecg",
                                               "id": k, "data": data[k]})
                assert reply["type"] == "ack", reply
            got = await receive(mover, 12)
            await mover.close()
            moved, again = await subscribe(c.ws_url, "patient/3/ecg", since=got[-1]["seq"],
                                           epoch=first["epoch"])
            assert again["recovered"] is True, again
            for k in range(30, 60):
                reply = await ws_request(pub, {"type": "publish", "stream": "patient/3/ecg",
                                               "id": k, "data": data[k]})
                assert reply["type"] == "ack", reply
        for ws in subs:
            assert [m["data"] for m in await receive(ws, 60)] == data
            await ws.close()
        assert [m["data"] for m in await receive(moved, 48)] == data[12:]
        await moved.close()
    asyncio.run(go())
    for gw in (b, c):
        m = gw.metrics()
        before = metric(m, "websocket_compression_bytes_total", direction="out", stage="before")
        after = metric(m, "websocket_compression_bytes_total", direction="out", stage="after")
        assert before > 0 and after < before / 3, (before, after)


def test_streams_shard_across_two_redis(gateway_factory, redis_factory):
    r1, r2 = redis_factory(), redis_factory()
    a = gateway_factory(cluster_config(r1.url, r2.url))
    b = gateway_factory(cluster_config(r1.url, r2.url))
    streams = [f"patient/{i}/ecg" for i in range(16)]

    async def go():
        subs = [(await subscribe(b.ws_url, s))[0] for s in streams]
        for s in streams:
            assert await publish_many(a.ws_url, s, 3) == [1, 2, 3]
        for ws in subs:
            assert [m["seq"] for m in await receive(ws, 3)] == [1, 2, 3]
            await ws.close()
    asyncio.run(go())
    on1 = [s for s in streams if r1.cli("GET", f"wsgate:{{{s}}}:seq") == "3"]
    on2 = [s for s in streams if r2.cli("GET", f"wsgate:{{{s}}}:seq") == "3"]
    assert on1 and on2, (on1, on2)
    assert sorted(on1 + on2) == sorted(streams)


def test_resume_on_another_replica_without_gap(gateway_factory, redis_factory):
    r = redis_factory()
    a, b, c = (gateway_factory(cluster_config(r.url)) for _ in range(3))

    async def go():
        ws, sub = await subscribe(b.ws_url, "patient/2/ecg")
        await publish_many(a.ws_url, "patient/2/ecg", 30)
        got = await receive(ws, 10)
        last = got[-1]["seq"]
        await ws.close()  # mid-stream: 20 messages not read
        await publish_many(a.ws_url, "patient/2/ecg", 20, start=30)
        ws2, sub2 = await subscribe(c.ws_url, "patient/2/ecg", since=last, epoch=sub["epoch"])
        assert sub2["recovered"] is True and sub2["seq"] == 50, sub2
        rest = await receive(ws2, 50 - last)
        assert [m["seq"] for m in rest] == list(range(last + 1, 51))
        await publish_many(a.ws_url, "patient/2/ecg", 5, start=50)
        assert [m["seq"] for m in await receive(ws2, 5)] == [51, 52, 53, 54, 55]
        await ws2.close()
    asyncio.run(go())


def test_resume_older_than_history_reports_gap(gateway_factory, redis_factory):
    r = redis_factory()
    a = gateway_factory(cluster_config(r.url, history_size=10))

    async def go():
        await publish_many(a.ws_url, "patient/3/ecg", 50)
        ws, sub = await subscribe(a.ws_url, "patient/3/ecg", since=5)
        assert sub["recovered"] is False
        first = (await receive(ws, 1))[0]
        assert first["type"] == "gap" and first["from"] == 6, first
        got = await receive(ws, 50 - first["to"])
        assert [m["seq"] for m in got] == list(range(first["to"] + 1, 51))
        await ws.close()
    asyncio.run(go())


class HoldingProxy:
    """A TCP proxy in front of Redis, on its own thread and event loop (the
    gateway fixtures block the test's). Once a client sends bytes containing
    `trigger`, what Redis answers on that connection from then on reaches
    the client `hold` seconds later, in order: the worker's request and
    every request it queues behind it on that connection wait."""

    def __init__(self, redis_port, trigger, hold):
        self.redis_port = redis_port
        self.trigger = trigger
        self.hold = hold
        self.triggered = threading.Event()
        self.port = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self):
        self.thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self.serve, "127.0.0.1", 0), self.loop).result(10)
        self.server = server
        self.port = server.sockets[0].getsockname()[1]
        return self

    def stop(self):
        async def shutdown():
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    async def serve(self, creader, cwriter):
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.redis_port)
        release = [0.0]

        async def up():
            while data := await creader.read(65536):
                if self.trigger in data and not self.triggered.is_set():
                    release[0] = self.loop.time() + self.hold
                    self.triggered.set()
                swriter.write(data)
                await swriter.drain()
            swriter.close()

        async def down():
            while data := await sreader.read(65536):
                await asyncio.sleep(max(0.0, release[0] - self.loop.time()))
                cwriter.write(data)
                await cwriter.drain()
            cwriter.close()
        try:
            await asyncio.gather(up(), down(), return_exceptions=True)
        finally:
            cwriter.close()
            swriter.close()


def test_gap_with_a_128_character_stream_name_during_replay(gateway_factory, redis_factory):
    """A `gap` found by the live stream while a subscriber's replay is on its
    way waits in that subscriber's queue; with the longest stream name
    allowed its text is over 125 bytes, so its frame needs the 16-bit
    length. (cluster.c's own encoder once wrote the length into one byte,
    which sets the mask bit: websockets refuses such a frame.) A proxy holds
    the worker's hole-filling XRANGE answer for a second so that the replay
    starts behind it."""
    r = redis_factory()
    name = "patient/" + "x" * 116 + "/ecg"
    assert len(name) == 128
    # The hole 51..100 (messages the broker never held).
    proxy = HoldingProxy(r.port, b"$4\r\n51-0\r\n$5\r\n100-0\r\n", 1.0 * SLOW).start()
    try:
        a = gateway_factory(cluster_config(proxy.url, history_size=10, workers=1))

        async def go():
            live, _ = await subscribe(a.ws_url, name)
            assert await publish_many(a.ws_url, name, 50) == list(range(1, 51))
            assert [m["seq"] for m in await receive(live, 50)] == list(range(1, 51))
            r.cli("SET", f"wsgate:{{{name}}}:seq", "100")
            pub = await websockets.connect(a.ws_url, open_timeout=10 * SLOW)
            await pub.send(json.dumps({"type": "publish", "stream": name, "data": 101, "id": "p"}))
            assert await asyncio.to_thread(proxy.triggered.wait, 10 * SLOW), "no hole fill seen"
            # The fill's answer is held: this replay (41..50) is answered after it.
            late, sub = await subscribe(a.ws_url, name, since=5)
            assert sub["recovered"] is False and sub["seq"] == 50, sub
            got = await receive(late, 13)
            assert got[0] == {"type": "gap", "stream": name, "from": 6, "to": 40}, got[0]
            assert [m["seq"] for m in got[1:11]] == list(range(41, 51))
            long_gap = got[11]
            assert long_gap == {"type": "gap", "stream": name, "from": 51, "to": 100}, long_gap
            assert len(json.dumps(long_gap, separators=(",", ":"))) > 125
            assert got[12]["seq"] == 101 and got[12]["stream"] == name, got[12]
            assert (await ws_request(late, {"type": "ping", "id": 1}))["type"] == "pong"
            live_rest = await receive(live, 2)
            assert live_rest[0] == {"type": "gap", "stream": name, "from": 51, "to": 100}
            assert live_rest[1]["seq"] == 101
            assert (json.loads(await asyncio.wait_for(pub.recv(), 10 * SLOW)))["seq"] == 101
            for ws in (live, late, pub):
                await ws.close()
        asyncio.run(go())
    finally:
        proxy.stop()


def test_redis_outage_unavailable_then_recovery_exactly_once(gateway_factory, redis_factory):
    r = redis_factory()
    a = gateway_factory(cluster_config(r.url))
    b = gateway_factory(cluster_config(r.url))

    async def go():
        subscribed = [await subscribe(b.ws_url, "patient/4/ecg") for _ in range(2)]
        subs = [ws for ws, _ in subscribed]
        old_epoch = subscribed[0][1]["epoch"]
        acked = await publish_many(a.ws_url, "patient/4/ecg", 20)
        for ws in subs:
            assert [m["seq"] for m in await receive(ws, 20)] == acked
        r.stop()
        deadline = time.monotonic() + 5 * SLOW
        pub = await websockets.connect(a.ws_url)
        unavailable = 0
        while time.monotonic() < deadline and unavailable < 3:
            reply = await ws_request(pub, {"type": "publish", "stream": "patient/4/ecg",
                                           "id": "x", "data": 1})
            assert reply["type"] == "error" and reply["code"] == "unavailable", reply
            unavailable += 1
        assert unavailable == 3
        assert b.detailed()["status"] == "degraded"
        assert metric(b.metrics(), "websocket_broker_up", connection="command") == 0
        # Subscribers stay connected through the outage.
        for ws in subs:
            assert (await ws_request(ws, {"type": "ping", "id": 1}))["type"] == "pong"
        await pub.close()
        time.sleep(3)
        redis_factory(port=r.port)
        # The replicas reconnect by themselves; publishing works again.
        deadline = time.monotonic() + 15 * SLOW
        while time.monotonic() < deadline:
            if metric(a.metrics(), "websocket_broker_up") == 2 and \
               metric(b.metrics(), "websocket_broker_up") == 2:
                break
            await asyncio.sleep(0.2)
        assert b.detailed()["status"] == "ok"
        # A fresh Redis: a new epoch, seq from 1 — announced to the live
        # subscribers with `reset` before its first message, so that nobody
        # takes seq 1 for an old position repeated.
        more = await publish_many(a.ws_url, "patient/4/ecg", 10, start=100)
        assert more == list(range(1, 11))
        for ws in subs:
            got = await receive(ws, 11)
            assert got[0]["type"] == "reset" and got[0]["stream"] == "patient/4/ecg", got[0]
            assert len(got[0]["epoch"]) >= 8 and got[0]["epoch"] != old_epoch, (got[0], old_epoch)
            assert [m["seq"] for m in got[1:]] == more, got
            assert [m["data"]["k"] for m in got[1:]] == list(range(100, 110))
            await ws.close()
    asyncio.run(go())


def test_redis_killed_under_traffic_acked_messages_delivered_exactly_once(gateway_factory,
                                                                         redis_factory):
    """Kill Redis (persistent, so it comes back with its data) for ~3 s while
    a publisher streams: publishes during the outage get `unavailable`;
    everything acknowledged reaches every subscriber on another replica
    exactly once, in order; the replicas recover by themselves."""
    r = redis_factory(persistent=True, subdir="durable")
    a = gateway_factory(cluster_config(r.url))
    b = gateway_factory(cluster_config(r.url))
    stream = "patient/8/ecg"

    async def go():
        subs = [(await subscribe(b.ws_url, stream))[0] for _ in range(2)]
        acked, refused = [], 0
        pub = await websockets.connect(a.ws_url)
        t0 = time.monotonic()
        restarted = killed = False
        k = 0
        while time.monotonic() - t0 < 9 * SLOW and len(acked) < 5000:
            if not killed and time.monotonic() - t0 > 1.0:
                r.stop()
                killed = True
            if killed and not restarted and time.monotonic() - t0 > 4.0:
                redis_factory(port=r.port, persistent=True, subdir="durable")
                restarted = True
            reply = await ws_request(pub, {"type": "publish", "stream": stream, "id": k,
                                           "data": {"k": k}})
            k += 1
            if reply["type"] == "ack":
                acked.append(reply["seq"])
            else:
                assert reply["code"] == "unavailable", reply
                refused += 1
                await asyncio.sleep(0.01)
        await pub.close()
        assert killed and restarted and refused > 0
        assert acked == sorted(acked) and len(set(acked)) == len(acked)
        assert acked[-1] > acked[0]  # publishing resumed after the restart
        for ws in subs:
            got = await receive(ws, len(acked), timeout=20)
            seqs = [m["seq"] for m in got if m["type"] == "message"]
            assert not [m for m in got if m["type"] == "gap"], got
            # Every acknowledged message, once, in order (a publish that was
            # stored just as the connection broke may be there unacknowledged).
            assert seqs == sorted(set(seqs)), seqs[:50]
            assert set(acked) <= set(seqs)
            await ws.close()
    asyncio.run(go())
    assert b.detailed()["status"] == "ok"


def test_killed_replica_clients_resume_elsewhere(gateway_factory, redis_factory):
    r = redis_factory()
    a, b, c = (gateway_factory(cluster_config(r.url)) for _ in range(3))

    async def go():
        on_b, sub_b = await subscribe(b.ws_url, "patient/5/ecg")
        on_c, _ = await subscribe(c.ws_url, "patient/5/ecg")
        await publish_many(a.ws_url, "patient/5/ecg", 10)
        got_b = await receive(on_b, 10)
        b.kill_tree()
        await publish_many(a.ws_url, "patient/5/ecg", 10, start=10)
        assert [m["seq"] for m in await receive(on_c, 20)] == list(range(1, 21))
        again, sub = await subscribe(c.ws_url, "patient/5/ecg", since=got_b[-1]["seq"],
                                     epoch=sub_b["epoch"])
        assert sub["recovered"] is True
        assert [m["seq"] for m in await receive(again, 10)] == list(range(11, 21))
        await again.close()
        await on_c.close()
    asyncio.run(go())


def test_concurrent_publishers_on_two_replicas_share_one_order(gateway_factory, redis_factory):
    r = redis_factory()
    a = gateway_factory(cluster_config(r.url))
    b = gateway_factory(cluster_config(r.url))

    async def go():
        ws, _ = await subscribe(a.ws_url, "patient/6/ecg")
        s1, s2 = await asyncio.gather(publish_many(a.ws_url, "patient/6/ecg", 150),
                                      publish_many(b.ws_url, "patient/6/ecg", 150, start=1000))
        assert sorted(s1 + s2) == list(range(1, 301))
        got = await receive(ws, 300)
        assert [m["seq"] for m in got] == list(range(1, 301))
        await ws.close()
    asyncio.run(go())


def test_password_file_is_used_and_never_logged(gateway_factory, redis_factory, tmp_path):
    r = redis_factory()
    secret = "s3cret-" + os.urandom(4).hex()
    r.cli("CONFIG", "SET", "requirepass", secret)
    pw = tmp_path / "redis.pass"
    pw.write_text(secret + "\n")
    a = gateway_factory(cluster_config(r.url, broker_password_file=str(pw), log_level="debug"))

    async def go():
        ws, _ = await subscribe(a.ws_url, "patient/7/ecg")
        assert await publish_many(a.ws_url, "patient/7/ecg", 3) == [1, 2, 3]
        await receive(ws, 3)
        await ws.close()
    asyncio.run(go())
    assert secret not in a.stderr()


def test_broker_replies_are_timed_from_their_request_under_its_type(gateway_factory, redis_factory):
    """A subscribe or publish answered after a Redis round trip counts in
    websocket_request_duration_seconds under its own type and from its own
    receive time, though a ping that came in the same read was answered
    (and was the connection's last request) before Redis replied."""
    import wsframes as wf
    redis = redis_factory()
    gw = gateway_factory(cluster_config(redis.url, workers=1))
    before = gw.metrics()
    ws = wf.open_ws(gw.port)
    try:
        for request, reply in (({"type": "subscribe", "stream": "t/1", "id": "s"}, "subscribed"),
                               ({"type": "publish", "stream": "t/1", "data": 1, "id": "p"}, "ack")):
            ws.send(wf.text(json.dumps(request)) + wf.text('{"type":"ping","id":"x"}'))
            got = [ws.recv_message()["type"] for _ in range(2 if reply == "subscribed" else 3)]
            assert got[0] == "pong" and reply in got, got  # the ping was answered first
    finally:
        ws.close_socket()

    def moved(t):
        return metric(gw.metrics(), "websocket_request_duration_seconds_count", type=t) - \
            metric(before, "websocket_request_duration_seconds_count", type=t)
    deadline = time.monotonic() + 3 * SLOW
    while moved("ping") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (moved("subscribe"), moved("publish"), moved("ping")) == (1, 1, 2)


def test_pipelined_publishes_of_one_device_keep_their_order(gateway_factory, redis_factory):
    """A device pipelines its publishes (ECG batches back to back, without
    waiting for acks): the seqs Redis gives them must follow the order it
    sent them, also when the worker's Redis pool has grown to several
    connections. Spread over connections, later publishes overtook earlier
    ones."""
    from streamclient import RawPublisher
    r = redis_factory()
    gw = gateway_factory(cluster_config(r.url, workers=1))
    n = 2000

    async def go():
        pub = await RawPublisher.connect(gw)
        for stream in ("order/a", "order/b"):
            texts = ['{"type":"publish","stream":"%s","id":%d,"data":{"k":%d}}' % (stream, k, k)
                     for k in range(n)]
            pub.acks.clear()
            await pub.send_texts(texts)
            await pub.wait_for(lambda: len(pub.acks) == n, f"{n} acks", timeout=60)
            seqs = [pub.acks[k] for k in range(n)]
            overtaken = [k for k in range(1, n) if seqs[k] < seqs[k - 1]]
            assert not overtaken, (f"{stream}: {len(overtaken)} publishes got a seq below the one "
                                   f"sent before them, e.g. ids {overtaken[:5]}")
            assert sorted(seqs) == list(range(1, n + 1))
        pools = metric(gw.metrics(), "websocket_broker_pool_connections")
        await pub.close()
        return pools

    pools = asyncio.run(asyncio.wait_for(go(), 120 * SLOW))
    assert pools >= 1
