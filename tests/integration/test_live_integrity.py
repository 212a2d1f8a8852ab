"""Live delivery integrity (issue 12): a subscriber that reads its stream
gets every message, in order, once, whatever worker it is on and however
bursty the publisher; one that does not read is closed 1013 slow_consumer
after a contiguous prefix, judged by its progress over `send_timeout`, not
by the size of one burst; a stopped worker costs its own subscribers a
`gap`, never the others a message.

Real clients on loopback: Python `websockets` (streamclient.Client) for
subscribers that read continuously, raw sockets with a small SO_RCVBUF
for subscribers that stop reading, streamclient.RawPublisher for bursts
written in one write (the gateway handles a whole burst in one read), and
fanclient.FanSub for a thousand cheap subscribers in one loop.

Every wait is bounded and scaled by conftest.SLOW; no test asserts a speed.
"""
import asyncio
import base64
import json
import os
import resource
import signal
import subprocess
import time
from datetime import datetime, timezone

import pytest

from conftest import ROOT, SANITIZED, SLOW, WSGATE_BIN, metric
from fanclient import FanSub, open_many
from streamclient import (Client, RawPublisher, RawWS, connect_on, raw_members,
                          worker_of_port, worker_pid)

PAD = "x" * 16000  # with its envelope, a 16 KB message
BURST = 50


def run(coro, timeout=90):
    """Run one test's async body with an overall bound."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout * SLOW)
    return asyncio.run(bounded())


def publish_text(stream, i):
    """A publish with id i whose data is {"i": i, "pad": <16000 x>}."""
    return '{"type":"publish","stream":"%s","id":%d,"data":{"i":%d,"pad":"%s"}}' % (stream, i, i, PAD)


async def burst(pub, stream, first, count=BURST, wait=True, timeout=30):
    """Publish ids first..first+count-1 in one write; with wait, until all
    are acknowledged. Returns the ids."""
    ids = list(range(first, first + count))
    await pub.send_texts([publish_text(stream, i) for i in ids])
    if wait:
        await pub.wait_for(lambda: all(i in pub.acks for i in ids),
                           f"the acks of publishes {first}..{ids[-1]}", timeout)
    return ids


async def raw_subscriber(gw, stream, rcvbuf, rid):
    """A RawWS subscribed to `stream` (its `subscribed` reply read), with
    the given receive buffer: it reads only when the test says so."""
    ws = await asyncio.to_thread(RawWS, gw.port, rcvbuf)
    ws.send_text(json.dumps({"type": "subscribe", "stream": stream, "id": rid}))
    op, payload = await asyncio.to_thread(ws.read_frame)
    assert json.loads(payload)["type"] == "subscribed", payload
    return ws


def seq_ranges(seqs, limit=8):
    """'13-17, 64-68, …' for a set of seqs."""
    out = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    text = ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in out[:limit])
    return text + (f", … ({len(out)} ranges)" if len(out) > limit else "")


def log_time(line):
    """A log line's `ts` as seconds since the epoch."""
    return datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc).timestamp()


