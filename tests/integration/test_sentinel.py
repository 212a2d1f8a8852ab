"""Cluster mode without a single point of failure (issue 16): Redis Sentinel
groups as shards, publishes acknowledged only once replicated
(broker_replicas_ack), and a pub/sub connection that is watched, not
assumed. Real redis-server and redis-sentinel on loopback, started here:
one master, two replicas and three Sentinels per group."""
import asyncio
import os
import socket
import subprocess
import time

import pytest

from conftest import SLOW, WSGATE_BIN, metric
from sentinelutil import (HAVE_SENTINEL, Publisher, RedisNode, Relay, SentinelGroup, Stream,
                          cli, failover_run, healthy, wait)

pytestmark = pytest.mark.skipif(not HAVE_SENTINEL, reason="redis-sentinel not installed")


@pytest.fixture
def group(tmp_path):
    # down-after 2 s, not 1: a Sentinel that learns of a new master opens a
    # fresh link to it and counts down-after from that link's creation. With
    # 1 s, 4 runs in 18 had Sentinels call the newly promoted (and idle)
    # master down about 1.0 s after learning of it; twice that made a second
    # failover, and publishes rightly answered unavailable meanwhile.
    g = SentinelGroup(tmp_path / "sentinel", down_after_ms=2000)
    try:
        yield g.start()
    finally:
        g.stop()


def config(*urls, **extra):
    cfg = {"workers": 2, "broker": list(urls), "stream_memory": 16 << 20, "max_streams": 64,
           "broker_timeout": 2}
    cfg.update(extra)
    return cfg


def gateways(gateway_factory, n, cfg):
    gws = [gateway_factory(cfg) for _ in range(n)]
    for gw in gws:
        wait(lambda gw=gw: healthy(gw), 15, "the gateway's brokers up")
    return gws


async def publish_acked(port, stream, ks):
    """Publish one at a time; every one must be acknowledged."""
    c = await Stream.connect(port)
    seqs = []
    for k in ks:
        c.send({"type": "publish", "stream": stream, "id": k, "data": {"k": k}})
        await c.wait_for(lambda k=k: any(f.get("id") == k for _, f in c.frames), f"answer {k}")
        reply = next(f for _, f in c.frames if f.get("id") == k)
        assert reply["type"] == "ack", reply
        seqs.append(reply["seq"])
    await c.close()
    return seqs


def commandstats(node):
    return {k for k in node.info("commandstats")}


def test_master_killed_acked_messages_reach_every_subscriber_once(gateway_factory, group):
    """SIGKILL of the master while a publisher streams 500 messages/s with
    broker_replicas_ack 1: every acknowledged message reaches all 40
    subscribers (20 per replica) exactly once, in order, with no gap;
    publishes during the failover are refused `unavailable`; publishing
    resumes by itself; the old master, back as a replica, gets no writes."""
    a, b = gateways(gateway_factory, 2, config(group.url(), broker_replicas_ack=1))
    stream = "patient/16/ecg"
    r = asyncio.run(failover_run(group, a, [a, b], stream, before_kill=1.0, after_resume=0.5))
    acks, refused = r["acks"], r["refused"]
    assert refused, "no publish was refused during the failover"
    assert {code for code, _ in refused.values()} == {"unavailable"}, refused
    assert r["kill_to_first_ack"] is not None, "publishing did not resume"
    seqs = sorted(seq for seq, _ in acks.values())
    assert len(set(seqs)) == len(seqs), "a seq acknowledged twice"
    acked = {seq: k for k, (seq, _) in acks.items()}
    first = r["subs"][0]
    for got, gaps in zip(r["subs"], r["gaps"]):
        assert not gaps, gaps[:3]
        assert got == first, "subscribers saw different streams"
        got_seqs = [seq for seq, _ in got]
        assert got_seqs == sorted(set(got_seqs)), "out of order or twice"
        missing = set(acked.items()) - set(got)
        assert not missing, f"acknowledged and lost: {sorted(missing)[:10]}"
    print(f"\nfailover: sent {r['sent']}, acked {len(acks)}, refused {len(refused)}, delivered "
          f"{r['delivered']}, lost {r['lost']}, kill->first ack {r['kill_to_first_ack']:.2f}s, "
          f"kill->first delivery {r['kill_to_first_delivery']:.2f}s")

    # The old master comes back (empty, no persistence): the Sentinels make
    # it a replica, and no gateway ever writes to it.
    old = group.node(r["killed_port"])
    old.start()
    wait(lambda: old.role() == "slave", 20, "the old master to become a replica", 0.2)
    more = asyncio.run(publish_acked(a.port, stream, range(100000, 100020)))
    assert more == sorted(more) and more[0] > max(seqs), more
    new = group.node(group.master_port())
    wait(lambda: new.info("replication").get("connected_slaves") == "2", 15,
         "both replicas attached to the new master", 0.2)
    stats = commandstats(old)
    assert not {"cmdstat_evalsha", "cmdstat_eval"} & stats, stats
    assert "cmdstat_evalsha" in commandstats(new)
    assert b.detailed()["status"] == "ok"


