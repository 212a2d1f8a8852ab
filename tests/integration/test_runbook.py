"""The runbook's own commands (docs/RUNBOOK.md, read by runbook.py) against a
live gateway, unchanged but for host and port: the in-pod Python checks and
the service health checks. (Its Prometheus queries run in test_metrics.py,
its configmap patches in test_config_cli.py, its s_client in test_tls.py,
its probe patch in test_opskit.py.)"""
import re
import subprocess
import time

import runbook
from gwutil import RawWS

PYTHON = "/usr/bin/python3"
SERVICE = "websocket:8003"


def run_snippet(code):
    return subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=30)


def in_pod(code, gateway):
    """A snippet as `kubectl exec … -- python -c` runs it in the pod, where
    the gateway is localhost:8003; here it is the test gateway's port."""
    assert "localhost:8003" in code, code
    return code.replace("localhost:8003", f"localhost:{gateway.port}")


def shell(cmd, gateway):
    """A runbook command run by sh as typed, the service name pointed at
    the test gateway."""
    assert SERVICE in cmd, cmd
    return subprocess.run(["sh", "-c", cmd.replace(SERVICE, f"127.0.0.1:{gateway.port}")],
                          capture_output=True, text=True, timeout=30)


def test_runbook_has_both_python_checks():
    snippets = runbook.python_snippets()
    assert len(snippets) == 2, snippets  # section 5, and Quick Commands
    assert any("'type': 'ping'" in s for s in snippets)
    assert any("Connected successfully" in s for s in snippets)


def test_runbook_test_websocket_connection(gateway):
    # "5. Test WebSocket Connection"
    (code,) = [s for s in runbook.python_snippets() if "'type': 'ping'" in s]
    out = run_snippet(in_pod(code, gateway))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('WebSocket response: {"type":"pong"'), out.stdout


def test_runbook_quick_test(gateway):
    # "Quick Commands: Test WebSocket connection"
    (code,) = [s for s in runbook.python_snippets() if "Connected successfully" in s]
    out = run_snippet(in_pod(code, gateway))
    assert out.stdout.strip() == "Connected successfully", out.stdout + out.stderr


def test_runbook_quick_test_reports_a_refusal(gateway_factory):
    # The same check against a replica at max_connections says so.
    gw = gateway_factory({"max_connections": 1})
    (code,) = [s for s in runbook.python_snippets() if "Connected successfully" in s]
    held = RawWS(gw.port)
    try:
        out = run_snippet(in_pod(code, gw))
    finally:
        held.close()
    assert out.stdout.startswith("Connection failed:") and "503" in out.stdout, out.stdout


def test_runbook_curl_health(gateway):
    # "3. Check Service Health": none of the `|| echo` branches is taken;
    # `curl -I …/ws` answers 426, the healthy answer without upgrade headers.
    cmds = [c for c in runbook.commands("curl ") if SERVICE in c]
    assert len(cmds) >= 4, cmds
    for cmd in cmds:
        out = shell(cmd, gateway)
        assert out.returncode == 0, (cmd, out.stdout, out.stderr)
        m = re.search(r'\|\| echo "([^"]+)"', cmd)
        if m:
            assert m.group(1) not in out.stdout, (cmd, out.stdout)
        if cmd.startswith("curl -I"):
            assert out.stdout.startswith("HTTP/1.1 426"), out.stdout
            assert "upgrade: websocket" in out.stdout.lower()
        elif "/health" in cmd:
            assert '"status":"ok"' in out.stdout or '"status": "ok"' in out.stdout, out.stdout


def test_runbook_curl_health_says_down_when_stopped(gateway):
    # The same commands against a replica that is gone: `curl -f` fails and
    # the runbook's message is printed.
    cmds = [c for c in runbook.commands("curl -f ") if SERVICE in c and "||" in c]
    assert len(cmds) >= 2, cmds
    assert gateway.stop() == 0
    for cmd in cmds:
        out = shell(cmd, gateway)
        want = re.search(r'\|\| echo "([^"]+)"', cmd).group(1)
        assert want in out.stdout, (cmd, out.stdout, out.stderr)


def test_runbook_proxy_check_reaches_the_gateway(gateway):
    # Step 4 "Test proxy connection", pointed at the gateway instead of the
    # ingress: a clear 426, not a hang or a 400.
    (cmd,) = [c for c in runbook.commands("curl -I -H ")]
    url = cmd.split()[-1]
    assert url == "https://websocket.vitalstream.com/ws", url
    out = subprocess.run(["sh", "-c", cmd.replace(url, f"http://127.0.0.1:{gateway.port}/ws")],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.startswith("HTTP/1.1 426"), out.stdout


def test_runbook_log_grep_finds_connection_events(gateway):
    # "4. Check Connection Logs": the grep pattern finds connect and
    # disconnect lines.
    (cmd,) = runbook.commands("kubectl logs -l app=websocket -n vitalstream | grep -E")
    pattern = re.search(r'grep -E "([^"]+)"', cmd).group(1)
    code = f"""
import asyncio, websockets
async def t():
    async with websockets.connect('ws://127.0.0.1:{gateway.port}/ws') as ws:
        pass
asyncio.run(t())
"""
    assert run_snippet(code).returncode == 0
    time.sleep(0.3)
    lines = [l for l in gateway.stderr().splitlines() if re.search(pattern, l)]
    events = [l for l in lines if '"event":"connect"' in l or '"event":"disconnect"' in l]
    assert len(events) >= 2, gateway.stderr()
