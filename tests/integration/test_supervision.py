"""Supervision (issue 4): respawn of a killed worker with its counters
folded, crash-loop backoff, SIGHUP reload of live settings without closing
a connection, refused and invalid reloads, growing and shrinking the worker
set, and the graceful drain on SIGTERM."""
import asyncio
import json
import os
import signal
import socket
import time

import pytest
import websockets

from conftest import SLOW, free_port, metric
from gwutil import (OP_PING, OP_TEXT, RawWS, close_all, open_many, pid_alive,
                    pids_with_arg, shm_path, wait_for, workers_by_slot)

REASONS = ["client_close", "timeout", "protocol_error", "too_large", "slow_consumer",
           "shutdown", "reload", "worker_exit", "error"]


def monotonic_names(samples):
    return {k: v for k, v in samples.items()
            if not k[0].startswith("process_") and
            (k[0].endswith("_total") or k[0].endswith("_bucket") or k[0].endswith("_count")
             or k[0].endswith("_sum"))}


def assert_no_counter_went_back(before, after):
    for key, v in monotonic_names(before).items():
        assert key in after, f"series vanished: {key}"
        assert after[key] >= v, f"{key[0]}{dict(key[1])} went back: {v} -> {after[key]}"


def slots_of(gw, clients):
    """{slot: [clients]} from the workers' `connect` log lines (remote =
    the client's own address)."""
    want = {f"127.0.0.1:{c.sock.getsockname()[1]}": c for c in clients}

    def mapping():
        found = {}
        for l in gw.logs():
            if l.get("event") == "connect" and l.get("remote") in want:
                found[l["remote"]] = l["worker"]
        return found if len(found) == len(want) else None
    found = wait_for(mapping, 3, what="a connect log line per client")
    out = {}
    for remote, slot in found.items():
        out.setdefault(slot, []).append(want[remote])
    return out


def reload_with(gw, **changes):
    cfg = dict(gw.config)
    cfg.update(changes)
    gw.write_config(cfg)
    gw.signal(signal.SIGHUP)


def reloads(gw, result):
    return metric(gw.metrics(port=gw.metrics_port), "websocket_config_reloads_total", result=result)


def assert_quiet_and_alive(clients, ident=0):
    """No unexpected frame arrived; an app-level ping still works."""
    for i, c in enumerate(clients):
        if c.has_data():
            op, payload = c.recv(timeout=1)
            raise AssertionError(f"unexpected frame {op} {payload[:100]!r}")
        c.ping(ident * 1000 + i)


# -- respawn ---------------------------------------------------------------

def test_sigkill_worker_is_respawned_and_counted(gateway_factory):
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600})
    clients = open_many(gw.port, 24)
    try:
        for i, c in enumerate(clients):
            c.ping(i)
        by_slot = slots_of(gw, clients)
        assert set(by_slot) == {0, 1}, {k: len(v) for k, v in by_slot.items()}
        victims, survivors = by_slot[0], by_slot[1]
        doc = gw.detailed()
        old = workers_by_slot(doc)
        assert old[0]["connections"] == len(victims)
        before = gw.metrics(port=gw.metrics_port)

        os.kill(old[0]["pid"], signal.SIGKILL)

        def respawned():
            w = workers_by_slot(gw.detailed()).get(0)
            return w if w and w["pid"] not in (0, old[0]["pid"]) and w["state"] == "running" \
                else None
        new = wait_for(respawned, 1.0, interval=0.02, what="slot 0 respawned within 1 s")
        assert pid_alive(new["pid"]) and not pid_alive(old[0]["pid"])
        assert new["restarts"] == old[0]["restarts"] + 1
        assert workers_by_slot(gw.detailed())[1]["pid"] == old[1]["pid"]

        for c in victims:
            assert c.wait_eof(timeout=3), "a killed worker's client stayed connected"
        # the other worker's clients noticed nothing
        assert_quiet_and_alive(survivors, 1)

        after = gw.metrics(port=gw.metrics_port)
        assert metric(after, "websocket_worker_restarts_total") == \
            metric(before, "websocket_worker_restarts_total") + 1
        for r in REASONS:
            want = len(victims) if r == "worker_exit" else 0
            got = (metric(after, "websocket_disconnections_total", reason=r)
                   - metric(before, "websocket_disconnections_total", reason=r))
            assert got == want, (r, got, want)
        assert metric(after, "websocket_connections_active") == len(survivors)
        assert gw.detailed()["connections"]["active"] == len(survivors)
        assert metric(after, "websocket_connections_total") == \
            metric(before, "websocket_connections_total")
        assert metric(after, "websocket_messages_received_total") >= 24
        assert_no_counter_went_back(before, after)
        assert metric(gw.metrics(), "websocket_workers", state="running") == 2

        exits = [l for l in gw.logs() if l.get("event") == "worker_exit"]
        assert any(l.get("slot") == 0 and l.get("pid") == old[0]["pid"] for l in exits), exits

        # the respawned worker accepts connections
        fresh = open_many(gw.port, 24)
        try:
            assert 0 in slots_of(gw, fresh)
            for i, c in enumerate(fresh):
                c.ping(i)
        finally:
            close_all(fresh)
        assert_no_counter_went_back(after, gw.metrics())
    finally:
        close_all(clients)


