"""Processes (issue 2): the master forks workers that share the port and the
segment; connections spread over them; SIGTERM/SIGINT stop everything and
remove the shared-memory object; the workers die with the master; workers: 0
means one per CPU; the lifecycle is logged."""
import asyncio
import json
import os
import signal
import time

import pytest
import websockets

from conftest import SLOW, metric
from gwutil import RawWS, close_all, open_many, pid_alive, pids_with_arg, shm_path, wait_for


def test_200_connections_spread_over_4_workers(gateway_factory):
    gw = gateway_factory({"workers": 4})
    pids_before = sorted(w["pid"] for w in gw.detailed()["workers"])
    n = 200

    async def scenario():
        loop = asyncio.get_running_loop()
        conns = await asyncio.gather(*[
            websockets.connect(gw.ws_url, ping_interval=None, open_timeout=20 * SLOW,
                               close_timeout=5 * SLOW)
            for _ in range(n)])
        try:
            def settled():
                doc = gw.detailed()
                return doc if doc["connections"]["active"] == n else None
            doc = await loop.run_in_executor(None, lambda: wait_for(settled, 5, what="200 active"))
            samples = await loop.run_in_executor(None, gw.metrics)
            admin = await loop.run_in_executor(None, lambda: gw.metrics(port=gw.metrics_port))
            # every connection still works
            await asyncio.gather(*[c.send(json.dumps({"type": "ping", "id": i}))
                                   for i, c in enumerate(conns)])
            pongs = await asyncio.wait_for(asyncio.gather(*[c.recv() for c in conns]), 20 * SLOW)
            return doc, samples, admin, pongs
        finally:
            await asyncio.gather(*[c.close() for c in conns], return_exceptions=True)

    doc, samples, admin, pongs = asyncio.run(scenario())
    assert [json.loads(p)["id"] for p in pongs] == list(range(n))

    workers = doc["workers"]
    assert len(workers) == 4, doc
    assert sorted(w["pid"] for w in workers) == pids_before, "a worker was replaced"
    per_worker = {w["slot"]: w["connections"] for w in workers}
    assert sum(per_worker.values()) == n, per_worker
    assert all(c > 0 for c in per_worker.values()), f"a worker holds no connection: {per_worker}"
    assert doc["connections"]["active"] == n

    for s in (samples, admin):
        by_slot = {dict(ls)["worker"]: v for (name, ls), v in s.items()
                   if name == "websocket_connections_active"}
        assert sum(by_slot.values()) == n, by_slot
        assert len(by_slot) == 4 and all(v > 0 for v in by_slot.values()), by_slot
        assert {int(k): int(v) for k, v in by_slot.items()} == per_worker

    # all closed: the gauge returns to 0
    wait_for(lambda: metric(gw.metrics(), "websocket_connections_active") == 0, 5,
             what="websocket_connections_active back to 0")
    assert gw.detailed()["connections"]["active"] == 0


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_master_and_workers_and_removes_shm(gateway_factory, signo):
    gw = gateway_factory({"workers": 3})
    workers = [w["pid"] for w in gw.detailed()["workers"]]
    assert len(workers) == 3
    assert sorted(gw.worker_pids()) == sorted(workers)
    assert os.path.exists(shm_path(gw.port))
    clients = open_many(gw.port, 6)
    try:
        gw.signal(signo)
        rc = gw.proc.wait(timeout=10 * SLOW)
    finally:
        close_all(clients)
    assert rc == 0, gw.stderr()
    wait_for(lambda: not any(pid_alive(p) for p in workers), 2, what="workers gone")
    assert not pids_with_arg(gw.config_path)
    assert not os.path.exists(shm_path(gw.port))
    events = [l.get("event") for l in gw.logs()]
    assert "shutdown" in events


