"""Metrics (issue 3): /metrics on port 8003 and on metrics_port, checked by
promtool, against the metrics table of docs/ARCHITECTURE.md, counter by counter after scripted
traffic, and end to end through a real Prometheus running the runbook's
queries."""
import json
import math
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

import runbook
from conftest import SLOW, free_port, metric, parse_metrics
from gwutil import OP_TEXT, RawWS, close_all, wait_for

ENV = "qa-eu.1"

REASONS = ["client_close", "timeout", "protocol_error", "too_large", "slow_consumer",
           "shutdown", "reload", "worker_exit", "error"]
ERROR_TYPES = ["handshake", "capacity", "timeout", "auth", "origin", "tls", "io"]
RESULTS = ["success", "failure"]
STATES = ["starting", "running", "draining", "dead"]
BUCKETS = ["0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
           "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]

# docs/ARCHITECTURE.md's metrics table (the original design's rows): name -> (type, label name or None)
TABLE = {
    "websocket_connections_active": ("gauge", "worker"),
    "websocket_connections_total": ("counter", None),
    "websocket_disconnections_total": ("counter", "reason"),
    "websocket_connection_errors_total": ("counter", "error_type"),
    "websocket_message_latency_seconds": ("histogram", None),
    "websocket_messages_received_total": ("counter", None),
    "websocket_messages_sent_total": ("counter", None),
    "websocket_bytes_received_total": ("counter", None),
    "websocket_bytes_sent_total": ("counter", None),
    "websocket_workers": ("gauge", "state"),
    "websocket_worker_restarts_total": ("counter", None),
    "websocket_config_reloads_total": ("counter", "result"),
    "websocket_streams_active": ("gauge", None),
    "websocket_max_connections": ("gauge", None),
    "process_cpu_seconds_total": ("counter", None),
    "process_resident_memory_bytes": ("gauge", None),
    "process_open_fds": ("gauge", None),
    "process_max_fds": ("gauge", None),
    "process_start_time_seconds": ("gauge", None),
}


def raw_metrics(gw, port=None):
    status, text = gw.http("/metrics", port=port)
    assert status == 200
    return text


def promtool_check(text):
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=30)
    return out.returncode, (out.stdout + out.stderr).strip()


def counters(samples):
    """Every monotonic sample: *_total, histogram buckets/count/sum; the
    master's own process_* excluded (they move between two scrapes)."""
    return {k: v for k, v in samples.items()
            if not k[0].startswith("process_") and
            (k[0].endswith("_total") or k[0].endswith("_bucket") or k[0].endswith("_count")
             or k[0].endswith("_sum"))}


def websocket_samples(samples):
    return {k: v for k, v in samples.items() if not k[0].startswith("process_")}


def delta(before, after, name, **labels):
    return metric(after, name, **labels) - metric(before, name, **labels)


def test_promtool_accepts_live_output_on_both_ports(gateway_factory):
    gw = gateway_factory({"workers": 2, "environment": ENV})
    # some traffic first, so counters and the histogram are not all zero
    c = RawWS(gw.port)
    for i in range(3):
        c.ping(i)
    for port in (gw.port, gw.metrics_port):
        text = raw_metrics(gw, port)
        rc, out = promtool_check(text)
        assert rc == 0 and out == "", f"promtool on port {port}:\n{out}"
    c.close_clean()
    # content type of the text format 0.0.4
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics",
                                timeout=5 * SLOW) as r:
        ctype = r.headers["Content-Type"]
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype


def test_every_design_series_present_with_environment(gateway_factory):
    gw = gateway_factory({"workers": 2, "environment": ENV, "max_connections": 777})
    for port in (gw.port, gw.metrics_port):
        text = raw_metrics(gw, port)
        types = {}
        helps = set()
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, typ = line.split(" ", 3)
                types[name] = typ
            elif line.startswith("# HELP "):
                helps.add(line.split(" ", 3)[2])
        for name, (typ, _) in TABLE.items():
            assert types.get(name) == typ, f"{name}: TYPE {types.get(name)}, want {typ}"
            assert name in helps, f"{name} has no HELP"
        samples = parse_metrics(text)
        for (name, labels), _ in samples.items():
            assert dict(labels).get("environment") == ENV, (name, dict(labels))
        names = {n for n, _ in samples}
        for name, (typ, label) in TABLE.items():
            if typ == "histogram":
                for suffix in ("_bucket", "_sum", "_count"):
                    assert name + suffix in names, name + suffix
            else:
                assert name in names, name
            if label:
                for (n, ls), _ in samples.items():
                    if n == name:
                        assert label in dict(ls), (n, dict(ls))
        assert metric(samples, "websocket_max_connections") == 777
        assert metric(samples, "websocket_workers", state="running") == 2
        slots = {dict(ls)["worker"] for (n, ls) in samples if n == "websocket_connections_active"}
        assert slots == {"0", "1"}, slots
        assert metric(samples, "process_max_fds") > 0
        assert metric(samples, "process_open_fds") > 0
        assert metric(samples, "process_resident_memory_bytes") > 0
        start = metric(samples, "process_start_time_seconds")
        assert abs(start - time.time()) < 120, start


def test_every_label_value_present_at_zero_from_first_scrape(gateway_factory):
    gw = gateway_factory({"workers": 2, "environment": ENV}, start=False)
    gw.start(wait=False)
    # the very first successful scrape, from the master, as early as possible
    text = wait_for(lambda: _try_scrape(gw, gw.metrics_port), 10, interval=0.01,
                    what="first scrape")
    gw.wait_ready()
    for t in (text, raw_metrics(gw)):
        s = parse_metrics(t)
        for r in REASONS:
            assert metric(s, "websocket_disconnections_total", reason=r) == 0, r
        for e in ERROR_TYPES:
            assert metric(s, "websocket_connection_errors_total", error_type=e) == 0, e
        for r in RESULTS:
            assert metric(s, "websocket_config_reloads_total", result=r) == 0, r
        for st in STATES:
            metric(s, "websocket_workers", state=st)  # present
        for le in BUCKETS:
            assert metric(s, "websocket_message_latency_seconds_bucket", le=le) == 0, le
        assert metric(s, "websocket_message_latency_seconds_count") == 0
        assert metric(s, "websocket_message_latency_seconds_sum") == 0
        assert metric(s, "websocket_worker_restarts_total") == 0
        assert metric(s, "websocket_connections_total") == 0
        for n in ("messages_received", "messages_sent", "bytes_received", "bytes_sent"):
            assert metric(s, f"websocket_{n}_total") == 0, n
        assert metric(s, "websocket_connections_active") == 0
        # exactly the label values docs/ARCHITECTURE.md lists, no more
        reasons = {dict(ls)["reason"] for (n, ls) in s if n == "websocket_disconnections_total"}
        assert reasons == set(REASONS)
        types = {dict(ls)["error_type"] for (n, ls) in s
                 if n == "websocket_connection_errors_total"}
        assert types == set(ERROR_TYPES)


def _try_scrape(gw, port):
    try:
        status, text = gw.http("/metrics", port=port, timeout=1)
    except OSError:
        return None
    return text if status == 200 else None


def test_histogram_is_cumulative_and_consistent(gateway_factory):
    gw = gateway_factory({"workers": 1, "environment": ENV})
    c = RawWS(gw.port)
    for i in range(20):
        c.ping(i)
    c.close_clean()
    name = "websocket_request_duration_seconds"
    s = wait_for(lambda: (lambda m: m if metric(m, f"{name}_count", type="ping") >= 20
                          else None)(gw.metrics()), 3, what="20 observations")
    values = [metric(s, f"{name}_bucket", type="ping", le=le) for le in BUCKETS]
    assert values == sorted(values), values
    assert values[-1] == metric(s, f"{name}_count", type="ping") == 20
    # replies are not stream messages
    assert metric(s, "websocket_message_latency_seconds_count") == 0
    total = metric(s, f"{name}_sum", type="ping")
    assert 0 < total < 20 * 10, total
    # observations sit in buckets consistent with the sum: mean <= the
    # bound of the bucket holding everything
    first_full = next(float(le) for le, v in zip(BUCKETS, values) if v == 20)
    assert total / 20 <= first_full


