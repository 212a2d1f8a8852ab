"""Streams (docs/PROTOCOL.md "Messages" and "Streams, order and resume"), checked from the
outside with independent clients: Python `websockets` (streamclient.Client)
and a raw-socket client (streamclient.RawWS).

Every wait is bounded and scaled by conftest.SLOW; no test asserts a speed.
"""
import asyncio
import json
import os
import signal
import time

import pytest

from conftest import SLOW, metric
from streamclient import (Client, RawPublisher, RawWS, connect_on, publish_many, raw_members,
                          same_json, worker_of_port, worker_pid)


def run(coro, timeout=90):
    """Run one test's async body with an overall bound."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout * SLOW)
    return asyncio.run(bounded())


def now_ms():
    return int(time.time() * 1000)


def describe_seqs(seqs, first, last):
    """Where a seq list departs from first..last (for assertion messages)."""
    want = list(range(first, last + 1))
    for i, (a, b) in enumerate(zip(seqs, want)):
        if a != b:
            return f"at index {i}: got {seqs[max(0, i - 3):i + 4]}, expected {want[max(0, i - 3):i + 4]}"
    return f"got {len(seqs)} seqs, expected {len(want)} (last got {seqs[-3:]})"


def assert_seqs(frames, first, last):
    """frames are exactly the messages first..last, in order, with no gap."""
    gaps = [f for f in frames if f["type"] == "gap"]
    assert not gaps, f"unexpected gap frame(s): {gaps[:3]}"
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(first, last + 1)), describe_seqs(seqs, first, last)


def assert_message_shape(f, stream, t0):
    assert f["type"] == "message", f
    assert set(f) == {"type", "stream", "seq", "ts", "data"}, f
    assert f["stream"] == stream, f
    assert type(f["seq"]) is int and f["seq"] >= 1, f
    assert type(f["ts"]) is int, f
    assert t0 - 2000 <= f["ts"] <= now_ms() + 2000, (f["ts"], t0)


async def metrics_async(gw):
    return await asyncio.to_thread(gw.metrics)


async def wait_metric(gw, pred, what, timeout=10):
    """Poll /metrics until pred(samples) holds; returns the samples."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        m = await metrics_async(gw)
        if pred(m):
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics never showed {what}")
        await asyncio.sleep(0.1)


# -- subscribe, publish, ack, message ---------------------------------------

def test_subscribe_publish_ack_and_delivery(gateway):
    stream = "patient/4711/ecg"

    async def main():
        t0 = now_ms()
        sub, pub = await connect_on(gateway, [0, 1])
        r = await sub.subscribe(stream, id="sub-1")
        assert set(r) == {"type", "stream", "epoch", "seq", "id"}, r
        assert r["type"] == "subscribed" and r["stream"] == stream and r["seq"] == 0, r
        assert r["id"] == "sub-1", r
        epoch = r["epoch"]
        assert isinstance(epoch, str) and epoch, r

        for i in (1, 2, 3):
            a = await pub.publish(stream, json.dumps({"n": i}), rid=100 + i)
            assert dict(a) == {"type": "ack", "id": 100 + i, "stream": stream, "seq": i}, a

        # Without an id: accepted (it takes seq 4) but never answered.
        await pub.send('{"type":"publish","stream":"%s","data":{"n":4}}' % stream)
        before_pong = await pub.sync()
        assert before_pong == [], f"a publish without id was answered: {before_pong}"
        a = await pub.publish(stream, '{"n":5}')
        assert a["type"] == "ack" and a["seq"] == 5, a

        frames = await sub.stream_frames(stream, 5)
        assert_seqs(frames, 1, 5)
        for i, f in enumerate(frames, 1):
            assert_message_shape(f, stream, t0)
            assert f["data"] == {"n": i}, f

        # A later subscriber starts after the current seq, same epoch.
        late = await Client.connect(gateway)
        r2 = await late.subscribe(stream)
        assert r2["seq"] == 5 and r2["epoch"] == epoch, r2
        # A publisher that also subscribes gets its ack and the message.
        r3 = await pub.subscribe(stream)
        assert r3["seq"] == 5 and r3["epoch"] == epoch, r3
        a = await pub.publish(stream, '{"n":6}')
        assert a["seq"] == 6, a
        for c in (sub, late, pub):
            frames = await c.stream_frames(stream, 6)
            assert_seqs(frames, 6, 6)
            assert frames[0]["data"] == {"n": 6}

        # Exactly once: nothing else arrives.
        await asyncio.sleep(0.3 * SLOW)
        for c in (sub, late, pub):
            extra = await c.sync()
            assert extra == [], f"unexpected frames: {extra[:5]}"
        for c in (sub, late, pub):
            await c.close()

    run(main())


def test_request_ids_are_echoed_equal(gateway):
    ids = ["a string", 0, -7, 1.5, None, True, {"k": [1, {"z": None}]}, [1, "x"], "é 😀"]

    async def main():
        c = await Client.connect(gateway)
        for n, rid in enumerate(ids):
            stream = f"ids/{n}"
            r = await c.request({"type": "subscribe", "stream": stream, "id": rid})
            assert r["type"] == "subscribed" and same_json(r["id"], rid), r
            a = await c.publish(stream, "1", rid=rid)
            assert a["type"] == "ack" and same_json(a["id"], rid), a
            e = await c.request({"type": "subscribe", "stream": stream, "id": rid})
            assert e["type"] == "error" and e["code"] == "bad_request" and same_json(e["id"], rid), e
            u = await c.request({"type": "unsubscribe", "stream": stream, "id": rid})
            assert u == {"type": "unsubscribed", "stream": stream, "id": rid}, u
        await c.close()

    run(main())


# -- data byte for byte -------------------------------------------------------