async def wait_log(gw, pred, timeout):
    """The first log line for which pred holds, or None after timeout*SLOW."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        for line in await asyncio.to_thread(gw.logs):
            if pred(line):
                return line
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.05)


def disconnect_of(remote):
    return lambda l: l.get("event") == "disconnect" and l.get("remote") == remote


def verdict_of(remote):
    """The gateway's decision to close a connection: its first warning or
    error line, or its disconnect line. (A client that does not read never
    answers the close frame, so the disconnect line itself can come
    seconds later.)"""
    return lambda l: l.get("remote") == remote and (
        l.get("event") == "disconnect" or l.get("level") in ("warn", "error"))


async def master_metrics(gw):
    # The master's port: it answers even while a worker is stopped.
    return await asyncio.to_thread(gw.metrics, gw.metrics_port)


def metric_or_none(samples, name, **labels):
    try:
        return metric(samples, name, **labels)
    except AssertionError:
        return None


async def raw_publisher_on(gw, slot, tries=50):
    """A RawPublisher whose connection is served by worker `slot`."""
    for _ in range(tries):
        p = await RawPublisher.connect(gw)
        if await asyncio.to_thread(worker_of_port, gw, p.local_port) == slot:
            p.slot = slot
            return p
        await p.close()
    raise AssertionError(f"no publisher connection landed on worker {slot} in {tries} tries")


def read_prefix(frames, stream):
    """(seqs of the message frames, close payload or None, problems) of what
    a raw client read up to EOF."""
    seqs, close, problems = [], None, []
    for op, payload in frames:
        if close is not None:
            problems.append(f"a frame (opcode {op}) after the close frame")
            break
        if op == 8:
            close = payload
            continue
        f = json.loads(payload)
        if f.get("type") == "gap":
            problems.append(f"a gap frame {f}: a slow consumer is closed, never skipped")
        elif f.get("type") == "message" and f.get("stream") == stream:
            seqs.append(f["seq"])
    return seqs, close, problems


def check_closed_slow_consumer(name, frames, stream, line):
    """Problems (text) with how a non-reading raw subscriber was closed:
    log line 1013 slow_consumer, a contiguous prefix from seq 1, then at most
    the close frame 1013 "slow_consumer"."""
    out = []
    if line is None:
        return [f"{name}: no disconnect log line"]
    if line.get("reason") != "slow_consumer" or line.get("code") != 1013:
        out.append(f"{name}: closed for another reason: {line}")
    seqs, close, problems = read_prefix(frames, stream)
    out += [f"{name}: {p}" for p in problems]
    if seqs != list(range(1, len(seqs) + 1)):
        missing = sorted(set(range(1, max(seqs) + 1)) - set(seqs)) if seqs else []
        out.append(f"{name}: what it received is not a contiguous prefix from seq 1: "
                   f"{len(seqs)} messages, missing {seq_ranges(missing)}, first {seqs[:5]}")
    if close is not None:
        code = int.from_bytes(close[:2], "big") if len(close) >= 2 else None
        if code != 1013 or close[2:] != b"slow_consumer":
            out.append(f"{name}: close frame {close[:40]!r}, want 1013 slow_consumer")
    return out


class Reader:
    """Accounts for the `message` and `gap` frames a websockets Client
    (reading continuously: its reader task drains the socket) gets on one
    stream, keeping only seqs and a fingerprint of each data."""

    def __init__(self, client, name, stream):
        self.c = client
        self.name = name
        self.stream = stream
        self.events = []  # ("m", seq) or ("g", from, to), in arrival order
        self.data = {}    # seq -> (data["i"], len(data["pad"]))
        self.covered = 0  # highest seq delivered or announced by a gap

    @property
    def label(self):
        return f"{self.name} (worker {getattr(self.c, 'slot', '?')})"

    def take(self, f):
        if f.get("stream") != self.stream:
            return
        if f.get("type") == "message":
            self.events.append(("m", f["seq"]))
            d = f["data"]
            self.data[f["seq"]] = (d.get("i"), len(d.get("pad", ""))) if isinstance(d, dict) else (d, 0)
            self.covered = max(self.covered, f["seq"])
        elif f.get("type") == "gap":
            self.events.append(("g", f["from"], f["to"]))
            self.covered = max(self.covered, f["to"])

    async def pump(self, upto, timeout):
        """Take frames until seq `upto` is delivered or covered by a gap.
        False when the connection ended first."""
        deadline = time.monotonic() + timeout * SLOW
        while self.covered < upto:
            if self.c.eof:
                return False
            try:
                f = await self.c.next(max(deadline - time.monotonic(), 0.001) / SLOW)
            except AssertionError:
                if self.c.eof:
                    return False
                raise AssertionError(f"{self.label}: seq {upto} neither delivered nor announced "
                                     f"within {timeout * SLOW:.0f} s; {self.describe(1, upto)}")
            self.take(f)
        return True

    def closed_text(self):
        return f"{self.label} was closed (code {self.c.close_code}) after {len(self.delivered())} messages"

    def delivered(self):
        return [e[1] for e in self.events if e[0] == "m"]

    def gaps(self):
        return [(e[1], e[2]) for e in self.events if e[0] == "g"]

    def describe(self, first, last):
        d = self.delivered()
        lost = sorted(set(range(first, last + 1)) - set(d))
        return (f"{len(d)} messages, lost {len(lost)}: [{seq_ranges(lost)}], "
                f"gap frames {self.gaps()[:6]}")

    def everything_problems(self, first, last):
        """What is wrong, if anything, with 'every seq first..last exactly
        once, in order, no gap'."""
        d = self.delivered()
        out = []
        lost = sorted(set(range(first, last + 1)) - set(d))
        if lost:
            out.append(f"lost {len(lost)} of {last - first + 1} seqs: [{seq_ranges(lost)}]")
        if self.gaps():
            out.append(f"gap frames {self.gaps()[:6]}")
        if len(d) != len(set(d)):
            out.append(f"{len(d) - len(set(d))} duplicate deliveries")
        if d != sorted(d):
            bad = next(k for k in range(1, len(d)) if d[k] < d[k - 1])
            out.append(f"out of order at index {bad}: {d[max(0, bad - 3):bad + 3]}")
        extra = [s for s in d if s < first or s > last]
        if extra:
            out.append(f"seqs outside {first}..{last}: {extra[:5]}")
        return f"{self.label}: " + "; ".join(out) if out else None

    def coverage_problems(self, first, last):
        """What is wrong, if anything, with 'every seq first..last delivered
        or inside a gap, exactly once, in order' (gaps allowed)."""
        due = first
        for e in self.events:
            if e[0] == "m":
                if e[1] != due:
                    return (f"{self.label}: message {e[1]} where {due} was due; "
                            f"events near it {self.near(e)}")
                due += 1
            else:
                if e[1] != due or e[2] < e[1]:
                    return f"{self.label}: gap {e[1]}..{e[2]} where {due} was due; events {self.near(e)}"
                due = e[2] + 1
        if due != last + 1:
            return f"{self.label}: covered up to {due - 1}, want {last}"
        return None

    def near(self, e):
        k = self.events.index(e)
        return self.events[max(0, k - 3):k + 3]


# -- 1. a burst to another worker -------------------------------------------------