def test_sigkill_master_takes_workers_down(gateway_factory):
    gw = gateway_factory({"workers": 3})
    workers = [w["pid"] for w in gw.detailed()["workers"]]
    assert len(workers) == 3 and all(pid_alive(p) for p in workers)
    try:
        gw.proc.kill()
        gw.proc.wait(timeout=5)
        t0 = time.monotonic()
        wait_for(lambda: not any(pid_alive(p) for p in workers), 2,
                 what="workers to die with the master (PR_SET_PDEATHSIG)")
        assert time.monotonic() - t0 < 2 * SLOW
        assert not pids_with_arg(gw.config_path)
        # nothing accepts on the port any more
        with pytest.raises(OSError):
            RawWS(gw.port, timeout=1)
    finally:
        for p in workers:
            if pid_alive(p):
                os.kill(p, signal.SIGKILL)
        # a SIGKILLed master cannot remove its segment; the next start does
        try:
            os.unlink(shm_path(gw.port))
        except FileNotFoundError:
            pass


def test_restart_after_sigkill_reuses_stale_shm(gateway_factory):
    gw = gateway_factory({"workers": 1})
    gw.proc.kill()
    gw.proc.wait(timeout=5)
    wait_for(lambda: not pids_with_arg(gw.config_path), 3, what="old tree gone")
    assert os.path.exists(shm_path(gw.port)), "expected the killed master's object to remain"
    gw.start()
    c = RawWS(gw.port)
    c.ping()
    c.close_clean()
    assert gw.stop() == 0
    assert not os.path.exists(shm_path(gw.port))


def test_workers_0_means_one_per_cpu(gateway_factory):
    gw = gateway_factory({"workers": 0})
    ncpu = os.cpu_count()
    doc = gw.detailed()
    running = [w for w in doc["workers"] if w["state"] == "running"]
    assert len(running) == ncpu, doc
    assert len(gw.worker_pids()) == ncpu
    samples = gw.metrics()
    assert metric(samples, "websocket_workers", state="running") == ncpu


def test_workers_0_respects_the_cpu_affinity(gateway_factory):
    # A pod limited to fewer CPUs than the node has must not start a worker
    # per node CPU: one CPU in the affinity mask -> one worker.
    gw = gateway_factory({"workers": 0}, start=False)
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(old)})
    try:
        gw.start(wait=False)
    finally:
        os.sched_setaffinity(0, old)
    gw.config["workers"] = 1
    gw.wait_ready()
    doc = gw.detailed()
    assert len([w for w in doc["workers"] if w["state"] == "running"]) == 1, doc
    assert len(gw.worker_pids()) == 1


def test_lifecycle_is_logged_as_json_lines(gateway_factory):
    gw = gateway_factory({"workers": 2, "environment": "logtest"})
    c = RawWS(gw.port)
    c.ping()
    c.close_clean()
    wait_for(lambda: any(l.get("event") == "disconnect" for l in gw.logs()), 3,
             what="disconnect log line")
    assert gw.stop() == 0
    lines = [l for l in gw.stderr().splitlines() if l.strip()]
    logs = gw.logs()
    assert len(logs) == len(lines), "every stderr line is a JSON object:\n" + gw.stderr()
    for l in logs:
        assert "ts" in l and "level" in l and "event" in l, l
    ev = [l["event"] for l in logs]
    start = next(l for l in logs if l["event"] == "start")
    assert start.get("environment") == "logtest"
    assert "listen" in ev
    spawns = [l for l in logs if l["event"] == "worker_spawn"]
    assert len(spawns) == 2, spawns
    assert ev.count("worker_exit") == 2
    connect = next(l for l in logs if l["event"] == "connect")
    disconnect = next(l for l in logs if l["event"] == "disconnect")
    assert connect["conn"] == disconnect["conn"]
    assert disconnect["reason"] == "client_close" and disconnect["code"] == 1000, disconnect
    assert "remote" in disconnect and "duration_s" in disconnect
    assert "ping" not in json.dumps(connect) + json.dumps(disconnect)


def test_master_serves_no_websocket_traffic(gateway_factory):
    gw = gateway_factory({"workers": 1})
    # The master's metrics_port is not a WebSocket endpoint.
    status, _ = gw.http("/ws", port=gw.metrics_port)
    assert status == 404
    status, body = gw.http("/health", port=gw.metrics_port)
    assert status == 200 and json.loads(body)["status"] == "ok"