def test_crash_loop_backs_off_and_reports_degraded(gateway_factory):
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600})
    clients = open_many(gw.port, 16)
    by_slot = slots_of(gw, clients)
    assert 1 in by_slot
    keep = by_slot[1][0]  # on the worker that is left alone
    before = gw.metrics()
    kills = 0
    degraded = None
    pid = workers_by_slot(gw.detailed())[0]["pid"]
    for _ in range(5):
        os.kill(pid, signal.SIGKILL)
        kills += 1
        t0 = time.monotonic()
        seen = None
        # watch the slot: either degraded (backoff) or already respawned
        for _ in range(int(40 * SLOW / 0.01)):
            status, body = gw.http("/health/detailed", port=gw.metrics_port)
            doc = json.loads(body)
            w = workers_by_slot(doc).get(0)
            if doc["status"] == "degraded" and w and w.get("backoff_until"):
                seen = (status, doc, gw.http("/health"), gw.http("/health", port=gw.metrics_port))
            if w and w["state"] == "running" and w["pid"] not in (0, pid):
                pid = w["pid"]
                break
            if time.monotonic() - t0 > 40 * SLOW:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("slot 0 never came back")
        if seen:
            degraded = seen
            break
    assert degraded, f"no degraded/backoff state seen after {kills} young deaths"
    status, doc, health, admin_health = degraded
    assert status == 503 and "crash loop" in doc.get("reason", ""), doc
    assert health[0] == 200 and json.loads(health[1])["status"] == "ok", health
    assert admin_health[0] == 200, admin_health
    # the backoff ends, the slot serves again, the status is ok again
    wait_for(lambda: gw.detailed()["status"] == "ok", 5, what="status ok after backoff")
    after = gw.metrics()
    assert metric(after, "websocket_worker_restarts_total") - \
        metric(before, "websocket_worker_restarts_total") == kills
    keep.ping()
    keep.close_clean()
    close_all(clients)


def test_fault_switch_crash_loop_backs_off_and_keeps_serving(gateway_factory):
    """The test-only fault switch (fault_injection builds) makes worker 1 die
    50 ms after every start: the master backs off (growing delays), health
    says degraded with the reason while /health stays 200, and while slot 1
    waits its socket is out of the port group, so every new client is served
    by worker 0 instead of hanging."""
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600}, start=False)
    gw.start(wait=False, env={"WSGATE_FAULT_CRASH_SLOT": "1", "WSGATE_FAULT_CRASH_AFTER_MS": "50"})
    backoffs = []
    deadline = time.monotonic() + 15 * SLOW
    doc = None
    while time.monotonic() < deadline and len(set(backoffs)) < 3:
        try:
            status, body = gw.http("/health/detailed", port=gw.metrics_port)
        except OSError:
            time.sleep(0.05)
            continue
        doc = json.loads(body)
        w1 = workers_by_slot(doc).get(1)
        if w1 and w1.get("backoff_until"):
            assert status == 503 and "crash loop" in doc["reason"], doc
            backoffs.append(w1["backoff_until"])
        time.sleep(0.05)
    assert len(set(backoffs)) >= 3, f"backoff never grew: {backoffs} {doc}"
    assert gw.http("/health")[0] == 200
    restarts = metric(gw.metrics(port=gw.metrics_port), "websocket_worker_restarts_total")
    assert restarts >= 3
    # New clients never hang on the backed-off slot's queue.
    clients = open_many(gw.port, 20)
    try:
        for i, c in enumerate(clients):
            c.ping(i)
    finally:
        close_all(clients)
    assert any(l.get("event") == "worker_exit" and "crash loop" in l.get("action", "")
               for l in gw.logs())
    assert gw.stop() == 0


