"""The command line and config checking (issue 2): `wsgate -t -c FILE`,
`-V`, `-h`, the shipped etc/ files, the runbook's configmap patches, and a
port already in use at start-up."""
import json
import os
import re
import socket
import subprocess
import time

import pytest

import runbook
from conftest import ROOT, SLOW, WSGATE_BIN
from gwutil import pids_with_arg, shm_path, wait_for

# Every key of the original design (docs/ARCHITECTURE.md and README's key
# table; websocket.yaml, then connection_pool.yaml).
DESIGN_KEYS = ["port", "bind_address", "metrics_port", "workers", "max_connections",
               "heartbeat_interval", "connection_timeout", "handshake_timeout",
               "max_message_size", "max_send_buffer", "history_size", "shutdown_timeout",
               "environment", "log_format", "log_level"]
POOL_KEYS = ["max_pool_size", "pool_timeout", "max_idle_time"]


def runbook_patch_values():
    """The file contents the runbook's `kubectl patch configmap` commands
    write (docs/RUNBOOK.md, Step 3), by key, exactly as kubectl stores them:
    in the single-quoted JSON, "\\n" is a backslash and an n."""
    out = {}
    for arg in runbook.patch_json("configmap websocket-config"):
        out.update(json.loads(arg)["data"])
    return out


AS_PATCHED = runbook_patch_values()
# The same values with the backslash-n turned into the newline a hand-edited
# configmap holds.
RUNBOOK_PATCH = AS_PATCHED["websocket.yaml"].replace("\\n", "\n")
RUNBOOK_POOL_PATCH = AS_PATCHED["connection_pool.yaml"].replace("\\n", "\n")


def run(*args, timeout=10):
    return subprocess.run([WSGATE_BIN, *args], capture_output=True, text=True,
                          timeout=timeout * SLOW)


def write(dirpath, name, text):
    path = os.path.join(str(dirpath), name)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_check_valid_config_exits_0(tmp_path):
    path = write(tmp_path, "websocket.yaml",
                 'port: 18003\nbind_address: "127.0.0.1"\nworkers: 2\nenvironment: "staging"\n')
    out = run("-t", "-c", path)
    assert out.returncode == 0, out.stderr
    assert "valid" in out.stdout


def test_check_empty_config_takes_defaults(tmp_path):
    path = write(tmp_path, "websocket.yaml", "# nothing but a comment\n")
    out = run("-t", "-c", path)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("text,line,key", [
    # unknown key
    ('port: 18003\nworkers: 2\nmax_conections: 5\n', 3, "max_conections"),
    # out of range (both ends)
    ('port: 18003\nworkers: 65\n', 2, "workers"),
    ('port: 18003\n\n\nheartbeat_interval: 0\n', 4, "heartbeat_interval"),
    ('port: 70000\n', 1, "port"),
    ('max_message_size: 8\n', 1, "max_message_size"),
    # wrong type
    ('port: 18003\nmax_connections: "many"\n', 2, "max_connections"),
    ('port: 18003\nenvironment: 5\n', 2, "environment"),
    ('port: 18003\nworkers: 2.5\n', 2, "workers"),
    # value not one of the allowed
    ('log_level: "verbose"\n', 1, "log_level"),
    # syntax errors: a missing colon, and YAML's unquoted string
    ('port: 18003\nheartbeat_interval 30\nworkers: 2\n', 2, "heartbeat_interval"),
    ('port: 18003\nenvironment: staging\nworkers: 2\n', 2, "environment"),
    # a connection_pool.yaml key in websocket.yaml
    ('port: 18003\nmax_pool_size: 10\n', 2, "max_pool_size"),
], ids=["unknown-key", "range-workers", "range-heartbeat", "range-port", "range-msgsize",
        "type-string-for-int", "type-int-for-string", "type-float", "bad-choice",
        "syntax-missing-colon", "syntax-unquoted-string", "pool-key-in-main-file"])
def test_check_invalid_config_names_file_line_key(tmp_path, text, line, key):
    path = write(tmp_path, "websocket.yaml", text)
    out = run("-t", "-c", path)
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    err = out.stderr
    assert f"{path}:{line}" in err, err
    assert re.search(rf"\b{re.escape(key)}\b", err), f"key {key!r} not named: {err}"
    assert len(err.strip().splitlines()) == 1, err


def test_check_invalid_pool_file_names_that_file(tmp_path):
    path = write(tmp_path, "websocket.yaml", "port: 18003\n")
    pool = write(tmp_path, "connection_pool.yaml", "max_pool_size: 1000\npool_timeout: 0\n")
    out = run("-t", "-c", path)
    assert out.returncode == 1
    assert f"{pool}:2" in out.stderr and "pool_timeout" in out.stderr, out.stderr


def test_check_missing_file(tmp_path):
    path = os.path.join(str(tmp_path), "nope.yaml")
    out = run("-t", "-c", path)
    assert out.returncode == 1
    assert path in out.stderr


def test_version():
    with open(os.path.join(ROOT, "meson.build")) as f:
        version = re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)
    out = run("-V")
    assert out.returncode == 0
    assert out.stdout.strip() == f"wsgate {version}", out.stdout