def test_mixed_list_pubsub_killed_stalled_and_down(gateway_factory, group, tmp_path):
    """A Sentinel group and a plain redis:// shard in one list. The pub/sub
    connection is killed (CLIENT KILL TYPE pubsub on the group's master),
    then stalled (a relay stops forwarding it): each is noticed within
    broker_timeout + 1 s and replaced, and subscribers see every message
    once, in order, without a gap. While it cannot come back, publishes
    still succeed but the replica is degraded and says why."""
    plain = RedisNode(str(tmp_path / "plain")).start()
    relay = Relay(plain.port)
    try:
        _mixed(gateway_factory, group, plain, relay)
    finally:
        relay.close()
        plain.kill()


def _on(node, stream):
    return node.cli("EXISTS", f"wsgate:{{{stream}}}:seq") == "1"


def _mixed(gateway_factory, group, plain, relay):
    plain_url = f"redis://127.0.0.1:{relay.port}/0"
    a, b = gateways(gateway_factory, 2, config(group.url(), plain_url))
    label = f"127.0.0.1:{relay.port}/0"
    master = group.node(group.master_port())
    candidates = [f"patient/{i}/ecg" for i in range(12)]
    asyncio.run(publish_acked(a.port, candidates[0], [0]))
    for s in candidates[1:]:
        asyncio.run(publish_acked(a.port, s, [0]))
    on_group = [s for s in candidates if _on(master, s)]
    on_plain = [s for s in candidates if _on(plain, s)]
    assert on_group and on_plain and len(on_group) + len(on_plain) == len(candidates), \
        (on_group, on_plain)
    streams = [on_group[0], on_plain[0]]

    def sub_errors():
        return metric(b.metrics(), "websocket_broker_errors_total", broker=label,
                      error_type="subscription")

    async def go():
        subs = {s: [] for s in streams}
        for s in streams:
            for _ in range(5):
                c = await Stream.connect(b.port)
                await c.subscribe(s)
                subs[s].append(c)
        pubs = []
        for s in streams:
            pubs.append(Publisher(await Stream.connect(a.port), s, rate=200))
        stop = {"now": False}
        tasks = [asyncio.ensure_future(p.run(lambda: stop["now"])) for p in pubs]
        await asyncio.sleep(1)

        # Killed: the workers see the connection end and subscribe again.
        killed = master.cli("CLIENT", "KILL", "TYPE", "pubsub")
        assert int(killed) >= 2, killed
        await asyncio.sleep(1)

        # Stalled: no byte comes back, nothing closes.
        before = sub_errors()
        t0 = time.monotonic()
        relay.stall_subscribed()
        limit = (2 + 1) * SLOW
        while sub_errors() == before:
            assert time.monotonic() - t0 < limit, "a stalled subscription went unnoticed"
            await asyncio.sleep(0.05)
        noticed = time.monotonic() - t0
        await asyncio.sleep(1)

        # Down for good (every new pub/sub connection stalls): publishes
        # still succeed, the replica says degraded and why.
        relay.stall_subscribed(persistent=True)
        t0 = time.monotonic()
        while True:
            doc = b.detailed()
            shard = next(x for x in doc["broker"] if x["broker"] == label)
            if doc["status"] == "degraded" and not shard["subscription_up"]:
                break
            assert time.monotonic() - t0 < limit, doc
            await asyncio.sleep(0.05)
        assert shard["commands_up"] is True and "subscription" in doc["reason"], doc
        samples = b.metrics()
        assert metric(samples, "websocket_broker_up", broker=label, connection="command") == 1
        assert metric(samples, "websocket_broker_up", broker=label,
                      connection="subscription") == 0
        acked_before = len(pubs[1].answers()[0])
        await asyncio.sleep(1)
        assert len(pubs[1].answers()[0]) > acked_before, "publishes stopped with the subscription"
        late = await Stream.connect(b.port)
        late.send({"type": "subscribe", "stream": streams[1], "id": "late"})
        await late.wait_for(lambda: late.frames, "an answer to a subscribe")
        assert late.frames[0][1]["type"] == "error" and \
            late.frames[0][1]["code"] == "unavailable", late.frames
        await late.close()

        relay.resume()
        t0 = time.monotonic()
        while not healthy(b):
            assert time.monotonic() - t0 < 10 * SLOW, b.detailed()
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        stop["now"] = True
        await asyncio.gather(*tasks)
        for p in pubs:
            await p.c.wait_for(p.all_answered, "an answer to every publish")
        for s, p in zip(streams, pubs):
            acks, refused = p.answers()
            assert not refused, list(refused.items())[:3]
            expected = sorted((seq, k) for k, (seq, _) in acks.items())
            for c in subs[s]:
                await c.wait_for(lambda c=c: len(c.of_type("message")) >= len(expected),
                                 f"{len(expected)} messages of {s}", timeout=15)
                got = [(f["seq"], f["data"]["k"]) for f in c.of_type("message")]
                assert not c.of_type("gap"), c.of_type("gap")[:3]
                assert got == expected, (s, [x for x in expected if x not in got][:5])
                await c.close()
            await p.c.close()
        return noticed
    noticed = asyncio.run(go())
    print(f"\nstalled subscription noticed after {noticed:.2f}s (broker_timeout 2)")