# -- reload ----------------------------------------------------------------

def test_sighup_applies_live_settings_without_closing(gateway_factory):
    gw = gateway_factory({"workers": 2, "max_message_size": 4096, "heartbeat_interval": 600,
                          "max_connections": 1000, "environment": "before"})
    clients = open_many(gw.port, 20)
    try:
        big = {"type": "ping", "id": "z" * 1000}
        for c in clients:
            c.send_json(big)
            assert c.recv_json()["type"] == "pong"
        doc0 = gw.detailed()
        gen0 = doc0["config_generation"]
        before = gw.metrics(port=gw.metrics_port)

        reload_with(gw, max_message_size=512, heartbeat_interval=1, max_connections=4321,
                    environment="after")

        def applied():
            d = gw.detailed()
            ok = d["config_generation"] == gen0 + 1 and all(
                w["config_generation"] == gen0 + 1 for w in d["workers"])
            return d if ok else None
        doc = wait_for(applied, 1.0, interval=0.02, what="every worker on the new generation")
        assert [w["pid"] for w in doc["workers"]] == [w["pid"] for w in doc0["workers"]]
        assert doc["connections"]["limit"] == 4321
        assert doc["environment"] == "after"

        # heartbeat_interval 1 now: every old connection gets a ping frame soon
        for c in clients:
            fin, op, payload = c.recv_frame(timeout=3)
            assert op == OP_PING, (op, payload)

        # every connection still open and answering
        for i, c in enumerate(clients[1:]):
            c.ping(i)
        # the lowered max_message_size applies to an old connection
        victim = clients[0]
        victim.send_json(big)
        code, _, msgs = victim.expect_close(reply=False)
        assert code == 1009, (code, msgs)
        assert all(m[0] != OP_TEXT or b'"pong"' not in m[1] for m in msgs)

        after = gw.metrics(port=gw.metrics_port)
        assert metric(after, "websocket_config_reloads_total", result="success") == \
            metric(before, "websocket_config_reloads_total", result="success") + 1
        assert metric(after, "websocket_config_reloads_total", result="failure") == \
            metric(before, "websocket_config_reloads_total", result="failure")
        wait_for(lambda: metric(gw.metrics(port=gw.metrics_port), "websocket_disconnections_total",
                                reason="too_large") - metric(before, "websocket_disconnections_total",
                                                             reason="too_large") == 1, 2,
                 what="too_large counted")
        after = gw.metrics(port=gw.metrics_port)
        for r in REASONS:
            if r != "too_large":
                assert metric(after, "websocket_disconnections_total", reason=r) == \
                    metric(before, "websocket_disconnections_total", reason=r), r
        assert metric(after, "websocket_connections_active") == len(clients) - 1
        assert metric(after, "websocket_max_connections") == 4321
        envs = {dict(ls).get("environment") for (_, ls) in after}
        assert envs == {"after"}, envs
        logs = [l for l in gw.logs() if l.get("event") == "reload"]
        assert logs and logs[-1].get("result") == "success", logs
        # a small message still fine
        clients[1].ping("small")
    finally:
        close_all(clients)


def test_reload_lower_max_connections_keeps_existing(gateway_factory):
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600, "max_connections": 100})
    clients = open_many(gw.port, 6)
    try:
        gen0 = gw.detailed()["config_generation"]
        reload_with(gw, max_connections=3)
        wait_for(lambda: all(w["config_generation"] == gen0 + 1
                             for w in gw.detailed()["workers"]), 1, what="applied")
        assert_quiet_and_alive(clients)
        extra = RawWS(gw.port, handshake=False)
        extra.send_request()
        assert extra.read_response() == 503
        extra.close()
        for c in clients[:4]:
            c.close_clean()
        wait_for(lambda: gw.detailed()["connections"]["active"] == 2, 2, what="2 left")
        again = RawWS(gw.port)
        again.ping()
        again.close_clean()
        assert_quiet_and_alive(clients[4:], 1)
    finally:
        close_all(clients)


