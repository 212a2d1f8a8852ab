"""tools/wsstat against a live gateway: what it reads from the shared segment
(read-only) must be what /metrics renders from the same segment, and it must
say clearly when there is no gateway to watch.

The binary is $WSGATE_BUILD/tools/wsstat (tools/test sets WSGATE_BUILD),
else tools/wsstat beside $WSGATE_BIN.
"""
import asyncio
import json
import os
import subprocess

import websockets

from conftest import SLOW, WSGATE_BIN, free_port, metric

REASONS = ["client_close", "timeout", "protocol_error", "too_large", "slow_consumer",
           "shutdown", "reload", "worker_exit", "error"]
ERROR_TYPES = ["handshake", "capacity", "timeout", "auth", "origin", "tls", "io"]


def wsstat_bin():
    build = os.environ.get("WSGATE_BUILD") or os.path.dirname(os.path.abspath(WSGATE_BIN))
    path = os.path.join(build, "tools", "wsstat")
    assert os.access(path, os.X_OK), f"wsstat not built at {path}"
    return path


def wsstat(*args, timeout=20):
    return subprocess.run([wsstat_bin(), *args], capture_output=True, text=True,
                          timeout=timeout * SLOW)


def wsstat_json(port, *extra):
    out = wsstat("-p", str(port), "-1", "-j", *extra)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1, out.stdout
    return json.loads(lines[0])


async def open_clients(url, n, pings):
    """n connections, each having had `pings` app-level ping round trips."""
    clients = [await websockets.connect(url) for _ in range(n)]
    for c in clients:
        for i in range(pings):
            await c.send(json.dumps({"type": "ping", "id": i}))
            reply = json.loads(await c.recv())
            assert reply["type"] == "pong" and reply["id"] == i
    return clients


def test_wsstat_json_matches_metrics(gateway):
    async def scenario():
        clients = await open_clients(gateway.ws_url, 2, pings=3)
        try:
            # One stream message delivered, for the message latency.
            await clients[0].send(json.dumps({"type": "subscribe", "stream": "w/s"}))
            assert json.loads(await clients[0].recv())["type"] == "subscribed"
            await clients[1].send(json.dumps({"type": "publish", "stream": "w/s", "data": 1}))
            assert json.loads(await clients[0].recv())["type"] == "message"
            # A connection that came and went, so a disconnection is counted.
            gone = await websockets.connect(gateway.ws_url)
            await gone.close()
            await asyncio.sleep(0.2 * SLOW)
            # Nothing moves between the two reads: the clients are idle.
            stat = wsstat_json(gateway.port)
            samples = gateway.metrics()
            return stat, samples
        finally:
            for c in clients:
                await c.close()

    stat, m = asyncio.run(scenario())

    assert stat["port"] == gateway.port
    assert stat["environment"] == "test"
    assert stat["master_pid"] == gateway.proc.pid
    assert stat["interval_s"] == 0.0
    assert stat["connections"] == 2
    assert stat["connections"] == metric(m, "websocket_connections_active")
    assert stat["connections_total"] == 3
    assert stat["connections_total"] == metric(m, "websocket_connections_total")
    assert stat["disconnections"]["client_close"] == 1
    for reason in REASONS:
        assert stat["disconnections"][reason] == \
            metric(m, "websocket_disconnections_total", reason=reason), reason
    for error_type in ERROR_TYPES:
        assert stat["connection_errors"][error_type] == \
            metric(m, "websocket_connection_errors_total", error_type=error_type), error_type
    assert stat["messages_received"] == 8
    assert stat["messages_received"] == metric(m, "websocket_messages_received_total")
    assert stat["messages_sent"] == 8
    assert stat["messages_sent"] == metric(m, "websocket_messages_sent_total")
    assert stat["latency_count"] == metric(m, "websocket_message_latency_seconds_count")
    assert stat["bytes_received"] == metric(m, "websocket_bytes_received_total")
    assert stat["bytes_sent"] == metric(m, "websocket_bytes_sent_total")
    assert stat["config_reloads"]["success"] == metric(m, "websocket_config_reloads_total",
                                                       result="success")
    assert stat["config_reloads"]["failure"] == metric(m, "websocket_config_reloads_total",
                                                       result="failure")
    assert stat["worker_restarts"] == metric(m, "websocket_worker_restarts_total")
    assert stat["max_connections"] == metric(m, "websocket_max_connections")
    assert stat["latency_count"] == 1
    # The one message was delivered within the histogram's range.
    assert stat["latency_p50_s"] is not None and stat["latency_p99_s"] is not None
    assert 0 < stat["latency_p50_s"] <= stat["latency_p99_s"]

    # Per worker: the same slots, pids, states and connections as the
    # gateway's own views.
    detailed = gateway.detailed()
    assert stat["config_generation"] == detailed["config_generation"]
    by_slot = {w["slot"]: w for w in detailed["workers"]}
    assert sorted(w["slot"] for w in stat["workers"]) == sorted(by_slot)
    assert len(stat["workers"]) == 2
    for w in stat["workers"]:
        assert w["pid"] == by_slot[w["slot"]]["pid"]
        assert w["state"] == by_slot[w["slot"]]["state"] == "running"
        assert w["restarts"] == by_slot[w["slot"]]["restarts"]
        assert w["connections"] == metric(m, "websocket_connections_active",
                                          worker=str(w["slot"]))
    assert sum(w["connections"] for w in stat["workers"]) == 2
    assert sum(w["messages_received"] for w in stat["workers"]) == 8
    assert metric(m, "websocket_workers", state="running") == 2