def test_bursts_reach_every_reading_subscriber_on_both_workers(gateway_factory):
    """Issue 12, finding 1: with the defaults (stream_memory, max_streams),
    bursts of 50 x 16 KB (800 KB, more than one stream's 512 KiB share of
    the old per-stream ring) every 0.3 s must reach every reading
    subscriber on the publisher's worker and on the other one, without a
    gap. Ten rounds of two bursts: loss there depends on scheduling, so one
    round passing proves little."""
    gw = gateway_factory(config={"workers": 2})
    stream = "ward/3/bed/7/ecg"
    rounds, bursts_per_round, pause = 10, 2, 0.3
    per_round = bursts_per_round * BURST

    async def main():
        clients = await connect_on(gw, [0, 0, 0, 1, 1, 1])
        readers = [Reader(c, f"sub{k}", stream) for k, c in enumerate(clients)]
        for r in readers:
            reply = await r.c.subscribe(stream)
            assert reply["type"] == "subscribed" and reply["seq"] == 0, reply
        pub = await RawPublisher.connect(gw)
        pub_slot = await asyncio.to_thread(worker_of_port, gw, pub.local_port)
        closed = {}
        n = 0
        for rnd in range(rounds):
            for _ in range(bursts_per_round):
                await burst(pub, stream, n + 1)
                n += BURST
                await asyncio.sleep(pause)
            for r in readers:
                if r.name not in closed and not await r.pump(n, 30):
                    closed[r.name] = f"round {rnd + 1}: {r.closed_text()}"
        assert pub.acks == {i: i for i in range(1, n + 1)}, "acks do not carry seqs 1..n in order"

        report = []
        for r in readers:
            p = r.everything_problems(1, n)
            if p:
                lost = set(range(1, n + 1)) - set(r.delivered())
                rounds_hit = sorted({(s - 1) // per_round + 1 for s in lost})
                where = "the publisher's" if r.c.slot == pub_slot else "the other"
                report.append(f"{p} [{where} worker; rounds with losses: {rounds_hit}]")
            bad = [s for s, (i, pad) in r.data.items() if i != s or pad != len(PAD)]
            if bad:
                report.append(f"{r.label}: seqs {bad[:5]} carry another publish's data")
        report += list(closed.values())
        assert not report, (f"{rounds} rounds of {bursts_per_round} bursts of {BURST} x 16 KB, "
                            f"publisher on worker {pub_slot}:\n" + "\n".join(report))
        for r in readers:
            assert await r.c.sync() == [], f"{r.label}: frames after the last message"
        for c in clients:
            await c.close()
        await pub.close()

    run(main())


# -- 2. a message as large as max_message_size allows --------------------------------

def test_600kb_and_max_message_size_publishes_are_acked_and_delivered(gateway_factory):
    """Issue 12, finding 2: max_message_size is 1 MiB by default, so a
    600 KB publish, and one exactly 1 MiB long, are acknowledged and
    delivered byte for byte to subscribers on both workers (with the
    default stream_memory and max_streams)."""
    gw = gateway_factory(config={"workers": 2})
    stream = "bed/9/holter"

    async def main():
        s0, s1, pub = await connect_on(gw, [0, 1, 0])
        for s in (s0, s1):
            assert (await s.subscribe(stream))["seq"] == 0
        big = json.dumps({"ecg": base64.b64encode(os.urandom(450_000)).decode()})
        assert 600_000 < len(big) < 600_100
        a = await pub.publish(stream, big, rid="600k", timeout=10)
        assert a["type"] == "ack" and a["seq"] == 1, \
            f"a 600 KB publish with max_message_size 1048576 was refused: {a}"
        # The whole client message exactly max_message_size (1048576) bytes.
        envelope = '{"type":"publish","stream":"%s","id":"max","data":"%%s"}' % stream
        fill = base64.b64encode(os.urandom(800_000)).decode()[:1048576 - len(envelope % "")]
        exact = '"' + fill + '"'
        msg = envelope % fill
        assert len(msg) == 1048576, len(msg)
        await pub.send(msg)
        a = await pub.reply("max", timeout=10)
        assert a["type"] == "ack" and a["seq"] == 2, \
            f"a publish of exactly max_message_size (1048576) bytes was refused: {a}"
        assert (await pub.publish(stream, '{"after":3}'))["seq"] == 3
        for s in (s0, s1):
            frames = await s.stream_frames(stream, 3, timeout=15)
            assert [(f["type"], f.get("seq")) for f in frames] == \
                [("message", 1), ("message", 2), ("message", 3)], \
                f"worker {s.slot}: {[(f['type'], f.get('seq'), f.get('from'), f.get('to')) for f in frames]}"
            assert raw_members(frames[0].raw)["data"] == big, f"worker {s.slot}: the 600 KB data differs"
            assert raw_members(frames[1].raw)["data"] == exact, f"worker {s.slot}: the 1 MiB data differs"
        for c in (s0, s1, pub):
            await c.close()

    run(main())


# -- 3. slow consumers judged by progress -----------------------------------------------

def test_reader_survives_bursts_and_non_reader_is_closed_after_send_timeout(gateway_factory):
    """Issue 12, finding 3: max_send_buffer 256 KiB, bursts of 50 x 16 KB
    (800 KB, more than max_send_buffer but below its 4x ceiling). The
    subscribers that read (one per worker) are never closed and lose
    nothing; the one that reads nothing is closed 1013 slow_consumer once its
    queue has stayed above max_send_buffer for send_timeout: not before (one
    burst is not a verdict), and not later than send_timeout + 1 s. What it
    got is a contiguous prefix."""
    T = 2
    gw = gateway_factory(config={"workers": 2, "max_send_buffer": 262144, "send_timeout": T})
    stream = "bed/12/ecg"
    bursts = 10

    async def main():
        slow0 = metric(await master_metrics(gw), "websocket_disconnections_total",
                       reason="slow_consumer")
        c0, c1 = await connect_on(gw, [0, 1])
        readers = [Reader(c0, "reader0", stream), Reader(c1, "reader1", stream)]
        for r in readers:
            assert (await r.c.subscribe(stream))["seq"] == 0
        stuck = await asyncio.to_thread(RawWS, gw.port, 4096)
        stuck.send_text(json.dumps({"type": "subscribe", "stream": stream, "id": "stuck"}))
        op, payload = await asyncio.to_thread(stuck.read_frame)
        assert op == 1 and json.loads(payload)["type"] == "subscribed", payload
        # From here on the stuck client reads nothing until it is closed.
        remote = f"127.0.0.1:{stuck.local_port}"
        stuck_slot = await asyncio.to_thread(worker_of_port, gw, stuck.local_port)
        pub = await RawPublisher.connect(gw)

        failures = []
        filled_at = time.time()  # its queue cannot fill before this burst is written
        await burst(pub, stream, 1)
        verdict = await wait_log(gw, verdict_of(remote), T + 3)
        for r in readers:
            if not await r.pump(BURST, 20):
                failures.append(r.closed_text() + " by the first burst")
        if verdict is None:
            failures.append(f"the non-reading subscriber (worker {stuck_slot}) was not closed "
                            f"within {T + 3 * SLOW:.1f} s of an 800 KB burst (send_timeout {T})")
        else:
            delay = log_time(verdict) - filled_at
            print(f"non-reader on worker {stuck_slot} judged slow {delay:.3f} s after the burst "
                  f"(send_timeout {T}): {verdict}")
            if delay < T - 0.1:
                failures.append(f"the non-reader was closed {delay:.3f} s after the burst, before "
                                f"send_timeout ({T} s): one burst above max_send_buffer is not slowness")
            if delay > T + 1.0 * SLOW:
                failures.append(f"the non-reader was closed {delay:.3f} s after its queue filled, "
                                f"later than send_timeout + 1 s")

        n = BURST
        for _ in range(bursts - 1):
            # Each burst lands on an empty queue (the readers have taken
            # the last one), so only a burst's size is in question, never
            # the 4 x max_send_buffer ceiling.
            for r in readers:
                if not r.c.eof and not await r.pump(n, 20):
                    failures.append(r.closed_text())
            await asyncio.sleep(0.3)
            await burst(pub, stream, n + 1)
            n += BURST
        for r in readers:
            if not r.c.eof and not await r.pump(n, 30):
                failures.append(r.closed_text())
            p = r.everything_problems(1, n)
            if p:
                failures.append(p)
        if verdict is not None:
            line = await wait_log(gw, disconnect_of(remote), 10)
            got = await asyncio.to_thread(stuck.read_all, 10)
            failures += check_closed_slow_consumer("the non-reader", got, stream, line)
            seqs, _, _ = read_prefix(got, stream)
            if len(seqs) >= n:
                failures.append("the non-reader received every message: it was never slow")
        stuck.close()
        assert not failures, (f"max_send_buffer 262144, send_timeout {T}, {bursts} bursts of "
                              f"{BURST} x 16 KB:\n" + "\n".join(failures))
        for r in readers:
            assert await r.c.sync() == [], f"{r.label}: frames after the last message"
        m = await master_metrics(gw)
        assert metric(m, "websocket_disconnections_total", reason="slow_consumer") == slow0 + 1
        for c in (c0, c1):
            await c.close()
        await pub.close()

    run(main())


def test_subscriber_accepting_nothing_is_closed_after_send_timeout_below_max_send_buffer(
        gateway_factory):
    """The second rule: a connection that accepts no bytes at all for
    send_timeout while data waits in its queue is slow, even when the queue
    is far below max_send_buffer (default 4 MiB here; 800 KB waiting)."""
    T = 1
    gw = gateway_factory(config={"workers": 1, "send_timeout": T})
    stream = "bed/13/ecg"

    async def main():
        (c,) = await connect_on(gw, [0])
        reader = Reader(c, "reader", stream)
        await c.subscribe(stream)
        stuck = await raw_subscriber(gw, stream, 4096, "stuck")
        remote = f"127.0.0.1:{stuck.local_port}"
        pub = await RawPublisher.connect(gw)
        filled_at = time.time()
        await burst(pub, stream, 1)
        verdict = await wait_log(gw, verdict_of(remote), T + 3)
        assert verdict is not None, \
            f"a subscriber that accepted nothing for {T + 3 * SLOW:.1f} s while 800 KB waited " \
            f"(send_timeout {T}, max_send_buffer 4 MiB) was not closed"
        delay = log_time(verdict) - filled_at
        print(f"judged slow {delay:.3f} s after the burst (send_timeout {T}): {verdict}")
        line = await wait_log(gw, disconnect_of(remote), 10)
        assert T - 0.1 <= delay <= T + 1.0 * SLOW, \
            f"closed {delay:.3f} s after the data started to wait; send_timeout is {T}"
        got = await asyncio.to_thread(stuck.read_all, 10)
        stuck.close()
        problems = check_closed_slow_consumer("the non-reader", got, stream, line)
        assert not problems, "\n".join(problems)
        assert await reader.pump(BURST, 20), reader.closed_text()
        assert reader.everything_problems(1, BURST) is None, reader.everything_problems(1, BURST)
        await c.close()
        await pub.close()

    run(main())


def test_slow_but_steady_reader_is_not_closed(gateway_factory):
    """Progress, not speed: a subscriber that drains a burst slowly but
    without pause (16 KiB every 25 ms: about 600 KB/s) keeps making
    progress and is never closed — even while one write to it (a batch of
    up to 1 MB, which libuv reports only once all of it has gone) is
    pending for longer than send_timeout. 4 MB are more than the kernel
    takes at once, so the gateway's own queue holds the rest."""
    T = 1
    gw = gateway_factory(config={"workers": 1, "send_timeout": T, "max_send_buffer": 16777216})
    stream = "bed/14/ecg"
    count = 250  # 250 x 16 KB

    async def main():
        slow = await raw_subscriber(gw, stream, 65536, "slow")
        remote = f"127.0.0.1:{slow.local_port}"
        pub = await RawPublisher.connect(gw)
        await burst(pub, stream, 1, count=count)

        def drain():
            got = []
            deadline = time.monotonic() + 30 * SLOW
            while len(got) < count and time.monotonic() < deadline:
                slow.sock.settimeout(5 * SLOW)
                chunk = slow.sock.recv(16384)
                if not chunk:
                    break
                slow.buf += chunk
                while True:
                    f = slow._parse_one()
                    if f is None:
                        break
                    got.append(f)
                time.sleep(0.025)
            return got

        started = time.monotonic()
        got = await asyncio.to_thread(drain)
        took = time.monotonic() - started
        closes = [p for op, p in got if op == 8]
        assert not closes, f"closed {closes[0][:2].hex()} {closes[0][2:]!r} after {took:.1f} s"
        seqs = [json.loads(p)["seq"] for op, p in got if op == 1]
        assert seqs == list(range(1, count + 1)), seq_ranges(seqs)
        assert took > 2 * T, f"drained in {took:.1f} s: not slow enough to test anything"
        assert await wait_log(gw, verdict_of(remote), 0.5) is None
        slow.close()
        await pub.close()

    run(main())


# -- 4. a thousand subscribers ----------------------------------------------------------

def proc_kib(pid):
    """{VmRSS, VmHWM, RssAnon, RssShmem} of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssShmem"):
                out[key] = int(value.split()[0])
    return out


async def remotes_to_workers(gw, subs, timeout=10):
    """Set .slot on each FanSub from the gateway's connect log lines."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        where = {l["remote"]: l["worker"] for l in await asyncio.to_thread(gw.logs)
                 if l.get("event") == "connect" and "remote" in l}
        for s in subs:
            s.slot = where.get(f"127.0.0.1:{s.local_port}")
        missing = [s for s in subs if s.slot is None]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"no connect log line for {len(missing)} connections")
        await asyncio.sleep(0.1)