DATA_CASES = [
    r'{"b": 1.50, "a" : [1,2 , 3], "u":"\u00e9"}',
    r'"quotes \" backslash \\ slash \/ escapes \b\f\n\r\t \u00e9 \ud83d\ude00 \u001f"',
    '"raw UTF-8: é ü ß 中文 😀"',
    "42",
    "-0.0",
    "1.50E+10",
    "3.14159265358979323846264338327950288419716939937510",
    "9007199254740993",
    "-9223372036854775808",
    "null",
    "true",
    "false",
    "[]",
    '[ 1, "two" ,{"three":3}, null ,[ ] ]',
    "{}",
    '{\n\t"nested" : {"deep": [[[{"x": "}]{[\\"}"}]]]},\r\n "k}": "v{", "data": "data"\n}',
    '"' + "x" * 70000 + '"',  # a frame with a 64-bit length
]

# Where `data` sits in the request: last, first, in the middle after a member
# whose value mentions "data", and under an escaped key.
LAYOUTS = [
    '{"type":"publish","stream":%(s)s,"id":%(id)d,"data":%(d)s}',
    '{"data":%(d)s,"stream":%(s)s,"type":"publish","id":%(id)d}',
    '{ "type" : "publish" , "note": "\\"data\\": 0, {\\"x\\"", "data" :  %(d)s  ,\n'
    ' "stream":%(s)s, "id":%(id)d }',
    '{"type":"publish","stream":%(s)s,"id":%(id)d,"d\\u0061ta":%(d)s}',  # an escaped key
]


def test_data_reaches_subscribers_byte_for_byte(gateway):
    stream = "raw/data"

    async def main():
        sub, pub = await connect_on(gateway, [0, 1])
        local = await Client.connect(gateway)  # wherever it lands
        for c in (sub, local):
            await c.subscribe(stream)
        expected = []
        rid = 0
        for layout in LAYOUTS:
            for d in DATA_CASES:
                rid += 1
                await pub.send(layout % {"s": json.dumps(stream), "id": rid, "d": d})
                a = await pub.reply(rid)
                assert a["type"] == "ack", (a, d[:80])
                expected.append((a["seq"], d))
        assert [s for s, _ in expected] == list(range(1, len(expected) + 1))
        for c in (sub, local):
            frames = await c.stream_frames(stream, len(expected))
            assert_seqs(frames, 1, len(expected))
            for f, (seq, d) in zip(frames, expected):
                got = raw_members(f.raw)["data"]
                assert got == d, f"seq {seq}: sent {d[:120]!r}, delivered {got[:120]!r}"
                assert got.encode() == d.encode()
                assert f["data"] == json.loads(d)
        for c in (sub, pub, local):
            await c.close()

    run(main())


def test_malformed_json_is_refused_saying_where(gateway):
    """docs/PROTOCOL.md 4: a message that is not strict JSON gets bad_request
    naming the byte it went wrong at; nothing is published and the
    connection stays usable."""
    async def main():
        c = await Client.connect(gateway)
        await c.ws.send('{"type":"publish","stream":"raw/bad","id":1,"data":[1,2,]}')
        err = await c.take(lambda f: f.get("type") == "error", 5, what="the refusal")
        assert err["code"] == "bad_request" and "not JSON" in err["message"] \
            and "at byte 57" in err["message"], err
        await c.ws.send('{"type":"publish","stream":"raw/bad","id":2,"data":1,"data":2}')
        err = await c.take(lambda f: f.get("type") == "error", 5, what="the second refusal")
        assert err["code"] == "bad_request" and '"data" appears twice' in err["message"], err
        assert (await c.request({"type": "ping", "id": 3}))["type"] == "pong"
        await c.close()
    run(main())


@pytest.mark.parametrize("data", [
    "123456789012345678901234567890",
    "1e400",
    '{"dup": 1, "dup": 2}',
    '{"n": -99999999999999999999}',
    r'"nul \u0000 inside"',
], ids=["big_integer", "beyond_double_range", "repeated_name_inside", "big_negative_integer_in_object",
        "escaped_nul"])
def test_data_any_json_value_byte_for_byte(gateway, data):
    """docs/PROTOCOL.md: `data` is any JSON and reaches subscribers byte for byte;
    numbers beyond 64-bit/double range and \\u0000 are valid JSON."""
    stream = "raw/edge"

    async def main():
        sub, pub = await connect_on(gateway, [0, 1])
        await sub.subscribe(stream)
        await pub.send('{"type":"publish","stream":"%s","id":1,"data":%s}' % (stream, data))
        a = await pub.next(what="the reply to the publish")
        assert a["type"] == "ack" and a.get("id") == 1 and a["seq"] == 1, \
            f"valid JSON data refused: {a.raw}"
        frames = await sub.stream_frames(stream, 1)
        assert raw_members(frames[0].raw)["data"] == data, frames[0].raw
        await sub.close()
        await pub.close()

    run(main())


# -- across workers -----------------------------------------------------------

@pytest.mark.parametrize("workers", [2, 4])
def test_every_subscriber_on_every_worker_gets_every_message(gateway_factory, workers):
    gw = gateway_factory(config={"workers": workers})
    stream = "fanout/1"
    n = 200

    async def main():
        t0 = now_ms()
        subs = await connect_on(gw, [s for s in range(workers) for _ in range(2)])
        pub = await Client.connect(gw)
        doc = await asyncio.to_thread(gw.detailed)
        per_worker = {w["slot"]: w["connections"] for w in doc["workers"]}
        for s in range(workers):
            assert per_worker.get(s, 0) >= 2, doc["workers"]
        replies = [await s.subscribe(stream) for s in subs]
        assert all(r["seq"] == 0 for r in replies), replies
        assert len({r["epoch"] for r in replies}) == 1, replies

        datas = [json.dumps({"i": i, "pad": "p" * (i % 37)}) for i in range(1, n + 1)]
        acks = await publish_many(pub, stream, datas)
        assert [a.get("seq") for a in acks] == list(range(1, n + 1)), acks[:3]

        first = None
        for s in subs:
            frames = await s.stream_frames(stream, n)
            assert_seqs(frames, 1, n)
            for f, d in zip(frames, datas):
                assert_message_shape(f, stream, t0)
                assert raw_members(f.raw)["data"] == d
            # Same record everywhere: same seq, same ts.
            key = [(f["seq"], f["ts"]) for f in frames]
            first = first or key
            assert key == first, f"worker {s.slot} saw different ts for the same seqs"
        await asyncio.sleep(0.3 * SLOW)
        for s in subs:
            extra = await s.sync()
            assert extra == [], f"worker {s.slot}: duplicate/extra frames {extra[:3]}"
        for c in subs + [pub]:
            await c.close()

    run(main())