def test_a_replica_is_never_written_to(gateway_factory, group):
    """A redis:// URL that names a replica: ROLE says so, the gateway writes
    nothing to it, publishes are refused and the replica is degraded."""
    replica = group.nodes[1]
    gw = gateway_factory(config(f"redis://127.0.0.1:{replica.port}/0"))

    async def go():
        c = await Stream.connect(gw.port)
        for k in range(3):
            c.send({"type": "publish", "stream": "patient/1/ecg", "id": k, "data": k})
        await c.wait_for(lambda: len(c.frames) == 3, "three answers")
        assert [f["code"] for _, f in c.frames] == ["unavailable"] * 3, c.frames
        await c.close()
    asyncio.run(go())
    doc = gw.detailed()
    assert doc["status"] == "degraded" and doc["broker"][0]["commands_up"] is False, doc
    assert not {"cmdstat_evalsha", "cmdstat_eval", "cmdstat_script|load"} & commandstats(replica)
    assert any("is not a master" in l.get("message", "") for l in gw.logs()), gw.stderr()[-2000:]


def test_replicas_ack_refuses_what_no_replica_holds(gateway_factory, tmp_path):
    """broker_replicas_ack 1 with the only replica gone: WAIT sees none in
    broker_timeout, the publish is answered `unavailable` and no subscriber
    sees it; once the replica is back, the next acknowledged publish
    brings it along (its outcome was unknown, not a loss)."""
    master = RedisNode(str(tmp_path / "m")).start()
    replica = RedisNode(str(tmp_path / "r"), replicaof=master.port).start()
    try:
        wait(lambda: replica.info("replication").get("master_link_status") == "up", 10,
             "replication")
        gw = gateway_factory(config(f"redis://127.0.0.1:{master.port}/0", broker_replicas_ack=1,
                                    broker_timeout=1))
        wait(lambda: healthy(gw), 10, "broker up")

        async def go():
            sub = await Stream.connect(gw.port)
            await sub.subscribe("patient/2/ecg")
            assert await publish_acked(gw.port, "patient/2/ecg", [0, 1]) == [1, 2]
            await sub.wait_for(lambda: len(sub.of_type("message")) == 2, "two messages")
            replica.kill()
            c = await Stream.connect(gw.port)
            c.send({"type": "publish", "stream": "patient/2/ecg", "id": 2, "data": {"k": 2}})
            await c.wait_for(lambda: c.frames, "an answer", timeout=5)
            assert c.frames[0][1]["code"] == "unavailable", c.frames
            await asyncio.sleep(0.5)
            assert len(sub.of_type("message")) == 2, sub.frames
            replica.start()
            wait(lambda: replica.info("replication").get("master_link_status") == "up", 10,
                 "replication")
            assert await publish_acked(gw.port, "patient/2/ecg", [3]) == [4]
            await sub.wait_for(lambda: len(sub.of_type("message")) == 4, "four messages")
            assert [(f["seq"], f["data"]["k"]) for f in sub.of_type("message")] == \
                [(1, 0), (2, 1), (3, 2), (4, 3)]
            assert not sub.of_type("gap")
            await c.close()
            await sub.close()
        asyncio.run(go())
        assert metric(gw.metrics(), "websocket_broker_errors_total", error_type="replicas") >= 1
    finally:
        replica.kill()
        master.kill()


@pytest.mark.parametrize("url,ok", [
    ("redis-sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/2", True),
    ("redis-sentinel://:pw@s1,s2:26380,s3/mymaster", True),
    ("redis-sentinel://127.0.0.1:26379", False),
    ("redis-sentinel://127.0.0.1:26379/", False),
    ("redis-sentinel://127.0.0.1:99999/mymaster", False),
    ("redis-sentinel://s1,,s2/mymaster", False),
    ("redis-sentinel://s1/mymaster/16", False),
])
def test_sentinel_urls_are_checked(tmp_path, url, ok):
    path = tmp_path / "websocket.yaml"
    path.write_text(f'broker: ["{url}", "redis://127.0.0.1:6379/0"]\n')
    out = subprocess.run([WSGATE_BIN, "-t", "-c", str(path)], capture_output=True, text=True,
                         timeout=10 * SLOW)
    assert (out.returncode == 0) == ok, out.stderr
    if not ok:
        assert "broker" in out.stderr, out.stderr