def test_wsstat_refreshes_with_rates_over_the_interval(gateway):
    async def scenario():
        clients = await open_clients(gateway.ws_url, 2, pings=1)
        try:
            proc = await asyncio.create_subprocess_exec(
                wsstat_bin(), "-p", str(gateway.port), "-j", "-n", "3", "-i", "0.3",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            # Traffic while wsstat watches.
            for i in range(40):
                await clients[i % 2].send(json.dumps({"type": "ping", "id": i}))
                await clients[i % 2].recv()
                await asyncio.sleep(0.01)
            out, err = await asyncio.wait_for(proc.communicate(), 20 * SLOW)
            return proc.returncode, out.decode(), err.decode()
        finally:
            for c in clients:
                await c.close()

    rc, out, err = asyncio.run(scenario())
    assert rc == 0, err
    views = [json.loads(line) for line in out.splitlines()]
    assert len(views) == 3
    assert views[0]["interval_s"] == 0.0
    for before, after in zip(views, views[1:]):
        assert 0.2 < after["interval_s"] < 5 * SLOW
        assert after["messages_received"] >= before["messages_received"]
        assert after["msgs_in_per_s"] >= 0 and after["msgs_out_per_s"] >= 0
        moved = after["messages_received"] - before["messages_received"]
        assert abs(after["msgs_in_per_s"] * after["interval_s"] - moved) < 1.0
    assert views[-1]["messages_received"] >= 2


def test_wsstat_text_view(gateway):
    out = wsstat("-p", str(gateway.port), "-1")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"wsgate on port {gateway.port}" in text
    assert "SLOT" in text and "MSG/S IN" in text and "P99" in text
    for w in gateway.detailed()["workers"]:
        assert str(w["pid"]) in text
    assert "disconnections: client_close" in text
    assert "\033[" not in text  # -1 never clears the screen


def test_wsstat_without_gateway_fails_clearly():
    port = free_port()
    out = wsstat("-p", str(port), "-1", "-j")
    assert out.returncode != 0
    assert out.stdout == ""
    assert f"no gateway on port {port}" in out.stderr
    assert f"/wsgate-{port}" in out.stderr


def test_wsstat_rejects_bad_arguments():
    for args in (["-p", "0"], ["-p", "x"], ["-i", "0"], ["-n", "-1"], ["extra"]):
        out = wsstat(*args)
        assert out.returncode == 2, args
        assert "wsstat:" in out.stderr or "usage:" in out.stderr, args