def test_reload_connection_timeout_applies_to_open_connections(gateway_factory):
    gw = gateway_factory({"workers": 1, "heartbeat_interval": 600, "connection_timeout": 300})
    c = RawWS(gw.port)
    c.ping()
    before = gw.metrics()
    reload_with(gw, connection_timeout=1)
    code, _, _ = c.expect_close(timeout=4)
    assert code == 1001
    c.close()
    wait_for(lambda: metric(gw.metrics(), "websocket_disconnections_total", reason="timeout")
             - metric(before, "websocket_disconnections_total", reason="timeout") == 1, 2,
             what="timeout counted")


def test_reload_log_level_applies_in_workers(gateway_factory):
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600, "log_level": "info"})
    gen0 = gw.detailed()["config_generation"]
    reload_with(gw, log_level="warn")
    wait_for(lambda: all(w["config_generation"] == gen0 + 1
                         for w in gw.detailed()["workers"]), 1, what="applied")
    n_connect = sum(1 for l in gw.logs() if l.get("event") == "connect")
    clients = open_many(gw.port, 8)
    for c in clients:
        c.ping()
        c.close_clean()
    # an error-level event still shows
    bad = RawWS(gw.port, handshake=False)
    bad.sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: x\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert bad.read_response() == 400
    bad.close()
    wait_for(lambda: any(l.get("level") == "warn" and l.get("status") == 400 for l in gw.logs()),
             2, what="the warning logged")
    assert sum(1 for l in gw.logs() if l.get("event") == "connect") == n_connect


def test_reload_rereads_connection_pool_yaml(gateway_factory):
    gw = gateway_factory({"workers": 1, "heartbeat_interval": 600},
                         pool={"max_pool_size": 100, "pool_timeout": 30, "max_idle_time": 300})
    c = RawWS(gw.port)
    fail0, ok0 = reloads(gw, "failure"), reloads(gw, "success")
    gen0 = gw.detailed()["config_generation"]
    pool_path = os.path.join(str(gw.dir), "connection_pool.yaml")
    with open(pool_path, "w") as f:
        f.write("max_pool_size: 100\npool_timeout: 0\n")
    gw.signal(signal.SIGHUP)
    wait_for(lambda: reloads(gw, "failure") == fail0 + 1, 2, what="failure counted")
    errs = [l for l in gw.logs() if l.get("level") == "error"]
    assert len(errs) == 1 and f"{pool_path}:2" in json.dumps(errs[0]) and \
        "pool_timeout" in json.dumps(errs[0]), errs
    assert gw.detailed()["config_generation"] == gen0
    with open(pool_path, "w") as f:
        f.write("max_pool_size: 50\npool_timeout: 10\n")
    gw.signal(signal.SIGHUP)
    wait_for(lambda: reloads(gw, "success") == ok0 + 1, 2, what="success counted")
    assert gw.detailed()["config_generation"] == gen0 + 1
    c.ping()
    c.close_clean()


def test_reload_moves_metrics_port(gateway_factory):
    gw = gateway_factory({"workers": 1, "heartbeat_interval": 600})
    c = RawWS(gw.port)
    old = gw.metrics_port
    new = free_port()
    ok0 = reloads(gw, "success")
    reload_with(gw, metrics_port=new)

    def moved():
        try:
            return gw.http("/metrics", port=new, timeout=1)[0] == 200
        except OSError:
            return False
    wait_for(moved, 2, what="metrics on the new metrics_port")
    assert metric(gw.metrics(port=new), "websocket_config_reloads_total", result="success") == \
        ok0 + 1
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", old), timeout=1).close()
    c.ping()
    c.close_clean()
    gw.metrics_port = new


