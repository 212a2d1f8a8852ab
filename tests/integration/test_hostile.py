"""Hostile clients (issue 7): about a thousand connections doing nasty
things at once while 20 well-behaved subscribers receive a stream from a
publisher at 50 messages per second.

The attack (hostile.py attack, its own process at nice 10 so that the
measurement is of the gateway and not of Python on a 2-core machine):
  slowloris heads (a byte every 200 ms; 408 at handshake_timeout),
  handshakes without a valid token (401), tokens for other streams asking
  for the watched one (forbidden), messages in 1-byte frames, WebSocket
  ping floods (half never read their pongs), rate-limit abusers (closed
  1008), messages of exactly max_message_size (1 MiB), and 1 MiB messages
  whose last byte is invalid UTF-8 (closed 1007).

The well-behaved (hostile.py watch, its own process, the `websockets`
library): every subscriber gets every seq in order, nothing else; p99
delivery latency (publisher-embedded CLOCK_MONOTONIC send time to receive
time, same machine) of the messages sent during the attack stays under
the issue's 50 ms. Under ASan+UBSan (conftest.SANITIZED) the gateway runs
several times slower: the attack is scaled to 40% and the bound is
150 ms (documented in the README).

Afterwards: no worker crashed (no worker_exit line, restarts unchanged,
same worker pids), and the gateway's memory (sum of VmRSS of master and
workers) ~2 s after the attackers are gone is within 4 MiB of what it was
before the attack (the baseline is taken once each worker has parsed a
large message, so its thread pool exists). Under ASan the gateway runs
with an 8 MiB quarantine and the margin is 64 MiB: its allocator keeps
freed memory in per-size-class caches.
Total time is bounded (about 30 s; the attack itself 15 s).
"""
import json
import os
import select
import subprocess
import sys
import time

from conftest import SANITIZED, SLOW, metric
import jwtutil
import wsframes as wf

HERE = os.path.dirname(os.path.abspath(__file__))
ATTACK_SECONDS = 15
RATE = 50            # messages per second from the publisher
SUBSCRIBERS = 20
SCALE = 0.4 if SANITIZED else 1.0
P99_BOUND_MS = 150.0 if SANITIZED else 50.0
RSS_MARGIN_KIB = (64 if SANITIZED else 4) * 1024
MAX_MESSAGE = 1048576
# ASan keeps up to 256 MiB of freed memory in quarantine per process by
# default, which would hide whether memory comes back: keep it small.
GATEWAY_ENV = ({"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") +
                ":quarantine_size_mb=8:thread_local_quarantine_size_kb=256"
                ":allocator_release_to_os_interval_ms=200"} if SANITIZED else None)