def test_concurrent_publishers_on_two_workers_one_total_order(gateway_factory):
    gw = gateway_factory(config={"workers": 2})
    stream = "order/1"
    per = 500

    async def main():
        pa, pb, s0, s1 = await connect_on(gw, [0, 1, 0, 1])
        for s in (s0, s1):
            r = await s.subscribe(stream)
            assert r["seq"] == 0, r
        datas = {p: [json.dumps({"p": p, "i": i}) for i in range(per)] for p in ("a", "b")}
        acks_a, acks_b = await asyncio.gather(publish_many(pa, stream, datas["a"], window=8),
                                              publish_many(pb, stream, datas["b"], window=8))
        for acks in (acks_a, acks_b):
            assert all(a["type"] == "ack" for a in acks), [a for a in acks if a["type"] != "ack"][:3]
            seqs = [a["seq"] for a in acks]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "one publisher's acks out of order"
        all_seqs = sorted(a["seq"] for a in acks_a + acks_b)
        assert all_seqs == list(range(1, 2 * per + 1)), describe_seqs(all_seqs, 1, 2 * per)
        by_seq = {}
        for p, acks in (("a", acks_a), ("b", acks_b)):
            for a, d in zip(acks, datas[p]):
                by_seq[a["seq"]] = d
        for s in (s0, s1):
            frames = await s.stream_frames(stream, 2 * per, timeout=30)
            assert_seqs(frames, 1, 2 * per)
            for f in frames:
                assert raw_members(f.raw)["data"] == by_seq[f["seq"]], \
                    f"worker {s.slot}: seq {f['seq']} carries another publish's data"
        for c in (pa, pb, s0, s1):
            await c.close()

    run(main(), timeout=120)


# -- resume -------------------------------------------------------------------

def test_resume_seam_while_publisher_streams_at_full_speed(gateway_factory):
    """Eight times: a subscriber leaves, the publisher goes on at full
    speed (bursts of 100 publishes in one write), a new connection
    (alternating workers) resumes with since+epoch while publishing goes
    on; it must get since+1.. with no gap or duplicate between replay and
    live. Anchors stay subscribed on both workers throughout, so the
    resuming subscriber joins workers that are busy fanning the stream out."""
    gw = gateway_factory(config={"workers": 2, "history_size": 100000, "max_streams": 16,
                                 "stream_memory": 64 * 1048576})
    stream = "resume/seam"
    hard_cap = 200000  # messages (a bound, not expected to be reached)
    rounds = 8

    async def main():
        anchor0, anchor1 = await connect_on(gw, [0, 1])
        anchors = (anchor0, anchor1)
        for a in anchors:
            await a.subscribe(stream)
        for _ in range(100):
            pub = await RawPublisher.connect(gw)
            if await asyncio.to_thread(worker_of_port, gw, pub.local_port) == 0:
                break
            await pub.close()
        else:
            raise AssertionError("could not place the publisher on worker 0")
        cur = await Client.connect(gw)
        r = await cur.subscribe(stream)
        epoch, expect = r["epoch"], 1
        state = {"sent": 0, "stop_at": None}

        async def publisher():
            deadline = time.monotonic() + 90 * SLOW
            while state["sent"] < hard_cap and (state["stop_at"] is None
                                                or state["sent"] < state["stop_at"]):
                # At most 1000 ahead of what the anchors have read (the test's
                # own pacing, so no subscriber nears max_send_buffer).
                while state["sent"] - min(a.received for a in anchors) > 1000:
                    assert time.monotonic() < deadline, "anchors stopped receiving"
                    await asyncio.sleep(0.001)
                first = state["sent"] + 1
                last = min(first + 99, hard_cap)
                await pub.send_texts(['{"type":"publish","stream":"%s","id":%d,"data":{"i":%d}}'
                                      % (stream, i, i) for i in range(first, last + 1)])
                state["sent"] = last
                # A breath between bursts: the Python subscribers share this
                # process's CPU and must not fall far behind.
                await asyncio.sleep(0.005)

        ptask = asyncio.ensure_future(publisher())

        async def read_until(c, target):
            nonlocal expect
            frames = await c.stream_frames(stream, target, timeout=30)
            for f in frames:
                assert f["type"] == "message", f"gap at the seam: {f}"
                assert f["seq"] == expect, f"expected seq {expect}, got {f['seq']}"
                assert f["data"] == {"i": f["seq"]}, f
                expect += 1

        resumed = []
        for k in range(rounds):
            await read_until(cur, expect + 149)
            since = expect - 1
            await cur.close()
            # Let the publisher run ahead so there is something to replay.
            deadline = time.monotonic() + 30 * SLOW
            while pub.max_seq < since + 100:
                assert not ptask.done(), f"publisher stopped early: {ptask}"
                assert time.monotonic() < deadline, "publisher made no progress"
                await asyncio.sleep(0.002)
            (cur,) = await connect_on(gw, [k % 2])
            r = await cur.subscribe(stream, since=since, epoch=epoch)
            assert r["recovered"] is True and r["epoch"] == epoch, r
            assert r["seq"] >= since + 100, r
            resumed.append((since, r["seq"]))
            if k == rounds - 1:
                state["stop_at"] = state["sent"] + 500  # live messages after the last seam
        await asyncio.wait_for(ptask, 90 * SLOW)
        total = state["sent"]
        assert all(seq < total for _, seq in resumed), (resumed, total)
        deadline = time.monotonic() + 30 * SLOW
        while len(pub.acks) < total and not pub.errors:
            assert time.monotonic() < deadline, f"{len(pub.acks)} acks of {total}"
            await asyncio.sleep(0.01)
        assert pub.errors == [], pub.errors[:3]
        assert pub.acks == {i: i for i in range(1, total + 1)}
        await read_until(cur, total)
        extra = await cur.sync()
        assert extra == [], f"frames after the last message: {extra[:3]}"
        for a in anchors:
            assert_seqs(await a.stream_frames(stream, total, timeout=30), 1, total)
        for c in (cur, anchor0, anchor1, pub):
            await c.close()

    run(main(), timeout=150)