@pytest.mark.parametrize("text,key", [
    ("unknown: 1\n", "unknown"),
    ("max_message_size: 1\n", "max_message_size"),
    ("heartbeat_interval 5\n", "heartbeat_interval"),
], ids=["unknown-key", "bad-range", "syntax"])
def test_invalid_reload_is_counted_and_changes_nothing(gateway_factory, text, key):
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600})
    clients = open_many(gw.port, 6)
    try:
        gen0 = gw.detailed()["config_generation"]
        pids0 = sorted(gw.worker_pids())
        ok0, fail0 = reloads(gw, "success"), reloads(gw, "failure")
        good = open(gw.config_path).read()
        lines = good.splitlines()
        with open(gw.config_path, "w") as f:
            f.write(good + text)
        bad_line = len(lines) + 1
        gw.signal(signal.SIGHUP)
        wait_for(lambda: reloads(gw, "failure") == fail0 + 1, 2, what="failure counted")
        assert reloads(gw, "success") == ok0
        errs = [l for l in gw.logs() if l.get("level") == "error"]
        assert len(errs) == 1, errs
        text_err = json.dumps(errs[0])
        assert errs[0].get("event") == "reload"
        assert key in text_err and f"{gw.config_path}:{bad_line}" in text_err, text_err
        time.sleep(0.3)
        doc = gw.detailed()
        assert doc["config_generation"] == gen0 and doc["status"] == "ok"
        assert sorted(gw.worker_pids()) == pids0
        assert_quiet_and_alive(clients)
        c = RawWS(gw.port)
        c.ping()
        c.close_clean()
        # fixing the file and reloading again works
        with open(gw.config_path, "w") as f:
            f.write(good)
        gw.signal(signal.SIGHUP)
        wait_for(lambda: reloads(gw, "success") == ok0 + 1, 2, what="success counted")
        assert reloads(gw, "failure") == fail0 + 1
        assert_quiet_and_alive(clients, 2)
    finally:
        close_all(clients)


@pytest.mark.parametrize("change", ["port", "bind_address"])
def test_reload_refuses_restart_only_keys(gateway_factory, change):
    gw = gateway_factory({"workers": 1, "heartbeat_interval": 600, "max_message_size": 4096})
    c = RawWS(gw.port)
    gen0 = gw.detailed()["config_generation"]
    fail0 = reloads(gw, "failure")
    new = {"port": gw.port + 1 if gw.port < 65535 else gw.port - 1,
           "bind_address": "127.0.0.2"}[change]
    # a live setting alongside is not applied either: the reload is refused whole
    reload_with(gw, **{change: new, "max_message_size": 512})
    wait_for(lambda: reloads(gw, "failure") == fail0 + 1, 2, what="refusal counted")
    errs = [l for l in gw.logs() if l.get("event") == "reload" and l.get("level") == "error"]
    assert errs and change in json.dumps(errs[-1]), errs
    time.sleep(0.3)
    assert gw.detailed()["config_generation"] == gen0
    c.send_json({"type": "ping", "id": "z" * 1000})
    assert c.recv_json()["type"] == "pong"
    c.close_clean()
    if change == "port":
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", new), timeout=1).close()


def test_shrink_and_grow_workers_by_sighup(gateway_factory):
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600, "drain_window": 2,
                          "shutdown_timeout": 10})
    clients = open_many(gw.port, 24)
    try:
        by_slot = slots_of(gw, clients)
        assert set(by_slot) == {0, 1}
        keep, retired = by_slot[0], by_slot[1]
        old = workers_by_slot(gw.detailed())
        before = gw.metrics(port=gw.metrics_port)

        reload_with(gw, workers=1)
        after_ms = []
        for c in retired:
            code, _, msgs = c.expect_close(timeout=3)
            assert code == 1012, code
            assert len(msgs) == 1 and msgs[0][0] == OP_TEXT, msgs
            m = json.loads(msgs[0][1])
            assert m["type"] == "reconnect" and m["reason"] == "reload", m
            assert 0 <= m["after_ms"] <= 2000, m
            after_ms.append(m["after_ms"])
            assert c.wait_eof(timeout=3)
        if len(retired) >= 4:
            assert len(set(after_ms)) > 1, f"after_ms not spread: {after_ms}"
        wait_for(lambda: not pid_alive(old[1]["pid"]), 3, what="retired worker exits")
        doc = wait_for(lambda: (lambda d: d if len(d["workers"]) == 1 else None)(gw.detailed()),
                       2, what="one worker left")
        assert doc["workers"][0]["pid"] == old[0]["pid"] and doc["status"] == "ok", doc
        assert_quiet_and_alive(keep)
        mid = gw.metrics(port=gw.metrics_port)
        assert metric(mid, "websocket_disconnections_total", reason="reload") - \
            metric(before, "websocket_disconnections_total", reason="reload") == len(retired)
        assert metric(mid, "websocket_disconnections_total", reason="worker_exit") == \
            metric(before, "websocket_disconnections_total", reason="worker_exit")
        assert metric(mid, "websocket_worker_restarts_total") == \
            metric(before, "websocket_worker_restarts_total")
        assert metric(mid, "websocket_workers", state="running") == 1
        assert metric(mid, "websocket_connections_active") == len(keep)
        assert_no_counter_went_back(before, mid)
        assert gw.proc.poll() is None

        # and back to 2: a new worker in slot 1 that takes connections
        reload_with(gw, workers=2)
        doc = wait_for(lambda: (lambda d: d if len(d["workers"]) == 2 and all(
            w["state"] == "running" for w in d["workers"]) else None)(gw.detailed()), 2,
            what="two workers running")
        slot1 = workers_by_slot(doc)[1]
        assert slot1["pid"] != old[1]["pid"] and pid_alive(slot1["pid"])
        fresh = open_many(gw.port, 24)
        try:
            assert 1 in slots_of(gw, fresh)
            for i, c in enumerate(fresh):
                c.ping(i)
        finally:
            close_all(fresh)
        assert_quiet_and_alive(keep, 3)
        assert_no_counter_went_back(mid, gw.metrics(port=gw.metrics_port))
    finally:
        close_all(clients)


