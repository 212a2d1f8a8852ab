"""Integration harness: start the real wsgate binary on free loopback ports
with a temporary config, and give tests helpers to talk to it.

Every gateway a test starts is stopped at the end of the test (SIGTERM, then
SIGKILL after a bound); its stderr is scanned for sanitizer reports, which
fail the test. WSGATE_BIN names the binary (tools/test sets it).
"""
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WSGATE_BIN = os.environ.get("WSGATE_BIN", os.path.join(ROOT, "build-test", "wsgate"))
SANITIZED = os.environ.get("WSGATE_SANITIZED") == "1"
# Sanitized builds are several times slower: scale waits, never asserted speeds.
SLOW = 4.0 if SANITIZED else 1.0
SANITIZER_PATTERNS = re.compile(
    r"(ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|SUMMARY: UndefinedBehaviorSanitizer)")


_ports_handed_out = set()


def free_port():
    """A loopback port nothing listens on now. Never the same one twice in a
    run: the kernel may give a just-closed port again at once, and a test
    asking for `port` and `metrics_port` in a row then got one port twice."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_handed_out:
            _ports_handed_out.add(port)
            return port
    raise RuntimeError("no loopback port left that this run has not handed out")


def render_config(values):
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key}: {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f'{key}: "{value}"')
        elif isinstance(value, (list, tuple)):
            lines.append(f"{key}: [" + ", ".join(json.dumps(v) for v in value) + "]")
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


class Gateway:
    """One wsgate master (and its workers) on free loopback ports."""

    def __init__(self, tmp_path, config=None, pool=None):
        self.dir = tmp_path
        self.port = free_port()
        self.metrics_port = free_port()
        self.config = {
            "port": self.port,
            "bind_address": "127.0.0.1",
            "metrics_port": self.metrics_port,
            "workers": 2,
            "environment": "test",
            "log_level": "info",
        }
        self.config.update(config or {})
        self.port = self.config["port"]
        self.metrics_port = self.config["metrics_port"]
        self.config_path = os.path.join(str(tmp_path), "websocket.yaml")
        self.pool = pool
        self.proc = None
        self.stderr_path = os.path.join(str(tmp_path), "wsgate.stderr")
        self.write_config()

    # -- lifecycle ---------------------------------------------------------
    def write_config(self, config=None, pool=None, raw=None):
        if config is not None:
            self.config = config
        with open(self.config_path, "w") as f:
            f.write(raw if raw is not None else render_config(self.config))
        pool = pool if pool is not None else self.pool
        if pool is not None:
            with open(os.path.join(str(self.dir), "connection_pool.yaml"), "w") as f:
                f.write(render_config(pool))

    def start(self, wait=True, env=None):
        self._stderr = open(self.stderr_path, "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen([WSGATE_BIN, "-c", self.config_path],
                                     stdout=subprocess.DEVNULL, stderr=self._stderr,
                                     env=full_env)
        if wait:
            self.wait_ready()
        return self

    @property
    def tls(self):
        """True when the serving port speaks TLS (plain HTTP to it fails)."""
        return bool(self.config.get("tls_cert_file"))

    def wait_ready(self, timeout=10):
        deadline = time.time() + timeout * SLOW
        wanted = self.config.get("workers", 2) or os.cpu_count()
        # With TLS on, ask the master's plain metrics_port instead.
        port = self.metrics_port if self.tls else None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wsgate exited with {self.proc.returncode}:\n{self.stderr()}")
            try:
                status, body = self.http("/health/detailed", port=port)
                doc = json.loads(body)
                running = [w for w in doc["workers"] if w["state"] == "running"]
                if len(running) >= wanted:
                    return doc
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise RuntimeError("wsgate did not become ready:\n" + self.stderr())

    def signal(self, signo):
        self.proc.send_signal(signo)

    def stop(self, timeout=None):
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=(timeout or 15) * SLOW)
        except subprocess.TimeoutExpired:
            self.kill_tree()
            raise AssertionError("wsgate did not exit after SIGTERM:\n" + self.stderr())

    def kill_tree(self):
        for pid in self.worker_pids() + [self.proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)

    def worker_pids(self):
        try:
            out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                 text=True).stdout
            return [int(p) for p in out.split()]
        except (OSError, ValueError):
            return []

    # -- observation -------------------------------------------------------
    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def logs(self):
        """Parsed JSON log lines (other lines, e.g. sanitizer output, skipped)."""
        out = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def sanitizer_reports(self):
        return [l for l in self.stderr().splitlines() if SANITIZER_PATTERNS.search(l)]

    def http(self, path, port=None, method="GET", headers=None, timeout=5):
        req = urllib.request.Request(f"http://127.0.0.1:{port or self.port}{path}",
                                     method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout * SLOW) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def detailed(self, port=None):
        return json.loads(self.http("/health/detailed", port=port)[1])

    def metrics(self, port=None):
        """{(name, frozenset(labels.items())): value} from /metrics."""
        status, text = self.http("/metrics", port=port)
        assert status == 200
        return parse_metrics(text)

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.port}/ws"


METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        assert m, f"unparseable metrics line: {line!r}"
        labels = dict(LABEL.findall(m.group(3) or ""))
        out[(m.group(1), frozenset(labels.items()))] = float(m.group(4))
    return out


def metric(samples, name, **labels):
    """Sum of the samples named `name` whose labels include `labels`."""
    total = 0.0
    found = False
    for (n, ls), v in samples.items():
        if n == name and all((k, str(val)) in ls for k, val in labels.items()):
            total += v
            found = True
    assert found, f"no sample {name}{labels}"
    return total


@pytest.fixture
def gateway_factory(tmp_path):
    started = []

    def make(config=None, pool=None, start=True, env=None, subdir=None):
        d = tmp_path / (subdir or f"gw{len(started)}")
        d.mkdir(exist_ok=True)
        gw = Gateway(d, config=config, pool=pool)
        started.append(gw)
        if start:
            gw.start(env=env)
        return gw

    yield make
    problems = []
    for gw in started:
        if gw.proc is None:
            continue
        if gw.proc.poll() is None:
            try:
                gw.stop()
            except AssertionError as e:
                problems.append(str(e))
        reports = gw.sanitizer_reports()
        if reports:
            problems.append("sanitizer reports:\n" + gw.stderr())
    assert not problems, "\n".join(problems)


@pytest.fixture
def gateway(gateway_factory):
    return gateway_factory()