def test_resume_seam_inside_one_burst_on_the_publishers_worker(gateway_factory):
    """Deterministic seam: one write carries 100 publishes, the resuming
    subscribe, and 100 more, so the gateway handles the subscribe while
    the messages before it are appended but not yet fanned out on that
    worker (which has another subscriber of the stream). The subscriber
    must get since+1..end exactly once, in order: replay up to its
    `subscribed` seq, live after it."""
    gw = gateway_factory(config={"workers": 2})
    stream = "resume/burst"

    async def main():
        anchor0, anchor1 = await connect_on(gw, [0, 1])
        epoch = (await anchor0.subscribe(stream))["epoch"]
        await anchor1.subscribe(stream)
        for _ in range(100):
            p = await RawPublisher.connect(gw)
            if await asyncio.to_thread(worker_of_port, gw, p.local_port) == 0:
                break
            await p.close()
        else:
            raise AssertionError("could not place the publisher on worker 0")

        def publishes(first, count):
            return ['{"type":"publish","stream":"%s","id":%d,"data":%d}' % (stream, i, i)
                    for i in range(first, first + count)]

        base = 0
        for k in range(5):
            start = len(p.frames)
            texts = []
            if k:
                texts.append('{"type":"unsubscribe","stream":"%s","id":"u%d"}' % (stream, k))
            texts += publishes(base + 1, 100)
            texts.append('{"type":"subscribe","stream":"%s","since":%d,"epoch":"%s","id":"r%d"}'
                         % (stream, base + 50, epoch, k))
            texts += publishes(base + 101, 100)
            await p.send_texts(texts)
            end = base + 200
            await p.wait_for(lambda: len(p.acks) >= end and any(
                f.get("type") == "message" and f["seq"] == end for f in p.frames[start:]),
                f"round {k}: acks and messages up to {end}")
            await asyncio.sleep(0.1 * SLOW)  # room for a duplicate to show
            assert p.acks == {i: i for i in range(1, end + 1)}
            got = p.frames[start:]
            if k:
                assert got[0] == {"type": "unsubscribed", "stream": stream, "id": f"u{k}"}, got[:2]
                got = got[1:]
            r = got[0]
            assert r["type"] == "subscribed" and r["id"] == f"r{k}", got[:3]
            assert r["seq"] == base + 100 and r["recovered"] is True, r
            assert_seqs(got[1:], base + 51, end)
            base = end
        for a in (anchor0, anchor1):
            assert_seqs(await a.stream_frames(stream, base), 1, base)
            await a.close()
        await p.close()

    run(main())


def test_resume_epochs(gateway_factory):
    gw = gateway_factory(config={"workers": 2})
    stream = "resume/epoch"

    async def main():
        watch, pub = await connect_on(gw, [0, 1])
        epoch = (await watch.subscribe(stream))["epoch"]
        for i in range(1, 6):
            assert (await pub.publish(stream, str(i)))["seq"] == i
        bogus = "x" * 8 if epoch != "x" * 8 else "y" * 8

        wrong = await Client.connect(gw)
        r = await wrong.subscribe(stream, since=3, epoch=bogus)
        assert r["recovered"] is False and r["epoch"] == epoch and r["seq"] == 5, r
        wrong2 = await Client.connect(gw)
        r = await wrong2.subscribe(stream, since=3, epoch="not-an-epoch-at-all")
        assert r["recovered"] is False and r["seq"] == 5, r
        noepoch = await Client.connect(gw)
        r = await noepoch.subscribe(stream, since=3)
        assert r["recovered"] is True and r["seq"] == 5, r
        current = await Client.connect(gw)
        r = await current.subscribe(stream, since=5, epoch=epoch)
        assert r["recovered"] is True and r["seq"] == 5, r
        zero = await Client.connect(gw)
        r = await zero.subscribe(stream, since=0, epoch=epoch)
        assert r["recovered"] is True, r

        assert (await pub.publish(stream, "6"))["seq"] == 6
        for c in (wrong, wrong2):  # everything held of the current epoch
            assert_seqs(await c.stream_frames(stream, 6), 1, 6)
        assert_seqs(await noepoch.stream_frames(stream, 6), 4, 6)
        assert_seqs(await current.stream_frames(stream, 6), 6, 6)
        assert_seqs(await zero.stream_frames(stream, 6), 1, 6)
        for c in (wrong, wrong2, noepoch, current, zero):
            assert await c.sync() == []
            await c.close()
        await watch.close()
        await pub.close()

    run(main())


def test_resume_beyond_history_gets_gap_first(gateway_factory):
    gw = gateway_factory(config={"workers": 2, "history_size": 10})
    stream = "resume/gap"

    async def main():
        watch, pub = await connect_on(gw, [0, 1])
        epoch = (await watch.subscribe(stream))["epoch"]
        await watch.close()
        acks = await publish_many(pub, stream, [str(i) for i in range(1, 51)])
        assert [a["seq"] for a in acks] == list(range(1, 51))

        for slot in (0, 1):
            (c,) = await connect_on(gw, [slot])
            r = await c.subscribe(stream, since=5, epoch=epoch)
            assert r["recovered"] is False and r["seq"] == 50 and r["epoch"] == epoch, r
            g = await c.next(what="the gap")
            assert dict(g) == {"type": "gap", "stream": stream, "from": 6, "to": 40}, g
            frames = [await c.next(what=f"message {s}") for s in range(41, 51)]
            assert [(f["type"], f["seq"]) for f in frames] == [("message", s) for s in range(41, 51)]
            assert [f["data"] for f in frames] == list(range(41, 51))
            await c.close()

        # Held completely: recovered, no gap.
        held = await Client.connect(gw)
        r = await held.subscribe(stream, since=45, epoch=epoch)
        assert r["recovered"] is True, r
        assert (await pub.publish(stream, "51"))["seq"] == 51
        assert_seqs(await held.stream_frames(stream, 51), 46, 51)
        await held.close()
        await pub.close()

    run(main())