def test_shrink_new_connections_are_served_while_the_retiree_drains(gateway_factory):
    """While a retired worker drains, new clients must not land in its
    listen queue (which nobody accepts from any more)."""
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600, "drain_window": 1,
                          "shutdown_timeout": 10})
    clients = open_many(gw.port, 16)
    try:
        by_slot = slots_of(gw, clients)
        assert set(by_slot) == {0, 1}
        reload_with(gw, workers=1)
        # the retiree's clients get reconnect + 1012 and do not answer the
        # close: the retiree lingers ~2 s waiting for their close frames
        for c in by_slot[1]:
            code, _, _ = c.expect_close(timeout=3, reply=False)
            assert code == 1012
        retiree = [w for w in gw.detailed()["workers"] if w["slot"] == 1]
        assert retiree and retiree[0]["state"] == "draining", retiree
        fresh = []
        try:
            for _ in range(16):
                fresh.append(RawWS(gw.port, timeout=1))
            for c in fresh:
                c.ping()
        finally:
            close_all(fresh)
        assert len(fresh) == 16
    finally:
        close_all(clients)


def test_grow_while_retiree_still_drains_brings_the_slot_back(gateway_factory):
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600, "drain_window": 1,
                          "shutdown_timeout": 10})
    clients = open_many(gw.port, 16)
    try:
        by_slot = slots_of(gw, clients)
        assert set(by_slot) == {0, 1}
        old1 = workers_by_slot(gw.detailed())[1]["pid"]
        reload_with(gw, workers=1)
        for c in by_slot[1]:
            code, _, _ = c.expect_close(timeout=3, reply=False)  # retiree lingers
            assert code == 1012
        reload_with(gw, workers=2)  # back to 2 before the retiree has exited
        doc = wait_for(lambda: (lambda d: d if sum(w["state"] == "running" for w in d["workers"])
                                == 2 else None)(gw.detailed(port=gw.metrics_port)), 5,
                       what="two running workers again")
        assert workers_by_slot(doc)[1]["pid"] != old1
        assert doc["status"] == "ok", doc
        time.sleep(0.5)
        assert gw.detailed(port=gw.metrics_port)["status"] == "ok"
    finally:
        close_all(clients)


# -- drain -----------------------------------------------------------------