MIX = {
    "slowloris": 300,
    "unauthorized": 100,
    "forbidden": 200,
    "one_byte": 150,
    "ping_flood": 100,
    "rate_abuse": 100,
    "max_size": 30,
    "bad_utf8": 20,
}


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def read_line(proc, timeout):
    """One line of proc's stdout within timeout (bounded)."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    for _ in range(100000):
        if b"\n" in buf:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no line from {proc.args} within {timeout:.0f}s")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            buf += chunk
    line, _, rest = buf.partition(b"\n")
    return line.decode(), rest


def read_json(proc, timeout, pending=b""):
    deadline = time.monotonic() + timeout
    buf = pending
    fd = proc.stdout.fileno()
    for _ in range(1000000):
        if b"\n" in buf:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no result from {proc.args} within {timeout:.0f}s")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            buf += chunk
    line = buf.partition(b"\n")[0]
    if not line:
        code, err = finish(proc, 10)
        raise AssertionError(f"{proc.args[-2]} exited with {code} and no result:\n{err[-3000:]}")
    return json.loads(line)


def spawn(kind, spec_path):
    return subprocess.Popen([sys.executable, os.path.join(HERE, "hostile.py"), kind, spec_path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc, timeout):
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    err = proc.stderr.read().decode(errors="replace")
    return proc.returncode, err


def test_hostile_clients_do_not_hurt_the_well_behaved(gateway_factory, tmp_path):
    keys = jwtutil.Keys(tmp_path)
    gw = gateway_factory({
        "workers": 2,
        "auth_mode": "jwt",
        "jwt_key_file": keys.secret_path,
        "max_message_size": MAX_MESSAGE,
        "handshake_timeout": 4,
        "max_messages_per_second": 100,
        "message_burst": 200,
    }, env=GATEWAY_ENV)
    stream = "ward/7/ecg"
    base = {"port": gw.port, "secret_path": keys.secret_path, "stream": stream,
            "max_message_size": MAX_MESSAGE}
    watch_seconds = 2 + ATTACK_SECONDS + 10
    watch_spec = tmp_path / "watch.json"
    watch_spec.write_text(json.dumps(dict(base, subscribers=SUBSCRIBERS, rate=RATE,
                                          duration=watch_seconds)))
    mix = {k: max(1, int(v * SCALE)) for k, v in MIX.items()}
    attack_spec = tmp_path / "attack.json"
    attack_spec.write_text(json.dumps(dict(base, duration=ATTACK_SECONDS, mix=mix, nice=10)))

    watcher = spawn("watch", str(watch_spec))
    attacker = None
    try:
        line, pending = read_line(watcher, 30 * SLOW)
        assert line == "ready", (line, finish(watcher, 5))
        publishing_from = time.monotonic_ns()
        time.sleep(2)
        pids = [gw.proc.pid] + gw.worker_pids()
        assert len(pids) == 3, pids
        rss_before = rss_kib(pids)
        samples = gw.metrics()
        restarts0 = metric(samples, "websocket_worker_restarts_total")

        attack_start = time.monotonic_ns()
        attacker = spawn("attack", str(attack_spec))
        report = read_json(attacker, ATTACK_SECONDS + 60 * SLOW)
        code, err = finish(attacker, 30)
        attack_end = time.monotonic_ns()
        assert code == 0, err
        time.sleep(2)
        rss_after = rss_kib(pids)
        during = gw.metrics()

        result = read_json(watcher, watch_seconds + 90 * SLOW, pending)
        wcode, werr = finish(watcher, 30)
        assert wcode == 0, werr
    finally:
        for p in (watcher, attacker):
            if p and p.poll() is None:
                p.kill()
                p.wait(timeout=10)

    # -- the attack happened, in every flavour -------------------------------
    stats = report["stats"]
    print("attack:", json.dumps(report))
    assert report["peak_open"] >= 0.8 * sum(mix.values()) - mix["unauthorized"], report
    assert stats["slowloris"].get("408", 0) >= mix["slowloris"], stats["slowloris"]
    assert stats["unauthorized"].get("401", 0) >= mix["unauthorized"], stats["unauthorized"]
    assert stats["unauthorized"].get("101", 0) == 0
    assert stats["forbidden"].get("101", 0) == mix["forbidden"], stats["forbidden"]
    assert stats["forbidden"].get("forbidden", 0) >= mix["forbidden"] * 10
    assert stats["forbidden"].get("subscribed", 0) == 0 and stats["forbidden"].get("ack", 0) == 0
    assert stats["one_byte"].get("pong", 0) >= mix["one_byte"], stats["one_byte"]
    assert stats["ping_flood"].get("pings_sent", 0) >= mix["ping_flood"] * 100
    assert stats["ping_flood"].get("pong_frame", 0) > 0, stats["ping_flood"]
    assert stats["rate_abuse"].get("close_1008", 0) >= mix["rate_abuse"], stats["rate_abuse"]
    assert stats["rate_abuse"].get("rate_limited", 0) >= 51 * mix["rate_abuse"]
    assert stats["max_size"].get("pong", 0) >= mix["max_size"], stats["max_size"]
    assert stats["bad_utf8"].get("close_1007", 0) >= mix["bad_utf8"], stats["bad_utf8"]
    assert metric(during, "websocket_connection_errors_total", error_type="auth") >= \
        stats["unauthorized"]["401"]
    assert metric(during, "websocket_connection_errors_total", error_type="timeout") >= \
        stats["slowloris"]["408"]
    assert metric(during, "websocket_messages_refused_total", code="forbidden") >= \
        stats["forbidden"]["forbidden"]

    # -- the well-behaved lost nothing ----------------------------------------
    total = result["published"]
    assert total == int(watch_seconds * RATE)
    assert result["pub_errors"] == [], result["pub_errors"][:5]
    assert result["acks"] == list(range(1, total + 1))
    for k in range(SUBSCRIBERS):
        assert result["other"][k] == {}, (k, result["other"][k])  # no gap, error, close
        seqs = [r[0] for r in result["received"][k]]
        first = result["subscribed_seq"][k] + 1
        assert seqs == list(range(first, total + 1)), (k, seqs[:5], seqs[-5:], len(seqs))

    # -- and were not slowed down ------------------------------------------------
    window = sorted(r[1] / 1e6 for recv in result["received"] for r in recv
                    if attack_start <= r[2] <= attack_end)
    overall = sorted(r[1] / 1e6 for recv in result["received"] for r in recv)
    # the publisher was publishing through the whole attack
    assert attack_end < publishing_from + watch_seconds * 1e9, "attack outlasted the publisher"
    assert len(window) >= SUBSCRIBERS * RATE * ATTACK_SECONDS * 0.9, len(window)
    p99 = window[int(0.99 * (len(window) - 1))]
    p50 = window[len(window) // 2]
    print(f"latency during attack: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {window[-1]:.2f} ms; "
          f"overall p99 {overall[int(0.99 * (len(overall) - 1))]:.2f} ms; "
          f"RSS before {rss_before} KiB, after {rss_after} KiB")
    assert p99 < P99_BOUND_MS, f"p99 {p99:.1f} ms during the attack (bound {P99_BOUND_MS} ms)"

    # -- nothing crashed, memory came back ------------------------------------------
    after = gw.metrics()
    assert metric(after, "websocket_worker_restarts_total") == restarts0
    assert sorted(gw.worker_pids()) == sorted(pids[1:])
    assert not [l for l in gw.logs() if l.get("event") == "worker_exit"], gw.stderr()[-2000:]
    assert rss_after <= rss_before + RSS_MARGIN_KIB, (rss_before, rss_after)
    assert wait_active(gw, SUBSCRIBERS + 1)


def wait_active(gw, n):
    """Only the well-behaved remain (they are closed by now, so 0..n)."""
    deadline = time.monotonic() + 10 * SLOW
    for _ in range(1000):
        active = gw.detailed()["connections"]["active"]
        if active <= n:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return False


# -- large messages are parsed off the loop, in order -----------------------------

def test_large_messages_keep_their_order(gateway_factory):
    gw = gateway_factory({"workers": 1, "max_message_size": MAX_MESSAGE,
                          "max_messages_per_second": 0})
    with wf.open_ws(gw.port) as sub, wf.open_ws(gw.port) as ws:
        assert sub.request({"type": "subscribe", "stream": "big/1", "id": 0})["type"] == \
            "subscribed"
        # big and small, pings and publishes, in one write: replies in order
        msgs = []
        for i in range(12):
            pad = "p" * (200000 if i % 3 == 0 else 10)
            if i % 2:
                msgs.append({"type": "publish", "stream": "big/1", "id": i,
                             "data": {"i": i, "pad": pad}})
            else:
                msgs.append({"type": "ping", "id": i, "pad": pad})
        ws.send(b"".join(wf.text(json.dumps(m)) for m in msgs) +
                wf.text('{"type":"ping","id":"dup","id":2,"pad":"' + "x" * 70000 + '"}') +
                wf.text("{not json" + " " * 70000))
        replies = [ws.recv_message(timeout=20) for _ in range(14)]
        assert [r.get("id") for r in replies[:12]] == list(range(12)), replies
        assert [r["type"] for r in replies[:12]] == ["pong", "ack"] * 6
        assert [r["seq"] for r in replies[:12] if r["type"] == "ack"] == list(range(1, 7))
        assert replies[12]["code"] == "bad_request" and replies[13]["code"] == "bad_request"
        got = [sub.recv_message(timeout=20) for _ in range(6)]
        assert [m["data"]["i"] for m in got] == [1, 3, 5, 7, 9, 11]
        assert len(got[0]["data"]["pad"]) == 10 and len(got[1]["data"]["pad"]) == 200000


def test_closing_while_a_large_message_is_parsed(gateway_factory):
    gw = gateway_factory({"workers": 1, "max_message_size": MAX_MESSAGE})
    big = wf.text(json.dumps({"type": "ping", "pad": "z" * (MAX_MESSAGE - 100)}))
    for _ in range(20):
        ws = wf.open_ws(gw.port)
        ws.send(big + wf.text('{"type":"ping"}'))
        ws.close_socket()  # gone before the parse comes back
    with wf.open_ws(gw.port) as ws:
        assert ws.request({"type": "ping", "id": "alive"}, timeout=10)["id"] == "alive"
    assert wf.wait_for(lambda: gw.detailed()["connections"]["active"] == 0, timeout=10)
    assert not [l for l in gw.logs() if l.get("event") == "worker_exit"]