def test_help_lists_every_key():
    out = run("-h")
    assert out.returncode == 0
    assert out.stdout.startswith("usage: wsgate"), out.stdout
    for opt in ("-c", "-t", "-V", "-h"):
        assert opt in out.stdout
    listed = {line.split()[0] for line in out.stdout.splitlines()
              if line.startswith("  ") and line.split()}
    for key in DESIGN_KEYS + POOL_KEYS:
        assert key in listed, f"{key} missing from -h:\n{out.stdout}"
    # defaults shown as the original design gives them (README's key table)
    for key, default in [("port", "8003"), ("metrics_port", "8004"), ("workers", "0"),
                         ("max_connections", "10000"), ("max_message_size", "1048576"),
                         ("environment", '"production"')]:
        line = next(l for l in out.stdout.splitlines() if l.split() and l.split()[0] == key)
        assert line.split()[1] == default, line


def test_bad_option_is_usage_error():
    out = run("-Z")
    assert out.returncode != 0
    assert "usage" in out.stderr


def test_runbook_configmap_patch_is_a_valid_config(tmp_path):
    path = write(tmp_path, "websocket.yaml", RUNBOOK_PATCH)
    out = run("-t", "-c", path)
    assert out.returncode == 0, out.stderr


def test_runbook_pool_patch_is_a_valid_pool_config(tmp_path):
    path = write(tmp_path, "websocket.yaml", RUNBOOK_PATCH)
    write(tmp_path, "connection_pool.yaml", RUNBOOK_POOL_PATCH)
    out = run("-t", "-c", path)
    assert out.returncode == 0, out.stderr


def test_runbook_patch_as_kubectl_writes_it(tmp_path):
    """`kubectl patch -p '{..."max_connections: 10000\\nheartbeat_interval: 30..."}'`
    puts a backslash and an 'n' in the file, not line breaks: still valid."""
    content = AS_PATCHED["websocket.yaml"]
    assert "\n" not in content and "\\n" in content
    path = write(tmp_path, "websocket.yaml", content)
    out = run("-t", "-c", path)
    assert out.returncode == 0, out.stderr
    write(tmp_path, "connection_pool.yaml", AS_PATCHED["connection_pool.yaml"])
    out = run("-t", "-c", path)
    assert out.returncode == 0, out.stderr


def test_runbook_patch_runs(gateway_factory):
    """The patch text plus only what a loopback test must change serves."""
    gw = gateway_factory(start=False)
    gw.write_config(raw=RUNBOOK_PATCH + "\n" +
                    f'port: {gw.port}\nbind_address: "127.0.0.1"\nmetrics_port: {gw.metrics_port}\n'
                    "workers: 1\n")
    gw.config["workers"] = 1
    gw.start()
    doc = gw.detailed()
    assert doc["connections"]["limit"] == 10000


def test_shipped_config_is_valid():
    for name in ("websocket.yaml", "connection_pool.yaml"):
        assert os.path.exists(os.path.join(ROOT, "etc", name)), name
    out = run("-t", "-c", os.path.join(ROOT, "etc", "websocket.yaml"))
    assert out.returncode == 0, out.stderr


def test_shipped_config_has_every_key_with_a_comment():
    for name, keys in (("websocket.yaml", DESIGN_KEYS), ("connection_pool.yaml", POOL_KEYS)):
        with open(os.path.join(ROOT, "etc", name)) as f:
            lines = f.read().splitlines()
        for key in keys:
            line = next((l for l in lines if re.match(rf"{key}\s*:", l)), None)
            assert line is not None, f"{key} missing from etc/{name}"
            assert "#" in line, f"{key} has no comment in etc/{name}"


def _error_lines(text):
    out = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("level") == "error":
            out.append(doc)
    return out


def test_port_in_use_exits_1_with_one_error_line(gateway_factory):
    gw = gateway_factory(start=False)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", gw.port))
        holder.listen(1)
        t0 = time.monotonic()
        gw.start(wait=False)
        rc = gw.proc.wait(timeout=5 * SLOW)
        elapsed = time.monotonic() - t0
    finally:
        holder.close()
    assert rc == 1, gw.stderr()
    assert elapsed < 2 * SLOW + 1, elapsed
    errors = _error_lines(gw.stderr())
    assert len(errors) == 1, gw.stderr()
    text = json.dumps(errors[0])
    assert str(gw.port) in text and ("in use" in text.lower() or "EADDRINUSE" in text), text
    assert not pids_with_arg(gw.config_path), "processes left behind"
    assert not os.path.exists(shm_path(gw.port))
    assert '"event":"worker_spawn"' not in gw.stderr()


def test_metrics_port_in_use_exits_1_leaves_nothing(gateway_factory):
    gw = gateway_factory(start=False)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", gw.metrics_port))
        holder.listen(1)
        gw.start(wait=False)
        rc = gw.proc.wait(timeout=5 * SLOW)
    finally:
        holder.close()
    assert rc == 1, gw.stderr()
    errors = _error_lines(gw.stderr())
    assert len(errors) == 1, gw.stderr()
    assert "metrics_port" in json.dumps(errors[0])
    wait_for(lambda: not pids_with_arg(gw.config_path), 2, what="no process left")
    assert not os.path.exists(shm_path(gw.port))


def test_invalid_config_refuses_to_start(gateway_factory):
    gw = gateway_factory(start=False)
    gw.write_config(raw=f"port: {gw.port}\nworkers: 2\nbogus_key: 1\n")
    gw.start(wait=False)
    rc = gw.proc.wait(timeout=5 * SLOW)
    assert rc == 1
    errors = _error_lines(gw.stderr())
    assert len(errors) == 1, gw.stderr()
    assert "bogus_key" in errors[0].get("error", "") and gw.config_path in errors[0]["error"]
    assert not os.path.exists(shm_path(gw.port))