async def readers_reach(readers, seq, what, timeout=60):
    deadline = time.monotonic() + timeout * SLOW
    while any(r.covered < seq and not r.ended.is_set() for r in readers):
        assert time.monotonic() < deadline, \
            f"{what}: readers still behind seq {seq} after {timeout * SLOW:.0f} s: " + \
            "; ".join(r.summary() for r in readers if r.covered < seq)[:2000]
        await asyncio.sleep(0.02)


def test_thousand_subscribers_twenty_stuck(gateway_factory):
    """1,000 subscribers of one stream over 2 workers, 20 of them (10 per
    worker) not reading; 12 MB of 16 KB messages in bursts of 50. The 980
    that read get every message, in order, once; the 20 are closed 1013
    slow_consumer after a contiguous prefix. Worker memory is reported and
    bounded (frames are shared by reference between subscribers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    T = 2
    gw = gateway_factory(config={"workers": 2, "send_timeout": T})
    stream = "ward/1/central"
    total, stuck_per_worker = 1000, 10
    n_bursts = 15  # 750 x 16 KB = 12 MB

    async def main():
        slow0 = metric(await master_metrics(gw), "websocket_disconnections_total",
                       reason="slow_consumer")
        stuck = []
        for attempt in range(5):
            batch = await open_many(gw.port, [f"stuck{attempt}-{k}" for k in range(40)], rcvbuf=4096)
            await remotes_to_workers(gw, batch)
            for s in batch:
                if sum(1 for t in stuck if t.slot == s.slot) < stuck_per_worker:
                    stuck.append(s)
                else:
                    s.close()
            if len(stuck) == 2 * stuck_per_worker:
                break
        assert sorted(s.slot for s in stuck) == [0] * stuck_per_worker + [1] * stuck_per_worker, \
            "could not place the non-reading subscribers on both workers"
        readers = await open_many(gw.port, [f"r{k}" for k in range(total - len(stuck))])
        await remotes_to_workers(gw, readers)
        per_worker = {w: sum(1 for r in readers if r.slot == w) for w in (0, 1)}
        assert min(per_worker.values()) >= 200, f"readers per worker: {per_worker}"
        everyone = stuck + readers
        for s in everyone:
            s.send_text(json.dumps({"type": "subscribe", "stream": stream, "id": s.name}))
        await asyncio.wait_for(asyncio.gather(*(s.subscribed.wait() for s in everyone)), 30 * SLOW)
        assert all(s.next_seq == 1 for s in everyone)
        for s in stuck:
            s.stop_reading()

        pids = {w: worker_pid(gw, w) for w in (0, 1)}
        peak = {w: {} for w in pids}
        queued_peak = [None]

        async def sample():
            while True:
                for w, pid in pids.items():
                    for k, v in (await asyncio.to_thread(proc_kib, pid)).items():
                        peak[w][k] = max(peak[w].get(k, 0), v)
                q = metric_or_none(await master_metrics(gw), "websocket_queued_frame_bytes")
                if q is not None:
                    queued_peak[0] = max(queued_peak[0] or 0, q)
                await asyncio.sleep(0.2)

        sampler = asyncio.ensure_future(sample())
        pub = await RawPublisher.connect(gw)
        n = 0
        started = time.monotonic()
        try:
            for b in range(n_bursts):
                await burst(pub, stream, n + 1, timeout=60)
                n += BURST
                # A window of two bursts (1.6 MB, below max_send_buffer): the
                # next one once every reader has taken the one before this.
                await readers_reach(readers, n - BURST, f"burst {b}")
            await readers_reach(readers, n, "the last burst")
            publish_seconds = time.monotonic() - started
            lines = {}
            deadline = time.monotonic() + (T + 10) * SLOW
            while len(lines) < len(stuck) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                disc = {l.get("remote"): l for l in await asyncio.to_thread(gw.logs)
                        if l.get("event") == "disconnect"}
                lines = {s.name: disc[f"127.0.0.1:{s.local_port}"] for s in stuck
                         if f"127.0.0.1:{s.local_port}" in disc}
        finally:
            sampler.cancel()
        for s in stuck:
            s.resume()
        await asyncio.wait_for(asyncio.gather(*(s.ended.wait() for s in stuck
                                                if s.name in lines)), 20 * SLOW)

        failures = []
        bad = [r for r in readers if r.ended.is_set() or r.close_code is not None
               or r.messages != n or r.covered != n or r.gaps or r.problems]
        if bad:
            failures.append(f"{len(bad)} of {len(readers)} reading subscribers did not get exactly "
                            f"seqs 1..{n}; first ones:\n  " + "\n  ".join(r.summary() for r in bad[:10]))
        for s in stuck:
            line = lines.get(s.name)
            if line is None:
                failures.append(f"{s.summary()}: not closed within {(T + 10) * SLOW:.0f} s "
                                f"after the last burst")
                continue
            if line.get("reason") != "slow_consumer" or line.get("code") != 1013:
                failures.append(f"{s.name}: closed for another reason: {line}")
            if s.gaps or s.problems or s.frames_after_close:
                failures.append(f"{s.summary()}: not a contiguous prefix "
                                f"({s.frames_after_close} frames after the close)")
            if s.close_code is not None and (s.close_code, s.close_reason) != (1013, "slow_consumer"):
                failures.append(f"{s.summary()}: wrong close frame")
            if s.messages >= n:
                failures.append(f"{s.summary()}: got everything, it was never slow")
        m = await master_metrics(gw)
        slow = metric(m, "websocket_disconnections_total", reason="slow_consumer") - slow0
        if slow != len(stuck):
            failures.append(f"{slow:.0f} slow_consumer disconnections, want {len(stuck)}")
        queued = metric_or_none(m, "websocket_queued_frame_bytes")
        deadline = time.monotonic() + 3 * SLOW
        while queued is not None and queued > 1048576 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # gauges may reach the master a moment later
            m = await master_metrics(gw)
            queued = metric_or_none(m, "websocket_queued_frame_bytes")
        mib = 1024
        print(f"{len(readers)} readers ({per_worker}), {len(stuck)} stuck, {n} messages "
              f"({n * len(PAD) / 1e6:.1f} MB) in {publish_seconds:.1f} s")
        for w in sorted(peak):
            print(f"worker {w} (pid {pids[w]}) peak: " +
                  ", ".join(f"{k} {v / mib:.1f} MiB" for k, v in sorted(peak[w].items())))
        print(f"websocket_queued_frame_bytes: peak sampled {queued_peak[0]}, now {queued}")
        if queued is None:
            failures.append("no websocket_queued_frame_bytes gauge in /metrics")
        else:
            labels = {dict(ls).get("worker") for (name, ls) in m if name == "websocket_queued_frame_bytes"}
            if labels != {"0", "1"}:
                failures.append(f"websocket_queued_frame_bytes worker labels {labels}, want 0 and 1")
            if not queued_peak[0]:
                failures.append("websocket_queued_frame_bytes never above 0 while 20 subscribers "
                                "held megabytes of queued frames")
            if queued > 1048576:
                failures.append(f"websocket_queued_frame_bytes {queued:.0f} once every queue was "
                                f"delivered or closed (held frames not counted down?)")
        if not SANITIZED:  # ASan's shadow memory and quarantine are not the gateway's
            for w in sorted(peak):
                anon = peak[w].get("RssAnon", 0) / mib
                if anon > 256:
                    failures.append(f"worker {w}'s private memory peaked at {anon:.0f} MiB "
                                    f"(bound 256 MiB) with 1,000 subscribers of 12 MB")
        assert not failures, "\n".join(failures)
        await pub.close()
        for s in everyone:
            s.close()

    run(main(), timeout=150)


# -- 5. a stopped worker --------------------------------------------------------------

def test_stopped_worker_costs_only_its_own_subscribers_a_gap(gateway_factory):
    """Worker 1 is stopped (SIGSTOP) for 3 x send_timeout while a publisher
    on worker 0 goes on at 4 MB/s, with a 4 MiB pool: without releasing the
    stopped worker's cursor the pool would be exhausted within a second.
    Worker 0's subscribers lose nothing; after SIGCONT, worker 1's
    subscribers get a gap for what was reclaimed (or everything from
    history), then contiguous seqs; publishing is refused for lack of
    memory at most for a bounded window; the release is counted."""
    T = 2
    gw = gateway_factory(config={"workers": 2, "stream_memory": 4194304,
                                 "max_message_size": 65536, "send_timeout": T})
    stream = "ward/5/bed/2/ecg"
    per_tick, tick = 25, 0.1  # 250 x 16 KB per second

    async def main():
        clients = await connect_on(gw, [0, 0, 1, 1])
        readers = [Reader(c, f"sub{k}", stream) for k, c in enumerate(clients)]
        live, stopped = readers[:2], readers[2:]
        for r in readers:
            assert (await r.c.subscribe(stream))["seq"] == 0
        pub = await raw_publisher_on(gw, 0)
        # Both workers consume the stream before one of them stops.
        await burst(pub, stream, 1, count=10)
        for r in readers:
            assert await r.pump(10, 10), r.closed_text()
        m0 = await master_metrics(gw)
        releases0 = metric_or_none(m0, "websocket_stream_cursor_releases_total") or 0
        pid1 = worker_pid(gw, 1)

        next_id = 11
        os.kill(pid1, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            resumed_at = None
            # 3 x send_timeout stopped, then 1 s more with both workers running.
            while time.monotonic() - stopped_at < 3 * T + 1:
                if resumed_at is None and time.monotonic() - stopped_at >= 3 * T:
                    os.kill(pid1, signal.SIGCONT)
                    resumed_at = time.monotonic()
                # Bounded in flight: never more than 400 publishes unanswered.
                waited = time.monotonic()
                while next_id - 1 - len(pub.replied_at) > 400:
                    assert time.monotonic() - waited < 10 * SLOW, \
                        f"worker 0 answered no publish for 10 s while worker 1 was stopped " \
                        f"({time.monotonic() - stopped_at:.1f} s after the stop): one stopped " \
                        f"process stalls the others"
                    await asyncio.sleep(0.01)
                await burst(pub, stream, next_id, count=per_tick, wait=False)
                next_id += per_tick
                await asyncio.sleep(tick)
        finally:
            os.kill(pid1, signal.SIGCONT)
        last_id = next_id - 1
        deadline = time.monotonic() + 30 * SLOW
        while len(pub.replied_at) < last_id:
            assert time.monotonic() < deadline, \
                f"{last_id - len(pub.replied_at)} publishes never answered"
            await asyncio.sleep(0.05)

        acked = sorted(i for i in pub.acks)
        seqs = [pub.acks[i] for i in acked]
        n = len(seqs)
        assert seqs == list(range(1, n + 1)), \
            "acked publishes do not carry seqs 1..n in publish order (a refused one took a seq?)"
        seq_to_id = {s: i for i, s in pub.acks.items()}
        refusals = sorted((pub.replied_at[f["id"]] - stopped_at, f.get("code")) for f in pub.errors)
        codes = sorted({c for _, c in refusals})
        print(f"worker 1 stopped {resumed_at - stopped_at:.1f} s; {last_id} publishes, {n} acked, "
              f"{len(refusals)} refused ({codes}) between "
              f"{refusals[0][0] if refusals else 0:.2f} s and {refusals[-1][0] if refusals else 0:.2f} s")

        failures = []
        if refusals and refusals[-1][0] - refusals[0][0] > T + 1.0 * SLOW:
            failures.append(f"publishes refused from {refusals[0][0]:.2f} s to {refusals[-1][0]:.2f} s "
                            f"after the stop ({codes}): longer than send_timeout + 1 s")
        late = [t for t, _ in refusals if t > resumed_at - stopped_at + 0.5]
        if late:
            failures.append(f"{len(late)} publishes refused after the stopped worker continued")
        for r in readers:
            if not await r.pump(n, 30):
                failures.append(r.closed_text())
        for r in live:
            p = r.everything_problems(1, n)
            if p:
                failures.append(f"{p} (its worker kept running)")
            bad = [s for s, (i, _) in r.data.items() if seq_to_id.get(s) != i]
            if bad:
                failures.append(f"{r.label}: seqs {bad[:5]} carry another publish's data")
        for r in stopped:
            p = r.coverage_problems(1, n)
            if p:
                failures.append(f"{p} (its worker was stopped)")
            print(f"{r.label}: {len(r.delivered())} delivered, gaps {r.gaps()[:4]}")
        m = await master_metrics(gw)
        releases = metric_or_none(m, "websocket_stream_cursor_releases_total")
        if releases is None or releases <= releases0:
            failures.append(f"websocket_stream_cursor_releases_total {releases0} -> {releases}: "
                            f"the stopped worker's cursor was never released")
        used = metric_or_none(m, "websocket_stream_memory_bytes", state="used")
        free = metric_or_none(m, "websocket_stream_memory_bytes", state="free")
        print(f"stream memory used {used}, free {free}")
        if used is None or free is None or used + free > 4194304:
            failures.append(f"websocket_stream_memory_bytes used {used} free {free} "
                            f"(stream_memory 4194304)")
        assert not failures, "\n".join(failures)
        # The refusals inside the window were judged above; from here on
        # none is allowed.
        pub.errors.clear()
        await pub.send_texts([publish_text(stream, last_id + 1)])
        await pub.wait_for(lambda: last_id + 1 in pub.acks, "a publish after the stop")
        for c in clients:
            await c.close()
        await pub.close()

    run(main())


# -- 6. the configuration check ---------------------------------------------------------

def check(tmp_path, text):
    path = os.path.join(str(tmp_path), "websocket.yaml")
    with open(path, "w") as f:
        f.write(text)
    return subprocess.run([WSGATE_BIN, "-t", "-c", path], capture_output=True, text=True,
                          timeout=10 * SLOW)


@pytest.mark.parametrize("text", [
    "stream_memory: 1048576\nmax_message_size: 1048576\nmax_streams: 16\n",
    "stream_memory: 2097152\nmax_message_size: 4194304\nmax_streams: 16\n",
], ids=["1MiB-pool-1MiB-message", "2MiB-pool-4MiB-message"])
def test_check_rejects_stream_memory_that_cannot_hold_one_message(tmp_path, text):
    out = check(tmp_path, text)
    assert out.returncode == 1, (f"wsgate -t accepted a stream_memory that cannot hold one "
                                 f"max_message_size message:\n{text}{out.stdout}{out.stderr}")
    assert "stream_memory" in out.stderr, out.stderr


@pytest.mark.parametrize("text", [
    "stream_memory: 4194304\nmax_message_size: 65536\n",
    "stream_memory: 8388608\nmax_message_size: 1048576\nmax_streams: 1024\n",
], ids=["4MiB-pool-64KiB-message", "8MiB-pool-1MiB-message-1024-streams"])
def test_check_accepts_a_pool_that_holds_a_message(tmp_path, text):
    out = check(tmp_path, text)
    assert out.returncode == 0, out.stderr


def test_check_accepts_the_shipped_config():
    out = subprocess.run([WSGATE_BIN, "-t", "-c", os.path.join(ROOT, "etc", "websocket.yaml")],
                         capture_output=True, text=True, timeout=10 * SLOW)
    assert out.returncode == 0, out.stderr


def reload_with(gw, **changes):
    """Rewrite the config with changes, SIGHUP; returns the time of the signal."""
    cfg = dict(gw.config)
    cfg.update(changes)
    gw.write_config(cfg)
    at = time.time()
    gw.signal(signal.SIGHUP)
    return at


def reloads(gw, result):
    return metric(gw.metrics(port=gw.metrics_port), "websocket_config_reloads_total", result=result)


def wait_reloads(gw, result, count, timeout=5):
    deadline = time.monotonic() + timeout * SLOW
    while reloads(gw, result) < count:
        assert time.monotonic() < deadline, f"reload {result} never counted:\n{gw.stderr()[-3000:]}"
        time.sleep(0.05)


def test_reload_refuses_max_message_size_the_pool_cannot_hold(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "stream_memory": 4194304,
                                 "max_message_size": 65536})
    gen = gw.detailed()["config_generation"]
    ok0, fail0 = reloads(gw, "success"), reloads(gw, "failure")
    reload_with(gw, max_message_size=16777216)
    deadline = time.monotonic() + 5 * SLOW
    while reloads(gw, "failure") == fail0:
        assert reloads(gw, "success") == ok0, \
            "a reload to max_message_size 16 MiB with stream_memory 4 MiB was accepted"
        assert time.monotonic() < deadline, "the reload was neither counted a success nor a failure"
        time.sleep(0.05)
    errs = [json.dumps(l) for l in gw.logs() if l.get("event") == "reload" and l.get("level") == "error"]
    assert errs and ("stream_memory" in errs[-1] or "max_message_size" in errs[-1]), errs
    assert gw.detailed()["config_generation"] == gen
    # The gateway goes on with what it had: a 60 KB publish is acknowledged.
    c = RawWS(gw.port)
    c.send_text('{"type":"publish","stream":"cfg/1","id":1,"data":"%s"}' % ("y" * 60000))
    op, payload = c.read_frame()
    c.close()
    assert op == 1 and json.loads(payload).get("type") == "ack", payload


# -- 7. send_timeout: live on reload, checked ------------------------------------------------

def test_send_timeout_is_live_on_reload(gateway_factory):
    """A non-reading subscriber with 640 KB waiting (max_send_buffer 256
    KiB, below its 4x ceiling) is left alone while send_timeout is 30; once
    a reload sets 1, it is closed 1013 slow_consumer within 1 + 1 s."""
    gw = gateway_factory(config={"workers": 1, "max_send_buffer": 262144, "send_timeout": 30})
    stream = "bed/21/ecg"

    async def main():
        stuck = await raw_subscriber(gw, stream, 4096, "stuck")
        remote = f"127.0.0.1:{stuck.local_port}"
        pub = await RawPublisher.connect(gw)
        await burst(pub, stream, 1, count=40)
        early = await wait_log(gw, verdict_of(remote), 2)
        assert early is None, f"closed with send_timeout 30, 2 s after 640 KB: {early}"
        ok0 = await asyncio.to_thread(reloads, gw, "success")
        sent = await asyncio.to_thread(reload_with, gw, send_timeout=1)
        await asyncio.to_thread(wait_reloads, gw, "success", ok0 + 1)
        verdict = await wait_log(gw, verdict_of(remote), 4)
        assert verdict is not None, "not closed within 4 s of a reload setting send_timeout 1"
        delay = log_time(verdict) - sent
        print(f"judged slow {delay:.3f} s after the SIGHUP: {verdict}")
        line = await wait_log(gw, disconnect_of(remote), 10)
        assert delay <= 1 + 1.0 * SLOW, f"closed {delay:.3f} s after the reload to send_timeout 1"
        got = await asyncio.to_thread(stuck.read_all, 10)
        stuck.close()
        problems = check_closed_slow_consumer("the non-reader", got, stream, line)
        assert not problems, "\n".join(problems)
        await pub.close()

    run(main())


@pytest.mark.parametrize("value", ["0", "3601", '"5"', "2.5", "-1"])
def test_check_refuses_bad_send_timeout(tmp_path, value):
    out = check(tmp_path, f"workers: 1\nsend_timeout: {value}\n")
    assert out.returncode == 1, f"send_timeout: {value} accepted: {out.stdout}{out.stderr}"
    assert "send_timeout" in out.stderr and ":2" in out.stderr, out.stderr


@pytest.mark.parametrize("value", ["1", "3600"])
def test_check_accepts_send_timeout_bounds(tmp_path, value):
    out = check(tmp_path, f"send_timeout: {value}\n")
    assert out.returncode == 0, out.stderr


def test_help_lists_send_timeout():
    out = subprocess.run([WSGATE_BIN, "-h"], capture_output=True, text=True, timeout=10 * SLOW)
    assert "send_timeout" in out.stdout + out.stderr


def test_invalid_send_timeout_reload_changes_nothing(gateway_factory):
    gw = gateway_factory(config={"workers": 1, "send_timeout": 5})
    gen = gw.detailed()["config_generation"]
    ok0, fail0 = reloads(gw, "success"), reloads(gw, "failure")
    reload_with(gw, send_timeout=0)
    wait_reloads(gw, "failure", fail0 + 1)
    assert reloads(gw, "success") == ok0
    errs = [l for l in gw.logs() if l.get("level") == "error"]
    assert errs and "send_timeout" in json.dumps(errs[-1]), errs
    assert gw.detailed()["config_generation"] == gen