def test_counters_move_exactly_with_scripted_traffic(gateway_factory):
    """N clean closes, a refusal at max_connections, a protocol error, an
    oversize message, a timeout: each counter moves by exactly its amount
    with the right label; the gauge returns to 0; both ports agree."""
    limit = 5
    timeout_s = int(math.ceil(2 * SLOW))
    gw = gateway_factory({"workers": 2, "environment": ENV, "max_connections": limit,
                          "max_message_size": 256, "connection_timeout": timeout_s,
                          "heartbeat_interval": 600})
    before = gw.metrics()
    assert metric(before, "websocket_connections_active") == 0

    # 1. `limit` clients fill the replica; each pings; one more is refused
    clients = []
    sent_bytes = 0
    try:
        for i in range(limit):
            clients.append(RawWS(gw.port))
        wait_for(lambda: metric(gw.metrics(), "websocket_connections_active") == limit, 3,
                 what="limit connections active")
        refused = RawWS(gw.port, handshake=False)
        refused.send_request()
        assert refused.read_response() == 503
        assert "retry-after" in refused.headers, refused.headers
        refused.close()
        pong_bytes = 0
        for i, c in enumerate(clients):
            sent_bytes += len(RawWS.frame(OP_TEXT, json.dumps({"type": "ping", "id": i})))
            pong = c.ping(i)
            pong_bytes += len(json.dumps(pong, separators=(",", ":")))
        # the request-duration histogram counts each pong reply: one more per pong
        req = "websocket_request_duration_seconds_count"
        for k in range(1, 4):
            clients[0].ping(100 + k)
            wait_for(lambda: metric(gw.metrics(), req, type="ping")
                     - metric(before, req, type="ping") >= limit + k,
                     2, what=f"request count +{limit + k}")
            assert (metric(gw.metrics(), req, type="ping")
                    - metric(before, req, type="ping")) == limit + k
        for c in clients:
            assert c.close_clean() == 1000
    finally:
        close_all(clients)
    wait_for(lambda: metric(gw.metrics(), "websocket_connections_active") == 0, 3,
             what="active back to 0")

    # 2. a protocol error: an unmasked client frame -> 1002
    c = RawWS(gw.port)
    c.send_frame(OP_TEXT, json.dumps({"type": "ping"}), mask=False)
    code, _, msgs = c.expect_close(reply=False)
    assert code == 1002 and not msgs, (code, msgs)
    assert c.wait_eof()
    c.close()

    # 3. an oversize message -> 1009
    c = RawWS(gw.port)
    c.send_json({"type": "ping", "id": "x" * 300})
    code, _, msgs = c.expect_close(reply=False)
    assert code == 1009 and not msgs, (code, msgs)
    assert c.wait_eof()
    c.close()

    # 4. a silent client -> timeout (1001)
    c = RawWS(gw.port)
    t0 = time.monotonic()
    code, _, _ = c.expect_close(timeout=timeout_s + 5)
    assert code == 1001
    assert time.monotonic() - t0 >= timeout_s - 0.5
    assert c.wait_eof()
    c.close()

    after = wait_for(lambda: (lambda m: m if metric(m, "websocket_connections_active") == 0 and
                              delta(before, m, "websocket_disconnections_total") == limit + 3
                              else None)(gw.metrics()), 5, what="all closes counted")
    expected_reasons = {"client_close": limit, "protocol_error": 1, "too_large": 1, "timeout": 1}
    for r in REASONS:
        assert delta(before, after, "websocket_disconnections_total", reason=r) == \
            expected_reasons.get(r, 0), r
    expected_errors = {"capacity": 1}
    for e in ERROR_TYPES:
        assert delta(before, after, "websocket_connection_errors_total", error_type=e) == \
            expected_errors.get(e, 0), e
    assert delta(before, after, "websocket_connections_total") == limit + 3
    assert delta(before, after, "websocket_messages_received_total") == limit + 3
    assert delta(before, after, "websocket_messages_sent_total") == limit + 3
    assert delta(before, after, "websocket_request_duration_seconds_count", type="ping") == limit + 3
    assert delta(before, after, "websocket_request_duration_seconds_sum", type="ping") > 0
    assert delta(before, after, "websocket_message_latency_seconds_count") == 0
    assert delta(before, after, "websocket_bytes_received_total") >= sent_bytes
    assert delta(before, after, "websocket_bytes_sent_total") >= pong_bytes
    assert delta(before, after, "websocket_worker_restarts_total") == 0
    for (name, labels), v in counters(before).items():
        assert after[(name, labels)] >= v, name

    # both ports render the same numbers
    for _ in range(3):
        a = websocket_samples(gw.metrics())
        b = websocket_samples(gw.metrics(port=gw.metrics_port))
        if a == b:
            break
        time.sleep(0.1)
    assert a == b, {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
    assert a == websocket_samples(after)


def test_handshake_errors_counted_by_type(gateway_factory):
    gw = gateway_factory({"workers": 1, "environment": ENV, "handshake_timeout": 1})
    before = gw.metrics()
    # bad version -> 400, handshake
    c = RawWS(gw.port, handshake=False)
    c.sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
    assert c.read_response() == 400
    c.close()
    # no request head within handshake_timeout -> timeout
    c = RawWS(gw.port, handshake=False)
    assert c.wait_eof(timeout=6)
    c.close()
    after = wait_for(lambda: (lambda m: m if delta(before, m, "websocket_connection_errors_total")
                              >= 2 else None)(gw.metrics()), 3, what="errors counted")
    time.sleep(0.3)
    after = gw.metrics()
    assert delta(before, after, "websocket_connection_errors_total", error_type="handshake") == 1
    assert delta(before, after, "websocket_connection_errors_total", error_type="timeout") == 1
    assert delta(before, after, "websocket_connection_errors_total") == 2
    # plain HTTP requests are neither connections nor errors
    for path in ("/health", "/health/detailed", "/metrics", "/nope"):
        gw.http(path)
    final = gw.metrics()
    assert delta(after, final, "websocket_connection_errors_total") == 0
    assert delta(after, final, "websocket_connections_total") == 0
    assert delta(before, final, "websocket_disconnections_total") == 0


# -- Prometheus end to end -------------------------------------------------

PROMETHEUS = "/usr/bin/prometheus"


def prom_query(base, q):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def local_runbook_curl(cmd, base, env):
    """A runbook curl command pointed at a test Prometheus and environment."""
    assert "http://prometheus:9090" in cmd and "production" in cmd, cmd
    return (cmd.replace("http://prometheus:9090", base)
            .replace('environment=\\"production\\"', f'environment=\\"{env}\\"')
            .replace('environment="production"', f'environment="{env}"'))


def run_curl(cmd):
    out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, (cmd, out.stderr)
    return json.loads(out.stdout)


@pytest.mark.skipif(not os.path.exists(PROMETHEUS), reason="Debian package prometheus missing")
def test_prometheus_runs_the_runbook_queries(gateway_factory, tmp_path):
    env = "e2e"
    gw = gateway_factory({"workers": 2, "environment": env, "max_connections": 6,
                          "max_message_size": 256})
    prom_port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: wsgate-admin
    static_configs:
      - targets: ['127.0.0.1:{gw.metrics_port}']
  - job_name: wsgate
    static_configs:
      - targets: ['127.0.0.1:{gw.port}']
""")
    data = tmp_path / "tsdb"
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={data}",
                             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{prom_port}"
    held = []
    try:
        def ready():
            try:
                with urllib.request.urlopen(base + "/-/ready", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_for(ready, 20, interval=0.1, what="prometheus ready")

        def up():
            r = prom_query(base, 'up{job=~"wsgate.*"} == 1')
            return len(r["data"]["result"]) == 2
        wait_for(up, 15, interval=0.2, what="both targets up")

        # traffic: held connections that ping and stream (one subscribes,
        # one publishes), clean closes, a protocol error, an oversize
        # message, a refusal at max_connections
        held = [RawWS(gw.port) for _ in range(3)]
        held[0].send_json({"type": "subscribe", "stream": "rb/1"})
        assert held[0].recv_json()["type"] == "subscribed"
        deadline = time.monotonic() + 4 * SLOW
        rounds = 0
        while time.monotonic() < deadline and rounds < 400:
            for i, c in enumerate(held[1:]):
                c.ping(rounds * 10 + i)
            held[1].send_json({"type": "publish", "stream": "rb/1", "data": rounds})
            assert held[0].recv_json()["type"] == "message"
            rounds += 1
            if rounds % 20 == 1:
                x = RawWS(gw.port)
                x.ping()
                x.close_clean()
                x = RawWS(gw.port)
                x.send_frame(OP_TEXT, "{}", mask=False)
                x.expect_close(reply=False)
                x.close()
                x = RawWS(gw.port)
                x.send_json({"type": "ping", "id": "y" * 300})
                x.expect_close(reply=False)
                x.close()
                # the three closes above are released before the replica is
                # filled, or an extra would be the one refused
                wait_for(lambda: metric(gw.metrics(), "websocket_connections_active") == 3, 3,
                         what="closes released")
                extra = [RawWS(gw.port) for _ in range(3)]
                over = RawWS(gw.port, handshake=False)
                over.send_request()
                assert over.read_response() == 503
                over.close()
                for e in extra:
                    e.close_clean()
            time.sleep(0.02)

        sel = f'environment="{env}"'
        # The runbook's curl commands as operators type them, pointed at
        # this Prometheus and this environment.
        curls = {}
        for cmd in runbook.prometheus_curls():
            for key, series in (("active", "websocket_connections_active"),
                                ("disconnects", "websocket_disconnections_total"),
                                ("p95", "websocket_message_latency_seconds_bucket")):
                if series in cmd and ("by (reason)" in cmd or key != "disconnects"):
                    curls[key] = local_runbook_curl(cmd, base, env)
            if "[2m]" in cmd:
                curls["triage"] = local_runbook_curl(cmd, base, env)
        assert set(curls) == {"active", "disconnects", "p95", "triage"}, curls
        queries = {
            "errors": f"sum(rate(websocket_connection_errors_total{{{sel}}}[5m])) by (error_type)",
        }

        def all_answer():
            out = {}
            for k, cmd in curls.items():
                r = run_curl(cmd)
                if r["status"] != "success" or not r["data"]["result"]:
                    return None
                out[k] = r["data"]["result"]
            for k, q in queries.items():
                r = prom_query(base, q)
                if r["status"] != "success" or not r["data"]["result"]:
                    return None
                out[k] = r["data"]["result"]
            vals = {k: [float(x["value"][1]) for x in v] for k, v in out.items()}
            if any(math.isnan(v) for v in vals["p95"]):
                return None
            if not any(v > 0 for v in vals["disconnects"]):
                return None
            return out
        res = wait_for(all_answer, 15, interval=0.5, what="every runbook query answered")

        # the queries' answers mean what the runbook reads them for
        by_reason = {x["metric"]["reason"]: float(x["value"][1]) for x in res["disconnects"]}
        assert set(by_reason) == set(REASONS), by_reason
        for r in ("client_close", "protocol_error", "too_large"):
            assert by_reason[r] > 0, by_reason
        by_type = {x["metric"]["error_type"]: float(x["value"][1]) for x in res["errors"]}
        assert set(by_type) == set(ERROR_TYPES), by_type
        assert by_type["capacity"] > 0, by_type
        for x in res["p95"]:
            assert 0 < float(x["value"][1]) <= 10, res["p95"]
        # one replica scraped twice (two jobs): each job sees the 3 held
        # (once a scrape after the last extras closed has come in)
        def held_only():
            for job in ("wsgate", "wsgate-admin"):
                r = prom_query(base, f'sum(websocket_connections_active{{{sel},job="{job}"}})')
                if r["status"] != "success" or float(r["data"]["result"][0]["value"][1]) != 3:
                    return None
            return run_curl(curls["active"])
        active = wait_for(held_only, 5, interval=0.25, what="3 held connections seen by both jobs")
        assert float(active["data"]["result"][0]["value"][1]) == 6
        # the runbook's triage query (Step 1) counts the same disconnections
        assert float(res["triage"][0]["value"][1]) > 0, res["triage"]
        # The first runbook's commands, which docs/RUNBOOK.md lists as not
        # working as written: each fails (curl refuses the URL, or
        # Prometheus gets a mangled query), as the runbook says.
        broken = runbook.as_written("curl -s \"http://prometheus:9090/api/v1/query?query=")
        assert len(broken) == 4, broken
        for cmd in broken:
            out = subprocess.run(["sh", "-c", local_runbook_curl(cmd, base, env)],
                                 capture_output=True, text=True, timeout=30)
            if out.returncode == 0:
                assert json.loads(out.stdout)["status"] == "error", (cmd, out.stdout)
            else:
                assert out.returncode == 3, (cmd, out.returncode, out.stderr)  # URL malformed
    finally:
        close_all(held)
        prom.send_signal(signal.SIGTERM)
        try:
            prom.wait(timeout=10)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait(timeout=5)
        log.close()
        shutil.rmtree(data, ignore_errors=True)
