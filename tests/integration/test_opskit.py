"""Operations kit (issue 6): the Kubernetes manifests, the Grafana dashboard
and the Prometheus alert rules in etc/, checked offline against their
schemas and tools, against the gateway's own config and the runbook
(docs/RUNBOOK.md), and end to end against the real gateway through a
real Prometheus. The cluster broker's panels and alerts (issue 8) are
checked against a gateway in cluster mode, connected to a real redis-server
on loopback that the tests start.

Needs: node + npm (tools/k8s-validate, installed here with `npm ci` when
missing), kubectl (only its offline `kustomize`), promtool and
/usr/bin/prometheus (Debian package prometheus), redis-server and
redis-cli, objdump and dpkg.
"""
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import websockets
import yaml

import runbook
from conftest import ROOT, SLOW, WSGATE_BIN, free_port, parse_metrics

ETC = os.path.join(ROOT, "etc")
K8S = os.path.join(ETC, "kubernetes")
BASE = os.path.join(K8S, "base")
OVERLAY = os.path.join(K8S, "overlays", "production")
PROM_DIR = os.path.join(ETC, "prometheus")
ALERTS = os.path.join(PROM_DIR, "alerts.yaml")
ALERTS_TEST = os.path.join(PROM_DIR, "alerts_test.yaml")
PROM_CONFIG = os.path.join(PROM_DIR, "prometheus.yml")
DASHBOARD = os.path.join(ETC, "grafana", "vitalstream-websocket.json")
DOCKERFILE = os.path.join(K8S, "Dockerfile")
VALIDATOR_DIR = os.path.join(ROOT, "tools", "k8s-validate")
VALIDATOR = os.path.join(VALIDATOR_DIR, "validate.js")
SYNC_CONFIGMAP = os.path.join(VALIDATOR_DIR, "sync-configmap.py")
RUNBOOK = runbook.PATH
PYTHON = "/usr/bin/python3"
PROMETHEUS = "/usr/bin/prometheus"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"

RUNBOOK_URL = "https://runbooks.vitalstream.com/websocket-connection-issues"

# Alerts issue 6 asks for (name -> what it covers).
REQUIRED_ALERTS = {
    "WebSocketDisconnectionSpike": "disconnection-rate spike",
    "WebSocketMessageLatencyHigh": "p95 latency above threshold",
    "WebSocketConnectionErrors": "connection errors by type",
    "WebSocketServiceDown": "service down (no healthy target)",
    "WebSocketWorkerCrashLoop": "worker crash loop",
    "WebSocketNearMaxConnections": "near max_connections",
    "WebSocketConfigReloadFailed": "config reload failed",
    # Issue 8 (cluster mode).
    "WebSocketBrokerDown": "a cluster broker unreachable",
    "WebSocketBrokerErrors": "broker timeouts and refused commands",
    "WebSocketBrokerLatencyHigh": "broker round trips slow",
    # Issue 19: heartbeat round trips, disconnections against their own level.
    "WebSocketClientRTTHigh": "client p99 RTT above threshold for 10m",
    "WebSocketDisconnectionAnomaly": "disconnection rate jumps against its level 1h before",
}
# Panels issue 6 asks for, by title.
REQUIRED_PANELS = [
    "Active WebSocket Connections", "Connection/Disconnection Rates", "Message Latency",
    "Connection Errors by Type", "Workers by State", "Worker Restarts", "Config Reloads",
    "Messages per Second", "Bytes per Second", "CPU", "Memory", "Config Generation",
    # Heartbeat round trips and request durations.
    "Client Round Trip (RTT)", "Request Duration by Type",
    # permessage-deflate.
    "Compression Bytes per Second", "Compression Ratio",
]
# Issue 8: the cluster broker's panels, in a row of their own.
BROKER_ROW = "Cluster broker"
BROKER_PANELS = {
    "Broker Up": "websocket_broker_up",
    "Broker Publish Latency": "websocket_broker_latency_seconds_bucket",
    "Broker Errors by Type": "websocket_broker_errors_total",
    "Broker Pool Connections": "websocket_broker_pool_connections",
}
# Series that exist only in cluster mode (`broker` set).
BROKER_METRIC = re.compile(r"websocket_broker_\w+")
# Series that come from somewhere else than the gateway's /metrics:
# cAdvisor (through the kubelet) for the container_* ones, Prometheus itself
# for `up`. Their queries may legitimately return nothing here.
EXTERNAL_METRICS = {
    "container_cpu_usage_seconds_total": "cAdvisor",
    "container_memory_working_set_bytes": "cAdvisor",
    "up": "Prometheus (one per scrape target)",
}
# Labels the scrape adds (prometheus.yml), not the gateway.
TARGET_LABELS = {"job", "instance", "pod", "namespace"}
# Grafana variables and the values the live queries use for them.
GRAFANA_VARS = {"environment": "production", "__rate_interval": "30s", "__interval": "15s",
                "__range": "5m"}


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_yaml(path):
    docs = load_yaml_docs(path)
    assert len(docs) == 1, path
    return docs[0]


def load_config(path):
    """etc/websocket.yaml is flat `key: value` YAML."""
    return load_yaml(path)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def quantity(q):
    """Bytes in a Kubernetes memory quantity (e.g. 640Mi, 2Gi, 1G, 512)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    assert m, q
    unit = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[m.group(2)]
    return int(float(m.group(1)) * unit)


def wait_for(pred, timeout, interval=0.1, what="condition"):
    deadline = time.time() + timeout * SLOW
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


# ----------------------------------------------------------------- PromQL ---

PROMQL_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<range>\[[^\]]*\])
  | (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=,(){}])
""", re.X)
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def promql_tokens(expr):
    pos, out = 0, []
    while pos < len(expr):
        m = PROMQL_TOKEN.match(expr, pos)
        assert m, f"cannot tokenize PromQL at {expr[pos:pos + 20]!r} in {expr!r}"
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def promql_parse(expr):
    """(selectors, grouping labels): selectors are (metric, [(label, op, value)])."""
    toks = promql_tokens(expr)
    selectors, grouping = [], set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "ident" and text in GROUPING and nxt == "(":
            i += 2
            while toks[i][1] != ")":
                if toks[i][0] == "ident":
                    grouping.add(toks[i][1])
                i += 1
        elif kind == "ident" and (nxt == "(" or text in AGGREGATIONS):
            pass  # function or aggregation (`sum by (x) (...)`)
        elif kind == "ident" and text.lower() not in KEYWORDS:
            matchers = []
            if nxt == "{":
                i += 2
                while toks[i][1] != "}":
                    if toks[i][0] == "ident":
                        label, op, value = toks[i][1], toks[i + 1][1], toks[i + 2][1]
                        matchers.append((label, op, json.loads(value) if value[0] == '"'
                                         else value[1:-1]))
                        i += 3
                    else:
                        i += 1
            selectors.append((text, matchers))
        i += 1
    return selectors, grouping