@pytest.mark.parametrize("config", [{"history_size": 10},
                                    {"max_streams": 64, "stream_memory": 1048576,
                                     "max_message_size": 65536}],
                         ids=["history_size_10", "pool_1MiB"])
def test_live_subscribers_get_every_message_whatever_the_history_size(gateway_factory, config):
    """history_size and stream_memory bound what a resume can replay, not
    live delivery: subscribers that keep up get every message, on the
    publisher's worker and on the other one, even when a burst is larger
    than the history (and, with a 1 MiB pool, close to the whole pool)."""
    gw = gateway_factory(config=dict(config, workers=2))
    stream = "live/small-history"
    n = 600
    pad = "q" * (1500 if "stream_memory" in config else 10)

    async def main():
        pub, s0, s1 = await connect_on(gw, [0, 0, 1])
        for s in (s0, s1):
            await s.subscribe(stream)
        datas = [json.dumps({"i": i, "pad": pad}) for i in range(1, n + 1)]
        acks = await publish_many(pub, stream, datas, window=64)
        assert [a.get("seq") for a in acks] == list(range(1, n + 1))
        for s in (s0, s1):
            frames = await s.stream_frames(stream, n, timeout=30)
            gaps = [(f["from"], f["to"]) for f in frames if f["type"] == "gap"]
            assert not gaps, f"subscriber on worker {s.slot} (publisher on 0) got gaps {gaps[:5]}"
            assert_seqs(frames, 1, n)
        for c in (pub, s0, s1):
            await c.close()

    run(main())


# -- worker crash ---------------------------------------------------------------

def test_subscriber_resumes_after_its_worker_is_killed(gateway_factory):
    gw = gateway_factory(config={"workers": 2})
    stream = "crash/sub"

    async def main():
        sub, pub = await connect_on(gw, [1, 0])
        epoch = (await sub.subscribe(stream))["epoch"]
        acks = await publish_many(pub, stream, [json.dumps({"i": i}) for i in range(1, 101)])
        assert acks[-1]["seq"] == 100
        frames = await sub.stream_frames(stream, 100)
        assert_seqs(frames, 1, 100)

        pid = await asyncio.to_thread(worker_pid, gw, sub.slot)
        assert pid in gw.worker_pids(), (pid, gw.worker_pids())
        os.kill(pid, signal.SIGKILL)
        await sub.wait_closed()

        # The publisher's worker is untouched; history keeps growing.
        acks = await publish_many(pub, stream, [json.dumps({"i": i}) for i in range(101, 201)])
        assert [a.get("seq") for a in acks] == list(range(101, 201)), acks[:2]

        deadline = time.monotonic() + 15 * SLOW
        while True:
            doc = await asyncio.to_thread(gw.detailed)
            w = [w for w in doc["workers"] if w["slot"] == sub.slot][0]
            if w["state"] == "running" and w["pid"] not in (0, pid):
                break
            assert time.monotonic() < deadline, f"worker {sub.slot} not respawned: {doc['workers']}"
            await asyncio.sleep(0.1)

        # Reconnect to the respawned worker (a new process reading the old
        # segment) and resume.
        (again,) = await connect_on(gw, [sub.slot])
        r = await again.subscribe(stream, since=100, epoch=epoch)
        assert r == {"type": "subscribed", "stream": stream, "epoch": epoch, "seq": 200,
                     "recovered": True, "id": r["id"]}, r
        acks = await publish_many(pub, stream, [json.dumps({"i": i}) for i in range(201, 251)])
        assert acks[-1]["seq"] == 250
        frames = await again.stream_frames(stream, 250)
        assert_seqs(frames, 101, 250)
        assert [f["data"]["i"] for f in frames] == list(range(101, 251))

        # The whole history survived, on the other worker too.
        (other,) = await connect_on(gw, [1 - sub.slot])
        r = await other.subscribe(stream, since=0, epoch=epoch)
        assert r["recovered"] is True and r["seq"] == 250, r
        assert_seqs(await other.stream_frames(stream, 250), 1, 250)
        for c in (again, other, pub):
            assert await c.sync() == []
            await c.close()

    run(main(), timeout=120)


def test_killing_a_publishing_worker_does_not_wedge_the_stream(gateway_factory):
    """The publisher's worker is SIGKILLed while it appends at full speed
    (possibly holding the stream's lock): the stream goes on with the next
    seq, and what was appended is delivered with no hole."""
    gw = gateway_factory(config={"workers": 2})
    stream = "crash/pub"

    async def main():
        pub, sub, pub2 = await connect_on(gw, [0, 1, 1])
        epoch = (await sub.subscribe(stream))["epoch"]
        acked = [0]

        async def flood():
            rid, pending = 0, 0
            try:
                for _ in range(200000):
                    while pending >= 64:
                        a = await pub.next(10)
                        pending -= 1
                        assert a["type"] == "ack", a
                        acked[0] = max(acked[0], a["seq"])
                    rid += 1
                    await pub.send('{"type":"publish","stream":"%s","id":%d,"data":%d}'
                                   % (stream, rid, rid))
                    pending += 1
            except AssertionError as e:
                if "connection closed" not in str(e):
                    raise
            except OSError:
                pass  # the worker was killed under us
            except Exception as e:  # websockets.ConnectionClosed on send
                if "ConnectionClosed" not in type(e).__name__:
                    raise

        ftask = asyncio.ensure_future(flood())
        deadline = time.monotonic() + 20 * SLOW
        while acked[0] < 300:
            assert time.monotonic() < deadline and not ftask.done(), "publisher made no progress"
            await asyncio.sleep(0.005)
        os.kill(await asyncio.to_thread(worker_pid, gw, 0), signal.SIGKILL)
        await asyncio.wait_for(ftask, 20 * SLOW)

        a = await pub2.publish(stream, '"after"', timeout=10)
        assert a["type"] == "ack", a
        last = a["seq"]
        assert last > acked[0], (last, acked[0])
        frames = await sub.stream_frames(stream, last, timeout=20)
        assert_seqs(frames, 1, last)
        assert [f["data"] for f in frames[:-1]] == list(range(1, last))
        r = await pub2.subscribe(stream, since=0, epoch=epoch)
        assert r["recovered"] is True and r["seq"] == last, r
        assert_seqs(await pub2.stream_frames(stream, last), 1, last)
        await sub.close()
        await pub2.close()

    run(main(), timeout=120)