def test_a_sequence_that_lost_its_tail_never_reuses_a_delivered_seq(gateway_factory, tmp_path):
    """With broker_replicas_ack 0 a failover can lose acknowledged messages
    a subscriber already has (simulated: Redis forgets seq 4-5). The
    worker's refill moves the sequence past what it delivered, so the next
    publish gets seq 6, not a second seq 4 its subscriber would drop, and a
    subscriber resuming from 3 is told `gap` 4-5."""
    node = RedisNode(str(tmp_path / "r")).start()
    try:
        gw = gateway_factory(config(f"redis://127.0.0.1:{node.port}/0"))
        wait(lambda: healthy(gw), 10, "broker up")
        s = "patient/3/ecg"

        async def go():
            sub = await Stream.connect(gw.port)
            first = await sub.subscribe(s)
            assert await publish_acked(gw.port, s, range(5)) == [1, 2, 3, 4, 5]
            await sub.wait_for(lambda: len(sub.of_type("message")) == 5, "five messages")
            for cmd in (["SET", f"wsgate:{{{s}}}:seq", "3"], ["SET", f"wsgate:{{{s}}}:acked", "3"],
                        ["XDEL", f"wsgate:{{{s}}}:log", "4-0", "5-0"]):
                node.cli(*cmd)
            assert int(node.cli("CLIENT", "KILL", "TYPE", "pubsub")) >= 1
            wait(lambda: node.cli("GET", f"wsgate:{{{s}}}:seq") == "5", 10,
                 "the refill to move the sequence on")
            assert await publish_acked(gw.port, s, [5]) == [6]
            await sub.wait_for(lambda: len(sub.of_type("message")) == 6, "the sixth message")
            assert [f["seq"] for f in sub.of_type("message")] == [1, 2, 3, 4, 5, 6]
            again = await Stream.connect(gw.port)
            reply = await again.subscribe(s, since=3, epoch=first["epoch"])
            assert reply["recovered"] is False, reply
            await again.wait_for(lambda: len(again.frames) >= 3, "gap and message")
            gap, msg = again.frames[1][1], again.frames[2][1]
            assert (gap["type"], gap["from"], gap["to"]) == ("gap", 4, 5), again.frames
            assert (msg["type"], msg["seq"]) == ("message", 6), again.frames
            for c in (sub, again):
                await c.close()
        asyncio.run(go())
    finally:
        node.kill()


def test_sentinel_password_from_a_file(gateway_factory, group, tmp_path):
    """Sentinels that require a password: without broker_sentinel_password_file
    the gateway cannot learn the master (and says so); with it, it does, and
    the secret is never logged."""
    secret = "sent-" + os.urandom(4).hex()
    for port in group.sentinel_ports:
        cli(port, "SENTINEL", "CONFIG", "SET", "sentinel-pass", secret)
        assert cli(port, "ACL", "SETUSER", "default", "on", "resetpass", f">{secret}") == "OK"
    without = gateway_factory(config(group.url()))
    pw = tmp_path / "sentinel.pass"
    pw.write_text(secret + "\n")
    good = gateway_factory(config(group.url(), broker_sentinel_password_file=str(pw),
                                  log_level="debug"))
    wait(lambda: healthy(good), 10, "the master named by password-protected Sentinels")
    assert asyncio.run(publish_acked(good.port, "patient/4/ecg", [0, 1])) == [1, 2]
    doc = without.detailed()
    assert doc["status"] == "degraded" and doc["broker"][0]["commands_up"] is False, doc
    assert any("does not name a master" in l.get("message", "") and "NOAUTH" in l["message"]
               for l in without.logs()), without.stderr()[-2000:]
    assert secret not in good.stderr() and secret not in without.stderr()


def test_a_silent_sentinel_is_passed_over(gateway_factory, group):
    """The first Sentinel listed accepts connections but never answers: the
    workers give it up after broker_timeout and ask the next one."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    try:
        port = silent.getsockname()[1]
        hosts = ",".join(f"127.0.0.1:{p}" for p in [port] + group.sentinel_ports)
        gw = gateway_factory(config(f"redis-sentinel://{hosts}/{group.name}/0", broker_timeout=1))
        t0 = time.monotonic()
        wait(lambda: healthy(gw), 10, "the master named by the second Sentinel")
        print(f"\nsilent Sentinel passed over in {time.monotonic() - t0:.2f}s (broker_timeout 1)")
        assert asyncio.run(publish_acked(gw.port, "patient/5/ecg", [0])) == [1]
    finally:
        silent.close()