def substitute_grafana_vars(expr):
    def repl(m):
        name = m.group(1) or m.group(2)
        assert name in GRAFANA_VARS, f"unknown Grafana variable ${name} in {expr}"
        return GRAFANA_VARS[name]
    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)
    assert "$" not in out, out
    return out


# ------------------------------------------------------------ inventories ---

def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def dashboard_panels(d=None):
    """Every panel but the rows, those inside a collapsed row included."""
    out = []
    for p in (d or dashboard())["panels"]:
        if p["type"] == "row":
            out += p.get("panels", [])
        else:
            out.append(p)
    return out


def dashboard_queries():
    """[(where, expr)] for every panel target and annotation, as written."""
    d = dashboard()
    out = []
    for p in dashboard_panels(d):
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
    for a in d["annotations"]["list"]:
        if a.get("expr"):
            out.append((f"annotation {a['name']!r}", a["expr"]))
    return out


def alert_rules():
    doc = load_yaml(ALERTS)
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def runbook_queries():
    """The runbook's PromQL: its Prometheus curl commands and its promql block."""
    return runbook.queries()


def runbook_anchors():
    """GitHub-style anchors of the runbook's headings."""
    anchors = set()
    for line in read(RUNBOOK).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def all_queries():
    """[(where, expr)] for the dashboard, the alerts and the runbook."""
    q = [(w, substitute_grafana_vars(e)) for w, e in dashboard_queries()]
    q += [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    q += [(f"runbook {e}", e) for e in runbook_queries()]
    return q


# ============================================================ Prometheus ===

def test_promtool_check_rules_is_clean():
    out = subprocess.run(["promtool", "check", "rules", ALERTS], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout and "WARNING" not in (out.stdout + out.stderr).upper(), \
        out.stdout + out.stderr


def test_promtool_unit_tests_pass():
    out = subprocess.run(["promtool", "test", "rules", ALERTS_TEST], capture_output=True, text=True,
                         timeout=120, cwd=PROM_DIR)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_alert_rules_cover_the_issue_and_lead_to_the_runbook():
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    missing = set(REQUIRED_ALERTS) - names
    assert not missing, f"alerts missing: {missing}"
    anchors = runbook_anchors()
    tests = load_yaml(ALERTS_TEST)
    fired, silent = set(), set()
    for t in tests["tests"]:
        for case in t.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else silent).add(case["alertname"])
    text = read(ALERTS)
    for r in rules:
        name = r["alert"]
        assert r["labels"]["severity"] in ("warning", "critical"), name
        for key in ("summary", "description", "runbook_url"):
            assert r["annotations"].get(key), f"{name}: no {key}"
        url = r["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_URL + "#"), f"{name}: {url}"
        assert url.split("#", 1)[1] in anchors, f"{name}: no runbook section #{url.split('#')[1]}"
        assert "for" in r, f"{name}: no `for`"
        assert name in fired, f"{name}: no promtool test where it fires"
        assert name in silent, f"{name}: no promtool test where it stays silent"
        # The threshold's reason is written in a comment just above the rule.
        before = text[:text.index(f"- alert: {name}\n")].rstrip().splitlines()
        assert before[-1].strip().startswith("#"), f"{name}: no comment stating the threshold"
    assert any(r["labels"]["severity"] == "critical" for r in rules)
    assert any(r["labels"]["severity"] == "warning" for r in rules)


def prometheus_test_config(target, rule_file, scrape_interval="1s"):
    """etc/prometheus/prometheus.yml as the tests run it: the "websocket" job
    as written but for its discovery (a static loopback target carrying the
    __meta_kubernetes_* labels that pod discovery would give it, so the
    relabelling runs for real), intervals of 1 s, the rule file's absolute
    path. The cAdvisor job needs a kubelet and is left out."""
    cfg = load_yaml(PROM_CONFIG)
    cfg["global"].update(scrape_interval=scrape_interval, evaluation_interval=scrape_interval,
                         scrape_timeout=scrape_interval)
    assert cfg["rule_files"] == ["alerts.yaml"]
    cfg["rule_files"] = [rule_file]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert set(jobs) == {"websocket", "kubernetes-cadvisor"}, set(jobs)
    job = jobs["websocket"]
    assert job["metrics_path"] == "/metrics"
    assert job.pop("kubernetes_sd_configs") == [{"role": "pod", "namespaces": {"names": ["vitalstream"]}}]
    job["static_configs"] = [{
        "targets": [target],
        "labels": {
            "__meta_kubernetes_pod_label_app": "websocket",
            "__meta_kubernetes_pod_label_environment": "production",
            "__meta_kubernetes_pod_container_port_name": "metrics",
            "__meta_kubernetes_pod_name": "websocket-5d8f7c9b4-x2x7q",
            "__meta_kubernetes_namespace": "vitalstream",
        },
    }]
    cfg["scrape_configs"] = [job]
    return cfg


def test_prometheus_config_is_valid(tmp_path):
    cfg = prometheus_test_config("127.0.0.1:8004", ALERTS)
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    # The scrape target is the master's metrics_port, as the deployment names it.
    dep = load_yaml(os.path.join(BASE, "deployment.yaml"))
    ports = {p["name"]: p["containerPort"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports["metrics"] == load_config(os.path.join(ETC, "websocket.yaml"))["metrics_port"]


# ============================================================ Kubernetes ===

@pytest.fixture(scope="module")
def k8s_validate():
    """Run tools/k8s-validate/validate.js; installs its node_modules with
    `npm ci` (package-lock.json) when they are missing."""
    if not os.path.isdir(os.path.join(VALIDATOR_DIR, "node_modules", "kubernetes-models")):
        out = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                             cwd=VALIDATOR_DIR, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr

    def run(*args, stdin=None):
        return subprocess.run(["node", VALIDATOR, *args], input=stdin, capture_output=True,
                              text=True, timeout=120)
    return run


def yaml_files(top):
    out = []
    for d, dirs, files in os.walk(top):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        out += [os.path.join(d, f) for f in sorted(files) if f.endswith((".yaml", ".yml"))]
    return out


def test_every_manifest_validates_against_the_kubernetes_schemas(k8s_validate):
    out = k8s_validate(K8S)
    assert out.returncode == 0, out.stdout + out.stderr
    files = yaml_files(K8S)
    assert len(files) >= 11, files
    for f in files:
        assert f"ok    {f}#0" in out.stdout, f"{f} not validated:\n{out.stdout}"
    kinds = set(re.findall(r"^ok +\S+ (\w+)/", out.stdout, re.M))
    assert {"Deployment", "Service", "Ingress", "ConfigMap", "Secret", "NetworkPolicy",
            "PodDisruptionBudget", "HorizontalPodAutoscaler", "Kustomization"} <= kinds, kinds


def kustomize(path):
    out = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl (offline `kubectl kustomize`) not installed: the base and "
                           "overlay files are still validated one by one")
def test_kustomize_base_and_production_overlay_build_and_validate(k8s_validate):
    for path in (BASE, OVERLAY):
        rendered = kustomize(path)
        out = k8s_validate("-", stdin=rendered)
        assert out.returncode == 0, f"{path}:\n{out.stdout}{out.stderr}"

    objs = [d for d in yaml.safe_load_all(kustomize(OVERLAY)) if d]
    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    assert set(by_kind) == {
        ("ConfigMap", "websocket-config"), ("Deployment", "websocket"), ("Service", "websocket"),
        ("Ingress", "websocket-ingress"), ("NetworkPolicy", "websocket"),
        ("PodDisruptionBudget", "websocket"), ("HorizontalPodAutoscaler", "websocket")}
    for o in objs:
        assert o["metadata"]["namespace"] == "vitalstream", o["metadata"]
        assert o["metadata"]["labels"]["environment"] == "production", o["metadata"]
        assert o["metadata"]["labels"]["app"] == "websocket", o["metadata"]
    dep = by_kind[("Deployment", "websocket")]
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"]["metadata"]["labels"] == {"app": "websocket", "environment": "production"}
    assert dep["spec"]["selector"]["matchLabels"] == {"app": "websocket"}, "selectors are immutable"
    assert by_kind[("HorizontalPodAutoscaler", "websocket")]["spec"]["minReplicas"] == 3
    # The ConfigMap goes out unchanged, and it is the production config.
    cm = by_kind[("ConfigMap", "websocket-config")]
    assert cm["data"]["websocket.yaml"] == read(os.path.join(ETC, "websocket.yaml"))
    assert cm["data"]["connection_pool.yaml"] == read(os.path.join(ETC, "connection_pool.yaml"))
    assert yaml.safe_load(cm["data"]["websocket.yaml"])["environment"] == "production"


GOOD_DEPLOYMENT = os.path.join(BASE, "deployment.yaml")
BROKEN = {
    # name: (edit of deployment.yaml, message expected)
    "misspelt field": (("readinessProbe:", "readinesProbe:"), 'unknown field "readinesProbe"'),
    "wrong type": (("periodSeconds: 10", 'periodSeconds: "ten"'), "must be integer"),
    "bad quantity": (("cpu: 500m", "cpu: lots"), 'must match format "quantity"'),
    "removed API version": (("apiVersion: apps/v1", "apiVersion: apps/v1beta2"),
                            "was removed in Kubernetes 1.16"),
    "unknown API version": (("apiVersion: apps/v1", "apiVersion: apps/v2"),
                            "unknown apiVersion/kind"),
    "selector not matching the template": (("matchLabels:\n      app: websocket",
                                            "matchLabels:\n      app: websockets"),
                                           "does not match the template labels"),
    "missing required field": (("        - name: websocket\n          image:", "        - image:"),
                               "must have required property name"),
    "duplicate key": (("  replicas: 2\n", "  replicas: 2\n  replicas: 3\n"), "unique"),
    "port out of range": (("containerPort: 8004", "containerPort: 80040"), "not in 1..65535"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validator_rejects_a_broken_manifest(k8s_validate, tmp_path, case):
    (old, new), message = BROKEN[case]
    text = read(GOOD_DEPLOYMENT)
    assert old in text, f"test edit no longer applies: {old!r}"
    bad = tmp_path / "deployment.yaml"
    bad.write_text(text.replace(old, new, 1))
    out = k8s_validate(str(tmp_path))
    assert out.returncode == 1, out.stdout + out.stderr
    assert message in out.stdout, out.stdout
    # ... and the unbroken file passes, so it is the edit that failed it.
    bad.write_text(text)
    assert k8s_validate(str(tmp_path)).returncode == 0


def test_configmap_carries_etc_config_files_byte_for_byte():
    cm = load_yaml(os.path.join(BASE, "configmap.yaml"))
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "websocket-config"
    assert set(cm["data"]) == {"websocket.yaml", "connection_pool.yaml"}
    for key in cm["data"]:
        with open(os.path.join(ETC, key), "rb") as f:
            want = f.read()
        assert cm["data"][key].encode("utf-8") == want, \
            f"{key} differs from etc/{key}: run {PYTHON} tools/k8s-validate/sync-configmap.py"
    out = subprocess.run([PYTHON, SYNC_CONFIGMAP, "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # The config in the ConfigMap is one the gateway accepts.
    out = subprocess.run([WSGATE_BIN, "-t", "-c", os.path.join(ETC, "websocket.yaml")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def runbook_probe_patch():
    (text,) = runbook.patch_json("deployment websocket")
    patch = json.loads(text)
    (container,) = patch["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment_agrees_with_the_config_and_the_runbook():
    cfg = load_config(os.path.join(ETC, "websocket.yaml"))
    dep = load_yaml(os.path.join(BASE, "deployment.yaml"))
    assert dep["kind"] == "Deployment" and dep["metadata"]["name"] == "websocket"
    assert dep["metadata"]["labels"]["app"] == "websocket"
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["template"]["metadata"]["labels"]["app"] == "websocket"
    (c,) = pod["containers"]
    # Probes exactly as the runbook's patch: applying it changes nothing.
    patch = runbook_probe_patch()
    assert patch["name"] == c["name"] == "websocket"
    assert c["readinessProbe"] == patch["readinessProbe"]
    assert c["livenessProbe"] == patch["livenessProbe"]
    # Ports are the config's.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"websocket": cfg["port"], "metrics": cfg["metrics_port"]}
    assert c["readinessProbe"]["httpGet"]["port"] == cfg["port"]
    # The grace period covers the preStop sleep and the whole drain.
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > cfg["shutdown_timeout"] + int(pre_stop[1]), (grace, cfg["shutdown_timeout"])
    # The ConfigMap as a folder (no subPath), and the command reads it there.
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    cfg_mount = [m for m in mounts.values()
                 if volumes[m["name"]].get("configMap", {}).get("name") == "websocket-config"]
    assert len(cfg_mount) == 1 and "subPath" not in cfg_mount[0]
    assert "items" not in volumes[cfg_mount[0]["name"]]["configMap"], "mount both files"
    assert c["args"] == ["-c", cfg_mount[0]["mountPath"] + "/websocket.yaml"]
    # /dev/shm writable (the shared segment) under a read-only root, big
    # enough for the stream history, inside the memory limit (tmpfs pages
    # count against it).
    assert mounts["shm"]["mountPath"] == "/dev/shm"
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    shm = quantity(volumes["shm"]["emptyDir"]["sizeLimit"])
    assert shm >= cfg["stream_memory"] + 16 * 2**20, (shm, cfg["stream_memory"])
    assert quantity(c["resources"]["limits"]["memory"]) >= shm + 2**30
    # Hardening.
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind


def test_service_ingress_policy_pdb_hpa_fit_the_deployment():
    cfg = load_config(os.path.join(ETC, "websocket.yaml"))
    dep = load_yaml(os.path.join(BASE, "deployment.yaml"))
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}

    svc = load_yaml(os.path.join(BASE, "service.yaml"))
    assert svc["metadata"]["name"] == "websocket"
    assert svc["spec"]["selector"].items() <= labels.items()
    sports = {p["port"]: p["targetPort"] for p in svc["spec"]["ports"]}
    assert port_names[sports[cfg["port"]]] == cfg["port"]

    ing = load_yaml(os.path.join(BASE, "ingress.yaml"))
    assert ing["metadata"]["name"] == "websocket-ingress"
    ann = ing["metadata"]["annotations"]
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(ann[f"nginx.ingress.kubernetes.io/{key}"]) > 10 * cfg["heartbeat_interval"], key
    assert ann["nginx.ingress.kubernetes.io/proxy-http-version"] == "1.1"
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "websocket", "port": {"number": cfg["port"]}}
    secret = load_yaml(os.path.join(BASE, "secret-tls.yaml"))
    assert secret["type"] == "kubernetes.io/tls"
    assert ing["spec"]["tls"][0]["secretName"] == secret["metadata"]["name"] == "websocket-tls"

    pol = load_yaml(os.path.join(BASE, "networkpolicy.yaml"))
    assert pol["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    allowed = {p["port"]: rule["from"] for rule in pol["spec"]["ingress"] for p in rule["ports"]}
    assert set(allowed) == {cfg["port"], cfg["metrics_port"]}
    metrics_from = json.dumps(allowed[cfg["metrics_port"]])
    assert "prometheus" in metrics_from and len(allowed[cfg["metrics_port"]]) == 1
    assert any("ingress-nginx" in json.dumps(f) for f in allowed[cfg["port"]])

    pdb = load_yaml(os.path.join(BASE, "pdb.yaml"))
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for name in ("hpa.yaml", "hpa-custom-metric.yaml"):
        hpa = load_yaml(os.path.join(BASE, name))
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": "websocket"}
    assert load_yaml(os.path.join(BASE, "hpa.yaml"))["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    custom = load_yaml(os.path.join(BASE, "hpa-custom-metric.yaml"))["spec"]["metrics"][0]
    assert custom["pods"]["metric"]["name"] == "websocket_connections_active"

    kust = load_yaml(os.path.join(BASE, "kustomization.yaml"))
    assert kust["namespace"] == "vitalstream"
    listed = set(kust["resources"])
    on_disk = {os.path.basename(f) for f in yaml_files(BASE)} - {"kustomization.yaml"}
    # Not applied by default, on purpose (README.md says why).
    assert on_disk - listed == {"secret-tls.yaml", "hpa-custom-metric.yaml"}

    readme = read(os.path.join(K8S, "README.md"))
    for needle in ("kubectl exec deploy/websocket -n vitalstream -- kill -HUP 1",
                   "hpa-custom-metric.yaml", "websocket_connections_active",
                   "kubectl apply -k etc/kubernetes/overlays/production"):
        assert needle in readme, needle


def dockerfile_stages():
    stages, cur = [], None
    text = read(DOCKERFILE).replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            cur = {"from": rest, "lines": []}
            stages.append(cur)
        elif cur is not None:
            cur["lines"].append((word.upper(), rest))
    return stages


def apt_packages(stage):
    pkgs = set()
    for word, rest in stage["lines"]:
        if word == "RUN":
            for m in re.finditer(r"apt-get install ((?:[^&;|])*)", rest):
                pkgs |= {p for p in m.group(1).split() if not p.startswith("-")}
    return pkgs


def test_dockerfile_builds_on_debian_12_and_ships_what_the_binary_needs():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage"
    for s in stages:
        assert re.match(r"debian:(12|bookworm)(-slim)?\b", s["from"]), s["from"]
    build, runtime = stages[0], stages[-1]
    build_runs = " ".join(r for w, r in build["lines"] if w == "RUN")
    assert "meson setup" in build_runs and "ninja" in build_runs
    assert "fault_injection=false" in build_runs
    copies = [r for w, r in runtime["lines"] if w == "COPY"]
    assert any(r.startswith("--from=") for r in copies), "binary from the build stage"
    assert any("etc/websocket.yaml" in r and "etc/connection_pool.yaml" in r for r in copies)
    user = [r for w, r in runtime["lines"] if w == "USER"][-1]
    dep = load_yaml(os.path.join(BASE, "deployment.yaml"))
    uid = dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert user.split(":")[0] == str(uid), "numeric non-root USER matching runAsUser"
    entry = json.loads([r for w, r in runtime["lines"] if w == "ENTRYPOINT"][-1])
    cmd = json.loads([r for w, r in runtime["lines"] if w == "CMD"][-1])
    assert entry[0] == "/usr/bin/tini" and entry[-1].endswith("/wsgate")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert cmd == c["args"]
    pkgs = apt_packages(runtime)
    # `kubectl exec … -- kill -HUP 1` and the runbook's in-pod commands.
    assert {"tini", "procps", "python3", "python-is-python3", "python3-websockets",
            "netcat-openbsd", "openssl", "curl"} <= pkgs, pkgs
    assert {"meson", "ninja-build"} <= apt_packages(build)
    # Every shared library the gateway links comes from a runtime package.
    needed = re.findall(r"NEEDED\s+(\S+)", subprocess.run(
        ["objdump", "-p", WSGATE_BIN], capture_output=True, text=True, check=True).stdout)
    ldd = subprocess.run(["ldd", WSGATE_BIN], capture_output=True, text=True, check=True).stdout
    paths = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
    for lib in needed:
        if re.match(r"lib(asan|ubsan|lsan|tsan)\.so", lib):
            continue   # a sanitizer build's runtime (tools/test --sanitize), not the image's
        if lib.startswith("ld-linux"):
            continue   # the dynamic loader itself: libc6, in every image
        real = os.path.realpath(paths[lib])
        owner = None
        for candidate in (paths[lib], real, real.replace("/usr/lib/", "/lib/", 1)):
            out = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if out.returncode == 0:
                owner = out.stdout.split(":")[0]
                break
        assert owner, f"no Debian package owns {lib}"
        # libc6 and libgcc-s1 are part of debian:bookworm-slim itself.
        assert owner in ("libc6", "libgcc-s1") or owner in pkgs, \
            f"{lib} comes from {owner}, not in the runtime stage"
    assert len(needed) >= 6, needed


# =============================================================== Grafana ===

def test_dashboard_structure():
    d = dashboard()
    assert d["uid"] == "vitalstream-websocket" and d["title"] == "WebSocket"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    env = variables["environment"]
    assert env["type"] == "query"
    assert env["definition"] == "label_values(websocket_connections_active, environment)"
    assert env["query"]["query"] == env["definition"]
    assert env["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    panels = dashboard_panels(d)
    titles = [p["title"] for p in panels]
    for t in REQUIRED_PANELS + list(BROKER_PANELS):
        assert t in titles, f"panel {t!r} missing"
    assert len(set(titles)) == len(titles)
    everything = d["panels"] + [p for r in d["panels"] if r["type"] == "row"
                                for p in r.get("panels", [])]
    assert len({p["id"] for p in everything}) == len(everything)
    anchors = runbook_anchors()
    cells = set()
    for r in d["panels"]:
        if r["type"] == "row":
            g = r["gridPos"]
            assert g["x"] == 0 and g["w"] == 24 and g["h"] == 1, r["title"]
            for x in range(24):
                assert (x, g["y"]) not in cells, f"row {r['title']} overlaps a panel"
                cells.add((x, g["y"]))
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        links = re.findall(r"\((https://[^)]+)\)", p["description"])
        assert links, f"{p['title']}: no runbook link"
        for url in links:
            assert url.startswith(RUNBOOK_URL + "#") and url.split("#")[1] in anchors, url
        assert "Bad:" in p["description"], f"{p['title']}: does not say what a bad value is"
        for t in p["targets"]:
            assert 'environment="$environment"' in t["expr"], (p["title"], t["expr"])
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))
    by_title = {p["title"]: p for p in panels}
    for title in ("Message Latency", "Broker Publish Latency", "Client Round Trip (RTT)"):
        assert [t["expr"].split(",")[0] for t in by_title[title]["targets"]] == [
            "histogram_quantile(0.5", "histogram_quantile(0.95", "histogram_quantile(0.99"], title
    # The broker panels sit under their row (below it, above the next row),
    # query their metric per broker, and say that they need cluster mode.
    (row,) = [r for r in d["panels"] if r["type"] == "row" and r["title"] == BROKER_ROW]
    below = [r["gridPos"]["y"] for r in d["panels"]
             if r["type"] == "row" and r["gridPos"]["y"] > row["gridPos"]["y"]]
    inside = {q["title"] for q in row.get("panels", [])}
    for title, metric in BROKER_PANELS.items():
        p = by_title[title]
        if row.get("collapsed"):
            assert title in inside, title
        else:
            assert row["gridPos"]["y"] < p["gridPos"]["y"] < min(below, default=10**6), title
        for t in p["targets"]:
            assert metric in t["expr"] and "broker" in promql_parse(t["expr"])[1], (title, t["expr"])
            assert "{{broker}}" in t["legendFormat"], (title, t["legendFormat"])
        assert "cluster mode" in p["description"].lower(), title
    up = by_title["Broker Up"]
    assert up["targets"][0]["expr"].startswith("min by (broker) (websocket_broker_up{"), \
        "down on any replica shows as down"
    errors = by_title["Broker Errors by Type"]
    assert "error_type" in promql_parse(errors["targets"][0]["expr"])[1]
    pool = by_title["Broker Pool Connections"]
    assert "state" in promql_parse(pool["targets"][0]["expr"])[1]
    cpu = by_title["CPU"]
    assert any(t["expr"].startswith(
        'rate(container_cpu_usage_seconds_total{pod=~"websocket.*",environment="$environment"}[5m])')
        for t in cpu["targets"]), "the runbook's CPU query form"
    assert any("websocket_config_generation" in a.get("expr", "")
               for a in d["annotations"]["list"]), "config generation annotation"
    assert any("websocket_config_generation" in t["expr"]
               for t in by_title["Config Generation"]["targets"]), "config generation stat"


# ======================================================== cluster broker ===

class Redis:
    """A real redis-server on a free loopback port, without persistence (as
    tests/integration/test_cluster.py starts it)."""

    def __init__(self, tmp_path):
        self.port = free_port()
        self.dir = tmp_path
        self.proc = None

    def start(self):
        assert os.path.exists(REDIS_SERVER), "redis-server not installed (Debian package redis-server)"
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10 * SLOW
        while time.time() < deadline:
            assert self.proc.poll() is None, f"redis-server exited with {self.proc.returncode}"
            try:
                out = subprocess.run([REDIS_CLI, "-p", str(self.port), "ping"],
                                     capture_output=True, text=True, timeout=2)
                if out.stdout.strip() == "PONG":
                    return self
            except (OSError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def label(self):
        """The gateway's `broker` label for it: host:port/db."""
        return f"127.0.0.1:{self.port}/0"


@pytest.fixture
def redis(tmp_path):
    d = tmp_path / "redis"
    d.mkdir()
    r = Redis(d)
    try:
        yield r.start()
    finally:
        r.stop()


def uses_broker_series(expr):
    return any(BROKER_METRIC.fullmatch(m) for m, _ in promql_parse(expr)[0])


# ========================================================= names & labels ===

def live_inventory(text):
    names, labels, values = set(), {}, {}
    for (name, ls), _ in parse_metrics(text).items():
        names.add(name)
        for k, v in ls:
            labels.setdefault(name, set()).add(k)
            values.setdefault((name, k), set()).add(v)
    return names, labels, values


def check_query_against_inventory(where, expr, names, labels, values):
    problems = []
    selectors, grouping = promql_parse(expr)
    assert selectors, f"{where}: no metric found in {expr}"
    exp_labels = set(TARGET_LABELS)
    for metric, matchers in selectors:
        if metric in EXTERNAL_METRICS:
            continue
        if metric not in names:
            problems.append(f"{where}: metric {metric} not in /metrics")
            continue
        exp_labels |= labels.get(metric, set())
        for label, op, value in matchers:
            if label in TARGET_LABELS:
                continue
            if label not in labels.get(metric, set()):
                problems.append(f"{where}: {metric} has no label {label}")
                continue
            live = values[(metric, label)]
            if op in ("=", "!="):
                wanted = [value]
            elif re.fullmatch(r"[\w.-]+(\|[\w.-]+)*", value):
                wanted = value.split("|")
            else:
                wanted = []
                if not any(re.fullmatch(value, v) for v in live) and op == "=~":
                    problems.append(f"{where}: {metric}{{{label}=~{value!r}}} matches no value")
            for v in wanted:
                if v not in live:
                    problems.append(f"{where}: {metric}{{{label}={v!r}}} never exposed "
                                    f"(values: {sorted(live)})")
    for g in grouping:
        if g not in exp_labels and not all(m in EXTERNAL_METRICS for m, _ in selectors):
            problems.append(f"{where}: grouping label {g} on none of its metrics")
    return problems


def test_every_metric_and_label_used_exists_in_live_metrics(gateway_factory, redis):
    """Against a gateway in cluster mode, so that the broker series exist."""
    shipped = load_config(os.path.join(ETC, "websocket.yaml"))
    gw = gateway_factory(config={"environment": "production",
                                 "max_streams": shipped["max_streams"],
                                 "stream_memory": shipped["stream_memory"],
                                 "broker": [redis.url]})
    # Its segment, with the shipped stream settings, fits the pod's /dev/shm.
    dep = load_yaml(os.path.join(BASE, "deployment.yaml"))
    (shm_volume,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "shm"]
    segment = os.path.getsize(f"/dev/shm/wsgate-{gw.port}")
    assert segment <= quantity(shm_volume["emptyDir"]["sizeLimit"]), segment
    queries = all_queries()
    assert len([w for w, _ in queries if w.startswith("runbook")]) >= 5, "runbook queries not found"
    used = set()
    for port in (gw.metrics_port, gw.port):
        status, text = gw.http("/metrics", port=port)
        assert status == 200
        names, labels, values = live_inventory(text)
        problems = []
        for where, expr in queries:
            problems += check_query_against_inventory(where, expr, names, labels, values)
            used |= {m for m, _ in promql_parse(expr)[0]}
        assert not problems, f"port {port}:\n" + "\n".join(problems)
        # One broker, labelled host:port/db (what the broker panels' legends show).
        for name in {m for m in names if BROKER_METRIC.fullmatch(m)}:
            assert values[(name, "broker")] == {redis.label}, (name, values[(name, "broker")])
    # The only names from elsewhere are the ones listed, and they are used.
    external = used - names
    assert external <= set(EXTERNAL_METRICS), external
    assert {m for m in used if BROKER_METRIC.fullmatch(m)} == {
        "websocket_broker_up", "websocket_broker_latency_seconds_bucket",
        "websocket_broker_errors_total", "websocket_broker_pool_connections"}, used
    # The legends name labels that the query keeps.
    for p in dashboard_panels():
        for t in p["targets"]:
            for label in re.findall(r"\{\{(\w+)\}\}", t.get("legendFormat", "")):
                _, grouping = promql_parse(t["expr"])
                metrics = [m for m, _ in promql_parse(t["expr"])[0]]
                if re.match(r"\s*(sum|max|min|avg|count)\b", t["expr"]):
                    kept = grouping     # an aggregation keeps its `by` labels only
                else:                   # cAdvisor series carry pod and container
                    kept = set().union(*(labels.get(m, set()) for m in metrics)) | TARGET_LABELS
                    if any(m in EXTERNAL_METRICS for m in metrics):
                        kept |= {"container"}
                assert label in kept, f"{p['title']}: legend {{{{{label}}}}} not in {t['expr']}"


def test_single_replica_mode_serves_every_query_but_the_broker_ones(gateway_factory):
    """broker "none" (the default): no broker series at all, not even their
    HELP and TYPE lines, so the broker panels are empty and the broker
    alerts silent; every other query still finds its names and labels."""
    gw = gateway_factory(config={"environment": "production"})
    for port in (gw.metrics_port, gw.port):
        status, text = gw.http("/metrics", port=port)
        assert status == 200
        assert not BROKER_METRIC.search(text), f"port {port}: broker series without a broker"
        names, labels, values = live_inventory(text)
        problems = []
        for where, expr in all_queries():
            if not uses_broker_series(expr):
                problems += check_query_against_inventory(where, expr, names, labels, values)
        assert not problems, f"port {port}:\n" + "\n".join(problems)


def test_promql_parser_finds_names_and_labels():
    sel, grp = promql_parse('sum by (reason) (rate(websocket_disconnections_total{environment="production",'
                            'reason!~"client_close|shutdown"}[5m])) / on (instance) group_left () up == 0')
    assert sel == [("websocket_disconnections_total",
                    [("environment", "=", "production"), ("reason", "!~", "client_close|shutdown")]),
                   ("up", [])]
    assert grp == {"reason", "instance"}
    names = {"m"}
    assert check_query_against_inventory("t", 'sum(m{a="x"})', names, {"m": {"a"}}, {("m", "a"): {"y"}})
    assert check_query_against_inventory("t", "sum by (b) (m)", names, {"m": {"a"}}, {})
    assert check_query_against_inventory("t", "rate(n[5m])", names, {"m": {"a"}}, {})
    assert not check_query_against_inventory("t", 'sum by (a) (m{a="y"})', names, {"m": {"a"}},
                                             {("m", "a"): {"y"}})


# ======================================================= live Prometheus ===

class Prometheus:
    def __init__(self, tmp_path, target):
        self.dir = tmp_path / "prometheus"
        self.dir.mkdir()
        self.port = free_port()
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(prometheus_test_config(target, ALERTS)))
        self.log_path = self.dir / "prometheus.log"
        self.proc = None

    def start(self):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=self._log, stderr=subprocess.STDOUT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc:
            self._log.close()

    def log(self):
        return self.log_path.read_text(errors="replace")

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            body = e.read()
        except OSError as e:   # not listening yet
            return {"status": "unavailable", "error": str(e)}
        try:
            return json.loads(body)
        except ValueError:     # "Service Unavailable" while it starts
            return {"status": "unavailable", "error": body.decode(errors="replace")}

    def query(self, expr):
        return self.api("query", query=expr)

    def value(self, expr):
        res = self.query(expr)
        if res.get("status") != "success" or not res["data"]["result"]:
            return None
        return float(res["data"]["result"][0]["value"][1])

    def alerts(self):
        return {(a["labels"]["alertname"], a["state"]) for a in self.api("alerts")["data"]["alerts"]}


HANDSHAKE = ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def unmasked_frame_close_code(port):
    """Upgrade by hand, send an unmasked frame (a protocol error from a client):
    the close code the gateway answers with."""
    with socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW) as s:
        s.sendall(HANDSHAKE.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            assert chunk, "closed during handshake"
            buf += chunk
        assert buf.startswith(b"HTTP/1.1 101"), buf
        rest = buf.split(b"\r\n\r\n", 1)[1]
        s.sendall(b"\x81\x05hello")   # FIN + text, MASK bit clear
        deadline = time.time() + 5 * SLOW
        while len(rest) < 4 and time.time() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
        assert rest[0] & 0x0F == 0x8, rest
        return int.from_bytes(rest[2:4], "big")


class Traffic(threading.Thread):
    """Scripted clients against one gateway (a thread with its own event loop):
    pinging clients held open all along, a stream with a subscriber and a
    publisher, clean closes, a protocol error, an
    oversize message, refused handshakes, a worker killed, reloads good and
    bad, then the replica filled to max_connections and refused beyond it.
    Sets `filled` and holds every connection until `release` is set."""

    PINGERS = 4

    def __init__(self, gw):
        super().__init__(daemon=True)
        self.gw = gw
        self.filled = threading.Event()
        self.release = threading.Event()
        self.error = None
        self.stats = {"pongs": 0, "reconnects": 0, "close_codes": [], "refused": [], "delivered": 0}

    def run(self):
        try:
            asyncio.run(self.main())
        except BaseException as e:  # reported by the test
            self.error = e
            self.filled.set()

    async def pinger(self, stop):
        for _ in range(5):
            try:
                async with websockets.connect(self.gw.ws_url, open_timeout=5 * SLOW) as ws:
                    while not stop.is_set():
                        await ws.send('{"type":"ping"}')
                        await asyncio.wait_for(ws.recv(), 5 * SLOW)
                        self.stats["pongs"] += 1
                        await asyncio.sleep(0.1)
                    return
            except (websockets.ConnectionClosed, websockets.InvalidHandshake, OSError,
                    asyncio.TimeoutError):
                self.stats["reconnects"] += 1
                await asyncio.sleep(0.2)

    def metric(self, name, **labels):
        total = 0.0
        for (n, ls), v in self.gw.metrics(port=self.gw.metrics_port).items():
            if n == name and all((k, v2) in ls for k, v2 in labels.items()):
                total += v
        return total

    async def wait_metric(self, name, at_least, **labels):
        for _ in range(int(100 * SLOW)):
            if self.metric(name, **labels) >= at_least:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{name}{labels} never reached {at_least}")

    async def main(self):
        gw, loop = self.gw, asyncio.get_running_loop()
        stop = asyncio.Event()
        pingers = [asyncio.create_task(self.pinger(stop)) for _ in range(self.PINGERS)]
        await self.wait_metric("websocket_connections_active", self.PINGERS)

        # Clean closes (reason client_close).
        for _ in range(3):
            async with websockets.connect(gw.ws_url, open_timeout=5 * SLOW) as ws:
                await ws.send('{"type":"ping"}')
                await asyncio.wait_for(ws.recv(), 5 * SLOW)
        # Protocol error: an unmasked client frame (close 1002).
        self.stats["close_codes"].append(await loop.run_in_executor(None, unmasked_frame_close_code,
                                                                    gw.port))
        # Too large: a message over max_message_size (close 1009).
        async with websockets.connect(gw.ws_url, open_timeout=5 * SLOW, max_size=None) as ws:
            await ws.send("x" * (gw.config["max_message_size"] + 1000))
            try:
                await asyncio.wait_for(ws.recv(), 5 * SLOW)
            except websockets.ConnectionClosed as e:
                self.stats["close_codes"].append(e.rcvd.code if e.rcvd else None)
        # Refused handshakes: /ws without Upgrade (426, error_type handshake),
        # and a path that does not exist (404).
        for path in ("/ws", "/ws", "/nope"):
            status, _ = await loop.run_in_executor(None, gw.http, path)
            self.stats["refused"].append(status)
        # A good reload, then a bad one (the replica keeps its config).
        gw.signal(signal.SIGHUP)
        await self.wait_metric("websocket_config_reloads_total", 1, result="success")
        gw.write_config(raw="max_connections: [not a number\n")
        gw.signal(signal.SIGHUP)
        await self.wait_metric("websocket_config_reloads_total", 1, result="failure")
        gw.write_config()
        # A worker dies (reason worker_exit for its clients; respawned).
        os.kill(gw.worker_pids()[0], signal.SIGKILL)
        await self.wait_metric("websocket_worker_restarts_total", 1)
        await self.wait_metric("websocket_workers", gw.config["workers"], state="running")
        # The killed worker's pingers are back before the replica is filled.
        await self.wait_metric("websocket_connections_active", self.PINGERS)

        # A stream: one subscriber (held open), one publisher; every
        # delivery is a latency observation.
        sub = await websockets.connect(gw.ws_url, open_timeout=5 * SLOW)
        await sub.send(json.dumps({"type": "subscribe", "stream": "patient/4711/ecg", "id": 1}))
        reply = json.loads(await asyncio.wait_for(sub.recv(), 5 * SLOW))
        assert reply["type"] == "subscribed", reply
        async with websockets.connect(gw.ws_url, open_timeout=5 * SLOW) as pub:
            for n in range(20):
                await pub.send(json.dumps({"type": "publish", "stream": "patient/4711/ecg",
                                           "data": {"mv": [n, n + 1]}, "id": n}))
                ack = json.loads(await asyncio.wait_for(pub.recv(), 5 * SLOW))
                assert ack["type"] == "ack", ack
                msg = json.loads(await asyncio.wait_for(sub.recv(), 5 * SLOW))
                assert msg["type"] == "message" and msg["data"] == {"mv": [n, n + 1]}, msg
                self.stats["delivered"] += 1
        await asyncio.sleep(1.0)

        # Fill the replica to max_connections, then get refused (503).
        held = [sub]
        for _ in range(int(50 * SLOW)):
            if self.metric("websocket_connections_active") >= gw.config["max_connections"]:
                break
            held.append(await websockets.connect(gw.ws_url, open_timeout=5 * SLOW))
        for _ in range(2):
            try:
                extra = await websockets.connect(gw.ws_url, open_timeout=5 * SLOW)
                held.append(extra)
                self.stats["refused"].append(101)
            except websockets.InvalidStatusCode as e:
                self.stats["refused"].append(e.status_code)
        self.filled.set()
        for _ in range(int(600 * SLOW)):   # at most 60 s
            if self.release.is_set():
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*pingers, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)


def test_dashboard_alerts_and_runbook_queries_return_data_from_live_gateway(gateway_factory, redis,
                                                                          tmp_path):
    """The gateway runs in cluster mode (a real redis-server on loopback), so
    that the broker panels and alerts have their series: the traffic's
    publishes are broker round trips."""
    gw = gateway_factory(config={"environment": "production", "workers": 2, "max_connections": 12,
                                 "max_message_size": 4096, "broker": [redis.url],
                                 "heartbeat_interval": 1}, start=False)
    prom = Prometheus(tmp_path, f"127.0.0.1:{gw.metrics_port}")
    prom.start()
    traffic = None
    try:
        gw.start()
        # Prometheus discovers its targets a few seconds after start; traffic
        # must come after its first scrape so that rate() sees it move.
        wait_for(lambda: prom.proc.poll() is not None or prom.value('up{job="websocket"}') == 1,
                 20, 0.2, "Prometheus scraping the gateway")
        assert prom.proc.poll() is None, prom.log()
        labels = prom.query('up{job="websocket"}')["data"]["result"][0]["metric"]
        assert labels["pod"] == "websocket-5d8f7c9b4-x2x7q" and labels["namespace"] == "vitalstream"
        assert labels["environment"] == "production"

        traffic = Traffic(gw)
        traffic.start()
        assert traffic.filled.wait(30 * SLOW), "traffic did not finish"
        assert traffic.error is None, repr(traffic.error)
        st = traffic.stats
        assert st["close_codes"] == [1002, 1009], st
        assert st["refused"] == [426, 426, 404, 503, 503], st
        assert st["pongs"] > 0 and st["delivered"] == 20, st
        # Prometheus has scraped the end of the traffic.
        wait_for(lambda: (prom.value('websocket_connection_errors_total{error_type="capacity"}') or 0) >= 2,
                 10, 0.2, "the refusals scraped")

        problems = []
        # Every dashboard query, alert expression and runbook query is valid
        # and (but for the externally sourced series) returns data.
        for where, expr in all_queries():
            res = prom.query(expr)
            if res.get("status") != "success":
                problems.append(f"{where}: {res.get('error')}: {expr}")
                continue
            external_only = all(m in EXTERNAL_METRICS and m != "up" for m, _ in promql_parse(expr)[0])
            if where.startswith("alert "):
                continue   # an alert's expression is empty while it does not fire
            if not res["data"]["result"] and not external_only:
                problems.append(f"{where}: no data: {expr}")
        # The environment variable's values.
        values = prom.api("label/environment/values", **{"match[]": "websocket_connections_active"})
        if "production" not in values["data"]:
            problems.append(f"environment variable: {values}")
        # The runbook's disconnection query shows the reasons the traffic made.
        res = prom.query('sum(rate(websocket_disconnections_total{environment="production"}[5m])) by (reason)')
        moved = {r["metric"]["reason"] for r in res["data"]["result"] if float(r["value"][1]) > 0}
        if not {"client_close", "protocol_error", "too_large"} <= moved:
            problems.append(f"disconnection reasons seen by the runbook's query: {moved}")
        res = prom.query('sum(rate(websocket_connection_errors_total{environment="production"}[5m])) by (error_type)')
        moved = {r["metric"]["error_type"] for r in res["data"]["result"] if float(r["value"][1]) > 0}
        if not {"handshake", "capacity"} <= moved:
            problems.append(f"error types seen by the runbook's query: {moved}")
        if not (prom.value('sum(websocket_streams_active{environment="production"})') or 0) >= 1:
            problems.append("the stream is not in websocket_streams_active")
        if not (prom.value('sum(websocket_messages_sent_total{environment="production"})') or 0) >= 20:
            problems.append("the deliveries are not in websocket_messages_sent_total")
        # The dashboard's generation stat: the replica's generation, which is
        # its successful reloads + 1 (one good reload in the traffic, one bad).
        gen = gw.detailed(port=gw.metrics_port)["config_generation"]
        scraped = prom.value('max by (pod) (websocket_config_generation{environment="production"})')
        success = prom.value('sum(websocket_config_reloads_total{result="success"})')
        if not (scraped == gen == success + 1 == 2):
            problems.append(f"config generation: scraped {scraped}, /health/detailed {gen}, "
                            f"successful reloads {success}")
        # The broker panels: connected, the publishes' round trips counted
        # (one per publish) and fast, no refused request, a command
        # connection per worker at least.
        if prom.value('min by (broker) (websocket_broker_up{environment="production"})') != 1:
            problems.append("websocket_broker_up is not 1 with Redis running")
        res = prom.query('websocket_broker_up{environment="production"}')["data"]["result"]
        if sorted((r["metric"].get("broker"), r["metric"].get("connection")) for r in res) != \
                [(redis.label, "command"), (redis.label, "subscription")]:
            problems.append(f"broker label: {[r['metric'] for r in res]}")
        count = prom.value('sum(websocket_broker_latency_seconds_count{environment="production"})')
        if not (count or 0) >= 20:
            problems.append(f"broker round trips counted: {count}")
        p99 = prom.value('histogram_quantile(0.99, sum by (le) (rate('
                         'websocket_broker_latency_seconds_bucket{environment="production"}[5m])))')
        if p99 is None or not 0 < p99 < 0.05:
            problems.append(f"broker p99 round trip {p99}: not below the 50 ms alert threshold")
        # The client round trip panel: the held connections' heartbeat pongs
        # (heartbeat_interval 1 s), fast on loopback, so its alert is silent.
        rtt = prom.value('histogram_quantile(0.99, sum by (le) (rate('
                         'websocket_client_rtt_seconds_bucket{environment="production"}[5m])))')
        if rtt is None or not 0 < rtt < 0.5:
            problems.append(f"client RTT p99 {rtt}: not a round trip below the 500 ms alert threshold")
        pongs = prom.value('sum(websocket_client_rtt_seconds_count{environment="production"})')
        if not (pongs or 0) >= 1:
            problems.append(f"heartbeat pongs counted: {pongs}")
        acks = prom.value('sum(websocket_request_duration_seconds_count{environment="production",'
                          'type="publish"})')
        if not (acks or 0) >= 1:
            problems.append(f"publish replies in websocket_request_duration_seconds: {acks}")
        refused = prom.value('sum(websocket_broker_errors_total{environment="production",'
                             'error_type=~"timeout|command"})')
        if refused != 0:
            problems.append(f"broker timeouts and refused commands: {refused}")
        pooled = prom.value('sum(websocket_broker_pool_connections{environment="production"})')
        if not (pooled or 0) >= gw.config["workers"]:
            problems.append(f"broker pool connections: {pooled}")

        # Every rule evaluates without error; the ones this traffic should
        # trip are pending or firing, the others silent.
        rules = [r for g in prom.api("rules")["data"]["groups"] for r in g["rules"]]
        if {r["name"] for r in rules} != {r["alert"] for r in alert_rules()}:
            problems.append(f"rules loaded: {sorted(r['name'] for r in rules)}")
        for r in rules:
            if r["health"] != "ok":
                problems.append(f"rule {r['name']}: {r['health']} {r.get('lastError')}")
        want = {("WebSocketConfigReloadFailed", "firing"), ("WebSocketNearMaxConnections", "pending"),
                ("WebSocketNearMaxConnectionsCritical", "pending"),
                ("WebSocketConnectionsRefused", "pending")}
        try:
            active = wait_for(lambda: want <= prom.alerts() and prom.alerts(), 10, 0.2,
                              "the traffic's alerts")
        except AssertionError as e:
            problems.append(str(e))
            active = prom.alerts()
        unexpected = {a for a in active if a not in want}
        if unexpected:
            problems.append(f"alerts active that should be silent: {unexpected}")

        traffic.release.set()
        traffic.join(15 * SLOW)
        assert not traffic.is_alive()
        # Redis goes away: the broker panel shows it down, WebSocketBrokerDown
        # starts (pending: its `for` is 1m); the replica itself still serves.
        redis.stop()
        try:
            wait_for(lambda: ("WebSocketBrokerDown", "pending") in prom.alerts(), 10, 0.2,
                     "the broker-down alert")
        except AssertionError as e:
            problems.append(str(e))
        if prom.value('min by (broker) (websocket_broker_up{environment="production"})') != 0:
            problems.append("the broker panel does not show Redis down")
        if gw.detailed(port=gw.metrics_port)["status"] != "degraded":
            problems.append("/health/detailed is not degraded without Redis")
        if gw.http("/health")[0] != 200:
            problems.append("/health is not 200 without Redis: the pods would leave the service")
        # The replica goes away: the service-down alerts start.
        gw.stop()
        down = {("WebSocketServiceDown", "pending"), ("WebSocketInstanceDown", "pending")}
        try:
            wait_for(lambda: down <= prom.alerts(), 10, 0.2, "the service-down alerts")
        except AssertionError as e:
            problems.append(str(e))
        assert not problems, "\n".join(problems)
    finally:
        if traffic is not None:
            traffic.release.set()
            traffic.join(15)
        prom.stop()