# -- limits and errors -------------------------------------------------------------

def test_max_streams_capacity(gateway_factory):
    gw = gateway_factory(config={"workers": 2, "max_streams": 3, "stream_memory": 1048576,
                                 "max_message_size": 65536})

    async def main():
        c = await Client.connect(gw)
        assert (await c.publish("cap/1", "1"))["type"] == "ack"
        assert (await c.publish("cap/2", "1"))["type"] == "ack"
        assert (await c.subscribe("cap/3"))["type"] == "subscribed"
        e = await c.publish("cap/4", "1", rid="p4")
        assert e["type"] == "error" and e["code"] == "capacity" and e["id"] == "p4", e
        e = await c.subscribe("cap/4", id="s4")
        assert e["type"] == "error" and e["code"] == "capacity" and e["id"] == "s4", e
        other = await Client.connect(gw)
        e = await other.subscribe("cap/5", id=None)
        assert e["type"] == "error" and e["code"] == "capacity" and e["id"] is None, e
        # Still open, and the existing streams still work.
        assert await c.sync() == []
        assert (await c.publish("cap/1", "2"))["seq"] == 2
        assert (await other.subscribe("cap/2"))["seq"] == 1
        m = await metrics_async(gw)
        assert metric(m, "websocket_streams_active") == 3
        assert (await asyncio.to_thread(gw.detailed))["streams"]["active"] == 3
        await c.close()
        await other.close()

    run(main())


def test_max_subscriptions_capacity(gateway_factory):
    gw = gateway_factory(config={"workers": 2, "max_subscriptions": 2})

    async def main():
        c = await Client.connect(gw)
        assert (await c.subscribe("subs/a"))["type"] == "subscribed"
        assert (await c.subscribe("subs/b"))["type"] == "subscribed"
        e = await c.subscribe("subs/c", id={"n": 3})
        assert e["type"] == "error" and e["code"] == "capacity" and e["id"] == {"n": 3}, e
        # Per connection: another connection may subscribe.
        other = await Client.connect(gw)
        assert (await other.subscribe("subs/c"))["type"] == "subscribed"
        # Freeing one makes room.
        assert (await c.request({"type": "unsubscribe", "stream": "subs/a"}))["type"] == "unsubscribed"
        assert (await c.subscribe("subs/c"))["type"] == "subscribed"
        a = await other.publish("subs/c", '"x"')
        assert a["seq"] == 1
        assert_seqs(await c.stream_frames("subs/c", 1), 1, 1)
        await c.close()
        await other.close()

    run(main())


def test_stream_memory_is_one_pool_for_every_stream(gateway_factory):
    """64 streams over 1 MiB used to mean 16 KiB each, refusing anything
    larger; as one pool, a 60 KB message is accepted, delivered to another
    worker and counted in the pool's gauges."""
    gw = gateway_factory(config={"workers": 2, "max_streams": 64, "stream_memory": 1048576,
                                 "max_message_size": 65536})
    stream = "big/1"

    async def main():
        sub, pub = await connect_on(gw, [0, 1])
        await sub.subscribe(stream)
        big = '"' + "x" * 60000 + '"'
        a = await pub.publish(stream, big)
        assert a["type"] == "ack" and a["seq"] == 1, a
        frames = await sub.stream_frames(stream, 1)
        assert_seqs(frames, 1, 1)
        assert raw_members(frames[0].raw)["data"] == big
        doc = await asyncio.to_thread(gw.detailed)
        assert doc["streams"]["memory_used_bytes"] >= 60000, doc["streams"]
        assert doc["streams"]["memory_used_bytes"] + doc["streams"]["memory_free_bytes"] == \
            1048576, doc["streams"]
        m = await metrics_async(gw)
        assert metric(m, "websocket_stream_memory_bytes", state="used") >= 60000
        await sub.close()
        await pub.close()

    run(main())


def test_unsubscribe_and_double_subscribe(gateway):
    async def main():
        sub, pub = await connect_on(gateway, [0, 1])
        await sub.subscribe("u/a")
        await sub.subscribe("u/b")
        e = await sub.subscribe("u/b", id="again")
        assert e["type"] == "error" and e["code"] == "bad_request" and e["id"] == "again", e
        r = await sub.request({"type": "unsubscribe", "stream": "u/a", "id": "u1"})
        assert dict(r) == {"type": "unsubscribed", "stream": "u/a", "id": "u1"}, r
        for name, rid in (("u/a", "u2"), ("u/never", "u3")):
            e = await sub.request({"type": "unsubscribe", "stream": name, "id": rid})
            assert e["type"] == "error" and e["code"] == "bad_request" and e["id"] == rid, e

        for i in range(1, 6):
            assert (await pub.publish("u/a", str(i)))["seq"] == i
        assert (await pub.publish("u/b", '"b1"'))["seq"] == 1
        # Published on the unsubscribed connection's own worker too.
        assert (await sub.publish("u/a", "6"))["seq"] == 6
        frames = await sub.stream_frames("u/b", 1)
        assert_seqs(frames, 1, 1)  # once, despite the second subscribe
        await asyncio.sleep(0.3 * SLOW)
        extra = await sub.sync()
        leftovers = [f for f in list(sub.buf) + extra if f.get("type") in ("message", "gap")]
        assert leftovers == [], f"frames after unsubscribe / duplicate subscribe: {leftovers[:5]}"
        await sub.close()
        await pub.close()

    run(main())


BAD_NAMES = ["", "a" * 129, "has space", "é", "tab\t", 'quo"te', "semi;colon", 5, None, ["a"]]