def test_sigterm_drains_50_clients_with_jittered_reconnect(gateway_factory):
    drain_window, shutdown_timeout, n = 3, 5, 50
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600, "drain_window": drain_window,
                          "shutdown_timeout": shutdown_timeout})
    workers = gw.worker_pids()

    async def scenario():
        conns = await asyncio.gather(*[
            websockets.connect(gw.ws_url, ping_interval=None, open_timeout=10 * SLOW,
                               close_timeout=5 * SLOW) for _ in range(n)])

        async def drain(ws):
            got = []
            try:
                for _ in range(10):
                    got.append(await ws.recv())
            except websockets.ConnectionClosed:
                pass
            return got, ws.close_code

        await asyncio.gather(*[c.send(json.dumps({"type": "ping", "id": i}))
                               for i, c in enumerate(conns)])
        pongs = await asyncio.gather(*[c.recv() for c in conns])
        assert all(json.loads(p)["type"] == "pong" for p in pongs)
        tasks = [asyncio.create_task(drain(c)) for c in conns]
        t0 = time.monotonic()
        os.kill(gw.proc.pid, signal.SIGTERM)
        results = await asyncio.wait_for(asyncio.gather(*tasks), (shutdown_timeout + 5) * SLOW)
        return results, t0

    results, t0 = asyncio.run(scenario())
    rc = gw.proc.wait(timeout=(shutdown_timeout + 1) * SLOW)
    elapsed = time.monotonic() - t0
    assert rc == 0, gw.stderr()
    assert elapsed <= (shutdown_timeout + 1) * SLOW, elapsed

    after = []
    for msgs, code in results:
        assert code == 1001, (code, msgs)
        assert len(msgs) == 1, msgs
        m = json.loads(msgs[0])
        assert m["type"] == "reconnect" and m["reason"] == "shutdown", m
        assert isinstance(m["after_ms"], int) and 0 <= m["after_ms"] <= drain_window * 1000, m
        after.append(m["after_ms"])
    assert len(set(after)) > n // 4, f"after_ms not spread over the window: {sorted(after)}"
    assert max(after) - min(after) >= drain_window * 1000 // 4, sorted(after)
    wait_for(lambda: not any(pid_alive(p) for p in workers), 1, what="workers gone")
    assert not pids_with_arg(gw.config_path)
    assert not os.path.exists(shm_path(gw.port))
    disconnects = [l for l in gw.logs() if l.get("event") == "disconnect"]
    assert len(disconnects) == n and all(l["reason"] == "shutdown" for l in disconnects), \
        {l["reason"] for l in disconnects}


def assert_refused_or_answered(port, tries=4):
    """New connections get a refusal, a reset or an HTTP answer within 2 s,
    never silence (a listen queue that nobody accepts from)."""
    for _ in range(tries):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2 * SLOW)
        except ConnectionRefusedError:
            continue
        try:
            s.settimeout(2 * SLOW)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                data = s.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                data = b"<reset>"
            except socket.timeout:
                data = None
            assert data is not None, \
                "a connection made during the drain got no answer and no refusal within 2 s"
        finally:
            s.close()


def _idle_tcp(port, n):
    socks = []
    for _ in range(n):
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW))
    return socks


def test_drain_health_is_503_and_new_connections_are_not_left_hanging(gateway_factory):
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600, "handshake_timeout": 60,
                          "shutdown_timeout": 60})
    # idle HTTP connections opened before the drain (on both workers, very
    # likely) keep the drain going and then ask for /health
    idle = _idle_tcp(gw.port, 8)
    try:
        time.sleep(0.3)
        gw.signal(signal.SIGTERM)
        wait_for(lambda: gw.http("/health", port=gw.metrics_port)[0] == 503, 2,
                 what="master /health 503")
        status, body = gw.http("/health/detailed", port=gw.metrics_port)
        assert status == 503 and json.loads(body)["status"] == "draining", body
        time.sleep(0.2)
        # a client arriving during the drain is refused or answered at once,
        # never left waiting in a listen queue nobody accepts from
        assert_refused_or_answered(gw.port)

        for s in idle:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        for s in idle:
            data = b""
            s.settimeout(3 * SLOW)
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            assert data.startswith(b"HTTP/1.1 503"), data
            assert json.loads(data.split(b"\r\n\r\n", 1)[1]) == {"status": "draining"}, data
    finally:
        for s in idle:
            s.close()
    assert gw.proc.wait(timeout=5 * SLOW) == 0


def test_drain_ends_at_shutdown_timeout(gateway_factory):
    shutdown_timeout = 2
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600, "handshake_timeout": 60,
                          "shutdown_timeout": shutdown_timeout})
    idle = _idle_tcp(gw.port, 6)
    c = RawWS(gw.port)
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        code, _, msgs = c.expect_close()
        assert code == 1001 and json.loads(msgs[0][1])["reason"] == "shutdown"
        time.sleep(0.5)
        assert gw.proc.poll() is None, "the idle connections should hold the drain"
        rc = gw.proc.wait(timeout=(shutdown_timeout + 1) * SLOW + 1)
        elapsed = time.monotonic() - t0
        assert rc == 0
        assert elapsed <= (shutdown_timeout + 1) * SLOW, elapsed
    finally:
        for s in idle:
            s.close()
        c.close()
    assert not pids_with_arg(gw.config_path)
    assert not os.path.exists(shm_path(gw.port))


def test_second_sigterm_stops_at_once(gateway_factory):
    gw = gateway_factory({"workers": 2, "heartbeat_interval": 600, "handshake_timeout": 120,
                          "shutdown_timeout": 120})
    workers = gw.worker_pids()
    idle = _idle_tcp(gw.port, 6)
    try:
        time.sleep(0.3)
        gw.signal(signal.SIGTERM)
        wait_for(lambda: gw.http("/health", port=gw.metrics_port)[0] == 503, 2,
                 what="draining")
        time.sleep(0.5)
        assert gw.proc.poll() is None, "the idle connections should hold the drain"
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        rc = gw.proc.wait(timeout=3 * SLOW)
        assert time.monotonic() - t0 < 2 * SLOW
    finally:
        for s in idle:
            s.close()
    assert rc >= 0, f"master died of signal {-rc}"
    wait_for(lambda: not any(pid_alive(p) for p in workers), 1, what="workers gone")
    assert not pids_with_arg(gw.config_path)
    assert not os.path.exists(shm_path(gw.port))
    assert any("second" in l.get("message", "") for l in gw.logs() if l.get("event") == "shutdown")


def test_sighup_under_stream_traffic_loses_nothing(gateway_factory):
    """Issue 4's reload under live traffic: 50 subscribers on both workers,
    a publisher streaming, SIGHUP changing live settings mid-stream: no
    connection closes, every subscriber gets every seq once, in order, and
    the new settings are in force afterwards."""
    # The subscribers read only once publishing is over (3 s, longer in the
    # sanitized build): send_timeout must not judge them slow meanwhile.
    gw = gateway_factory({"workers": 2, "max_message_size": 65536, "heartbeat_interval": 600,
                          "environment": "before", "send_timeout": 120})
    stream = "patient/reload/ecg"

    async def go():
        subs = []
        for i in range(50):
            ws = await websockets.connect(gw.ws_url, open_timeout=10 * SLOW)
            await ws.send(json.dumps({"type": "subscribe", "stream": stream, "id": i}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            subs.append(ws)
        pub = await websockets.connect(gw.ws_url)
        acked = []
        t0 = time.monotonic()
        reloaded = False
        while time.monotonic() - t0 < 3 * SLOW:
            if not reloaded and time.monotonic() - t0 > 1 * SLOW:
                cfg = dict(gw.config, max_message_size=2048, heartbeat_interval=300,
                           environment="after")
                gw.write_config(cfg)
                gw.signal(signal.SIGHUP)
                reloaded = True
            await pub.send(json.dumps({"type": "publish", "stream": stream, "id": len(acked),
                                       "data": {"n": len(acked)}}))
            reply = json.loads(await asyncio.wait_for(pub.recv(), 5 * SLOW))
            assert reply["type"] == "ack", reply
            acked.append(reply["seq"])
            await asyncio.sleep(0.002)
        assert acked == list(range(1, len(acked) + 1))
        for ws in subs:
            seqs = []
            while len(seqs) < len(acked):
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10 * SLOW))
                assert msg["type"] == "message", msg
                seqs.append(msg["seq"])
            assert seqs == acked
        # The lowered max_message_size holds on an old connection: 1009.
        await pub.send(json.dumps({"type": "ping", "id": "x" * 4000}))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(pub.recv(), 5 * SLOW)
        assert closed.value.rcvd.code == 1009
        for ws in subs:
            await ws.close()
    asyncio.run(go())
    samples = gw.metrics()
    assert metric(samples, "websocket_config_reloads_total", result="success") == 1
    assert metric(samples, "websocket_disconnections_total", environment="after",
                  reason="too_large") == 1
    for reason in ("reload", "error", "protocol_error", "timeout", "slow_consumer"):
        assert metric(samples, "websocket_disconnections_total", reason=reason) == 0, reason