def test_bad_requests_get_bad_request_with_id(gateway):
    async def main():
        c = await Client.connect(gateway)
        watch = await Client.connect(gateway)
        await watch.subscribe("ok/stream")
        n = 0

        async def expect_bad(msg):
            nonlocal n
            n += 1
            msg = dict(msg, id=f"bad-{n}")
            e = await c.request(msg)
            assert e["type"] == "error" and e["code"] == "bad_request", (msg, e)
            assert e["id"] == msg["id"] and isinstance(e.get("message"), str), (msg, e)

        for name in BAD_NAMES:
            for t in ("subscribe", "publish", "unsubscribe"):
                await expect_bad({"type": t, "stream": name, "data": 1})
        for t in ("subscribe", "publish", "unsubscribe"):
            await expect_bad({"type": t, "data": 1})  # no stream
        await expect_bad({"type": "publish", "stream": "ok/stream"})  # no data
        await expect_bad({"type": "publish", "stream": "ok/stream", "x": {"data": 1}})
        for since in (-1, 1.5, "3", True, [1]):
            await expect_bad({"type": "subscribe", "stream": "ok/other", "since": since})
        await expect_bad({"type": "subscribe", "stream": "ok/other", "since": 1, "epoch": 5})
        await expect_bad({"type": "no-such-type", "stream": "ok/stream"})
        await expect_bad({"stream": "ok/stream", "data": 1})

        # Valid names at the edges.
        for name in ("a" * 128, "A-Z_a.z:0/9-"):
            r = await c.subscribe(name)
            assert r["type"] == "subscribed" and r["stream"] == name, r
        # None of the refused publishes took a seq or reached anyone.
        a = await c.publish("ok/stream", '"first"')
        assert a["seq"] == 1, a
        frames = await watch.stream_frames("ok/stream", 1)
        assert_seqs(frames, 1, 1)
        assert await watch.sync() == []
        await c.close()
        await watch.close()

    run(main())


# -- stream_ttl ----------------------------------------------------------------------

def test_idle_stream_is_reclaimed_after_ttl(gateway_factory):
    gw = gateway_factory(config={"workers": 2, "stream_ttl": 1})

    async def main():
        keeper, c = await connect_on(gw, [0, 1])
        kept = await keeper.subscribe("ttl/kept")  # a subscriber keeps it, without publishes
        r = await c.subscribe("ttl/gone")
        old_epoch = r["epoch"]
        for i in range(1, 4):
            assert (await c.publish("ttl/gone", str(i)))["seq"] == i
        assert_seqs(await c.stream_frames("ttl/gone", 3), 1, 3)
        assert (await c.publish("ttl/pubonly", "1"))["seq"] == 1
        m = await metrics_async(gw)
        assert metric(m, "websocket_streams_active") == 3
        assert (await c.request({"type": "unsubscribe", "stream": "ttl/gone"}))["type"] == "unsubscribed"
        t_idle = time.monotonic()

        await wait_metric(gw, lambda m: metric(m, "websocket_streams_active") == 1,
                          "websocket_streams_active dropping to 1", timeout=15)
        assert time.monotonic() - t_idle >= 0.5, "reclaimed before stream_ttl could pass"
        assert (await asyncio.to_thread(gw.detailed))["streams"]["active"] == 1

        # Reclaimed: a new sequence with a new epoch; the old position means nothing.
        r = await c.subscribe("ttl/gone", since=3, epoch=old_epoch)
        assert r["epoch"] != old_epoch and r["seq"] == 0 and r["recovered"] is False, r
        assert (await c.publish("ttl/gone", '"new"'))["seq"] == 1
        frames = await c.stream_frames("ttl/gone", 1)
        assert_seqs(frames, 1, 1)
        assert frames[0]["data"] == "new"
        # The subscribed stream was kept (same epoch).
        other = await Client.connect(gw)
        r = await other.subscribe("ttl/kept")
        assert r["epoch"] == kept["epoch"] and r["seq"] == 0, (r, kept)
        for x in (keeper, c, other):
            await x.close()

    run(main())


# -- slow consumer ---------------------------------------------------------------------

def test_slow_consumer_is_closed_1013_and_others_are_unaffected(gateway_factory):
    """A subscriber that stops reading (raw socket, small SO_RCVBUF, never
    recv) is closed with 1013 once its unsent data passes max_send_buffer;
    another subscriber of the stream and the publisher go on unaffected.

    The kernel's own socket buffers absorb a few MB first (on loopback the
    send buffer autotunes up to tcp_wmem's maximum, 4 MB here), so the
    publisher goes on in 200 KB batches until the disconnection shows, up
    to 10 MB."""
    gw = gateway_factory(config={"workers": 1, "max_send_buffer": 65536})
    stream = "slow/1"
    batch, max_batches = 100, 50

    async def main():
        m0 = await metrics_async(gw)
        slow0 = metric(m0, "websocket_disconnections_total", reason="slow_consumer")
        slow = await asyncio.to_thread(RawWS, gw.port, 4096)
        slow.send_text(json.dumps({"type": "subscribe", "stream": stream, "id": "slow"}))
        op, payload = await asyncio.to_thread(slow.read_frame)
        r = json.loads(payload)
        assert op == 1 and r["type"] == "subscribed" and r["id"] == "slow", payload
        # From here on the raw client reads nothing until the end.
        remote = f"127.0.0.1:{slow.local_port}"

        normal = await Client.connect(gw)
        await normal.subscribe(stream)
        pub = await Client.connect(gw)
        datas, detected_after = [], None
        for b in range(max_batches):
            chunk = [json.dumps({"i": i, "pad": "z" * 2000})
                     for i in range(len(datas) + 1, len(datas) + batch + 1)]
            acks = await publish_many(pub, stream, chunk, window=16, timeout=60)
            assert [a.get("type") for a in acks] == ["ack"] * batch, \
                [a for a in acks if a["type"] != "ack"][:3]
            assert [a["seq"] for a in acks] == list(range(len(datas) + 1, len(datas) + batch + 1))
            datas += chunk
            if detected_after is not None and b >= detected_after + 2:
                break  # two more batches after the close: the others go on
            if detected_after is None and any(
                    l.get("remote") == remote and l.get("event") in ("error", "disconnect")
                    for l in await asyncio.to_thread(gw.logs)):
                detected_after = b
        n = len(datas)
        assert detected_after is not None, \
            f"the slow consumer was not closed after {n} messages ({n * 2} KB) with max_send_buffer 64 KiB"
        await wait_metric(gw, lambda m: metric(m, "websocket_disconnections_total",
                                               reason="slow_consumer") >= slow0 + 1,
                          "a slow_consumer disconnection", timeout=15)

        frames = await normal.stream_frames(stream, n, timeout=60)
        assert_seqs(frames, 1, n)
        for f, d in zip(frames, datas):
            assert raw_members(f.raw)["data"] == d

        lines = [l for l in gw.logs() if l.get("event") == "disconnect" and l.get("remote") == remote]
        assert len(lines) == 1, lines
        assert lines[0]["reason"] == "slow_consumer" and lines[0]["code"] == 1013, lines[0]

        # Only the slow one was closed; the normal one is still served.
        assert await normal.sync() == []
        m = await metrics_async(gw)
        assert metric(m, "websocket_disconnections_total", reason="slow_consumer") == slow0 + 1

        # What the slow one got: an in-order prefix, then (if the server
        # could still write it) the 1013 close, then EOF.
        got = await asyncio.to_thread(slow.read_all, 30)
        slow.close()
        seqs, close = [], None
        for op, payload in got:
            assert close is None, "a frame after the close frame"
            if op == 8:
                close = payload
            else:
                assert op == 1, op
                seqs.append(json.loads(payload)["seq"])
        assert seqs == list(range(1, len(seqs) + 1)), describe_seqs(seqs, 1, len(seqs))
        assert len(seqs) < n, "the slow consumer got everything: it was not slow"
        if close is not None:
            assert int.from_bytes(close[:2], "big") == 1013, close
            assert close[2:] == b"slow_consumer", close
        print(f"slow consumer closed after batch {detected_after + 1} "
              f"({(detected_after + 1) * batch * 2} KB published); it had received "
              f"{len(seqs)} messages; close frame {'seen' if close is not None else 'not seen'}")
        await normal.close()
        await pub.close()

    run(main(), timeout=180)


def test_slow_consumer_unsent_data_is_bounded_by_max_send_buffer(gateway_factory):
    """docs/PROTOCOL.md: a subscriber is closed when its *unsent* data passes
    max_send_buffer. Data the gateway handed to its socket but TCP has not
    sent (the peer's window is closed) is unsent too: with a 64 KiB limit
    and a subscriber that never reads (receive buffer of a few KB), 2 MB
    published must have closed it. Otherwise the kernel holds up to
    tcp_wmem's maximum (4 MB) per stuck subscriber whatever the limit."""
    gw = gateway_factory(config={"workers": 1, "max_send_buffer": 65536})
    stream = "slow/bound"
    n = 1000  # 2 KB each

    async def main():
        slow = await asyncio.to_thread(RawWS, gw.port, 4096)
        slow.send_text(json.dumps({"type": "subscribe", "stream": stream, "id": 1}))
        op, payload = await asyncio.to_thread(slow.read_frame)
        assert json.loads(payload)["type"] == "subscribed", payload
        remote = f"127.0.0.1:{slow.local_port}"
        pub = await Client.connect(gw)
        datas = [json.dumps({"i": i, "pad": "z" * 2000}) for i in range(1, n + 1)]
        acks = await publish_many(pub, stream, datas, window=16, timeout=60)
        assert all(a["type"] == "ack" for a in acks)
        deadline = time.monotonic() + 5 * SLOW
        while True:
            lines = [l for l in gw.logs() if l.get("remote") == remote
                     and l.get("event") in ("error", "disconnect")]
            if lines:
                break
            if time.monotonic() > deadline:
                import subprocess
                ss = subprocess.run(["ss", "-tni", "src", f"127.0.0.1:{gw.port}",
                                     "dst", remote], capture_output=True, text=True).stdout
                raise AssertionError(
                    f"2 MB published, the subscriber read ~4 KB, max_send_buffer is 64 KiB, "
                    f"and it is still not closed as a slow consumer; the gateway's socket:\n{ss}")
            await asyncio.sleep(0.1)
        slow.close()
        await pub.close()

    run(main())


# -- metrics ----------------------------------------------------------------------------

def test_stream_metrics(gateway_factory):
    gw = gateway_factory(config={"workers": 2})
    n = 20

    async def main():
        m0 = await metrics_async(gw)
        assert metric(m0, "websocket_streams_active") == 0
        lat0 = metric(m0, "websocket_message_latency_seconds_count")
        sent0 = metric(m0, "websocket_messages_sent_total")
        recv0 = metric(m0, "websocket_messages_received_total")

        s1, s2, pub = await connect_on(gw, [0, 1, 0])
        await s1.subscribe("m/a")
        await s2.subscribe("m/a")
        await s2.subscribe("m/b")
        m = await metrics_async(gw)
        assert metric(m, "websocket_streams_active") == 2
        assert (await pub.publish("m/c", "0"))["seq"] == 1
        m = await metrics_async(gw)
        assert metric(m, "websocket_streams_active") == 3
        # Without ids, so the only replies are the 4 above: deliveries dominate.
        for i in range(1, n + 1):
            await pub.send('{"type":"publish","stream":"m/a","data":%d}' % i)
        for s in (s1, s2):
            assert_seqs(await s.stream_frames("m/a", n), 1, n)

        deliveries = 2 * n
        m = await wait_metric(
            gw, lambda m: metric(m, "websocket_message_latency_seconds_count") - lat0 >= deliveries,
            f"websocket_message_latency_seconds_count grow by {deliveries}")
        assert metric(m, "websocket_messages_sent_total") - sent0 >= deliveries + 4
        assert metric(m, "websocket_messages_received_total") - recv0 >= n + 4
        count = metric(m, "websocket_message_latency_seconds_count")
        assert metric(m, "websocket_message_latency_seconds_bucket", le="+Inf") == count
        assert metric(m, "websocket_streams_active") == 3
        for c in (s1, s2, pub):
            await c.close()

    run(main())
